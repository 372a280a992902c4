//! Rotating JSONL segment files in `data_dir`, one stream per record kind, and the streaming
//! reader the exporter uses over them.
//!
//! Each stream (`examples`, `feedback`, `corrections`, `rejected`) has at most one segment
//! being written, `<prefix>_YYYYMMDD_NNNN.jsonl.open`; sealing renames it atomically to
//! `<prefix>_YYYYMMDD_NNNN.jsonl`, after which it never changes, so a consumer globbing
//! `*.jsonl` only ever sees complete files. Lines are buffered in memory by `append` and
//! written by `flush`, which is transactional: it either makes every pending line durable or
//! leaves the file exactly as it was and keeps the lines pending for a retry. That is what
//! lets the daemon advance its read checkpoints only after a successful flush.

mod fsutil;
mod name;
mod reader;
mod recovery;
#[cfg(test)]
mod tests;

pub use reader::{list, read_records, RecordItem, RecordIter};
pub use recovery::{RecoveredSegment, Recovery, TornLine, TornReason, MAX_TORN_REPORT_BYTES};

use chrono::{DateTime, NaiveDate, Utc};
use fsutil::{seal_file, sync_dir};
use name::{SegmentName, MAX_NUMBER};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The record kinds, one segment stream each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Examples,
    Feedback,
    Corrections,
    Rejected,
}

impl Stream {
    pub const ALL: [Stream; 4] = [
        Stream::Examples,
        Stream::Feedback,
        Stream::Corrections,
        Stream::Rejected,
    ];

    /// The file-name prefix of the stream's segments.
    pub fn prefix(self) -> &'static str {
        match self {
            Stream::Examples => "examples",
            Stream::Feedback => "feedback",
            Stream::Corrections => "corrections",
            Stream::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// Rotation and durability settings (`[output]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOptions {
    /// Seal a segment once it holds this many bytes; 0 turns size rotation off. A flush
    /// that would push a non-empty segment past the limit seals it first, so a segment only
    /// exceeds the limit when a single flush is bigger than the limit.
    pub max_file_bytes: u64,
    /// Seal a segment this long after it was opened; zero turns age rotation off.
    pub rotate_interval: Duration,
    /// fsync file data on flush and the directory on create/seal.
    pub fsync: bool,
}

impl Default for SegmentOptions {
    /// The config defaults: 64 MiB, 1 h, fsync on.
    fn default() -> Self {
        SegmentOptions {
            max_file_bytes: 64 * 1024 * 1024,
            rotate_interval: Duration::from_secs(3600),
            fsync: true,
        }
    }
}

/// Errors of the segment writer and reader.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A filesystem operation failed (disk full, EIO, permissions...).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `append` was given bytes that cannot be one JSONL record.
    #[error("invalid record line: {0}")]
    InvalidLine(&'static str),
    /// More than the largest supported number of segments on one day.
    #[error("no free segment number left for {stream} on {day}")]
    NumbersExhausted { stream: Stream, day: NaiveDate },
}

impl SegmentError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> SegmentError {
        SegmentError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The underlying I/O error, if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            SegmentError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// True for "no space left" and "quota exceeded": conditions that go away when space is
    /// freed, so the daemon should keep the data buffered and retry.
    pub fn is_disk_full(&self) -> bool {
        self.io_error()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT)
    }
}

/// What a successful flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Lines written (0 when nothing was pending).
    pub lines: usize,
    /// Bytes written, newlines included.
    pub bytes: u64,
    /// The `.open` segment the lines went to.
    pub segment: Option<PathBuf>,
    /// Segments sealed before writing because they were full, too old or of an earlier day.
    pub sealed: Vec<PathBuf>,
}

impl FlushStats {
    fn absorb(&mut self, other: FlushStats) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        if other.segment.is_some() {
            self.segment = other.segment;
        }
        self.sealed.extend(other.sealed);
    }
}

/// Fault injection for tests of the failure paths: consulted before each write and fsync
/// of segment data.
#[doc(hidden)]
pub trait FaultHook: Send {
    /// Before writing `len` bytes: `Some((n, err))` writes only the first `n` bytes (a
    /// short write, as a filling disk does), then fails with `err`.
    fn on_write(&mut self, len: usize) -> Option<(usize, io::Error)>;
    /// Before an fsync of segment data: `Some(err)` fails it.
    fn on_sync(&mut self) -> Option<io::Error>;
}

/// The segment currently being written.
struct OpenSegment {
    name: SegmentName,
    path: PathBuf,
    file: File,
    opened_at: DateTime<Utc>,
    /// Length of the flushed (acknowledged) content.
    len: u64,
    /// The file may hold bytes past `len` (a rollback failed); truncate before any use.
    dirty: bool,
    /// Whether the directory entry of the new file has been fsynced yet.
    dir_synced: bool,
}

impl OpenSegment {
    /// Whether the segment must be sealed before `extra` more bytes go in (`extra` = 0:
    /// whether it is due at all).
    fn due(&self, now: DateTime<Utc>, opts: &SegmentOptions, extra: u64) -> bool {
        if now.date_naive() > self.name.day {
            return true;
        }
        if !opts.rotate_interval.is_zero() {
            if let Ok(age) = (now - self.opened_at).to_std() {
                if age >= opts.rotate_interval {
                    return true;
                }
            }
        }
        if opts.max_file_bytes > 0 {
            if extra == 0 {
                return self.len >= opts.max_file_bytes;
            }
            return self.len > 0 && self.len.saturating_add(extra) > opts.max_file_bytes;
        }
        false
    }

    /// Cuts the file back to its acknowledged length if a failed rollback left it longer.
    fn clean(&mut self) -> Result<(), SegmentError> {
        if self.dirty {
            self.file
                .set_len(self.len)
                .map_err(|e| SegmentError::io("truncate", &self.path, e))?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Writer of one stream's segments.
///
/// Dropping a writer does not seal its segment (it cannot report errors); the `.open` file
/// is recovered by the next `open`. Call `flush` then `seal` at shutdown.
pub struct SegmentWriter {
    dir: PathBuf,
    stream: Stream,
    opts: SegmentOptions,
    /// Pending lines, each its own buffer ending in `\n`, to go out in one vectored write
    /// (a line handed over whole is not copied again).
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    current: Option<OpenSegment>,
    /// Highest number this writer has used per day, so numbers never repeat in a process
    /// even if a consumer deletes sealed files.
    last_number: Option<(NaiveDate, u32)>,
    bytes_written_total: u64,
    /// Segments this writer has sealed.
    sealed_total: u64,
    /// Lines were written by `write_at` and not fsynced yet.
    unsynced: bool,
    faults: Option<Box<dyn FaultHook>>,
}

impl fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("dir", &self.dir)
            .field("stream", &self.stream)
            .field("opts", &self.opts)
            .field("pending_lines", &self.pending.len())
            .field("open_segment", &self.current.as_ref().map(|s| &s.path))
            .field("bytes_written_total", &self.bytes_written_total)
            .finish()
    }
}

impl SegmentWriter {
    /// Opens the stream in `dir` (created if missing), recovering and sealing any `.open`
    /// segment a crash left behind. No file is created until the first flush with data.
    pub fn open(
        dir: &Path,
        stream: Stream,
        opts: SegmentOptions,
    ) -> Result<(SegmentWriter, Recovery), SegmentError> {
        std::fs::create_dir_all(dir).map_err(|e| SegmentError::io("create directory", dir, e))?;
        let mut found = name::scan(dir, stream)?;
        found.sort_by_key(|(n, _)| n.order_key());
        let mut recovery = Recovery {
            stream,
            segments: Vec::new(),
        };
        for (n, path) in found.iter().filter(|(n, _)| n.open) {
            recovery
                .segments
                .push(recovery::recover(dir, *n, path, opts.fsync)?);
        }
        let writer = SegmentWriter {
            dir: dir.to_path_buf(),
            stream,
            opts,
            pending: Vec::new(),
            pending_bytes: 0,
            current: None,
            last_number: None,
            bytes_written_total: 0,
            sealed_total: 0,
            unsynced: false,
            faults: None,
        };
        Ok((writer, recovery))
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> SegmentOptions {
        self.opts
    }

    /// Queues one record (a JSON value, without its newline). Nothing touches the disk
    /// until `flush`.
    pub fn append(&mut self, line: &[u8]) -> Result<(), SegmentError> {
        let mut owned = Vec::with_capacity(line.len() + 1);
        owned.extend_from_slice(line);
        self.append_owned(owned)
    }

    /// [`Self::append`] of a line the caller gives away: it is written from its own buffer
    /// (ingest's rendered examples; copying each into one write buffer was 4% of ingest).
    pub fn append_owned(&mut self, mut line: Vec<u8>) -> Result<(), SegmentError> {
        if line.is_empty() {
            return Err(SegmentError::InvalidLine("empty line"));
        }
        // A newline inside would split the record in two and break every reader's framing.
        // (memchr's vectorized search: std's `contains` was 4% of ingest here.)
        if memchr::memchr(b'\n', &line).is_some() {
            return Err(SegmentError::InvalidLine("contains a newline byte"));
        }
        line.push(b'\n');
        self.pending_bytes += line.len();
        self.pending.push(line);
        Ok(())
    }

    /// Number of lines appended but not yet flushed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of pending lines, newlines included.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Writes all pending lines and fsyncs (when `opts.fsync`).
    ///
    /// Transactional: on any error the file is truncated back to its length before this
    /// flush, the pending lines stay pending for a retry, and the error is returned (disk
    /// full, EIO). After `Ok`, every appended line is durable. A segment that is full, too
    /// old or of an earlier UTC day is sealed first; a new segment is named after the UTC
    /// day of `clock::now()`.
    pub fn flush(&mut self) -> Result<FlushStats, SegmentError> {
        self.flush_at(crate::clock::now())
    }

    /// `flush` with an explicit "now" (tests, and callers that already read the clock).
    pub fn flush_at(&mut self, now: DateTime<Utc>) -> Result<FlushStats, SegmentError> {
        self.write_inner(now, true)
    }

    /// Writes pending lines without fsync: readers of the `.open` file see them at once and
    /// the next `flush` makes them durable (one fsync for many writes). Rolls back on error
    /// exactly like `flush`.
    pub fn write_at(&mut self, now: DateTime<Utc>) -> Result<FlushStats, SegmentError> {
        self.write_inner(now, false)
    }

    fn write_inner(&mut self, now: DateTime<Utc>, sync: bool) -> Result<FlushStats, SegmentError> {
        let mut stats = FlushStats::default();
        if self.pending.is_empty() {
            if sync && self.unsynced && self.opts.fsync {
                if let Some(seg) = self.current.as_mut() {
                    sync_data(seg, self.faults.as_deref_mut())?;
                }
            }
            self.unsynced = false;
            return Ok(stats);
        }
        let batch = self.pending_bytes as u64;
        if self
            .current
            .as_ref()
            .is_some_and(|seg| seg.due(now, &self.opts, batch))
        {
            if let Some(p) = self.seal()? {
                stats.sealed.push(p);
            }
        }
        let fsync = sync && self.opts.fsync;
        let (mut seg, created) = match self.current.take() {
            Some(seg) => (seg, false),
            None => (self.create(now)?, true),
        };
        if let Err(e) = seg.clean() {
            self.current = Some(seg);
            return Err(e);
        }
        let before = seg.len;
        match write_batch(
            &mut seg,
            &self.pending,
            fsync,
            &self.dir,
            self.faults.as_deref_mut(),
        ) {
            Ok(()) => {
                seg.len += batch;
                stats.lines = self.pending.len();
                stats.bytes = batch;
                stats.segment = Some(seg.path.clone());
                self.bytes_written_total += batch;
                self.pending.clear();
                self.pending_bytes = 0;
                self.unsynced = !fsync && self.opts.fsync;
                if self.unsynced {
                    start_writeback(&seg.file, before, batch);
                }
                self.last_number = Some((seg.name.day, seg.name.number));
                self.current = Some(seg);
                Ok(stats)
            }
            Err(err) => {
                // The caller reports the failure (a full disk fails every retry: a warning
                // here each time was half of the noise of a long pause).
                tracing::debug!(
                    stream = %self.stream,
                    path = %seg.path.display(),
                    lines = self.pending.len(),
                    error = %err,
                    "segment flush failed; rolled back, lines stay pending"
                );
                // Put the file back as it was so a retry writes every line exactly once.
                // Should even the truncation fail, the segment is marked dirty and cut back
                // before its next use.
                seg.dirty = seg.file.set_len(before).is_err();
                if seg.dirty {
                    tracing::warn!(
                        path = %seg.path.display(),
                        "cannot cut a failed write back off the segment yet; done before its next write"
                    );
                }
                if !seg.dirty && fsync {
                    // Best effort: a crash now would otherwise resurrect the failed bytes.
                    let _ = seg.file.sync_data();
                }
                // No empty segment files: forget the one this flush created.
                let removed = created && !seg.dirty && std::fs::remove_file(&seg.path).is_ok();
                if !removed {
                    self.last_number = Some((seg.name.day, seg.name.number));
                    self.current = Some(seg);
                }
                Err(err)
            }
        }
    }

    /// Seals the open segment if it is over size, older than `rotate_interval`, or opened
    /// on an earlier UTC day than `now`. Only flushed data is sealed; pending lines stay
    /// pending (call after `flush`).
    pub fn maybe_seal(&mut self, now: DateTime<Utc>) -> Result<Option<PathBuf>, SegmentError> {
        if self
            .current
            .as_ref()
            .is_some_and(|seg| seg.due(now, &self.opts, 0))
        {
            self.seal()
        } else {
            Ok(None)
        }
    }

    /// Seals the open segment now (shutdown), returning its sealed path; `None` when no
    /// segment is open. Pending lines are not written: `flush` first.
    pub fn seal(&mut self) -> Result<Option<PathBuf>, SegmentError> {
        let Some(mut seg) = self.current.take() else {
            return Ok(None);
        };
        let prepared = seg.clean().and_then(|()| {
            if seg.len > 0 && self.opts.fsync {
                sync_data(&mut seg, self.faults.as_deref_mut())
            } else {
                Ok(())
            }
        });
        if let Err(e) = prepared {
            self.current = Some(seg);
            return Err(e);
        }
        if seg.len == 0 {
            // Only reachable when a rollback could not remove a file it created.
            if let Err(e) = std::fs::remove_file(&seg.path) {
                let err = SegmentError::io("remove empty segment", &seg.path, e);
                self.current = Some(seg);
                return Err(err);
            }
            return Ok(None);
        }
        let sealed = match seal_file(&self.dir, seg.name, &seg.path) {
            Ok(p) => p,
            Err(e) => {
                // Still the `.open` file: keep it as the stream's one open segment.
                self.current = Some(seg);
                return Err(e);
            }
        };
        drop(seg);
        self.unsynced = false;
        self.sealed_total += 1;
        tracing::debug!(stream = %self.stream, path = %sealed.display(), "sealed segment");
        if self.opts.fsync {
            // The file is sealed whatever happens here, so it is not put back on error; the
            // error still reaches the caller because the rename may not be durable yet.
            sync_dir(&self.dir)?;
        }
        Ok(Some(sealed))
    }

    /// Flushes, then seals: what shutdown does for one stream.
    pub fn close(&mut self) -> Result<Option<PathBuf>, SegmentError> {
        self.flush()?;
        self.seal()
    }

    /// Applies new settings (SIGHUP). The open segment is judged by them from the next
    /// `flush`/`maybe_seal` on; nothing buffered is lost.
    pub fn set_options(&mut self, opts: SegmentOptions) {
        self.opts = opts;
    }

    /// Bytes made durable by this writer since it was opened.
    pub fn bytes_written_total(&self) -> u64 {
        self.bytes_written_total
    }

    /// How many segments this writer has sealed (whoever asked it to: a full segment, a new
    /// day, shutdown), so a caller can tell that one was sealed since it last looked.
    pub fn sealed_total(&self) -> u64 {
        self.sealed_total
    }

    /// The `.open` segment being written, if any.
    pub fn open_segment(&self) -> Option<&Path> {
        self.current.as_ref().map(|s| s.path.as_path())
    }

    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: Option<Box<dyn FaultHook>>) {
        self.faults = hook;
    }

    /// Creates the next `.open` segment for the UTC day of `now`, with a number above every
    /// existing segment of that day (sealed or open) and above any this writer used.
    fn create(&mut self, now: DateTime<Utc>) -> Result<OpenSegment, SegmentError> {
        let day = now.date_naive();
        let found = name::scan(&self.dir, self.stream)?;
        let mut number = name::highest_number(&found, day);
        if let Some((d, n)) = self.last_number {
            if d == day {
                number = number.max(n);
            }
        }
        loop {
            number += 1;
            if number > MAX_NUMBER {
                return Err(SegmentError::NumbersExhausted {
                    stream: self.stream,
                    day,
                });
            }
            let seg_name = SegmentName {
                stream: self.stream,
                day,
                number,
                open: true,
            };
            // The sealed name must be free too, or sealing would have to renumber.
            if self
                .dir
                .join(seg_name.sealed().file_name())
                .symlink_metadata()
                .is_ok()
            {
                continue;
            }
            let path = self.dir.join(seg_name.file_name());
            // create_new: never truncate or reuse an existing file.
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(OpenSegment {
                        name: seg_name,
                        path,
                        file,
                        opened_at: now,
                        len: 0,
                        dirty: false,
                        dir_synced: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SegmentError::io("create segment", &path, e)),
            }
        }
    }
}

/// Writes one batch at the end of the segment and makes it durable.
/// Writes every buffer, in order, with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, bufs: &[Vec<u8>]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_batch(
    seg: &mut OpenSegment,
    lines: &[Vec<u8>],
    fsync: bool,
    dir: &Path,
    mut faults: Option<&mut (dyn FaultHook + 'static)>,
) -> Result<(), SegmentError> {
    let total: usize = lines.iter().map(Vec::len).sum();
    let injected = faults.as_mut().and_then(|f| f.on_write(total));
    match injected {
        Some((n, err)) => {
            let data = lines.concat();
            let n = n.min(data.len());
            seg.file
                .write_all(&data[..n])
                .map_err(|e| SegmentError::io("write", &seg.path, e))?;
            return Err(SegmentError::io("write", &seg.path, err));
        }
        None => write_all_vectored(&mut seg.file, lines)
            .map_err(|e| SegmentError::io("write", &seg.path, e))?,
    }
    if fsync {
        sync_data(seg, faults)?;
        if !seg.dir_synced {
            // The new file's name must survive a power loss as well as its data.
            sync_dir(dir)?;
            seg.dir_synced = true;
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting.
/// The fsync at the next durable point then waits only for what is still in flight instead
/// of the whole interval's data: with gigabytes of RAM the kernel would otherwise keep it
/// all dirty until that fsync (what RocksDB's `bytes_per_sync` does). Advisory: errors are
/// ignored, the fsync reports them.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

fn sync_data(
    seg: &mut OpenSegment,
    faults: Option<&mut (dyn FaultHook + 'static)>,
) -> Result<(), SegmentError> {
    if let Some(err) = faults.and_then(|f| f.on_sync()) {
        return Err(SegmentError::io("fsync", &seg.path, err));
    }
    seg.file
        .sync_data()
        .map_err(|e| SegmentError::io("fsync", &seg.path, e))
}

/// The four streams of `data_dir` together.
#[derive(Debug)]
pub struct Segments {
    pub examples: SegmentWriter,
    pub feedback: SegmentWriter,
    pub corrections: SegmentWriter,
    pub rejected: SegmentWriter,
}

impl Segments {
    /// Opens (and recovers) all four streams.
    pub fn open_all(
        dir: &Path,
        opts: SegmentOptions,
    ) -> Result<(Segments, Vec<Recovery>), SegmentError> {
        let (examples, r1) = SegmentWriter::open(dir, Stream::Examples, opts)?;
        let (feedback, r2) = SegmentWriter::open(dir, Stream::Feedback, opts)?;
        let (corrections, r3) = SegmentWriter::open(dir, Stream::Corrections, opts)?;
        let (rejected, r4) = SegmentWriter::open(dir, Stream::Rejected, opts)?;
        Ok((
            Segments {
                examples,
                feedback,
                corrections,
                rejected,
            },
            vec![r1, r2, r3, r4],
        ))
    }

    pub fn get_mut(&mut self, stream: Stream) -> &mut SegmentWriter {
        match stream {
            Stream::Examples => &mut self.examples,
            Stream::Feedback => &mut self.feedback,
            Stream::Corrections => &mut self.corrections,
            Stream::Rejected => &mut self.rejected,
        }
    }

    pub fn get(&self, stream: Stream) -> &SegmentWriter {
        match stream {
            Stream::Examples => &self.examples,
            Stream::Feedback => &self.feedback,
            Stream::Corrections => &self.corrections,
            Stream::Rejected => &self.rejected,
        }
    }

    /// Flushes every stream, stopping at the first error (the failed stream and the ones
    /// after it keep their pending lines).
    pub fn flush_all(&mut self) -> Result<FlushStats, SegmentError> {
        self.flush_all_at(crate::clock::now())
    }

    pub fn flush_all_at(&mut self, now: DateTime<Utc>) -> Result<FlushStats, SegmentError> {
        let mut total = FlushStats::default();
        for s in Stream::ALL {
            total.absorb(self.get_mut(s).flush_at(now)?);
        }
        Ok(total)
    }

    /// Writes every stream's pending lines without fsync (see `SegmentWriter::write_at`).
    pub fn write_all(&mut self) -> Result<FlushStats, SegmentError> {
        let now = crate::clock::now();
        let mut total = FlushStats::default();
        for s in Stream::ALL {
            total.absorb(self.get_mut(s).write_at(now)?);
        }
        Ok(total)
    }

    /// Total pending lines over all streams.
    pub fn pending(&self) -> usize {
        Stream::ALL.iter().map(|&s| self.get(s).pending()).sum()
    }

    /// `maybe_seal` on every stream; returns the sealed paths, stopping at the first error.
    pub fn maybe_seal_all(&mut self, now: DateTime<Utc>) -> Result<Vec<PathBuf>, SegmentError> {
        let mut sealed = Vec::new();
        for s in Stream::ALL {
            sealed.extend(self.get_mut(s).maybe_seal(now)?);
        }
        Ok(sealed)
    }

    /// Seals every stream (shutdown). All streams are attempted; the first error, if any,
    /// is returned after the others were sealed.
    pub fn seal_all(&mut self) -> Result<Vec<PathBuf>, SegmentError> {
        let mut sealed = Vec::new();
        let mut first_err = None;
        for s in Stream::ALL {
            match self.get_mut(s).seal() {
                Ok(p) => sealed.extend(p),
                Err(e) => {
                    tracing::error!(stream = %s, error = %e, "sealing segment failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(sealed),
        }
    }

    pub fn set_options(&mut self, opts: SegmentOptions) {
        for s in Stream::ALL {
            self.get_mut(s).set_options(opts);
        }
    }

    pub fn bytes_written_total(&self) -> u64 {
        Stream::ALL
            .iter()
            .map(|&s| self.get(s).bytes_written_total())
            .sum()
    }
}
