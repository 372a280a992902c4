//! The daemon: one loop that takes lines from the tailer and events from the spool, turns
//! them into records, buffers examples, writes segments, and checkpoints read positions
//! only once everything read is durable.
//!
//! Ordering is what keeps the promise "nothing lost, nothing duplicated":
//! 1. every item the tailer hands over becomes a record in memory (buffered example, or a
//!    pending line of the feedback / corrections / rejected stream), in the order read: the
//!    per-line work runs on [`crate::prepare`]'s worker threads, and each poll's checkpoint
//!    snapshot becomes eligible only once all of that poll's items are applied;
//! 2. at `buffer.size` the buffer is written to the open examples segment;
//! 3. at a *durable point* (every `buffer.flush_interval`, SIGUSR1, shutdown) everything is
//!    written and fsynced, and only then are the positions of the last applied poll
//!    checkpointed and the applied spool files retired (SIGUSR1 and shutdown first wait for
//!    the lines in flight).
//!
//! A crash between 2 and 3 makes the next start read those lines again; their ids are
//! deterministic, so the repeats are identical records that stats and export count once.
//! A write that fails is retried with backoff and intake pauses until it succeeds
//! (backpressure), so memory stays bounded and nothing is dropped, with one exception by
//! choice: a log deleted while the pause holds it open is let go after
//! `input.close_deleted_after`, its unread bytes recorded as rejected, so that its disk
//! space (perhaps the service's) is freed.
//!
//! The library entry point is [`run`] with a [`Control`] channel, so tests drive flushes,
//! reloads and shutdown exactly as the signal handlers do.

use crate::cache_warmer::CacheWarmer;
use crate::capture::{self, Identity, Interaction};
use crate::clock;
use crate::config::{Config, ConfigSource, OpenFiles, StartAt};
use crate::data_dir_lock::DataDirLock;
use crate::enrich::Enricher;
use crate::mapping::{parse_feedback, parse_timestamp, FeedbackInput, LineEvent, Mapper};
use crate::metrics::Metrics;
use crate::prepare::{
    self, Finished, ItemCollector, ItemKind, OwnedItem, PreparePool, Prepared, Recipe,
    RenderedExample,
};
use crate::record::{CorrectionRecord, FeedbackEvent, RejectedRecord, TrainingExample};
use crate::segment::{SegmentOptions, Segments};
use crate::spool::{self, SpoolEvent, SpoolFile};
use crate::tail::{self, CheckpointSnapshot, TailOptions, Tailer};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the outside world (signals, tests, file watchers) can ask of the running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM / SIGINT: stop intake, flush, seal, checkpoint, return.
    Shutdown,
    /// SIGHUP: re-read the config file.
    Reload,
    /// SIGUSR1: make everything durable now.
    Flush,
    /// Something changed on disk; look now instead of at the next re-scan.
    Wake,
}

/// Both ends of the daemon's control channel.
pub struct ControlChannel {
    pub sender: Sender<Control>,
    pub receiver: Receiver<Control>,
}

impl ControlChannel {
    pub fn new() -> ControlChannel {
        let (sender, receiver) = mpsc::channel();
        ControlChannel { sender, receiver }
    }
}

impl Default for ControlChannel {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tail(#[from] tail::TailError),
    #[error(transparent)]
    Segment(#[from] crate::segment::SegmentError),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the prepare worker threads: {0} (is a thread limit such as systemd's TasksMax= too low?)")]
    Workers(#[source] std::io::Error),
    #[error("shutdown could not make buffered data durable within {0:?}: {1} (it was not checkpointed and will be read again at the next start)")]
    ShutdownIncomplete(Duration, String),
}

/// How long shutdown keeps retrying a failing write before giving up (the unwritten data is
/// not checkpointed, so it is read again at the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// At shutdown, how long rotated-away files are read before giving up on their rest.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Spool files parsed per pass, so a flood of them cannot stall log intake.
const SPOOL_FILES_PER_PASS: usize = 64;
/// Pending feedback/corrections/rejected bytes that trigger a write before the next durable
/// point.
const PENDING_WRITE_BYTES: usize = 1 << 20;
/// Below this many items, with nothing in flight, a poll is prepared on the daemon's thread.
const INLINE_MAX_ITEMS: usize = 32;
/// Backoff bounds for failing writes.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// While writes keep failing, a summary is logged at most this often: a disk full for a day
/// retried every 5 s logged two lines per retry, 35,000 lines that buried everything else
/// (and filled the journal the full disk may share).
const PAUSE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// A pause of intake for failing writes, for its log lines: the first failure is logged at
/// once, then a summary at most every [`PAUSE_REPORT_EVERY`], and the end once.
struct Pause {
    since: Instant,
    retries: u64,
    last_report: Instant,
}

/// `d` for a log line, to the second: "45s", "12m 3s", "26h 0m".
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// Tailer options from the config.
pub fn tail_options(cfg: &Config) -> TailOptions {
    TailOptions {
        include: cfg.input.paths.clone(),
        exclude: cfg.input.exclude.clone(),
        start_at: match cfg.input.start_at {
            StartAt::Beginning => tail::StartAt::Beginning,
            StartAt::End => tail::StartAt::End,
        },
        max_line_bytes: cfg.input.max_line_bytes.0 as usize,
        rotate_wait: cfg.input.rotate_wait.0,
        close_deleted_after: cfg.input.close_deleted_after.0,
        read_budget_bytes: cfg.input.read_budget.0 as usize,
        max_open_files: match cfg.input.max_open_files {
            OpenFiles::Max(n) => usize::try_from(n).unwrap_or(usize::MAX),
            OpenFiles::Auto => crate::fd_limit::input_budget(),
        },
        ignore_older: cfg.input.ignore_older.map(|d| d.0),
        rotated_dirs: cfg.input.rotated_dirs.clone(),
        state_dir: cfg.state_dir(),
    }
}

fn segment_options(cfg: &Config) -> SegmentOptions {
    SegmentOptions {
        max_file_bytes: cfg.output.max_file_bytes.0,
        rotate_interval: cfg.output.rotate_interval.0,
        fsync: cfg.output.fsync,
    }
}

/// Normalized prompt+response, the last-resort link from a correction to its original. The
/// normalization is export's ([`crate::export::dedup::normalize_into`]), so the daemon and
/// export link a correction to the same examples (they used two that differed on Unicode
/// lowercasing, e.g. a word-final capital sigma).
pub fn pair_key(prompt: &str, response: &str) -> String {
    let mut key = String::new();
    let mut part = String::new();
    crate::export::dedup::normalize_into(prompt, &mut part);
    key.push_str(&part);
    key.push('\u{1f}');
    crate::export::dedup::normalize_into(response, &mut part);
    key.push_str(&part);
    key
}

/// Everything but the tailer, so the tailer's sink can borrow it mutably.
struct Intake {
    cfg: Config,
    enricher: Arc<Enricher>,
    mapper: Arc<Mapper>,
    segments: Segments,
    metrics: Arc<Metrics>,
    /// Examples not yet written, in order.
    buffer: Vec<Buffered>,
    /// Example id and request id -> buffer position. (The normalized prompt+response link
    /// is searched only when a correction needs it: building that key for every example
    /// was 10% of ingest.)
    index: HashMap<String, usize>,
    /// Spool files whose events are in memory or written but not yet fsynced.
    spool_awaiting: Vec<SpoolFile>,
    /// How many of `spool_awaiting` have had their rejected records written.
    spool_rejects_recorded: usize,
    spool_paths: HashSet<PathBuf>,
    spool_settling: spool::Settling,
    /// Spool files applied and durable that could not be retired.
    spool_unretired: spool::Unretired,
    /// Something was read or written since the last durable point.
    dirty: bool,
    /// The last size-triggered write failed; the daemon backs off and retries.
    write_error: Option<crate::segment::SegmentError>,
}

impl Intake {
    fn push_rejected(&mut self, rec: RejectedRecord) {
        self.metrics.rejected(&rec.reason);
        self.append_line(Stream::Rejected, &rec);
    }

    fn append_line<T: serde::Serialize>(&mut self, stream: Stream, rec: &T) {
        let line = serde_json::to_vec(rec).expect("records serialize");
        let writer = match stream {
            Stream::Feedback => &mut self.segments.feedback,
            Stream::Corrections => &mut self.segments.corrections,
            Stream::Rejected => &mut self.segments.rejected,
        };
        writer
            .append(&line)
            .expect("a serialized record is one non-empty line");
        self.dirty = true;
        // A log of nothing but rejects (a wrong `[input.match]`, say) must not pile up in
        // memory until the next durable point.
        if writer.pending_bytes() >= PENDING_WRITE_BYTES {
            self.write_segments();
        }
    }

    /// What the workers prepare lines with.
    fn recipe(&self) -> Recipe {
        Recipe {
            mapper: self.mapper.clone(),
            enricher: self.enricher.clone(),
        }
    }

    /// Prepares tail items on this thread and applies them in order (a few lines, or the
    /// last ones at shutdown).
    fn ingest(&mut self, items: &[OwnedItem]) {
        let prepared = prepare::prepare(&self.mapper, &self.enricher, items);
        for (item, p) in items.iter().zip(prepared) {
            self.apply(item, p);
        }
    }

    /// Applies a batch the workers prepared, in the order read.
    fn apply_batch(&mut self, items: &[OwnedItem], prepared: Vec<Prepared>) {
        for (item, p) in items.iter().zip(prepared) {
            self.apply(item, p);
        }
    }

    /// Applies one prepared tail item to the daemon's state.
    fn apply(&mut self, item: &OwnedItem, prepared: Prepared) {
        if let ItemKind::Line(bytes) = &item.kind {
            Metrics::add(&self.metrics.lines_read, 1);
            Metrics::add(&self.metrics.bytes_read, bytes.len() as u64 + 1);
        }
        self.dirty = true;
        match prepared {
            Prepared::Example(ex) => self.push_buffered(Buffered::Rendered(ex)),
            Prepared::Rejected(rec) => self.push_rejected(rec),
            Prepared::Event(LineEvent::Skip) => Metrics::add(&self.metrics.lines_skipped, 1),
            Prepared::Event(LineEvent::Interaction(_)) => {
                unreachable!("interactions are prepared into examples")
            }
            Prepared::Event(LineEvent::Feedback(f)) => {
                // The event's id, by which a re-read line counts once, hashes the line too:
                // two logs that start with the same line (replicas' boot line) share the
                // fingerprint, and feedback at the same offset in both was taken for one
                // event delivered twice (`stats` counted one).
                let identity = match &item.kind {
                    ItemKind::Line(bytes) => format!(
                        "{}:{}",
                        item.identity(),
                        capture::md5_hex16(&[&String::from_utf8_lossy(bytes)])
                    ),
                    ItemKind::Rejected { .. } => item.identity(),
                };
                self.on_feedback(f, &identity);
            }
            Prepared::Event(LineEvent::Correction(c)) => {
                self.on_correction(*c, &Identity::Event(item.identity()))
            }
        }
    }

    fn push_example(&mut self, ex: TrainingExample) {
        self.push_buffered(Buffered::Record(Box::new(ex)))
    }

    fn push_buffered(&mut self, ex: Buffered) {
        if self
            .index
            .get(ex.id())
            .is_some_and(|&i| self.buffer[i].id() == ex.id())
        {
            // The same line or event again (re-delivered spool file): one record is enough.
            return;
        }
        let pos = self.buffer.len();
        self.index.insert(ex.id().to_string(), pos);
        if let Some(r) = ex.request_id() {
            self.index.insert(format!("req:{r}"), pos);
        }
        self.buffer.push(ex);
        self.dirty = true;
        Metrics::add(&self.metrics.examples_captured, 1);
        self.metrics
            .buffered_examples
            .store(self.buffer.len() as u64, Ordering::Relaxed);
        if self.buffer.len() >= self.cfg.buffer.size.0 {
            self.write_buffer();
        }
    }

    /// The buffered example `key` (an id or request id) names, as a record to change.
    fn buffered(&mut self, key: &str) -> Option<&mut TrainingExample> {
        let &i = self
            .index
            .get(key)
            .or_else(|| self.index.get(&format!("req:{key}")))?;
        self.buffer.get_mut(i)?.record()
    }

    /// Feedback always goes to the feedback stream (with its time, so "latest wins" can be
    /// decided later); when its example is still buffered it is also applied in place.
    fn on_feedback(&mut self, f: FeedbackInput, identity: &str) {
        let event = FeedbackEvent {
            id: format!("fb_{}", capture::md5_hex16(&[identity])),
            timestamp: clock::rfc3339(f.timestamp.unwrap_or_else(clock::now)),
            target: f.target.clone(),
            feedback: f.feedback,
            comment: f.comment,
            user: f.user,
        };
        if let Some(ex) = self.buffered(&f.target) {
            ex.apply_feedback(f.feedback);
            Metrics::add(&self.metrics.feedback_applied, 1);
        } else {
            Metrics::add(&self.metrics.feedback_deferred, 1);
        }
        self.append_line(Stream::Feedback, &event);
    }

    fn on_correction(&mut self, c: capture::Correction, identity: &Identity) {
        let original = c
            .target
            .as_deref()
            .and_then(|t| {
                self.index
                    .get(t)
                    .or_else(|| self.index.get(&format!("req:{t}")))
            })
            .copied()
            .or_else(|| {
                // The latest buffered example with the same normalized pair (the key is built
                // only when the id link fails).
                let key = pair_key(&c.original_prompt, &c.original_response);
                self.buffer
                    .iter()
                    .rposition(|ex| ex.pair_key().is_some_and(|k| k == key))
            });
        let (record, example): (CorrectionRecord, TrainingExample) =
            capture::correction(&self.enricher, identity, c);
        if let Some(ex) = original.and_then(|i| self.buffer[i].record()) {
            ex.quality.was_corrected = true;
        }
        Metrics::add(&self.metrics.corrections, 1);
        self.append_line(Stream::Corrections, &record);
        self.push_example(example);
    }

    fn on_spool_file(&mut self, file: SpoolFile) {
        // Its bad lines are recorded at the durable point, and only if the file is then
        // still as it was read (see `record_spool_rejects`).
        // When the file's writer wrote it: the time of its feedback that carries none, so
        // the order of feedback is the order it was given in, not the order (or the time) the
        // daemon read the files in, and reading a file again gives the same time.
        let written = file.stamp.map(|s| clock::file_time(s.modified()));
        for item in &file.items {
            self.on_spool_event(item.event.clone(), &item.identity, written);
        }
        self.spool_paths.insert(file.path.clone());
        self.spool_awaiting.push(file);
        self.dirty = true;
    }

    /// Writes the rejected records of the spool files read since the last durable point,
    /// for each file that is still as it was read. A file that changed since was read while
    /// its writer was at it: its "bad" last line may be a line half written, and the file is
    /// read again whole (not retired), so a record now would reject a line that is then
    /// applied, and a line that is truly bad would be recorded once per read.
    fn record_spool_rejects(&mut self) {
        let files = std::mem::take(&mut self.spool_awaiting);
        for file in &files[self.spool_rejects_recorded..] {
            if file.bad_lines.is_empty() && file.refused.is_none() {
                continue;
            }
            if file.changed_since_read() {
                continue;
            }
            let source = file.path.display().to_string();
            for (line, reason, raw) in &file.bad_lines {
                let rec =
                    RejectedRecord::new(&source, *line, format!("spool: {reason}"), raw.as_bytes());
                self.push_rejected(rec);
            }
            if let Some(why) = &file.refused {
                let rec = RejectedRecord::new(&source, 0, format!("spool: {why}"), b"");
                self.push_rejected(rec);
            }
        }
        // A durable point whose write fails is retried: these are not recorded twice.
        self.spool_rejects_recorded = files.len();
        self.spool_awaiting = files;
    }

    fn on_spool_event(
        &mut self,
        event: SpoolEvent,
        identity: &str,
        written: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let ident = Identity::Event(identity.to_string());
        let ts = |t: &Option<String>| {
            t.as_ref()
                .and_then(|s| parse_timestamp(&Value::String(s.clone())))
        };
        // The capture kinds other than `capture` carry only their own time.
        let at = |t: &Option<String>| Interaction {
            timestamp: ts(t),
            ..Interaction::default()
        };
        match event {
            SpoolEvent::Feedback {
                id,
                feedback,
                comment,
                user,
                timestamp,
                ..
            } => {
                // Validated when the file was parsed.
                if let Ok(fb) = parse_feedback(&feedback) {
                    let f = FeedbackInput {
                        target: id,
                        feedback: fb,
                        comment,
                        user,
                        timestamp: ts(&timestamp).or(written),
                    };
                    self.on_feedback(f, identity);
                }
            }
            SpoolEvent::Correction {
                original_prompt,
                original_response,
                corrected_response,
                reason,
                corrector,
                id,
                timestamp,
                ..
            } => {
                let c = capture::Correction {
                    original_prompt,
                    original_response,
                    corrected_response,
                    reason,
                    corrector,
                    target: id,
                    timestamp: ts(&timestamp),
                };
                self.on_correction(c, &ident);
            }
            SpoolEvent::Capture {
                prompt,
                response,
                common,
                ..
            } => {
                let identity = match &common.request_id {
                    Some(r) => Identity::RequestId(r.clone()),
                    None => ident,
                };
                let it = Interaction {
                    prompt,
                    response,
                    source: common.source,
                    skill_used: common.skill_used,
                    tier: common.tier,
                    latency_ms: common.latency_ms,
                    tags: common.tags,
                    project: common.project,
                    user_id: common.user_id,
                    request_id: common.request_id,
                    timestamp: ts(&common.timestamp),
                    extra: Default::default(),
                };
                let ex = capture::capture(&self.enricher, &identity, it);
                self.push_example(ex);
            }
            SpoolEvent::Calculation {
                description,
                inputs,
                formula,
                result,
                explanation,
                verified,
                timestamp,
                ..
            } => {
                let calc = capture::Calculation {
                    description,
                    inputs,
                    formula,
                    result,
                    explanation,
                    verified,
                };
                let base = at(&timestamp);
                match capture::calculation(&self.enricher, &ident, calc, base) {
                    Ok(ex) => self.push_example(ex),
                    Err(e) => {
                        let rec = RejectedRecord::new(
                            "spool",
                            0,
                            format!("spool: {e}"),
                            identity.as_bytes(),
                        );
                        self.push_rejected(rec);
                    }
                }
            }
            SpoolEvent::SpecQa {
                spec_section,
                question,
                answer,
                quote,
                timestamp,
                ..
            } => {
                let base = at(&timestamp);
                let ex = capture::spec_qa(
                    &self.enricher,
                    &ident,
                    &spec_section,
                    question,
                    answer,
                    quote.as_deref(),
                    base,
                );
                self.push_example(ex);
            }
            SpoolEvent::Document {
                doc_type,
                prompt,
                generated_doc,
                was_used,
                modifications,
                timestamp,
                ..
            } => {
                let base = at(&timestamp);
                let ex = capture::document(
                    &self.enricher,
                    &ident,
                    &doc_type,
                    prompt,
                    generated_doc,
                    was_used,
                    &modifications,
                    base,
                );
                self.push_example(ex);
            }
        }
    }

    /// Moves the buffer into the examples segment's pending lines.
    fn take_buffer(&mut self) {
        // Taken out (and put back, keeping its capacity) so the loop can write chunks.
        let mut buffer = std::mem::take(&mut self.buffer);
        for ex in buffer.drain(..) {
            let line = ex.into_line();
            self.segments
                .examples
                .append_owned(line)
                .expect("a serialized record is one non-empty line");
            if self.segments.examples.pending_bytes() >= WRITE_CHUNK_BYTES {
                self.write_segments();
            }
        }
        self.buffer = buffer;
        self.index.clear();
        self.metrics.buffered_examples.store(0, Ordering::Relaxed);
        Metrics::add(&self.metrics.flushes, 1);
    }

    /// The size-triggered flush: the buffer is written to the open segments now (so each
    /// flush can seal a full segment), and fsynced at the next durable point.
    fn write_buffer(&mut self) {
        self.take_buffer();
        self.write_segments();
    }

    /// Writes every stream's pending lines (no fsync); a failure is kept for the daemon's
    /// retry, and the lines stay pending.
    fn write_segments(&mut self) {
        if self.write_error.is_some() {
            // Already failing: keep the lines pending until the daemon's retry.
            return;
        }
        match self.segments.write_all() {
            Ok(w) => Metrics::add(&self.metrics.bytes_written, w.bytes),
            Err(e) => self.write_error = Some(e),
        }
    }
}

/// A buffered example: as a worker rendered it (the usual case), or as a record, once
/// feedback or a correction changed it or when it was made on this thread (spool
/// captures, corrections).
enum Buffered {
    Rendered(RenderedExample),
    Record(Box<TrainingExample>),
}

impl Buffered {
    fn id(&self) -> &str {
        match self {
            Buffered::Rendered(r) => &r.id,
            Buffered::Record(ex) => &ex.id,
        }
    }

    fn request_id(&self) -> Option<&str> {
        match self {
            Buffered::Rendered(r) => r.request_id.as_deref(),
            Buffered::Record(ex) => ex.metadata.request_id(),
        }
    }

    /// The record, to change: a rendered line is parsed back first (its rendering is
    /// serde_json's, so this gives the record it was made from). `None` only if that
    /// failed, which would be a bug; the change is then left to export, which joins
    /// feedback and corrections from their streams anyway.
    fn record(&mut self) -> Option<&mut TrainingExample> {
        if let Buffered::Rendered(r) = self {
            let ex = serde_json::from_slice::<TrainingExample>(&r.line)
                .map_err(
                    |e| tracing::error!(id = %r.id, "cannot read back a buffered example: {e}"),
                )
                .ok()?;
            *self = Buffered::Record(Box::new(ex));
        }
        match self {
            Buffered::Record(ex) => Some(ex),
            Buffered::Rendered(_) => None,
        }
    }

    /// [`pair_key`] of the example's prompt and response.
    fn pair_key(&self) -> Option<String> {
        match self {
            Buffered::Record(ex) => Some(pair_key(&ex.prompt, &ex.response)),
            Buffered::Rendered(r) => {
                #[derive(serde::Deserialize)]
                struct Texts<'a> {
                    #[serde(borrow)]
                    prompt: std::borrow::Cow<'a, str>,
                    #[serde(borrow)]
                    response: std::borrow::Cow<'a, str>,
                }
                let t: Texts = serde_json::from_slice(&r.line).ok()?;
                Some(pair_key(&t.prompt, &t.response))
            }
        }
    }

    /// The example's segment line.
    fn into_line(self) -> Vec<u8> {
        match self {
            Buffered::Rendered(r) => r.line,
            Buffered::Record(ex) => {
                let mut line = Vec::new();
                ex.write_json(&mut line);
                line
            }
        }
    }
}

/// A big buffer goes to the segment in writes of about this size (not fsynced; the durable
/// point does that). One write of a whole 10 MB buffer cost the daemon thread 1.5-3x the
/// system time of 1 MiB writes (measured; the page-cache copy of a cold 10 MB source), and
/// its queue held all 10 MB at once.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone, Copy)]
enum Stream {
    Feedback,
    Corrections,
    Rejected,
}

/// The running daemon.
struct Daemon {
    tailer: Tailer,
    /// File-system notifications (`None`: unavailable, re-scans alone find changes).
    watcher: Option<tail::FsWatcher>,
    /// Which files' writes wake the loop (updated on reload).
    relevant: tail::RelevantPath,
    /// What the file-system events said since the last poll: a write to open logs only
    /// needs those read on, anything else a full poll.
    changes: tail::ChangeLog,
    /// When the tailer last made a full poll (a re-scan of the globs and a look at every
    /// file): due again after `rescan_interval`, after a reload and after a pause; `None`
    /// makes the next poll a full one.
    last_full_poll: Option<Instant>,
    intake: Intake,
    /// Lines being prepared on the worker threads, in read order.
    pool: PreparePool,
    /// What the next durable point may checkpoint.
    applied: Applied,
    /// The last poll left unread bytes (its read budget ran out).
    tail_more: bool,
    source: ConfigSource,
    last_durable: Instant,
    retry: Option<(Instant, Duration)>,
    /// Set while `retry` is: how long intake has been paused, for the log.
    pause: Option<Pause>,
    flush_requested: bool,
    last_watchdog: Instant,
    watchdog: Option<Duration>,
    /// When `spool/tmp/` was last looked at for abandoned files, and those already reported.
    stale_tmp_checked: Option<Instant>,
    stale_tmp_reported: HashSet<PathBuf>,
    /// Prepares sealed example segments for export in the background.
    warmer: CacheWarmer,
    /// The examples writer's sealed count the warmer was last told of.
    examples_sealed_told: u64,
}

/// The read positions whose items are all applied: what the next durable point may
/// checkpoint.
#[derive(Clone, Debug)]
enum Applied {
    /// Nothing read since the start, or the last batch handed to the workers is not applied
    /// yet: the checkpoint stays as it is.
    Nothing,
    /// The tailer's positions as they stand: the polls since the last batch was applied were
    /// applied at once, on the loop's thread. A snapshot is taken only at the durable point,
    /// not after every poll (with thousands of files, a snapshot per light poll was most of
    /// the cost of reading a few new lines).
    Live,
    /// A snapshot taken after the last poll whose items are all applied (later polls' items
    /// may still be on the workers).
    Snapshot(CheckpointSnapshot),
}

/// How often `spool/tmp/` is looked at for files abandoned by their writers.
const STALE_TMP_CHECK: Duration = Duration::from_secs(60);

/// Runs the daemon until a [`Control::Shutdown`] arrives on `control`, then shuts down in
/// order: stop intake, flush, fsync, seal, checkpoint. `lock` is `config.data_dir`'s, held
/// until the end; `metrics` is shared with the endpoint.
pub fn run(
    config: Config,
    source: ConfigSource,
    lock: DataDirLock,
    control: ControlChannel,
    metrics: Arc<Metrics>,
) -> Result<(), DaemonError> {
    crate::fd_limit::raise();
    for dir in [&config.data_dir, &config.state_dir(), &config.spool.dir] {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let (segments, recoveries) = Segments::open_all(&config.data_dir, segment_options(&config))?;
    let tailer = Tailer::open(tail_options(&config))?;
    let relevant = tail::RelevantPath::default();
    set_watch_relevance(&relevant, &config);
    let changes = tail::ChangeLog::default();
    let watcher = start_watcher(
        &tailer,
        &config,
        &relevant,
        &changes,
        control.sender.clone(),
    );
    let wake = control.sender.clone();
    let pool = PreparePool::start(move || {
        let _ = wake.send(Control::Wake);
    })
    .map_err(DaemonError::Workers)?;
    let warmer = CacheWarmer::start(&config, metrics.clone()).map_err(DaemonError::Workers)?;
    let mut daemon = Daemon {
        tailer,
        watcher,
        relevant,
        pool,
        applied: Applied::Nothing,
        tail_more: false,
        changes,
        last_full_poll: None,
        intake: Intake {
            enricher: Arc::new(Enricher::new(&config.domain)),
            mapper: Arc::new(Mapper::new(&config.input)),
            segments,
            metrics: metrics.clone(),
            buffer: Vec::new(),
            index: HashMap::new(),
            spool_awaiting: Vec::new(),
            spool_rejects_recorded: 0,
            spool_paths: HashSet::new(),
            spool_settling: spool::Settling::default(),
            spool_unretired: spool::Unretired::default(),
            dirty: false,
            write_error: None,
            cfg: config,
        },
        source,
        last_durable: Instant::now(),
        retry: None,
        pause: None,
        flush_requested: false,
        last_watchdog: Instant::now(),
        watchdog: watchdog_interval(),
        stale_tmp_checked: None,
        stale_tmp_reported: HashSet::new(),
        warmer,
        examples_sealed_told: 0,
    };
    for r in &recoveries {
        for torn in r.torn_lines() {
            let mut rec = RejectedRecord::new(
                &torn.path.display().to_string(),
                torn.offset,
                "torn last line of a segment left by a crash",
                &torn.bytes,
            );
            rec.raw_len = torn.len as usize;
            daemon.intake.push_rejected(rec);
        }
    }
    let _lock = lock;
    for warning in crate::preflight::warnings(&daemon.intake.cfg) {
        tracing::warn!("{warning}");
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        config = %daemon.source,
        data_dir = %daemon.intake.cfg.data_dir.display(),
        inputs = ?daemon.intake.cfg.input.paths,
        "training-collector running"
    );
    let result = daemon.main_loop(&control.receiver);
    // Segments sealed by the shutdown are prepared after the next start.
    let _ = daemon.warmer.stop();
    result
}

/// How often to ping: half of WatchdogSec, as sd_watchdog_enabled(3) advises, so one late
/// loop iteration is not yet a missed deadline.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

/// Data events wake the loop only for files the input globs name (and `input.exclude` does
/// not) and for the spool (set at start and on every reload, into the filter the running
/// watcher holds).
fn set_watch_relevance(relevant: &tail::RelevantPath, cfg: &Config) {
    relevant.set(
        &cfg.input.paths,
        &cfg.input.exclude,
        std::slice::from_ref(&cfg.spool.dir),
    );
}

/// The directories to watch: the globs' and the spool.
fn watch_specs(tailer: &Tailer, cfg: &Config) -> Vec<tail::WatchSpec> {
    let mut specs = tailer.watch_specs();
    specs.push(tail::WatchSpec {
        dir: cfg.spool.dir.clone(),
        recursive: false,
    });
    specs
}

/// Filesystem notifications only wake the loop early; the periodic re-scan is the
/// guarantee, so a watcher that cannot start is a warning, not an error.
fn start_watcher(
    tailer: &Tailer,
    cfg: &Config,
    relevant: &tail::RelevantPath,
    changes: &tail::ChangeLog,
    wake: Sender<Control>,
) -> Option<tail::FsWatcher> {
    let specs = watch_specs(tailer, cfg);
    match tail::FsWatcher::filtered(&specs, Some(relevant.clone()), changes.clone(), move || {
        let _ = wake.send(Control::Wake);
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("file notifications unavailable, relying on re-scans: {e}");
            None
        }
    }
}

impl Daemon {
    fn main_loop(&mut self, control: &Receiver<Control>) -> Result<(), DaemonError> {
        let mut wait = Duration::ZERO;
        loop {
            match control.recv_timeout(wait) {
                Ok(c) => {
                    if self.on_control(c) {
                        return self.shutdown();
                    }
                    // Drain whatever else is queued before doing work.
                    while let Ok(c) = control.try_recv() {
                        if self.on_control(c) {
                            return self.shutdown();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
            }
            let more = if self.retry.is_none() {
                self.intake()?
            } else {
                self.paused_tailer();
                false
            };
            // A backlog: bytes left unread, lines on the workers, or writes failing.
            self.warmer.set_intake_catching_up(
                self.tail_more || !self.pool.is_empty() || self.retry.is_some(),
            );
            self.maybe_durable();
            self.seal_due();
            self.tell_warmer_of_seals();
            self.feed_watchdog();
            self.report_stale_spool_tmp();
            wait = if more {
                Duration::ZERO
            } else {
                self.idle_wait()
            };
        }
    }

    /// Returns true on shutdown.
    fn on_control(&mut self, c: Control) -> bool {
        match c {
            Control::Shutdown => return true,
            Control::Reload => self.reload(),
            Control::Flush => self.flush_requested = true,
            Control::Wake => {}
        }
        false
    }

    /// One intake pass: spool first (small, and feedback is cheaper to apply early), then
    /// the logs. Returns whether more is waiting.
    fn intake(&mut self) -> Result<bool, DaemonError> {
        let cfg = &self.intake.cfg;
        let files = match spool::scan(
            &cfg.spool.dir,
            cfg.spool.max_file_bytes.0,
            cfg.spool.min_age.0,
            SPOOL_FILES_PER_PASS,
            &self.intake.spool_paths,
            &mut self.intake.spool_settling,
            &mut self.intake.spool_unretired,
        ) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot scan the spool: {e}");
                Vec::new()
            }
        };
        let spool_more = files.len() >= SPOOL_FILES_PER_PASS;
        if !files.is_empty() {
            // Spool events are applied after every line read before them, as they were
            // when preparation was synchronous (spool files are few; the wait is short).
            self.apply_prepared(true);
        }
        for f in files {
            self.intake.on_spool_file(f);
        }
        let mut full = false;
        if self.pool.has_room() {
            let mut collected = ItemCollector::default();
            let outcome;
            (outcome, full) = self.poll_tailer(&mut collected)?;
            self.tail_more = outcome.more_pending;
            // New files are in the checkpoint before anything read from them can be. (If
            // that fails, a full disk say, the next durable point writes them.)
            match self.tailer.commit_discoveries() {
                Ok(true) => Metrics::add(&self.intake.metrics.checkpoints_written, 1),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write newly found files into the checkpoint yet")
                }
            }
            if self.pool.is_empty() && collected.items.len() < INLINE_MAX_ITEMS {
                // The steady state (a few new lines): no hand-off, no added latency.
                self.intake.ingest(&collected.items);
                self.applied = Applied::Live;
            } else {
                let snapshot = self.tailer.checkpoint_snapshot();
                // The positions before this poll were never taken: the checkpoint waits for
                // this batch, whose snapshot covers them too.
                if matches!(self.applied, Applied::Live) {
                    self.applied = Applied::Nothing;
                }
                self.pool
                    .submit(collected.items, snapshot, &self.intake.recipe());
            }
        }
        self.apply_prepared(false);
        self.intake
            .metrics
            .open_files
            .store(self.tailer.open_files() as u64, Ordering::Relaxed);
        let (closed_idle, waiting) = self.tailer.closed_idle_and_waiting();
        let m = &self.intake.metrics;
        m.idle_files_closed
            .store(closed_idle as u64, Ordering::Relaxed);
        m.files_waiting.store(waiting as u64, Ordering::Relaxed);
        m.unread_bytes_lost.store(
            self.tailer.counters().unread_bytes_dropped,
            Ordering::Relaxed,
        );
        m.log_names_not_utf8
            .store(self.tailer.non_utf8_names() as u64, Ordering::Relaxed);
        // At every full poll (at least each rescan_interval): one name and number per file
        // is too much for every light poll when thousands of files match.
        if full {
            self.intake.metrics.set_file_lags(
                self.tailer
                    .file_lags()
                    .into_iter()
                    .map(|(p, l)| (p.display().to_string(), l)),
            );
        }
        if let Some(e) = self.intake.write_error.take() {
            self.on_write_error(e);
        }
        Ok((self.tail_more && self.pool.has_room()) || spool_more)
    }

    /// While paused: no lines are read, but new files are still found and held open, and a
    /// deleted one held past `input.close_deleted_after` is closed (its space freed), the
    /// record of its lost bytes applied like any rejected line.
    fn paused_tailer(&mut self) {
        // (The first poll after the pause is a full one: what was written is read then.)
        let changes = self.changes.take();
        let mut collected = ItemCollector::default();
        self.tailer.discover_only(
            self.intake.cfg.input.rescan_interval.0,
            changes.other,
            &mut |item| collected.push(item),
        );
        self.last_full_poll = None;
        if !collected.items.is_empty() {
            // After what was read before it, in read order; then every position handed out
            // is applied, so the checkpoint may take the tailer's as they stand.
            self.apply_prepared(true);
            self.intake.ingest(&collected.items);
            self.applied = Applied::Live;
            self.intake.metrics.unread_bytes_lost.store(
                self.tailer.counters().unread_bytes_dropped,
                Ordering::Relaxed,
            );
        }
    }

    /// Polls the tailer: a light poll of the logs written to when that is all the file-system
    /// events said, else a full one (see [`Tailer::poll_written`]). Returns the outcome and
    /// whether it was a full poll.
    fn poll_tailer(
        &mut self,
        collected: &mut ItemCollector,
    ) -> Result<(tail::PollOutcome, bool), DaemonError> {
        let changes = self.changes.take();
        let due = self
            .last_full_poll
            .is_none_or(|at| at.elapsed() >= self.intake.cfg.input.rescan_interval.0)
            || self
                .tailer
                .next_expiry()
                .is_some_and(|at| at <= Instant::now());
        if !(due || changes.other || self.tail_more) {
            if let Some(outcome) = self
                .tailer
                .poll_written(&changes.written, &mut |item| collected.push(item))?
            {
                Metrics::add(&self.intake.metrics.light_polls, 1);
                return Ok((outcome, false));
            }
        }
        // Before the scan, so that nothing created after it goes unnoticed until the next.
        self.rearm_watches();
        let outcome = self.tailer.poll(&mut |item| collected.push(item))?;
        Metrics::add(&self.intake.metrics.full_polls, 1);
        self.last_full_poll = Some(Instant::now());
        Ok((outcome, true))
    }

    /// Watches the log folders as they are now (see [`tail::FsWatcher::rearm`]): one
    /// removed and created again, or named by a reload, is watched anew.
    fn rearm_watches(&mut self) {
        if let Some(w) = &mut self.watcher {
            w.rearm(&watch_specs(&self.tailer, &self.intake.cfg));
        }
    }

    /// Applies the batches the workers have finished, in read order, each making its poll's
    /// positions eligible for the next checkpoint; with `wait`, every batch in flight.
    fn apply_prepared(&mut self, wait: bool) {
        while let Some(Finished {
            items,
            prepared,
            snapshot,
        }) = self.pool.next_finished(wait)
        {
            self.intake.apply_batch(&items, prepared);
            self.applied = Applied::Snapshot(snapshot);
        }
    }

    fn maybe_durable(&mut self) {
        if let Some((at, _)) = self.retry {
            if Instant::now() < at {
                return;
            }
        }
        let due = self.last_durable.elapsed() >= self.intake.cfg.buffer.flush_interval.0;
        if self.flush_requested && self.retry.is_none() {
            // "Make everything durable now" covers every line already read, including the
            // ones still being prepared.
            self.apply_prepared(true);
        }
        if (due && self.intake.dirty) || self.flush_requested || self.retry.is_some() {
            if let Err(e) = self.durable_point() {
                self.on_write_error(e);
            }
        }
    }

    /// Writes and fsyncs everything, then checkpoints and retires spool files.
    fn durable_point(&mut self) -> Result<(), DaemonError> {
        if !self.intake.buffer.is_empty() {
            self.intake.take_buffer();
        }
        self.intake.record_spool_rejects();
        let written = self.intake.segments.flush_all()?;
        Metrics::add(&self.intake.metrics.bytes_written, written.bytes);
        // Only positions whose lines are all applied, and so now durable.
        let snapshot = match &self.applied {
            Applied::Nothing => None,
            Applied::Live => Some(self.tailer.checkpoint_snapshot()),
            Applied::Snapshot(s) => Some(s.clone()),
        };
        if let Some(snapshot) = snapshot {
            if self.tailer.commit_snapshot(snapshot)? {
                Metrics::add(&self.intake.metrics.checkpoints_written, 1);
            }
        }
        // Files applied since the last durable point, and those that could not be retired
        // before (tried again, never applied again).
        let held_back = self.intake.spool_unretired.take();
        let awaiting = std::mem::take(&mut self.intake.spool_awaiting);
        self.intake.spool_rejects_recorded = 0;
        for (file, first_try) in awaiting
            .into_iter()
            .map(|f| (f, true))
            .chain(held_back.into_iter().map(|f| (f, false)))
        {
            self.intake.spool_paths.remove(&file.path);
            match spool::retire(
                &self.intake.cfg.spool.dir,
                &file,
                self.intake.cfg.spool.keep_processed,
            ) {
                Ok(spool::Retirement::ChangedSinceRead) => {
                    Metrics::add(&self.intake.metrics.spool_files_reread, 1);
                    tracing::warn!(
                        "spool file {} changed after it was read, so it is read again \
                         (writers should write under spool/tmp/ and rename the file into the \
                         spool)",
                        file.path.display()
                    )
                }
                Ok(spool::Retirement::Retired) => {
                    let counter = if file.refused.is_some() || !file.bad_lines.is_empty() {
                        &self.intake.metrics.spool_files_rejected
                    } else {
                        &self.intake.metrics.spool_files_processed
                    };
                    Metrics::add(counter, 1);
                    if !first_try {
                        tracing::info!("spool file {} retired at last", file.path.display());
                    }
                }
                // Its events are durable: it is held (not read, so not applied, again) and
                // retried at each durable point; reported once.
                Err(e) => {
                    if first_try {
                        tracing::warn!(
                            "cannot retire spool file: {e}; its events are applied and it is \
                             not read again while it is unchanged (let the daemon's user \
                             remove it, or remove it yourself)"
                        );
                    }
                    self.intake.spool_unretired.insert(file);
                }
            }
        }
        self.intake
            .metrics
            .spool_files_unretired
            .store(self.intake.spool_unretired.len() as u64, Ordering::Relaxed);
        self.intake.dirty = false;
        self.flush_requested = false;
        self.last_durable = Instant::now();
        if self.retry.take().is_some() {
            if let Some(p) = self.pause.take() {
                tracing::info!(
                    "writes succeed again after {} ({} retries); intake resumed",
                    span(p.since.elapsed()),
                    p.retries
                );
            }
            self.intake
                .metrics
                .backpressure
                .store(false, Ordering::Relaxed);
        }
        self.intake
            .metrics
            .last_flush_unix_seconds
            .store(clock::now().timestamp().max(0) as u64, Ordering::Relaxed);
        Ok(())
    }

    fn on_write_error(&mut self, e: impl std::fmt::Display) {
        Metrics::add(&self.intake.metrics.flush_errors, 1);
        self.intake
            .metrics
            .backpressure
            .store(true, Ordering::Relaxed);
        let backoff = self
            .retry
            .map(|(_, b)| (b * 2).min(RETRY_MAX))
            .unwrap_or(RETRY_MIN);
        let now = Instant::now();
        match &mut self.pause {
            None => {
                tracing::error!(
                    "write failed, intake paused until writes succeed (retried with backoff \
                     up to every {RETRY_MAX:?}; a summary every {PAUSE_REPORT_EVERY:?}): {e}"
                );
                self.pause = Some(Pause {
                    since: now,
                    retries: 0,
                    last_report: now,
                });
            }
            Some(p) => {
                p.retries += 1;
                if now.duration_since(p.last_report) >= PAUSE_REPORT_EVERY {
                    p.last_report = now;
                    tracing::warn!(
                        "still paused: writes failing for {}, {} retries: {e}",
                        span(p.since.elapsed()),
                        p.retries
                    );
                }
            }
        }
        self.retry = Some((now + backoff, backoff));
    }

    /// Tells the cache warmer when an example segment was sealed (by a flush, by age, or by
    /// a new day), so it prepares the segment for export.
    fn tell_warmer_of_seals(&mut self) {
        let sealed = self.intake.segments.examples.sealed_total();
        if sealed != self.examples_sealed_told {
            self.examples_sealed_told = sealed;
            self.warmer.sealed();
        }
    }

    fn seal_due(&mut self) {
        if self.retry.is_some() {
            return;
        }
        if let Err(e) = self.intake.segments.maybe_seal_all(clock::now()) {
            tracing::error!("cannot seal a segment: {e}");
        }
    }

    /// Reports files a spool writer left in `spool/tmp/` (it died before its rename, so its
    /// events never arrived): a warning once per file, and the `spool_stale_tmp_files`
    /// gauge. At start, then every [`STALE_TMP_CHECK`].
    fn report_stale_spool_tmp(&mut self) {
        if self
            .stale_tmp_checked
            .is_some_and(|t| t.elapsed() < STALE_TMP_CHECK)
        {
            return;
        }
        self.stale_tmp_checked = Some(Instant::now());
        let stale =
            spool::stale_tmp_files(&self.intake.cfg.spool.dir, std::time::SystemTime::now());
        self.intake
            .metrics
            .spool_stale_tmp_files
            .store(stale.len() as u64, Ordering::Relaxed);
        for (path, age) in &stale {
            if !self.stale_tmp_reported.contains(path) {
                tracing::warn!(
                    path = %path.display(),
                    unchanged_for_hours = age.as_secs() / 3600,
                    "a spool file was left in spool/tmp/ by a writer that never renamed it into the spool: its events were not delivered (move it into the spool to deliver them, or delete it)"
                );
            }
        }
        self.stale_tmp_reported = stale.into_iter().map(|(p, _)| p).collect();
    }

    fn feed_watchdog(&mut self) {
        if let Some(every) = self.watchdog {
            if self.last_watchdog.elapsed() >= every {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                self.last_watchdog = Instant::now();
            }
        }
    }

    fn idle_wait(&self) -> Duration {
        // Until the next full poll is due. (None here means paused, or no room for a poll
        // yet, which the workers' wake ends.)
        let every = self.intake.cfg.input.rescan_interval.0;
        let mut wait = self
            .last_full_poll
            .map_or(every, |at| every.saturating_sub(at.elapsed()));
        if self.intake.dirty {
            let left = self
                .intake
                .cfg
                .buffer
                .flush_interval
                .0
                .saturating_sub(self.last_durable.elapsed());
            wait = wait.min(left);
        }
        match self.retry {
            Some((at, _)) => {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
                // A deleted file's input.close_deleted_after running out.
                if let Some(at) = self.tailer.next_expiry() {
                    wait = wait.min(at.saturating_duration_since(Instant::now()));
                }
            }
            // A rotated-away file's rotate_wait running out (the poll that closes it; with
            // no room for a poll, the workers' wake comes first).
            None if self.pool.has_room() => {
                if let Some(at) = self.tailer.next_expiry() {
                    wait = wait.min(at.saturating_duration_since(Instant::now()));
                }
            }
            None => {}
        }
        // Until the next ping is due, not a whole interval: a loop woken just before it was
        // due would otherwise ping up to twice the interval (nearly WatchdogSec) late.
        if let Some(every) = self.watchdog {
            wait = wait.min(every.saturating_sub(self.last_watchdog.elapsed()));
        }
        // Sealing at the UTC day change and rotate_interval needs a look now and then even
        // when idle; the re-scan interval (1 s by default) is fine-grained enough.
        wait
    }

    fn reload(&mut self) {
        let ConfigSource::File(path) = &self.source else {
            tracing::warn!("SIGHUP ignored: running on the embedded default config, there is no file to re-read");
            return;
        };
        match Config::load(path, true) {
            Err(e) => tracing::error!("config reload refused, keeping the running config: {e}"),
            Ok((mut new, _)) => {
                let old = &self.intake.cfg;
                if new.data_dir != old.data_dir {
                    tracing::warn!(
                        "data_dir changes need a restart; keeping {}",
                        old.data_dir.display()
                    );
                    new.data_dir = old.data_dir.clone();
                }
                // The endpoint stays where it is; the running config says so, so that setting
                // the address back is no change and a later warning names the real state.
                if new.metrics.listen != old.metrics.listen {
                    match old.metrics.listen.0 {
                        Some(addr) => tracing::warn!(
                            "metrics.listen changes need a restart; the endpoint stays on {addr}"
                        ),
                        None => tracing::warn!(
                            "metrics.listen changes need a restart; the endpoint stays off"
                        ),
                    }
                    new.metrics.listen = old.metrics.listen;
                }
                // Batches already in flight keep the recipe they were submitted with.
                self.intake.enricher = Arc::new(Enricher::new(&new.domain));
                self.intake.mapper = Arc::new(Mapper::new(&new.input));
                self.intake.segments.set_options(segment_options(&new));
                self.tailer.reconfigure(tail_options(&new));
                set_watch_relevance(&self.relevant, &new);
                self.last_full_poll = None;
                self.warmer.reconfigure(&new);
                self.intake.cfg = new;
                tracing::info!("config reloaded from {}", path.display());
                for warning in crate::preflight::warnings(&self.intake.cfg) {
                    tracing::warn!("{warning}");
                }
            }
        }
    }

    /// Ordered shutdown: intake has stopped (we are not polling any more); make everything
    /// durable (retrying a failing disk for a while), seal, checkpoint.
    fn shutdown(&mut self) -> Result<(), DaemonError> {
        // sd_notify(3): STOPPING=1 when shutdown begins, so systemd shows the unit as
        // stopping (and stops its watchdog) for the whole drain, which may retry a failing
        // disk for SHUTDOWN_GRACE.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("shutting down: flushing, sealing, checkpointing");
        let started = Instant::now();
        self.apply_prepared(true);
        // Lines in files rotated out of the globs since the last poll cannot be found after
        // a restart: read them now (bounded), so they are flushed with the rest.
        if self.retry.is_none() {
            let mut collected = ItemCollector::default();
            self.tailer
                .finish_rotated_away(&mut |item| collected.push(item), started + SHUTDOWN_DRAIN);
            self.intake.ingest(&collected.items);
            self.applied = Applied::Live;
        }
        let mut backoff = RETRY_MIN;
        loop {
            match self.durable_point() {
                Ok(()) => break,
                Err(e) if started.elapsed() < SHUTDOWN_GRACE => {
                    tracing::error!("shutdown flush failed, retrying in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    return Err(DaemonError::ShutdownIncomplete(
                        SHUTDOWN_GRACE,
                        e.to_string(),
                    ))
                }
            }
        }
        self.intake.segments.seal_all()?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// The buffer keeps what the workers rendered; changing a buffered example reads its
    /// line back into the record, and the line written afterwards carries the change.
    #[test]
    fn a_rendered_buffered_example_is_read_back_to_change_it() {
        let enricher = Enricher::new(&crate::config::DomainConfig::default());
        let ex = capture::capture(
            &enricher,
            &Identity::RequestId("r1".into()),
            capture::Interaction {
                prompt: "What is the TPO seam overlap?".into(),
                response: "2.5 inches, welded. Latency noted.".into(),
                request_id: Some("r1".into()),
                latency_ms: Some(1734.912345678901),
                ..Default::default()
            },
        );
        let mut line = Vec::new();
        ex.write_json(&mut line);
        let mut b = Buffered::Rendered(RenderedExample {
            id: ex.id.clone(),
            request_id: Some("r1".into()),
            line: line.clone(),
        });
        assert_eq!(b.id(), ex.id);
        assert_eq!(b.request_id(), Some("r1"));
        assert_eq!(b.pair_key(), Some(pair_key(&ex.prompt, &ex.response)));
        b.record()
            .expect("a rendered line reads back")
            .apply_feedback(crate::record::Feedback::Negative);
        let mut want = ex.clone();
        want.apply_feedback(crate::record::Feedback::Negative);
        let written = b.into_line();
        let back: TrainingExample = serde_json::from_slice(&written).unwrap();
        assert_eq!(back, want);
        assert_ne!(written, line);
        // Unchanged, it is written exactly as rendered.
        let untouched = Buffered::Rendered(RenderedExample {
            id: ex.id.clone(),
            request_id: None,
            line: line.clone(),
        });
        assert_eq!(untouched.into_line(), line);
    }

    /// The library entry point driven the way the signal handlers drive it: a flush request,
    /// then an ordered shutdown, with everything on disk afterwards.
    #[test]
    fn run_is_driven_by_its_control_channel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let cfg = Config::parse(
            "data_dir = \"data\"\n[input]\npaths = [\"logs/*.log\"]\nrescan_interval = \"50ms\"\n[buffer]\nflush_interval = \"1h\"\n[spool]\ndir = \"spool\"\n[metrics]\nlisten = \"\"\n",
            "test.toml",
            dir.path(),
        )
        .unwrap();
        let mut log = std::fs::File::create(dir.path().join("logs/a.log")).unwrap();
        for i in 0..3 {
            writeln!(
                log,
                r#"{{"event":"interaction","request_id":"r{i}","query":"What is the TPO seam overlap?","response":"2.5 inches per Carlisle."}}"#
            )
            .unwrap();
        }
        let channel = ControlChannel::new();
        let control = channel.sender.clone();
        let metrics = Arc::new(Metrics::default());
        let m = metrics.clone();
        let lock = DataDirLock::acquire(&cfg.data_dir).unwrap();
        let daemon = std::thread::spawn(move || run(cfg, ConfigSource::Embedded, lock, channel, m));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.buffered_examples.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "lines were not buffered");
            std::thread::sleep(Duration::from_millis(10));
        }
        // (The file's discovery may have written one already.)
        let before = metrics.checkpoints_written.load(Ordering::Relaxed);
        control.send(Control::Flush).unwrap();
        while metrics.checkpoints_written.load(Ordering::Relaxed) <= before {
            assert!(
                Instant::now() < deadline,
                "no durable point after Control::Flush"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        control.send(Control::Shutdown).unwrap();
        daemon.join().unwrap().unwrap();
        let data = dir.path().join("data");
        let sealed = crate::segment::list(&data, crate::segment::Stream::Examples).unwrap();
        assert_eq!(sealed.len(), 1);
        assert!(
            sealed[0].extension().is_some_and(|e| e == "jsonl"),
            "{sealed:?}"
        );
        let text = std::fs::read_to_string(&sealed[0]).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    /// What export joins a correction on: the hash of its normalized original prompt and
    /// answer. The daemon's link must agree with it on every text.
    fn export_link(prompt: &str, response: &str, other: (&str, &str)) -> bool {
        let mut buf = String::new();
        crate::export::prepare_pr_key(prompt, response, &mut buf)
            == crate::export::prepare_pr_key(other.0, other.1, &mut buf)
    }

    proptest! {
        #[test]
        fn pair_key_links_what_export_links(
            p in "[ aBc\\t\\n\\x0b\\x0c\\r\\x1c\\x00éΣς]{0,30}",
            r in "[ xYΣ\\t\\n\\x0b\\r]{0,30}",
            q in "[ aBc\\t\\nΣς]{0,30}",
        ) {
            prop_assert_eq!(
                pair_key(&p, &r) == pair_key(&q, &r),
                export_link(&p, &r, (&q, &r))
            );
        }
    }

    #[test]
    fn pause_spans_read_like_a_person_would_write_them() {
        assert_eq!(span(Duration::from_millis(45_900)), "45s");
        assert_eq!(span(Duration::from_secs(12 * 60 + 3)), "12m 3s");
        assert_eq!(span(Duration::from_secs(26 * 3600 + 59)), "26h 0m");
    }

    #[test]
    fn pair_key_final_sigma_links_like_export() {
        let (a, b) = ("ΟΔΟΣ roof", "ΟΔΟΣ ROOF");
        let (c, d) = ("οδοσ roof", "οδος roof");
        assert_eq!(
            pair_key(a, "x") == pair_key(c, "x"),
            export_link(a, "x", (c, "x"))
        );
        assert_eq!(
            pair_key(b, "x") == pair_key(d, "x"),
            export_link(b, "x", (d, "x"))
        );
        assert_eq!(pair_key("  Roof\tDrain ", "OK"), "roof drain\u{1f}ok");
    }
}
