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
use std::io::{BufRead, BufReader};
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

/// Whether a path names an open (still written) segment.
pub fn is_open_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "open")
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
    let mut summary = InputSummary {
        path: read_path.display().to_string(),
        kind,
        bytes: 0,
        lines: 0,
        torn_tail_skipped: false,
    };
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

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    &buf[..end]
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

    #[test]
    fn export_input_timestamps_parse_both_forms() {
        assert_eq!(ts_micros("1970-01-01T00:00:01Z"), 1_000_000);
        assert_eq!(ts_micros("1970-01-01T00:00:01.5"), 1_500_000);
        assert_eq!(ts_micros("garbage"), i64::MIN);
    }
}
