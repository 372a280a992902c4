//! File-system change notification (notify 8: inotify on Linux) that wakes the daemon so new
//! lines and new files are picked up promptly. It carries no data: any event, including an
//! error such as an inotify queue overflow, only calls `wake`; the tailer then re-scans and
//! re-reads. The daemon also polls on a timer, which is the safety net for lost events and
//! for file systems without notification (NFS).
//!
//! Writes to files nobody reads (other services' logs in a shared `/var/log`, say) must not
//! wake it: a busy neighbour would keep the daemon spinning. So data events (modify,
//! close-after-write) wake only when [`RelevantPath`] accepts one of their paths; creations,
//! removals, renames and errors always wake.
//!
//! A wake also says what happened, in a [`ChangeLog`]: which logs were written to, or that
//! something else happened. Only the latter needs the tailer's full poll (a re-scan of the
//! globs and a stat of every open file, milliseconds with thousands of files); appends to
//! open logs need only those files read on.
//!
//! An inotify watch belongs to a directory's inode, not its name: a log folder removed and
//! created again (a deploy) is a new inode nobody watches, and a reload can name folders the
//! watcher was never given. [`FsWatcher::rearm`], called before each full poll and after a
//! reload, compares what should be watched (and the inode under each name) with what is,
//! and watches again what differs; without it, appends there waited for the next
//! `rescan_interval`. A folder's removal cannot be told from its own watch (the kernel says
//! so only once the last file in it is closed, and the daemon holds a deleted log open to
//! read it to its end), so the folder above each watched one is watched too, as an *anchor*:
//! of its events only those naming a watched folder (created, removed, renamed) count.

use super::discovery::{Exclude, WatchSpec, OPTIONS};
use super::TailError;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// What file-system events said since the daemon last took them ([`ChangeLog::take`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Logs written to (data events on paths the input globs name).
    pub written: HashSet<PathBuf>,
    /// Anything else that may concern the logs: a creation, removal or rename, an event
    /// without a filter to judge it, an error (an inotify queue overflow loses events).
    pub other: bool,
}

/// Past this many written paths, the changes count as `other`: one full poll is then
/// cheaper than looking each path up.
const MAX_WRITTEN: usize = 1024;

/// The changes the watcher notes and the daemon takes, shared between them.
#[derive(Clone, Debug, Default)]
pub struct ChangeLog(Arc<Mutex<Changes>>);

impl ChangeLog {
    /// Notes a write to a log.
    pub fn written(&self, path: &Path) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.other {
            return;
        }
        if c.written.len() >= MAX_WRITTEN {
            c.written.clear();
            c.other = true;
        } else if !c.written.contains(path) {
            c.written.insert(path.to_path_buf());
        }
    }

    /// Notes an event that needs a full poll.
    pub fn other(&self) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.written.clear();
        c.other = true;
    }

    /// What was noted since the last call, leaving nothing behind.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a path is to the daemon ([`RelevantPath::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// Named by an input glob's last component and not excluded: possibly a log.
    Log,
    /// Directly inside one of the extra directories (the spool), and not a log.
    Extra,
    /// Neither.
    Other,
}

/// Which paths' data events are worth a wake: a file whose name matches the last component
/// of an input glob and that `input.exclude` does not leave out (logrotate compressing a
/// rotated log into `app.jsonl.1.gz` writes to it for a while), or anything directly inside
/// one of the extra directories (the spool). Shared, so a config reload can replace the globs
/// of a running watcher.
#[derive(Clone, Debug, Default)]
pub struct RelevantPath(Arc<RwLock<Relevance>>);

#[derive(Debug, Default)]
struct Relevance {
    /// The input globs whole, and their last components.
    patterns: Vec<glob::Pattern>,
    names: Vec<glob::Pattern>,
    exclude: Exclude,
    dirs: Vec<PathBuf>,
}

impl RelevantPath {
    pub fn new(patterns: &[String], exclude: &[String], dirs: &[PathBuf]) -> RelevantPath {
        let r = RelevantPath::default();
        r.set(patterns, exclude, dirs);
        r
    }

    /// Replaces the globs, exclusions and directories (an unparsable glob is left out: the
    /// config has already refused it).
    pub fn set(&self, patterns: &[String], exclude: &[String], dirs: &[PathBuf]) {
        let names = patterns
            .iter()
            .filter_map(|p| Path::new(p).file_name()?.to_str())
            .filter_map(|n| glob::Pattern::new(n).ok())
            .collect();
        let valid: Vec<String> = exclude
            .iter()
            .filter(|p| glob::Pattern::new(p).is_ok())
            .cloned()
            .collect();
        let exclude = Exclude::new(&valid).unwrap_or_default();
        let whole = patterns
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        if let Ok(mut r) = self.0.write() {
            *r = Relevance {
                patterns: whole,
                names,
                exclude,
                dirs: dirs.to_vec(),
            };
        }
    }

    /// Whether a data event on `path` may concern the daemon.
    pub fn accepts(&self, path: &Path) -> bool {
        self.kind(path) != PathKind::Other
    }

    /// What `path` is to the daemon. A file in an extra directory is a log only if an input
    /// glob matches its whole path: spool files are often named like logs (`*.jsonl`).
    pub fn kind(&self, path: &Path) -> PathKind {
        let Ok(r) = self.0.read() else {
            return PathKind::Log;
        };
        let in_extra = path
            .parent()
            .is_some_and(|parent| r.dirs.iter().any(|d| same_dir(d, parent)));
        if in_extra
            && !r
                .patterns
                .iter()
                .any(|p| p.matches_path_with(path, OPTIONS))
        {
            return PathKind::Extra;
        }
        let name = path.file_name().and_then(|n| n.to_str());
        if name.is_some_and(|n| r.names.iter().any(|p| p.matches(n))) && !r.exclude.matches(path) {
            PathKind::Log
        } else if in_extra {
            PathKind::Extra
        } else {
            PathKind::Other
        }
    }
}

/// Directory equality that ignores a leading `./` (notify joins names onto the path it was
/// given to watch).
fn same_dir(a: &Path, b: &Path) -> bool {
    let strip = |p: &Path| {
        p.strip_prefix(".")
            .map(Path::to_path_buf)
            .unwrap_or(p.to_path_buf())
    };
    a == b || strip(a) == strip(b)
}

/// Keeps the notify watcher alive; dropping it stops watching.
pub struct FsWatcher {
    watcher: RecommendedWatcher,
    watched: Vec<WatchSpec>,
    /// Device and inode of each of `watched`'s directories when its watch was added (`None`:
    /// it could not be added).
    inodes: Vec<Option<(u64, u64)>>,
    /// The anchors watched now, shared with the event handler.
    anchors: Arc<RwLock<Anchors>>,
}

/// The folders above the watched ones (see the module documentation), and the watched ones.
#[derive(Debug, Default)]
struct Anchors {
    anchors: Vec<PathBuf>,
    watched: Vec<PathBuf>,
}

impl Anchors {
    fn of(specs: &[WatchSpec]) -> Anchors {
        let watched: Vec<PathBuf> = specs.iter().map(|s| s.dir.clone()).collect();
        let mut anchors: Vec<PathBuf> = Vec::new();
        for s in specs {
            if let Some(parent) = s.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                let covered = specs
                    .iter()
                    .any(|o| o.dir == parent || (o.recursive && parent.starts_with(&o.dir)));
                if !covered && !anchors.iter().any(|a| a == parent) {
                    anchors.push(parent.to_path_buf());
                }
            }
        }
        Anchors { anchors, watched }
    }

    /// Whether the event is only an anchor's, about nothing watched: to be ignored.
    fn ignores(&self, ev: &notify::Event) -> bool {
        !self.anchors.is_empty()
            && !ev.paths.is_empty()
            && ev.paths.iter().all(|p| {
                p.parent()
                    .is_some_and(|d| self.anchors.iter().any(|a| same_dir(a, d)))
                    && !self.watched.iter().any(|w| same_dir(w, p))
            })
    }
}

/// Device and inode of a directory.
fn dir_inode(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir).ok()?;
    md.is_dir().then(|| (md.dev(), md.ino()))
}

fn mode(spec: &WatchSpec) -> RecursiveMode {
    if spec.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

impl std::fmt::Debug for FsWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsWatcher")
            .field("watched", &self.watched)
            .finish()
    }
}

impl FsWatcher {
    /// Watches every directory **recursively** (the safe choice when the caller does not say
    /// which globs have `**`; prefer [`FsWatcher::from_specs`] with
    /// [`super::Tailer::watch_specs`], which watches recursively only where a glob needs it).
    pub fn new(dirs: &[PathBuf], wake: impl Fn() + Send + 'static) -> Result<FsWatcher, TailError> {
        let specs: Vec<WatchSpec> = dirs
            .iter()
            .map(|d| WatchSpec {
                dir: d.clone(),
                recursive: true,
            })
            .collect();
        FsWatcher::from_specs(&specs, wake)
    }

    /// Watches each directory, recursively where the spec says so.
    pub fn from_specs(
        specs: &[WatchSpec],
        wake: impl Fn() + Send + 'static,
    ) -> Result<FsWatcher, TailError> {
        FsWatcher::filtered(specs, None, ChangeLog::default(), wake)
    }

    /// Like [`FsWatcher::from_specs`], with data events on paths `relevant` does not accept
    /// ignored.
    pub fn filtered(
        specs: &[WatchSpec],
        relevant: Option<RelevantPath>,
        changes: ChangeLog,
        wake: impl Fn() + Send + 'static,
    ) -> Result<FsWatcher, TailError> {
        let anchors = Arc::new(RwLock::new(Anchors::of(specs)));
        let anchors_seen = anchors.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = &res else {
                    changes.other();
                    wake();
                    return;
                };
                if anchors_seen.read().is_ok_and(|a| a.ignores(ev)) {
                    return;
                }
                // Opening or reading a file or directory changes nothing, and the daemon's
                // own scans (opendir of the spool and log dirs) cause exactly those events:
                // waking on them made an idle daemon spin.
                let data = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => return,
                    EventKind::Modify(ModifyKind::Name(_)) => false,
                    EventKind::Modify(_) => true,
                    _ => false,
                };
                match &relevant {
                    None => changes.other(),
                    Some(r) if data => {
                        let mut any = false;
                        for p in &ev.paths {
                            match r.kind(p) {
                                PathKind::Log => {
                                    changes.written(p);
                                    any = true;
                                }
                                PathKind::Extra => any = true,
                                PathKind::Other => {}
                            }
                        }
                        if !any {
                            return;
                        }
                    }
                    // Spool files come and go without concerning the logs (the spool is
                    // read on every wake).
                    Some(r) => {
                        if ev.paths.is_empty()
                            || ev.paths.iter().any(|p| r.kind(p) != PathKind::Extra)
                        {
                            changes.other();
                        }
                    }
                }
                wake();
            })?;
        let mut inodes = Vec::with_capacity(specs.len());
        for spec in specs {
            let inode = dir_inode(&spec.dir);
            watcher
                .watch(&spec.dir, mode(spec))
                .map_err(|source| TailError::Watch {
                    path: spec.dir.clone(),
                    source,
                })?;
            inodes.push(inode);
        }
        let mut w = FsWatcher {
            watcher,
            watched: specs.to_vec(),
            inodes,
            anchors,
        };
        let wanted = w
            .anchors
            .read()
            .map(|a| a.anchors.clone())
            .unwrap_or_default();
        w.watch_anchors(&[], &wanted);
        Ok(w)
    }

    /// Swaps the anchor watches `before` for `after` (an anchor that cannot be watched, at
    /// `/` say, only costs the prompt notice of its folder's removal).
    fn watch_anchors(&mut self, before: &[PathBuf], after: &[PathBuf]) {
        for a in before {
            if !after.contains(a) && !self.watched.iter().any(|w| &w.dir == a) {
                let _ = self.watcher.unwatch(a);
            }
        }
        for a in after {
            if !before.contains(a) {
                if let Err(e) = self.watcher.watch(a, RecursiveMode::NonRecursive) {
                    tracing::debug!(dir = %a.display(), error = %e, "cannot watch the folder above a log folder");
                }
            }
        }
    }

    /// Watches `specs` from now on: drops the watches no longer wanted, and adds those that
    /// are new or whose directory is another inode than the one watched (removed and created
    /// again). A few `stat`s when nothing changed. A watch that cannot be added is logged
    /// and tried again on the next call. Returns whether anything was watched anew.
    pub fn rearm(&mut self, specs: &[WatchSpec]) -> bool {
        let mut changed = false;
        for old in &self.watched {
            if !specs.iter().any(|s| s.dir == old.dir) {
                // Gone with its directory, perhaps: then there is nothing to remove.
                let _ = self.watcher.unwatch(&old.dir);
            }
        }
        let mut inodes = Vec::with_capacity(specs.len());
        for spec in specs {
            let now = dir_inode(&spec.dir);
            let was = self.watched.iter().position(|w| w == spec);
            let before = was.and_then(|i| self.inodes[i]);
            if now.is_some() && now == before {
                inodes.push(now);
                continue;
            }
            let _ = self.watcher.unwatch(&spec.dir);
            match self.watcher.watch(&spec.dir, mode(spec)) {
                Ok(()) => {
                    tracing::info!(dir = %spec.dir.display(), recursive = spec.recursive, "watching for file events");
                    changed = true;
                    inodes.push(now);
                }
                // Said once, not at every full poll while it lasts (the inotify watch limit).
                Err(e) if was.is_some() && before.is_none() => {
                    tracing::debug!(dir = %spec.dir.display(), error = %e, "still cannot watch for file events");
                    inodes.push(None);
                }
                Err(e) => {
                    tracing::warn!(dir = %spec.dir.display(), error = %e, "cannot watch for file events; relying on re-scans there");
                    inodes.push(None);
                }
            }
        }
        self.watched = specs.to_vec();
        self.inodes = inodes;
        let next = Anchors::of(specs);
        let before = self
            .anchors
            .read()
            .map(|a| a.anchors.clone())
            .unwrap_or_default();
        if changed || before != next.anchors {
            // Watched anew, an anchor's watch may have been dropped with it (the same folder
            // watched recursively before): add them all again.
            let after = next.anchors.clone();
            if let Ok(mut a) = self.anchors.write() {
                *a = next;
            }
            self.watch_anchors(&before, &[]);
            self.watch_anchors(&[], &after);
        }
        changed
    }

    /// What is being watched.
    pub fn watched(&self) -> &[WatchSpec] {
        &self.watched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn wakes_on_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::channel();
        let w = FsWatcher::new(&[dir.path().to_path_buf()], move || {
            let _ = tx.send(());
        })
        .expect("watcher");
        std::fs::write(dir.path().join("a.log"), b"x\n").expect("write");
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert_eq!(w.watched().len(), 1);
    }

    /// Of an anchor's events, only those about a watched folder count.
    #[test]
    fn anchor_events_count_only_for_watched_folders() {
        let specs = [
            WatchSpec {
                dir: PathBuf::from("/srv/app/logs"),
                recursive: false,
            },
            WatchSpec {
                dir: PathBuf::from("/srv/app/spool"),
                recursive: false,
            },
            WatchSpec {
                dir: PathBuf::from("/data"),
                recursive: true,
            },
            WatchSpec {
                dir: PathBuf::from("/data/x/y"),
                recursive: false,
            },
        ];
        let a = Anchors::of(&specs);
        // `/data/x` is inside a recursive watch already.
        assert_eq!(a.anchors, [PathBuf::from("/srv/app"), PathBuf::from("/")]);
        let ev = |p: &str| notify::Event::new(EventKind::Any).add_path(PathBuf::from(p));
        assert!(a.ignores(&ev("/srv/app/neighbour.log")));
        assert!(!a.ignores(&ev("/srv/app/logs")));
        assert!(!a.ignores(&ev("/srv/app/logs/app.log")));
        assert!(!a.ignores(&ev("/data")));
        assert!(!a.ignores(&ev("/srv/app/spool/fb.jsonl")));
    }

    /// A `logs/` folder holding `files` and an empty `spool/`, and specs watching both.
    fn logs_and_spool(files: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<WatchSpec>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let spool = dir.path().join("spool");
        for d in [&logs, &spool] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        for f in files {
            std::fs::write(logs.join(f), b"x\n").expect("write");
        }
        let specs = [&logs, &spool]
            .iter()
            .map(|d| WatchSpec {
                dir: d.to_path_buf(),
                recursive: false,
            })
            .collect();
        (dir, logs, spool, specs)
    }

    /// The change log names the logs written to; a new file is "something else"; the spool's
    /// comings and goings wake without either.
    #[test]
    fn the_change_log_names_written_logs_and_flags_everything_else() {
        let (_dir, logs, spool, specs) = logs_and_spool(&["app.jsonl", "other.jsonl", "syslog"]);
        let relevant = RelevantPath::new(
            &[logs.join("*.jsonl").display().to_string()],
            &[],
            std::slice::from_ref(&spool),
        );
        let changes = ChangeLog::default();
        let (tx, rx) = mpsc::channel();
        let _w = FsWatcher::filtered(&specs, Some(relevant), changes.clone(), move || {
            let _ = tx.send(());
        })
        .expect("watcher");
        let append = |p: &Path| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .expect("open");
            f.write_all(b"more\n").expect("append");
        };
        // Waits for the wake, lets the rest of the events arrive, and takes the changes.
        let changes_after = |what: &str| {
            assert!(
                rx.recv_timeout(Duration::from_secs(5)).is_ok(),
                "{what} must wake"
            );
            std::thread::sleep(Duration::from_millis(150));
            while rx.try_recv().is_ok() {}
            changes.take()
        };
        append(&logs.join("app.jsonl"));
        append(&logs.join("other.jsonl"));
        let c = changes_after("appends to logs");
        let want: HashSet<PathBuf> = [logs.join("app.jsonl"), logs.join("other.jsonl")].into();
        assert_eq!(c.written, want);
        assert!(!c.other);
        std::fs::write(spool.join("fb.jsonl"), b"{}\n").expect("spool file");
        std::fs::remove_file(spool.join("fb.jsonl")).expect("retire it");
        assert_eq!(changes_after("a spool file"), Changes::default());
        std::fs::write(logs.join("new.jsonl"), b"x\n").expect("create");
        let c = changes_after("a new log");
        assert!(c.other, "a creation needs a full poll");
        assert!(c.written.is_empty(), "{c:?}");
        append(&logs.join("syslog"));
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        assert_eq!(changes.take(), Changes::default());
    }

    /// Appends to a neighbour's log do not wake; appends to a watched log, files in the
    /// spool, and new files of any name do.
    #[test]
    fn data_events_wake_only_for_relevant_paths() {
        let (_dir, logs, spool, specs) = logs_and_spool(&["app.jsonl", "syslog", "old.jsonl.gz"]);
        std::fs::write(spool.join("fb.jsonl"), b"x\n").expect("write");
        let relevant = RelevantPath::new(
            &[logs.join("*.jsonl*").display().to_string()],
            &["*.gz".to_string()],
            std::slice::from_ref(&spool),
        );
        let (tx, rx) = mpsc::channel();
        let _w = FsWatcher::filtered(
            &specs,
            Some(relevant.clone()),
            ChangeLog::default(),
            move || {
                let _ = tx.send(());
            },
        )
        .expect("watcher");
        let append = |p: &Path| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .expect("open");
            f.write_all(b"more\n").expect("append");
        };
        let settle = |rx: &mpsc::Receiver<()>| {
            std::thread::sleep(Duration::from_millis(100));
            while rx.try_recv().is_ok() {}
        };
        for _ in 0..20 {
            append(&logs.join("syslog"));
            append(&logs.join("old.jsonl.gz"));
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a neighbour's or an excluded file's appends woke the daemon"
        );
        append(&logs.join("app.jsonl"));
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        settle(&rx);
        append(&spool.join("fb.jsonl"));
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        settle(&rx);
        std::fs::write(logs.join("other.txt"), b"x\n").expect("create");
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "a creation must wake"
        );
        settle(&rx);
        // After a reload that reads syslog too, its appends wake.
        relevant.set(&[logs.join("sys*").display().to_string()], &[], &[]);
        append(&logs.join("syslog"));
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
