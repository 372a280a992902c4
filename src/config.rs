//! The configuration: `config.toml` read once into a validated, typed [`Config`].
//!
//! Raw TOML is deserialized straight into typed values (durations like `"5s"`, sizes like
//! `"64MiB"`, JSON Pointers, compiled patterns) so that nothing downstream ever sees a raw
//! string it would have to re-check. Every key has a default (the seed's values), so a file
//! that names only what differs is complete. Unknown keys, wrong types and bad values fail
//! with the file, line and column and what was expected, via [`ConfigError`].
//!
//! Relative paths are resolved against the folder of the config file (or the working
//! directory for the embedded default), so the daemon behaves the same whatever its cwd.

use crate::export::{Format, SplitBy};
use crate::record::Relevance;
use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The bundled `config.toml`, used when no config file exists at the default path.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config.toml");

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ConfigError {
    fn at(path: &str, text: &str, offset: usize, message: String) -> ConfigError {
        let (line, column) = line_col(text, offset);
        ConfigError::Invalid {
            path: path.to_string(),
            line,
            column,
            message,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

// ---------------------------------------------------------------------------------------
// Typed leaf values
// ---------------------------------------------------------------------------------------

/// A duration written as `"5s"`, `"250ms"`, `"1h"`, `"7d"` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration {s:?} ({e}): expected a number with a unit, like \"500ms\", \"5s\", \"1h\""
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A [`HumanDuration`] that must not be zero (where zero would quietly mean "everything"),
/// for a setting that is off when its key is left out (`Option<NonZeroDuration>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonZeroDuration(pub Duration);

/// A [`HumanDuration`] that must not be zero, for a setting that is always on: its error
/// cannot tell the user to leave the key out, which would only give the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveDuration(pub Duration);

impl Serialize for PositiveDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(v) = HumanDuration::deserialize(d)?;
        if v.is_zero() {
            return Err(de::Error::custom(
                "a zero duration is not allowed here: give a positive one (\"1m\"), longer to wait longer",
            ));
        }
        Ok(PositiveDuration(v))
    }
}

impl Serialize for NonZeroDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for NonZeroDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(v) = HumanDuration::deserialize(d)?;
        if v.is_zero() {
            return Err(de::Error::custom(
                "a zero duration is not allowed here: leave the key out to turn it off",
            ));
        }
        Ok(NonZeroDuration(v))
    }
}

/// A size in bytes written as `"64MiB"`, `"512KB"`, `"1GiB"` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// ```
    /// use training_collector::config::ByteSize;
    /// assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
    /// assert_eq!(ByteSize::parse("1.5KB"), Ok(ByteSize(1500)));
    /// assert!(ByteSize::parse("12 parsecs").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number with a unit, like \"64MiB\"")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?}: expected B, KB, KiB, MB, MiB, GB or GiB"
                ))
            }
        };
        let bytes = value * mult as f64;
        if !(bytes.is_finite() && bytes >= 1.0) {
            return Err(format!("invalid size {s:?}: must be at least 1 byte"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: a float or a bool then gets serde's
        // "invalid type: ..., expected <what `expecting` says>" instead of the untagged
        // enum's "did not match any variant".
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a whole number of bytes or a string like \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                match u64::try_from(n) {
                    Ok(b) => self.visit_u64(b),
                    Err(_) => Err(E::custom(format!(
                        "invalid size {n}: must be at least 1 byte"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                if n >= 1 {
                    Ok(ByteSize(n))
                } else {
                    Err(E::custom("invalid size 0: must be at least 1 byte"))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return s.serialize_str(&format!("{}{unit}", b / m));
            }
        }
        s.serialize_str(&format!("{b}B"))
    }
}

/// A choice given by name (`format = "dpo"`), parsed by the type's `FromStr` so the config
/// holds the typed value and a bad name is reported at its key with the type's own message.
fn by_name<'de, D: Deserializer<'de>, T: std::str::FromStr<Err = String>>(
    d: D,
) -> Result<T, D::Error> {
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

/// An integer that must be at least 1 (buffer size, minimum example count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Positive(pub usize);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n >= 1 {
            Ok(Positive(n as usize))
        } else {
            Err(de::Error::custom(format!(
                "invalid value {n}: must be a whole number of at least 1"
            )))
        }
    }
}

/// A JSON Pointer (RFC 6901), checked for syntax at load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pointer(pub String);

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.starts_with('/') {
            Ok(Pointer(s))
        } else {
            Err(de::Error::custom(format!(
                "invalid JSON Pointer {s:?}: it must start with '/', like \"/prompt\" or \"/request/messages\""
            )))
        }
    }
}

/// The levels `log_level` names, for messages.
const LOG_LEVELS: &str = "trace, debug, info, warn, error or off";

/// `log_level`: a filter in tracing-subscriber's `EnvFilter` syntax, which is what the
/// binary hands it to. Each comma-separated directive must be a level or `target=level`:
/// `EnvFilter` reads a bare word that is not a level as a target name and logs only that
/// target, so a misspelt level ("warning", "verbose") would silence every event, errors
/// included. (A bare target loses nothing: `name=trace` says the same.)
fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom(format!(
            "log_level is empty: expected {LOG_LEVELS}, or directives like \"training_collector=debug,info\""
        )));
    }
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let is_level = directive
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_ok();
        if !is_level && !directive.contains('=') && !directive.contains('[') {
            return Err(de::Error::custom(format!(
                "invalid log_level {s:?}: {directive:?} is not a level: expected {LOG_LEVELS}, or target=level like \"training_collector=debug\""
            )));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&s).map_err(|e| {
        de::Error::custom(format!(
            "invalid log_level {s:?} ({e}): expected {LOG_LEVELS}, or directives like \"training_collector=debug,info\""
        ))
    })?;
    Ok(s)
}

/// A regular expression compiled at load time.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regular expression {s:?}: {e}")))
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A listen address; `""` turns the endpoint off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(ListenAddr(None));
        }
        s.trim().parse().map(|a| ListenAddr(Some(a))).map_err(|_| {
            de::Error::custom(format!(
                "invalid listen address {s:?}: expected host:port like \"127.0.0.1:9464\", or \"\" to turn it off"
            ))
        })
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str(""),
        }
    }
}

/// `input.max_open_files`: a number of files, or `"auto"`: what the process's open-file
/// limit leaves after a reserve for the daemon's own files (see [`crate::fd_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFiles {
    Auto,
    Max(u64),
}

impl<'de> Deserialize<'de> for OpenFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = OpenFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of files of at least 1, or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OpenFiles, E> {
                match u64::try_from(v) {
                    Ok(n) if n >= 1 => Ok(OpenFiles::Max(n)),
                    _ => Err(E::custom(format!(
                        "invalid max_open_files {v}: expected a number of files of at least 1, or \"auto\""
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OpenFiles, E> {
                if v.trim() == "auto" {
                    Ok(OpenFiles::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid max_open_files {v:?}: expected a number of files of at least 1, or \"auto\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for OpenFiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OpenFiles::Auto => s.serialize_str("auto"),
            OpenFiles::Max(n) => s.serialize_u64(*n),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Keywords match at word boundaries, allowing one inflection suffix.
    Word,
    /// Plain substring matching, exactly as the seed does it.
    Substring,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    #[serde(deserialize_with = "log_filter")]
    pub log_level: String,
    pub input: InputConfig,
    pub buffer: BufferConfig,
    pub output: OutputConfig,
    pub spool: SpoolConfig,
    pub domain: DomainConfig,
    pub export: ExportConfig,
    pub training: TrainingConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Glob patterns of the logs to tail (`**` allowed).
    pub paths: Vec<String>,
    /// Files `paths` matches that are never read: a pattern with a `/` is matched against
    /// the whole path (resolved like `paths`), one without against the file name. The
    /// default leaves out compressed files (logrotate's `compress`), which are not lines
    /// (a compressed rotation of a file with a saved position is still read on from there:
    /// see `tail::rotated`).
    pub exclude: Vec<String>,
    pub start_at: StartAt,
    pub max_line_bytes: ByteSize,
    pub rotate_wait: HumanDuration,
    /// A deleted log held open while intake is paused (writes failing) is closed this long
    /// after the pause found it deleted, its unread bytes lost and reported: held, its disk
    /// space is not freed (see `tail::Tailer::discover_only`).
    pub close_deleted_after: PositiveDuration,
    pub rescan_interval: HumanDuration,
    /// How much one file may be read in one pass before the others get their turn.
    pub read_budget: ByteSize,
    /// Input files held open at most; beyond it, idle ones are closed and reopened on change.
    pub max_open_files: OpenFiles,
    /// Files found with no saved position and not modified for this long are read from
    /// their end only (absent: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_older: Option<NonZeroDuration>,
    /// Where logrotate's `olddir` moves rotated logs: relative to each log's directory (as
    /// logrotate reads it) or absolute. Searched, like the log's own directory, for the
    /// rest of a file rotated while not open (see `tail::rotated`).
    pub rotated_dirs: Vec<PathBuf>,
    /// Field (top-level key, or a JSON Pointer when it starts with '/') = value pairs that a
    /// line must carry to be an interaction.
    #[serde(rename = "match")]
    pub match_: IndexMap<String, toml::Value>,
    pub fields: FieldsConfig,
    pub events: EventsConfig,
}

/// Example field -> JSON Pointer candidates; the first that resolves to a value wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsConfig {
    pub prompt: Vec<Pointer>,
    pub response: Vec<Pointer>,
    /// OpenAI-style message lists: the last user message is the prompt, a system message is
    /// kept in metadata, and an assistant message after the last user one is the response.
    pub messages: Vec<Pointer>,
    pub request_id: Vec<Pointer>,
    pub timestamp: Vec<Pointer>,
    pub skill_used: Vec<Pointer>,
    pub tier_handled: Vec<Pointer>,
    pub latency_ms: Vec<Pointer>,
    pub user_id: Vec<Pointer>,
    pub project_context: Vec<Pointer>,
    pub source: Vec<Pointer>,
    pub tags: Vec<Pointer>,
}

/// Feedback and correction events that arrive in the tailed log itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub feedback: FeedbackEventFields,
    pub correction: CorrectionEventFields,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackEventFields {
    /// Field = value pairs a line must carry to be a feedback event (empty = never).
    #[serde(rename = "match")]
    pub match_: IndexMap<String, toml::Value>,
    /// The example id or the service's request id the feedback is about.
    pub target: Vec<Pointer>,
    pub value: Vec<Pointer>,
    pub comment: Vec<Pointer>,
    pub user: Vec<Pointer>,
    pub timestamp: Vec<Pointer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrectionEventFields {
    #[serde(rename = "match")]
    pub match_: IndexMap<String, toml::Value>,
    pub target: Vec<Pointer>,
    pub original_prompt: Vec<Pointer>,
    pub original_response: Vec<Pointer>,
    pub corrected_response: Vec<Pointer>,
    pub reason: Vec<Pointer>,
    pub corrector: Vec<Pointer>,
    pub timestamp: Vec<Pointer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub size: Positive,
    pub flush_interval: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub max_file_bytes: ByteSize,
    pub rotate_interval: HumanDuration,
    pub fsync: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub keep_processed: bool,
    pub max_file_bytes: ByteSize,
    /// A file is read once nothing has changed it for this long (zero: at once).
    pub min_age: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainConfig {
    pub match_mode: MatchMode,
    pub high: Vec<String>,
    pub medium: Vec<String>,
    /// Tag -> patterns, in the order tags are reported.
    pub tags: IndexMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    #[serde(deserialize_with = "by_name")]
    pub format: Format,
    #[serde(deserialize_with = "by_name")]
    pub min_quality: Relevance,
    pub include_corrections: bool,
    pub min_prompt_chars: usize,
    pub min_response_chars: usize,
    /// Longest prompt and answer exported, in characters; 0 = no limit.
    pub max_prompt_chars: usize,
    pub max_response_chars: usize,
    /// Lowest `auto_score` exported, 0 to 1.
    pub min_score: f64,
    /// At most this many lines (train and validation together), the best first; 0 = all.
    pub max_examples: u64,
    /// When not empty, only examples and corrections with one of these tags are exported.
    pub tags: Vec<String>,
    /// Examples and corrections with any of these tags are not exported.
    pub exclude_tags: Vec<String>,
    /// Fraction of prompts (by hash) written to the validation file; 0 turns the split off.
    pub val_fraction: f64,
    /// What keeps lines on one side of the split.
    #[serde(deserialize_with = "by_name")]
    pub split_by: SplitBy,
    /// The system message of the conversational formats; empty = none.
    pub system_prompt: String,
    /// Extra PII patterns scrubbed from every output, besides emails and phone numbers.
    pub pii_patterns: Vec<Pattern>,
    /// Jaccard similarity over word shingles at which two prompts count as near duplicates;
    /// 0 turns near-duplicate detection off (exact duplicates are still dropped).
    pub near_dup_threshold: f64,
    /// Default output path (relative to data_dir when relative).
    pub output: PathBuf,
    /// Also write `<stem>.ids.txt` beside each output file: the example id of each line.
    pub ids_file: bool,
    /// Evaluation sets (JSON lines, any shape): examples sharing a run of
    /// `decontaminate_ngram` words with one of their texts are left out.
    pub decontaminate: Vec<PathBuf>,
    pub decontaminate_ngram: usize,
    /// The daemon prepares each example segment it seals for export with these options (at
    /// lowest CPU priority), so an export without flags, `ready` and `train-check` find the
    /// prepared cache instead of doing that work themselves.
    pub prepare_ahead: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub min_examples: Positive,
    pub sync_command: Vec<String>,
    pub train_command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: ListenAddr,
}

// ---------------------------------------------------------------------------------------
// Defaults (the seed's values; `config.toml` spells out the same, see the test below)
// ---------------------------------------------------------------------------------------

fn ptrs(list: &[&str]) -> Vec<Pointer> {
    list.iter().map(|s| Pointer((*s).to_string())).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// The seed's `DOMAIN_KEYWORDS["high"]`.
pub const SEED_HIGH: &[&str] = &[
    "tpo",
    "epdm",
    "pvc",
    "mod bit",
    "bur",
    "membrane",
    "flashing",
    "base flash",
    "counter flash",
    "reglet",
    "07 50",
    "07 52",
    "07 54",
    "07 55",
    "07 60",
    "07 62",
    "polyiso",
    "insulation",
    "r-value",
    "tapered",
    "roof drain",
    "scupper",
    "overflow",
    "cricket",
    "curb",
    "penetration",
    "pitch pan",
    "boot",
    "submittal",
    "shop drawing",
    "rfi",
    "change order",
    "carlisle",
    "firestone",
    "gaf",
    "johns manville",
    "sika",
];

/// The seed's `DOMAIN_KEYWORDS["medium"]`.
pub const SEED_MEDIUM: &[&str] = &[
    "roof",
    "waterproof",
    "spec",
    "detail",
    "parapet",
    "coping",
    "edge metal",
    "fascia",
    "gutter",
    "adhesive",
    "fastener",
    "seam",
    "weld",
    "architect",
    "contractor",
    "subcontract",
];

/// The seed's `TAG_PATTERNS`, in its order.
pub const SEED_TAGS: &[(&str, &[&str])] = &[
    ("tpo", &["tpo", "thermoplastic polyolefin"]),
    ("epdm", &["epdm", "rubber membrane", "ethylene propylene"]),
    ("pvc", &["pvc membrane", "polyvinyl chloride"]),
    ("mod-bit", &["modified bitumen", "mod bit", "sbs", "app"]),
    ("bur", &["built-up", "bur", "tar and gravel"]),
    ("membrane", &["membrane", "single-ply", "sheet goods"]),
    ("flashing", &["flashing", "flash", "termination"]),
    (
        "insulation",
        &["insulation", "polyiso", "iso board", "eps", "xps"],
    ),
    ("drains", &["drain", "scupper", "overflow", "leader"]),
    ("specs", &["spec", "specification", "section 07"]),
    (
        "estimating",
        &["estimate", "takeoff", "quantity", "bid", "cost"],
    ),
    (
        "labor",
        &[
            "labor",
            "man-hour",
            "production rate",
            "crew",
            "productivity",
        ],
    ),
    (
        "safety",
        &["osha", "safety", "fall protection", "harness", "guardrail"],
    ),
    (
        "submittals",
        &["submittal", "product data", "shop drawing", "samples"],
    ),
    (
        "rfi",
        &[
            "rfi",
            "request for information",
            "clarification",
            "conflict",
        ],
    ),
    (
        "change-order",
        &["change order", "pco", "t&m", "extra work"],
    ),
    (
        "quality",
        &["inspection", "punch list", "defect", "warranty"],
    ),
    (
        "scheduling",
        &["schedule", "duration", "sequence", "phasing"],
    ),
];

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./training_data"),
            log_level: "info".into(),
            input: InputConfig::default(),
            buffer: BufferConfig::default(),
            output: OutputConfig::default(),
            spool: SpoolConfig::default(),
            domain: DomainConfig::default(),
            export: ExportConfig::default(),
            training: TrainingConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        let mut match_ = IndexMap::new();
        match_.insert("event".to_string(), toml::Value::from("interaction"));
        InputConfig {
            paths: vec!["./logs/*.jsonl".into()],
            exclude: ["*.gz", "*.bz2", "*.xz", "*.zst", "*.lz4", "*.zip"]
                .map(String::from)
                .to_vec(),
            start_at: StartAt::Beginning,
            max_line_bytes: ByteSize(1 << 20),
            rotate_wait: HumanDuration(Duration::from_secs(30)),
            close_deleted_after: PositiveDuration(Duration::from_secs(60)),
            rescan_interval: HumanDuration(Duration::from_secs(1)),
            read_budget: ByteSize(256 << 10),
            max_open_files: OpenFiles::Auto,
            ignore_older: None,
            rotated_dirs: Vec::new(),
            match_,
            fields: FieldsConfig::default(),
            events: EventsConfig::default(),
        }
    }
}

impl Default for FieldsConfig {
    fn default() -> Self {
        FieldsConfig {
            prompt: ptrs(&["/prompt", "/query"]),
            response: ptrs(&["/response", "/completion", "/output"]),
            messages: ptrs(&["/messages"]),
            request_id: ptrs(&["/request_id"]),
            timestamp: ptrs(&["/timestamp", "/ts"]),
            skill_used: ptrs(&["/skill_used", "/skill"]),
            tier_handled: ptrs(&["/tier"]),
            latency_ms: ptrs(&["/latency_ms"]),
            user_id: ptrs(&["/user_id"]),
            project_context: ptrs(&["/project"]),
            source: ptrs(&["/source"]),
            tags: ptrs(&["/tags"]),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        let mut fb = IndexMap::new();
        fb.insert("event".to_string(), toml::Value::from("feedback"));
        let mut corr = IndexMap::new();
        corr.insert("event".to_string(), toml::Value::from("correction"));
        EventsConfig {
            feedback: FeedbackEventFields {
                match_: fb,
                target: ptrs(&["/example_id", "/request_id", "/target"]),
                value: ptrs(&["/feedback", "/value", "/rating"]),
                comment: ptrs(&["/comment"]),
                user: ptrs(&["/user_id", "/user"]),
                timestamp: ptrs(&["/timestamp", "/ts"]),
            },
            correction: CorrectionEventFields {
                match_: corr,
                target: ptrs(&["/example_id", "/request_id", "/target"]),
                original_prompt: ptrs(&["/original_prompt", "/prompt"]),
                original_response: ptrs(&["/original_response", "/response"]),
                corrected_response: ptrs(&["/corrected_response", "/corrected"]),
                reason: ptrs(&["/reason", "/correction_reason"]),
                corrector: ptrs(&["/corrector", "/user_id"]),
                timestamp: ptrs(&["/timestamp", "/ts"]),
            },
        }
    }
}

impl Default for FeedbackEventFields {
    fn default() -> Self {
        EventsConfig::default().feedback
    }
}

impl Default for CorrectionEventFields {
    fn default() -> Self {
        EventsConfig::default().correction
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            size: Positive(50),
            flush_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            max_file_bytes: ByteSize(64 << 20),
            rotate_interval: HumanDuration(Duration::from_secs(3600)),
            fsync: true,
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("./spool"),
            keep_processed: false,
            max_file_bytes: ByteSize(16 << 20),
            min_age: HumanDuration(Duration::from_secs(1)),
        }
    }
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            match_mode: MatchMode::Word,
            high: strings(SEED_HIGH),
            medium: strings(SEED_MEDIUM),
            tags: SEED_TAGS
                .iter()
                .map(|(t, p)| ((*t).to_string(), strings(p)))
                .collect(),
        }
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
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
            max_examples: 0,
            val_fraction: 0.0,
            split_by: SplitBy::Prompt,
            system_prompt: String::new(),
            ids_file: false,
            decontaminate: Vec::new(),
            decontaminate_ngram: crate::export::decontaminate::DEFAULT_NGRAM_WORDS,
            pii_patterns: Vec::new(),
            near_dup_threshold: 0.8,
            output: PathBuf::from("training_export.jsonl"),
            prepare_ahead: true,
        }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            min_examples: Positive(500),
            sync_command: Vec::new(),
            train_command: Vec::new(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: ListenAddr(Some(SocketAddr::from(([127, 0, 0, 1], 9464)))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// The bundled default, used when the default `./config.toml` does not exist.
    Embedded,
}

impl Config {
    /// Loads and validates a config file. With `explicit == false` (the path is only the
    /// default `./config.toml`) a missing file falls back to the embedded default.
    pub fn load(path: &Path, explicit: bool) -> Result<(Config, ConfigSource), ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let base = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                let cfg = Config::parse(&text, &path.display().to_string(), &base)?;
                Ok((cfg, ConfigSource::File(path.to_path_buf())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                let cfg =
                    Config::parse(EMBEDDED_DEFAULT, "<embedded config.toml>", Path::new("."))?;
                Ok((cfg, ConfigSource::Embedded))
            }
            Err(source) => Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Parses and validates config text; `name` labels errors, `base` resolves relative paths.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            ConfigError::at(name, text, offset, e.message().trim().to_string())
        })?;
        cfg.validate(text, name)?;
        cfg.resolve_paths(base);
        cfg.validate_places(text, name)?;
        Ok(cfg)
    }

    /// Checks that need more than one value's type: each error points at the offending key.
    fn validate(&self, text: &str, name: &str) -> Result<(), ConfigError> {
        let err = |key_path: &[&str], message: String| {
            ConfigError::at(name, text, locate(text, key_path), message)
        };
        if self.input.paths.is_empty() {
            return Err(err(
                &["input", "paths"],
                "input.paths is empty: name at least one log file glob".into(),
            ));
        }
        // An empty path would resolve to the config file's own folder.
        for (key_path, value, what) in [
            (
                &["data_dir"][..],
                &self.data_dir,
                "the folder of segments and state",
            ),
            (&["spool", "dir"][..], &self.spool.dir, "the spool folder"),
            (
                &["export", "output"][..],
                &self.export.output,
                "the export file",
            ),
        ] {
            if value.as_os_str().is_empty() {
                return Err(err(
                    key_path,
                    format!("{} is empty: name {what}", key_path.join(".")),
                ));
            }
        }
        if let Some(i) = self.input.paths.iter().position(|p| p.trim().is_empty()) {
            return Err(err(
                &["input", "paths", &i.to_string()],
                format!("input.paths[{i}] is empty: name a log file glob"),
            ));
        }
        for (key, argv) in [
            ("sync_command", &self.training.sync_command),
            ("train_command", &self.training.train_command),
        ] {
            if argv
                .first()
                .is_some_and(|program| program.trim().is_empty())
            {
                return Err(err(
                    &["training", key, "0"],
                    format!("training.{key} starts with an empty program name: name the program to run first, or leave the list empty"),
                ));
            }
        }
        for (key, globs) in [
            ("paths", &self.input.paths),
            ("exclude", &self.input.exclude),
        ] {
            for (i, p) in globs.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(p) {
                    return Err(err(
                        &["input", key, &i.to_string()],
                        format!("invalid glob {p:?} in input.{key}: {e}"),
                    ));
                }
            }
        }
        if let Some(i) = self
            .input
            .rotated_dirs
            .iter()
            .position(|d| d.as_os_str().is_empty())
        {
            return Err(err(
                &["input", "rotated_dirs", &i.to_string()],
                "input.rotated_dirs contains an empty path".into(),
            ));
        }
        if self.input.fields.prompt.is_empty() && self.input.fields.messages.is_empty() {
            return Err(err(
                &["input", "fields", "prompt"],
                "input.fields.prompt and input.fields.messages are both empty: the prompt cannot be found".into(),
            ));
        }
        if self.input.fields.response.is_empty() && self.input.fields.messages.is_empty() {
            return Err(err(
                &["input", "fields", "response"],
                "input.fields.response and input.fields.messages are both empty: the response cannot be found".into(),
            ));
        }
        if self.input.rescan_interval.0.is_zero() {
            return Err(err(
                &["input", "rescan_interval"],
                "input.rescan_interval must be longer than 0s".into(),
            ));
        }
        if self.buffer.flush_interval.0.is_zero() {
            return Err(err(
                &["buffer", "flush_interval"],
                "buffer.flush_interval must be longer than 0s".into(),
            ));
        }
        if self.output.rotate_interval.0.is_zero() {
            return Err(err(
                &["output", "rotate_interval"],
                "output.rotate_interval must be longer than 0s".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.export.min_score) {
            return Err(err(
                &["export", "min_score"],
                format!(
                    "export.min_score must be from 0 to 1, not {}",
                    self.export.min_score
                ),
            ));
        }
        for (key, min, max) in [
            (
                "max_prompt_chars",
                self.export.min_prompt_chars,
                self.export.max_prompt_chars,
            ),
            (
                "max_response_chars",
                self.export.min_response_chars,
                self.export.max_response_chars,
            ),
        ] {
            if max != 0 && max < min {
                let min_key = key.replacen("max", "min", 1);
                return Err(err(
                    &["export", key],
                    format!(
                        "export.{key} ({max}) is below export.{min_key} ({min}): nothing could be exported"
                    ),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.export.val_fraction) {
            return Err(err(
                &["export", "val_fraction"],
                format!(
                    "export.val_fraction must be at least 0 and below 1, not {}",
                    self.export.val_fraction
                ),
            ));
        }
        if !(5..=50).contains(&self.export.decontaminate_ngram) {
            return Err(err(
                &["export", "decontaminate_ngram"],
                format!(
                    "export.decontaminate_ngram must be 5 to 50 words, not {}",
                    self.export.decontaminate_ngram
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.export.near_dup_threshold) {
            return Err(err(
                &["export", "near_dup_threshold"],
                format!(
                    "export.near_dup_threshold must be 0 (off) to 1, not {}",
                    self.export.near_dup_threshold
                ),
            ));
        }
        // A pattern that matches "" matches between every two characters, so the scrub would
        // put a marker around every character of every exported text.
        if let Some(i) = self
            .export
            .pii_patterns
            .iter()
            .position(|p| p.0.is_match(""))
        {
            let p = self.export.pii_patterns[i].0.as_str();
            return Err(err(
                &["export", "pii_patterns", &i.to_string()],
                format!(
                    "export.pii_patterns[{i}] {p:?} matches the empty string: it would redact between every two characters of every text (use + instead of *, or drop the pattern)"
                ),
            ));
        }
        for (key, list) in [("high", &self.domain.high), ("medium", &self.domain.medium)] {
            if list.iter().any(|k| k.trim().is_empty()) {
                return Err(err(
                    &["domain", key],
                    format!("domain.{key} contains an empty keyword"),
                ));
            }
        }
        for (key, list) in [
            ("tags", &self.export.tags),
            ("exclude_tags", &self.export.exclude_tags),
        ] {
            if let Some(i) = list.iter().position(|t| t.trim().is_empty()) {
                return Err(err(
                    &["export", key, &i.to_string()],
                    format!("export.{key}[{i}] is blank: name a tag, or leave it out"),
                ));
            }
        }
        for (tag, pats) in &self.domain.tags {
            if pats.is_empty() || pats.iter().any(|p| p.trim().is_empty()) {
                return Err(err(
                    &["domain", "tags", tag],
                    format!("domain.tags.{tag} needs at least one non-empty pattern"),
                ));
            }
        }
        Ok(())
    }

    /// Checks of where the resolved paths point. The daemon takes every file in the spool
    /// folder away (deleted, or moved to `done/` or `rejected/`), so the spool folder must be
    /// one nothing else uses: not the data folder (its segments), and not a folder the input
    /// globs read logs from (a live log would be moved away from under the service).
    /// Compared as written (after resolving), without following symlinks.
    fn validate_places(&self, text: &str, name: &str) -> Result<(), ConfigError> {
        // At spool.dir when the file sets it, else at the other key of the clash.
        let at = |other: &[&str], message: String| {
            let key_path = if is_set(text, &["spool", "dir"]) {
                &["spool", "dir"][..]
            } else {
                other
            };
            ConfigError::at(name, text, locate(text, key_path), message)
        };
        let spool = &self.spool.dir;
        let data = &self.data_dir;
        let clash = if spool == data {
            Some("is data_dir")
        } else if spool.starts_with(data) {
            Some("is inside data_dir")
        } else if data.starts_with(spool) {
            Some("contains data_dir")
        } else {
            None
        };
        if let Some(clash) = clash {
            return Err(at(
                &["data_dir"],
                format!(
                    "spool.dir {} {clash} ({}): the daemon takes away every file in the spool folder, so it needs a folder of its own",
                    spool.display(),
                    data.display()
                ),
            ));
        }
        for (i, glob) in self.input.paths.iter().enumerate() {
            if glob_reads_in(glob, spool) {
                return Err(at(
                    &["input", "paths", &i.to_string()],
                    format!(
                        "spool.dir {} is a folder input.paths[{i}] ({glob:?}) reads logs from: the daemon takes away every file in the spool folder, so it needs a folder of its own",
                        spool.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| -> PathBuf {
            let joined = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            normalize(&joined)
        };
        // A glob is joined to the config folder as a glob: `[`, `*` and `?` in the folder's
        // own name (`/srv/app[1]`) are escaped so they match themselves, not a class.
        let base_glob = glob::Pattern::escape(&normalize(base).to_string_lossy());
        let abs_glob = |p: &str| -> String {
            if Path::new(p).is_absolute() {
                normalize(Path::new(p)).to_string_lossy().into_owned()
            } else {
                normalize(&Path::new(&base_glob).join(p))
                    .to_string_lossy()
                    .into_owned()
            }
        };
        self.data_dir = abs(&self.data_dir);
        self.spool.dir = abs(&self.spool.dir);
        self.export.decontaminate = self.export.decontaminate.iter().map(|p| abs(p)).collect();
        if self.export.output.is_relative() {
            self.export.output = self.data_dir.join(&self.export.output);
        }
        self.input.paths = self.input.paths.iter().map(|p| abs_glob(p)).collect();
        // A file-name pattern (no `/`) stays as it is; a path pattern resolves like `paths`.
        self.input.exclude = self
            .input
            .exclude
            .iter()
            .map(|p| {
                if p.contains('/') {
                    abs_glob(p)
                } else {
                    p.clone()
                }
            })
            .collect();
    }

    /// Where checkpoints and other daemon state live.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    /// The effective configuration as TOML (defaults filled in, paths resolved).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// A stable digest of the effective configuration (recorded in export manifests).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(self.to_toml().as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Makes `base/./logs/../x` into `base/x` without touching the filesystem (globs may not
/// exist yet, so `canonicalize` is not an option).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            return normalize(&cwd.join(out));
        }
    }
    out
}

/// Whether the input glob (resolved) reads logs in the folder `dir`: its fixed leading
/// folder (before the first component with a wildcard) is `dir` or inside it, or `dir` is
/// inside that folder and the glob's folder part matches `dir`, so that the glob matches
/// files right in it (`logs/*/*.jsonl` or `logs/**/*.jsonl` with `dir` = `logs/spool`).
fn glob_reads_in(glob: &str, dir: &Path) -> bool {
    let components: Vec<_> = Path::new(glob).components().collect();
    // The last component is the file-name pattern, never part of the folder.
    let folder_len = components.len().saturating_sub(1);
    let literal: Vec<Option<String>> = components[..folder_len]
        .iter()
        .map(|c| crate::tail::discovery::literal_component(&c.as_os_str().to_string_lossy()))
        .collect();
    let fixed_len = literal
        .iter()
        .position(Option::is_none)
        .unwrap_or(folder_len);
    let fixed: PathBuf = literal[..fixed_len].iter().flatten().collect();
    if fixed.starts_with(dir) {
        return true;
    }
    if !dir.starts_with(&fixed) {
        return false;
    }
    let folder: PathBuf = components[..folder_len].iter().collect();
    glob::Pattern::new(&folder.to_string_lossy())
        .is_ok_and(|p| p.matches_path_with(dir, crate::tail::discovery::OPTIONS))
}

/// Best-effort byte offset of `key_path` in the TOML text (for errors found after parsing).
fn locate(text: &str, key_path: &[&str]) -> usize {
    walk(text, key_path).0
}

/// Whether the TOML text sets `key_path` itself (rather than leaving it to its default).
fn is_set(text: &str, key_path: &[&str]) -> bool {
    walk(text, key_path).1
}

/// Follows `key_path` (table keys; an array's element by its index) in the TOML text: the
/// byte offset of the deepest part of it found (0 if none), and whether all of it was.
fn walk(text: &str, key_path: &[&str]) -> (usize, bool) {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return (0, false);
    };
    let mut item = doc.as_item();
    let mut found = 0;
    for (depth, key) in key_path.iter().enumerate() {
        if let (Some(array), Ok(i)) = (item.as_array(), key.parse::<usize>()) {
            let element = array.get(i);
            if let Some(span) = element.and_then(|v| v.span()) {
                found = span.start;
            }
            return (found, element.is_some() && depth + 1 == key_path.len());
        }
        let Some(table) = item.as_table_like() else {
            return (found, false);
        };
        let Some((k, next)) = table.get_key_value(key) else {
            return (found, false);
        };
        if let Some(span) = k.span() {
            found = span.start;
        }
        if let Some(span) = next.span() {
            found = span.start;
        }
        item = next;
    }
    (found, true)
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => f.write_str("<embedded config.toml>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/base"))
    }

    fn invalid(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn the_bundled_config_equals_the_built_in_defaults() {
        let bundled = parse(EMBEDDED_DEFAULT).expect("bundled config.toml parses");
        let empty = parse("").unwrap();
        assert_eq!(bundled, empty);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let cfg = parse("[buffer]\nsize = 7\n").unwrap();
        assert_eq!(cfg.buffer.size, Positive(7));
        assert_eq!(
            cfg.buffer.flush_interval,
            HumanDuration(Duration::from_secs(5))
        );
        assert_eq!(cfg.domain.high.len(), SEED_HIGH.len());
    }

    #[test]
    fn typed_values_parse() {
        let cfg = parse(
            "[input]\nmax_line_bytes = \"2MiB\"\nrotate_wait = \"250ms\"\n[output]\nmax_file_bytes = 4096\n[metrics]\nlisten = \"\"\n",
        )
        .unwrap();
        assert_eq!(cfg.input.max_line_bytes, ByteSize(2 << 20));
        assert_eq!(cfg.input.rotate_wait.0, Duration::from_millis(250));
        assert_eq!(cfg.output.max_file_bytes, ByteSize(4096));
        assert_eq!(cfg.metrics.listen, ListenAddr(None));
    }

    #[test]
    fn exclude_defaults_to_compressed_files_and_resolves_path_patterns_only() {
        assert!(parse("")
            .unwrap()
            .input
            .exclude
            .contains(&"*.gz".to_string()));
        let cfg = parse("[input]\nexclude = [\"*.1\", \"logs/debug-*.jsonl\"]\n").unwrap();
        assert_eq!(
            cfg.input.exclude,
            vec!["*.1".to_string(), "/base/logs/debug-*.jsonl".to_string()]
        );
        let (line, column, msg) = invalid("[input]\nexclude = [\"*.gz\", \"[\"]\n");
        // The position of the bad pattern itself.
        assert_eq!((line, column), (2, 20));
        assert!(msg.contains("invalid glob \"[\" in input.exclude"), "{msg}");
    }

    /// A config folder whose name has glob characters: the relative globs under it still
    /// match its files (the folder is escaped, not read as a class), and the folder watched
    /// is the folder itself.
    #[test]
    fn globs_under_a_config_folder_with_glob_characters_match_its_files() {
        let text = "[input]\npaths = [\"logs/*.jsonl\"]\nexclude = [\"logs/old-*\"]\n";
        let cfg = Config::parse(text, "test.toml", Path::new("/srv/app[1]")).unwrap();
        let opts = crate::tail::discovery::OPTIONS;
        let include = glob::Pattern::new(&cfg.input.paths[0]).unwrap();
        assert!(
            include.matches_path_with(Path::new("/srv/app[1]/logs/a.jsonl"), opts),
            "{:?}",
            cfg.input.paths
        );
        assert!(!include.matches_path_with(Path::new("/srv/app1/logs/a.jsonl"), opts));
        let exclude = glob::Pattern::new(&cfg.input.exclude[0]).unwrap();
        assert!(exclude.matches_path_with(Path::new("/srv/app[1]/logs/old-a.jsonl"), opts));
        assert_eq!(
            crate::tail::discovery::literal_dir(&cfg.input.paths[0]).0,
            PathBuf::from("/srv/app[1]/logs")
        );
        // Other paths are paths, not globs: nothing to escape.
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/app[1]/training_data"));
    }

    #[test]
    fn paths_resolve_against_the_config_folder() {
        let cfg = parse("data_dir = \"data\"\n[input]\npaths = [\"../logs/*.jsonl\"]\n").unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/base/data"));
        assert_eq!(cfg.input.paths, vec!["/logs/*.jsonl".to_string()]);
        assert_eq!(
            cfg.export.output,
            PathBuf::from("/base/data/training_export.jsonl")
        );
    }

    #[test]
    fn a_typo_key_names_its_line() {
        let (line, col, msg) = invalid("[buffer]\nsize = 5\nflush_intervall = \"5s\"\n");
        assert_eq!((line, col), (3, 1));
        assert!(msg.contains("unknown field `flush_intervall`"), "{msg}");
        assert!(msg.contains("flush_interval"), "{msg}");
    }

    #[test]
    fn a_negative_buffer_size_names_its_line() {
        let (line, col, msg) = invalid("log_level = \"info\"\n[buffer]\nsize = -5\n");
        assert_eq!((line, col), (3, 8));
        assert!(msg.contains("at least 1"), "{msg}");
    }

    #[test]
    fn an_unparsable_duration_names_its_line() {
        let (line, _, msg) = invalid("[buffer]\nflush_interval = \"five seconds\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn a_bad_size_unit_and_a_bad_pointer_are_refused() {
        let (line, _, msg) = invalid("[output]\nmax_file_bytes = \"64 parsecs\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("size unit"), "{msg}");
        let (line, _, msg) = invalid("[input.fields]\nprompt = [\"prompt\"]\n");
        assert_eq!(line, 2);
        assert!(msg.contains("JSON Pointer"), "{msg}");
    }

    #[test]
    fn a_size_of_the_wrong_type_says_what_a_size_is() {
        for bad in ["1.5", "true"] {
            let (line, col, msg) = invalid(&format!("[input]\nmax_line_bytes = {bad}\n"));
            assert_eq!((line, col), (2, 18), "{bad}");
            assert!(
                msg.contains("expected a size: a whole number of bytes or a string like \"64MiB\""),
                "{bad}: {msg}"
            );
            assert!(!msg.contains("untagged"), "{bad}: {msg}");
        }
        let (_, _, msg) = invalid("[spool]\nmax_file_bytes = 0\n");
        assert!(msg.contains("at least 1 byte"), "{msg}");
        let (_, _, msg) = invalid("[spool]\nmax_file_bytes = -4\n");
        assert!(
            msg.contains("invalid size -4: must be at least 1 byte"),
            "{msg}"
        );
        let cfg = parse("[input]\nread_budget = 4096\n").unwrap();
        assert_eq!(cfg.input.read_budget, ByteSize(4096));
    }

    #[test]
    fn close_deleted_after_defaults_to_a_minute_and_is_never_zero() {
        assert_eq!(
            Config::default().input.close_deleted_after,
            PositiveDuration(Duration::from_secs(60))
        );
        let cfg = parse("[input]\nclose_deleted_after = \"10m\"\n").expect("a duration");
        assert_eq!(cfg.input.close_deleted_after.0, Duration::from_secs(600));
        let (line, col, msg) = invalid("[input]\nclose_deleted_after = \"0s\"\n");
        assert_eq!((line, col), (2, 23), "{msg}");
        assert!(msg.contains("zero duration"), "{msg}");
        let (line, col, _) = invalid("[input]\nclose_deleted_after = \"soon\"\n");
        assert_eq!((line, col), (2, 23));
    }

    #[test]
    fn ignore_older_is_off_unless_given_and_never_zero() {
        assert_eq!(Config::default().input.ignore_older, None);
        let cfg = parse("[input]\nignore_older = \"7d\"\n").expect("a duration");
        assert_eq!(
            cfg.input.ignore_older,
            Some(NonZeroDuration(Duration::from_secs(7 * 86400)))
        );
        let (line, col, msg) = invalid("[input]\nignore_older = \"0s\"\n");
        assert_eq!((line, col), (2, 16), "{msg}");
        assert!(msg.contains("leave the key out"), "{msg}");
    }

    #[test]
    fn rotated_dirs_stay_relative_to_each_log_and_are_never_empty() {
        assert!(Config::default().input.rotated_dirs.is_empty());
        let text = "[input]\nrotated_dirs = [\"old\", \"/var/log/archive\"]\n";
        let cfg = Config::parse(text, "c.toml", Path::new("/etc/tc")).expect("valid");
        // Not resolved against the config's directory: logrotate reads olddir against the
        // log's.
        assert_eq!(
            cfg.input.rotated_dirs,
            [PathBuf::from("old"), PathBuf::from("/var/log/archive")]
        );
        let (line, col, msg) = invalid("[input]\nrotated_dirs = [\"old\", \"\"]\n");
        assert_eq!((line, col), (2, 24), "{msg}");
        assert!(msg.contains("empty path"), "{msg}");
    }

    #[test]
    fn max_open_files_is_a_positive_number_or_auto() {
        for bad in ["0", "-3", "\"lots\"", "1.5"] {
            let (line, col, msg) = invalid(&format!("[input]\nmax_open_files = {bad}\n"));
            assert_eq!((line, col), (2, 18), "{bad}");
            assert!(msg.contains("at least 1, or \"auto\""), "{bad}: {msg}");
        }
        let cfg = parse("[input]\nmax_open_files = 40\n").expect("a number");
        assert_eq!(cfg.input.max_open_files, OpenFiles::Max(40));
        let cfg = parse("[input]\nmax_open_files = \"auto\"\n").expect("auto");
        assert_eq!(cfg.input.max_open_files, OpenFiles::Auto);
        assert_eq!(Config::default().input.max_open_files, OpenFiles::Auto);
    }

    #[test]
    fn semantic_errors_point_at_their_key() {
        let (line, _, msg) = invalid("[export]\n\nformat = \"csv\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("unknown format \"csv\""), "{msg}");
        let (line, _, msg) = invalid("[input]\npaths = []\n");
        assert_eq!(line, 2);
        assert!(msg.contains("input.paths is empty"), "{msg}");
    }

    #[test]
    fn export_choices_are_typed_at_load_and_render_by_name() {
        let text = "[export]\nformat = \"kto\"\nmin_quality = \"high\"\nsplit_by = \"user\"\n";
        let cfg = parse(text).unwrap();
        assert_eq!(cfg.export.format, Format::Kto);
        assert_eq!(cfg.export.min_quality, Relevance::High);
        assert_eq!(cfg.export.split_by, SplitBy::User);
        let rendered = cfg.to_toml();
        assert!(rendered.contains("format = \"kto\""), "{rendered}");
        assert!(rendered.contains("split_by = \"user\""), "{rendered}");
        assert_eq!(
            Config::parse(&rendered, "again", Path::new("/")).unwrap(),
            cfg
        );
        let (line, col, msg) = invalid("[export]\nsplit_by = \"users\"\n");
        assert_eq!((line, col), (2, 12));
        assert!(msg.contains("unknown split_by \"users\""), "{msg}");
    }

    #[test]
    fn export_bounds_are_checked_at_their_key() {
        let (line, col, msg) = invalid("[export]\nmin_prompt_chars = 10\nmax_prompt_chars = 5\n");
        assert_eq!((line, col), (3, 20));
        assert!(msg.contains("below export.min_prompt_chars (10)"), "{msg}");
        let (line, _, msg) = invalid("[export]\nmax_response_chars = 19\n");
        assert_eq!(line, 2);
        assert!(
            msg.contains("below export.min_response_chars (20)"),
            "{msg}"
        );
        let (line, _, msg) = invalid("[export]\n\nmin_score = 1.2\n");
        assert_eq!(line, 3);
        assert!(
            msg.contains("export.min_score must be from 0 to 1"),
            "{msg}"
        );
        let cfg =
            parse("[export]\nmax_prompt_chars = 10\nmax_response_chars = 0\nmin_score = 1.0\n");
        assert_eq!(cfg.unwrap().export.max_prompt_chars, 10);
    }

    #[test]
    fn a_pii_pattern_that_matches_nothing_at_all_is_refused_at_its_position() {
        for bad in ["x*", "", "(foo)?"] {
            let (line, col, msg) = invalid(&format!(
                "[export]\npii_patterns = [\"ssn-\\\\d+\", {bad:?}]\n"
            ));
            assert_eq!((line, col), (2, 29), "{bad}: {msg}");
            assert!(
                msg.contains(&format!(
                    "export.pii_patterns[1] {bad:?} matches the empty string"
                )),
                "{bad}: {msg}"
            );
        }
        let cfg = parse("[export]\npii_patterns = [\"x+\"]\n").unwrap();
        assert_eq!(cfg.export.pii_patterns.len(), 1);
    }

    #[test]
    fn log_level_is_a_level_or_a_directive_list_never_a_bare_word() {
        for good in [
            "trace",
            "debug",
            "info",
            "warn",
            "error",
            "off",
            "INFO",
            "training_collector=debug,info",
            "warn,training_collector::daemon=trace",
        ] {
            let cfg =
                parse(&format!("log_level = {good:?}\n")).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(cfg.log_level, good);
        }
        for bad in [
            "warning",
            "verbose",
            "",
            " ",
            "info,warning",
            "training_collector=loud",
        ] {
            let (line, col, msg) = invalid(&format!("\nlog_level = {bad:?}\n"));
            assert_eq!((line, col), (2, 13), "{bad}: {msg}");
            assert!(
                msg.contains("trace, debug, info, warn, error or off"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn near_dup_threshold_is_0_for_off_to_1() {
        for bad in ["-0.1", "1.5", "nan"] {
            let (line, col, msg) = invalid(&format!("[export]\nnear_dup_threshold = {bad}\n"));
            assert_eq!((line, col), (2, 22), "{bad}");
            assert!(msg.contains("must be 0 (off) to 1"), "{bad}: {msg}");
        }
        for good in [0.0, 0.5, 1.0] {
            let cfg = parse(&format!("[export]\nnear_dup_threshold = {good:?}\n")).unwrap();
            assert_eq!(cfg.export.near_dup_threshold, good);
        }
    }

    #[test]
    fn empty_paths_and_program_names_are_refused() {
        for (text, key, pos) in [
            ("data_dir = \"\"\n", "data_dir is empty", (1, 12)),
            ("[spool]\ndir = \"\"\n", "spool.dir is empty", (2, 7)),
            (
                "[export]\noutput = \"\"\n",
                "export.output is empty",
                (2, 10),
            ),
            (
                "[input]\npaths = [\"logs/*.jsonl\", \"\"]\n",
                "input.paths[1] is empty",
                (2, 26),
            ),
            (
                "[training]\nsync_command = [\"\", \"x\"]\n",
                "training.sync_command starts with an empty program name",
                (2, 17),
            ),
            (
                "[training]\ntrain_command = [\" \"]\n",
                "training.train_command starts with an empty program name",
                (2, 18),
            ),
        ] {
            let (line, col, msg) = invalid(text);
            assert!(msg.contains(key), "{text}: {msg}");
            assert_eq!((line, col), pos, "{text}: {msg}");
        }
    }

    #[test]
    fn the_spool_folder_is_neither_the_data_folder_nor_a_log_folder() {
        let clash = [
            // The data folder itself, inside it, around it.
            (
                "data_dir = \"d\"\n[spool]\ndir = \"d\"\n",
                "is data_dir",
                (3, 7),
            ),
            (
                "data_dir = \"d\"\n[spool]\ndir = \"./d/spool\"\n",
                "is inside data_dir",
                (3, 7),
            ),
            (
                "data_dir = \"d/data\"\n[spool]\ndir = \"d\"\n",
                "contains data_dir",
                (3, 7),
            ),
            // Not set in the file: the error is at the key that clashes with the default.
            ("data_dir = \"spool\"\n", "is data_dir", (1, 12)),
            // Log folders: the glob's folder, one above it, one its wildcards reach.
            ("[spool]\ndir = \"logs\"\n", "input.paths[0]", (2, 7)),
            (
                "data_dir = \"/d\"\n[spool]\ndir = \"/base\"\n",
                "input.paths[0]",
                (3, 7),
            ),
            (
                "[input]\npaths = [\"x/*.log\", \"spool/*.jsonl\"]\n",
                "input.paths[1]",
                (2, 21),
            ),
            (
                "[input]\npaths = [\"*/*.jsonl\"]\n",
                "input.paths[0]",
                (2, 10),
            ),
            (
                "[input]\npaths = [\"**/*.jsonl\"]\n",
                "input.paths[0]",
                (2, 10),
            ),
            (
                "[input]\npaths = [\"/base/sp*/a.log\"]\n",
                "input.paths[0]",
                (2, 10),
            ),
            (
                "[input]\npaths = [\"spool/in/*.log\"]\n",
                "input.paths[0]",
                (2, 10),
            ),
            // "" is the config's folder: refused as empty before anything else.
            ("[spool]\ndir = \"\"\n", "spool.dir is empty", (2, 7)),
        ];
        for (text, what, pos) in clash {
            let (line, col, msg) = invalid(text);
            assert!(msg.contains(what), "{text}: {msg}");
            assert!(msg.contains("spool.dir"), "{text}: {msg}");
            assert_eq!((line, col), pos, "{text}: {msg}");
        }
        let (_, _, msg) = invalid("data_dir = \"d\"\n[spool]\ndir = \"d\"\n");
        assert!(
            msg.contains("spool.dir /base/d is data_dir (/base/d)"),
            "{msg}"
        );
        // Neighbours, and globs whose wildcards cannot reach the spool folder.
        for fine in [
            "",
            "[spool]\ndir = \"/var/spool/tc\"\n",
            "[spool]\ndir = \"logs-spool\"\n",
            "data_dir = \"spool-data\"\n",
            "[input]\npaths = [\"logs/**/*.jsonl\", \"/base/*/app/*.log\", \"sp?ol\"]\n",
            "[spool]\ndir = \"logs/.spool/x\"\n[input]\npaths = [\"logs/*/*.jsonl\"]\n",
        ] {
            parse(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }

    #[test]
    fn the_effective_config_renders_and_reparses() {
        let cfg = parse("[buffer]\nsize = 9\n").unwrap();
        let again = Config::parse(&cfg.to_toml(), "again", Path::new("/")).unwrap();
        assert_eq!(again, cfg);
    }
}
