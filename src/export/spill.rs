//! External sorting for export: items are buffered up to a memory budget, sorted, written to
//! anonymous temporary files ("runs") under the export's temp dir, and read back through a
//! k-way merge. Every stage of export that needs "all records with the same key together"
//! (replayed ids, feedback joins, dedup groups, output order) goes through a [`Sorter`], which
//! is what keeps export's memory bounded by the budget rather than by the data size.
//!
//! Runs are sequences of frames: a little-endian `u32` length followed by the item's bytes.
//! Each item type writes its own compact binary encoding ([`SpillItem`], mostly with
//! [`super::codec`]); records carry texts only where they must (see [`super::prepare`]).

use super::ExportError;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Default in-memory budget of one sorter, in [`SpillItem::weight`] units (about bytes).
/// At most two sorters are filled at the same time (the others are being merged, which holds
/// one item per run), so this bounds export's working set to a few tens of MiB whatever the
/// input size.
pub(crate) const DEFAULT_BUDGET: usize = 8 << 20;

/// Reader buffer per run during the merge; the number of runs grows with the data, so this is
/// kept small.
const RUN_READ_BUF: usize = 32 << 10;

/// An item that can be spilled to disk and merged back in order.
pub(crate) trait SpillItem: Ord + Sized {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String>;
    fn decode(buf: &[u8]) -> Result<Self, String>;
    /// Approximate heap footprint, used against the sorter's budget.
    fn weight(&self) -> usize;
}

fn spill_err(dir: &Path, e: std::io::Error) -> ExportError {
    ExportError::Spill {
        dir: dir.to_path_buf(),
        source: e,
    }
}

/// Writes frames to an anonymous temp file; [`FrameWriter::into_reader`] rewinds it.
pub(crate) struct FrameWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    scratch: Vec<u8>,
    count: u64,
}

impl FrameWriter {
    pub(crate) fn new(dir: &Path) -> Result<Self, ExportError> {
        let file = tempfile::tempfile_in(dir).map_err(|e| spill_err(dir, e))?;
        Ok(FrameWriter {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, file),
            scratch: Vec::new(),
            count: 0,
        })
    }

    pub(crate) fn write<T: SpillItem>(&mut self, item: &T) -> Result<(), ExportError> {
        self.scratch.clear();
        item.encode(&mut self.scratch)
            .map_err(|m| ExportError::Internal(format!("cannot encode spill item: {m}")))?;
        let len = u32::try_from(self.scratch.len())
            .map_err(|_| ExportError::Internal("spill item larger than 4 GiB".into()))?;
        self.out
            .write_all(&len.to_le_bytes())
            .and_then(|_| self.out.write_all(&self.scratch))
            .map_err(|e| spill_err(&self.dir, e))?;
        self.count += 1;
        Ok(())
    }

    pub(crate) fn into_reader<T: SpillItem>(
        self,
        buf_size: usize,
    ) -> Result<FrameReader<T>, ExportError> {
        let dir = self.dir;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| spill_err(&dir, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| spill_err(&dir, e))?;
        Ok(FrameReader {
            dir,
            input: BufReader::with_capacity(buf_size, file),
            buf: Vec::new(),
            remaining: self.count,
            _t: std::marker::PhantomData,
        })
    }
}

/// Reads back the frames of a [`FrameWriter`], in the order they were written.
pub(crate) struct FrameReader<T> {
    dir: PathBuf,
    input: BufReader<File>,
    buf: Vec<u8>,
    remaining: u64,
    _t: std::marker::PhantomData<T>,
}

impl<T: SpillItem> FrameReader<T> {
    fn next_item(&mut self) -> Result<Option<T>, ExportError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.input
            .read_exact(&mut len)
            .map_err(|e| spill_err(&self.dir, e))?;
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(|e| spill_err(&self.dir, e))?;
        self.remaining -= 1;
        T::decode(&self.buf)
            .map(Some)
            .map_err(|m| ExportError::Internal(format!("corrupt spill file: {m}")))
    }
}

impl<T: SpillItem> Iterator for FrameReader<T> {
    type Item = Result<T, ExportError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

/// Buffers items, spilling sorted runs when the budget is exceeded.
pub(crate) struct Sorter<T> {
    dir: PathBuf,
    budget: usize,
    buf: Vec<T>,
    weight: usize,
    runs: Vec<FrameWriter>,
}

impl<T: SpillItem> Sorter<T> {
    pub(crate) fn new(dir: &Path, budget: usize) -> Self {
        Sorter {
            dir: dir.to_path_buf(),
            budget: budget.max(1),
            buf: Vec::new(),
            weight: 0,
            runs: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, item: T) -> Result<(), ExportError> {
        // The Vec slot itself counts too, so tiny items still fill the budget.
        self.weight += item.weight() + std::mem::size_of::<T>();
        self.buf.push(item);
        if self.weight >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), ExportError> {
        self.buf.sort_unstable();
        let mut w = FrameWriter::new(&self.dir)?;
        for item in self.buf.drain(..) {
            w.write(&item)?;
        }
        self.runs.push(w);
        self.weight = 0;
        // Give the memory back: the next run may never come.
        self.buf.shrink_to(0);
        Ok(())
    }

    /// All items pushed, in ascending order. Equal items come out in no particular order, so
    /// callers make their keys total (a sequence number or id at the end).
    pub(crate) fn finish(mut self) -> Result<Sorted<T>, ExportError> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            return Ok(Sorted::Memory(self.buf.into_iter()));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::with_capacity(self.runs.len());
        for w in self.runs {
            readers.push(w.into_reader::<T>(RUN_READ_BUF)?);
        }
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(item) = r.next_item()? {
                heap.push(Reverse(HeapEntry(item, i)));
            }
        }
        Ok(Sorted::Merge { readers, heap })
    }
}

pub(crate) struct HeapEntry<T>(T, usize);

impl<T: Ord> PartialEq for HeapEntry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl<T: Ord> Eq for HeapEntry<T> {}
impl<T: Ord> PartialOrd for HeapEntry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for HeapEntry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Run index breaks ties so the merge is deterministic.
        self.0.cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The sorted output of a [`Sorter`].
pub(crate) enum Sorted<T> {
    Memory(std::vec::IntoIter<T>),
    Merge {
        readers: Vec<FrameReader<T>>,
        heap: BinaryHeap<Reverse<HeapEntry<T>>>,
    },
}

impl<T: SpillItem> Iterator for Sorted<T> {
    type Item = Result<T, ExportError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory(it) => it.next().map(Ok),
            Sorted::Merge { readers, heap } => {
                let Reverse(HeapEntry(item, i)) = heap.pop()?;
                match readers[i].next_item() {
                    Ok(Some(next)) => heap.push(Reverse(HeapEntry(next, i))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(item))
            }
        }
    }
}

/// A peekable wrapper that surfaces errors, for grouping consecutive equal keys.
pub(crate) struct Grouped<I: Iterator> {
    inner: I,
    peeked: Option<I::Item>,
}

impl<T, I: Iterator<Item = Result<T, ExportError>>> Grouped<I> {
    pub(crate) fn new(inner: I) -> Self {
        Grouped {
            inner,
            peeked: None,
        }
    }

    pub(crate) fn peek(&mut self) -> Result<Option<&T>, ExportError> {
        if self.peeked.is_none() {
            self.peeked = self.inner.next();
        }
        if matches!(self.peeked, Some(Err(_))) {
            if let Some(Err(e)) = self.peeked.take() {
                return Err(e);
            }
        }
        Ok(self.peeked.as_ref().and_then(|r| r.as_ref().ok()))
    }

    pub(crate) fn next_item(&mut self) -> Result<Option<T>, ExportError> {
        match self.peeked.take().or_else(|| self.inner.next()) {
            None => Ok(None),
            Some(r) => r.map(Some),
        }
    }

    /// Takes the next item if `pred` holds for it.
    pub(crate) fn next_if(
        &mut self,
        pred: impl FnOnce(&T) -> bool,
    ) -> Result<Option<T>, ExportError> {
        match self.peek()? {
            Some(t) if pred(t) => self.next_item(),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
    struct Item(u32, String);
    impl SpillItem for Item {
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            crate::export::codec::Enc(out).u32(self.0).str(&self.1);
            Ok(())
        }
        fn decode(buf: &[u8]) -> Result<Self, String> {
            let d = &mut crate::export::codec::Dec::new(buf);
            let item = Item(d.u32()?, d.str()?);
            d.end()?;
            Ok(item)
        }
        fn weight(&self) -> usize {
            self.1.len()
        }
    }

    #[test]
    fn export_spill_sorts_across_many_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path(), 100);
        let mut want = Vec::new();
        for i in 0..1000u32 {
            let k = (i * 7919) % 1000;
            s.push(Item(k, format!("v{k}"))).unwrap();
            want.push(Item(k, format!("v{k}")));
        }
        assert!(s.runs.len() > 5);
        want.sort();
        let got: Vec<Item> = s.finish().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn export_spill_in_memory_when_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path(), 1 << 20);
        s.push(Item(2, "b".into())).unwrap();
        s.push(Item(1, "a".into())).unwrap();
        let got: Vec<Item> = s.finish().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![Item(1, "a".into()), Item(2, "b".into())]);
    }
}
