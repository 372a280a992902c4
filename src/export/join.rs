//! The records export spills, and the join of examples with their feedback and corrections.
//!
//! Feedback and corrections may be written before or after the example they refer to, in any
//! file, so nothing can be joined while reading. Instead every input becomes keyed rows:
//!
//! * each example is a [`Row`] (sorted by id, so replays of one id meet and one is kept) and
//!   three [`JoinItem`] references: `t:<id>`, `t:<request id>` and `p:<hash of normalized
//!   prompt + response>`;
//! * each feedback event is a `t:<target>` item (target = example id or request id);
//! * each correction is a link on `t:<original_example_id>`, `t:<original_request_id>` and
//!   `p:<hash of its normalized original prompt + response>`: an example that gave the same
//!   answer to the same question is the same wrong answer, so it is corrected too.
//!
//! Sorting the join items by key brings every reference next to the feedback and corrections
//! that name it; each key group yields one [`Annot`] per example it touches, and a second sort
//! by example id lines those annotations up with the example rows. Feedback is ranked by
//! [`FbOrder`]: latest timestamp wins, then in-example feedback loses to the feedback stream,
//! then later file, later line.

use super::spill::{json_spill, Grouped, Sorter};
use super::ExportError;
use crate::record::Relevance;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Position of an input line: (stream 0 examples / 1 feedback / 2 corrections, file, line).
pub(crate) type Order = (u8, u32, u64);

/// Rank of a feedback event: (timestamp µs, 0 in-example / 1 feedback stream, file, line).
/// The greatest one is the one that counts.
pub(crate) type FbOrder = (i64, u8, u32, u64);

/// The parts of an example export needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ex {
    pub ts: i64,
    pub verified_correction: bool,
    pub prompt: String,
    pub response: String,
    pub user_id: Option<String>,
    /// Feedback applied inside the example (`quality.user_feedback`): true = positive.
    pub in_feedback: Option<bool>,
    /// `quality.was_corrected`: a correction was applied before the example was written.
    pub was_corrected: bool,
    pub relevance: Relevance,
    pub auto_score: f64,
    pub include: bool,
}

/// The parts of a correction record export needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Corr {
    pub ts: i64,
    pub prompt: String,
    pub original: String,
    pub corrected: String,
    pub include: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Payload {
    Example(Ex),
    Correction(Corr),
}

/// One example or correction record, keyed by its id and where it was read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub id: String,
    pub order: Order,
    pub payload: Payload,
}

impl Row {
    fn key(&self) -> (&str, Order) {
        (&self.id, self.order)
    }
}
impl PartialEq for Row {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Row {}
impl PartialOrd for Row {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Row {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key().cmp(&o.key())
    }
}
json_spill!(Row, |r| r.id.len()
    + match &r.payload {
        Payload::Example(e) => e.prompt.len() + e.response.len() + 64,
        Payload::Correction(c) => c.prompt.len() + c.original.len() + c.corrected.len(),
    });

pub(crate) const KIND_FEEDBACK: u8 = 0;
pub(crate) const KIND_CORRECTION: u8 = 1;
pub(crate) const KIND_REF: u8 = 2;

/// A keyed join row; within a key, feedback comes first (oldest to latest), then correction
/// links, then example references.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct JoinItem {
    pub key: String,
    pub kind: u8,
    /// Feedback: its rank and polarity (true = positive).
    pub fb: Option<(FbOrder, bool)>,
    /// Reference: the example id.
    pub ex_id: String,
}
json_spill!(JoinItem, |j| j.key.len() + j.ex_id.len());

/// What the join found for one example.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Annot {
    pub ex_id: String,
    pub fb: Option<(FbOrder, bool)>,
    pub corrected: bool,
}
json_spill!(Annot, |a| a.ex_id.len());

/// Sorts the join items by key and turns each group into annotations, sorted by example id.
pub(crate) fn annotate(
    join: Sorter<JoinItem>,
    dir: &std::path::Path,
    budget: usize,
) -> Result<Sorter<Annot>, ExportError> {
    let mut out = Sorter::new(dir, budget);
    let mut items = Grouped::new(join.finish()?);
    while let Some(first) = items.next_item()? {
        let key = first.key.clone();
        let mut fb = None;
        let mut corrected = false;
        let mut item = Some(first);
        while let Some(it) = item {
            match it.kind {
                // Ascending order within the key: the last feedback seen is the latest.
                KIND_FEEDBACK => fb = it.fb.or(fb),
                KIND_CORRECTION => corrected = true,
                _ => {
                    if fb.is_some() || corrected {
                        out.push(Annot {
                            ex_id: it.ex_id,
                            fb,
                            corrected,
                        })?;
                    }
                }
            }
            item = items.next_if(|n| n.key == key)?;
        }
    }
    Ok(out)
}

/// An example or correction with everything the join learnt about it.
pub(crate) struct Resolved {
    pub id: String,
    pub payload: Payload,
    /// Latest feedback from any source: true = positive.
    pub feedback: Option<bool>,
    pub corrected: bool,
}

/// Walks the rows (by id) and annotations (by example id) together. Calls `emit` once per
/// distinct id and `duplicate` for every replayed copy.
pub(crate) fn resolve(
    rows: Sorter<Row>,
    annots: Sorter<Annot>,
    mut emit: impl FnMut(Resolved) -> Result<(), ExportError>,
    mut duplicate: impl FnMut(),
) -> Result<(), ExportError> {
    let mut rows = Grouped::new(rows.finish()?);
    let mut annots = Grouped::new(annots.finish()?);
    while let Some(first) = rows.next_item()? {
        let mut best_fb: Option<(FbOrder, bool)> = None;
        let mut corrected = false;
        let mut consider = |row: &Row| {
            if let Payload::Example(e) = &row.payload {
                corrected |= e.was_corrected;
                if let Some(p) = e.in_feedback {
                    let cand = ((e.ts, 0u8, row.order.1, row.order.2), p);
                    if best_fb.is_none_or(|b| cand.0 > b.0) {
                        best_fb = Some(cand);
                    }
                }
            }
        };
        consider(&first);
        while let Some(dup) = rows.next_if(|r| r.id == first.id)? {
            consider(&dup);
            duplicate();
        }
        // Annotations of ids with no row cannot exist (references come from rows), but skip
        // anything smaller defensively so the walk stays in step.
        while annots.next_if(|a| a.ex_id < first.id)?.is_some() {}
        while let Some(a) = annots.next_if(|a| a.ex_id == first.id)? {
            corrected |= a.corrected;
            if let Some(f) = a.fb {
                if best_fb.is_none_or(|b| f.0 > b.0) {
                    best_fb = Some(f);
                }
            }
        }
        emit(Resolved {
            id: first.id,
            payload: first.payload,
            feedback: best_fb.map(|f| f.1),
            corrected,
        })?;
    }
    Ok(())
}
