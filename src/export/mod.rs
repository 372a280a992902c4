//! `export`: builds a curated training set from the collector's segments, streaming, with
//! memory bounded by the spill budget rather than by the data size.
//!
//! The pipeline (each arrow that needs grouping is an external sort, see [`spill`]):
//!
//! 1. Read every example, feedback and correction segment (sealed `*.jsonl` and open
//!    `*.jsonl.open`, whose torn last line is skipped) once, in the order given. What an
//!    example line gives ([`prepare`]: filters, where its scrubbed texts are, dedup keys)
//!    depends on the line and the options alone, so for a sealed segment it is kept in the
//!    [`prepared_cache`] and read from there by the next export (the daemon writes those
//!    entries ahead, as it seals segments: [`prepare_ahead`]).
//! 2. [`join`]: replayed ids are dropped (`duplicate_id`, first copy read is kept); feedback
//!    (from the feedback stream and already inside examples; latest timestamp wins, ties by
//!    file order) and corrections (by original example id, request id, or normalized original
//!    prompt + response) are attached to their examples whatever order they arrived in.
//! 3. [`filter`]: format rules and the seed's filters, each drop counted by reason; PII is
//!    scrubbed ([`pii`]).
//! 4. [`dedup`]: exact (normalized prompt) then near (MinHash/LSH over prompt + answer),
//!    keeping the best copy (correction > positive feedback > higher auto_score > newer > id).
//!    Candidates are numbered best first and groups are found by sorting packed (key, number)
//!    integers; the band keys, computed at read time, wait in a side file ([`band_store`]).
//! 5. Output in (timestamp, id) order, split train/validation by prompt hash ([`split`]),
//!    written to temporary files and then put in place as one set, manifest last; files of
//!    the set this export did not write (a validation or ids file of an earlier one) are
//!    removed ([`output_set`], [`manifest`]). Same inputs, same bytes. Temporary files an
//!    interrupted export left are removed by the next one ([`leftovers`]).
//!
//! `include_corrections = false` means: correction records are not read as training data (they
//! are not counted in `total_raw`, as in the seed) and `verified_correction` examples are
//! dropped as `correction_excluded`; corrections still mark their originals as corrected, so a
//! known-wrong answer is never exported as a good one (in `kto` it stays, labelled false), and a
//! `dpo` export is empty.
//!
//! `kto`: label true for positive feedback, corrections and `verified_correction` examples;
//! false for negative feedback and corrected originals; examples with no human signal are
//! dropped as `unlabeled`. The report's `labels` says how many of each were written, since
//! TRL's KTO trainer needs both.

mod band_store;
mod codec;
pub mod decontaminate;
pub mod dedup;
mod filter;
pub mod format;
pub mod input;
mod join;
mod leftovers;
mod line_layout;
pub mod manifest;
mod output_set;
pub mod pii;
mod prepare;
pub mod prepare_ahead;
pub mod prepared_cache;
mod spill;
pub mod split;

pub use format::{Format, Kind};
pub use prepared_cache::CacheStats;

/// The join key export gives a (prompt, answer) pair, for the daemon's tests to check that
/// its link from a correction to its original agrees with export's.
#[cfg(test)]
pub(crate) fn prepare_pr_key(prompt: &str, response: &str, buf: &mut String) -> u128 {
    prepare::pr_key(prompt, response, buf)
}
pub use leftovers::{interrupted, remove_own as remove_own_temporary_files};
pub use manifest::manifest_path;
#[doc(hidden)]
pub use prepare::bench_read_line;
pub use split::{validation_path, SplitBy};

use crate::record::{CorrectionRecord, FeedbackEvent, Relevance};
use filter::{ByRank, ByTime};
use join::{Annot, Corr, JoinItem, JoinKey, Payload, Row};
use serde::Serialize;
use spill::{Grouped, Sorter, SpillItem};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {path}: {source}")]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("temporary files under {dir}: {source}")]
    Spill {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid export option: {0}")]
    InvalidOption(String),
    #[error("evaluation set {path}:{line}: {reason}", path = path.display())]
    EvalSet {
        path: PathBuf,
        line: u64,
        reason: &'static str,
    },
    #[error(
        "no record has the tag {tag:?} and domain.tags does not name it (tags match ignoring case); {}",
        known_tags_text(known)
    )]
    UnknownTag { tag: String, known: Vec<String> },
    #[error("internal export error: {0}")]
    Internal(String),
}

/// The tags an unknown one could have meant, for its error or warning: at most 40, with how
/// many more there are (free-form tags, a spec section's say, can be many).
fn known_tags_text(known: &[String]) -> String {
    const SHOWN: usize = 40;
    if known.is_empty() {
        return "no record has any tag".into();
    }
    let mut s = format!(
        "the tags are: {}",
        known[..known.len().min(SHOWN)].join(", ")
    );
    if known.len() > SHOWN {
        s.push_str(&format!(" and {} more", known.len() - SHOWN));
    }
    s
}

/// How to build the set. See the module documentation for the semantics.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub min_quality: Relevance,
    pub include_corrections: bool,
    pub min_prompt_chars: usize,
    pub min_response_chars: usize,
    /// Longest prompt and answer kept, in characters (0 = no limit): a trainer truncates a
    /// longer example to its `max_length`, cutting the answer it should learn.
    pub max_prompt_chars: usize,
    pub max_response_chars: usize,
    /// Lowest `auto_score` kept (corrections score 1).
    pub min_score: f64,
    /// At most this many lines in all (train and validation), the best by the rank that picks
    /// the best of duplicates; 0 = no limit.
    pub max_examples: u64,
    /// When not empty, only records with at least one of these tags are kept.
    pub tags: Vec<String>,
    /// Records with any of these tags are left out.
    pub exclude_tags: Vec<String>,
    /// Tag names that exist before any record carries them (`domain.tags`' names and
    /// `general`). A filter tag that is none of them and that no record read carries is
    /// unknown: most likely a typo, which would otherwise select nothing, or exclude nothing,
    /// without a word.
    pub declared_tags: Vec<String>,
    /// The filter tags given for this export alone (on the command line): an unknown one
    /// stops the export before anything is written. An unknown tag of the standing filters
    /// (the config's) is a warning instead: a tag that comes with captures (the log's
    /// `tags`, a spool event's) may not have arrived yet, and a weekly export must not fail
    /// for it.
    pub strict_tags: Vec<String>,
    /// Fraction of prompts for validation, in [0, 1). 0 = no split and no validation file;
    /// otherwise the validation file is [`validation_path`] of the output.
    pub val_fraction: f64,
    /// The system message of the conversational formats (`messages`,
    /// `prompt-completion-messages`, `dpo-messages`, `openai-dpo`, `kto-messages`).
    pub system_prompt: Option<String>,
    /// Redacted to `[REDACTED]`, in addition to the built-in e-mail and phone patterns.
    pub pii_patterns: Vec<regex::Regex>,
    /// Key of the HMAC that pseudonymizes user ids appearing in the text.
    pub pseudonym_key: Vec<u8>,
    /// Jaccard similarity at which near duplicates are merged, in [0, 1]; 0 turns near dedup
    /// off. Default [`dedup::DEFAULT_NEAR_DUP_THRESHOLD`] (0.8: 5-word shingles, 11 bands x 11
    /// rows).
    pub near_dup_threshold: f64,
    /// Where spill files go (anonymous temp files, removed even on a crash).
    pub temp_dir: PathBuf,
    /// Progress bar on stderr.
    pub progress: bool,
    /// Recorded in the manifest.
    pub config_digest: String,
    /// Also write [`split::ids_path`] of each output file: the id each line was made from.
    pub ids_file: bool,
    /// Evaluation sets: examples sharing a run of `decontaminate_ngram` words with them are
    /// dropped ([`decontaminate`]).
    pub decontaminate: Vec<PathBuf>,
    pub decontaminate_ngram: usize,
    /// Only examples and corrections timestamped in `[since, until)` (µs since the epoch,
    /// UTC); an unreadable timestamp counts as older than any `since`.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// What keeps lines together on one side of the train/validation split.
    pub split_by: SplitBy,
    /// Where the prepared cache lives ([`prepared_cache`]; the CLI uses
    /// `state/export-cache`); `None`: every segment is prepared afresh and nothing is kept.
    pub cache_dir: Option<PathBuf>,
}

impl ExportOptions {
    /// Whether a record timestamped `ts` (µs) is in the time window.
    pub(crate) fn in_time_window(&self, ts: i64) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }

    /// Whether a tag filter is set (else records' tags need not be read).
    pub(crate) fn filters_tags(&self) -> bool {
        !self.tags.is_empty() || !self.exclude_tags.is_empty()
    }

    /// The tag filter a record with `tags` fails: `excluded_tag` (it has one of
    /// `exclude_tags`), `tag_not_selected` (`tags` is set and it has none of them).
    pub(crate) fn tag_drop<S: AsRef<str>>(&self, tags: &[S]) -> Option<&'static str> {
        let has_any = |list: &[String]| {
            tags.iter()
                .any(|t| list.iter().any(|l| same_tag(l, t.as_ref())))
        };
        if has_any(&self.exclude_tags) {
            Some("excluded_tag")
        } else if !self.tags.is_empty() && !has_any(&self.tags) {
            Some("tag_not_selected")
        } else {
            None
        }
    }

    /// The length filter a prompt and its answers fail first (`short_prompt`, `long_prompt`,
    /// `short_response`, `long_response`), counted in characters before scrubbing, as the
    /// seed counts them. Every answer is checked against both bounds (a preference pair's
    /// rejected answer is trained on too) except the minimum, which applies to the first,
    /// the one kept.
    pub(crate) fn length_drop(&self, prompt: &str, answers: &[&str]) -> Option<&'static str> {
        let (prompt_cap, answer_cap) = self.length_caps();
        let answers: Vec<u32> = answers
            .iter()
            .map(|a| prepare::chars_up_to(a, answer_cap))
            .collect();
        self.length_drop_counted(prepare::chars_up_to(prompt, prompt_cap), &answers)
    }

    /// [`ExportOptions::length_drop`] from the texts' characters, each counted up to at least
    /// its cap in [`ExportOptions::length_caps`] (the prepared cache keeps them).
    pub(crate) fn length_drop_counted(&self, prompt: u32, answers: &[u32]) -> Option<&'static str> {
        let has = |chars: u32, n: usize| chars as usize >= n;
        let too_long = |chars: u32, max: usize| max > 0 && has(chars, max + 1);
        if !has(prompt, self.min_prompt_chars) {
            Some("short_prompt")
        } else if too_long(prompt, self.max_prompt_chars) {
            Some("long_prompt")
        } else if !answers
            .first()
            .is_none_or(|&a| has(a, self.min_response_chars))
        {
            Some("short_response")
        } else if answers
            .iter()
            .any(|&a| too_long(a, self.max_response_chars))
        {
            Some("long_response")
        } else {
            None
        }
    }

    /// How far the length filters need a prompt's and an answer's characters counted: to
    /// their largest bound (a text with more is as long as that, to them).
    pub(crate) fn length_caps(&self) -> (usize, usize) {
        let cap = |min: usize, max: usize| min.max(max.saturating_add(1));
        (
            cap(self.min_prompt_chars, self.max_prompt_chars),
            cap(self.min_response_chars, self.max_response_chars),
        )
    }
}

/// Whether two tags are the same: case is ignored, as the keywords and tag patterns ignore
/// it (a log's `"TPO"` and the config's `tpo` are one tag to a user typing `--tag`).
pub(crate) fn same_tag(a: &str, b: &str) -> bool {
    a == b
        || a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
}

/// The distinct tags the records read carry (when a tag filter is set), to tell a filter tag
/// that matches nothing because no record has it.
#[derive(Default)]
struct SeenTags(std::collections::HashSet<String>);

impl SeenTags {
    fn add<S: AsRef<str>>(&mut self, tags: &[S]) {
        for t in tags {
            let t = t.as_ref();
            if !self.0.contains(t) {
                self.0.insert(t.to_string());
            }
        }
    }

    /// Refuses a filter tag of `opts.strict_tags` that is unknown (see
    /// [`ExportOptions::declared_tags`]); warns of the others.
    fn check(&self, opts: &ExportOptions) -> Result<(), ExportError> {
        let known = |t: &str| {
            opts.declared_tags
                .iter()
                .chain(&self.0)
                .any(|k| same_tag(k, t))
        };
        let unknown: Vec<&String> = opts
            .tags
            .iter()
            .chain(&opts.exclude_tags)
            .filter(|t| !known(t))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut all: Vec<String> = Vec::new();
        for t in opts.declared_tags.iter().chain(&self.0) {
            if !all.iter().any(|k| same_tag(k, t)) {
                all.push(t.clone());
            }
        }
        all.sort_by_key(|t| t.to_lowercase());
        for tag in unknown {
            let e = ExportError::UnknownTag {
                tag: tag.clone(),
                known: all.clone(),
            };
            if opts.strict_tags.iter().any(|s| s == tag) {
                return Err(e);
            }
            let key = if opts.tags.contains(tag) {
                "export.tags"
            } else {
                "export.exclude_tags"
            };
            tracing::warn!("{key}: {e}");
        }
        Ok(())
    }
}

impl Default for ExportOptions {
    /// The seed's defaults: prompt-response, medium quality, corrections in, 10/20 chars.
    fn default() -> Self {
        ExportOptions {
            format: Format::PromptResponse,
            min_quality: Relevance::Medium,
            include_corrections: true,
            min_prompt_chars: 10,
            min_response_chars: 20,
            max_prompt_chars: 0,
            max_response_chars: 0,
            min_score: 0.0,
            tags: Vec::new(),
            exclude_tags: Vec::new(),
            declared_tags: Vec::new(),
            strict_tags: Vec::new(),
            max_examples: 0,
            val_fraction: 0.0,
            system_prompt: None,
            pii_patterns: Vec::new(),
            pseudonym_key: Vec::new(),
            near_dup_threshold: dedup::DEFAULT_NEAR_DUP_THRESHOLD,
            temp_dir: std::env::temp_dir(),
            progress: false,
            config_digest: String::new(),
            ids_file: false,
            decontaminate: Vec::new(),
            decontaminate_ngram: decontaminate::DEFAULT_NGRAM_WORDS,
            since: None,
            until: None,
            split_by: SplitBy::Prompt,
            cache_dir: None,
        }
    }
}

/// The segment files to read: sealed `*.jsonl` and open `*.jsonl.open` alike. Each list is
/// read in the order given, which is the "file order" that breaks feedback ties and picks the
/// first copy of a replayed id; pass segments sorted by name (`examples_YYYYMMDD_NNNN`), which
/// is their order of creation.
#[derive(Debug, Clone, Default)]
pub struct ExportInputs {
    pub examples: Vec<PathBuf>,
    pub feedback: Vec<PathBuf>,
    pub corrections: Vec<PathBuf>,
}

/// KTO label counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Labels {
    pub desirable: u64,
    pub undesirable: u64,
}

/// What `export` prints (JSON). The seed's three fields come first.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// Example lines read (replays and unreadable lines included) plus correction records
    /// read when corrections are included: `total_raw = after_filtering + sum(dropped)`.
    pub total_raw: u64,
    /// Lines written, train and validation together.
    pub after_filtering: u64,
    pub output_path: String,
    pub dropped: BTreeMap<String, u64>,
    pub format: Format,
    pub train_count: u64,
    pub validation_path: Option<String>,
    pub validation_count: u64,
    /// Why there is no validation file although `val_fraction` asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_note: Option<String>,
    pub manifest_path: String,
    pub output_sha256: String,
    /// Feedback and correction lines that could not be parsed (example lines are counted in
    /// `dropped.unreadable_line`).
    pub unreadable_lines: u64,
    /// KTO only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// With `--ids`: the training set's ids file (the validation set's is beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_path: Option<String>,
    /// What the prepared cache did (absent when it was off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_cache: Option<CacheStats>,
}

/// Builds the training set described by `opts` from `inputs` into `output`.
pub fn export(
    inputs: &ExportInputs,
    opts: &ExportOptions,
    output: &Path,
) -> Result<ExportReport, ExportError> {
    run(inputs, opts, output, spill::DEFAULT_BUDGET)
}

struct Counts {
    dropped: BTreeMap<String, u64>,
    total_raw: u64,
    unreadable: u64,
}

impl Counts {
    fn drop(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_string()).or_insert(0) += 1;
    }
}

/// A time window bound as the manifest writes it.
fn rfc3339_micros(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| t.to_string())
}

fn validate(opts: &ExportOptions) -> Result<(), ExportError> {
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(ExportError::InvalidOption(format!(
            "val_fraction must be in [0, 1), not {}",
            opts.val_fraction
        )));
    }
    if let (Some(s), Some(u)) = (opts.since, opts.until) {
        if s >= u {
            return Err(ExportError::InvalidOption(
                "the time window is empty: since must be before until".into(),
            ));
        }
    }
    if !(0.0..=1.0).contains(&opts.min_score) {
        return Err(ExportError::InvalidOption(format!(
            "min_score must be in [0, 1], not {}",
            opts.min_score
        )));
    }
    if opts.decontaminate_ngram == 0 {
        return Err(ExportError::InvalidOption(
            "decontaminate_ngram must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&opts.near_dup_threshold) {
        return Err(ExportError::InvalidOption(format!(
            "near_dup_threshold must be in [0, 1] (0 = off), not {}",
            opts.near_dup_threshold
        )));
    }
    Ok(())
}

fn progress_bar(opts: &ExportOptions, total: u64) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg:24} [{bar:30}] {bytes}/{total_bytes} ({eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

pub(crate) fn run(
    inputs: &ExportInputs,
    opts: &ExportOptions,
    output: &Path,
    budget: usize,
) -> Result<ExportReport, ExportError> {
    validate(opts)?;
    let budget = &spill::Budget::new(budget);
    std::fs::create_dir_all(&opts.temp_dir).map_err(|e| ExportError::Spill {
        dir: opts.temp_dir.clone(),
        source: e,
    })?;
    // What interrupted exports left (before this one makes its own).
    let output_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    leftovers::sweep(
        output_dir,
        leftovers::Kind::OutputTemps,
        leftovers::STALE_AFTER,
    );
    leftovers::sweep(
        &opts.temp_dir,
        leftovers::Kind::SpillDirs,
        leftovers::STALE_AFTER,
    );
    // Its files are anonymous: only the directory can be left behind.
    let spill_dir = leftovers::SpillDir::new(&opts.temp_dir).map_err(|e| ExportError::Spill {
        dir: opts.temp_dir.clone(),
        source: e,
    })?;
    let dir = spill_dir.path();
    let scrubber = pii::Scrubber::new(&opts.pii_patterns, &opts.pseudonym_key);
    let eval = (!opts.decontaminate.is_empty())
        .then(|| decontaminate::EvalIndex::load(&opts.decontaminate, opts.decontaminate_ngram))
        .transpose()?;
    let mut cache = opts.cache_dir.as_ref().and_then(|root| {
        prepared_cache::fingerprint(opts, eval.as_ref())
            .and_then(|fp| prepared_cache::PreparedCache::open(root, fp))
    });
    let mut counts = Counts {
        dropped: BTreeMap::new(),
        total_raw: 0,
        unreadable: 0,
    };

    let bytes_of = |files: &[PathBuf]| -> u64 {
        files
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    let example_bytes = bytes_of(&inputs.examples);
    let total_bytes = example_bytes + bytes_of(&inputs.feedback) + bytes_of(&inputs.corrections);
    let pb = progress_bar(opts, total_bytes);

    // 1. Read.
    let mut rows: Sorter<Row> = Sorter::new(dir, budget);
    let mut joins: Sorter<JoinItem> = Sorter::new(dir, budget);
    // Phase timings go to the debug log (RUST_LOG=training_collector=debug).
    let t0 = std::time::Instant::now();
    let phase = |msg: &'static str| {
        pb.set_message(msg);
        tracing::debug!(elapsed = ?t0.elapsed(), sorted_bytes = budget.used(), "export: {msg}");
    };
    // Feedback and corrections first: the keys they name tell which example references the
    // join needs (the summaries keep the documented order: examples, feedback, corrections).
    let mut targets = join::KeyFilter::new();
    let mut seen_tags = opts.filters_tags().then(SeenTags::default);
    let mut corrected_prompts = std::collections::HashSet::new();
    let mut other_summaries = Vec::new();
    let mut example_summaries = Vec::new();
    phase("reading feedback");
    for (fi, path) in inputs.feedback.iter().enumerate() {
        let s = input::for_each_line(
            path,
            "feedback",
            |n| pb.inc(n),
            |line_no, line| {
                let ev: FeedbackEvent = match serde_json::from_slice(line) {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), line = line_no, error = %e, "unreadable feedback line");
                        counts.unreadable += 1;
                        return Ok(());
                    }
                };
                let key = JoinKey::Id(ev.target);
                targets.insert(&key);
                joins.push(JoinItem {
                    key,
                    kind: join::KIND_FEEDBACK,
                    fb: Some((
                        (input::ts_micros(&ev.timestamp), 1, fi as u32, line_no),
                        ev.feedback == crate::record::Feedback::Positive,
                    )),
                    ex_id: ev.id,
                    group: None,
                    user: None,
                })
            },
        )?;
        other_summaries.push(s);
    }
    phase("reading corrections");
    for (fi, path) in inputs.corrections.iter().enumerate() {
        let s = input::for_each_line(
            path,
            "corrections",
            |n| pb.inc(n),
            |line_no, line| {
                let c: CorrectionRecord = match serde_json::from_slice(line) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), line = line_no, error = %e, "unreadable correction line");
                        counts.unreadable += 1;
                        return Ok(());
                    }
                };
                if let Some(seen) = &mut seen_tags {
                    seen.add(&c.tags);
                }
                let buf = &mut String::new();
                corrected_prompts.insert(prepare::prompt_key(&c.original_prompt, buf));
                let pair = prepare::pr_key(&c.original_prompt, &c.original_response, buf);
                let mut keys = vec![JoinKey::Pair(pair)];
                keys.extend(c.original_example_id.iter().cloned().map(JoinKey::Id));
                keys.extend(c.original_request_id.iter().cloned().map(JoinKey::Id));
                // The join tells the correction its original's user: its line is scrubbed with
                // that user's id, as the original was (else a text naming the user would
                // show the id beside the pseudonym of the same text), and with `--split-by
                // user` it goes with that user.
                for key in keys {
                    targets.insert(&key);
                    joins.push(JoinItem {
                        key,
                        kind: join::KIND_CORRECTION,
                        fb: None,
                        ex_id: if opts.include_corrections {
                            c.id.clone()
                        } else {
                            String::new()
                        },
                        group: None,
                        user: None,
                    })?;
                }
                if opts.include_corrections {
                    counts.total_raw += 1;
                    rows.push(Row::new(
                        c.id,
                        (2, fi as u32, line_no),
                        Payload::Correction(Corr {
                            ts: input::ts_micros(&c.timestamp),
                            prompt: c.original_prompt,
                            original: c.original_response,
                            corrected: c.corrected_response,
                            include: c.include_in_training,
                            tag_drop: prepare::static_drop_code(opts.tag_drop(&c.tags)),
                        }),
                    ))?;
                }
                Ok(())
            },
        )?;
        other_summaries.push(s);
    }

    phase("reading examples");
    let (bands, rows_per_band) = dedup::lsh_params(opts.near_dup_threshold.max(f64::MIN_POSITIVE));
    let near = opts.near_dup_threshold > 0.0;
    let ctx = prepare::Ctx {
        opts,
        scrubber: &scrubber,
        lsh: near.then_some((bands, rows_per_band)),
        corrected_prompts: &corrected_prompts,
        targets: &targets,
        eval: eval.as_ref(),
        for_cache: cache.is_some(),
    };
    // About one text per kilobyte of input (the generated logs have 1.8 KB lines).
    let mut band_store = band_store::BandStore::new(dir, bands, example_bytes / 1024 + 1)?;
    let mut example_files = Vec::with_capacity(inputs.examples.len());
    let mut filing = Filing {
        opts,
        paths: &inputs.examples,
        targets: &targets,
        corrected_prompts: &corrected_prompts,
        counts: &mut counts,
        joins: &mut joins,
        rows: &mut rows,
        band_store: &mut band_store,
        seen_tags: seen_tags.as_mut(),
    };
    // Entries of the prepared cache being written for the segments read afresh.
    let mut pending = prepared_cache::PendingEntries::default();
    // Lines are prepared on worker threads; this thread reads the files and files the
    // results, in line order.
    let consume = |(fi, lines): prepare::PreparedChunk,
                   filing: &mut Filing<'_>,
                   pending: &mut prepared_cache::PendingEntries|
     -> Result<(), ExportError> {
        pending.finish_before(fi);
        for (line_no, read) in lines {
            let (facts, pr_key) = match read {
                Ok(r) => (Ok(r.facts), r.pr_key),
                Err(e) => (Err(e.to_string()), None),
            };
            pending.push(fi, line_no, &facts);
            filing.file(fi, line_no, facts, LineExtras::Prepared(pr_key))?;
        }
        Ok(())
    };
    std::thread::scope(|scope| -> Result<(), ExportError> {
        let mut pool = prepare::Pool::start(scope, &ctx);
        for (fi, path) in inputs.examples.iter().enumerate() {
            let fi = fi as u32;
            let sealed = !input::is_open_segment(path);
            if let Some(cache) = cache.as_mut().filter(|_| sealed) {
                let file = std::fs::File::open(path).map_err(|e| ExportError::Input {
                    path: path.clone(),
                    source: e,
                })?;
                if let Some(seg) = cache.read(path, &file) {
                    // Lines are filed in input order: the lines still being prepared first.
                    while let Some(done) = pool.next()? {
                        consume(done, &mut filing, &mut pending)?;
                    }
                    pending.finish_before(fi);
                    let s = seg.summary(path);
                    pb.inc(s.bytes);
                    let bad = |e: String| {
                        ExportError::Internal(format!(
                            "prepared cache entry of {}: {e}",
                            path.display()
                        ))
                    };
                    for batch in seg.decode_on(scope, fi, opts.filters_tags()) {
                        for (line_no, facts) in batch.map_err(bad)? {
                            filing.file(fi, line_no, facts, LineExtras::Cached(&file))?;
                        }
                    }
                    example_files.push((file, path.clone()));
                    example_summaries.push(s);
                    continue;
                }
                if let Some(w) = cache.writer(path, &file) {
                    pending.start(fi, w);
                }
            }
            let (s, file) = input::for_each_chunk(
                path,
                "examples",
                |n| pb.inc(n),
                |chunk| match pool.submit(fi, chunk)? {
                    Some(done) => consume(done, &mut filing, &mut pending),
                    None => Ok(()),
                },
            )?;
            pending.read_whole(fi, &s);
            example_files.push((file, PathBuf::from(&s.path)));
            example_summaries.push(s);
        }
        while let Some(done) = pool.next()? {
            consume(done, &mut filing, &mut pending)?;
        }
        pending.finish_before(u32::MAX);
        Ok(())
    })?;
    // Before anything is written: a filter tag no record has is most likely a typo.
    if let Some(seen) = &seen_tags {
        seen.check(opts)?;
    }
    if let Some(c) = &mut cache {
        c.stats.written = pending.written;
        c.prune(&input::sealed_segments(&inputs.examples));
    }
    let mut summaries = example_summaries;
    summaries.append(&mut other_summaries);

    // 2. Join, 3. filter.
    phase("joining feedback");
    let annots: Sorter<Annot> = join::annotate(joins, dir, budget)?;
    phase("filtering");
    let mut by_rank: Sorter<ByRank> = Sorter::new(dir, budget);
    let mut duplicates = 0u64;
    join::resolve(
        rows,
        annots,
        |r| match filter::candidate(r, opts, &scrubber, ctx.lsh, ctx.eval) {
            Ok((mut c, bands)) => {
                if !bands.is_empty() {
                    c.band_ix = band_store.append(&bands)?;
                }
                by_rank.push(ByRank(c))
            }
            Err(reason) => {
                counts.drop(reason);
                Ok(())
            }
        },
        || duplicates += 1,
    )?;
    if duplicates > 0 {
        *counts.dropped.entry("duplicate_id".into()).or_insert(0) += duplicates;
    }

    // 4. Dedup. The candidates are numbered best first; a group (same exact key, or same
    // band bucket) keeps its smallest number. Groups are found by sorting packed (key,
    // number) integers, not the candidates themselves (sorting ~200-byte records by exact key
    // was most of the exact-dedup time). The candidates go on, numbered, into the output
    // order's sort; the writer skips the numbers dedup drops (a file of the survivors, read
    // back after dedup, cost a write and a read of every candidate).
    phase("exact dedup");
    let mut by_time: Sorter<ByTime> = Sorter::new(dir, budget);
    let mut exact: Sorter<ExactItem> = Sorter::new(dir, budget);
    let mut wanted: Sorter<BandWant> = Sorter::new(dir, budget);
    let mut n: u32 = 0;
    for c in by_rank.finish()? {
        let ByRank(mut c) = c?;
        exact.push(ExactItem::new(c.key, n))?;
        if let Some(ix) = c.band_ix {
            // Labels never merge: the salt keeps their buckets apart.
            let salt = match c.label {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            };
            wanted.push(BandWant::new(ix, n, salt))?;
        }
        c.num = n;
        by_time.push(ByTime(c))?;
        n = n
            .checked_add(1)
            .ok_or_else(|| ExportError::Internal("more than 4 billion candidates".into()))?;
    }
    // The output order's sort runs on the other core meanwhile.
    let (exact_dropped, near_dropped) = std::thread::scope(|scope| {
        by_time.sort_on(scope);
        // 4a. Exact: every copy but the best of a key goes.
        let words = (n as usize).div_ceil(64);
        let mut exact_dropped = vec![0u64; words];
        let mut items = Grouped::new(exact.finish()?);
        while let Some(first) = items.next_item()? {
            while let Some(other) = items.next_if(|o| o.key() == first.key())? {
                set_bit(&mut exact_dropped, other.idx());
            }
        }

        // 4b. Near: among the exact survivors, every member of a band bucket but the best goes.
        // The band keys are read from the store in its order, so the (store index, number)
        // pairs were sorted first.
        phase("near dedup");
        let mut band_items: Sorter<BandItem> = Sorter::new(dir, budget);
        let (mut stored, repeats) = band_store.into_reader()?;
        for w in wanted.finish()? {
            let w = w?;
            if bit(&exact_dropped, w.idx()) {
                continue;
            }
            for (b, &hash) in stored.read(w.ix())?.iter().enumerate() {
                // A key stored once is a bucket of one: it drops nothing.
                if repeats.may_repeat(b, hash) {
                    band_items.push(BandItem::new(b as u8, w.salt(), hash, w.idx()))?;
                }
            }
        }
        // Their memory is for the sorts from here on.
        drop((stored, repeats));
        // Only exact survivors were bucketed, so no number is in both sets.
        let mut near_dropped = vec![0u64; words];
        let mut items = Grouped::new(band_items.finish()?);
        while let Some(first) = items.next_item()? {
            while let Some(other) = items.next_if(|o| o.bucket() == first.bucket())? {
                set_bit(&mut near_dropped, other.idx());
            }
        }
        Ok::<_, ExportError>((exact_dropped, near_dropped))
    })?;
    // 5. The limit: the best `max_examples` of the survivors (numbers are ranks, best first).
    let mut over_limit = vec![0u64; exact_dropped.len()];
    if opts.max_examples > 0 {
        let mut kept = 0u64;
        for i in 0..n {
            if bit(&exact_dropped, i) || bit(&near_dropped, i) {
                continue;
            }
            if kept < opts.max_examples {
                kept += 1;
            } else {
                set_bit(&mut over_limit, i);
            }
        }
    }
    for (reason, bits) in [
        ("exact_duplicate", &exact_dropped),
        ("near_duplicate", &near_dropped),
        ("over_max_examples", &over_limit),
    ] {
        let k: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
        if k > 0 {
            *counts.dropped.entry(reason.into()).or_insert(0) += k;
        }
    }
    // What the writer skips.
    let mut skipped = exact_dropped;
    for ((s, near), over) in skipped.iter_mut().zip(&near_dropped).zip(&over_limit) {
        *s |= near | over;
    }
    drop((near_dropped, over_limit));

    phase("writing");
    let val_path = (opts.val_fraction > 0.0).then(|| split::validation_path(output));
    let mut train = manifest::AtomicFile::create(output)?;
    let mut val = match &val_path {
        Some(p) => Some(manifest::AtomicFile::create(p)?),
        None => None,
    };
    let hashers = [
        Some(train.detach_hasher()),
        val.as_mut().map(manifest::AtomicFile::detach_hasher),
    ];
    // Line for line with the train and validation files: the id each line was made from.
    let ids_for = |out: Option<&Path>| {
        out.filter(|_| opts.ids_file)
            .map(|out| manifest::AtomicFile::create(&split::ids_path(out)))
            .transpose()
    };
    let mut ids = [ids_for(Some(output))?, ids_for(val_path.as_deref())?];
    let mut labels = Labels::default();
    let mut fetcher = prepare::Fetcher::new(example_files);
    // Lines are rendered here in batches; a writer thread writes them and a hasher thread
    // hashes them, side by side (one thread doing both, the SHA-256 of the output and its
    // copy into the page cache, was the slowest of the writing phase: 100% busy while the
    // renderer waited half the time).
    type Batch = std::sync::Arc<Vec<u8>>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Batch, u64)>(4);
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<(usize, Batch)>(4);
    let (written, hashed, rendered) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<_, ExportError> {
            let mut files = [Some(train), val];
            for (i, batch, n) in rx {
                if let Some(f) = &mut files[i] {
                    f.write_lines(&batch, n)?;
                }
            }
            Ok(files)
        });
        let hasher = scope.spawn(move || {
            let mut hashers = hashers;
            for (i, batch) in hash_rx {
                if let Some(h) = &mut hashers[i] {
                    h.update(&batch);
                }
            }
            hashers
        });
        let rendered = (|| -> Result<(), ExportError> {
            const BATCH: usize = 1 << 20;
            let mut batches = [Vec::with_capacity(BATCH), Vec::with_capacity(BATCH)];
            let mut lines = [0u64; 2];
            let send = |i: usize, batch: Vec<u8>, n: u64| {
                let batch = Batch::new(batch);
                hash_tx
                    .send((i, Batch::clone(&batch)))
                    .map_err(|_| ExportError::Internal("the output hasher stopped".into()))?;
                tx.send((i, batch, n))
                    .map_err(|_| ExportError::Internal("the output writer stopped".into()))
            };
            for c in by_time.finish()? {
                let ByTime(c): ByTime = c?;
                if bit(&skipped, c.num) {
                    continue;
                }
                let (prompt, completion) = match c.loc {
                    Some(loc) => fetcher.texts(loc, &c.prompt, &c.completion, &scrubber)?,
                    None => match (&c.prompt, &c.completion) {
                        (prepare::TextSrc::Owned(p), prepare::TextSrc::Owned(r)) => {
                            (p.as_str().into(), r.as_str().into())
                        }
                        _ => return Err(ExportError::Internal("correction text not kept".into())),
                    },
                };
                let i = usize::from(
                    val_path.is_some()
                        && split::is_validation_line(c.split_group, &prompt, opts.val_fraction),
                );
                // A batch goes before the line that would overflow it: growing a full batch
                // copied a megabyte per batch (the output, once more).
                let need = prompt.len()
                    + completion.len()
                    + c.rejected.as_ref().map_or(0, String::len)
                    + opts.system_prompt.as_ref().map_or(0, String::len)
                    + 256; // the format's keys and roles, and some escapes
                if lines[i] > 0 && batches[i].len() + need > batches[i].capacity() {
                    let full =
                        std::mem::replace(&mut batches[i], Vec::with_capacity(BATCH.max(need)));
                    send(i, full, std::mem::take(&mut lines[i]))?;
                }
                format::render_into(
                    &mut batches[i],
                    opts.format,
                    &format::LineParts {
                        prompt: &prompt,
                        completion: &completion,
                        rejected: c.rejected.as_deref(),
                        label: c.label,
                    },
                    opts.system_prompt.as_deref(),
                );
                batches[i].push(b'\n');
                lines[i] += 1;
                if let Some(f) = &mut ids[i] {
                    f.write_line(c.rank.id.as_bytes())?;
                }
                match c.label {
                    Some(true) => labels.desirable += 1,
                    Some(false) => labels.undesirable += 1,
                    None => {}
                }
            }
            for (i, batch) in batches.into_iter().enumerate() {
                if lines[i] > 0 {
                    send(i, batch, lines[i])?;
                }
            }
            Ok(())
        })();
        // Closing the channels ends the writer and the hasher.
        drop((tx, hash_tx));
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(ExportError::Internal("the output writer panicked".into())));
        let hashed = hasher
            .join()
            .map_err(|_| ExportError::Internal("the output hasher panicked".into()));
        (written, hashed, rendered)
    });
    // A write error stops the writer, which the renderer then sees as a closed channel:
    // report the write error.
    let [train, val] = written?;
    let [train_hash, val_hash] = hashed?;
    rendered?;
    phase("syncing");
    let lost = || ExportError::Internal("training output lost".into());
    let train = train
        .ok_or_else(lost)?
        .stage_detached(train_hash.ok_or_else(lost)?)?;
    let mut val = match (val, val_hash) {
        (Some(v), Some(h)) => Some(v.stage_detached(h)?),
        (None, None) => None,
        _ => {
            return Err(ExportError::Internal(
                "validation output without its hasher".into(),
            ))
        }
    };
    let [train_ids, val_ids] = ids;
    let train_ids = train_ids.map(manifest::AtomicFile::stage).transpose()?;
    let mut val_ids = val_ids.map(manifest::AtomicFile::stage).transpose()?;
    // No line fell in validation: an empty file would break the loaders that read it
    // (`datasets.load_dataset` refuses an empty JSON file, trainers an empty eval set), so
    // none is written (dropped, the staged files go) and any earlier one is removed with the
    // rest of the old set; the report and the manifest say why.
    let mut validation_note = None;
    if val.as_ref().is_some_and(|v| v.record.lines == 0) {
        let note = format!(
            "no validation file: none of the {} lines fell in validation at val_fraction {} \
             (the split goes by {}); raise the fraction or export more data",
            train.record.lines,
            opts.val_fraction,
            opts.split_by.as_str()
        );
        tracing::warn!("{note}");
        validation_note = Some(note);
        val = None;
        val_ids = None;
    }
    let record = |f: &manifest::Staged| f.record.clone();
    let train_file = record(&train);
    let val_file = val.as_ref().map(record);
    let train_ids_file = train_ids.as_ref().map(record);
    let val_ids_file = val_ids.as_ref().map(record);
    let after_filtering = train_file.lines + val_file.as_ref().map_or(0, |v| v.lines);
    let mpath = manifest_path(output);
    let m = manifest::Manifest {
        tool: "training-collector",
        version: env!("CARGO_PKG_VERSION"),
        format: opts.format.as_str(),
        config_digest: opts.config_digest.clone(),
        options: manifest::ManifestOptions {
            min_quality: opts.min_quality.as_str(),
            include_corrections: opts.include_corrections,
            min_prompt_chars: opts.min_prompt_chars,
            min_response_chars: opts.min_response_chars,
            max_prompt_chars: (opts.max_prompt_chars > 0).then_some(opts.max_prompt_chars),
            max_response_chars: (opts.max_response_chars > 0).then_some(opts.max_response_chars),
            min_score: (opts.min_score > 0.0).then_some(opts.min_score),
            tags: opts.tags.clone(),
            exclude_tags: opts.exclude_tags.clone(),
            max_examples: (opts.max_examples > 0).then_some(opts.max_examples),
            val_fraction: opts.val_fraction,
            near_dup_threshold: opts.near_dup_threshold,
            lsh_bands: if near { bands } else { 0 },
            lsh_rows: if near { rows_per_band } else { 0 },
            shingle_words: dedup::SHINGLE_WORDS,
            system_prompt: opts.system_prompt.is_some(),
            pii_patterns: opts
                .pii_patterns
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            split_by: (opts.split_by != SplitBy::Prompt).then(|| opts.split_by.as_str()),
            since: opts.since.map(rfc3339_micros),
            until: opts.until.map(rfc3339_micros),
            decontamination: eval.as_ref().map(|ix| manifest::Decontamination {
                ngram_words: opts.decontaminate_ngram,
                eval_sets: ix.summaries.clone(),
            }),
        },
        inputs: summaries,
        total_raw: counts.total_raw,
        after_filtering,
        dropped: counts.dropped.clone(),
        output: train_file.clone(),
        validation: val_file.clone(),
        validation_note: validation_note.clone(),
        output_ids: train_ids_file.clone(),
        validation_ids: val_ids_file,
    };
    let staged_manifest = manifest::stage_manifest(&mpath, &m)?;
    // Every file is written and synced: the set is replaced at once, as far as renames allow.
    let data_files = [Some(train), val, train_ids, val_ids];
    output_set::replace(
        output,
        data_files.into_iter().flatten().collect(),
        staged_manifest,
    )?;
    pb.finish_and_clear();
    Ok(ExportReport {
        total_raw: counts.total_raw,
        after_filtering,
        output_path: output.display().to_string(),
        dropped: counts.dropped,
        format: opts.format,
        train_count: train_file.lines,
        validation_path: val_file.as_ref().map(|v| v.path.clone()),
        validation_count: val_file.as_ref().map_or(0, |v| v.lines),
        validation_note,
        manifest_path: mpath.display().to_string(),
        output_sha256: train_file.sha256,
        ids_path: train_ids_file.map(|f| f.path),
        unreadable_lines: counts.unreadable,
        labels: (opts.format.kind() == Kind::Binary).then_some(labels),
        prepared_cache: cache.map(|c| c.stats),
    })
}

/// [`SpillItem`] for a newtype over one `u128` (a record packed into one integer so sorting
/// compares one key): 16 little-endian bytes, no heap.
macro_rules! packed_spill_item {
    ($t:ident) => {
        impl SpillItem for $t {
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
                out.extend_from_slice(&self.0.to_le_bytes());
                Ok(())
            }
            fn decode(buf: &[u8]) -> Result<Self, String> {
                let b: [u8; 16] = buf
                    .try_into()
                    .map_err(|_| concat!(stringify!($t), " is not 16 bytes"))?;
                Ok($t(u128::from_le_bytes(b)))
            }
            fn weight(&self) -> usize {
                0
            }
        }
    };
}

/// Where the reading thread files each example line's facts: the join's references, the
/// band store, the rows.
struct Filing<'a> {
    opts: &'a ExportOptions,
    /// The example inputs, for warnings.
    paths: &'a [PathBuf],
    targets: &'a join::KeyFilter,
    /// [`prepare::prompt_key`]s of the corrections' original prompts.
    corrected_prompts: &'a std::collections::HashSet<u128>,
    counts: &'a mut Counts,
    joins: &'a mut Sorter<JoinItem>,
    rows: &'a mut Sorter<Row>,
    band_store: &'a mut band_store::BandStore,
    /// The tags of the lines read, when a tag filter is set.
    seen_tags: Option<&'a mut SeenTags>,
}

/// Where what a correction needs of a line besides its facts (its (prompt, answer) key, its
/// user id) comes from.
enum LineExtras<'f> {
    /// Read with the line ([`prepare::example`]): the key, when a correction may name the
    /// pair (the user id is in the facts).
    Prepared(Option<u128>),
    /// A line of the prepared cache, which keeps neither: read back from its segment, `file`,
    /// when a correction may name the line.
    Cached(&'f std::fs::File),
}

impl Filing<'_> {
    /// Files line `line_no` of example file `fi`: its facts (or why it is unreadable), with
    /// its `extras`.
    fn file(
        &mut self,
        fi: u32,
        line_no: u64,
        facts: Result<prepare::LineFacts, String>,
        extras: LineExtras<'_>,
    ) -> Result<(), ExportError> {
        self.counts.total_raw += 1;
        let mut f = match facts {
            Ok(f) => f,
            Err(e) => {
                let file = self.paths[fi as usize].display();
                tracing::warn!(file = %file, line = line_no, error = %e, "unreadable example line");
                self.counts.drop("unreadable_line");
                return Ok(());
            }
        };
        if let Some(seen) = self.seen_tags.as_deref_mut() {
            seen.add(&f.filters.tags);
        }
        f.apply_options(self.opts);
        // The references the join needs: the keys feedback and corrections name.
        let mut refs = Vec::new();
        if self.targets.may_contain(join::KeyRef::Id(&f.id)) {
            refs.push(JoinKey::Id(f.id.clone()));
        }
        refs.extend(
            f.request_id
                .take()
                .filter(|r| self.targets.may_contain(join::KeyRef::Id(r)))
                .map(JoinKey::Id),
        );
        let pr_key = match extras {
            LineExtras::Prepared(k) => k,
            LineExtras::Cached(file) => self.read_back_if_named(file, &mut f, !refs.is_empty())?,
        };
        refs.extend(pr_key.map(JoinKey::Pair));
        for key in refs {
            self.joins.push(JoinItem {
                key,
                kind: join::KIND_REF,
                fb: None,
                ex_id: f.id.clone(),
                group: f.ex.group,
                user: f.user_id.clone().filter(|_| self.opts.include_corrections),
            })?;
        }
        if let Some(p) = &mut f.ex.prepared {
            p.band_ix = self.band_store.append(&f.bands)?;
        }
        self.rows
            .push(Row::new(f.id, (0, fi, line_no), Payload::Example(f.ex)))
    }

    /// What the cache does not keep of a line (`f`, in `file`) that a correction may name,
    /// read from the segment again: its (prompt, answer) key, returned if a correction names
    /// its prompt and may name the pair; and, when corrections are exported, its user id into
    /// `f` (`id_named`: feedback or a correction may name its id or request id). Most lines
    /// are named by nothing and are not read.
    fn read_back_if_named(
        &self,
        file: &std::fs::File,
        f: &mut prepare::LineFacts,
        id_named: bool,
    ) -> Result<Option<u128>, ExportError> {
        use std::os::unix::fs::FileExt;
        let prompt_named = self.corrected_prompts.contains(&f.prompt_key);
        let id_named = id_named && self.opts.include_corrections;
        if !prompt_named && !id_named {
            return Ok(None);
        }
        let loc = &f.ex.loc;
        let path = &self.paths[loc.file as usize];
        let mut line = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut line, loc.off)
            .map_err(|e| ExportError::Input {
                path: path.clone(),
                source: e,
            })?;
        let (key, user) = prepare::read_back(&line).ok_or_else(|| {
            ExportError::Internal(format!(
                "{} changed: a line cached as readable no longer is",
                path.display()
            ))
        })?;
        let pr_key =
            Some(key).filter(|&k| prompt_named && self.targets.may_contain(join::KeyRef::Pair(k)));
        if self.opts.include_corrections && (id_named || pr_key.is_some()) {
            f.user_id = user;
        }
        Ok(pr_key)
    }
}

fn set_bit(bits: &mut [u64], i: u32) {
    bits[i as usize / 64] |= 1 << (i % 64);
}

fn bit(bits: &[u64], i: u32) -> bool {
    bits[i as usize / 64] & (1 << (i % 64)) != 0
}

/// A candidate's exact-dedup key and number, packed so that sorting groups equal keys, best
/// (smallest number) first: label (2 bits), the top 94 bits of the normalized prompt's hash
/// (two different prompts share them by chance 2^-94), number (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ExactItem(u128);

impl ExactItem {
    fn new(key: (u8, u128), idx: u32) -> Self {
        ExactItem(((key.0 & 3) as u128) << 126 | (key.1 >> 34) << 32 | idx as u128)
    }
    fn key(&self) -> u128 {
        self.0 >> 32
    }
    fn idx(&self) -> u32 {
        self.0 as u32
    }
}

packed_spill_item!(ExactItem);

/// A survivor whose band keys are wanted: store index (64 bits), candidate number (32), label
/// salt (8), packed so that sorting orders by store index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct BandWant(u128);

impl BandWant {
    fn new(ix: u64, idx: u32, salt: u8) -> Self {
        BandWant((ix as u128) << 64 | (idx as u128) << 8 | salt as u128)
    }
    fn ix(&self) -> u64 {
        (self.0 >> 64) as u64
    }
    fn idx(&self) -> u32 {
        (self.0 >> 8) as u32
    }
    fn salt(&self) -> u8 {
        self.0 as u8
    }
}

packed_spill_item!(BandWant);

/// One LSH band of one candidate (and its label's salt), packed into one integer so sorting
/// compares one key (it was a quarter of the near-dedup time): band (8 bits; at most 128
/// bands), salt (8), band hash (64), candidate number (32). Sorted, a bucket's members are
/// adjacent, best (smallest number) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct BandItem(u128);

impl BandItem {
    fn new(band: u8, salt: u8, hash: u64, idx: u32) -> Self {
        BandItem((band as u128) << 104 | (salt as u128) << 96 | (hash as u128) << 32 | idx as u128)
    }
    /// (band, salt, hash): what puts candidates in one bucket.
    fn bucket(&self) -> u128 {
        self.0 >> 32
    }
    fn idx(&self) -> u32 {
        self.0 as u32
    }
}

packed_spill_item!(BandItem);

#[cfg(test)]
pub(crate) mod tests;
