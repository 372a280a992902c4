//! Segment file names: `<prefix>_YYYYMMDD_NNNN.jsonl` for sealed segments and
//! `<prefix>_YYYYMMDD_NNNN.jsonl.open` for the one being written.
//!
//! The name is the only place the day and the sequence number of a segment live, so every
//! decision about ordering and numbering (after a restart, after a crash) is made by parsing
//! the names found in `data_dir`; nothing else is persisted.

use super::{SegmentError, Stream};
use chrono::NaiveDate;
use std::path::{Path, PathBuf};

/// Numbers are printed with at least four digits; past 9999 they simply grow wider, and
/// ordering always compares the parsed number, never the text.
pub(crate) const MAX_NUMBER: u32 = 999_999;

const SEALED_EXT: &str = ".jsonl";
const OPEN_EXT: &str = ".jsonl.open";

/// One parsed segment name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentName {
    pub stream: Stream,
    pub day: NaiveDate,
    pub number: u32,
    pub open: bool,
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{:04}{}",
            self.stream.prefix(),
            self.day.format("%Y%m%d"),
            self.number,
            if self.open { OPEN_EXT } else { SEALED_EXT }
        )
    }

    pub fn sealed(self) -> SegmentName {
        SegmentName {
            open: false,
            ..self
        }
    }

    pub fn with_number(self, number: u32) -> SegmentName {
        SegmentName { number, ..self }
    }

    /// Parses a file name of `stream`; anything else in the directory (exports, state,
    /// other streams, editor backups) is not a segment and yields `None`.
    pub fn parse(stream: Stream, file_name: &str) -> Option<SegmentName> {
        let rest = file_name.strip_prefix(stream.prefix())?.strip_prefix('_')?;
        let (stem, open) = if let Some(stem) = rest.strip_suffix(OPEN_EXT) {
            (stem, true)
        } else {
            (rest.strip_suffix(SEALED_EXT)?, false)
        };
        let (day, number) = stem.split_once('_')?;
        if day.len() != 8 || !day.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if number.len() < 4 || number.len() > 6 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let day = NaiveDate::parse_from_str(day, "%Y%m%d").ok()?;
        let number: u32 = number.parse().ok()?;
        if number == 0 {
            return None;
        }
        Some(SegmentName {
            stream,
            day,
            number,
            open,
        })
    }

    /// Write order: by day, then the sealed files by number, then the open one.
    pub fn order_key(&self) -> (NaiveDate, bool, u32) {
        (self.day, self.open, self.number)
    }
}

/// Every segment of `stream` in `dir`, unordered. A missing directory has no segments.
pub(crate) fn scan(
    dir: &Path,
    stream: Stream,
) -> Result<Vec<(SegmentName, PathBuf)>, SegmentError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SegmentError::io("read directory", dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SegmentError::io("read directory", dir, e))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Some(name) = SegmentName::parse(stream, file_name) {
            found.push((name, entry.path()));
        }
    }
    Ok(found)
}

/// The highest number used on `day` by any segment of the stream, sealed or open.
pub(crate) fn highest_number(found: &[(SegmentName, PathBuf)], day: NaiveDate) -> u32 {
    found
        .iter()
        .filter(|(n, _)| n.day == day)
        .map(|(n, _)| n.number)
        .max()
        .unwrap_or(0)
}
