//! Tailing of the service's JSON-lines logs: finds the files matching the include globs,
//! follows them through rename rotation, copytruncate, truncation and delete+recreate, hands
//! every complete line to the caller exactly once (at least once across a crash, never lost),
//! and saves read positions in `state_dir/checkpoints.json` when the caller says the items
//! handed out so far are durable.
//!
//! How the pieces fit:
//! * [`discovery`] expands the globs (re-scanned on every poll, so lost inotify events cost
//!   latency, not data) and names the directories to watch;
//! * [`identity`] tells files apart by dev + inode + first-line fingerprint, never by path;
//! * [`reader`] splits bytes into lines, keeps a partial last line back and skips oversize
//!   lines;
//! * [`checkpoint`] loads and atomically stores positions;
//! * [`rotated`] finds a file again next to its saved path (or in `rotated_dirs`) after it
//!   left the globs, and [`compressed`] reads a compressed rotation (gzip, zstd, xz,
//!   bzip2) from a saved position;
//! * [`watch`] wakes the daemon on file-system events.
//!
//! Identity decisions, in order, for a file found by a scan: an open file with the same
//! dev + inode is the same file (renames are followed, a rotated name that still matches is
//! not read twice); otherwise a saved position with the same dev + inode + fingerprint is
//! resumed if the saved offset is within the file and the bytes before it are unchanged
//! (else the file was truncated or rewritten while stopped and is read from 0); otherwise a
//! file whose first line and bytes before the position equal those of an open or saved file
//! is a copy of it (copytruncate into a name the globs match) and continues at that
//! position; otherwise it is new: read from 0, or from its end under `StartAt::End` on the
//! very first start. A file that cannot be told apart yet is not read until it can: one
//! without a complete first line (logrotate's copytruncate creates its copy empty and then
//! fills it), or one with the first line of an open file, shorter than that file's read
//! position and equal to its bytes so far (a copy still being written). Until then it is
//! checkpointed by dev + inode alone ([`checkpoint::Entry::awaiting_first_line`]): after a
//! restart it is settled the same way, never read from its end under `ignore_older`, and
//! found by its inode if it was renamed out of the globs meanwhile. Settled before
//! any file is read in a poll, so an original truncated meanwhile is still compared in the
//! state it was read in. Limitation: bytes written to an original after its last read are
//! in both it and a copy made before the truncation; if the copy matches the globs and is
//! found before the truncation, those lines are read twice (identical ids).
//!
//! While a file is open, a size below the read position or changed bytes just before it
//! mean truncation: it is read again from 0, skipping a leading NUL hole. At shutdown,
//! [`Tailer::finish_rotated_away`] reads files that left the globs to their end. While the
//! caller cannot take lines, [`Tailer::discover_only`] keeps finding files and closes a
//! deleted one held past `close_deleted_after`, its unread bytes handed out as Rejected. A saved
//! position whose file left the globs while it was not open (the daemon stopped, the file
//! closed while idle, content lost to a truncation) is looked for once in the directory of
//! its path and in `rotated_dirs` ([`rotated`]): the same inode renamed, a copy, or a
//! compressed file of it ([`compressed`]), read on from the saved offset.
//!
//! The tailer is single-threaded and pull-based: the daemon calls [`Tailer::poll`] when woken
//! or on a timer, writes the items, fsyncs them, then calls [`Tailer::commit_checkpoint`].
//! A file is read at most `read_budget_bytes` per poll so one busy file cannot starve the
//! others; `PollOutcome::more_pending` says when the caller should poll again right away.

pub mod checkpoint;
mod compressed;
pub mod discovery;
pub mod identity;
pub mod reader;
pub(crate) mod rotated;
pub mod watch;

pub use discovery::WatchSpec;
pub use identity::FileId;
pub use watch::{ChangeLog, Changes, FsWatcher, RelevantPath};

use checkpoint::{Entry, Loaded};
use identity::{read_full_at, Fingerprint};
use reader::{Piece, Reader, RAW_CAP};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the tailing subsystem. Per-file read problems are not errors of `poll`: they are
/// logged, counted in [`TailCounters::read_errors`] and retried on the next poll.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("invalid glob pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read checkpoint file {path}: {source}")]
    CheckpointRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write checkpoint file {path}: {source}")]
    CheckpointWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("file watcher: {0}")]
    Notify(#[from] notify::Error),
}

/// Where to start in files present at the very first start (no checkpoint file yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// After the last complete line present at startup (a line still being written then is
    /// read whole once it completes, rather than as a fragment).
    End,
}

/// Tailer settings.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Glob patterns (absolute paths already resolved by the caller); `**` supported.
    pub include: Vec<String>,
    /// Files the include globs match that are never read (see [`discovery::Exclude`]).
    pub exclude: Vec<String>,
    /// Only for files present at the very first start; files found later always start at 0.
    pub start_at: StartAt,
    pub max_line_bytes: usize,
    /// How long a rotated-away (renamed out of the globs or deleted) file is kept open once
    /// it is read to its end with nothing new written (it is always read to its end first).
    pub rotate_wait: Duration,
    /// How long a deleted file is held open while the caller cannot take lines (see
    /// [`Tailer::discover_only`]) before it is closed and its unread bytes given up.
    pub close_deleted_after: Duration,
    /// Bytes read per file per `poll` pass.
    pub read_budget_bytes: usize,
    /// Files under matching names held open at most; rotated-away files still being read
    /// come on top (see [`Tailer::poll`]).
    pub max_open_files: usize,
    /// A file found with no saved position and not modified for this long is read only
    /// from its end (lines appended later), like Filebeat's `ignore_older`. `None`: off.
    pub ignore_older: Option<Duration>,
    /// Directories rotated files may be moved to (logrotate's `olddir`), searched besides
    /// the log's own directory by [`rotated::find`]: relative ones are read against the
    /// log's directory.
    pub rotated_dirs: Vec<PathBuf>,
    /// `checkpoints.json` lives here.
    pub state_dir: PathBuf,
}

/// One item handed to the sink.
#[derive(Debug)]
pub enum TailItem<'a> {
    /// One complete line, without its line terminator ("\n" or "\r\n"). `offset` is the byte
    /// offset of the line start in the file.
    Line {
        file: &'a FileId,
        path: &'a Path,
        offset: u64,
        bytes: &'a [u8],
    },
    /// A line that cannot be used: longer than max_line_bytes (reading resumes at the next
    /// line; `raw` holds at most the first 4 KiB), invalid UTF-8, or the unterminated last
    /// line of a rotated-away file that is being closed. `len` is the full length.
    Rejected {
        file: &'a FileId,
        path: &'a Path,
        offset: u64,
        reason: String,
        raw: &'a [u8],
        len: usize,
    },
}

/// What one `poll` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Items handed to the sink.
    pub items: usize,
    /// Some file still has unread bytes (its read budget ran out): poll again soon.
    pub more_pending: bool,
}

/// The read positions of every file at one moment (see [`Tailer::checkpoint_snapshot`]),
/// and the number of the poll it follows ([`Tailer::discovered`] entries up to that poll
/// are covered by it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointSnapshot(Vec<Arc<Entry>>, u64);

/// Running totals, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailCounters {
    pub files_added: u64,
    pub files_resumed: u64,
    pub files_rotated: u64,
    pub files_truncated: u64,
    pub files_closed: u64,
    /// Files closed while idle to stay within `max_open_files`, and opened again.
    pub files_parked: u64,
    pub files_reopened: u64,
    pub lines: u64,
    pub rejected: u64,
    pub read_errors: u64,
    pub open_errors: u64,
    pub unread_bytes_dropped: u64,
    pub checkpoint_writes: u64,
}

/// Saved positions of files not open right now are forgotten after this long unseen, once
/// they have been looked for outside the globs (so an idle daemon does not carry the
/// positions of files deleted long ago).
const ENTRY_EXPIRY_SECS: u64 = 24 * 3600;
/// While a backlog is being drained (`more_pending`), the globs are re-scanned at most this
/// often, so a tight drain loop does not stat every file on every call.
const BUSY_RESCAN: Duration = Duration::from_secs(1);
/// A rotated-away file kept past its `rotate_wait` is looked at again no sooner than this.
const EXPIRY_RECHECK_MIN: Duration = Duration::from_millis(100);
/// Size of one read.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Saved positions looked for outside the globs per poll at most (see
/// [`Tailer::follow_rotated`]), so a restart with many gone files does not stall a poll.
const SEARCHES_PER_POLL: usize = 64;

/// One open file generation.
struct Tracked {
    file: File,
    dev: u64,
    inode: u64,
    path: PathBuf,
    /// The name the globs last selected it under, which its checkpoint entries carry: where
    /// a restart looks for it from, and what the config must still select for that search
    /// ([`Tailer::followed_outside_the_globs`]). `path` itself, except for a file found
    /// rotated out of the globs ([`Tailer::follow_rotated`]), which keeps the saved one.
    selected_path: PathBuf,
    fp: Option<Fingerprint>,
    id: Option<FileId>,
    reader: Reader,
    last_size: u64,
    last_mtime: (i64, i64),
    /// When the file stopped matching the globs (renamed away or deleted).
    gone_since: Option<Instant>,
    /// When a pause of the caller ([`Tailer::discover_only`]) first found it deleted (no
    /// link left); cleared when reading resumes.
    deleted_seen: Option<Instant>,
    /// When its size or mtime was last seen to change (or it was opened): the file idle
    /// longest is closed first when the open-file budget is short.
    last_change: Instant,
    /// Unix time the file was last seen by a scan.
    seen_unix: u64,
    /// Marker computed for this offset (offset, len, hash), so unchanged files cost nothing.
    marker_cache: Option<(u64, u32, [u8; 16])>,
    /// The last checkpoint entry made for the file, with the identity it was made for:
    /// taken again while offset, identity, path and scan time are unchanged. Snapshots are
    /// taken after every poll; rebuilding thousands of entries each time was most of a
    /// light poll's cost. Cleared with `marker_cache` when the content changes.
    entry_cache: Option<(FileId, Arc<Entry>)>,
    /// The last fingerprint attempt found no complete first line (retried on change).
    fp_incomplete: bool,
    /// Where to start is not decided yet: the file was found before it had a complete first
    /// line, or as a possible copy still being written of an open file. Nothing is read
    /// until [`Tailer::decide_awaiting`] settles it (copy of another file, or new).
    awaiting: bool,
    /// Kept open at shutdown for its unterminated last line: its checkpoint entry carries
    /// what there is of the line ([`checkpoint::Fragment`]).
    keep_fragment: bool,
}

/// A reader starting at `offset` of `file`, with the bytes before it as its tail (so a
/// rewrite of them is noticed before anything new is read).
fn reader_at(file: &File, offset: u64) -> Reader {
    let mut reader = Reader::new(offset);
    if offset > 0 {
        let len = offset.min(reader::TAIL_KEEP as u64);
        let mut before = vec![0u8; len as usize];
        if let Ok(n) = read_full_at(file, &mut before, offset - len) {
            if n == before.len() {
                reader.seed_tail(&before);
            }
        }
    }
    reader
}

impl Tracked {
    /// A file just opened, to be read from `offset` (see [`Tracked::awaiting`]).
    fn opened(
        file: File,
        md: &std::fs::Metadata,
        path: PathBuf,
        fp: Option<Fingerprint>,
        offset: u64,
        awaiting: bool,
        now_unix: u64,
    ) -> Tracked {
        let (dev, inode) = (md.dev(), md.ino());
        Tracked {
            dev,
            inode,
            selected_path: path.clone(),
            path,
            id: fp
                .as_ref()
                .filter(|_| !awaiting)
                .map(|fp| FileId::new(dev, inode, fp.hash)),
            fp_incomplete: awaiting && fp.is_none(),
            fp: fp.filter(|_| !awaiting),
            reader: reader_at(&file, offset),
            last_size: md.len(),
            last_mtime: (md.mtime(), md.mtime_nsec()),
            gone_since: None,
            deleted_seen: None,
            last_change: Instant::now(),
            seen_unix: now_unix,
            marker_cache: None,
            entry_cache: None,
            awaiting,
            keep_fragment: false,
            file,
        }
    }

    /// `lost` receives the position in the content it had, for a copy of that content still
    /// waiting for the open-file budget or undecided (see `Tailer::stale_saved`).
    fn reset_truncated(&mut self, why: &str, counters: &mut TailCounters, lost: &mut Vec<Entry>) {
        tracing::warn!(
            path = %self.path.display(),
            read_pos = self.reader.read_pos(),
            why,
            "file truncated or rewritten; reading it again from the start"
        );
        counters.files_truncated += 1;
        lost.extend(self.entry_here().filter(|e| !e.awaiting_first_line));
        self.reader = Reader::new(0);
        self.fp = None;
        self.id = None;
        self.marker_cache = None;
        self.entry_cache = None;
        self.fp_incomplete = false;
    }

    /// The checkpoint entry for what was handed out so far (the reader's offset), with its
    /// marker (computed once per offset). Before the file has an identity (no complete first
    /// line yet, or a possible copy not decided yet), an entry by dev + inode alone: should
    /// the daemon stop and the file be rotated out of the globs before it starts again, a
    /// restart still finds it, by its inode (see [`rotated::find_same_inode`]).
    fn entry_here(&mut self) -> Option<Entry> {
        let Some(id) = self.id.clone() else {
            return (self.reader.offset() == 0).then(|| {
                Entry::awaiting_first_line(
                    self.dev,
                    self.inode,
                    self.selected_path.to_string_lossy().into_owned(),
                    self.seen_unix,
                )
            });
        };
        let offset = self.reader.offset();
        let (len, hash) = match self.marker_cache {
            Some((o, len, hash)) if o == offset => (len, hash),
            _ => match marker_for(self) {
                Some((len, hash)) => {
                    self.marker_cache = Some((offset, len, hash));
                    (len, hash)
                }
                None => (0, [0u8; 16]),
            },
        };
        let mut e = self.entry(&id, offset);
        e.set_marker(len, &hash);
        if self.keep_fragment {
            e.fragment = self
                .reader
                .unterminated()
                .map(|(raw, len)| checkpoint::Fragment::new(&raw[..raw.len().min(RAW_CAP)], len));
        }
        Some(e)
    }

    /// [`Tracked::entry_here`], shared: the cached entry while nothing it holds has changed.
    fn entry_shared(&mut self) -> Option<Arc<Entry>> {
        use std::os::unix::ffi::OsStrExt;
        let Some(id) = &self.id else {
            return self.entry_here().map(Arc::new);
        };
        if let Some((cached_id, e)) = &self.entry_cache {
            if cached_id == id
                && e.offset == self.reader.offset()
                && e.updated == self.seen_unix
                && e.path.as_bytes() == self.selected_path.as_os_str().as_bytes()
            {
                return Some(e.clone());
            }
        }
        let id = id.clone();
        let e = Arc::new(self.entry_here()?);
        self.entry_cache = Some((id, e.clone()));
        Some(e)
    }

    /// A [`Tailer::discovered`] entry: where reading this content starts, found in `poll`.
    fn discovery(&mut self, poll: u64) -> Option<(u64, Entry)> {
        self.entry_here().map(|e| (poll, e))
    }

    /// The checkpoint entry for this file at `offset` (its marker is set by the caller).
    fn entry(&self, id: &FileId, offset: u64) -> Entry {
        Entry {
            dev: self.dev,
            inode: self.inode,
            fingerprint: id.fingerprint_hex(),
            path: self.selected_path.to_string_lossy().into_owned(),
            offset,
            updated: self.seen_unix,
            marker: String::new(),
            marker_len: 0,
            awaiting_first_line: false,
            finished: false,
            fragment: None,
        }
    }
}

/// The tailer. See the module documentation.
pub struct Tailer {
    opts: TailOptions,
    /// `opts.exclude`, compiled.
    exclude: discovery::Exclude,
    files: Vec<Tracked>,
    /// `files` by path, for light polls ([`Tailer::index_of`]); may be stale.
    path_index: HashMap<PathBuf, usize>,
    /// Saved positions not matched to an open file, by (dev, inode).
    saved: HashMap<(u64, u64), Vec<Entry>>,
    /// Files closed while idle for the open-file budget (their position is in `saved`),
    /// with their `stat` then: they stay closed while a scan finds it unchanged.
    parked: HashMap<(u64, u64), discovery::Stat>,
    /// Files found by the last scan and not open yet, in scan order, each with whether it
    /// was present at the very first start (for `StartAt::End`). Opened as the budget allows.
    waiting: Vec<(discovery::Found, bool)>,
    /// Files were left waiting for the budget (so the warning is logged once per episode).
    budget_short: bool,
    /// Positions in content that is gone (an inode opened again with other content, a file
    /// truncated while open), kept while files wait for the open-file budget or are
    /// undecided: one of them may be a copy of that content (copytruncate), which continues
    /// from such a position as from a saved one. Not checkpointed; dropped at the first poll
    /// with no file waiting or undecided.
    stale_saved: Vec<Entry>,
    /// (dev, inode) of every file the last scan found.
    last_found: HashSet<(u64, u64)>,
    /// Saved positions (dev, inode, fingerprint) already looked for outside the globs
    /// ([`Tailer::follow_rotated`]), or that need not be (closed after `rotate_wait`).
    searched: HashSet<(u64, u64, String)>,
    /// Compressed rotations being read from a saved position.
    compressed: Vec<compressed::Compressed>,
    /// Saved positions are left to look for (at most [`SEARCHES_PER_POLL`] per poll).
    search_pending: bool,
    /// No checkpoint existed at open and the first scan has not happened yet.
    first_start: bool,
    /// What is on disk (`None`: nothing yet, so the first commit always writes).
    last_written: Option<Vec<Entry>>,
    /// Content no checkpoint holds yet, at the position reading it starts (a new file at 0
    /// or, under `start_at = "end"` and `ignore_older`, at its end; a file rewritten while
    /// stopped or truncated while open, at 0), with the number of the poll that found it.
    /// Written into every checkpoint ([`Tailer::commit_discoveries`] right after that poll,
    /// and each commit) until a snapshot taken after that poll is committed, which holds
    /// what was read from it since: a crash before then still knows the content, so a
    /// restart looks for it if it was rotated out of the globs (compressed, say) meanwhile.
    discovered: Vec<(u64, Entry)>,
    /// Polls so far (numbers `discovered` entries and snapshots).
    polls: u64,
    last_scan: Option<Instant>,
    last_more_pending: bool,
    /// When the next full poll may close a rotated-away file ([`Tailer::next_expiry`]).
    next_expiry: Option<Instant>,
    /// The caller cannot take lines: [`Tailer::discover_only`] was called since the last
    /// poll.
    paused: bool,
    buf: Vec<u8>,
    counters: TailCounters,
    /// Paths whose open failed, so the warning is logged once, not on every scan.
    open_failed: HashSet<PathBuf>,
    /// Saved positions whose unterminated line is lost, to reject (see
    /// [`Tailer::fragment_lost`]).
    lost_fragments: Vec<Entry>,
    /// Files the globs would select but for a name that is not UTF-8.
    non_utf8: discovery::NonUtf8Names,
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("include", &self.opts.include)
            .field("open_files", &self.files.len())
            .field("counters", &self.counters)
            .finish()
    }
}

fn unix_now() -> u64 {
    u64::try_from(crate::clock::now().timestamp()).unwrap_or(0)
}

/// Offset just after the last `\n` among the first `size` bytes (0 if there is none).
fn end_offset(file: &File, size: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let want = (end - start) as usize;
        let n = read_full_at(file, &mut buf[..want], start)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The file's `stat` if it may be closed while idle: it still matches the globs (a
/// rotated-away file is read through its handle until `rotate_wait`: it could not be found
/// again), has not changed since it was last looked at, and is read to its end or not read
/// at all yet (no complete first line, or its start undecided: opened again, it is decided
/// as if found then).
fn idle(t: &Tracked) -> Option<discovery::Stat> {
    if t.gone_since.is_some() {
        return None;
    }
    let stat = discovery::Stat::of(&t.file.metadata().ok()?);
    if stat.size != t.last_size || stat.mtime != t.last_mtime {
        return None;
    }
    let done = t.id.is_some() && stat.size == t.reader.read_pos();
    let unread = t.awaiting || (t.id.is_none() && t.reader.offset() == 0);
    (done || unread).then_some(stat)
}

/// The order checkpoint entries are kept and written in.
fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|a, b| (a.dev, a.inode, &a.fingerprint).cmp(&(b.dev, b.inode, &b.fingerprint)));
}

/// Adds to `entries` (sorted as checkpoints are) the discovered content it has no entry for
/// (an entry for other content in the same inode does not count: the inode may have been
/// reused, as logrotate's `create` does with the inode of the rotation it just deleted). A
/// file found before its first line is added even beside an entry of its inode with a first
/// line; should that entry be the same file, a restart follows that one
/// ([`Tailer::follow_unidentified`]).
fn with_discovered(entries: &mut Vec<Entry>, discovered: &[(u64, Entry)]) {
    let known: HashSet<(u64, u64, &str)> = entries
        .iter()
        .map(|e| (e.dev, e.inode, e.fingerprint.as_str()))
        .collect();
    let missing: Vec<Entry> = discovered
        .iter()
        .map(|(_, d)| d)
        .filter(|d| !known.contains(&(d.dev, d.inode, d.fingerprint.as_str())))
        .cloned()
        .collect();
    let before = entries.len();
    entries.extend(missing);
    if entries.len() > before {
        sort_entries(entries);
    }
}

/// What [`Tailer::searched`] remembers of a saved position.
fn search_key(e: &Entry) -> (u64, u64, String) {
    (e.dev, e.inode, e.fingerprint.clone())
}

fn marker_ok(file: &File, e: &Entry) -> io::Result<bool> {
    if e.marker_len == 0 {
        return Ok(true);
    }
    Ok(match identity::marker(file, e.offset)? {
        Some((len, hash)) => len == e.marker_len && Some(hash) == e.marker_bytes(),
        None => false,
    })
}

/// The first bytes (at most [`RAW_CAP`]) of the `len` bytes at `offset` that a rejected
/// record keeps of a file being closed; what cannot be read is left out.
fn rejected_head(file: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut raw = vec![0u8; len.min(RAW_CAP as u64) as usize];
    let n = read_full_at(file, &mut raw, offset).unwrap_or(0);
    raw.truncate(n);
    raw
}

/// The checkpoint marker for the file's current offset, from the bytes kept in memory when
/// possible (the file may have been truncated since they were read), else from the file.
fn marker_for(t: &Tracked) -> Option<(u32, [u8; 16])> {
    let offset = t.reader.offset();
    let want = offset.min(identity::MARKER_MAX_BYTES) as usize;
    if want == 0 {
        return Some((0, [0u8; 16]));
    }
    let tail = t.reader.tail();
    let buffered = t.reader.buffered();
    if buffered <= tail.len() as u64 {
        let before = &tail[..tail.len() - buffered as usize];
        if before.len() >= want {
            let bytes = &before[before.len() - want..];
            return Some((want as u32, identity::marker_hash(bytes)));
        }
    }
    identity::marker(&t.file, offset).ok().flatten()
}

/// Checks that what was already read is still there: the bytes just before `read_pos` and,
/// when size or mtime changed, the fingerprint window. Called when size or mtime changed and
/// on every poll that re-scanned the globs (mtime granularity is a clock tick, too coarse to
/// rely on alone for a truncate-and-rewrite to the same size).
fn content_intact(t: &Tracked, size: u64, changed: bool) -> io::Result<bool> {
    let tail = t.reader.tail();
    if !tail.is_empty() {
        let start = t.reader.read_pos() - tail.len() as u64;
        let mut now = vec![0u8; tail.len()];
        if read_full_at(&t.file, &mut now, start)? != now.len() || now != tail {
            return Ok(false);
        }
    }
    if let (true, Some(fp)) = (changed, &t.fp) {
        if !identity::still_matches(&t.file, size, fp)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `file`'s first `size` bytes are `src`'s (the whole prefix up to 1 MiB, else its
/// last 64 KiB).
fn same_prefix(file: &File, src: &File, size: u64) -> bool {
    const WHOLE: u64 = 1 << 20;
    const LAST: u64 = 64 << 10;
    let start = if size <= WHOLE { 0 } else { size - LAST };
    let mut pos = start;
    let mut a = vec![0u8; CHUNK];
    let mut b = vec![0u8; CHUNK];
    while pos < size {
        let want = ((size - pos) as usize).min(CHUNK);
        match (
            read_full_at(file, &mut a[..want], pos),
            read_full_at(src, &mut b[..want], pos),
        ) {
            (Ok(n), Ok(m)) if n == want && m == want && a[..want] == b[..want] => {}
            _ => return false,
        }
        pos += want as u64;
    }
    true
}

/// Hands one piece of a file's bytes to the sink as an item.
fn emit(
    id: &FileId,
    path: &Path,
    offset: u64,
    piece: Piece<'_>,
    counters: &mut TailCounters,
    sink: &mut dyn FnMut(TailItem<'_>),
) {
    match piece {
        Piece::Line(bytes) => {
            counters.lines += 1;
            sink(TailItem::Line {
                file: id,
                path,
                offset,
                bytes,
            })
        }
        Piece::Rejected { reason, raw, len } => {
            counters.rejected += 1;
            sink(TailItem::Rejected {
                file: id,
                path,
                offset,
                reason,
                raw,
                len,
            })
        }
    }
}

/// Positions one pass over a file hands back to the tailer.
struct Noted<'a> {
    /// The position in content a truncation took away ([`Tailer::stale_saved`]).
    lost: &'a mut Vec<Entry>,
    /// The start of content identified in this pass ([`Tailer::discovered`]).
    discovered: &'a mut Vec<(u64, Entry)>,
    /// The poll it is part of.
    poll: u64,
}

/// Reads one file for one pass. Returns (items, more bytes pending).
fn service(
    t: &mut Tracked,
    opts: &TailOptions,
    buf: &mut Vec<u8>,
    counters: &mut TailCounters,
    noted: Noted<'_>,
    full_check: bool,
    sink: &mut dyn FnMut(TailItem<'_>),
) -> io::Result<(usize, bool)> {
    if t.awaiting {
        return Ok((0, false));
    }
    let md = t.file.metadata()?;
    let size = md.len();
    let mtime = (md.mtime(), md.mtime_nsec());
    let changed = size != t.last_size || mtime != t.last_mtime;
    if size < t.reader.read_pos() {
        t.reset_truncated("size below read position", counters, noted.lost);
    } else if (changed || full_check) && !content_intact(t, size, changed)? {
        t.reset_truncated("bytes already read have changed", counters, noted.lost);
    }
    t.last_size = size;
    t.last_mtime = mtime;
    if changed {
        t.last_change = Instant::now();
    }
    if t.id.is_none() {
        if t.fp_incomplete && !changed && !full_check {
            return Ok((0, false));
        }
        // No complete first line yet means no complete line at all: nothing to read.
        match identity::compute(&t.file, size)? {
            Some(fp) => {
                t.id = Some(FileId::new(t.dev, t.inode, fp.hash));
                t.fp = Some(fp);
                t.fp_incomplete = false;
                // Content no checkpoint knows yet (new, or after a truncation).
                noted.discovered.extend(t.discovery(noted.poll));
            }
            None => {
                t.fp_incomplete = true;
                return Ok((0, false));
            }
        }
    }
    let budget = opts.read_budget_bytes.max(1);
    let max_line = opts.max_line_bytes;
    let mut read = 0usize;
    let mut items = 0usize;
    while read < budget && t.reader.read_pos() < size {
        let want = ((size - t.reader.read_pos()) as usize)
            .min(CHUNK)
            .min(budget - read);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let n = read_full_at(&t.file, &mut buf[..want], t.reader.read_pos())?;
        if n == 0 {
            break;
        }
        read += n;
        let Tracked {
            reader, id, path, ..
        } = t;
        let Some(id) = id.as_ref() else { break };
        let path: &Path = path;
        reader.feed(&buf[..n], max_line, &mut |offset, piece| {
            items += 1;
            emit(id, path, offset, piece, counters, sink);
        });
    }
    Ok((items, t.reader.read_pos() < size))
}

impl Tailer {
    /// Loads checkpoints and prepares the tailer (no file is opened until the first `poll`).
    /// A corrupt checkpoint file is logged, moved aside to `checkpoints.json.corrupt-<unix
    /// time>`, and every file is read from its start (whatever `start_at` says: it is not a
    /// first start); a missing file means first start.
    pub fn open(opts: TailOptions) -> Result<Tailer, TailError> {
        discovery::validate(&opts.include)
            .map_err(|(pattern, source)| TailError::Pattern { pattern, source })?;
        let exclude = discovery::Exclude::new(&opts.exclude)
            .map_err(|(pattern, source)| TailError::Pattern { pattern, source })?;
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| TailError::StateDir {
            path: opts.state_dir.clone(),
            source,
        })?;
        // A corrupt checkpoint is not a first start: files are read from 0 even under
        // `StartAt::End` (lines read before repeat with identical ids; skipping to the end
        // would lose whatever was written while the daemon was stopped).
        let (first_start, entries) = match checkpoint::load(&opts.state_dir, unix_now())? {
            Loaded::Missing => (true, None),
            Loaded::Corrupt { .. } => (false, None),
            Loaded::Entries(e) => (false, Some(e)),
        };
        let mut saved: HashMap<(u64, u64), Vec<Entry>> = HashMap::new();
        // Positions read to their end from a compressed rotation are not looked for again.
        let mut searched = HashSet::new();
        let mut last_written = None;
        if let Some(mut entries) = entries {
            sort_entries(&mut entries);
            for e in &entries {
                saved.entry((e.dev, e.inode)).or_default().push(e.clone());
                if e.finished {
                    searched.insert(search_key(e));
                }
            }
            last_written = Some(entries);
        }
        Ok(Tailer {
            opts,
            exclude,
            files: Vec::new(),
            path_index: HashMap::new(),
            saved,
            parked: HashMap::new(),
            waiting: Vec::new(),
            budget_short: false,
            stale_saved: Vec::new(),
            last_found: HashSet::new(),
            searched,
            compressed: Vec::new(),
            search_pending: false,
            first_start,
            last_written,
            discovered: Vec::new(),
            polls: 0,
            last_scan: None,
            last_more_pending: false,
            next_expiry: None,
            paused: false,
            buf: Vec::new(),
            counters: TailCounters::default(),
            open_failed: HashSet::new(),
            lost_fragments: Vec::new(),
            non_utf8: discovery::NonUtf8Names::default(),
        })
    }

    /// While the caller cannot take lines (its writes fail and intake is paused): re-scans
    /// the globs, at most once per `min_interval` unless `rescan_now` (a file event said
    /// something was created, renamed or removed), and opens the files found, reading
    /// nothing. A file created and then rotated out of the globs during a long pause is then
    /// held open and read when intake resumes, like any file renamed away while open;
    /// unseen, it would be lost.
    ///
    /// A deleted file is not held for ever, though: its disk space is freed only when it is
    /// closed, and a full disk shared with the logs would stay full for the service, whose
    /// logrotate deleted it to make room. Once this pause has found it deleted (no link
    /// left) for `close_deleted_after`, it is closed ([`Tailer::close`]): the bytes not read
    /// are handed to `sink` as one `Rejected` item saying how many (the first 4 KiB as its
    /// raw bytes) and logged. A file renamed away but not deleted stays open: closing it
    /// would free nothing. Returns the number of items handed out.
    pub fn discover_only(
        &mut self,
        min_interval: Duration,
        rescan_now: bool,
        sink: &mut dyn FnMut(TailItem<'_>),
    ) -> usize {
        let now = Instant::now();
        self.paused = true;
        if rescan_now
            || self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= min_interval)
        {
            // A poll of its own: what it finds is in the snapshots of later polls.
            self.polls += 1;
            self.discover(now);
            self.last_scan = Some(now);
            self.admit_waiting();
        }
        let mut items = 0;
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.files.len() {
            let t = &mut self.files[i];
            let deleted = t.gone_since.is_some() && t.file.metadata().is_ok_and(|m| m.nlink() == 0);
            if !deleted {
                t.deleted_seen = None;
                i += 1;
                continue;
            }
            // (A bound too far off to add, "100000000y", is never reached.)
            let at = t
                .deleted_seen
                .get_or_insert(now)
                .checked_add(self.opts.close_deleted_after);
            if at.is_some_and(|at| now >= at) {
                let t = self.files.remove(i);
                items += self.close(
                    t,
                    sink,
                    "while intake was paused (input.close_deleted_after)",
                );
            } else {
                if let Some(at) = at {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                i += 1;
            }
        }
        self.next_expiry = next;
        items
    }

    /// Discovers files (glob re-scan), detects rotation/truncation, reads new complete lines
    /// (each file at most `read_budget_bytes` per call) and hands every item to `sink` in
    /// file order. Per-file I/O problems are logged, counted and retried on the next poll
    /// rather than returned, so one bad file cannot stop the others. The globs are re-scanned
    /// on every call except while a backlog is being drained (previous call returned
    /// `more_pending`), where they are re-scanned at most once a second.
    ///
    /// At most `max_open_files` files are held open. When more match, files read to their
    /// end that still match the globs are closed, the one idle longest first, and opened
    /// again (resuming from their position, as after a restart) when a scan sees their
    /// size, mtime or ctime change; files that find no room wait for the next polls
    /// (`more_pending` while closing an idle file would make room). The cost: lines written
    /// to a closed file are read only if it is still under a matching name at the next
    /// scan, as for lines written while the daemon is stopped.
    pub fn poll(&mut self, sink: &mut dyn FnMut(TailItem<'_>)) -> Result<PollOutcome, TailError> {
        self.polls += 1;
        if std::mem::take(&mut self.paused) {
            // A later pause counts its own time from when it finds a file deleted.
            for t in &mut self.files {
                t.deleted_seen = None;
            }
        }
        let now = Instant::now();
        let rescan = !self.last_more_pending
            || self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= BUSY_RESCAN);
        if rescan {
            self.discover(now);
            self.last_scan = Some(now);
        }
        self.admit_waiting();
        // Positions lost to a truncation in the last poll are looked for at once: the copy
        // copytruncate made may be compressed and deleted soon. Before the undecided files
        // are settled, so that one found by its inode is settled (and read) in this poll.
        let mut out = PollOutcome::default();
        if rescan || !self.stale_saved.is_empty() || self.search_pending {
            self.search_pending = self.follow_rotated(now);
            out.more_pending |= self.search_pending;
        }
        out.items += self.reject_lost_fragments(sink);
        self.decide_awaiting(rescan);
        let stale_before = self.stale_saved.len();
        for i in 0..self.files.len() {
            if let Some((items, more)) = self.read_file(i, rescan, sink) {
                out.items += items;
                out.more_pending |= more;
            }
        }
        if self.stale_saved.len() > stale_before {
            out.more_pending = true;
        }
        self.read_compressed(&mut out, sink);
        // Close rotated-away files read to their end and quiet for rotate_wait. Counted from
        // the rotation or the last change seen, whichever is later, and never while bytes
        // are unread: a backlog, or a pause of the caller (writes failing), must not cost
        // lines the file still holds.
        let mut i = 0;
        let mut next_expiry: Option<Instant> = None;
        while i < self.files.len() {
            let t = &self.files[i];
            // Without an identity yet (no complete first line, or a copy still undecided)
            // nothing of it can be read: only time decides.
            let readable = t.id.is_some() && !t.awaiting;
            let expired = t.gone_since.is_some_and(|g| {
                now.duration_since(g.max(t.last_change)) >= self.opts.rotate_wait
                    && (!readable || t.reader.read_pos() >= t.last_size)
                    // Written to since this poll looked at it: look again first.
                    && t.file.metadata().map_or(true, |m| m.len() == t.last_size)
            });
            if expired {
                let t = self.files.remove(i);
                out.items += self.close(t, sink, "after rotate_wait");
            } else {
                if let Some(g) = t.gone_since {
                    let wait = self.opts.rotate_wait;
                    let at = match g.max(t.last_change).checked_add(wait) {
                        // Due but kept (bytes unread, or written to just now): looked at
                        // again a rotate_wait on, not at once (which would spin), and not
                        // only at the next re-scan (which may be an hour away).
                        Some(at) if at <= now => now.checked_add(wait.max(EXPIRY_RECHECK_MIN)),
                        at => at,
                    };
                    if let Some(at) = at {
                        next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
                    }
                }
                i += 1;
            }
        }
        self.next_expiry = next_expiry;
        // Files left waiting get in on the next poll if an open one can make room.
        if !self.waiting.is_empty()
            && (self.matching_open() < self.opts.max_open_files
                || self.files.iter().any(|t| idle(t).is_some()))
        {
            out.more_pending = true;
        }
        self.last_more_pending = out.more_pending;
        Ok(out)
    }

    /// When a full [`Tailer::poll`] should be made, whatever the re-scan interval, to close
    /// a rotated-away file whose `rotate_wait` runs out then (as of the last full poll;
    /// light polls do not read such files, so they do not move it). Without it, a file
    /// renamed away or deleted was closed only at the next re-scan, and a deleted log's disk
    /// space held up to `rescan_interval` past `rotate_wait`.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// A light poll, for when file-system events said only that some logs were written to
    /// (`written`, their paths): reads those files on, and nothing else. No re-scan of the
    /// globs, no search for rotated files, no decisions on files found without an identity,
    /// no `rotate_wait`: a full [`Tailer::poll`] does those, and the caller must make one at
    /// least every `rescan_interval` and after any other event. With thousands of matching
    /// files, a full poll costs milliseconds (a stat of every path and every open file); a
    /// service writing a few lines at a time wakes the caller hundreds of times a second.
    ///
    /// Returns `None`, having read nothing, when a path is not that of an open file whose
    /// reading is decided (a new file, a closed idle one, one without a complete first line,
    /// a possible copy): those need a full poll. A truncation found here sets `more_pending`,
    /// so the caller's next poll is a full one and looks for the lost content's copy.
    pub fn poll_written(
        &mut self,
        written: &HashSet<PathBuf>,
        sink: &mut dyn FnMut(TailItem<'_>),
    ) -> Result<Option<PollOutcome>, TailError> {
        let mut chosen = Vec::with_capacity(written.len());
        for p in written {
            let Some(i) = self.index_of(p) else {
                return Ok(None);
            };
            let t = &self.files[i];
            if t.id.is_none() || t.awaiting {
                return Ok(None);
            }
            chosen.push(i);
        }
        self.polls += 1;
        let mut out = PollOutcome::default();
        let stale_before = self.stale_saved.len();
        // In file order, as a full poll hands items out.
        chosen.sort_unstable();
        for i in chosen {
            // As careful as a full poll with the files it reads: a rewrite to the same size
            // within one mtime tick is told by the bytes before the position.
            match self.read_file(i, true, sink) {
                Some((items, more)) => {
                    out.items += items;
                    out.more_pending |= more;
                }
                // Retried by the next poll, a full one, at once.
                None => out.more_pending = true,
            }
        }
        if self.stale_saved.len() > stale_before {
            out.more_pending = true;
        }
        // `last_more_pending` stays as the last full poll left it: the full poll a light one
        // asks for (a truncation, the read budget) re-scans the globs as any other would.
        Ok(Some(out))
    }

    /// One pass over `files[i]` ([`service`]): `(items, more bytes pending)`, or `None` when
    /// reading failed (logged and counted; the file is retried by the next poll).
    fn read_file(
        &mut self,
        i: usize,
        full_check: bool,
        sink: &mut dyn FnMut(TailItem<'_>),
    ) -> Option<(usize, bool)> {
        let t = &mut self.files[i];
        let noted = Noted {
            lost: &mut self.stale_saved,
            discovered: &mut self.discovered,
            poll: self.polls,
        };
        match service(
            t,
            &self.opts,
            &mut self.buf,
            &mut self.counters,
            noted,
            full_check,
            sink,
        ) {
            Ok(read) => Some(read),
            Err(e) => {
                self.counters.read_errors += 1;
                tracing::warn!(path = %t.path.display(), error = %e, "read failed; will retry");
                None
            }
        }
    }

    /// The open file under `path` that still matches the globs, from [`Tailer::path_index`]
    /// (rebuilt when it does not hold the answer: files come, go and are renamed between
    /// light polls only by full polls, which are rare next to light ones).
    fn index_of(&mut self, path: &Path) -> Option<usize> {
        let files = &self.files;
        let valid = |i: usize| {
            files
                .get(i)
                .is_some_and(|t| t.path == path && t.gone_since.is_none())
        };
        if let Some(&i) = self.path_index.get(path) {
            if valid(i) {
                return Some(i);
            }
        }
        self.path_index = files
            .iter()
            .enumerate()
            .filter(|(_, t)| t.gone_since.is_none())
            .map(|(i, t)| (t.path.clone(), i))
            .collect();
        self.path_index.get(path).copied().filter(|&i| valid(i))
    }

    /// Opens waiting files as far as the open-file budget allows, closing idle files to make
    /// room.
    fn admit_waiting(&mut self) {
        if self.waiting.is_empty() && !self.files.iter().any(|t| t.awaiting) {
            let searched = &self.searched;
            self.stale_saved
                .retain(|e| !searched.contains(&search_key(e)));
        }
        let max = self.opts.max_open_files.max(1);
        // Over the budget with nothing waiting: it was lowered (SIGHUP).
        let over = self.matching_open().saturating_sub(max);
        if over > 0 {
            self.park_idle(over);
        }
        if self.waiting.is_empty() {
            if self.budget_short {
                self.budget_short = false;
                tracing::info!(
                    open = self.files.len(),
                    "no file waits for input.max_open_files any more"
                );
            }
            return;
        }
        let need = (self.matching_open() + self.waiting.len()).saturating_sub(max);
        if need > 0 {
            self.park_idle(need);
        }
        let room = max
            .saturating_sub(self.matching_open())
            .min(self.waiting.len());
        let now_unix = unix_now();
        let admitted: Vec<_> = self.waiting.drain(..room).collect();
        let mut consumed = Vec::new();
        for (f, first) in &admitted {
            consumed.extend(self.start_tracking(f, now_unix, *first));
        }
        // Saved entries of an inode now open are used up: either one was this file, or they
        // belong to a deleted file whose inode number was reused or to its content before a
        // truncation. Removed only after the whole batch, so a copy opened in the same batch
        // can still match them; those of other content go to `stale_saved`, since a copy of
        // it may still wait, or be undecided (copytruncate of a closed idle file).
        for key in consumed {
            let own = self
                .files
                .iter()
                .find(|t| (t.dev, t.inode) == key)
                .and_then(|t| t.fp.map(|fp| fp.hash));
            let Some(v) = self.saved.remove(&key) else {
                continue;
            };
            // (An entry from before the file had a first line is this file: not lost content.)
            let other = |e: &Entry| {
                !e.awaiting_first_line && own.is_none_or(|h| e.fingerprint_bytes() != Some(h))
            };
            self.stale_saved.extend(v.into_iter().filter(other));
        }
        if !self.waiting.is_empty() && !self.budget_short {
            self.budget_short = true;
            tracing::warn!(
                max_open_files = max,
                waiting = self.waiting.len(),
                "more matching files than input.max_open_files: the others wait until open ones are read to their end and closed (raise the limit or narrow input.paths)"
            );
        }
    }

    /// Open files under matching names: what `max_open_files` counts. Rotated-away files
    /// still being read come on top (at most what rotates within `rotate_wait`); the budget's
    /// reserve (see [`crate::fd_limit`]) is for them and the daemon's own files.
    fn matching_open(&self) -> usize {
        self.files.iter().filter(|t| t.gone_since.is_none()).count()
    }

    /// Closes up to `n` open files that are read to their end and still match the globs,
    /// the ones idle longest first, keeping their positions as saved entries.
    fn park_idle(&mut self, n: usize) {
        let mut idle_files: Vec<(Instant, usize, discovery::Stat)> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, t)| idle(t).map(|stat| (t.last_change, i, stat)))
            .collect();
        idle_files.sort_by_key(|&(at, i, _)| (at, i));
        idle_files.truncate(n);
        // From the back, so the indices of the others stay valid.
        idle_files.sort_by_key(|&(_, i, _)| std::cmp::Reverse(i));
        for (_, i, stat) in idle_files {
            let mut t = self.files.remove(i);
            self.counters.files_parked += 1;
            self.parked.insert((t.dev, t.inode), stat);
            let Some(e) = t.entry_here() else { continue };
            tracing::debug!(path = %t.path.display(), offset = e.offset, "idle file closed for the open-file budget");
            self.saved.entry((t.dev, t.inode)).or_default().push(e);
        }
    }

    /// For shutdown: re-scans the globs, then reads every rotated-away file (renamed out of
    /// the globs or deleted) to its end, or until `deadline`. After a restart such a file
    /// may not be found again (deleted, or moved where [`rotated`] does not look), so lines
    /// written to it before the stop are read now. An unterminated last line is rejected now
    /// only if a restart will not find the file; else the checkpoint keeps its start.
    /// Files still matching the globs are left alone (they resume from the checkpoint).
    /// Returns the number of items handed to `sink`.
    pub fn finish_rotated_away(
        &mut self,
        sink: &mut dyn FnMut(TailItem<'_>),
        deadline: Instant,
    ) -> usize {
        let now = Instant::now();
        self.discover(now);
        self.last_scan = Some(now);
        self.decide_awaiting(true);
        let mut items = 0;
        for t in &mut self.files {
            if t.gone_since.is_none() {
                continue;
            }
            loop {
                match service(
                    t,
                    &self.opts,
                    &mut self.buf,
                    &mut self.counters,
                    Noted {
                        lost: &mut self.stale_saved,
                        discovered: &mut self.discovered,
                        poll: self.polls,
                    },
                    true,
                    sink,
                ) {
                    Ok((n, more)) => {
                        items += n;
                        if !more {
                            break;
                        }
                        if Instant::now() >= deadline {
                            tracing::warn!(path = %t.path.display(), "shutdown: stopped reading a rotated-away file before its end");
                            break;
                        }
                    }
                    Err(e) => {
                        self.counters.read_errors += 1;
                        tracing::warn!(path = %t.path.display(), error = %e, "read failed at shutdown");
                        break;
                    }
                }
            }
        }
        // A rotated-away file read to its end but for an unterminated last line: the writer
        // may still finish that line (logrotate's `create` renames the log while the
        // service writes to it). If a restart will find the file again ([`rotated::find`]),
        // it stays open until the checkpoint, which then holds the line's start: the restart
        // reads the line whole, or rejects it once it gives the file up. Otherwise (deleted,
        // moved out of reach) hand the line out as Rejected now, as the rotate_wait expiry
        // would, rather than lose it.
        let (stranded, kept): (Vec<Tracked>, Vec<Tracked>) =
            std::mem::take(&mut self.files).into_iter().partition(|t| {
                let size = t.file.metadata().map(|m| m.len()).unwrap_or(t.last_size);
                t.gone_since.is_some()
                    && t.reader.unterminated().is_some()
                    && size <= t.reader.read_pos()
            });
        self.files = kept;
        let mut listings = rotated::Listings::default();
        for mut t in stranded {
            if self.found_after_restart(&mut t, &mut listings) {
                tracing::info!(
                    path = %t.path.display(),
                    offset = t.reader.offset(),
                    "shutdown: a rotated-away file ends in an unterminated line; keeping its start in the checkpoint for the restart to read on"
                );
                t.keep_fragment = true;
                t.entry_cache = None;
                self.files.push(t);
            } else {
                items += self.close(t, sink, "at shutdown");
            }
        }
        items
    }

    /// Whether a restart will find `t`, a rotated-away file, again at the position it is read
    /// up to (as [`Tailer::follow_rotated`] looks for a saved position): the same file, under
    /// a name in its directory or in `rotated_dirs`.
    fn found_after_restart(&self, t: &mut Tracked, listings: &mut rotated::Listings) -> bool {
        let Some(e) = t.entry_here().filter(|e| !e.awaiting_first_line) else {
            return false;
        };
        if !self.followed_outside_the_globs(&e) {
            return false;
        }
        let key = (t.dev, t.inode);
        // Nothing the globs match at a restart is skipped: this file is not among them.
        matches!(
            rotated::find(&e, &self.opts.rotated_dirs, &|_, _| false, listings),
            Some(rotated::Found::Plain { md, .. }) if (md.dev(), md.ino()) == key
        )
    }

    /// Stops reading a rotated-away file: an unterminated last line (or only line) is handed
    /// out as `Rejected` (never silently dropped), unread bytes are logged, the position is
    /// kept in case the file comes back under a matching name.
    fn close(&mut self, t: Tracked, sink: &mut dyn FnMut(TailItem<'_>), when: &str) -> usize {
        let mut items = 0;
        let size = t.file.metadata().map(|m| m.len()).unwrap_or(t.last_size);
        let mut offset = t.reader.offset();
        let unread = size.saturating_sub(t.reader.read_pos());
        let never_read = t.id.is_none() && t.fp_incomplete;
        if never_read {
            // Its only line has no newline (and the file no identity, which takes a complete
            // first line). Handed out like any unterminated last line, under an identity made
            // from its bytes; a leading NUL hole (stale copytruncate writer) is not part of it.
            if let Ok(Some(start)) = identity::leading_nuls(&t.file, size) {
                let len = size - start;
                let raw = rejected_head(&t.file, start, len);
                let id = FileId::new(t.dev, t.inode, identity::marker_hash(&raw));
                items += 1;
                self.counters.rejected += 1;
                sink(TailItem::Rejected {
                    file: &id,
                    path: &t.path,
                    offset: start,
                    reason: format!(
                        "unterminated only line ({len} bytes, no newline) in a rotated-away file closed {when}"
                    ),
                    raw: &raw,
                    len: usize::try_from(len).unwrap_or(usize::MAX),
                });
            }
        } else if t.awaiting {
            // A copy still undecided holds only what its original had (read there).
            tracing::debug!(path = %t.path.display(), "closing an undecided copy");
        } else if unread > 0 {
            // Lost from the position handed out so far: a partial line held back goes too.
            let lost = size.saturating_sub(offset);
            self.counters.unread_bytes_dropped += lost;
            tracing::warn!(
                path = %t.path.display(),
                offset,
                unread_bytes = lost,
                "closing rotated-away file {when} with bytes not yet read: they are lost (a rejected record says so)"
            );
            if let Some(id) = &t.id {
                let raw = rejected_head(&t.file, offset, lost);
                items += 1;
                self.counters.rejected += 1;
                sink(TailItem::Rejected {
                    file: id,
                    path: &t.path,
                    offset,
                    // The kind (before the colon) names no number: it is a metric label.
                    reason: format!(
                        "bytes not read: a rotated-away file closed {when}, {lost} bytes from this offset to its end lost"
                    ),
                    raw: &raw,
                    len: usize::try_from(lost).unwrap_or(usize::MAX),
                });
            }
        } else if let Some(id) = &t.id {
            // A partial line, or one already too long that is being skipped (not held in
            // memory, but its bytes were read all the same).
            if let Some((raw, len)) = t.reader.unterminated() {
                let max = self.opts.max_line_bytes;
                let too_long = if len > max as u64 {
                    format!(", longer than max_line_bytes ({max})")
                } else {
                    String::new()
                };
                items += 1;
                self.counters.rejected += 1;
                sink(TailItem::Rejected {
                    file: id,
                    path: &t.path,
                    offset,
                    reason: format!(
                        "unterminated last line ({len} bytes, no newline{too_long}) in a rotated-away file closed {when}"
                    ),
                    raw: &raw[..raw.len().min(RAW_CAP)],
                    len: usize::try_from(len).unwrap_or(usize::MAX),
                });
                offset = t.reader.read_pos();
            }
        }
        self.counters.files_closed += 1;
        tracing::info!(path = %t.path.display(), "closed rotated-away file");
        if let Some(id) = &t.id {
            let mut e = t.entry(id, offset);
            // Followed to its end through its handle; what is written to it later is lost
            // by the rotate_wait contract, not looked for. (A restart does look for it
            // again: it may have been renamed on, and written to, meanwhile.)
            self.searched.insert(search_key(&e));
            let marker = if offset == t.reader.offset() {
                marker_for(&t)
            } else {
                identity::marker(&t.file, offset).ok().flatten()
            };
            if let Some((len, hash)) = marker {
                e.set_marker(len, &hash);
            }
            self.saved.entry((t.dev, t.inode)).or_default().push(e);
        }
        items
    }

    /// Re-scans the globs: notices renames, rotations and new files.
    fn discover(&mut self, now: Instant) {
        let found = &discovery::scan(&self.opts.include, &self.exclude);
        self.non_utf8
            .check(&self.opts.include, &self.exclude, found);
        let now_unix = unix_now();
        let by_key: HashMap<(u64, u64), usize> = found
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.dev, f.inode), i))
            .collect();
        let by_path: HashMap<&Path, (u64, u64)> = found
            .iter()
            .map(|f| (f.path.as_path(), (f.dev, f.inode)))
            .collect();
        let include = discovery::compile(&self.opts.include);
        // Open files whose name the config no longer selects (a reload took it out of
        // `input.paths` or put it into `input.exclude`).
        let mut deselected = Vec::new();
        for t in &mut self.files {
            let key = (t.dev, t.inode);
            match by_key.get(&key) {
                Some(&i) => {
                    t.seen_unix = now_unix;
                    if t.gone_since.take().is_some() {
                        tracing::info!(path = %found[i].path.display(), "rotated-away file matches again");
                    }
                    let new_path = &found[i].path;
                    if *new_path != t.path && by_path.get(t.path.as_path()) != Some(&key) {
                        tracing::info!(from = %t.path.display(), to = %new_path.display(), "file renamed");
                        t.path = new_path.clone();
                    }
                    t.selected_path.clone_from(&t.path);
                }
                None if !discovery::selects(&include, &self.exclude, &t.selected_path) => {
                    deselected.push(key);
                }
                None => {
                    if t.gone_since.is_none() {
                        self.counters.files_rotated += 1;
                        tracing::info!(
                            path = %t.path.display(),
                            rotate_wait = ?self.opts.rotate_wait,
                            "file renamed away or deleted; reading the open handle to its end"
                        );
                        t.gone_since = Some(now);
                    }
                }
            }
        }
        for key in deselected {
            self.stop_deselected(key);
        }
        let tracked: HashSet<(u64, u64)> = self.files.iter().map(|t| (t.dev, t.inode)).collect();
        // Still waiting from the first scan: those keep their `StartAt::End` treatment.
        let first: HashSet<(u64, u64)> = self
            .waiting
            .iter()
            .filter(|(_, first)| *first)
            .map(|(f, _)| (f.dev, f.inode))
            .collect();
        let mut waiting = Vec::new();
        for f in found {
            let key = (f.dev, f.inode);
            if tracked.contains(&key) {
                continue;
            }
            if let Some(v) = self.saved.get_mut(&key) {
                for e in v.iter_mut() {
                    e.updated = now_unix;
                }
            }
            if self.parked.get(&key) == Some(&f.stat) {
                continue;
            }
            let at_first_start = self.first_start || first.contains(&key);
            waiting.push((f.clone(), at_first_start));
        }
        // A closed idle file the scan no longer finds left the globs: it is known by its
        // saved position only, like any file closed after rotation.
        self.parked.retain(|key, _| by_key.contains_key(key));
        self.last_found = by_key.into_keys().collect();
        self.waiting = waiting;
        self.first_start = false;
    }

    /// Stops reading the open file `key`, whose name the config no longer selects, at once:
    /// a file the user took out of the inputs is not read on through its handle as a rotated
    /// one would be (a service writing to it would keep it read forever). Nothing is handed
    /// out for it now, not even an unterminated last line: its position is kept, so should
    /// the config select it again, reading resumes where it stopped (within the 24 hours a
    /// position is kept), and it is not looked for outside the globs meanwhile.
    fn stop_deselected(&mut self, key: (u64, u64)) {
        let Some(i) = self.files.iter().position(|t| (t.dev, t.inode) == key) else {
            return;
        };
        let mut t = self.files.remove(i);
        self.counters.files_closed += 1;
        tracing::info!(
            path = %t.path.display(),
            offset = t.reader.offset(),
            "file no longer selected by input.paths and input.exclude; stopped reading it"
        );
        if let Some(e) = t.entry_here() {
            self.searched.insert(search_key(&e));
            self.saved.entry(key).or_default().push(e);
        }
    }

    /// Whether the saved position `e` may be looked for outside the globs: only if the
    /// config still selects the name it was read under. Rotation leaves that name selected
    /// (its content moved away, a new file comes under it); a name the config stopped
    /// selecting is a log the user no longer wants read, at its own name or renamed.
    fn followed_outside_the_globs(&self, e: &Entry) -> bool {
        let include = discovery::compile(&self.opts.include);
        discovery::selects(&include, &self.exclude, Path::new(&e.path))
    }

    /// Opens a newly found file and decides where to start reading it. Returns the (dev,
    /// inode) it now tracks.
    /// `first`: the file was present at the very first start.
    fn start_tracking(
        &mut self,
        f: &discovery::Found,
        now_unix: u64,
        first: bool,
    ) -> Option<(u64, u64)> {
        let file = match File::open(&f.path) {
            Ok(file) => file,
            // Gone since the scan (renamed or deleted; a file may wait for the open-file budget
            // for a while): the next scan finds it under its new name, if any.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %f.path.display(), "file gone before it was opened");
                return None;
            }
            Err(e) => {
                // Not treated as deleted (Filebeat fd-exhaustion lesson): the saved position
                // stays, and the next scan tries again.
                self.counters.open_errors += 1;
                if self.open_failed.insert(f.path.clone()) {
                    tracing::warn!(path = %f.path.display(), error = %e, "cannot open file; will retry");
                } else {
                    tracing::debug!(path = %f.path.display(), error = %e, "cannot open file; will retry");
                }
                return None;
            }
        };
        self.open_failed.remove(&f.path);
        let md = match file.metadata() {
            Ok(md) if md.is_file() => md,
            Ok(_) => return None,
            Err(e) => {
                self.counters.open_errors += 1;
                tracing::warn!(path = %f.path.display(), error = %e, "cannot stat file; will retry");
                return None;
            }
        };
        // The handle is the truth (the path may have been replaced since the scan).
        let (dev, inode) = (md.dev(), md.ino());
        if self.files.iter().any(|t| t.dev == dev && t.inode == inode) {
            return None;
        }
        let size = md.len();
        let fp = match identity::compute(&file, size) {
            Ok(fp) => fp,
            Err(e) => {
                self.counters.read_errors += 1;
                tracing::warn!(path = %f.path.display(), error = %e, "cannot read file; will retry");
                return None;
            }
        };
        // A file closed while idle: its saved position is resumed as after a restart.
        let reopened = self.parked.remove(&(dev, inode)).is_some();
        let candidates = self.saved.get(&(dev, inode)).cloned().unwrap_or_default();
        let mut start = None;
        // Saved, but for content the file no longer holds: read from 0 as new content.
        let mut rewritten = false;
        if let Some(fp) = &fp {
            if let Some(e) = candidates
                .iter()
                .find(|e| e.fingerprint_bytes() == Some(fp.hash))
            {
                let valid = e.offset <= size && marker_ok(&file, e).unwrap_or(false);
                if valid {
                    if reopened {
                        self.counters.files_reopened += 1;
                    } else {
                        if e.path != f.path.to_string_lossy() {
                            tracing::info!(from = %e.path, to = %f.path.display(), "file was renamed while stopped; keeping its position");
                        }
                        self.counters.files_resumed += 1;
                    }
                    start = Some(e.offset);
                } else {
                    self.counters.files_truncated += 1;
                    tracing::warn!(
                        path = %f.path.display(),
                        saved_offset = e.offset,
                        size,
                        "file was truncated or rewritten while stopped; reading it from the start"
                    );
                    start = Some(0);
                    rewritten = true;
                }
            }
        }
        if let (None, Some(fp)) = (start, &fp) {
            start = self
                .copy_of_open_file(&file, size, fp, &f.path)
                .or_else(|| self.copy_of_saved(&file, size, fp, (dev, inode), &f.path));
        }
        // Seen before, with no complete first line: everything in it came since.
        let seen_unread = candidates.iter().any(|e| e.awaiting_first_line);
        // New to the tailer and not modified within `ignore_older`: only what is appended.
        let old = start.is_none()
            && fp.is_some()
            && !seen_unread
            && self.opts.ignore_older.is_some_and(|d| {
                md.modified()
                    .is_ok_and(|m| m + d < std::time::SystemTime::now())
            });
        let from_end = old || (first && self.opts.start_at == StartAt::End);
        // Not decidable yet: a file created empty and then filled (the copy logrotate's
        // copytruncate makes, under a name the globs match) or a copy still being written
        // must not be read from 0 as if new before it can be compared with its original.
        let awaiting = start.is_none()
            && !from_end
            && match &fp {
                None => true,
                Some(fp) => self.copy_in_progress(&file, size, fp),
            };
        if start.is_none() && candidates.iter().any(|e| !e.awaiting_first_line) {
            tracing::info!(
                path = %f.path.display(),
                "inode has a saved position for other content (reused inode or replaced file); reading it as a new file"
            );
        }
        let offset = match start {
            Some(o) => o,
            None if from_end => match end_offset(&file, size) {
                Ok(o) => o,
                Err(e) => {
                    self.counters.read_errors += 1;
                    tracing::warn!(path = %f.path.display(), error = %e, "cannot read file; will retry");
                    return None;
                }
            },
            None => 0,
        };
        if awaiting {
            tracing::debug!(path = %f.path.display(), "new file; waiting for a complete first line or copy before reading");
        } else if old {
            tracing::info!(path = %f.path.display(), offset, "new file not modified within input.ignore_older: reading only what is appended to it");
        } else if start.is_none() {
            tracing::info!(path = %f.path.display(), offset, "new file");
        }
        if !reopened {
            self.counters.files_added += 1;
        }
        self.files.push(Tracked::opened(
            file,
            &md,
            f.path.clone(),
            fp,
            offset,
            awaiting,
            now_unix,
        ));
        // Undecided ones by their inode (see `Tracked::entry_here`).
        if start.is_none() || rewritten {
            let polls = self.polls;
            self.discovered
                .extend(self.files.last_mut().and_then(|t| t.discovery(polls)));
        }
        Some((dev, inode))
    }

    /// Settles where to start in files whose start was left open (`Tracked::awaiting`), now
    /// that they may have a complete first line or be complete copies. Runs before any file
    /// is read in a poll, so an original truncated right after being copied still shows
    /// the state it was read in.
    fn decide_awaiting(&mut self, rescan: bool) {
        for i in 0..self.files.len() {
            let t = &self.files[i];
            if !t.awaiting {
                continue;
            }
            let (size, mtime) = match t.file.metadata() {
                Ok(md) => (md.len(), (md.mtime(), md.mtime_nsec())),
                Err(e) => {
                    tracing::debug!(path = %t.path.display(), error = %e, "stat failed; will retry");
                    continue;
                }
            };
            // Unchanged: the answer is the same, except for files without a first line yet
            // (a re-scan retries those, as `service` does). A prefix copy that stays a prefix
            // holds only lines already read from its original: it stays unread.
            if size == t.last_size && mtime == t.last_mtime && !(rescan && t.fp_incomplete) {
                continue;
            }
            let fp = match identity::compute(&t.file, size) {
                Ok(Some(fp)) => fp,
                Ok(None) => {
                    let t = &mut self.files[i];
                    t.last_size = size;
                    t.last_mtime = mtime;
                    t.fp_incomplete = true;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(path = %t.path.display(), error = %e, "read failed; will retry");
                    continue;
                }
            };
            let start = self
                .copy_of_open_file(&t.file, size, &fp, &t.path)
                .or_else(|| self.copy_of_saved(&t.file, size, &fp, (t.dev, t.inode), &t.path));
            if start.is_none() && self.copy_in_progress(&t.file, size, &fp) {
                let t = &mut self.files[i];
                t.last_size = size;
                t.last_mtime = mtime;
                t.fp_incomplete = false;
                continue;
            }
            let t = &mut self.files[i];
            let offset = start.unwrap_or(0);
            let new = start.is_none();
            if new {
                tracing::info!(path = %t.path.display(), offset, "new file");
            }
            t.reader = reader_at(&t.file, offset);
            t.id = Some(FileId::new(t.dev, t.inode, fp.hash));
            t.fp = Some(fp);
            t.fp_incomplete = false;
            t.awaiting = false;
            t.marker_cache = None;
            t.entry_cache = None;
            // Unchanged since the decision: `service` goes straight to reading.
            t.last_size = size;
            t.last_mtime = mtime;
            if new {
                self.discovered.extend(t.discovery(self.polls));
            }
        }
    }

    /// Whether a file with the same first line as an open file, shorter than that file's
    /// read position, holds exactly that file's bytes so far: a copy still being written
    /// (or a prefix copy, whose lines were all read already from the original). Compares
    /// the whole prefix up to 1 MiB, else its last 64 KiB.
    ///
    /// Files closed while idle count as open ones here: the original is opened again by its
    /// path (if that is still the same inode) and compared up to its saved position.
    fn copy_in_progress(&self, file: &File, size: u64, fp: &Fingerprint) -> bool {
        let of_open = self.files.iter().any(|src| {
            !src.awaiting
                && src.fp.is_some_and(|f| f.hash == fp.hash)
                && size < src.reader.read_pos()
                && same_prefix(file, &src.file, size)
        });
        of_open
            || self.parked.keys().any(|key| {
                self.saved.get(key).into_iter().flatten().any(|e| {
                    e.fingerprint_bytes() == Some(fp.hash)
                        && size < e.offset
                        && File::open(&e.path).is_ok_and(|src| {
                            src.metadata().is_ok_and(|md| (md.dev(), md.ino()) == *key)
                                && same_prefix(file, &src, size)
                        })
                })
            })
    }

    /// A new file with the same first line as an open file that also holds, at the same
    /// place, the last bytes read from that file is a copy of it (copytruncate with a copy
    /// name matching the globs, or a manual `cp`): reading it continues from the open file's
    /// position instead of repeating everything, and still picks up lines written to the
    /// original after the last poll but before the truncation. Returns the start offset.
    fn copy_of_open_file(
        &self,
        file: &File,
        size: u64,
        fp: &Fingerprint,
        path: &Path,
    ) -> Option<u64> {
        // Every open file with that first line is a candidate (files often share a header
        // line), not just the first one found.
        self.files
            .iter()
            .filter(|t| t.fp.is_some_and(|f| f.hash == fp.hash))
            .find_map(|src| {
                let tail = src.reader.tail();
                let read_pos = src.reader.read_pos();
                if tail.is_empty() || size < read_pos {
                    return None;
                }
                let mut here = vec![0u8; tail.len()];
                match read_full_at(file, &mut here, read_pos - tail.len() as u64) {
                    Ok(n) if n == here.len() && here == tail => {
                        tracing::info!(
                            path = %path.display(),
                            original = %src.path.display(),
                            offset = src.reader.offset(),
                            "new file is a copy of an open file (copytruncate?); continuing from its position"
                        );
                        Some(src.reader.offset())
                    }
                    _ => None,
                }
            })
    }

    /// Like [`Tailer::copy_of_open_file`] for files known only from the checkpoint (copy or
    /// cross-device move made while the daemon was stopped): same first line as a saved
    /// entry of another inode and the same bytes before its saved offset.
    fn copy_of_saved(
        &self,
        file: &File,
        size: u64,
        fp: &Fingerprint,
        key: (u64, u64),
        path: &Path,
    ) -> Option<u64> {
        let e = self
            .saved
            .values()
            .flatten()
            .chain(&self.stale_saved)
            .find(|e| {
                (e.dev, e.inode) != key
                    && e.marker_len > 0
                    && e.offset <= size
                    && e.fingerprint_bytes() == Some(fp.hash)
                    && marker_ok(file, e).unwrap_or(false)
            })?;
        tracing::info!(
            path = %path.display(),
            original = %e.path,
            offset = e.offset,
            "new file is a copy of a file in the checkpoint; continuing from its position"
        );
        Some(e.offset)
    }

    /// Looks for the content of saved positions whose files left the globs while not open
    /// (see [`rotated`]), once per position, and reads on where it is found: an uncompressed
    /// file is opened as a rotated-away file (read to its end, closed after `rotate_wait`),
    /// a compressed one is read by [`compressed`]. Returns whether positions are left to
    /// look for (a poll looks for [`SEARCHES_PER_POLL`] at most).
    fn follow_rotated(&mut self, now: Instant) -> bool {
        let mut todo: Vec<Entry> = self
            .saved
            .iter()
            .filter(|(key, _)| !self.last_found.contains(key))
            .flat_map(|(_, v)| v)
            .chain(&self.stale_saved)
            .filter(|e| !self.searched.contains(&search_key(e)))
            .cloned()
            .collect();
        let more = todo.len() > SEARCHES_PER_POLL;
        todo.truncate(SEARCHES_PER_POLL);
        let now_unix = unix_now();
        let mut listings = rotated::Listings::default();
        for e in todo {
            self.searched.insert(search_key(&e));
            if !self.followed_outside_the_globs(&e) {
                tracing::debug!(saved = %e.path, "saved position of a file input.paths no longer selects: not looked for");
                continue;
            }
            let open: HashSet<(u64, u64)> = self.files.iter().map(|t| (t.dev, t.inode)).collect();
            let skip = |dev, inode| {
                self.last_found.contains(&(dev, inode)) || open.contains(&(dev, inode))
            };
            if e.awaiting_first_line {
                if let Some((file, md, path)) =
                    rotated::find_same_inode(&e, &self.opts.rotated_dirs, &skip, &mut listings)
                {
                    self.follow_unidentified(&e, file, &md, path, now, now_unix);
                }
                continue;
            }
            let Some(found) = rotated::find(&e, &self.opts.rotated_dirs, &skip, &mut listings)
            else {
                if e.fragment.is_some() {
                    self.fragment_lost(&e);
                }
                continue;
            };
            match found {
                rotated::Found::Plain { file, md, path, fp } => {
                    tracing::info!(
                        saved = %e.path,
                        path = %path.display(),
                        offset = e.offset,
                        "a file rotated out of input.paths while not open was found; reading it on from its saved position"
                    );
                    let mut t =
                        Tracked::opened(file, &md, path, Some(fp), e.offset, false, now_unix);
                    t.selected_path = PathBuf::from(&e.path);
                    t.gone_since = Some(now);
                    self.counters.files_resumed += 1;
                    self.files.push(t);
                }
                rotated::Found::Compressed { file, path, codec } => {
                    match compressed::Compressed::new(
                        file,
                        path.clone(),
                        codec,
                        Entry {
                            fragment: None,
                            ..e.clone()
                        },
                        now_unix,
                    ) {
                        Ok(gz) => {
                            tracing::info!(
                                saved = %e.path,
                                path = %path.display(),
                                offset = e.offset,
                                "a file compressed by its rotation while not open was found; reading it on from its saved position"
                            );
                            self.counters.files_resumed += 1;
                            self.compressed.push(gz);
                        }
                        Err(err) => {
                            tracing::warn!(path = %path.display(), error = %err, "cannot read compressed rotation");
                            continue;
                        }
                    }
                }
            }
            self.forget_saved(&e);
        }
        more
    }

    /// Opens `file`, found by the inode of `e`, a position saved before the file had a
    /// complete first line, unless a position saved with its first line (still to be looked
    /// for) knows better where to go on.
    fn follow_unidentified(
        &mut self,
        e: &Entry,
        file: File,
        md: &std::fs::Metadata,
        path: PathBuf,
        now: Instant,
        now_unix: u64,
    ) {
        let first_line = identity::compute(&file, md.len()).ok().flatten();
        let identified = self.saved.get(&(e.dev, e.inode)).is_some_and(|v| {
            v.iter().any(|s| {
                first_line
                    .as_ref()
                    .is_some_and(|f| s.fingerprint_bytes() == Some(f.hash))
            })
        });
        if identified {
            return;
        }
        tracing::info!(
            saved = %e.path,
            path = %path.display(),
            "a file seen before it had a complete first line was found rotated out of input.paths; reading it from its start"
        );
        // Undecided, as when it was saved: settled in this poll as any file found without a
        // first line is settled (a copy of another file continues at that file's position;
        // otherwise it is new, and read from 0).
        let mut t = Tracked::opened(file, md, path, None, 0, true, now_unix);
        t.selected_path = PathBuf::from(&e.path);
        t.gone_since = Some(now);
        // Looked at by `decide_awaiting` whether or not this poll re-scanned.
        t.last_size = u64::MAX;
        self.counters.files_resumed += 1;
        self.files.push(t);
        self.forget_saved(e);
    }

    /// `e` was saved at the start of an unterminated line a shutdown kept for the restart,
    /// and the restart does not find its file (deleted, or rotated out of reach): what the
    /// shutdown had of the line is handed out as rejected by the next poll
    /// ([`Tailer::lost_fragments`]), and the position no longer carries it.
    fn fragment_lost(&mut self, e: &Entry) {
        let Some(fragment) = &e.fragment else {
            return;
        };
        tracing::warn!(
            saved = %e.path,
            offset = e.offset,
            bytes = fragment.len,
            "a rotated file whose unterminated last line was kept at shutdown is not found after the restart; that line is lost, rejecting what there was of it"
        );
        self.lost_fragments.push(e.clone());
        if let Some(s) = self
            .saved
            .get_mut(&(e.dev, e.inode))
            .and_then(|v| v.iter_mut().find(|s| *s == e))
        {
            s.fragment = None;
        }
    }

    /// Hands out [`Tailer::lost_fragments`] as rejected lines.
    fn reject_lost_fragments(&mut self, sink: &mut dyn FnMut(TailItem<'_>)) -> usize {
        let lost = std::mem::take(&mut self.lost_fragments);
        for e in &lost {
            let Some(fragment) = &e.fragment else {
                continue;
            };
            let fp = e.fingerprint_bytes().unwrap_or_default();
            let raw = fragment.raw_bytes();
            self.counters.rejected += 1;
            sink(TailItem::Rejected {
                file: &FileId::new(e.dev, e.inode, fp),
                path: Path::new(&e.path),
                offset: e.offset,
                reason: format!(
                    "unterminated last line ({} bytes, no newline) kept at shutdown for the restart; its rotated file was not found after the restart",
                    fragment.len
                ),
                raw: &raw,
                len: usize::try_from(fragment.len).unwrap_or(usize::MAX),
            });
        }
        lost.len()
    }

    /// Drops a saved position found again: it now lives on in what reads on from it.
    fn forget_saved(&mut self, e: &Entry) {
        let key = (e.dev, e.inode);
        if let Some(v) = self.saved.get_mut(&key) {
            v.retain(|s| s != e);
            if v.is_empty() {
                self.saved.remove(&key);
            }
        }
        self.stale_saved.retain(|s| s != e);
    }

    /// One pass over the compressed rotations being read; those read to their end (or that
    /// cannot be read on) leave their position as a saved entry.
    fn read_compressed(&mut self, out: &mut PollOutcome, sink: &mut dyn FnMut(TailItem<'_>)) {
        let now_unix = unix_now();
        let mut i = 0;
        while i < self.compressed.len() {
            let pass = self.compressed[i].service(
                self.opts.read_budget_bytes,
                self.opts.max_line_bytes,
                self.opts.rotate_wait,
                now_unix,
                &mut self.buf,
                &mut self.counters,
                sink,
            );
            // Done: Some(whether it was read to its end).
            let (items, done) = match pass {
                compressed::Pass::Reading { items, more } => {
                    out.more_pending |= more;
                    (items, None)
                }
                compressed::Pass::Finished { items } => {
                    tracing::info!(path = %self.compressed[i].path.display(), "compressed rotation read to its end");
                    (items, Some(true))
                }
                compressed::Pass::Failed { items, why } => {
                    self.counters.read_errors += 1;
                    tracing::warn!(
                        path = %self.compressed[i].path.display(),
                        why,
                        "stopped reading a compressed rotation"
                    );
                    // Not finished: a restart looks into it again.
                    (items, Some(false))
                }
            };
            out.items += items;
            if let Some(finished) = done {
                let gz = self.compressed.remove(i);
                let mut e = gz.entry();
                e.finished = finished;
                self.counters.files_closed += 1;
                self.searched.insert(search_key(&e));
                self.saved.entry((e.dev, e.inode)).or_default().push(e);
            } else {
                i += 1;
            }
        }
    }

    /// Writes `checkpoints.json` covering every item already handed to a sink. Atomic (temp
    /// file, fsync, rename, fsync dir); writes only when a position or the file set changed.
    /// Returns whether it wrote.
    pub fn commit_checkpoint(&mut self) -> Result<bool, TailError> {
        let snapshot = self.checkpoint_snapshot();
        self.commit_snapshot(snapshot)
    }

    /// The checkpoint as it stands now: every item handed to a sink so far. A caller that
    /// processes items asynchronously takes one after each poll and commits it (with
    /// [`Tailer::commit_snapshot`]) once that poll's items are durable, while later polls'
    /// items are still in flight.
    pub fn checkpoint_snapshot(&mut self) -> CheckpointSnapshot {
        let now_unix = unix_now();
        // Only after a scan has refreshed the entries of files still present; before the
        // first poll every saved entry looks unseen. A position not looked for outside the
        // globs yet is kept whatever its age: after a long downtime every position is old,
        // and one still waiting its turn among the searches ([`SEARCHES_PER_POLL`]) holds
        // the unread tail of a rotated file.
        if self.last_scan.is_some() {
            let searched = &self.searched;
            self.saved.retain(|_, v| {
                v.retain(|e| {
                    now_unix.saturating_sub(e.updated) <= ENTRY_EXPIRY_SECS
                        || !searched.contains(&search_key(e))
                });
                !v.is_empty()
            });
        }
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(self.files.len() + self.saved.len());
        entries.extend(self.files.iter_mut().filter_map(Tracked::entry_shared));
        entries.extend(
            self.compressed
                .iter()
                .map(|c| Arc::new(compressed::Compressed::entry(c))),
        );
        entries.extend(self.saved.values().flatten().cloned().map(Arc::new));
        // Only positions still saved can be looked for again.
        let saved = &self.saved;
        self.searched.retain(|(dev, inode, fp)| {
            saved
                .get(&(*dev, *inode))
                .is_some_and(|v| v.iter().any(|e| e.fingerprint == *fp))
        });
        // Sorted when committed (once per durable point, not after every poll).
        CheckpointSnapshot(entries, self.polls)
    }

    /// Writes a snapshot taken by [`Tailer::checkpoint_snapshot`] (snapshots must be committed
    /// in the order they were taken), unless it equals what is on disk. Returns whether it
    /// wrote.
    pub fn commit_snapshot(&mut self, snapshot: CheckpointSnapshot) -> Result<bool, TailError> {
        let CheckpointSnapshot(entries, after_poll) = snapshot;
        let mut entries: Vec<Entry> = entries.into_iter().map(Arc::unwrap_or_clone).collect();
        sort_entries(&mut entries);
        // What was found up to that poll is held by the snapshot, at the position read from
        // it since (or, if it is gone since, every line of it is durable now).
        self.discovered.retain(|(poll, _)| *poll > after_poll);
        with_discovered(&mut entries, &self.discovered);
        self.store_if_changed(entries)
    }

    /// Writes the files found since the last checkpoint (see [`Tailer::discovered`]) into it
    /// at once, with the positions it already holds; called after each poll. Returns whether
    /// it wrote.
    pub fn commit_discoveries(&mut self) -> Result<bool, TailError> {
        if self.discovered.is_empty() {
            return Ok(false);
        }
        let mut entries = self.last_written.clone().unwrap_or_default();
        with_discovered(&mut entries, &self.discovered);
        self.store_if_changed(entries)
    }

    fn store_if_changed(&mut self, entries: Vec<Entry>) -> Result<bool, TailError> {
        if let Some(prev) = &self.last_written {
            if prev.len() == entries.len()
                && prev.iter().zip(&entries).all(|(a, b)| a.same_position(b))
            {
                return Ok(false);
            }
        }
        checkpoint::store(&self.opts.state_dir, &entries)?;
        self.counters.checkpoint_writes += 1;
        self.last_written = Some(entries);
        Ok(true)
    }

    /// Applies new settings (SIGHUP): new globs etc.; open files and positions are kept.
    /// Invalid patterns are logged and left out.
    pub fn reconfigure(&mut self, mut opts: TailOptions) {
        let valid = |p: &String| match glob::Pattern::new(p) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(pattern = %p, error = %e, "invalid glob pattern ignored");
                false
            }
        };
        opts.include.retain(valid);
        opts.exclude.retain(valid);
        self.exclude = discovery::Exclude::new(&opts.exclude).unwrap_or_default();
        if opts.state_dir != self.opts.state_dir {
            if let Err(e) = std::fs::create_dir_all(&opts.state_dir) {
                tracing::error!(path = %opts.state_dir.display(), error = %e, "cannot create new state directory");
            }
            // The new directory has no copy of the positions yet: write on the next commit.
            self.last_written = None;
        }
        self.opts = opts;
        self.last_more_pending = false;
    }

    /// Existing directories to watch with notify (glob roots).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        self.watch_specs().into_iter().map(|s| s.dir).collect()
    }

    /// Like [`Tailer::watch_dirs`], saying which directories need a recursive watch.
    pub fn watch_specs(&self) -> Vec<WatchSpec> {
        discovery::watch_specs(&self.opts.include)
    }

    /// Per open file: bytes not yet handed out (size at the last poll - offset), for metrics.
    /// (A compressed rotation being read shows no lag: its decompressed size is unknown.)
    pub fn file_lags(&self) -> Vec<(PathBuf, u64)> {
        // The sizes the last poll saw: a stat of every file here doubled the cost of a poll.
        self.files
            .iter()
            .map(|t| {
                (
                    t.path.clone(),
                    t.last_size.saturating_sub(t.reader.offset()),
                )
            })
            .collect()
    }

    /// Number of files held open (including rotated-away files still being drained and
    /// compressed rotations being read).
    pub fn open_files(&self) -> usize {
        self.files.len() + self.compressed.len()
    }

    /// Matching files closed while idle for the open-file budget, and files found but not
    /// yet opened for want of room in it.
    pub fn closed_idle_and_waiting(&self) -> (usize, usize) {
        (self.parked.len(), self.waiting.len())
    }

    /// Files the globs would select but for a name that is not UTF-8 (not read; each was
    /// warned of once).
    pub fn non_utf8_names(&self) -> usize {
        self.non_utf8.count()
    }

    /// Running totals since `open`.
    pub fn counters(&self) -> TailCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests;
