//! Read-time work on example lines, done in parallel, so that the rest of export moves small
//! records instead of texts.
//!
//! Everything export derives from an example's text depends on that line alone: the join key
//! of its normalized prompt + answer, the seed's static filters (`include_in_training`,
//! relevance, lengths), the PII-scrubbed texts, the exact-dedup key and the MinHash bands. So
//! each chunk of lines is parsed (borrowed, only the fields export needs) and prepared on all
//! cores, and the results are consumed in line order, which keeps the output independent of
//! thread timing.
//!
//! The texts themselves are not carried along: they are read again from the segment when the
//! line is written ([`Fetcher`]), straight from their bytes when the JSON string had no
//! escapes and scrubbing changed nothing (those bytes are then both the text and its JSON
//! encoding), by parsing the line again (and scrubbing again, if scrubbing changed it)
//! otherwise. Only corrections' texts travel with their records.

use super::codec::{Dec, Enc};
use super::decontaminate::{EvalIndex, Words};
use super::dedup;
use super::input::{Chunk, Line};
use super::join::{Ex, KeyRef};
use super::pii::Scrubber;
use super::{ExportError, ExportOptions, Kind};
use crate::record::{Quality, Relevance};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Where an example line is: (file index among the example inputs, offset, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: u32,
    pub off: u64,
    pub len: u32,
}

impl Loc {
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        e.u32(self.file).u64(self.off).u32(self.len);
    }
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Self, String> {
        Ok(Loc {
            file: d.u32()?,
            off: d.u64()?,
            len: d.u32()?,
        })
    }
}

/// Where an output text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextSrc {
    /// These bytes of the example's file: a JSON string without escapes, so they are the text.
    Raw { off: u64, len: u32 },
    /// The field of the example's line, parsed again (it has escapes; scrubbing left it alone).
    Line,
    /// The field of the example's line, parsed again and scrubbed again: scrubbing changed
    /// it. Scrubbing is deterministic, and doing it twice for the lines written is cheaper
    /// than carrying every scrubbed text through the sorts (on data where most texts
    /// carry PII, that was most of the spilled bytes).
    Rescrub,
    /// The text itself (a correction's).
    Owned(String),
}

impl TextSrc {
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        match self {
            TextSrc::Raw { off, len } => {
                e.u8(0).u64(*off).u32(*len);
            }
            TextSrc::Line => {
                e.u8(1);
            }
            TextSrc::Owned(s) => {
                e.u8(2).str(s);
            }
            TextSrc::Rescrub => {
                e.u8(3);
            }
        }
    }
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Self, String> {
        match d.u8()? {
            0 => Ok(TextSrc::Raw {
                off: d.u64()?,
                len: d.u32()?,
            }),
            1 => Ok(TextSrc::Line),
            2 => Ok(TextSrc::Owned(d.str()?)),
            3 => Ok(TextSrc::Rescrub),
            t => Err(format!("bad text source tag {t}")),
        }
    }
    /// Heap bytes, for the sorters' budgets.
    pub(crate) fn weight(&self) -> usize {
        match self {
            TextSrc::Owned(s) => s.len(),
            _ => 0,
        }
    }
}

/// What the filters and dedup need of an example's text, computed once at read time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    /// The scrubbed prompt and answer.
    pub prompt: TextSrc,
    pub completion: TextSrc,
    /// [`dedup::fast_key128`] of the normalized scrubbed prompt.
    pub norm_key: u128,
    /// Where the unsalted LSH band keys of the scrubbed prompt + answer are in the export's
    /// [`super::band_store::BandStore`] (`None`: near dedup off, or no words). The workers
    /// compute them ([`ExRead::bands`]); the reading thread stores them. The label salt is
    /// added when the bands are bucketed.
    pub band_ix: Option<u64>,
}

impl Prepared {
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        self.prompt.encode(e);
        self.completion.encode(e);
        e.u128(self.norm_key);
        encode_band_ix(self.band_ix, e);
    }
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Self, String> {
        Ok(Prepared {
            prompt: TextSrc::decode(d)?,
            completion: TextSrc::decode(d)?,
            norm_key: d.u128()?,
            band_ix: decode_band_ix(d)?,
        })
    }
    pub(crate) fn weight(&self) -> usize {
        self.prompt.weight() + self.completion.weight()
    }
}

pub(crate) fn encode_band_ix(ix: Option<u64>, e: &mut Enc<'_>) {
    match ix {
        None => e.u8(0),
        Some(i) => e.u8(1).u64(i),
    };
}

pub(crate) fn decode_band_ix(d: &mut Dec<'_>) -> Result<Option<u64>, String> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(d.u64()?)),
        t => Err(format!("bad band index tag {t}")),
    }
}

/// The static filters, in the order they are checked; [`Ex::static_drop`] is 1 + the index of
/// the first that fails, 0 when none does.
pub(crate) const STATIC_REASONS: [&str; 11] = [
    "outside_time_range",
    "not_included",
    "low_relevance",
    "excluded_tag",
    "tag_not_selected",
    "low_score",
    "short_prompt",
    "long_prompt",
    "short_response",
    "long_response",
    "eval_contamination",
];

/// Whether an example's text can matter: a preference export (`dpo`) drops every example,
/// and one without corrections drops `verified_correction` examples, before any other rule.
pub(crate) fn text_needed(verified_correction: bool, opts: &ExportOptions) -> bool {
    opts.format.kind() != Kind::Preference && (!verified_correction || opts.include_corrections)
}

/// What one example line gives export, from the line alone (not from the options' filters,
/// nor from the feedback and corrections read before it): what [`super::prepared_cache`]
/// keeps of a sealed segment, so one entry serves every filter, time window and split. The
/// options are applied by [`LineFacts::apply_options`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LineFacts {
    pub id: String,
    /// Its request id, when it has one that is not empty and not its id.
    pub request_id: Option<String>,
    /// Its user's id (not empty), which corrections of it are scrubbed with, as it is: only
    /// when corrections are exported and one may name it (not in the prepared cache: read
    /// back from the segment for such a line, [`read_back`]).
    pub user_id: Option<String>,
    /// [`prompt_key`] of its (unscrubbed) prompt: only an example whose prompt a correction
    /// names needs its (prompt, answer) key ([`pr_key`]).
    pub prompt_key: u128,
    /// Its [`Ex::static_drop`] is one of the filters no option decides (`not_included`,
    /// `eval_contamination`: the evaluation sets are part of the cache's fingerprint) or 0;
    /// its `group` is its user's, whatever the split.
    pub ex: Ex,
    /// What the option filters read.
    pub filters: FilterInputs,
    /// The unsalted band keys of the prepared texts, for the reading thread to store (empty
    /// when there are none).
    pub bands: Vec<u64>,
}

/// What the option filters read of an example besides its timestamp and `auto_score` (which
/// are in [`Ex`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilterInputs {
    pub relevance: Relevance,
    /// Its tags; empty when they were not read (no tag filter, no cache entry written).
    pub tags: Vec<String>,
    /// The characters of its prompt and answer, counted up to at least the options'
    /// [`ExportOptions::length_caps`] (in full for the cache).
    pub prompt_chars: u32,
    pub response_chars: u32,
}

impl FilterInputs {
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        e.u8(self.relevance as u8)
            .u32(self.prompt_chars)
            .u32(self.response_chars)
            .u32(self.tags.len() as u32);
        for t in &self.tags {
            e.str(t);
        }
    }
    /// `with_tags`: keep the tags (else they are skipped: no tag filter reads them).
    pub(crate) fn decode(d: &mut Dec<'_>, with_tags: bool) -> Result<Self, String> {
        let relevance = match d.u8()? {
            0 => Relevance::Low,
            1 => Relevance::Medium,
            2 => Relevance::High,
            r => return Err(format!("bad relevance {r}")),
        };
        let prompt_chars = d.u32()?;
        let response_chars = d.u32()?;
        let n = d.u32()? as usize;
        let mut tags = Vec::with_capacity(if with_tags { n.min(64) } else { 0 });
        for _ in 0..n {
            if with_tags {
                tags.push(d.str()?);
            } else {
                d.skip_str()?;
            }
        }
        Ok(FilterInputs {
            relevance,
            tags,
            prompt_chars,
            response_chars,
        })
    }
}

impl LineFacts {
    /// Applies the options' filters, time window first: sets [`Ex::static_drop`] to the first
    /// static filter that drops the example (the order of [`STATIC_REASONS`]), drops the
    /// texts of an example that cannot be written, and the user group when the split goes by
    /// prompt.
    pub(crate) fn apply_options(&mut self, opts: &ExportOptions) {
        let fixed = self.ex.static_drop;
        let reason = if !opts.in_time_window(self.ex.ts) {
            Some("outside_time_range")
        } else if fixed == static_drop_code(Some("not_included")) {
            Some("not_included")
        } else {
            option_drop(&self.filters, self.ex.auto_score, opts).or_else(|| {
                (fixed == static_drop_code(Some("eval_contamination")))
                    .then_some("eval_contamination")
            })
        };
        self.ex.static_drop = static_drop_code(reason);
        if reason.is_some() || !text_needed(self.ex.verified_correction, opts) {
            self.ex.prepared = None;
            self.bands.clear();
        }
        if opts.split_by == super::SplitBy::Prompt {
            self.ex.group = None;
        }
    }
}

/// The first of the filters the options decide (`low_relevance` ... `long_response`, in the
/// order of [`STATIC_REASONS`]) that drops an example.
fn option_drop(f: &FilterInputs, auto_score: f64, opts: &ExportOptions) -> Option<&'static str> {
    if f.relevance < opts.min_quality {
        Some("low_relevance")
    } else if let Some(r) = opts.tag_drop(&f.tags) {
        Some(r)
    } else if auto_score < opts.min_score {
        Some("low_score")
    } else {
        opts.length_drop_counted(f.prompt_chars, &[f.response_chars])
    }
}

/// One example line, read.
pub(crate) struct ExRead {
    pub facts: LineFacts,
    /// Its (prompt, answer) key, when a correction may name the pair ([`Ctx::targets`]).
    /// Decided here, on the workers: it needs the texts.
    pub pr_key: Option<u128>,
}

/// What preparing needs besides the line.
pub(crate) struct Ctx<'a> {
    pub opts: &'a ExportOptions,
    pub scrubber: &'a Scrubber,
    /// (bands, rows) when near dedup is on.
    pub lsh: Option<(usize, usize)>,
    /// [`prompt_key`]s of the corrections' original prompts: only an example whose prompt is
    /// one of them needs its (prompt, answer) key.
    pub corrected_prompts: &'a std::collections::HashSet<u128>,
    /// The keys feedback and corrections name: which of an example's keys the join needs.
    pub targets: &'a super::join::KeyFilter,
    /// The evaluation sets' word runs, when export decontaminates.
    pub eval: Option<&'a EvalIndex>,
    /// The facts go into the prepared cache, which serves every filter and time window: the
    /// texts of every example the fixed filters keep are prepared, its tags read and its
    /// characters counted in full, whatever the options' filters say.
    pub for_cache: bool,
}

/// Per-thread buffers and tables.
pub(crate) struct Scratch {
    buf: String,
    minhash: Option<dedup::MinHasher>,
    pub(crate) words: Words,
}

impl Scratch {
    pub(crate) fn new(lsh: Option<(usize, usize)>) -> Self {
        Scratch {
            buf: String::new(),
            minhash: lsh.map(|(b, r)| dedup::MinHasher::new(b, r)),
            words: Words::default(),
        }
    }
}

/// Join key of a (prompt, answer) pair: the hash of both normalized. `buf` is scratch.
pub(crate) fn pr_key(prompt: &str, response: &str, buf: &mut String) -> u128 {
    dedup::normalize_into(prompt, buf);
    pr_key_normalized(buf, response)
}

/// [`pr_key`] with the prompt already normalized (`buf`, which is then reused as scratch).
fn pr_key_normalized(buf: &mut String, response: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(buf.as_bytes());
    h.update(b"\0");
    dedup::normalize_into(response, buf);
    h.update(buf.as_bytes());
    h.digest128()
}

/// The key of a normalized prompt, for [`Ctx::corrected_prompts`] (and, unscrubbed, the
/// exact-dedup key when scrubbing leaves the prompt alone).
pub(crate) fn prompt_key(prompt: &str, buf: &mut String) -> u128 {
    dedup::normalize_into(prompt, buf);
    dedup::fast_key128(buf)
}

/// 1 + the index of `reason` in [`STATIC_REASONS`], 0 for none.
pub(crate) fn static_drop_code(reason: Option<&str>) -> u8 {
    let Some(reason) = reason else { return 0 };
    let i = STATIC_REASONS.iter().position(|r| *r == reason);
    debug_assert!(i.is_some(), "{reason} is not a static reason");
    i.map_or(0, |i| i as u8 + 1)
}

/// Parses and prepares one example line of file `file`.
pub(crate) fn example(
    line: &Line<'_>,
    file: u32,
    ctx: &Ctx<'_>,
    scratch: &mut Scratch,
) -> Result<ExRead, serde_json::Error> {
    let opts = ctx.opts;
    let for_cache = ctx.for_cache;
    let x = parse_example(line.bytes, for_cache || opts.filters_tags())?;
    let q = &x.quality;
    let ts = super::input::ts_micros(&x.timestamp);
    let (prompt_cap, response_cap) = if for_cache {
        (usize::MAX, usize::MAX)
    } else {
        opts.length_caps()
    };
    let filters = FilterInputs {
        relevance: q.domain_relevance,
        tags: if for_cache || opts.filters_tags() {
            x.tags.iter().map(|t| t.to_string()).collect()
        } else {
            Vec::new()
        },
        prompt_chars: chars_up_to(&x.prompt, prompt_cap),
        response_chars: chars_up_to(&x.response, response_cap),
    };
    // Whether the options' filters keep it (the time window aside): an example they drop
    // needs no more work, unless the facts are for the cache.
    let kept = for_cache || option_drop(&filters, q.auto_score, opts).is_none();
    let static_drop = if !x.include_in_training {
        static_drop_code(Some("not_included"))
    } else if kept
        && ctx
            .eval
            .is_some_and(|ix| ix.contaminated(&[&x.prompt, &x.response], &mut scratch.words))
    {
        static_drop_code(Some("eval_contamination"))
    } else {
        0
    };
    let verified_correction = x.source == "verified_correction";
    // `pr_key`, sharing the normalized prompt with the exact-dedup key, and only where a
    // correction may name the pair: normalizing every answer for it was a twentieth of the
    // export's CPU, and most examples are never corrected.
    let buf = &mut scratch.buf;
    let prompt_key = prompt_key(&x.prompt, buf);
    let pr_key = ctx
        .corrected_prompts
        .contains(&prompt_key)
        .then(|| pr_key_normalized(buf, &x.response))
        .filter(|&k| ctx.targets.may_contain(KeyRef::Pair(k)));
    // The texts can be written unless a filter drops the example; the cache's facts serve
    // every filter and window (and corrections on or off: only the format's kind is part
    // of its fingerprint).
    let text_may_be_needed = if for_cache {
        opts.format.kind() != Kind::Preference
    } else {
        kept && opts.in_time_window(ts) && text_needed(verified_correction, opts)
    };
    let (prepared, bands) = if static_drop == 0 && text_may_be_needed {
        let (p, bands) = prepare(&x, line, ctx, prompt_key, scratch);
        (Some(p), bands)
    } else {
        (None, Vec::new())
    };
    let loc = Loc {
        file,
        off: line.off,
        // A line is far below 4 GiB: the collector caps its input lines.
        len: u32::try_from(line.bytes.len()).unwrap_or(u32::MAX),
    };
    let request_id = match &x.metadata.request_id {
        Some(ReqId::Str(r)) if !r.is_empty() && *r != x.id => Some(r.to_string()),
        _ => None,
    };
    let may_be_corrected = opts.include_corrections
        && (pr_key.is_some()
            || ctx.targets.may_contain(KeyRef::Id(&x.id))
            || request_id
                .as_deref()
                .is_some_and(|r| ctx.targets.may_contain(KeyRef::Id(r))));
    Ok(ExRead {
        pr_key,
        facts: LineFacts {
            request_id,
            user_id: x
                .metadata
                .user_id
                .as_deref()
                .filter(|u| may_be_corrected && !u.is_empty())
                .map(String::from),
            prompt_key,
            ex: Ex {
                ts,
                verified_correction,
                in_feedback: q
                    .user_feedback
                    .map(|f| f == crate::record::Feedback::Positive),
                was_corrected: q.was_corrected,
                auto_score: q.auto_score,
                loc,
                static_drop,
                prepared,
                group: if for_cache || opts.split_by == super::SplitBy::User {
                    x.metadata
                        .user_id
                        .as_deref()
                        .filter(|u| !u.is_empty())
                        .map(super::split::user_group)
                } else {
                    None
                },
            },
            id: x.id.into_owned(),
            filters,
            bands,
        },
    })
}

/// The (prompt, answer) key ([`pr_key`]) and user id of an example line read before, for a
/// line whose facts came from the prepared cache and which a correction may name. `None` if
/// the line no longer parses (it did when it was cached, and sealed segments do not change).
pub(crate) fn read_back(bytes: &[u8]) -> Option<(u128, Option<String>)> {
    let x = parse_example(bytes, false).ok()?;
    let user = x.metadata.user_id.filter(|u| !u.is_empty());
    Some((pr_key(&x.prompt, &x.response, &mut String::new()), user))
}

/// The characters of `s`, or `cap` when it has at least that many: the length filters ask
/// only whether a text has at least n of them, for n up to their largest bound. Counted only
/// when its length in bytes does not decide it (a char is 1 to 4 bytes): most texts are far
/// longer than the bounds.
pub(crate) fn chars_up_to(s: &str, cap: usize) -> u32 {
    let cap = cap.min(u32::MAX as usize);
    if s.len() / 4 >= cap {
        cap as u32
    } else {
        s.chars().count().min(cap) as u32
    }
}

/// `prompt_key`: the exact-dedup key of the unscrubbed prompt.
fn prepare(
    x: &ExLine<'_>,
    line: &Line<'_>,
    ctx: &Ctx<'_>,
    prompt_key: u128,
    scratch: &mut Scratch,
) -> (Prepared, Vec<u64>) {
    let uid = x.metadata.user_id.as_deref();
    let prompt = ctx.scrubber.scrub_cow(&x.prompt, uid);
    let completion = ctx.scrubber.scrub_cow(&x.response, uid);
    let norm_key = match &prompt {
        Cow::Borrowed(_) => prompt_key,
        Cow::Owned(p) => {
            dedup::normalize_into(p, &mut scratch.buf);
            dedup::fast_key128(&scratch.buf)
        }
    };
    let bands = match &mut scratch.minhash {
        Some(m) => m.band_hashes(&[&prompt, &completion], 0),
        None => Vec::new(),
    };
    let p = Prepared {
        prompt: source(&x.prompt, prompt, line),
        completion: source(&x.response, completion, line),
        norm_key,
        band_ix: None,
    };
    (p, bands)
}

/// The exact-dedup key and unsalted band hashes of a scrubbed (prompt, answer).
pub(crate) fn keys(prompt: &str, completion: &str, scratch: &mut Scratch) -> (u128, Vec<u64>) {
    dedup::normalize_into(prompt, &mut scratch.buf);
    let norm_key = dedup::fast_key128(&scratch.buf);
    let bands = match &mut scratch.minhash {
        Some(m) => m.band_hashes(&[prompt, completion], 0),
        None => Vec::new(),
    };
    (norm_key, bands)
}

/// Where to find `scrubbed` later: the original's bytes when scrubbing changed nothing.
// The Cow's variant is the point: a borrowed text is a slice of the line.
#[allow(clippy::ptr_arg)]
fn source(original: &Cow<'_, str>, scrubbed: Cow<'_, str>, line: &Line<'_>) -> TextSrc {
    if let Cow::Owned(_) = scrubbed {
        return TextSrc::Rescrub;
    }
    match original {
        Cow::Borrowed(s) => {
            // A borrowed string points into the line: its position there is its offset.
            let at = (s.as_ptr() as usize).wrapping_sub(line.bytes.as_ptr() as usize);
            match u32::try_from(s.len()) {
                Ok(len) if at + s.len() <= line.bytes.len() => TextSrc::Raw {
                    off: line.off + at as u64,
                    len,
                },
                _ => TextSrc::Line,
            }
        }
        Cow::Owned(_) => TextSrc::Line,
    }
}

/// How many threads prepare lines.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// The prepared lines of one chunk of file `file`: (line number, result) in line order.
pub(crate) type PreparedChunk = (u32, Vec<(u64, Result<ExRead, serde_json::Error>)>);

/// Worker threads that prepare chunks while the caller reads the next ones and consumes the
/// results. Chunk `k` goes to worker `k % n` and its result is taken from that worker in
/// turn, so results come back in submission order whatever the threads' timing. At most one
/// chunk per worker and one more are in flight, which bounds memory.
pub(crate) struct Pool {
    jobs: Vec<std::sync::mpsc::SyncSender<(u32, Chunk)>>,
    results: Vec<std::sync::mpsc::Receiver<PreparedChunk>>,
    submitted: usize,
    received: usize,
}

impl Pool {
    pub(crate) fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        ctx: &'env Ctx<'env>,
    ) -> Self {
        let mut jobs = Vec::new();
        let mut results = Vec::new();
        for _ in 0..workers() {
            let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<(u32, Chunk)>(1);
            let (res_tx, res_rx) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let mut scratch = Scratch::new(ctx.lsh);
                // Ends when the pool (the sender) is dropped.
                while let Ok((file, chunk)) = job_rx.recv() {
                    let out = chunk
                        .lines()
                        .map(|l| (l.no, example(&l, file, ctx, &mut scratch)))
                        .collect();
                    if res_tx.send((file, out)).is_err() {
                        break;
                    }
                }
            });
            jobs.push(job_tx);
            results.push(res_rx);
        }
        Pool {
            jobs,
            results,
            submitted: 0,
            received: 0,
        }
    }

    fn gone() -> ExportError {
        ExportError::Internal("an export worker thread stopped".into())
    }

    /// Hands a chunk to the next worker; returns the oldest result if the window is full.
    pub(crate) fn submit(
        &mut self,
        file: u32,
        chunk: Chunk,
    ) -> Result<Option<PreparedChunk>, ExportError> {
        let n = self.jobs.len();
        let ready = if self.submitted - self.received > n {
            self.next()?
        } else {
            None
        };
        self.jobs[self.submitted % n]
            .send((file, chunk))
            .map_err(|_| Self::gone())?;
        self.submitted += 1;
        Ok(ready)
    }

    /// The oldest result not yet taken, waiting for it; `None` when all are taken.
    pub(crate) fn next(&mut self) -> Result<Option<PreparedChunk>, ExportError> {
        if self.received == self.submitted {
            return Ok(None);
        }
        let r = self.results[self.received % self.jobs.len()]
            .recv()
            .map_err(|_| Self::gone())?;
        self.received += 1;
        Ok(Some(r))
    }
}

/// The fields of an example line export reads. The other fields are still checked for their
/// types, so a line is unreadable exactly when it is not a `TrainingExample`. `T` is how the
/// prompt and answer are read: `Cow<str>`, or [`FastText`] where that gives the same result
/// (see [`parse_example`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(super) struct ExLine<'a, T = Cow<'a, str>> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) source: Cow<'a, str>,
    pub(super) prompt: T,
    pub(super) response: T,
    #[serde(borrow)]
    pub(super) metadata: MetaLine<'a>,
    pub(super) quality: Quality,
    #[serde(borrow)]
    pub(super) tags: Vec<Cow<'a, str>>,
    #[allow(dead_code)]
    pub(super) project_context: AnyStr,
    pub(super) include_in_training: bool,
}

/// Parses an example line. A UTF-8 line without control characters in the collector's own
/// layout is read by [`super::line_layout`] (half of serde's time); any other by
/// [`parse_example_serde`]. The line's UTF-8 is checked once, here, for all of them. The tags
/// may be left out unless `want_tags` (see [`super::line_layout::read`]).
fn parse_example(bytes: &[u8], want_tags: bool) -> Result<ExLine<'_>, serde_json::Error> {
    let line = simdutf8::basic::from_utf8(bytes).ok();
    if let Some(text) = line {
        if let Some(x) = super::line_layout::read(text, want_tags) {
            // The check for control characters comes second: the read has brought the line
            // into this core's cache by then.
            if !has_control_byte(bytes) {
                return Ok(x);
            }
            // A control character: only the strict parse takes the line (or says why not).
            return parse_strict(bytes, line);
        }
    }
    parse_example_serde(bytes, line)
}

/// Parses an example line with serde (`line`: `bytes` as text, if they are UTF-8). The
/// prompt and answer (most of a line's bytes) are read as [`FastText`] when the line has no
/// control character: serde_json reads a string it hands over as bytes with a vectorized
/// search for its end, but scans one it hands over as text eight bytes at a time, also for
/// control characters (which JSON forbids in strings; a line without any cannot have one),
/// and that scan was a tenth of the reading threads' time. Whatever that reading rejects (or
/// a line that is not UTF-8) is parsed again the strict way, which then gives the error.
fn parse_example_serde<'a>(
    bytes: &'a [u8],
    line: Option<&'a str>,
) -> Result<ExLine<'a>, serde_json::Error> {
    if let Some(text) = line {
        if let Ok(x) = serde_json::from_str::<ExLine<'_, FastText<'_>>>(text) {
            if !has_control_byte(bytes) {
                if let (Some(prompt), Some(response)) =
                    (x.prompt.into_text(text), x.response.into_text(text))
                {
                    return Ok(ExLine {
                        id: x.id,
                        timestamp: x.timestamp,
                        source: x.source,
                        prompt,
                        response,
                        metadata: x.metadata,
                        quality: x.quality,
                        tags: x.tags,
                        project_context: x.project_context,
                        include_in_training: x.include_in_training,
                    });
                }
            }
        }
    }
    parse_strict(bytes, line)
}

/// The strict parse, which gives the error ([`crate::record::parse_json_line`] with the
/// line's UTF-8 already known).
fn parse_strict<'a>(
    bytes: &'a [u8],
    line: Option<&'a str>,
) -> Result<ExLine<'a>, serde_json::Error> {
    match line {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_slice(bytes),
    }
}

/// For `benches/export_path.rs`: reads an example line as export does (`serde_only`: as
/// lines not in the collector's layout are read); returns the prompt's and answer's lengths
/// in bytes, `None` for an unreadable line.
#[doc(hidden)]
pub fn bench_read_line(bytes: &[u8], serde_only: bool) -> Option<usize> {
    let x = if serde_only {
        parse_example_serde(bytes, simdutf8::basic::from_utf8(bytes).ok()).ok()?
    } else {
        parse_example(bytes, false).ok()?
    };
    Some(x.prompt.len() + x.response.len())
}

/// Whether `b` has a byte below 0x20.
fn has_control_byte(b: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked to support AVX2.
        return unsafe { has_control_byte_avx2(b) };
    }
    has_control_byte_generic(b)
}

/// Branch-free per 64-byte block, so the compiler vectorizes it.
#[inline(always)]
fn has_control_byte_generic(b: &[u8]) -> bool {
    b.chunks(64)
        .any(|block| block.iter().fold(false, |acc, &c| acc | (c < 0x20)))
}

/// [`has_control_byte_generic`] compiled for AVX2: 32 bytes a compare instead of the x86-64
/// baseline's 16, for a check that runs over every byte of every line.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn has_control_byte_avx2(b: &[u8]) -> bool {
    has_control_byte_generic(b)
}

/// A JSON string read through serde's bytes path (no check for control characters):
/// without escapes, the bytes of the line it is in; with escapes, the decoded text, checked
/// to be UTF-8 (a lone surrogate escape decodes to bytes that are not, and is rejected).
enum FastText<'a> {
    InLine(&'a [u8]),
    Decoded(String),
}

impl<'a> FastText<'a> {
    /// The text. `line` is the (UTF-8) line that was parsed: the string's bytes are a slice of
    /// it, taken again as a `str` by their position, so their UTF-8 is not checked a second
    /// time. `None` only if the bytes are not where the line is (they always are).
    fn into_text(self, line: &'a str) -> Option<Cow<'a, str>> {
        match self {
            FastText::InLine(b) => {
                let at = (b.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
                line.get(at..at.checked_add(b.len())?).map(Cow::Borrowed)
            }
            FastText::Decoded(s) => Some(Cow::Owned(s)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for FastText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FastText<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<FastText<'a>, E> {
                Ok(FastText::InLine(v))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<FastText<'a>, E> {
                simdutf8::basic::from_utf8(v)
                    .map(|s| FastText::Decoded(s.to_owned()))
                    .map_err(|_| E::custom("string is not UTF-8"))
            }
        }
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
}

/// `record::Metadata` with `request_id` taken out of the flattened extras.
#[derive(Deserialize)]
pub(super) struct MetaLine<'a> {
    #[allow(dead_code)]
    pub(super) skill_used: Option<AnyStr>,
    #[allow(dead_code)]
    pub(super) tier_handled: Option<AnyStr>,
    #[allow(dead_code)]
    pub(super) latency_ms: Option<f64>,
    pub(super) user_id: Option<String>,
    #[allow(dead_code)]
    pub(super) prompt_tokens: usize,
    #[allow(dead_code)]
    pub(super) response_tokens: usize,
    #[serde(default, borrow)]
    pub(super) request_id: Option<ReqId<'a>>,
}

/// A string whose value is not needed.
pub(super) struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// `metadata.request_id`: any JSON value is accepted (it is an extra field), only a string
/// is a request id.
pub(super) enum ReqId<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for ReqId<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ReqId<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Other)
            }
            fn visit_unit<E>(self) -> Result<ReqId<'a>, E> {
                Ok(ReqId::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<ReqId<'a>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ReqId::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ReqId<'a>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ReqId::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Reads the texts of chosen examples back from their segments, through a window that
/// moves forward with the output. Output is in time order, which is mostly file order: then
/// the window grows (up to [`WINDOW_MAX`]) and most lines cost no system call. When the
/// order jumps around, the window shrinks back to [`WINDOW_MIN`], so a line costs about its
/// own length to read rather than a whole window's.
pub(crate) struct Fetcher {
    files: Vec<(File, PathBuf)>,
    win: Vec<u8>,
    /// (file, offset) of `win[0]`.
    at: Option<(u32, u64)>,
    /// Size of the next window read.
    size: usize,
}

const WINDOW_MIN: usize = 8 << 10;
const WINDOW_MAX: usize = 1 << 20;

impl Fetcher {
    /// `files`: the example inputs, opened when they were read, in their index order.
    pub(crate) fn new(files: Vec<(File, PathBuf)>) -> Self {
        Fetcher {
            files,
            win: Vec::new(),
            at: None,
            size: WINDOW_MIN,
        }
    }

    fn err(&self, file: u32, e: std::io::Error) -> ExportError {
        ExportError::Input {
            path: self
                .files
                .get(file as usize)
                .map(|f| f.1.clone())
                .unwrap_or_default(),
            source: e,
        }
    }

    /// Makes the window hold the whole line.
    fn load(&mut self, loc: Loc) -> Result<(), ExportError> {
        let mut sequential = false;
        if let Some((f, off)) = self.at {
            let end = off + self.win.len() as u64;
            if f == loc.file && loc.off >= off && loc.off + loc.len as u64 <= end {
                return Ok(());
            }
            // Just past the window: reading on in file order.
            sequential = f == loc.file && loc.off >= off && loc.off <= end + WINDOW_MIN as u64;
        }
        self.size = if sequential {
            (self.size * 2).min(WINDOW_MAX)
        } else {
            WINDOW_MIN
        };
        let Some((file, _)) = self.files.get(loc.file as usize) else {
            return Err(ExportError::Internal(format!(
                "no example file {}",
                loc.file
            )));
        };
        self.win.resize(self.size.max(loc.len as usize), 0);
        let mut got = 0;
        while got < self.win.len() {
            match file.read_at(&mut self.win[got..], loc.off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(loc.file, e)),
            }
        }
        self.win.truncate(got);
        self.at = Some((loc.file, loc.off));
        if got < loc.len as usize {
            self.at = None;
            return Err(self.err(
                loc.file,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment shrank while exporting",
                ),
            ));
        }
        Ok(())
    }

    /// The (scrubbed) prompt and answer an example candidate refers to.
    pub(crate) fn texts<'s>(
        &'s mut self,
        loc: Loc,
        prompt: &'s TextSrc,
        completion: &'s TextSrc,
        scrubber: &Scrubber,
    ) -> Result<(Cow<'s, str>, Cow<'s, str>), ExportError> {
        let needs_file = |t: &TextSrc| !matches!(t, TextSrc::Owned(_));
        if needs_file(prompt) || needs_file(completion) {
            self.load(loc)?;
        }
        let this: &'s Self = self;
        let base = this.at.map_or(0, |a| a.1);
        let parse = |t: &TextSrc| matches!(t, TextSrc::Line | TextSrc::Rescrub);
        let parsed = if parse(prompt) || parse(completion) {
            let start = (loc.off - base) as usize;
            let line = &this.win[start..start + loc.len as usize];
            let x = parse_example(line, false).map_err(|e| {
                ExportError::Internal(format!("example line changed while exporting: {e}"))
            })?;
            let uid = x.metadata.user_id.as_deref();
            let again = |t: &TextSrc, text: Cow<'s, str>| match t {
                TextSrc::Rescrub => Cow::Owned(scrubber.scrub_cow(&text, uid).into_owned()),
                _ => text,
            };
            Some((again(prompt, x.prompt), again(completion, x.response)))
        } else {
            None
        };
        let (mut pp, mut pr) = match parsed {
            Some((p, r)) => (Some(p), Some(r)),
            None => (None, None),
        };
        let get = |t: &'s TextSrc, parsed: &mut Option<Cow<'s, str>>| match t {
            TextSrc::Owned(s) => Ok(Cow::Borrowed(s.as_str())),
            TextSrc::Line | TextSrc::Rescrub => parsed
                .take()
                .ok_or_else(|| ExportError::Internal("line not parsed".into())),
            TextSrc::Raw { off, len } => {
                let start = off
                    .checked_sub(base)
                    .map(|s| s as usize)
                    .filter(|s| s + *len as usize <= this.win.len())
                    .ok_or_else(|| ExportError::Internal("text outside its line".into()))?;
                simdutf8::compat::from_utf8(&this.win[start..start + *len as usize])
                    .map(Cow::Borrowed)
                    .map_err(|e| {
                        ExportError::Internal(format!("example text changed while exporting: {e}"))
                    })
            }
        };
        Ok((get(prompt, &mut pp)?, get(completion, &mut pr)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn export_chars_up_to_counts_like_chars(s in "[aé€😀]{0,12}", cap in 0usize..20) {
            let n = s.chars().count();
            proptest::prop_assert_eq!(chars_up_to(&s, cap) as usize, n.min(cap));
            proptest::prop_assert_eq!(chars_up_to(&s, usize::MAX) as usize, n);
        }
    }
}
