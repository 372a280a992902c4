//! File-system change notification (notify 8: inotify on Linux) that wakes the daemon so new
//! lines and new files are picked up promptly. It carries no data: any event, including an
//! error such as an inotify queue overflow, only calls `wake`; the tailer then re-scans and
//! re-reads. The daemon also polls on a timer, which is the safety net for lost events and
//! for file systems without notification (NFS).

use super::discovery::WatchSpec;
use super::TailError;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::PathBuf;

/// Keeps the notify watcher alive; dropping it stops watching.
pub struct FsWatcher {
    _watcher: RecommendedWatcher,
    watched: Vec<WatchSpec>,
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
        let mut watcher = notify::recommended_watcher(
            move |res: notify::Result<notify::Event>| {
                // Opening or reading a file or directory changes nothing, and the daemon's
                // own scans (opendir of the spool and log dirs) cause exactly those events:
                // waking on them made an idle daemon spin. Errors still wake.
                if let Ok(ev) = &res {
                    if matches!(ev.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
                    {
                        return;
                    }
                }
                wake();
            },
        )?;
        for spec in specs {
            let mode = if spec.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher
                .watch(&spec.dir, mode)
                .map_err(|source| TailError::Watch {
                    path: spec.dir.clone(),
                    source,
                })?;
        }
        Ok(FsWatcher {
            _watcher: watcher,
            watched: specs.to_vec(),
        })
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
}
