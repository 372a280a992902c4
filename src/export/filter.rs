//! From a resolved example or correction to an output candidate, or to the reason it is
//! dropped. One reason per record, checked in this order:
//!
//! 1. `correction_excluded`: a `verified_correction` example when corrections are off.
//! 2. Format rules, by the format's kind. SFT formats: `corrected_original` (the answer was
//!    corrected), `negative_feedback` (latest feedback is a thumbs down). Preference formats
//!    (`dpo`, ...): every example is `not_a_preference_pair` (pairs come from correction
//!    records, which carry both answers); a correction whose answer did not change is
//!    `identical_pair`. Binary formats (`kto`, ...): see [`kto_label`]; an example with no
//!    human signal is `unlabeled`.
//! 3. `outside_time_range` (timestamp outside `--since`/`--until`), then the seed's filters:
//!    `not_included` (`include_in_training` false), `low_relevance`
//!    (below `min_quality`; corrections count as high, as in the seed), then `excluded_tag`
//!    (a tag of `exclude_tags`), `tag_not_selected` (none of `tags`, when set), `low_score`
//!    (`auto_score` below `min_score`; corrections score 1), `short_prompt`, `long_prompt`,
//!    `short_response`, `long_response` (characters outside the bounds, counted before
//!    scrubbing, as the seed counts them; a preference pair's rejected answer must fit the
//!    maximum too), `eval_contamination` (shares a run of words with an evaluation
//!    set: [`super::decontaminate`]).
//!
//! Candidates carry scrubbed text, the exact-dedup key and the total order that picks the best
//! copy among duplicates: correction > positive feedback > no feedback > negative (KTO only) >
//! higher auto_score > newer timestamp > smaller id.

use super::codec::{Dec, Enc};
use super::decontaminate::{EvalIndex, Words};
use super::dedup::normalize;
use super::join::{Payload, Resolved};
use super::pii::Scrubber;
use super::prepare::{self, Loc, TextSrc, STATIC_REASONS};
use super::spill::SpillItem;
use super::{ExportOptions, Kind};
use std::cmp::Ordering;

/// Best first. Every field is "smaller is better" so a derived order sorts best first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cand {
    /// Exact-dedup key: (label: 0 none / 1 false / 2 true, hash of the normalized prompt).
    pub key: (u8, u128),
    pub rank: Rank,
    pub ts: i64,
    /// The example line the texts are in (`None` for a correction, whose texts are owned).
    pub loc: Option<Loc>,
    pub prompt: TextSrc,
    pub completion: TextSrc,
    pub rejected: Option<String>,
    pub label: Option<bool>,
    /// Unsalted LSH band hashes of prompt + completion.
    pub band_ix: Option<u64>,
    /// Its number in rank order (best first), given when dedup numbers the candidates.
    pub num: u32,
    /// Its split group (see [`super::split::SplitBy::User`]); `None`: by its prompt.
    pub split_group: Option<u64>,
}

impl Cand {
    fn weight(&self) -> usize {
        self.prompt.weight()
            + self.completion.weight()
            + self.rejected.as_ref().map_or(0, String::len)
            + self.rank.id.len()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        let e = &mut Enc(out);
        e.u8(self.key.0).u128(self.key.1);
        let r = &self.rank;
        e.u8(r.correction)
            .u8(r.feedback)
            .i64(r.neg_score)
            .i64(r.neg_ts)
            .str(&r.id)
            .i64(self.ts);
        match &self.loc {
            None => {
                e.u8(0);
            }
            Some(l) => {
                e.u8(1);
                l.encode(e);
            }
        }
        self.prompt.encode(e);
        self.completion.encode(e);
        e.opt_str(self.rejected.as_deref()).opt_bool(self.label);
        prepare::encode_band_ix(self.band_ix, e);
        e.u32(self.num).opt_u64(self.split_group);
    }
    fn decode(buf: &[u8]) -> Result<Self, String> {
        let d = &mut Dec::new(buf);
        let c = Cand {
            key: (d.u8()?, d.u128()?),
            rank: Rank {
                correction: d.u8()?,
                feedback: d.u8()?,
                neg_score: d.i64()?,
                neg_ts: d.i64()?,
                id: d.str()?,
            },
            ts: d.i64()?,
            loc: match d.u8()? {
                0 => None,
                1 => Some(Loc::decode(d)?),
                t => return Err(format!("bad location tag {t}")),
            },
            prompt: TextSrc::decode(d)?,
            completion: TextSrc::decode(d)?,
            rejected: d.opt_str()?,
            label: d.opt_bool()?,
            band_ix: prepare::decode_band_ix(d)?,
            num: d.u32()?,
            split_group: d.opt_u64()?,
        };
        d.end()?;
        Ok(c)
    }
}

/// Candidates ordered best first overall.
#[derive(Debug, Clone)]
pub(crate) struct ByRank(pub Cand);
/// Candidates in output order: timestamp, then id.
#[derive(Debug, Clone)]
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
        impl SpillItem for $t {
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
                self.0.encode(out);
                Ok(())
            }
            fn decode(buf: &[u8]) -> Result<Self, String> {
                Cand::decode(buf).map($t)
            }
            fn weight(&self) -> usize {
                self.0.weight()
            }
        }
    };
}
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

/// Turns a resolved record into a candidate, or names why it is dropped. Examples arrive
/// prepared (scrubbed, keyed: [`prepare`]); corrections are prepared here, and their band keys
/// come back beside the candidate for the caller to store (empty for an example, whose keys
/// are stored already).
pub(crate) fn candidate(
    r: Resolved,
    opts: &ExportOptions,
    scrubber: &Scrubber,
    lsh: Option<(usize, usize)>,
    eval: Option<&EvalIndex>,
) -> Result<(Cand, Vec<u64>), &'static str> {
    let kind = opts.format.kind();
    // A correction's band keys, computed here; the caller stores them and sets `band_ix`.
    let mut new_bands = Vec::new();
    let (
        ts,
        label,
        correction,
        score,
        feedback,
        loc,
        prompt,
        completion,
        rejected,
        norm_key,
        band_ix,
    );
    match r.payload {
        Payload::Example(e) => {
            if e.verified_correction && !opts.include_corrections {
                return Err("correction_excluded");
            }
            label = match kind {
                Kind::Preference => return Err("not_a_preference_pair"),
                Kind::Binary => match kto_label(e.verified_correction, r.corrected, r.feedback) {
                    Some(l) => Some(l),
                    None => return Err("unlabeled"),
                },
                Kind::Sft => {
                    if r.corrected {
                        return Err("corrected_original");
                    }
                    if r.feedback == Some(false) {
                        return Err("negative_feedback");
                    }
                    None
                }
            };
            if let Some(reason) = STATIC_REASONS.get((e.static_drop as usize).wrapping_sub(1)) {
                return Err(reason);
            }
            // Read time prepares every example that gets this far (`prepare::text_needed`).
            let Some(p) = e.prepared else {
                return Err("internal_error");
            };
            ts = e.ts;
            correction = e.verified_correction;
            score = e.auto_score;
            feedback = r.feedback;
            loc = Some(e.loc);
            prompt = p.prompt;
            completion = p.completion;
            rejected = None;
            norm_key = p.norm_key;
            band_ix = p.band_ix;
        }
        Payload::Correction(c) => {
            if kind == Kind::Preference && normalize(&c.original) == normalize(&c.corrected) {
                return Err("identical_pair");
            }
            if !opts.in_time_window(c.ts) {
                return Err("outside_time_range");
            }
            // Corrections count as high relevance, as in the seed, so `low_relevance` never
            // drops one.
            if !c.include {
                return Err("not_included");
            }
            if let Some(reason) = STATIC_REASONS.get((c.tag_drop as usize).wrapping_sub(1)) {
                return Err(reason);
            }
            // A preference pair trains on the rejected answer too.
            let answers: &[&str] = if kind == Kind::Preference {
                &[&c.corrected, &c.original]
            } else {
                &[&c.corrected]
            };
            if let Some(reason) = opts.length_drop(&c.prompt, answers) {
                return Err(reason);
            }
            let words = &mut Words::default();
            if eval.is_some_and(|ix| ix.contaminated(&[&c.prompt, &c.corrected], words)) {
                return Err("eval_contamination");
            }
            ts = c.ts;
            label = (kind == Kind::Binary).then_some(true);
            correction = true;
            // A human-written answer outranks any automatic score.
            score = 1.0;
            feedback = None;
            loc = None;
            // The user of the example it corrects: the same text gets the same pseudonym.
            let uid = r.user.as_deref();
            let p = scrubber.scrub(&c.prompt, uid);
            let comp = scrubber.scrub(&c.corrected, uid);
            rejected = (kind == Kind::Preference).then(|| scrubber.scrub(&c.original, uid));
            (norm_key, new_bands) = prepare::keys(&p, &comp, &mut prepare::Scratch::new(lsh));
            band_ix = None;
            prompt = TextSrc::Owned(p);
            completion = TextSrc::Owned(comp);
        }
    }
    let fb_rank = match (label, feedback) {
        (Some(false), _) | (None, Some(false)) => 2,
        (_, Some(true)) => 0,
        _ => 1,
    };
    let cand = Cand {
        key: (label.map_or(0, |l| 1 + l as u8), norm_key),
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
        loc,
        prompt,
        completion,
        rejected,
        label,
        band_ix,
        num: 0,
        split_group: r.group,
    };
    Ok((cand, new_bands))
}
