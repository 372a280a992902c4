//! Crash recovery of `.open` segments left behind by a process that died while writing.
//!
//! A flush appends whole lines and only reports success after they are written (and
//! fsynced), so everything the daemon ever acknowledged is a complete line. What a crash can
//! leave after those lines is one torn write: bytes with no trailing newline, or (after a
//! power loss that extended the file but lost its data) a last line that is not JSON. That
//! tail is cut off and handed back to the caller, who may count it and put it in the rejected
//! stream; the complete lines are kept and the segment is sealed under its own name, because
//! its day and number were already taken when it was opened.

use super::fsutil::{seal_file, sync_dir};
use super::name::SegmentName;
use super::{SegmentError, Stream};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The torn bytes handed back in a report are capped so a pathological tail (a file full of
/// zeroes after a power loss) cannot blow up memory; `TornLine::len` still gives the full size.
pub const MAX_TORN_REPORT_BYTES: usize = 1 << 20;

/// Backward scans read this much at a time.
const SCAN_CHUNK: u64 = 64 * 1024;

/// What `SegmentWriter::open` found and repaired for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub stream: Stream,
    /// One entry per `.open` file found (normally zero or one).
    pub segments: Vec<RecoveredSegment>,
}

impl Recovery {
    /// Every torn line cut off, across all recovered segments.
    pub fn torn_lines(&self) -> impl Iterator<Item = &TornLine> {
        self.segments.iter().flat_map(|s| s.torn.iter())
    }

    pub fn is_clean(&self) -> bool {
        self.segments.iter().all(|s| s.torn.is_empty())
    }
}

/// One `.open` file after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSegment {
    pub open_path: PathBuf,
    /// Where the kept lines now live; `None` when nothing complete was left and the file
    /// was removed (no empty segments).
    pub sealed_path: Option<PathBuf>,
    /// Bytes of complete lines kept.
    pub kept_bytes: u64,
    /// The lines cut off, in file order (at most two: an invalid last line, then an
    /// unterminated tail).
    pub torn: Vec<TornLine>,
}

/// Why a line was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornReason {
    /// The file ends without a newline: the last write was interrupted.
    MissingNewline,
    /// The last newline-terminated line does not parse as JSON.
    InvalidJson,
}

impl TornReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TornReason::MissingNewline => "torn_line_missing_newline",
            TornReason::InvalidJson => "torn_line_invalid_json",
        }
    }
}

/// A line cut off a recovered segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornLine {
    pub path: PathBuf,
    /// Byte offset of the line in the `.open` file.
    pub offset: u64,
    /// Full length of the cut bytes (without the newline, if any).
    pub len: u64,
    /// The cut bytes, at most `MAX_TORN_REPORT_BYTES` of them.
    pub bytes: Vec<u8>,
    pub reason: TornReason,
}

/// Recovers one `.open` segment: truncates it to its complete lines, then seals it (or
/// removes it when nothing is left).
pub(crate) fn recover(
    dir: &Path,
    name: SegmentName,
    path: &Path,
    fsync: bool,
) -> Result<RecoveredSegment, SegmentError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| SegmentError::io("open for recovery", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| SegmentError::io("stat", path, e))?
        .len();

    let mut torn = Vec::new();
    let mut end = len;
    // 1. Bytes after the last newline were never completed.
    let last_nl = find_last_newline(&file, path, end)?;
    let complete_end = last_nl.map_or(0, |p| p + 1);
    if complete_end < end {
        torn.push(read_torn(
            &file,
            path,
            complete_end,
            end - complete_end,
            TornReason::MissingNewline,
        )?);
        end = complete_end;
    }
    // 2. The last complete line must be JSON: a power loss can leave a line whose bytes
    //    never reached the disk (zeroes) even though the length did.
    if end > 0 {
        let line_end = end - 1; // position of its newline
        let start = find_last_newline(&file, path, line_end)?.map_or(0, |p| p + 1);
        let line = read_range(&file, path, start, line_end - start)?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_err() {
            let mut bytes = line;
            let full = bytes.len() as u64;
            bytes.truncate(MAX_TORN_REPORT_BYTES);
            torn.insert(
                0,
                TornLine {
                    path: path.to_path_buf(),
                    offset: start,
                    len: full,
                    bytes,
                    reason: TornReason::InvalidJson,
                },
            );
            end = start;
        }
    }
    for t in &torn {
        tracing::warn!(
            path = %path.display(),
            offset = t.offset,
            len = t.len,
            reason = t.reason.as_str(),
            "cut a torn line off a segment left open by a crash"
        );
    }
    if end < len {
        file.set_len(end)
            .map_err(|e| SegmentError::io("truncate torn tail", path, e))?;
    }
    if end == 0 {
        drop(file);
        std::fs::remove_file(path)
            .map_err(|e| SegmentError::io("remove empty segment", path, e))?;
        if fsync {
            sync_dir(dir)?;
        }
        tracing::info!(path = %path.display(), "removed a segment left open with no complete line");
        return Ok(RecoveredSegment {
            open_path: path.to_path_buf(),
            sealed_path: None,
            kept_bytes: 0,
            torn,
        });
    }
    if fsync {
        file.sync_all()
            .map_err(|e| SegmentError::io("fsync", path, e))?;
    }
    drop(file);
    let sealed = seal_file(dir, name, path)?;
    if fsync {
        sync_dir(dir)?;
    }
    tracing::info!(
        from = %path.display(),
        to = %sealed.display(),
        kept_bytes = end,
        "sealed a segment left open by a crash"
    );
    Ok(RecoveredSegment {
        open_path: path.to_path_buf(),
        sealed_path: Some(sealed),
        kept_bytes: end,
        torn,
    })
}

fn read_torn(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    reason: TornReason,
) -> Result<TornLine, SegmentError> {
    let take = len.min(MAX_TORN_REPORT_BYTES as u64);
    let bytes = read_range(file, path, offset, take)?;
    Ok(TornLine {
        path: path.to_path_buf(),
        offset,
        len,
        bytes,
        reason,
    })
}

fn read_range(file: &File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, SegmentError> {
    let len = usize::try_from(len).map_err(|_| {
        SegmentError::io(
            "read",
            path,
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, "line too long to read"),
        )
    })?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| SegmentError::io("read", path, e))?;
    Ok(buf)
}

/// Position of the last `\n` strictly before `end`, scanning backwards in chunks so a big
/// segment is not read whole.
fn find_last_newline(file: &File, path: &Path, end: u64) -> Result<Option<u64>, SegmentError> {
    let mut hi = end;
    let mut buf = vec![0u8; SCAN_CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(SCAN_CHUNK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)
            .map_err(|e| SegmentError::io("read", path, e))?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}
