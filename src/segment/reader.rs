//! Reading segments back: the ordered list of a stream's files and a streaming record
//! iterator over them, as the exporter and `stats` need.
//!
//! The reader runs while the daemon writes, so it tolerates the two things a live writer
//! does: the `.open` file may end in a line still being written (skipped, not an error), and
//! it may be sealed (renamed) between `list` and the read (then the sealed name is read).

use super::name;
use super::{SegmentError, Stream};
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// Every segment file of a stream in `dir`, sealed and open, in write order (by day then
/// number; the open one last in its day). A missing directory yields an empty list.
pub fn list(dir: &Path, stream: Stream) -> Result<Vec<PathBuf>, SegmentError> {
    let mut found = name::scan(dir, stream)?;
    found.sort_by_key(|(n, _)| n.order_key());
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Streams the records of `files` one line at a time (bounded memory: one line in memory).
///
/// Yields `(path, line_number, parsed)` with 1-based line numbers; a record that does not
/// parse as `T` is yielded as its `serde_json::Error` and reading goes on. Blank lines are
/// skipped. A torn last line of a `.open` file (no newline yet) is skipped, not an error. An
/// I/O error is yielded once as `Err` and ends that file; the next file is then read.
pub fn read_records<T: DeserializeOwned>(files: &[PathBuf]) -> RecordIter<T> {
    RecordIter {
        files: files.iter().cloned().collect(),
        current: None,
        buf: Vec::new(),
        _record: PhantomData,
    }
}

struct CurrentFile {
    path: PathBuf,
    reader: BufReader<File>,
    /// Whether the file was still being written when opened.
    open: bool,
    line_no: u64,
}

/// Iterator returned by [`read_records`].
pub struct RecordIter<T> {
    files: VecDeque<PathBuf>,
    current: Option<CurrentFile>,
    buf: Vec<u8>,
    _record: PhantomData<fn() -> T>,
}

/// The item type of [`RecordIter`].
pub type RecordItem<T> = Result<(PathBuf, u64, Result<T, serde_json::Error>), SegmentError>;

fn is_open_segment(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".jsonl.open"))
}

/// Opens a listed file; a `.open` segment that vanished was sealed meanwhile, so its sealed
/// name is read instead. Returns `None` when neither exists any more (e.g. a consumer
/// deleted a sealed file): nothing to read, not an error.
fn open_listed(path: &Path) -> Result<Option<CurrentFile>, SegmentError> {
    let open = is_open_segment(path);
    match File::open(path) {
        Ok(f) => {
            return Ok(Some(CurrentFile {
                path: path.to_path_buf(),
                reader: BufReader::with_capacity(256 * 1024, f),
                open,
                line_no: 0,
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SegmentError::io("open segment", path, e)),
    }
    if !open {
        return Ok(None);
    }
    let sealed = path.with_extension("");
    match File::open(&sealed) {
        Ok(f) => Ok(Some(CurrentFile {
            path: sealed,
            reader: BufReader::with_capacity(256 * 1024, f),
            open: false,
            line_no: 0,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SegmentError::io("open segment", &sealed, e)),
    }
}

impl<T: DeserializeOwned> Iterator for RecordIter<T> {
    type Item = RecordItem<T>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(cur) = self.current.as_mut() else {
                let path = self.files.pop_front()?;
                match open_listed(&path) {
                    Ok(Some(c)) => self.current = Some(c),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            self.buf.clear();
            let n = match cur.reader.read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    let err = SegmentError::io("read segment", &cur.path, e);
                    self.current = None;
                    return Some(Err(err));
                }
            };
            if n == 0 {
                self.current = None;
                continue;
            }
            cur.line_no += 1;
            let terminated = self.buf.last() == Some(&b'\n');
            if terminated {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            } else if cur.open {
                // The writer is mid-line (or crashed mid-line): not a record yet.
                self.current = None;
                continue;
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = serde_json::from_slice::<T>(&self.buf);
            return Some(Ok((cur.path.clone(), cur.line_no, parsed)));
        }
    }
}
