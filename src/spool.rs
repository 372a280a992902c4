//! The spool directory: how other processes hand events to the daemon without a network
//! API. A writer creates a file under `spool/tmp/` and renames it into `spool/` (so the daemon
//! never sees half a file); each line is one JSON event with a `type`.
//!
//! The daemon scans the spool, parses every file line by line ([`scan`]), applies the good
//! events, fsyncs them into data_dir, and only then retires the file ([`retire`]): deleted,
//! or moved to `spool/done/`. A file with bad lines is moved to `spool/rejected/` beside a
//! `.error` file naming each bad line and why, while its good lines are still applied.
//! Symlinks, non-regular files and files over the size limit are refused whole.
//!
//! A writer that ignores the rename and writes in place is not cut off mid-file: a file is
//! read only once nothing has changed it for `spool.min_age` ([`Settling`]), and it is retired
//! only if it is still what was read ([`FileStamp`]); one that grew meanwhile is read again.
//! Its bad lines are recorded as rejected only then, for a file still as it was read. A file
//! whose last line is unfinished is not read at all until that line is finished (or the file
//! has been left so for [`UNFINISHED_LINE_GRACE`]).
//!
//! A file left in `tmp/` for an hour ([`stale_tmp_files`]) was abandoned by a writer that died
//! before its rename; the daemon reports it and leaves it for the operator.
//!
//! Each event carries an identity (its `event_id`, else a hash of the line) from which the
//! daemon derives every id it writes, so a file delivered twice, or re-read after a crash
//! before it was retired, yields the same records again and is counted once.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Spool I/O failures (bad content is not an error: it is reported per line).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One event, as a line of a spool file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpoolEvent {
    /// Thumbs up/down on an example id or the service's request id.
    Feedback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// Example id (`train_...`) or request id.
        id: String,
        feedback: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
    /// A human correction (seed `record_correction`).
    Correction {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        original_prompt: String,
        original_response: String,
        corrected_response: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        corrector: Option<String>,
        /// The original's example id or request id, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
    /// A chat interaction (seed `capture`).
    Capture {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        prompt: String,
        response: String,
        #[serde(flatten)]
        common: CaptureCommon,
    },
    /// Seed `capture_calculation`.
    Calculation {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        description: String,
        #[serde(default)]
        inputs: Map<String, Value>,
        formula: String,
        result: Value,
        explanation: String,
        #[serde(default = "yes")]
        verified: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
    /// Seed `capture_spec_qa`.
    SpecQa {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        spec_section: String,
        question: String,
        answer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quote: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
    /// Seed `capture_document`.
    Document {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        doc_type: String,
        prompt: String,
        generated_doc: String,
        #[serde(default = "yes")]
        was_used: bool,
        #[serde(default = "none_str")]
        modifications: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
}

fn yes() -> bool {
    true
}

fn none_str() -> String {
    "none".into()
}

/// The optional `capture` fields of the seed's `capture()` signature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureCommon {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl SpoolEvent {
    fn event_id(&self) -> Option<&str> {
        match self {
            SpoolEvent::Feedback { event_id, .. }
            | SpoolEvent::Correction { event_id, .. }
            | SpoolEvent::Capture { event_id, .. }
            | SpoolEvent::Calculation { event_id, .. }
            | SpoolEvent::SpecQa { event_id, .. }
            | SpoolEvent::Document { event_id, .. } => event_id.as_deref(),
        }
    }

    /// The event's own `timestamp`, when it has one.
    pub fn timestamp(&self) -> Option<&str> {
        match self {
            SpoolEvent::Feedback { timestamp, .. }
            | SpoolEvent::Correction { timestamp, .. }
            | SpoolEvent::Calculation { timestamp, .. }
            | SpoolEvent::SpecQa { timestamp, .. }
            | SpoolEvent::Document { timestamp, .. } => timestamp.as_deref(),
            SpoolEvent::Capture { common, .. } => common.timestamp.as_deref(),
        }
    }
}

/// A parsed event with its identity and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolItem {
    /// `event_id` when the writer gave one, else a hash of the line's bytes.
    pub identity: String,
    pub line_number: u64,
    pub event: SpoolEvent,
}

/// One spool file, read and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolFile {
    pub path: PathBuf,
    pub items: Vec<SpoolItem>,
    /// Lines that could not be used: (1-based line number, reason, raw line).
    pub bad_lines: Vec<(u64, String, String)>,
    /// Set when the whole file is refused (symlink, not a regular file, too large).
    pub refused: Option<String>,
    /// The file as it was read (`None` for files made up in tests).
    pub stamp: Option<FileStamp>,
}

impl SpoolFile {
    /// Whether the file on disk is known to differ from what was read (written to or
    /// replaced since). A file that cannot be looked at is not known to have changed.
    pub fn changed_since_read(&self) -> bool {
        self.stamp.is_some_and(|stamp| {
            fs::symlink_metadata(&self.path).is_ok_and(|meta| FileStamp::of(&meta) != stamp)
        })
    }
}

/// What a spool file looked like: if it differs later, something wrote to it or replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: SystemTime,
}

impl FileStamp {
    /// When the file was last written: for a file renamed into the spool, when its writer
    /// wrote it.
    pub fn modified(&self) -> SystemTime {
        self.modified
    }

    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// Tells which spool files have settled: unchanged for `min_age`. A file's mtime says so
/// at once for most; a file whose mtime lies in the future (a clock set wrong, a copy that
/// kept its times) is watched instead, and taken once it has not changed for `min_age` by
/// this process's clock.
#[derive(Debug, Default)]
pub struct Settling {
    young: HashMap<PathBuf, (FileStamp, Instant)>,
    /// Files found ending in an unfinished line, as they were then (see
    /// [`UNFINISHED_LINE_GRACE`]): not read again while they stay so.
    unfinished: HashMap<PathBuf, FileStamp>,
    /// Files whose metadata could not be read, already reported.
    unstatable: HashSet<PathBuf>,
}

/// Spool files whose events are durable but which could not be retired (a sticky spool
/// directory and another user's file, a read-only file system): while a file is unchanged
/// it is not read again, since each read would apply its events again at every durable
/// point (its captures written once more, its feedback given again); the daemon tries to
/// retire it again at each durable point. Kept in memory: after a restart such a file is
/// read once more, a repeat its events' deterministic ids make the export and `stats` count
/// once.
#[derive(Debug, Default)]
pub struct Unretired {
    files: HashMap<PathBuf, SpoolFile>,
}

impl Unretired {
    /// Holds `file`, whose events are applied; true the first time (to report it).
    pub fn insert(&mut self, file: SpoolFile) -> bool {
        self.files.insert(file.path.clone(), file).is_none()
    }

    /// Takes every file held, to try to retire them again.
    pub fn take(&mut self) -> Vec<SpoolFile> {
        self.files.drain().map(|(_, f)| f).collect()
    }

    /// Whether `path` is a held file still as it was read (else it is forgotten, and read
    /// again as new).
    fn unchanged(&mut self, path: &Path, stamp: FileStamp) -> bool {
        match self.files.get(path) {
            Some(f) if f.stamp == Some(stamp) => true,
            Some(_) => {
                self.files.remove(path);
                false
            }
            None => false,
        }
    }

    /// How many files are held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Settling {
    fn settled(&mut self, path: &Path, stamp: FileStamp, min_age: Duration, now: Instant) -> bool {
        if min_age.is_zero() {
            return true;
        }
        let age = SystemTime::now().duration_since(stamp.modified);
        if age.is_ok_and(|age| age >= min_age) {
            self.young.remove(path);
            return true;
        }
        let (seen, since) = self.young.entry(path.to_path_buf()).or_insert((stamp, now));
        if *seen != stamp {
            (*seen, *since) = (stamp, now);
        }
        now.duration_since(*since) >= min_age
    }
}

/// Lists and parses the spool files ready in `dir` (oldest name first), at most `limit`,
/// leaving out those in `skip` (read already, waiting to be retired) and those changed less
/// than `min_age` ago (a writer may be at them).
pub fn scan(
    dir: &Path,
    max_file_bytes: u64,
    min_age: Duration,
    limit: usize,
    skip: &HashSet<PathBuf>,
    settling: &mut Settling,
    unretired: &mut Unretired,
) -> Result<Vec<SpoolFile>, SpoolError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| !skip.contains(p))
        .filter(|p| {
            // Dot-files are writers' temporaries; `.error` files are reports. A name that is
            // not UTF-8 is a spool file like any other.
            use std::os::unix::ffi::OsStrExt;
            p.file_name().is_some_and(|n| {
                let n = n.as_bytes();
                !n.starts_with(b".") && !n.ends_with(b".error")
            })
        })
        .collect();
    names.sort();
    // Forget files that are gone (retired, or renamed away by their writer).
    settling.young.retain(|p, _| names.binary_search(p).is_ok());
    settling
        .unfinished
        .retain(|p, _| names.binary_search(p).is_ok());
    settling
        .unstatable
        .retain(|p| names.binary_search(p).is_ok());
    unretired
        .files
        .retain(|p, _| names.binary_search(p).is_ok());
    let mut out = Vec::new();
    for path in names {
        if out.len() >= limit {
            break;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                // One file that cannot be looked at must not hold up the others: it is
                // skipped (and reported once) until it can be.
                if settling.unstatable.insert(path.clone()) {
                    tracing::warn!("spool file {} skipped: {e}", path.display());
                }
                continue;
            }
        };
        settling.unstatable.remove(&path);
        if meta.is_dir() {
            // tmp/, done/, rejected/ and any other folder are not spool files.
            continue;
        }
        let stamp = FileStamp::of(&meta);
        if unretired.unchanged(&path, stamp) {
            continue;
        }
        if !settling.settled(&path, stamp, min_age, Instant::now()) {
            continue;
        }
        let refuse = |why: String| SpoolFile {
            path: path.clone(),
            items: Vec::new(),
            bad_lines: Vec::new(),
            refused: Some(why),
            stamp: Some(stamp),
        };
        if meta.file_type().is_symlink() {
            out.push(refuse(
                "refused: a symlink (spool files must be regular files)".into(),
            ));
            continue;
        }
        if !meta.is_file() {
            out.push(refuse("refused: not a regular file".into()));
            continue;
        }
        if meta.len() > max_file_bytes {
            out.push(refuse(format!(
                "refused: {} bytes is over spool.max_file_bytes ({max_file_bytes})",
                meta.len()
            )));
            continue;
        }
        if settling.unfinished.get(&path) == Some(&stamp)
            && modified_within(stamp, UNFINISHED_LINE_GRACE)
        {
            continue;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // Unreadable (another user's file, mode 0600): refused whole, so it goes to
            // rejected/ with the reason rather than stopping every other file behind it.
            Err(e) => {
                out.push(refuse(format!("refused: cannot read it: {e}")));
                continue;
            }
        };
        if ends_in_unfinished_line(&bytes) && modified_within(stamp, UNFINISHED_LINE_GRACE) {
            settling.unfinished.insert(path, stamp);
            continue;
        }
        settling.unfinished.remove(&path);
        let mut file = parse_file(path, &bytes);
        // A stamp taken before the read: a write racing the read shows as a change.
        file.stamp = Some(stamp);
        out.push(file);
    }
    Ok(out)
}

/// A file whose last line has no newline and is not JSON (yet) is a writer that writes in
/// place caught mid-line, however long it paused: it is read once that line is finished,
/// or once the file has been left so this long (its writer died: the line is rejected and
/// the rest applied). Read at once, the file would be retired into `rejected/` at the next
/// durable point, and the writer would go on writing its next lines into it there.
pub const UNFINISHED_LINE_GRACE: Duration = Duration::from_secs(60);

/// Whether `bytes` end in a line cut short: no newline after it, and not JSON.
fn ends_in_unfinished_line(bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return false;
    }
    let start = memchr::memrchr(b'\n', bytes).map_or(0, |i| i + 1);
    let mut last = &bytes[start..];
    if start == 0 {
        last = last.strip_prefix(crate::mapping::UTF8_BOM).unwrap_or(last);
    }
    let last = last.strip_suffix(b"\r").unwrap_or(last);
    !last.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<serde::de::IgnoredAny>(last).is_err()
}

/// Whether the file was last written less than `within` ago (a time in the future is not:
/// such a file is judged by what it holds).
fn modified_within(stamp: FileStamp, within: Duration) -> bool {
    SystemTime::now()
        .duration_since(stamp.modified)
        .is_ok_and(|age| age < within)
}

/// A file left in `spool/tmp/` unchanged this long was abandoned by its writer (which crashed
/// before its rename): a writer takes seconds, not an hour. Its events never arrive.
pub const STALE_TMP_AFTER: Duration = Duration::from_secs(3600);

/// The files in `dir/tmp/` not modified for [`STALE_TMP_AFTER`] at `now`, with their age,
/// sorted by name. They are left where they are (their events may be worth delivering by
/// hand; the operator decides), but the daemon reports them.
pub fn stale_tmp_files(dir: &Path, now: SystemTime) -> Vec<(PathBuf, Duration)> {
    let Ok(entries) = fs::read_dir(dir.join("tmp")) else {
        return Vec::new();
    };
    let mut stale: Vec<(PathBuf, Duration)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            let age = now.duration_since(meta.modified().ok()?).ok()?;
            (age >= STALE_TMP_AFTER).then(|| (e.path(), age))
        })
        .collect();
    stale.sort();
    stale
}

/// Parses one spool file's bytes into events and bad lines.
pub fn parse_file(path: PathBuf, bytes: &[u8]) -> SpoolFile {
    let mut items = Vec::new();
    let mut bad_lines = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_number = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // A byte order mark starting the file is not part of its first event.
        let raw = if i == 0 {
            raw.strip_prefix(crate::mapping::UTF8_BOM).unwrap_or(raw)
        } else {
            raw
        };
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) => {
                bad_lines.push((
                    line_number,
                    "not valid UTF-8".into(),
                    String::from_utf8_lossy(raw).into_owned(),
                ));
                continue;
            }
        };
        match parse_line(text) {
            Ok(event) => {
                let identity = event
                    .event_id()
                    .map(str::to_string)
                    .unwrap_or_else(|| hash_hex(raw));
                items.push(SpoolItem {
                    identity,
                    line_number,
                    event,
                });
            }
            Err(reason) => bad_lines.push((line_number, reason, text.to_string())),
        }
    }
    SpoolFile {
        path,
        items,
        bad_lines,
        refused: None,
        stamp: None,
    }
}

/// Parses and validates one line, with a reason a writer can act on.
pub fn parse_line(text: &str) -> Result<SpoolEvent, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(kind) = value.get("type").cloned() else {
        return Err(
            "missing \"type\" (feedback, correction, capture, calculation, spec_qa or document)"
                .into(),
        );
    };
    let known = [
        "feedback",
        "correction",
        "capture",
        "calculation",
        "spec_qa",
        "document",
    ];
    if !kind.as_str().is_some_and(|k| known.contains(&k)) {
        return Err(format!(
            "unknown type {kind}: expected one of feedback, correction, capture, calculation, spec_qa, document"
        ));
    }
    let event: SpoolEvent =
        serde_json::from_value(value).map_err(|e| format!("invalid {kind} event: {e}"))?;
    if let SpoolEvent::Feedback { id, feedback, .. } = &event {
        if id.trim().is_empty() {
            return Err("invalid feedback event: empty id".into());
        }
        crate::mapping::parse_feedback(feedback)?;
    }
    // A time that cannot be read is an error, not "now": feedback is ranked by its time (the
    // latest wins), and a silently replaced one could outrank feedback given after it.
    if let Some(t) = event.timestamp() {
        if crate::mapping::parse_timestamp(&Value::String(t.to_string())).is_none() {
            return Err(format!(
                "invalid {kind} event: timestamp {t:?} is not a date and time (RFC 3339, e.g. \"2026-11-29T13:40:00Z\")"
            ));
        }
    }
    Ok(event)
}

fn hash_hex(bytes: &[u8]) -> String {
    let d = Md5::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What became of a spool file at [`retire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// Deleted, or moved to `done/` or `rejected/`.
    Retired,
    /// Left in place: it changed after it was read, so it is to be read again.
    ChangedSinceRead,
}

/// Retires a spool file whose good events are durable in data_dir: deleted, or moved to
/// `done/` with `keep_processed`; a file with bad lines or refused whole goes to
/// `rejected/` with a `.error` file listing each problem. A file that changed since it was
/// read is left where it is.
pub fn retire(
    dir: &Path,
    file: &SpoolFile,
    keep_processed: bool,
) -> Result<Retirement, SpoolError> {
    if let Some(stamp) = file.stamp {
        match fs::symlink_metadata(&file.path) {
            Ok(meta) if FileStamp::of(&meta) == stamp => {}
            Ok(_) => return Ok(Retirement::ChangedSinceRead),
            Err(e) => return Err(io(&file.path)(e)),
        }
    }
    let name = file
        .path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("unnamed"));
    if file.refused.is_some() || !file.bad_lines.is_empty() {
        let rejected = dir.join("rejected");
        fs::create_dir_all(&rejected).map_err(io(&rejected))?;
        let mut report = String::new();
        if let Some(why) = &file.refused {
            report.push_str(&format!("{}: {why}\n", name.display()));
        }
        for (line, reason, _) in &file.bad_lines {
            report.push_str(&format!("{}:{line}: {reason}\n", name.display()));
        }
        // The report is named after the file's own place in rejected/ (`x.jsonl.1.error` for
        // a second `x.jsonl`), so a later file of the same name cannot overwrite it.
        let target = unique(&rejected.join(&name));
        let mut error_path = target.clone().into_os_string();
        error_path.push(".error");
        let error_path = PathBuf::from(error_path);
        write_durably(&error_path, report.as_bytes())?;
        fs::rename(&file.path, &target).map_err(io(&file.path))?;
        sync_dir(&rejected)?;
    } else if keep_processed {
        let done = dir.join("done");
        fs::create_dir_all(&done).map_err(io(&done))?;
        let target = unique(&done.join(&name));
        fs::rename(&file.path, &target).map_err(io(&file.path))?;
        sync_dir(&done)?;
    } else {
        fs::remove_file(&file.path).map_err(io(&file.path))?;
    }
    sync_dir(dir)?;
    Ok(Retirement::Retired)
}

/// A path that does not exist yet: `name`, else `name.1`, `name.2`, ...
fn unique(path: &Path) -> PathBuf {
    let with_suffix = |suffix: &str| {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    if !path.exists() && !with_suffix(".error").exists() {
        return path.to_path_buf();
    }
    (1..)
        .map(|i| with_suffix(&format!(".{i}")))
        .find(|p| {
            let mut report = p.as_os_str().to_os_string();
            report.push(".error");
            !p.exists() && !Path::new(&report).exists()
        })
        .unwrap_or_else(|| path.to_path_buf())
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes events as one spool file the safe way: into `tmp/`, fsynced, then renamed into the
/// spool. Returns the file's final path. This is what `feedback` and `correct` do; any
/// program can do the same.
pub fn write_events(dir: &Path, events: &[SpoolEvent]) -> Result<PathBuf, SpoolError> {
    let tmp_dir = make_tmp_dir(dir)?;
    let mut body = String::new();
    for e in events {
        body.push_str(&serde_json::to_string(e).expect("spool events serialize"));
        body.push('\n');
    }
    let name = format!(
        "{}-{}-{}.jsonl",
        crate::clock::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id(),
        &hash_hex(body.as_bytes())[..8]
    );
    let tmp = tmp_dir.join(&name);
    write_durably(&tmp, body.as_bytes())?;
    let target = dir.join(&name);
    fs::rename(&tmp, &target).map_err(io(&tmp))?;
    sync_dir(dir)?;
    Ok(target)
}

/// `dir/tmp/`, made if missing with the spool's own permission bits rather than the
/// creator's umask: the spool is shared (its writers' group, `chmod 2775`), and a `tmp/`
/// made 0755 by whoever wrote first (an operator trying `feedback` as root) would lock
/// every other writer out of it.
fn make_tmp_dir(dir: &Path) -> Result<PathBuf, SpoolError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp_dir = dir.join("tmp");
    if tmp_dir.is_dir() {
        return Ok(tmp_dir);
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    match fs::create_dir(&tmp_dir) {
        Ok(()) => {
            let mode = fs::metadata(dir).map_err(io(dir))?.permissions().mode() & 0o7777;
            fs::set_permissions(&tmp_dir, fs::Permissions::from_mode(mode))
                .map_err(io(&tmp_dir))?;
        }
        // Another writer made it meanwhile, with these same bits.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&tmp_dir)(e)),
    }
    Ok(tmp_dir)
}

/// A fresh event id for a CLI-written event: unique per invocation, and kept in the file so
/// a re-delivered copy is recognised.
pub fn new_event_id() -> String {
    let nanos = crate::clock::now()
        .timestamp_nanos_opt()
        .unwrap_or_default();
    let seed = format!(
        "{nanos}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    format!("evt_{}", &hash_hex(seed.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feedback(id: &str, value: &str) -> SpoolEvent {
        SpoolEvent::Feedback {
            event_id: Some(new_event_id()),
            id: id.into(),
            feedback: Value::from(value),
            comment: None,
            user: None,
            timestamp: None,
        }
    }

    /// A last line cut short (no newline, not JSON) is unfinished; a finished one, a
    /// whole JSON line without its newline, or blank space, is not.
    #[test]
    fn an_unfinished_last_line_is_told_from_a_finished_one() {
        let line = r#"{"type":"feedback","id":"r1","feedback":"positive"}"#;
        for (bytes, unfinished) in [
            (format!("{line}\n{}", &line[..20]), true),
            (line[..1].to_string(), true),
            (format!("{line}\n"), false),
            (format!("{line}\n{line}"), false),
            (format!("\u{feff}{line}"), false),
            (format!("{line}\r\n  "), false),
            (String::new(), false),
            ("not json at all\n".to_string(), false),
        ] {
            assert_eq!(
                ends_in_unfinished_line(bytes.as_bytes()),
                unfinished,
                "{bytes:?}"
            );
        }
        // Cut inside a multi-byte character.
        let cut = format!("{line}\n{{\"type\":\"feedback\",\"comment\":\"é");
        assert!(ends_in_unfinished_line(&cut.as_bytes()[..cut.len() - 1]));
    }

    #[test]
    fn written_files_scan_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_events(dir.path(), &[feedback("req-1", "positive")]).unwrap();
        assert!(p.starts_with(dir.path()));
        let files = scan(
            dir.path(),
            1 << 20,
            Duration::ZERO,
            100,
            &Default::default(),
            &mut Settling::default(),
            &mut Unretired::default(),
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].items.len(), 1);
        assert!(files[0].bad_lines.is_empty());
        retire(dir.path(), &files[0], false).unwrap();
        assert!(scan(
            dir.path(),
            1 << 20,
            Duration::ZERO,
            100,
            &Default::default(),
            &mut Settling::default(),
            &mut Unretired::default()
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn a_byte_order_mark_starting_a_file_is_not_part_of_its_first_event() {
        let line = "{\"type\":\"feedback\",\"id\":\"req-1\",\"feedback\":\"positive\"}";
        let plain = parse_file(
            PathBuf::from("a.jsonl"),
            format!("{line}\n{line}\n").as_bytes(),
        );
        let marked = parse_file(
            PathBuf::from("b.jsonl"),
            format!("\u{feff}{line}\n{line}\n").as_bytes(),
        );
        assert!(marked.bad_lines.is_empty(), "{:?}", marked.bad_lines);
        assert_eq!(marked.items, plain.items);
        // Anywhere else it is a bad line, as before.
        let later = parse_file(
            PathBuf::from("c.jsonl"),
            format!("{line}\n\u{feff}{line}\n").as_bytes(),
        );
        assert_eq!(later.items.len(), 1);
        assert_eq!(later.bad_lines.len(), 1);
    }

    #[test]
    fn bad_lines_are_reported_and_good_ones_kept() {
        let text = concat!(
            "{\"type\":\"feedback\",\"id\":\"req-1\",\"feedback\":\"positive\"}\n",
            "{not json\n",
            "{\"type\":\"vote\",\"id\":\"x\"}\n",
            "{\"type\":\"feedback\",\"feedback\":\"positive\"}\n",
            "{\"type\":\"feedback\",\"id\":\"req-2\",\"feedback\":\"maybe\"}\n",
            "{\"type\":\"correction\",\"original_prompt\":\"p\",\"original_response\":\"r\",\"corrected_response\":\"c\"}\n",
        );
        let f = parse_file(PathBuf::from("x.jsonl"), text.as_bytes());
        assert_eq!(f.items.len(), 2);
        let reasons: Vec<(u64, &str)> = f
            .bad_lines
            .iter()
            .map(|(l, r, _)| (*l, r.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4);
        assert!(reasons[0].1.starts_with("not valid JSON"), "{reasons:?}");
        assert!(reasons[1].1.starts_with("unknown type"), "{reasons:?}");
        assert!(reasons[2].1.contains("missing field `id`"), "{reasons:?}");
        assert!(
            reasons[3].1.contains("invalid feedback value"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
    }

    #[test]
    fn identity_is_the_event_id_or_the_line_hash() {
        let a = parse_file(
            PathBuf::from("a"),
            b"{\"type\":\"feedback\",\"id\":\"r\",\"feedback\":\"positive\"}\n",
        );
        let b = parse_file(
            PathBuf::from("b"),
            b"{\"type\":\"feedback\",\"id\":\"r\",\"feedback\":\"positive\"}\n",
        );
        assert_eq!(a.items[0].identity, b.items[0].identity);
        let c = parse_file(
            PathBuf::from("c"),
            b"{\"type\":\"feedback\",\"event_id\":\"e1\",\"id\":\"r\",\"feedback\":\"positive\"}\n",
        );
        assert_eq!(c.items[0].identity, "e1");
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn scan_with(dir: &Path, min_age: Duration, settling: &mut Settling) -> Vec<SpoolFile> {
        scan(
            dir,
            1 << 20,
            min_age,
            100,
            &HashSet::new(),
            settling,
            &mut Unretired::default(),
        )
        .unwrap()
    }

    const LINE: &str = "{\"type\":\"feedback\",\"id\":\"r\",\"feedback\":\"positive\"}\n";

    #[test]
    fn a_file_is_read_only_once_nothing_has_changed_it_for_min_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut settling = Settling::default();
        let min_age = Duration::from_secs(60);
        fs::write(&path, LINE).unwrap();
        assert!(scan_with(dir.path(), min_age, &mut settling).is_empty());
        // Zero reads at once.
        assert_eq!(
            scan_with(dir.path(), Duration::ZERO, &mut settling).len(),
            1
        );
        set_mtime(&path, SystemTime::now() - Duration::from_secs(61));
        let files = scan_with(dir.path(), min_age, &mut settling);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].items.len(), 1);
    }

    #[test]
    fn a_file_dated_in_the_future_is_read_once_it_stops_changing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut settling = Settling::default();
        let min_age = Duration::from_secs(1);
        let future = SystemTime::now() + Duration::from_secs(3600);
        fs::write(&path, LINE).unwrap();
        set_mtime(&path, future);
        assert!(scan_with(dir.path(), min_age, &mut settling).is_empty());
        // The wait by this process's clock, and a change restarting it.
        let stamp = FileStamp::of(&fs::metadata(&path).unwrap());
        let changed = FileStamp { len: 2, ..stamp };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut settling = Settling::default();
        assert!(!settling.settled(&path, stamp, min_age, at(0)));
        assert!(!settling.settled(&path, stamp, min_age, at(600)));
        assert!(!settling.settled(&path, changed, min_age, at(700)));
        assert!(!settling.settled(&path, changed, min_age, at(1500)));
        assert!(settling.settled(&path, changed, min_age, at(1700)));
        // Files that left the spool are forgotten.
        fs::remove_file(&path).unwrap();
        assert!(scan_with(dir.path(), min_age, &mut settling).is_empty());
        assert!(settling.young.is_empty());
    }

    #[test]
    fn a_file_changed_after_it_was_read_is_left_to_be_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut settling = Settling::default();
        fs::write(&path, LINE).unwrap();
        let files = scan_with(dir.path(), Duration::ZERO, &mut settling);
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(LINE.as_bytes())
            .unwrap();
        assert_eq!(
            retire(dir.path(), &files[0], false).unwrap(),
            Retirement::ChangedSinceRead
        );
        assert!(path.exists());
        // Replaced by another file of the same size: also a change.
        let files = scan_with(dir.path(), Duration::ZERO, &mut settling);
        assert_eq!(files[0].items.len(), 2);
        let other = dir.path().join("b.tmp");
        fs::write(&other, format!("{LINE}{LINE}")).unwrap();
        fs::rename(&other, &path).unwrap();
        assert_eq!(
            retire(dir.path(), &files[0], true).unwrap(),
            Retirement::ChangedSinceRead
        );
        let files = scan_with(dir.path(), Duration::ZERO, &mut settling);
        assert_eq!(
            retire(dir.path(), &files[0], true).unwrap(),
            Retirement::Retired
        );
        assert!(!path.exists());
        assert!(dir.path().join("done/a.jsonl").exists());
    }

    /// A time that cannot be read is a bad line (it would otherwise become "now" and could
    /// outrank feedback given after it), for every kind of event that carries one.
    #[test]
    fn an_unreadable_timestamp_is_a_bad_line() {
        let good = r#"{"type":"feedback","id":"r","feedback":"negative","timestamp":"2026-11-29T13:52:00Z"}"#;
        assert!(parse_line(good).is_ok());
        for bad in [
            r#"{"type":"feedback","id":"r","feedback":"positive","timestamp":"29/11/2026 13:40"}"#,
            r#"{"type":"capture","prompt":"p","response":"r","timestamp":"yesterday"}"#,
            r#"{"type":"correction","original_prompt":"p","original_response":"r","corrected_response":"c","timestamp":"soon"}"#,
        ] {
            let err = parse_line(bad).unwrap_err();
            assert!(err.contains("is not a date and time"), "{err}");
        }
    }

    /// Each rejected file keeps its own report: a second rejected file of the same name
    /// gets `x.jsonl.1` and `x.jsonl.1.error`, and the first report is not overwritten.
    #[test]
    fn rejected_files_of_the_same_name_keep_their_own_reports() {
        let dir = tempfile::tempdir().unwrap();
        for body in [
            "garbage-one\n",
            "{\"type\":\"feedback\",\"id\":\"r\",\"feedback\":\"up\"}\ngarbage-two\n",
        ] {
            fs::write(dir.path().join("dup.jsonl"), body).unwrap();
            let files = scan_with(dir.path(), Duration::ZERO, &mut Settling::default());
            assert_eq!(files.len(), 1);
            retire(dir.path(), &files[0], false).unwrap();
        }
        let rejected = dir.path().join("rejected");
        let first = fs::read_to_string(rejected.join("dup.jsonl.error")).unwrap();
        assert_eq!(
            first,
            "dup.jsonl:1: not valid JSON: expected value at line 1 column 1\n"
        );
        let second = fs::read_to_string(rejected.join("dup.jsonl.1.error")).unwrap();
        assert!(
            second.starts_with("dup.jsonl:2: not valid JSON"),
            "{second}"
        );
        assert_eq!(
            fs::read_to_string(rejected.join("dup.jsonl")).unwrap(),
            "garbage-one\n"
        );
        assert!(fs::read_to_string(rejected.join("dup.jsonl.1"))
            .unwrap()
            .ends_with("garbage-two\n"));
    }

    /// A file whose events were applied but which could not be retired is not read again
    /// while it is unchanged (its events would be applied once more at every durable
    /// point), and is read again once it changes.
    #[test]
    fn an_unretired_file_is_not_read_again_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        fs::write(&path, LINE).unwrap();
        let (mut settling, mut unretired) = (Settling::default(), Unretired::default());
        let mut scan_now = |unretired: &mut Unretired| {
            scan(
                dir.path(),
                1 << 20,
                Duration::ZERO,
                100,
                &HashSet::new(),
                &mut settling,
                unretired,
            )
            .unwrap()
        };
        let files = scan_now(&mut unretired);
        assert_eq!(files.len(), 1);
        assert!(unretired.insert(files[0].clone()));
        assert!(!unretired.insert(files[0].clone()), "reported once");
        let again = scan_now(&mut unretired);
        assert!(again.is_empty(), "{again:?}");
        fs::write(&path, format!("{LINE}{LINE}")).unwrap();
        let changed = scan_now(&mut unretired);
        assert_eq!(changed.len(), 1);
        assert!(unretired.is_empty());
    }

    #[test]
    fn symlinks_and_oversized_files_are_refused_and_moved_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.txt");
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(&target, "{}").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link.jsonl")).unwrap();
        fs::write(dir.path().join("big.jsonl"), vec![b' '; 100]).unwrap();
        fs::remove_file(&target).unwrap();
        let files = scan(
            dir.path(),
            50,
            Duration::ZERO,
            100,
            &Default::default(),
            &mut Settling::default(),
            &mut Unretired::default(),
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        for f in &files {
            assert!(f.refused.is_some());
            retire(dir.path(), f, false).unwrap();
        }
        let err = fs::read_to_string(dir.path().join("rejected/big.jsonl.error")).unwrap();
        assert!(err.contains("over spool.max_file_bytes"), "{err}");
        let err = fs::read_to_string(dir.path().join("rejected/link.jsonl.error")).unwrap();
        assert!(err.contains("symlink"), "{err}");
    }
}

#[cfg(test)]
mod capture_kind_tests {
    use super::*;

    #[test]
    fn every_capture_kind_parses() {
        for line in [
            r#"{"type":"capture","prompt":"What is TPO?","response":"A membrane.","skill_used":"spec","request_id":"r1","project":"Warehouse 12"}"#,
            r#"{"type":"calculation","description":"Membrane quantity","inputs":{"area":1200},"formula":"a/100","result":12,"explanation":"Squares."}"#,
            r#"{"type":"spec_qa","spec_section":"07 54 23","question":"Seam width?","answer":"1.5 in","quote":"Seams 1.5 in."}"#,
            r#"{"type":"document","doc_type":"rfi","prompt":"Write an RFI","generated_doc":"RFI #1","was_used":false}"#,
            r#"{"type":"correction","original_prompt":"p","original_response":"r","corrected_response":"c","id":"req-1"}"#,
        ] {
            parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        let e = parse_line(r#"{"type":"capture","prompt":"p","response":"r","colour":"red"}"#)
            .unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}

#[cfg(test)]
mod stale_tmp_tests {
    use super::*;

    #[test]
    fn only_files_in_tmp_unchanged_for_an_hour_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        assert!(stale_tmp_files(dir.path(), SystemTime::now()).is_empty());
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(tmp.join("sub")).unwrap();
        let now = SystemTime::now();
        for (name, age) in [("fresh", 60), ("old", 7200), ("edge", 3600)] {
            let f = fs::File::create(tmp.join(name)).unwrap();
            f.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        // A spool file proper is not a leftover, however old.
        let spooled = fs::File::create(dir.path().join("old.jsonl")).unwrap();
        spooled
            .set_modified(now - Duration::from_secs(7200))
            .unwrap();
        let stale = stale_tmp_files(dir.path(), now);
        let names: Vec<(String, u64)> = stale
            .iter()
            .map(|(p, age)| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, age.as_secs())
            })
            .collect();
        assert_eq!(
            names,
            [("edge".to_string(), 3600), ("old".to_string(), 7200)]
        );
    }
}
