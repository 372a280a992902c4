//! Where the MinHash band keys of every prepared text wait between read time and near dedup.
//!
//! A text's band keys (11 x 8 bytes by default) were a third of the bytes of every record the
//! sorts moved, spilled and read back, yet near dedup reads them once. So the reading thread
//! appends them here, to a temporary file in read order, and the records carry their index;
//! near dedup sorts its (index, candidate) pairs by index and reads the file once, front to
//! back ([`BandReader::read`] takes indexes in ascending order only).
//!
//! Most band keys occur once in a whole export, and a bucket of one drops nothing, yet each
//! was a 16-byte item in near dedup's sort (880,000 of them at 100,000 examples, its largest
//! sort). So the store also notes, in two bit sets, which (band, key) pairs it has seen and
//! which it has seen again ([`Repeats`]); near dedup skips every band key whose pair was seen
//! only once. A bit shared by chance only lets an item through: the test has no false
//! negatives, so the result does not change.

use super::dedup::MAX_HASHES;
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

/// Which (band, key) pairs were stored more than once, up to chance collisions: one bit per
/// slot for "seen" and one for "seen again", in adjacent words (one cache miss per key).
pub(crate) struct Repeats {
    /// `[seen, again]` per 64 slots.
    bits: Vec<[u64; 2]>,
    mask: u64,
}

/// Slots per expected band key (the chance that a key seen once shares its slot with another
/// is then at most about a quarter; 8 cost 4 MiB more peak RSS at 100,000 examples and was
/// not measurably faster), and the bounds of the bit sets: 2^24 slots is 2 MiB per set. (At
/// 1,000,000 examples, 2^25 slots, 8 MiB in all, put the peak RSS over 64 MiB; with 2^24
/// about half of the keys seen once still pass by chance, and the export was as fast.)
const SLOTS_PER_KEY: u64 = 4;
const MIN_SLOTS: u64 = 1 << 16;
const MAX_SLOTS: u64 = 1 << 24;

impl Repeats {
    /// Sized for about `keys` band keys (more only raises the chance collisions).
    pub(crate) fn new(keys: u64) -> Self {
        let slots = keys
            .saturating_mul(SLOTS_PER_KEY)
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .next_power_of_two();
        Repeats {
            bits: vec![[0; 2]; (slots / 64) as usize],
            mask: slots - 1,
        }
    }

    fn slot(&self, band: usize, key: u64) -> (usize, u64) {
        // The keys are well mixed; the band's multiple keeps equal keys of different bands
        // apart.
        let s = (key ^ (band as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) & self.mask;
        ((s / 64) as usize, 1 << (s % 64))
    }

    fn note(&mut self, band: usize, key: u64) {
        let (w, bit) = self.slot(band, key);
        let [seen, again] = &mut self.bits[w];
        *again |= *seen & bit;
        *seen |= bit;
    }

    /// False only if `key` was noted for `band` at most once.
    pub(crate) fn may_repeat(&self, band: usize, key: u64) -> bool {
        let (w, bit) = self.slot(band, key);
        self.bits[w][1] & bit != 0
    }
}

/// Appends band keys, `per` of them for every text (the export's band count).
pub(crate) struct BandStore {
    dir: PathBuf,
    out: BufWriter<File>,
    per: usize,
    count: u64,
    repeats: Repeats,
}

impl BandStore {
    /// `texts`: about how many texts will be stored (sizes the [`Repeats`] bit sets).
    pub(crate) fn new(dir: &Path, per: usize, texts: u64) -> Result<Self, ExportError> {
        if per > MAX_HASHES {
            return Err(ExportError::Internal(format!(
                "{per} band keys per text, at most {MAX_HASHES}"
            )));
        }
        let file = tempfile::tempfile_in(dir).map_err(|e| store_err(dir, e))?;
        Ok(BandStore {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(64 << 10, file),
            per,
            count: 0,
            repeats: Repeats::new(texts.saturating_mul(per as u64)),
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
        let mut bytes = [0u8; 8 * MAX_HASHES];
        for (band, (&b, out)) in bands.iter().zip(bytes.chunks_exact_mut(8)).enumerate() {
            self.repeats.note(band, b);
            out.copy_from_slice(&b.to_le_bytes());
        }
        // One write per text (a write per key was a tenth of the reading thread's time).
        self.out
            .write_all(&bytes[..8 * bands.len()])
            .map_err(|e| store_err(&self.dir, e))?;
        self.count += 1;
        Ok(Some(self.count - 1))
    }

    /// The reader, and which band keys may occur more than once.
    pub(crate) fn into_reader(self) -> Result<(BandReader, Repeats), ExportError> {
        let dir = self.dir;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| store_err(&dir, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| store_err(&dir, e))?;
        let reader = BandReader {
            dir,
            input: BufReader::with_capacity(256 << 10, file),
            per: self.per,
            next: 0,
            count: self.count,
            bytes: vec![0; self.per * 8],
            keys: Vec::with_capacity(self.per),
        };
        Ok((reader, self.repeats))
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
        let mut s = BandStore::new(dir.path(), 3, 10).unwrap();
        assert_eq!(s.append(&[]).unwrap(), None);
        let mut ixs = Vec::new();
        for i in 0..50_000u64 {
            ixs.push(s.append(&[i, i * 7, u64::MAX - i]).unwrap().unwrap());
        }
        assert_eq!(ixs, (0..50_000).collect::<Vec<_>>());
        assert!(s.append(&[1, 2]).is_err(), "a record of the wrong size");
        let (mut r, _) = s.into_reader().unwrap();
        for i in [0u64, 1, 1, 2, 999, 40_000, 49_999] {
            assert_eq!(r.read(i).unwrap(), &[i, i * 7, u64::MAX - i]);
        }
        assert!(r.read(5).is_err(), "backwards");
        assert!(r.read(50_000).is_err(), "past the end");
    }

    /// Every key stored twice for a band is reported as possibly repeated (no false
    /// negatives, whatever the sizing); keys stored once mostly are not, and a key stored
    /// for one band does not count for another.
    #[test]
    fn export_band_store_repeats_has_no_false_negatives() {
        let dir = tempfile::tempdir().unwrap();
        let key = |i: u64| i.wrapping_mul(0xd6e8_feb8_6659_fd93).rotate_left(17);
        // Sized for far fewer texts than stored (every slot shared by chance), and for 500,000
        // texts (2^22 slots).
        for sized_for in [100, 500_000] {
            let mut s = BandStore::new(dir.path(), 2, sized_for).unwrap();
            for i in 0..200_000u64 {
                s.append(&[key(i), key(i + 1_000_000)]).unwrap();
            }
            // Repeated: in band 0 every key i < 1000 again; in band 1, key(1_000_000 + i).
            for i in 0..1000u64 {
                s.append(&[key(i), key(5_000_000 + i)]).unwrap();
                s.append(&[key(7_000_000 + i), key(1_000_000 + i)]).unwrap();
            }
            let (_, rep) = s.into_reader().unwrap();
            for i in 0..1000u64 {
                assert!(rep.may_repeat(0, key(i)), "band 0 key {i}");
                assert!(rep.may_repeat(1, key(1_000_000 + i)), "band 1 key {i}");
            }
            if sized_for == 500_000 {
                let once = (1000..200_000u64)
                    .filter(|&i| rep.may_repeat(0, key(i)))
                    .count();
                // 404,000 keys in 2^22 slots: about one in ten shares a slot by chance.
                assert!(
                    once < 199_000 / 5,
                    "{once} keys seen once reported repeated"
                );
            }
        }
        // A key seen once in each of two bands is not a repeat of either.
        let mut t = BandStore::new(dir.path(), 2, 1000).unwrap();
        t.append(&[42, 43]).unwrap();
        t.append(&[43, 42]).unwrap();
        let (_, rep) = t.into_reader().unwrap();
        assert!(!rep.may_repeat(0, 42) && !rep.may_repeat(1, 42));
    }
}
