//! The records export spills, and the join of examples with their feedback and corrections.
//!
//! Feedback and corrections may be written before or after the example they refer to, in any
//! file, so nothing can be joined while reading. Instead every input becomes keyed rows:
//!
//! * each example is a [`Row`] (sorted by id, so replays of one id meet and one is kept; "by
//!   id" here and below is by the id's hash, then the id: see [`Row::new`]) and
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

use super::codec::{Dec, Enc};
use super::prepare::{Loc, Prepared};
use super::spill::{Budget, Grouped, Sorter, SpillItem};
use super::ExportError;
use std::cmp::Ordering;

/// Position of an input line: (stream 0 examples / 1 feedback / 2 corrections, file, line).
pub(crate) type Order = (u8, u32, u64);

/// Rank of a feedback event: (timestamp µs, 0 in-example / 1 feedback stream, file, line).
/// The greatest one is the one that counts.
pub(crate) type FbOrder = (i64, u8, u32, u64);

/// The parts of an example export needs; its texts stay in the segment (see [`super::prepare`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ex {
    pub ts: i64,
    pub verified_correction: bool,
    /// Feedback applied inside the example (`quality.user_feedback`): true = positive.
    pub in_feedback: Option<bool>,
    /// `quality.was_corrected`: a correction was applied before the example was written.
    pub was_corrected: bool,
    pub auto_score: f64,
    pub loc: Loc,
    /// 1 + index in [`super::prepare::STATIC_REASONS`] of the first static filter that drops
    /// the example, 0 if none does.
    pub static_drop: u8,
    /// Scrubbed texts and dedup keys; `None` when the example is dropped whatever the join
    /// finds (static filter, or [`super::prepare::text_needed`] false).
    pub prepared: Option<Prepared>,
    /// Its user's split group ([`super::split::SplitBy::User`]; `None`: no user, or the
    /// split goes by prompt).
    pub group: Option<u64>,
}

impl Ex {
    /// Field by field, for the spill files and the prepared cache
    /// ([`super::prepared_cache`]).
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        self.encode_in_file(self.loc.file, e)
    }

    /// [`Ex::encode`] with `file` as its location's file index: the prepared cache stores 0
    /// (its reader puts in the index the segment has in that export), so a segment's entry is
    /// the same bytes whoever wrote it.
    pub(crate) fn encode_in_file(&self, file: u32, e: &mut Enc<'_>) {
        e.i64(self.ts)
            .bool(self.verified_correction)
            .opt_bool(self.in_feedback)
            .bool(self.was_corrected)
            .f64(self.auto_score);
        Loc { file, ..self.loc }.encode(e);
        e.u8(self.static_drop).opt_u64(self.group);
        match &self.prepared {
            None => {
                e.u8(0);
            }
            Some(p) => {
                e.u8(1);
                p.encode(e);
            }
        }
    }
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Self, String> {
        Ok(Ex {
            ts: d.i64()?,
            verified_correction: d.bool()?,
            in_feedback: d.opt_bool()?,
            was_corrected: d.bool()?,
            auto_score: d.f64()?,
            loc: Loc::decode(d)?,
            static_drop: d.u8()?,
            group: d.opt_u64()?,
            prepared: match d.u8()? {
                0 => None,
                1 => Some(Prepared::decode(d)?),
                t => return Err(format!("bad prepared tag {t}")),
            },
        })
    }
}

/// The parts of a correction record export needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Corr {
    pub ts: i64,
    pub prompt: String,
    pub original: String,
    pub corrected: String,
    pub include: bool,
    /// The tag filter it fails, decided when it is read (see
    /// [`super::ExportOptions::tag_drop`]), coded as [`Ex::static_drop`] is.
    pub tag_drop: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Example(Ex),
    Correction(Corr),
}

/// One example or correction record, keyed by its id and where it was read.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    id_hash: u64,
    pub id: String,
    pub order: Order,
    pub payload: Payload,
}

/// Rows and annotations are ordered by their id's hash first, then by the id: the join only
/// needs equal ids together and both sides in one order, and comparing two hashes is one
/// integer compare where two ids (which share long prefixes, `train_20261127_0800...`) took
/// a `memcmp` call each, most of the rows' sort (15 ms at 100,000 examples).
fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

impl Row {
    pub(crate) fn new(id: String, order: Order, payload: Payload) -> Self {
        Row {
            id_hash: id_hash(&id),
            id,
            order,
            payload,
        }
    }

    fn key(&self) -> (u64, &str, Order) {
        (self.id_hash, &self.id, self.order)
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

fn encode_order(o: Order, e: &mut Enc<'_>) {
    e.u8(o.0).u32(o.1).u64(o.2);
}

fn decode_order(d: &mut Dec<'_>) -> Result<Order, String> {
    Ok((d.u8()?, d.u32()?, d.u64()?))
}

impl SpillItem for Row {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let e = &mut Enc(out);
        e.str(&self.id);
        encode_order(self.order, e);
        match &self.payload {
            Payload::Example(x) => {
                e.u8(0);
                x.encode(e);
            }
            Payload::Correction(c) => {
                e.u8(1)
                    .i64(c.ts)
                    .str(&c.prompt)
                    .str(&c.original)
                    .str(&c.corrected)
                    .bool(c.include)
                    .u8(c.tag_drop);
            }
        }
        Ok(())
    }
    fn decode(buf: &[u8]) -> Result<Self, String> {
        let d = &mut Dec::new(buf);
        let id = d.str()?;
        let order = decode_order(d)?;
        let payload = match d.u8()? {
            0 => Payload::Example(Ex::decode(d)?),
            1 => Payload::Correction(Corr {
                ts: d.i64()?,
                prompt: d.str()?,
                original: d.str()?,
                corrected: d.str()?,
                include: d.bool()?,
                tag_drop: d.u8()?,
            }),
            t => return Err(format!("bad payload tag {t}")),
        };
        d.end()?;
        Ok(Row::new(id, order, payload))
    }
    fn weight(&self) -> usize {
        self.id.len()
            + match &self.payload {
                Payload::Example(e) => e.prepared.as_ref().map_or(0, Prepared::weight),
                Payload::Correction(c) => c.prompt.len() + c.original.len() + c.corrected.len(),
            }
    }
}

pub(crate) const KIND_FEEDBACK: u8 = 0;
pub(crate) const KIND_CORRECTION: u8 = 1;
pub(crate) const KIND_REF: u8 = 2;

/// What a join row is keyed on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum JoinKey {
    /// Hash of a normalized (prompt, answer) pair ([`super::prepare::pr_key`]).
    Pair(u128),
    /// An example id or request id.
    Id(String),
}

/// A [`JoinKey`], borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyRef<'a> {
    Pair(u128),
    Id(&'a str),
}

impl JoinKey {
    pub(crate) fn as_key_ref(&self) -> KeyRef<'_> {
        match self {
            JoinKey::Pair(k) => KeyRef::Pair(*k),
            JoinKey::Id(s) => KeyRef::Id(s),
        }
    }
}

/// The keys feedback and corrections name, as a Bloom filter of fixed size (1 MiB): an
/// example reference whose key is not in it cannot be joined to anything and is not
/// sorted at all. A false positive only costs a useless reference; the filter's size does
/// not grow with the data.
pub(crate) struct KeyFilter {
    bits: Vec<u64>,
    empty: bool,
}

impl KeyFilter {
    const BITS: u64 = 1 << 23;

    pub(crate) fn new() -> Self {
        KeyFilter {
            bits: Vec::new(),
            empty: true,
        }
    }

    /// Three bit positions from one 128-bit hash of the key.
    fn positions(key: KeyRef<'_>) -> [u64; 3] {
        let h = match key {
            KeyRef::Pair(k) => xxhash_rust::xxh3::xxh3_128_with_seed(&k.to_le_bytes(), 1),
            KeyRef::Id(s) => xxhash_rust::xxh3::xxh3_128_with_seed(s.as_bytes(), 2),
        };
        let (a, b) = (h as u64, (h >> 64) as u64);
        [0u64, 1, 2].map(|i| a.wrapping_add(i.wrapping_mul(b)) % Self::BITS)
    }

    pub(crate) fn insert(&mut self, key: &JoinKey) {
        if self.empty {
            self.bits = vec![0; (Self::BITS / 64) as usize];
            self.empty = false;
        }
        for p in Self::positions(key.as_key_ref()) {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    /// Takes the key borrowed: it is asked about every example's keys, and most are not in
    /// it (cloning each id first to ask was a string allocation per line).
    pub(crate) fn may_contain(&self, key: KeyRef<'_>) -> bool {
        !self.empty
            && Self::positions(key)
                .iter()
                .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }
}

/// A keyed join row; within a key, feedback comes first (oldest to latest), then correction
/// links, then example references.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct JoinItem {
    pub key: JoinKey,
    pub kind: u8,
    /// Feedback: its rank and polarity (true = positive).
    pub fb: Option<(FbOrder, bool)>,
    /// Reference: the example id. Correction link, when corrections are exported: the
    /// correction's id (it learns its original's user and split group from the join).
    /// Feedback: the event's id (`fb_...`), by which a re-delivered event is known.
    pub ex_id: String,
    /// Reference, when the split goes by user: the example's split group.
    pub group: Option<u64>,
    /// Reference, when corrections are exported: the example's user id, which its
    /// corrections are scrubbed with.
    pub user: Option<String>,
}

fn encode_fb(fb: Option<(FbOrder, bool)>, e: &mut Enc<'_>) {
    match fb {
        None => {
            e.u8(0);
        }
        Some(((ts, src, file, line), pos)) => {
            e.u8(1).i64(ts).u8(src).u32(file).u64(line).bool(pos);
        }
    }
}

fn decode_fb(d: &mut Dec<'_>) -> Result<Option<(FbOrder, bool)>, String> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(((d.i64()?, d.u8()?, d.u32()?, d.u64()?), d.bool()?))),
        t => Err(format!("bad feedback tag {t}")),
    }
}

impl SpillItem for JoinItem {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let e = &mut Enc(out);
        match &self.key {
            JoinKey::Pair(k) => e.u8(0).u128(*k),
            JoinKey::Id(s) => e.u8(1).str(s),
        };
        e.u8(self.kind);
        encode_fb(self.fb, e);
        e.str(&self.ex_id)
            .opt_u64(self.group)
            .opt_str(self.user.as_deref());
        Ok(())
    }
    fn decode(buf: &[u8]) -> Result<Self, String> {
        let d = &mut Dec::new(buf);
        let key = match d.u8()? {
            0 => JoinKey::Pair(d.u128()?),
            1 => JoinKey::Id(d.str()?),
            t => return Err(format!("bad join key tag {t}")),
        };
        let item = JoinItem {
            key,
            kind: d.u8()?,
            fb: decode_fb(d)?,
            ex_id: d.str()?,
            group: d.opt_u64()?,
            user: d.opt_str()?,
        };
        d.end()?;
        Ok(item)
    }
    fn weight(&self) -> usize {
        let k = match &self.key {
            JoinKey::Pair(_) => 0,
            JoinKey::Id(s) => s.len(),
        };
        k + self.ex_id.len() + self.user.as_ref().map_or(0, String::len)
    }
}

/// What the join found for one example (or, for a correction, the split group and user id of
/// the example it corrects), ordered as [`Row`]s are (by the id's hash, then the id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Annot {
    ex_hash: u64,
    pub ex_id: String,
    pub fb: Option<(FbOrder, bool)>,
    pub corrected: bool,
    pub group: Option<u64>,
    pub user: Option<String>,
}

impl Annot {
    fn new(
        ex_id: String,
        fb: Option<(FbOrder, bool)>,
        corrected: bool,
        group: Option<u64>,
        user: Option<String>,
    ) -> Self {
        Annot {
            ex_hash: id_hash(&ex_id),
            ex_id,
            fb,
            corrected,
            group,
            user,
        }
    }

    fn key(&self) -> (u64, &str) {
        (self.ex_hash, &self.ex_id)
    }
}

impl SpillItem for Annot {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let e = &mut Enc(out);
        e.str(&self.ex_id);
        encode_fb(self.fb, e);
        e.bool(self.corrected)
            .opt_u64(self.group)
            .opt_str(self.user.as_deref());
        Ok(())
    }
    fn decode(buf: &[u8]) -> Result<Self, String> {
        let d = &mut Dec::new(buf);
        let a = Annot::new(
            d.str()?,
            decode_fb(d)?,
            d.bool()?,
            d.opt_u64()?,
            d.opt_str()?,
        );
        d.end()?;
        Ok(a)
    }
    fn weight(&self) -> usize {
        self.ex_id.len() + self.user.as_ref().map_or(0, String::len)
    }
}

/// Sorts the join items by key and turns each group into annotations, sorted by example id.
pub(crate) fn annotate(
    join: Sorter<JoinItem>,
    dir: &std::path::Path,
    budget: &Budget,
) -> Result<Sorter<Annot>, ExportError> {
    let mut out = Sorter::new(dir, budget);
    let mut items = Grouped::new(join.finish()?);
    while let Some(first) = items.next_item()? {
        let key = first.key.clone();
        let mut fb = None;
        // The feedback events seen in this group, by id.
        let mut events: Vec<String> = Vec::new();
        let mut corrected = false;
        // Corrections (by id) still to learn the split group and user of the example they
        // correct.
        let mut corrections: Vec<String> = Vec::new();
        let mut item = Some(first);
        while let Some(it) = item {
            match it.kind {
                // Ascending order within the key: the last feedback seen is the latest. An
                // event seen before (delivered again: a re-sent spool file, one read again
                // after a crash) counts once, at its first time: taken at a later time it
                // would outrank feedback given after it.
                KIND_FEEDBACK => {
                    if it.ex_id.is_empty() || !events.contains(&it.ex_id) {
                        fb = it.fb.or(fb);
                        events.push(it.ex_id);
                    }
                }
                KIND_CORRECTION => {
                    corrected = true;
                    if !it.ex_id.is_empty() {
                        corrections.push(it.ex_id);
                    }
                }
                _ => {
                    if it.group.is_some() || it.user.is_some() {
                        for c in corrections.drain(..) {
                            out.push(Annot::new(c, None, false, it.group, it.user.clone()))?;
                        }
                    }
                    if fb.is_some() || corrected {
                        out.push(Annot::new(it.ex_id, fb, corrected, None, None))?;
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
    /// The split group: an example's own, a correction's original's (see
    /// [`super::split::SplitBy::User`]).
    pub group: Option<u64>,
    /// A correction's original's user id (an example's texts were scrubbed with its own as
    /// they were read).
    pub user: Option<String>,
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
        let mut group = match &first.payload {
            Payload::Example(e) => e.group,
            Payload::Correction(_) => None,
        };
        let mut user: Option<String> = None;
        let mut consider = |row: &Row| {
            if let Payload::Example(e) = &row.payload {
                corrected |= e.was_corrected;
                if let Some(p) = e.in_feedback {
                    // Feedback applied while the example was buffered is also in the feedback
                    // stream, with the time it was given; here it ranks below any feedback
                    // event (the example's own timestamp, which the service's clock or time
                    // zone may put ahead of later feedback, must not pin it).
                    let cand = ((i64::MIN, 0u8, row.order.1, row.order.2), p);
                    if best_fb.is_none_or(|b| cand.0 > b.0) {
                        best_fb = Some(cand);
                    }
                }
            }
        };
        consider(&first);
        while let Some(dup) = rows.next_if(|r| r.id_hash == first.id_hash && r.id == first.id)? {
            consider(&dup);
            duplicate();
        }
        // Annotations of ids with no row cannot exist (references come from rows), but skip
        // anything smaller defensively so the walk stays in step.
        let id = (first.id_hash, first.id.as_str());
        while annots.next_if(|a| a.key() < id)?.is_some() {}
        while let Some(a) = annots.next_if(|a| a.key() == id)? {
            corrected |= a.corrected;
            group = group.or(a.group);
            user = user.or(a.user);
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
            group,
            user,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_join_key_filter_has_no_false_negatives() {
        let mut f = KeyFilter::new();
        assert!(!f.may_contain(KeyRef::Id("a")));
        let keys: Vec<JoinKey> = (0..5000u32)
            .map(|i| {
                if i % 2 == 0 {
                    JoinKey::Id(format!("train_{i}"))
                } else {
                    JoinKey::Pair(i as u128 * 0x9e37_79b9)
                }
            })
            .collect();
        for k in &keys {
            f.insert(k);
        }
        assert!(keys.iter().all(|k| f.may_contain(k.as_key_ref())));
        let false_pos = (0..5000u32)
            .filter(|i| f.may_contain(KeyRef::Id(&format!("other_{i}"))))
            .count();
        assert!(false_pos < 5, "{false_pos}");
    }
}
