//! Where the MinHash band keys of every prepared text wait between read time and near dedup.
//!
//! A text's band keys (11 x 8 bytes by default) were a third of the bytes of every record the
//! sorts moved, spilled and read back, yet near dedup reads them once. So the reading thread
//! appends them here, to a temporary file in read order, and the records carry their index;
//! near dedup sorts its (index, candidate) pairs by index and reads the file once, front to
//! back ([`BandReader::read`] takes indexes in ascending order only).

use super::ExportError;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn store_err(dir: &Path, e: std::io::Error) -> ExportError {
    ExportError::Spill {
        dir: dir.to_path_buf(),
        source: e,
    }
}

/// Appends band keys, `per` of them for every text (the export's band count).
pub(crate) struct BandStore {
    dir: PathBuf,
    out: BufWriter<File>,
    per: usize,
    count: u64,
}

impl BandStore {
    pub(crate) fn new(dir: &Path, per: usize) -> Result<Self, ExportError> {
        let file = tempfile::tempfile_in(dir).map_err(|e| store_err(dir, e))?;
        Ok(BandStore {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(64 << 10, file),
            per,
            count: 0,
        })
    }

    /// Stores one text's band keys; returns their index, or `None` for a text without any
    /// (no words, or near dedup off).
    pub(crate) fn append(&mut self, bands: &[u64]) -> Result<Option<u64>, ExportError> {
        if bands.is_empty() {
            return Ok(None);
        }
        if bands.len() != self.per {
            return Err(ExportError::Internal(format!(
                "{} band keys for a text, expected {}",
                bands.len(),
                self.per
            )));
        }
        for b in bands {
            self.out
                .write_all(&b.to_le_bytes())
                .map_err(|e| store_err(&self.dir, e))?;
        }
        self.count += 1;
        Ok(Some(self.count - 1))
    }

    pub(crate) fn into_reader(self) -> Result<BandReader, ExportError> {
        let dir = self.dir;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| store_err(&dir, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| store_err(&dir, e))?;
        Ok(BandReader {
            dir,
            input: BufReader::with_capacity(256 << 10, file),
            per: self.per,
            next: 0,
            count: self.count,
            bytes: vec![0; self.per * 8],
            keys: Vec::with_capacity(self.per),
        })
    }
}

/// Reads a [`BandStore`] back, in ascending index order.
pub(crate) struct BandReader {
    dir: PathBuf,
    input: BufReader<File>,
    per: usize,
    /// Index of the record the file is positioned at.
    next: u64,
    count: u64,
    bytes: Vec<u8>,
    keys: Vec<u64>,
}

impl BandReader {
    /// The band keys stored at `ix`, which must not be below the last index read (the same
    /// index again is fine: several candidates never share one, but a reader should not
    /// care).
    pub(crate) fn read(&mut self, ix: u64) -> Result<&[u64], ExportError> {
        if ix >= self.count || ix + 1 < self.next {
            return Err(ExportError::Internal(format!(
                "band keys {ix} asked for out of order (at {} of {})",
                self.next, self.count
            )));
        }
        let rec = (self.per * 8) as i64;
        if ix + 1 == self.next {
            return Ok(&self.keys);
        }
        if ix > self.next {
            self.input
                .seek_relative((ix - self.next) as i64 * rec)
                .map_err(|e| store_err(&self.dir, e))?;
        }
        self.input
            .read_exact(&mut self.bytes)
            .map_err(|e| store_err(&self.dir, e))?;
        self.next = ix + 1;
        self.keys.clear();
        self.keys.extend(
            self.bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        Ok(&self.keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_band_store_reads_back_what_was_stored_skipping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = BandStore::new(dir.path(), 3).unwrap();
        assert_eq!(s.append(&[]).unwrap(), None);
        let mut ixs = Vec::new();
        for i in 0..50_000u64 {
            ixs.push(s.append(&[i, i * 7, u64::MAX - i]).unwrap().unwrap());
        }
        assert_eq!(ixs, (0..50_000).collect::<Vec<_>>());
        assert!(s.append(&[1, 2]).is_err(), "a record of the wrong size");
        let mut r = s.into_reader().unwrap();
        for i in [0u64, 1, 1, 2, 999, 40_000, 49_999] {
            assert_eq!(r.read(i).unwrap(), &[i, i * 7, u64::MAX - i]);
        }
        assert!(r.read(5).is_err(), "backwards");
        assert!(r.read(50_000).is_err(), "past the end");
    }
}
