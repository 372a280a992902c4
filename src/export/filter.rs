//! From a resolved example or correction to an output candidate, or to the reason it is
//! dropped. One reason per record, checked in this order:
//!
//! 1. `correction_excluded`: a `verified_correction` example when corrections are off.
//! 2. Format rules. SFT formats: `corrected_original` (the answer was corrected),
//!    `negative_feedback` (latest feedback is a thumbs down). `dpo`: every example is
//!    `not_a_preference_pair` (pairs come from correction records, which carry both answers);
//!    a correction whose answer did not change is `identical_pair`. `kto`: see [`kto_label`];
//!    an example with no human signal is `unlabeled`.
//! 3. The seed's filters: `not_included` (`include_in_training` false), `low_relevance`
//!    (below `min_quality`; corrections count as high, as in the seed), `short_prompt`,
//!    `short_response` (fewer characters than the minimum, counted before scrubbing, as the
//!    seed counts them).
//!
//! Candidates carry scrubbed text, the exact-dedup key and the total order that picks the best
//! copy among duplicates: correction > positive feedback > no feedback > negative (KTO only) >
//! higher auto_score > newer timestamp > smaller id.

use super::dedup::{key128, normalize};
use super::join::{Payload, Resolved};
use super::pii::Scrubber;
use super::spill::json_spill;
use super::{ExportOptions, Format};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Best first. Every field is "smaller is better" so a derived order sorts best first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Rank {
    /// 0 correction, 1 other.
    pub correction: u8,
    /// 0 positive, 1 none, 2 negative.
    pub feedback: u8,
    /// Negated auto_score in millionths.
    pub neg_score: i64,
    /// Negated timestamp (µs).
    pub neg_ts: i64,
    pub id: String,
}

/// One line to be, before dedup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cand {
    /// Exact-dedup key: normalized prompt (plus label in KTO).
    pub key: (u64, u64),
    pub rank: Rank,
    pub ts: i64,
    pub prompt: String,
    pub completion: String,
    pub rejected: Option<String>,
    pub label: Option<bool>,
}

impl Cand {
    fn weight(&self) -> usize {
        self.prompt.len()
            + self.completion.len()
            + self.rejected.as_ref().map_or(0, String::len)
            + self.rank.id.len()
            + 64
    }
    fn by_key(&self) -> (&(u64, u64), &Rank) {
        (&self.key, &self.rank)
    }
}

/// Candidates ordered by dedup key, best copy first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct ByKey(pub Cand);
/// Candidates ordered best first overall.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct ByRank(pub Cand);
/// Candidates in output order: timestamp, then id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct ByTime(pub Cand);

macro_rules! order_by {
    ($t:ident, |$c:ident| $key:expr) => {
        impl PartialEq for $t {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for $t {}
        impl PartialOrd for $t {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for $t {
            fn cmp(&self, o: &Self) -> Ordering {
                fn k($c: &Cand) -> impl Ord + '_ {
                    $key
                }
                k(&self.0).cmp(&k(&o.0))
            }
        }
        json_spill!($t, |s| s.0.weight());
    };
}
order_by!(ByKey, |c| c.by_key());
order_by!(ByRank, |c| (&c.rank, &c.key));
order_by!(ByTime, |c| (c.ts, &c.rank.id, &c.key));

/// The KTO label of an example: a corrected answer is undesirable; otherwise the latest
/// thumbs up/down decides; a `verified_correction` example without feedback is desirable;
/// anything else has no label and is left out (KTO learns from human signal, and an
/// unreviewed production answer is neither).
pub(crate) fn kto_label(
    verified_correction: bool,
    corrected: bool,
    fb: Option<bool>,
) -> Option<bool> {
    if corrected {
        Some(false)
    } else if fb.is_some() {
        fb
    } else if verified_correction {
        Some(true)
    } else {
        None
    }
}

/// Turns a resolved record into a candidate, or names why it is dropped.
pub(crate) fn candidate(
    r: Resolved,
    opts: &ExportOptions,
    scrubber: &Scrubber,
) -> Result<Cand, &'static str> {
    let fmt = opts.format;
    let (
        ts,
        prompt,
        completion,
        rejected,
        label,
        correction,
        user,
        include,
        relevance,
        score,
        feedback,
    );
    match r.payload {
        Payload::Example(e) => {
            if e.verified_correction && !opts.include_corrections {
                return Err("correction_excluded");
            }
            label = match fmt {
                Format::Dpo => return Err("not_a_preference_pair"),
                Format::Kto => match kto_label(e.verified_correction, r.corrected, r.feedback) {
                    Some(l) => Some(l),
                    None => return Err("unlabeled"),
                },
                _ => {
                    if r.corrected {
                        return Err("corrected_original");
                    }
                    if r.feedback == Some(false) {
                        return Err("negative_feedback");
                    }
                    None
                }
            };
            ts = e.ts;
            prompt = e.prompt;
            completion = e.response;
            rejected = None;
            correction = e.verified_correction;
            user = e.user_id;
            include = e.include;
            relevance = e.relevance;
            score = e.auto_score;
            feedback = r.feedback;
        }
        Payload::Correction(c) => {
            if fmt == Format::Dpo && normalize(&c.original) == normalize(&c.corrected) {
                return Err("identical_pair");
            }
            ts = c.ts;
            label = (fmt == Format::Kto).then_some(true);
            rejected = (fmt == Format::Dpo).then_some(c.original);
            prompt = c.prompt;
            completion = c.corrected;
            correction = true;
            user = None;
            include = c.include;
            relevance = crate::record::Relevance::High;
            // A human-written answer outranks any automatic score.
            score = 1.0;
            feedback = None;
        }
    }
    if !include {
        return Err("not_included");
    }
    if relevance < opts.min_quality {
        return Err("low_relevance");
    }
    if prompt.chars().count() < opts.min_prompt_chars {
        return Err("short_prompt");
    }
    if completion.chars().count() < opts.min_response_chars {
        return Err("short_response");
    }
    let uid = user.as_deref();
    let prompt = scrubber.scrub(&prompt, uid);
    let completion = scrubber.scrub(&completion, uid);
    let rejected = rejected.map(|r| scrubber.scrub(&r, uid));
    let norm = normalize(&prompt);
    let k = match label {
        Some(l) => key128(&format!("{l}\0{norm}")),
        None => key128(&norm),
    };
    let fb_rank = match (label, feedback) {
        (Some(false), _) | (None, Some(false)) => 2,
        (_, Some(true)) => 0,
        _ => 1,
    };
    Ok(Cand {
        key: ((k >> 64) as u64, k as u64),
        rank: Rank {
            correction: if correction && label != Some(false) {
                0
            } else {
                1
            },
            feedback: fb_rank,
            neg_score: -((score * 1e6).round() as i64),
            neg_ts: ts.saturating_neg(),
            id: r.id,
        },
        ts,
        prompt,
        completion,
        rejected,
        label,
    })
}
