//! Preparing tailed lines: the per-line work of ingest (parse, map, enrich, id hash,
//! serialize) that needs only the mapper and the enricher, done on a pool of worker threads
//! while the daemon's thread reads, applies results in order, writes and fsyncs.
//!
//! The pool is a pipeline: each poll's items become one [`Batch`], split into jobs that any
//! worker takes; finished batches come back strictly in the order they were submitted, each
//! with the tailer's checkpoint snapshot taken right after its poll. The daemon checkpoints
//! only the snapshot of the last batch it has applied, so a checkpoint never covers a line
//! still in flight, while the workers keep preparing the next batches through the daemon's
//! writes and fsyncs (which used to leave the second core idle).

use crate::capture::{self, Identity};
use crate::enrich::Enricher;
use crate::mapping::{LineEvent, Mapper};
use crate::record::RejectedRecord;
#[cfg(test)]
use crate::record::TrainingExample;
use crate::tail::{self, CheckpointSnapshot, TailItem};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A tailed item, owned, so it can be prepared on a worker thread.
pub(crate) struct OwnedItem {
    /// The file's fingerprint and path as text (what ids and records carry), shared by all
    /// items of one file in a poll.
    pub(crate) file: FileText,
    pub(crate) offset: u64,
    pub(crate) kind: ItemKind,
}

/// A file's fingerprint (hex) and path, rendered once per run of items from that file.
#[derive(Clone)]
pub(crate) struct FileText {
    pub(crate) fingerprint: Arc<str>,
    pub(crate) path: Arc<str>,
}

pub(crate) enum ItemKind {
    Line(Vec<u8>),
    Rejected {
        reason: String,
        raw: Vec<u8>,
        len: usize,
    },
}

/// Owns tail items, rendering a file's fingerprint and path only when the file changes
/// (lines arrive in runs per file), not once per line.
#[derive(Default)]
pub(crate) struct ItemCollector {
    pub(crate) items: Vec<OwnedItem>,
    last: Option<(tail::FileId, PathBuf, FileText)>,
}

impl ItemCollector {
    fn file_text(&mut self, file: &tail::FileId, path: &Path) -> FileText {
        if let Some((f, p, text)) = &self.last {
            if f == file && p == path {
                return text.clone();
            }
        }
        let text = FileText {
            fingerprint: file.fingerprint_hex().into(),
            path: path.display().to_string().into(),
        };
        self.last = Some((file.clone(), path.to_path_buf(), text.clone()));
        text
    }

    pub(crate) fn push(&mut self, item: TailItem<'_>) {
        let owned = match item {
            TailItem::Line {
                file,
                path,
                offset,
                bytes,
            } => OwnedItem {
                file: self.file_text(file, path),
                offset,
                kind: ItemKind::Line(bytes.to_vec()),
            },
            TailItem::Rejected {
                file,
                path,
                offset,
                reason,
                raw,
                len,
            } => OwnedItem {
                file: self.file_text(file, path),
                offset,
                kind: ItemKind::Rejected {
                    reason,
                    raw: raw.to_vec(),
                    len,
                },
            },
        };
        self.items.push(owned);
    }
}

impl OwnedItem {
    /// The identity of a feedback or correction event logged on this line.
    pub(crate) fn identity(&self) -> String {
        format!("{}:{}", self.file.fingerprint, self.offset)
    }

    /// Raw bytes held (what the pipeline's memory bound counts).
    fn len(&self) -> usize {
        match &self.kind {
            ItemKind::Line(bytes) => bytes.len(),
            ItemKind::Rejected { raw, .. } => raw.len(),
        }
    }
}

/// An example as its segment line, with the two keys the daemon's buffer is indexed by. The
/// daemon turns the line back into a record only when feedback or a correction changes the
/// example while it is buffered; otherwise the record's twenty-odd allocations are freed
/// on the worker that made them instead of crossing to the daemon's thread.
pub(crate) struct RenderedExample {
    pub(crate) id: String,
    pub(crate) request_id: Option<String>,
    pub(crate) line: Vec<u8>,
}

/// What a tail item becomes before it touches the daemon's state: the parsing, mapping,
/// enrichment and id hashing, which need only the mapper and the enricher.
pub(crate) enum Prepared {
    /// An example, rendered (the record itself is dropped on the worker that made it).
    Example(RenderedExample),
    /// Skip, feedback or correction (applied in order against the buffer).
    Event(LineEvent),
    Rejected(RejectedRecord),
}

/// Prepares `items`, in order. Lines are mapped first; the interactions among them then get
/// their ids together (their MD5s run side by side) and are enriched and serialized.
pub(crate) fn prepare(mapper: &Mapper, enricher: &Enricher, items: &[OwnedItem]) -> Vec<Prepared> {
    let mut out: Vec<Option<Prepared>> = Vec::with_capacity(items.len());
    let mut waiting: Vec<(usize, Identity, Box<capture::Interaction>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match map_item(mapper, item) {
            Mapped::Done(p) => out.push(Some(p)),
            Mapped::Interaction(id, it) => {
                out.push(None);
                waiting.push((i, id, it));
            }
        }
    }
    let pairs: Vec<(&Identity, &capture::Interaction)> =
        waiting.iter().map(|(_, id, it)| (id, &**it)).collect();
    let ids = capture::example_ids(&pairs);
    for ((i, _, it), id) in waiting.into_iter().zip(ids) {
        let ex = capture::capture_with_id(enricher, id, *it);
        // Sized once: the texts plus room for the metadata (growing from empty was eight
        // reallocations and copies of a 2 KB line).
        let mut line = Vec::with_capacity(ex.prompt.len() + ex.response.len() + 1024);
        ex.write_json(&mut line);
        let request_id = ex.metadata.request_id().map(str::to_string);
        out[i] = Some(Prepared::Example(RenderedExample {
            id: ex.id,
            request_id,
            line,
        }));
    }
    out.into_iter()
        .map(|p| p.expect("every item is prepared above"))
        .collect()
}

/// An item mapped: prepared already, or an interaction waiting for its id.
enum Mapped {
    Done(Prepared),
    Interaction(Identity, Box<capture::Interaction>),
}

fn map_item(mapper: &Mapper, item: &OwnedItem) -> Mapped {
    match &item.kind {
        ItemKind::Line(bytes) => match mapper.map(bytes) {
            Ok(LineEvent::Interaction(mut it)) => {
                let id = match &it.request_id {
                    Some(r) => Identity::RequestId(r.clone()),
                    None => Identity::Position {
                        fingerprint: item.file.fingerprint.to_string(),
                        offset: item.offset,
                    },
                };
                it.extra.insert(
                    "origin_file".into(),
                    Value::String(item.file.path.to_string()),
                );
                it.extra
                    .insert("origin_offset".into(), Value::from(item.offset));
                Mapped::Interaction(id, it)
            }
            Ok(event) => Mapped::Done(Prepared::Event(event)),
            Err(rej) => Mapped::Done(Prepared::Rejected(RejectedRecord::new(
                &item.file.path,
                item.offset,
                rej.0,
                bytes,
            ))),
        },
        ItemKind::Rejected { reason, raw, len } => {
            let mut rec = RejectedRecord::new(&item.file.path, item.offset, reason.clone(), raw);
            rec.raw_len = *len;
            Mapped::Done(Prepared::Rejected(rec))
        }
    }
}

/// Items per job: small enough that both workers share even one poll's batch, large enough
/// that the hand-off costs nothing next to the work (6-10 µs a line). A job is also the
/// batch whose ids are hashed side by side: 64 lines fill the widest MD5 lanes (16) four
/// times over (groups of 16 were measured and were not faster).
const JOB_ITEMS: usize = 64;
/// Raw bytes in flight at most: bounds the memory of the pipeline (about 2.5x this, with the
/// prepared examples), and is deep enough to keep the workers busy through a segment fsync
/// (4 MiB was not: 100k ingest 1.4-2.0 s, against 1.1-1.35 s with 16 MiB, +15 MiB peak RSS).
const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;
/// Workers at most, whatever the machine: a sidecar should not take every core of a big host.
const MAX_WORKERS: usize = 4;

/// The mapper and enricher a batch is prepared with (a reload swaps them for later batches).
#[derive(Clone)]
pub(crate) struct Recipe {
    pub(crate) mapper: Arc<Mapper>,
    pub(crate) enricher: Arc<Enricher>,
}

struct Job {
    seq: u64,
    items: Arc<[OwnedItem]>,
    range: std::ops::Range<usize>,
    recipe: Recipe,
}

type JobResult = std::thread::Result<Vec<Prepared>>;

/// One poll's items, in flight.
struct Batch {
    items: Arc<[OwnedItem]>,
    /// Jobs `first_job..first_job + jobs`.
    first_job: u64,
    jobs: u64,
    bytes: usize,
    snapshot: CheckpointSnapshot,
}

/// A batch whose items are all prepared, in submission order.
pub(crate) struct Finished {
    pub(crate) items: Arc<[OwnedItem]>,
    pub(crate) prepared: Vec<Prepared>,
    /// The tailer's positions right after the poll that read these items.
    pub(crate) snapshot: CheckpointSnapshot,
}

/// The worker pool and the batches in flight.
pub(crate) struct PreparePool {
    jobs: Option<Sender<Job>>,
    results: Receiver<(u64, JobResult)>,
    workers: Vec<JoinHandle<()>>,
    next_job: u64,
    done: BTreeMap<u64, Vec<Prepared>>,
    in_flight: VecDeque<Batch>,
    in_flight_bytes: usize,
}

impl PreparePool {
    /// Starts the workers (one per core, 2 to [`MAX_WORKERS`]); `wake` is called after each
    /// finished job so the daemon's loop, which may be waiting, comes to collect it.
    pub(crate) fn start(wake: impl Fn() + Send + Clone + 'static) -> std::io::Result<PreparePool> {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, MAX_WORKERS);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (res_tx, results) = mpsc::channel();
        let workers = (0..n)
            .map(|i| {
                let job_rx = job_rx.clone();
                let res_tx = res_tx.clone();
                let wake = wake.clone();
                std::thread::Builder::new()
                    .name(format!("prepare-{i}"))
                    .spawn(move || worker(&job_rx, &res_tx, &wake))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(PreparePool {
            jobs: Some(job_tx),
            results,
            workers,
            next_job: 0,
            done: BTreeMap::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        })
    }

    /// Whether another batch may be submitted now.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Queues one poll's items (possibly none: the snapshot still has to come back in order).
    pub(crate) fn submit(
        &mut self,
        items: Vec<OwnedItem>,
        snapshot: CheckpointSnapshot,
        recipe: &Recipe,
    ) {
        let bytes = items.iter().map(OwnedItem::len).sum::<usize>();
        let items: Arc<[OwnedItem]> = items.into();
        let first_job = self.next_job;
        let sender = self.jobs.as_ref().expect("pool is running");
        for start in (0..items.len()).step_by(JOB_ITEMS) {
            let job = Job {
                seq: self.next_job,
                items: items.clone(),
                range: start..(start + JOB_ITEMS).min(items.len()),
                recipe: recipe.clone(),
            };
            self.next_job += 1;
            if let Err(mpsc::SendError(job)) = sender.send(job) {
                // Every worker is gone (they only stop when the pool is dropped): prepare
                // here rather than lose the items.
                let out = prepare(
                    &job.recipe.mapper,
                    &job.recipe.enricher,
                    &job.items[job.range],
                );
                self.done.insert(job.seq, out);
            }
        }
        self.in_flight_bytes += bytes;
        self.in_flight.push_back(Batch {
            items,
            first_job,
            jobs: self.next_job - first_job,
            bytes,
            snapshot,
        });
    }

    /// The oldest batch if all of it is prepared; with `block`, waits for it.
    pub(crate) fn next_finished(&mut self, block: bool) -> Option<Finished> {
        let front = self.in_flight.front()?;
        let (first, jobs) = (front.first_job, front.jobs);
        loop {
            while let Ok((seq, result)) = self.results.try_recv() {
                self.collect(seq, result);
            }
            if (first..first + jobs).all(|j| self.done.contains_key(&j)) {
                break;
            }
            if !block {
                return None;
            }
            match self.results.recv() {
                Ok((seq, result)) => self.collect(seq, result),
                Err(_) => unreachable!("the pool holds workers while batches are in flight"),
            }
        }
        let batch = self.in_flight.pop_front()?;
        self.in_flight_bytes -= batch.bytes;
        let mut prepared = Vec::with_capacity(batch.items.len());
        for j in first..first + jobs {
            prepared.extend(self.done.remove(&j).unwrap_or_default());
        }
        Some(Finished {
            items: batch.items,
            prepared,
            snapshot: batch.snapshot,
        })
    }

    fn collect(&mut self, seq: u64, result: JobResult) {
        match result {
            Ok(out) => {
                self.done.insert(seq, out);
            }
            // A bug in the per-line code: fail the way it would have on this thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for PreparePool {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, results: &Sender<(u64, JobResult)>, wake: &dyn Fn()) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prepare(
                &job.recipe.mapper,
                &job.recipe.enricher,
                &job.items[job.range.clone()],
            )
        }));
        if results.send((job.seq, out)).is_err() {
            return;
        }
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn recipe() -> Recipe {
        let cfg = Config::default();
        Recipe {
            mapper: Arc::new(Mapper::new(&cfg.input)),
            enricher: Arc::new(Enricher::new(&cfg.domain)),
        }
    }

    fn item(n: usize) -> OwnedItem {
        let line = serde_json::json!({
            "event": "interaction",
            "request_id": format!("r{n}"),
            "query": "What is the TPO seam overlap?",
            "response": "2.5 inches per Carlisle, welded.",
        });
        OwnedItem {
            file: FileText {
                fingerprint: "00".into(),
                path: "a.log".into(),
            },
            offset: n as u64,
            kind: if n % 7 == 3 {
                ItemKind::Line(b"not json".to_vec())
            } else {
                ItemKind::Line(line.to_string().into_bytes())
            },
        }
    }

    /// Batches of every size (empty, below and above a job, several jobs) come back whole,
    /// in submission order, each item with its own result, whatever order the workers
    /// finish in.
    #[test]
    fn batches_come_back_in_order_with_their_own_results() {
        let mut pool = PreparePool::start(|| {}).expect("threads");
        let recipe = recipe();
        let sizes = [0, 1, 63, 64, 65, 300, 0, 5, 129, 1000];
        let mut next = 0;
        let mut submitted = Vec::new();
        for &size in &sizes {
            let items: Vec<OwnedItem> = (next..next + size).map(item).collect();
            submitted.push((next, size));
            next += size;
            pool.submit(items, CheckpointSnapshot::default(), &recipe);
        }
        let mut finished = Vec::new();
        while let Some(f) = pool.next_finished(true) {
            finished.push(f);
        }
        assert!(pool.is_empty());
        assert_eq!(finished.len(), sizes.len());
        for (f, &(first, size)) in finished.iter().zip(&submitted) {
            assert_eq!(f.items.len(), size);
            assert_eq!(f.prepared.len(), size);
            for (k, (it, p)) in f.items.iter().zip(&f.prepared).enumerate() {
                let n = first + k;
                assert_eq!(it.offset, n as u64);
                match p {
                    Prepared::Example(ex) => {
                        assert_eq!(ex.request_id.as_deref(), Some(format!("r{n}").as_str()));
                        let record: TrainingExample = serde_json::from_slice(&ex.line).unwrap();
                        assert_eq!(record.id, ex.id);
                    }
                    Prepared::Rejected(r) => assert_eq!(n % 7, 3, "{}", r.reason),
                    Prepared::Event(_) => panic!("item {n} is an interaction"),
                }
            }
        }
    }

    /// The in-flight bound: a pool full of unprepared bytes refuses more until a batch is
    /// taken out.
    #[test]
    fn has_room_until_the_in_flight_bound() {
        let mut pool = PreparePool::start(|| {}).expect("threads");
        let big = OwnedItem {
            kind: ItemKind::Line(vec![b' '; MAX_IN_FLIGHT_BYTES]),
            ..item(0)
        };
        assert!(pool.has_room());
        pool.submit(vec![big], CheckpointSnapshot::default(), &recipe());
        assert!(!pool.has_room());
        assert!(pool.next_finished(true).is_some());
        assert!(pool.has_room() && pool.is_empty());
    }
}
