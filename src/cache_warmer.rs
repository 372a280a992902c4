//! Keeps export's prepared cache warm: a thread of the daemon that prepares each example
//! segment as it is sealed (and, at start, every sealed segment without an entry) with the
//! config's export options ([`crate::export::prepare_ahead`]), so that `export` without
//! flags, `ready` and `train-check` find that work done (`export.prepare_ahead`, on by
//! default).
//!
//! It must cost the service next door nothing: the thread runs at the lowest CPU priority
//! (nice 19; see [`lower_priority`] for why not `SCHED_IDLE`) and idle I/O priority
//! (`IOPRIO_CLASS_IDLE`), so it takes little beside the service and the collector's own
//! intake, and none at all while the intake catches up on a backlog (or its writes fail); it
//! prepares one segment at a time, on this one thread (memory: a 2 MiB chunk and the entry's
//! write buffer); and it sleeps on a channel, not a timer, when
//! there is nothing to prepare (no CPU while idle). The daemon tells it when a segment was
//! sealed and when the config was reloaded (new options make a new cache; an evaluation set
//! changed on disk is noticed before each round). Nothing here is needed for correctness: a
//! segment it did not get to is prepared by the next export, as without it.

use crate::config::Config;
use crate::datadir::{self, ExportRequest};
use crate::export::prepare_ahead::{AheadPreparer, Outcome};
use crate::metrics::Metrics;
use crate::segment::Stream;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The thread's name (what `top -H` and `/proc/<pid>/task/*/comm` show).
pub const THREAD_NAME: &str = "prepare-ahead";
/// How often a held-back preparation looks again whether the intake has caught up.
const CATCHING_UP_RECHECK: Duration = Duration::from_millis(100);
/// How long shutdown waits for the thread to notice it should stop. It checks between
/// chunks, but at the lowest priority on a busy machine it may get little CPU; the process exits
/// anyway, and a half-written entry is a temporary file an export removes later.
const STOP_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    /// A segment was sealed: look for segments without an entry.
    Sealed,
    /// The config was reloaded.
    Config(Box<Config>),
}

/// The handle the daemon keeps.
pub struct CacheWarmer {
    tx: Option<Sender<Msg>>,
    stop: Arc<AtomicBool>,
    catching_up: Arc<AtomicBool>,
    finished: Receiver<()>,
}

impl CacheWarmer {
    /// Starts the thread, which first looks for sealed segments without an entry. With
    /// `export.prepare_ahead` off it only waits for a reload that turns it on.
    pub fn start(cfg: &Config, metrics: Arc<Metrics>) -> std::io::Result<CacheWarmer> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, finished) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let catching_up = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            cfg: cfg.clone(),
            preparer: None,
            rebuild: true,
            done: HashSet::new(),
            stop: stop.clone(),
            catching_up: catching_up.clone(),
            metrics,
        };
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                lower_priority();
                worker.run(rx);
                let _ = done_tx.send(());
            })?;
        // The first round: segments sealed before this start.
        let _ = tx.send(Msg::Sealed);
        Ok(CacheWarmer {
            tx: Some(tx),
            stop,
            catching_up,
            finished,
        })
    }

    /// A segment of the examples stream was sealed.
    pub fn sealed(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Sealed);
        }
    }

    /// Whether the daemon's intake has a backlog to catch up on (or its writes are failing):
    /// meanwhile no chunk is prepared, so the two do not share the CPU and the disk. In a
    /// steady state, where each poll reads all there is, preparing goes on.
    pub fn set_intake_catching_up(&self, catching_up: bool) {
        self.catching_up.store(catching_up, Ordering::Relaxed);
    }

    /// The config was reloaded.
    pub fn reconfigure(&self, cfg: &Config) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Config(Box::new(cfg.clone())));
        }
    }

    /// Stops the thread: at once if it is waiting, after the chunk at hand if it is
    /// preparing; waits for it at most [`STOP_WAIT`]. False if it had not stopped by then.
    pub fn stop(&mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        if self.tx.take().is_none() {
            return true;
        }
        let stopped = self.finished.recv_timeout(STOP_WAIT).is_ok();
        if !stopped {
            tracing::debug!("the background export preparation did not stop in time; leaving it");
        }
        stopped
    }
}

impl Drop for CacheWarmer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The lowest CPU priority (nice 19) and idle I/O scheduling for the calling thread (Linux;
/// if refused, it runs at the daemon's priority). Not `SCHED_IDLE`: on a machine kept busy by
/// others a thread of that class gets a slice only now and then, and preempted while holding
/// a lock the whole process shares (the allocator's, the address space's while it maps
/// memory) it would hold up the daemon's loop until its next slice; at nice 19 it still
/// yields to everything else, but comes back far sooner.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread with valid arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: as above; PRIO_PROCESS with a thread id sets that thread's nice value on Linux.
    let cpu = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) };
    if cpu != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the CPU priority of the background export preparation");
    }
    // ioprio_set(IOPRIO_WHO_PROCESS, 0 = this thread, IOPRIO_CLASS_IDLE << 13).
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3 << 13;
    // SAFETY: as above.
    let io = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE,
        )
    };
    if io != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set idle I/O priority for the background export preparation");
    }
}

struct Worker {
    cfg: Config,
    preparer: Option<AheadPreparer>,
    /// The preparer must be made (again) from `cfg`.
    rebuild: bool,
    /// Sealed segments already prepared, or given up, with this preparer.
    done: HashSet<PathBuf>,
    stop: Arc<AtomicBool>,
    catching_up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        // Ends when the daemon drops its sender.
        while let Ok(first) = rx.recv() {
            // Whatever else is queued is folded into one round.
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                if let Msg::Config(cfg) = msg {
                    self.cfg = *cfg;
                    self.rebuild = true;
                }
            }
            if self.stop.load(Ordering::Relaxed) || !self.round() {
                return;
            }
        }
    }

    /// Prepares every sealed example segment not done yet; false when stopped.
    fn round(&mut self) -> bool {
        if !self.cfg.export.prepare_ahead {
            self.preparer = None;
            self.rebuild = true;
            return true;
        }
        if self.rebuild || self.preparer.as_ref().is_some_and(AheadPreparer::is_stale) {
            self.rebuild = false;
            self.done.clear();
            self.preparer = match datadir::export_options(&self.cfg, &ExportRequest::default())
                .map_err(|e| e.to_string())
                .and_then(|o| AheadPreparer::new(o).map_err(|e| e.to_string()))
            {
                Ok(p) => p,
                Err(e) => {
                    // Tried again at the next round (an evaluation set made later, say).
                    self.rebuild = true;
                    tracing::warn!(error = %e, "export.prepare_ahead: cannot prepare segments for export now; exports will");
                    None
                }
            };
        }
        let Some(preparer) = self.preparer.as_mut() else {
            return true;
        };
        let sealed = match crate::segment::list(&self.cfg.data_dir, Stream::Examples) {
            Ok(s) => crate::export::input::sealed_segments(&s),
            Err(e) => {
                tracing::warn!(error = %e, "export.prepare_ahead: cannot list the example segments");
                return true;
            }
        };
        // Segments deleted since (retention) are forgotten.
        let listed: HashSet<&PathBuf> = sealed.iter().collect();
        self.done.retain(|p| listed.contains(p));
        let (stop, catching_up) = (&self.stop, &self.catching_up);
        // Before each chunk: wait while the intake catches up; false once stopping.
        let go_on = &mut || loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            if !catching_up.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(CATCHING_UP_RECHECK);
        };
        for seg in &sealed {
            if self.done.contains(seg) {
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            match preparer.prepare(seg, go_on) {
                Ok(Outcome::Stopped) => return false,
                Ok(Outcome::Written) => {
                    Metrics::add(&self.metrics.segments_prepared_ahead, 1);
                    tracing::debug!(segment = %seg.display(), "prepared for export");
                }
                Ok(Outcome::AlreadyCached | Outcome::NotSealed) => {}
                Ok(Outcome::NotWritten) => {
                    Metrics::add(&self.metrics.segments_not_prepared_ahead, 1);
                }
                Err(e) => {
                    Metrics::add(&self.metrics.segments_not_prepared_ahead, 1);
                    tracing::warn!(segment = %seg.display(), error = %e, "export.prepare_ahead: cannot prepare a segment; exports will");
                }
            }
            self.done.insert(seg.clone());
        }
        preparer.prune(&sealed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(cfg: &Config) -> Vec<PathBuf> {
        let root = cfg
            .state_dir()
            .join(crate::export::prepared_cache::DIR_NAME);
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "prep"))
            .collect()
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                std::time::Instant::now() < until,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Options that cannot be prepared for now (an evaluation set not there yet) are tried
    /// again at the next round, so the cache fills once the set exists, without a reload.
    #[test]
    fn options_that_fail_are_tried_again_at_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let eval = dir.path().join("eval.jsonl");
        let mut cfg = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        cfg.export.decontaminate = vec![eval.clone()];
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let seg = cfg.data_dir.join("examples_20261129_0001.jsonl");
        std::fs::write(&seg, "{\"not\": \"an example\"}\n".repeat(10)).unwrap();
        let metrics = Arc::new(Metrics::default());
        let mut warmer = CacheWarmer::start(&cfg, metrics.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(entries(&cfg).is_empty(), "{:?}", entries(&cfg));
        std::fs::write(
            &eval,
            "{\"q\": \"What is the capital of France these days?\"}\n",
        )
        .unwrap();
        warmer.sealed();
        wait_for("the entry", || entries(&cfg).len() == 1);
        assert!(warmer.stop());
    }

    /// While the intake catches up nothing is prepared; once it has, the segment sealed
    /// meanwhile is; `stop` returns at once even while preparing is held back.
    #[test]
    fn holds_back_while_the_intake_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let metrics = Arc::new(Metrics::default());
        let mut warmer = CacheWarmer::start(&cfg, metrics.clone()).unwrap();
        warmer.set_intake_catching_up(true);
        let seg = cfg.data_dir.join("examples_20261129_0001.jsonl");
        std::fs::write(&seg, "{\"not\": \"an example\"}\n".repeat(100)).unwrap();
        warmer.sealed();
        std::thread::sleep(Duration::from_millis(400));
        assert!(entries(&cfg).is_empty(), "{:?}", entries(&cfg));
        warmer.set_intake_catching_up(false);
        wait_for("the entry", || entries(&cfg).len() == 1);
        assert_eq!(metrics.segments_prepared_ahead.load(Ordering::Relaxed), 1);

        // Held back again with another segment waiting: stopping does not wait for it.
        warmer.set_intake_catching_up(true);
        let next = cfg.data_dir.join("examples_20261129_0002.jsonl");
        std::fs::write(&next, "{\"not\": \"an example\"}\n".repeat(100)).unwrap();
        warmer.sealed();
        std::thread::sleep(Duration::from_millis(200));
        assert!(warmer.stop(), "the thread stopped, held back as it was");
        assert_eq!(entries(&cfg).len(), 1);
    }
}
