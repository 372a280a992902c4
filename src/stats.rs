//! `stats`: counts over the collector's segments, streaming, for the `stats` command.
//!
//! The seed's `get_stats` fields (`buffer_count`, which the daemon's caller fills in,
//! `total_examples`, `corrections`, `by_source`, `by_relevance` with high/medium/low always
//! present, `by_tag`), plus `feedback` (`positive`/`negative` events, `orphaned` = events whose
//! target is neither an example id nor a request id of any example) and `rejected` (rejected
//! lines by reason). Unlike the seed, an example or correction read twice (a replay) is counted
//! once: ids are remembered as 16-byte hashes, the only memory that grows with the data
//! (about 16 MiB plus table overhead per million examples). Feedback counts every event once
//! by its id, whether or not it still applies; feedback that was applied inside an example
//! before it was written (`quality.user_feedback`) counts too, once per example.

use crate::export::input::for_each_line;
use crate::export::{ExportError, ExportInputs};
use crate::record::{
    reason_kind, CorrectionRecord, Feedback, FeedbackEvent, RejectedRecord, TrainingExample,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::path::PathBuf;

/// Feedback counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeedbackStats {
    pub positive: u64,
    pub negative: u64,
    pub orphaned: u64,
}

/// How many sealed example segments the prepared cache holds for the config's export options
/// (`export::prepare_ahead`): an export without flags reads those from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PreparedForExport {
    pub prepared: u64,
    pub sealed: u64,
}

/// The `stats` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub buffer_count: u64,
    pub total_examples: u64,
    pub corrections: u64,
    pub by_source: BTreeMap<String, u64>,
    pub by_relevance: BTreeMap<String, u64>,
    pub by_tag: BTreeMap<String, u64>,
    pub feedback: FeedbackStats,
    pub rejected: BTreeMap<String, u64>,
    /// Lines in the inputs that could not be parsed at all.
    pub unreadable_lines: u64,
    /// Left out when it cannot be told (no cache, an evaluation set missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_for_export: Option<PreparedForExport>,
}

fn h16(kind: u8, s: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update([kind]);
    h.update(s.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

// Domains of the hashed sets, so an id of one kind never collides with another's.
const TARGET: u8 = 1;
const CORR: u8 = 2;
const EVENT: u8 = 3;

/// Counts over `inputs` and the rejected-line files. `buffer_count` is 0: the caller adds
/// what is still in its buffer.
pub fn collect(inputs: &ExportInputs, rejected_files: &[PathBuf]) -> Result<Stats, ExportError> {
    let mut st = Stats::default();
    for r in ["high", "medium", "low"] {
        st.by_relevance.insert(r.into(), 0);
    }
    // Example ids and request ids: what feedback may target.
    let mut targets: HashSet<[u8; 16]> = HashSet::new();
    // Feedback applied inside examples while they were buffered: the daemon also writes each
    // such event to the feedback stream, so it counts only for examples no stream event
    // targets (data written by other tools, or by the seed).
    let mut inline: Vec<(Feedback, [u8; 16], Option<[u8; 16]>)> = Vec::new();
    for path in &inputs.examples {
        for_each_line(
            path,
            "examples",
            |_| {},
            |_, line| {
                let Ok(ex) = serde_json::from_slice::<TrainingExample>(line) else {
                    st.unreadable_lines += 1;
                    return Ok(());
                };
                if !targets.insert(h16(TARGET, &ex.id)) {
                    return Ok(());
                }
                let req = ex.metadata.request_id().map(|r| h16(TARGET, r));
                if let Some(r) = req {
                    targets.insert(r);
                }
                if let Some(fb) = ex.quality.user_feedback {
                    inline.push((fb, h16(TARGET, &ex.id), req));
                }
                st.total_examples += 1;
                *st.by_source.entry(ex.source).or_insert(0) += 1;
                *st.by_relevance
                    .entry(ex.quality.domain_relevance.as_str().into())
                    .or_insert(0) += 1;
                for t in ex.tags {
                    *st.by_tag.entry(t).or_insert(0) += 1;
                }
                Ok(())
            },
        )?;
    }
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut covered: HashSet<[u8; 16]> = HashSet::new();
    for path in &inputs.corrections {
        for_each_line(
            path,
            "corrections",
            |_| {},
            |_, line| {
                match serde_json::from_slice::<CorrectionRecord>(line) {
                    Ok(c) => {
                        if seen.insert(h16(CORR, &c.id)) {
                            st.corrections += 1;
                        }
                    }
                    Err(_) => st.unreadable_lines += 1,
                }
                Ok(())
            },
        )?;
    }
    for path in &inputs.feedback {
        for_each_line(
            path,
            "feedback",
            |_| {},
            |_, line| {
                let Ok(ev) = serde_json::from_slice::<FeedbackEvent>(line) else {
                    st.unreadable_lines += 1;
                    return Ok(());
                };
                if !seen.insert(h16(EVENT, &ev.id)) {
                    return Ok(());
                }
                match ev.feedback {
                    Feedback::Positive => st.feedback.positive += 1,
                    Feedback::Negative => st.feedback.negative += 1,
                }
                let target = h16(TARGET, &ev.target);
                if !targets.contains(&target) {
                    st.feedback.orphaned += 1;
                }
                covered.insert(target);
                Ok(())
            },
        )?;
    }
    for (fb, id, req) in inline {
        if covered.contains(&id) || req.is_some_and(|r| covered.contains(&r)) {
            continue;
        }
        match fb {
            Feedback::Positive => st.feedback.positive += 1,
            Feedback::Negative => st.feedback.negative += 1,
        }
    }
    for path in rejected_files {
        for_each_line(
            path,
            "rejected",
            |_| {},
            |_, line| {
                match serde_json::from_slice::<RejectedRecord>(line) {
                    Ok(r) => *st.rejected.entry(reason_kind(&r.reason)).or_insert(0) += 1,
                    Err(_) => st.unreadable_lines += 1,
                }
                Ok(())
            },
        )?;
    }
    Ok(st)
}

fn section(out: &mut String, title: &str, map: &BTreeMap<String, u64>) {
    let _ = writeln!(out, "{title}:");
    if map.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    // Largest first, then by name, so the table reads like a ranking.
    let mut rows: Vec<(&String, &u64)> = map.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<width$}  {v:>10}");
    }
}

/// A plain-text table of the stats, for people.
pub fn render_table(st: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<16}{:>10}", "examples", st.total_examples);
    let _ = writeln!(out, "{:<16}{:>10}", "buffered", st.buffer_count);
    let _ = writeln!(out, "{:<16}{:>10}", "corrections", st.corrections);
    let _ = writeln!(out, "{:<16}{:>10}", "feedback +", st.feedback.positive);
    let _ = writeln!(out, "{:<16}{:>10}", "feedback -", st.feedback.negative);
    let _ = writeln!(out, "{:<16}{:>10}", "feedback orphan", st.feedback.orphaned);
    if st.unreadable_lines > 0 {
        let _ = writeln!(out, "{:<16}{:>10}", "unreadable", st.unreadable_lines);
    }
    let _ = writeln!(out, "by relevance:");
    for r in ["high", "medium", "low"] {
        let _ = writeln!(
            out,
            "  {r:<8}  {:>10}",
            st.by_relevance.get(r).copied().unwrap_or(0)
        );
    }
    section(&mut out, "by source", &st.by_source);
    section(&mut out, "by tag", &st.by_tag);
    section(&mut out, "rejected", &st.rejected);
    if let Some(p) = st.prepared_for_export {
        let _ = writeln!(
            out,
            "prepared for export: {} of {} sealed segments",
            p.prepared, p.sealed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::fixture;
    use crate::record::RejectedRecord;
    use std::io::Write;

    #[test]
    fn stats_counts_once_per_id_and_finds_orphans() {
        let f = fixture();
        let rej = f.dir.path().join("rejected_20261101_0001.jsonl");
        let mut w = std::fs::File::create(&rej).unwrap();
        for reason in ["not JSON", "not JSON", "missing prompt"] {
            let r = RejectedRecord::new("app.log", 1, reason, b"garbage");
            writeln!(w, "{}", serde_json::to_string(&r).unwrap()).unwrap();
        }
        drop(w);
        let st = collect(&f.inputs, &[rej]).unwrap();
        // 19 planted + 40 generated + 1 late in the open segment; the replay and the torn
        // line are not counted, the non-JSON line is unreadable.
        assert_eq!(st.total_examples, 60);
        assert_eq!(st.unreadable_lines, 1);
        assert_eq!(st.corrections, 2);
        assert_eq!(st.by_source["verified_correction"], 1);
        assert_eq!(st.by_source["chat"], 59);
        assert_eq!(st.by_relevance["low"], 1);
        assert_eq!(st.by_relevance["medium"], 0);
        assert_eq!(st.by_relevance["high"], 59);
        assert_eq!(st.by_tag["tpo"], 60);
        // 8 events (f8 targets nobody) + 1 applied inside an example.
        assert_eq!(st.feedback.orphaned, 1);
        assert_eq!(st.feedback.positive, 3);
        assert_eq!(st.feedback.negative, 6);
        assert_eq!(st.rejected["not JSON"], 2);
        assert_eq!(st.rejected["missing prompt"], 1);
        let json = serde_json::to_value(&st).unwrap();
        for k in [
            "buffer_count",
            "total_examples",
            "corrections",
            "by_source",
            "by_relevance",
            "by_tag",
            "feedback",
            "rejected",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
        let table = render_table(&st);
        assert!(
            table.contains("examples") && table.contains("not JSON") && table.contains("medium")
        );
    }

    #[test]
    fn stats_of_nothing_has_all_relevance_levels() {
        let st = collect(&ExportInputs::default(), &[]).unwrap();
        assert_eq!(st.by_relevance.len(), 3);
        assert_eq!(st.total_examples, 0);
        assert!(render_table(&st).contains("(none)"));
    }
}
