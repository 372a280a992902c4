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

/// Default in-memory budget of all of one export's sorters together, in [`SpillItem::weight`]
/// units plus each item's own size (about bytes). The sorters share it ([`Budget`]): the one
/// being filled may use what the one being drained has given back, so a stage that moves
/// every record from one sorter into the next (most of them) needs no spill while the data
/// fits, whatever the data size otherwise.
pub(crate) const DEFAULT_BUDGET: usize = 24 << 20;

/// At most this much is reserved up front for one sorter's buffer (it grows past it if the
/// budget allows).
const MAX_RESERVE: usize = 64 << 20;

/// A sorter spills only once it holds at least this share of the budget (1/8): while a full
/// sorter is being drained, the one being filled would otherwise write a run per item.
const MIN_RUN_SHARE: usize = 8;

/// The memory budget the sorters of one export share: `used` goes up as items are pushed and
/// down as they are spilled or taken out of a sorted in-memory run.
#[derive(Clone)]
pub(crate) struct Budget(std::rc::Rc<BudgetInner>);

struct BudgetInner {
    limit: usize,
    used: std::cell::Cell<usize>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget(std::rc::Rc::new(BudgetInner {
            limit: limit.max(1),
            used: std::cell::Cell::new(0),
        }))
    }
    /// What the sorters hold now.
    pub(crate) fn used(&self) -> usize {
        self.0.used.get()
    }
    fn add(&self, w: usize) {
        self.0.used.set(self.0.used.get() + w);
    }
    fn release(&self, w: usize) {
        self.0.used.set(self.0.used.get().saturating_sub(w));
    }
    /// Whether a sorter holding `own` should spill now.
    fn exceeded_by(&self, own: usize) -> bool {
        self.0.used.get() >= self.0.limit && own >= self.0.limit / MIN_RUN_SHARE
    }
}

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

/// Writes frames to an anonymous temp file; [`Run::into_reader`] rewinds it.
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

    /// Flushes the frames and lets the write buffer go: a sorter keeps every run it spilled
    /// until the merge, and 256 KiB of buffer per run added up on big exports.
    pub(crate) fn finish(self) -> Result<Run, ExportError> {
        let dir = self.dir;
        let file = self
            .out
            .into_inner()
            .map_err(|e| spill_err(&dir, e.into_error()))?;
        Ok(Run {
            dir,
            file,
            count: self.count,
        })
    }
}

/// The frames of a finished [`FrameWriter`], not yet read.
pub(crate) struct Run {
    dir: PathBuf,
    file: File,
    count: u64,
}

impl Run {
    pub(crate) fn into_reader<T: SpillItem>(
        mut self,
        buf_size: usize,
    ) -> Result<FrameReader<T>, ExportError> {
        let dir = self.dir;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| spill_err(&dir, e))?;
        Ok(FrameReader {
            dir,
            input: BufReader::with_capacity(buf_size, self.file),
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

/// Buffers items, spilling sorted runs when the shared budget is exceeded.
pub(crate) struct Sorter<T> {
    dir: PathBuf,
    budget: Budget,
    buf: Vec<T>,
    /// What `buf` holds against the budget.
    weight: usize,
    runs: Vec<Run>,
    /// `buf` is sorted for [`Sorter::finish`] already ([`Sorter::sort_on`]).
    presorted: bool,
}

/// What an item counts against the budget: its heap bytes and its slot.
fn footprint<T: SpillItem>(item: &T) -> usize {
    item.weight() + std::mem::size_of::<T>()
}

impl<T: SpillItem> Sorter<T> {
    pub(crate) fn new(dir: &Path, budget: &Budget) -> Self {
        Sorter {
            dir: dir.to_path_buf(),
            budget: budget.clone(),
            buf: Vec::new(),
            weight: 0,
            runs: Vec::new(),
            presorted: false,
        }
    }

    pub(crate) fn push(&mut self, item: T) -> Result<(), ExportError> {
        let w = footprint(&item);
        self.weight += w;
        self.budget.add(w);
        if self.buf.capacity() == 0 {
            // Room for as many items as the whole budget could hold, reserved once: pages
            // are only resident once written, and a growing vector would copy itself and
            // briefly hold its old and new buffers (that, not the items, set the peak RSS).
            // (Capped, so a test's "unlimited" budget does not reserve gigabytes.)
            let room = self.budget.0.limit.min(MAX_RESERVE);
            self.buf
                .reserve_exact(room / std::mem::size_of::<T>().max(1) + 1);
        }
        self.buf.push(item);
        self.presorted = false;
        if self.budget.exceeded_by(self.weight) {
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
        self.runs.push(w.finish()?);
        self.budget.release(self.weight);
        self.weight = 0;
        // Give the memory back: the next run may never come.
        self.buf.shrink_to(0);
        Ok(())
    }

    /// Sorts the items held in memory on a thread of `scope` while the caller goes on, so
    /// that [`Sorter::finish`] finds them sorted (the output order's sort ran alone at the
    /// end of dedup while the other core idled). Spilled runs are merged by `finish` as ever.
    pub(crate) fn sort_on<'scope>(&'scope mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        T: Send,
    {
        if self.runs.is_empty() {
            self.presorted = true;
            let buf = &mut self.buf;
            scope.spawn(move || buf.sort_unstable_by(|a, b| b.cmp(a)));
        }
    }

    /// All items pushed, in ascending order. Equal items come out in no particular order, so
    /// callers make their keys total (a sequence number or id at the end).
    pub(crate) fn finish(mut self) -> Result<Sorted<T>, ExportError> {
        if self.runs.is_empty() {
            // Descending, so the smallest is taken from the end and the vector can shrink as
            // it empties (see [`Drain`]).
            if !self.presorted {
                self.buf.sort_unstable_by(|a, b| b.cmp(a));
            }
            // The items' weight goes with them.
            self.weight = 0;
            return Ok(Sorted::Memory(Drain {
                items: std::mem::take(&mut self.buf),
                budget: self.budget.clone(),
            }));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::with_capacity(self.runs.len());
        for w in std::mem::take(&mut self.runs) {
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

impl<T> Drop for Sorter<T> {
    fn drop(&mut self) {
        // Dropped unfinished (an error on the way): its items leave the budget with it.
        self.budget.release(self.weight);
    }
}

/// A sorted in-memory run, smallest item last. Each item taken leaves the budget, and the
/// vector is shrunk whenever it is down to a quarter of its capacity, so the memory a stage
/// drains is there for the sorter it fills (each shrink copies what is left: in all, at most
/// half as many items as the vector had room for).
pub(crate) struct Drain<T: SpillItem> {
    items: Vec<T>,
    budget: Budget,
}

impl<T: SpillItem> Drain<T> {
    fn next(&mut self) -> Option<T> {
        let item = self.items.pop()?;
        self.budget.release(footprint(&item));
        if self.items.len() < self.items.capacity() / 4 && self.items.capacity() > 4096 {
            self.items.shrink_to(self.items.len() * 2);
        }
        Some(item)
    }
}

impl<T: SpillItem> Drop for Drain<T> {
    fn drop(&mut self) {
        // Not read to the end: what is left leaves the budget.
        self.budget.release(self.items.iter().map(footprint).sum());
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
pub(crate) enum Sorted<T: SpillItem> {
    Memory(Drain<T>),
    Merge {
        readers: Vec<FrameReader<T>>,
        heap: BinaryHeap<Reverse<HeapEntry<T>>>,
    },
}

impl<T: SpillItem> Iterator for Sorted<T> {
    type Item = Result<T, ExportError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory(d) => d.next().map(Ok),
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
        let mut s = Sorter::new(dir.path(), &Budget::new(100));
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

    /// A stage that moves every item of one sorter into the next fits in the budget the
    /// first one fitted in: what is taken out of a sorted run leaves the budget.
    #[test]
    fn export_spill_drained_items_make_room_for_the_next_sorter() {
        let dir = tempfile::tempdir().unwrap();
        let item = |i: u32| Item(i, format!("{i:08}"));
        let per = footprint(&item(0));
        let budget = Budget::new(per * 1000 + 1);
        let mut first = Sorter::new(dir.path(), &budget);
        for i in (0..1000u32).rev() {
            first.push(item(i)).unwrap();
        }
        assert!(first.runs.is_empty());
        assert_eq!(budget.used(), per * 1000);
        let mut next = Sorter::new(dir.path(), &budget);
        for got in first.finish().unwrap() {
            next.push(got.unwrap()).unwrap();
        }
        assert!(next.runs.is_empty(), "no spill while the first one drained");
        assert_eq!(budget.used(), per * 1000);
        // A third sorter filled while the second still holds everything spills, once it
        // holds its minimum share.
        let mut third = Sorter::new(dir.path(), &budget);
        for i in 0..1000u32 {
            third.push(item(i)).unwrap();
        }
        assert!(!third.runs.is_empty());
        let got: Vec<Item> = next.finish().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, (0..1000).map(item).collect::<Vec<_>>());
        drop(third);
        assert_eq!(
            budget.used(),
            0,
            "everything taken or dropped left the budget"
        );
    }

    /// Sorted on another thread, the items come out in order; one pushed after that sort
    /// is not left out of it.
    #[test]
    fn export_spill_sorted_on_a_thread_comes_out_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path(), &Budget::new(1 << 20));
        let mut want = Vec::new();
        for i in 0..1000u32 {
            let k = (i * 7919) % 1000;
            s.push(Item(k, format!("v{k}"))).unwrap();
            want.push(Item(k, format!("v{k}")));
        }
        std::thread::scope(|scope| s.sort_on(scope));
        s.push(Item(500, "late".into())).unwrap();
        want.push(Item(500, "late".into()));
        want.sort();
        let got: Vec<Item> = s.finish().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn export_spill_in_memory_when_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path(), &Budget::new(1 << 20));
        s.push(Item(2, "b".into())).unwrap();
        s.push(Item(1, "a".into())).unwrap();
        let got: Vec<Item> = s.finish().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![Item(1, "a".into()), Item(2, "b".into())]);
    }
}
