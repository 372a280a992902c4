//! Reading the collector's JSONL segments for export and stats.
//!
//! Sealed `*.jsonl` segments are complete. The open segment (`*.jsonl.open`) is being appended
//! to while we read it, so its last line may be torn (no trailing newline yet): that line is
//! skipped, because the writer will finish it and a later export will see it whole. An open
//! segment that was sealed between the caller listing it and us opening it is read under its
//! sealed name instead.

use super::ExportError;
use chrono::{DateTime, NaiveDateTime};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// What was read from one input file, for the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputSummary {
    pub path: String,
    /// "examples", "feedback" or "corrections".
    pub kind: &'static str,
    /// Bytes of complete lines read (a torn tail of an open segment is not counted).
    pub bytes: u64,
    pub lines: u64,
    /// Whether a torn last line (open segment) was skipped.
    pub torn_tail_skipped: bool,
}

impl InputSummary {
    /// Nothing read yet from `path`.
    fn empty(path: &Path, kind: &'static str) -> InputSummary {
        InputSummary {
            path: path.display().to_string(),
            kind,
            bytes: 0,
            lines: 0,
            torn_tail_skipped: false,
        }
    }
}

/// Whether a path names an open (still written) segment.
pub fn is_open_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "open")
}

/// The sealed segments among `paths` (the ones the prepared cache may hold), in their order.
pub fn sealed_segments(paths: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    paths
        .iter()
        .filter(|p| !is_open_segment(p))
        .cloned()
        .collect()
}

/// Calls `f(line_number, line)` for every complete, non-blank line of `path` (1-based line
/// numbers, line without its newline). `on_bytes` is told how many bytes each line took, for
/// progress reporting.
pub fn for_each_line(
    path: &Path,
    kind: &'static str,
    mut on_bytes: impl FnMut(u64),
    mut f: impl FnMut(u64, &[u8]) -> Result<(), ExportError>,
) -> Result<InputSummary, ExportError> {
    let io_err = |e| ExportError::Input {
        path: path.to_path_buf(),
        source: e,
    };
    let mut open = is_open_segment(path);
    let mut read_path = path.to_path_buf();
    let file = match File::open(path) {
        Ok(f) => f,
        // The open segment was sealed (renamed to `*.jsonl`) between listing and reading: read
        // the sealed file, which now holds everything the open one did, and more.
        Err(e) if open && e.kind() == std::io::ErrorKind::NotFound => {
            read_path = path.with_extension("");
            open = false;
            File::open(&read_path).map_err(|e2| ExportError::Input {
                path: read_path.clone(),
                source: e2,
            })?
        }
        Err(e) => return Err(io_err(e)),
    };
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut buf = Vec::with_capacity(4096);
    let mut summary = InputSummary::empty(&read_path, kind);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && open {
            summary.torn_tail_skipped = true;
            break;
        }
        line_no += 1;
        summary.bytes += n as u64;
        on_bytes(n as u64);
        let line = trim_line(&buf);
        if line.is_empty() {
            continue;
        }
        summary.lines += 1;
        f(line_no, line)?;
    }
    Ok(summary)
}

/// One complete, non-blank line of a segment, as [`for_each_chunk`] hands it out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'a> {
    /// 1-based line number, blank lines included (as [`for_each_line`] counts them).
    pub no: u64,
    /// Byte offset of the line's start in the file, so export can read it again later.
    pub off: u64,
    /// The line without its newline and trailing blanks.
    pub bytes: &'a [u8],
}

/// How much of a file [`for_each_chunk`] reads at a time (a longer line is read whole).
const CHUNK_BYTES: usize = 2 << 20;

/// An owned run of complete lines of a file, which can be handed to another thread.
pub(crate) struct Chunk {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// (line number, start in `buf`, length) of each non-blank line.
    spans: Vec<(u64, usize, usize)>,
}

impl Chunk {
    pub(crate) fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.spans.iter().map(|&(no, start, len)| Line {
            no,
            off: self.base + start as u64,
            bytes: &self.buf[start..start + len],
        })
    }
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }
}

/// [`for_each_line`] in batches: calls `f` with each chunk of about [`CHUNK_BYTES`] of
/// complete, non-blank lines, so the caller can work on chunks in parallel. Same lines,
/// numbers, summary and torn-tail rule as [`for_each_line`]. Also returns the open file, so
/// the lines can be read again by offset even if the segment is renamed (sealed) meanwhile.
pub(crate) fn for_each_chunk(
    path: &Path,
    kind: &'static str,
    on_bytes: impl FnMut(u64),
    f: impl FnMut(Chunk) -> Result<(), ExportError>,
) -> Result<(InputSummary, File), ExportError> {
    chunks_of(path, kind, CHUNK_BYTES, on_bytes, f)
}

fn chunks_of(
    path: &Path,
    kind: &'static str,
    chunk_bytes: usize,
    mut on_bytes: impl FnMut(u64),
    mut f: impl FnMut(Chunk) -> Result<(), ExportError>,
) -> Result<(InputSummary, File), ExportError> {
    let (mut file, read_path, open) = open_segment(path)?;
    let io_err = |e| ExportError::Input {
        path: read_path.clone(),
        source: e,
    };
    let mut summary = InputSummary::empty(&read_path, kind);
    let mut buf: Vec<u8> = Vec::new();
    // File offset of `buf[0]`.
    let mut buf_off = 0u64;
    let mut line_no = 0u64;
    let mut eof = false;
    while !eof {
        // Fill up to a chunk beyond what is left over; at least one more chunk when the
        // leftover is a single line longer than a chunk.
        // `read_to_end` reads into the spare capacity without zeroing it first (zeroing every
        // chunk before reading into it showed in the profile) and retries interrupted reads;
        // it stops short of the limit only at the end of the file.
        let want = buf.len() + chunk_bytes;
        buf.reserve_exact(chunk_bytes);
        (&mut file)
            .take(chunk_bytes as u64)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        eof = buf.len() < want;
        // Complete lines end with a newline; at the end of a sealed file the last line
        // needs none, at the end of an open one it is torn and left for a later export.
        let mut complete = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
        if eof && complete < buf.len() {
            if open {
                summary.torn_tail_skipped = true;
            } else {
                complete = buf.len();
            }
        }
        let mut spans = Vec::new();
        let mut pos = 0;
        while pos < complete {
            let end = memchr::memchr(b'\n', &buf[pos..complete]).map_or(complete, |i| pos + i + 1);
            line_no += 1;
            let n = (end - pos) as u64;
            summary.bytes += n;
            on_bytes(n);
            let line = trim_line(&buf[pos..end]);
            if !line.is_empty() {
                summary.lines += 1;
                spans.push((line_no, pos, line.len()));
            }
            pos = end;
        }
        // The chunk keeps the big buffer; the (short) unfinished line moves to a new one.
        let rest = buf.split_off(complete);
        let chunk = Chunk {
            buf: std::mem::replace(&mut buf, rest),
            base: buf_off,
            spans,
        };
        buf_off += complete as u64;
        if chunk.len() > 0 {
            f(chunk)?;
        }
    }
    Ok((summary, file))
}

/// Opens a segment: (file, the path actually opened, whether it is an open segment). An open
/// segment that was sealed (renamed to `*.jsonl`) between listing and reading is read under
/// its sealed name, which now holds everything the open one did, and more.
fn open_segment(path: &Path) -> Result<(File, std::path::PathBuf, bool), ExportError> {
    let open = is_open_segment(path);
    match File::open(path) {
        Ok(f) => Ok((f, path.to_path_buf(), open)),
        Err(e) if open && e.kind() == std::io::ErrorKind::NotFound => {
            let sealed = path.with_extension("");
            match File::open(&sealed) {
                Ok(f) => Ok((f, sealed, false)),
                Err(e2) => Err(ExportError::Input {
                    path: sealed,
                    source: e2,
                }),
            }
        }
        Err(e) => Err(ExportError::Input {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    &buf[..end]
}

/// A time given on the command line (`--since`, `--until`): RFC 3339, a date and time
/// without a zone (UTC), or a date alone (its midnight, UTC). Microseconds since the epoch.
pub fn time_bound_micros(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_micros());
    }
    match ts_micros(s) {
        i64::MIN => Err(format!(
            "{s:?} is not a time: use RFC 3339 (2026-11-01T08:00:00Z) or a date (2026-11-01)"
        )),
        t => Ok(t),
    }
}

/// Microseconds since the Unix epoch for a record timestamp. Accepts RFC 3339 (what the
/// collector writes) and the seed's naive `isoformat()` (taken as UTC). Unparseable times sort
/// first (`i64::MIN`), so they never win "latest feedback" or "newer copy".
pub fn ts_micros(s: &str) -> i64 {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return t.timestamp_micros();
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return t.and_utc().timestamp_micros();
        }
    }
    i64::MIN
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn export_input_open_segment_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = dir.path().join("a.jsonl");
        let open = dir.path().join("a.jsonl.open");
        for p in [&sealed, &open] {
            let mut f = File::create(p).unwrap();
            f.write_all(b"{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":").unwrap();
        }
        let mut seen = Vec::new();
        let s = for_each_line(
            &open,
            "examples",
            |_| {},
            |n, l| {
                seen.push((n, l.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert!(s.torn_tail_skipped);
        assert_eq!(
            seen,
            vec![(1, b"{\"a\":1}".to_vec()), (3, b"{\"a\":2}".to_vec())]
        );
        let mut count = 0;
        let s = for_each_line(
            &sealed,
            "examples",
            |_| {},
            |_, _| {
                count += 1;
                Ok(())
            },
        )
        .unwrap();
        assert!(!s.torn_tail_skipped);
        assert_eq!(
            count, 3,
            "a sealed file's last line is complete even without newline"
        );
    }

    proptest::proptest! {
        #[test]
        fn export_input_chunks_match_lines(
            text in "[ab\\n\\r ]{0,60}",
            chunk in 1usize..8,
            open in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(if open { "a.jsonl.open" } else { "a.jsonl" });
            std::fs::write(&p, &text).unwrap();
            let mut want = Vec::new();
            let s1 = for_each_line(&p, "examples", |_| {}, |n, l| {
                want.push((n, l.to_vec()));
                Ok(())
            }).unwrap();
            let mut got = Vec::new();
            let (s2, _) = chunks_of(&p, "examples", chunk, |_| {}, |c| {
                for l in c.lines() {
                    let start = l.off as usize;
                    // The offset finds the line again in the file.
                    assert_eq!(&text.as_bytes()[start..start + l.bytes.len()], l.bytes);
                    got.push((l.no, l.bytes.to_vec()));
                }
                Ok(())
            }).unwrap();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(
                (s1.bytes, s1.lines, s1.torn_tail_skipped),
                (s2.bytes, s2.lines, s2.torn_tail_skipped)
            );
        }
    }

    #[test]
    fn export_input_timestamps_parse_both_forms() {
        assert_eq!(ts_micros("1970-01-01T00:00:01Z"), 1_000_000);
        assert_eq!(ts_micros("1970-01-01T00:00:01.5"), 1_500_000);
        assert_eq!(ts_micros("garbage"), i64::MIN);
    }
}
