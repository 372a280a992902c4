//! Temporary files an interrupted export left behind, and how a later export tells them from
//! those of an export still running.
//!
//! An export writes each output file as `.export-XXXXXX.tmp` beside it and spills its sorts
//! under `<temp_dir>/export-spill-XXXXXX/`; both go when it ends, but a SIGKILL, a crash or a
//! power cut leaves them (half a training set, in the output directory a sync job may ship).
//! Every export [`sweep`]s the output directory and the temp directory first, removing those
//! leftovers that are both:
//!
//! * unlocked: an export holds a shared `flock` on each temporary file and spill directory it
//!   made ([`hold`]) for as long as it has it, and the kernel drops the lock when the process
//!   ends, however it ends; the sweep removes a leftover only while holding an exclusive lock
//!   on it, which it cannot get while the owner runs;
//! * older than [`STALE_AFTER`] (modification time): this covers the instant between making a
//!   file and locking it, and filesystems whose locks other hosts do not see (NFS mounted
//!   `nolock`), where an export writing to a shared directory from another host holds a lock
//!   this host cannot see. Temporary files are written to continuously, and are kept only for
//!   the moments before the rename.
//!
//! A leftover whose lock cannot be asked for (an unreadable file, a filesystem without locks)
//! is left alone. Only names of exactly these shapes are touched.
//!
//! An export that a signal interrupts (Ctrl-C, `systemctl stop` of a timer's job) leaves
//! nothing for that sweep: every temporary file and spill directory an export makes is
//! registered while it exists ([`Own`]), and the command's signal handler calls
//! [`remove_own`], which removes them all before the process ends. An interrupt while an
//! output set is being put in place ([`placing`], milliseconds of renames) waits for it, so
//! the set is the old one or the new one, whole.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

/// How output files' temporary names start and end (the middle is tempfile's random part).
pub(crate) const OUTPUT_TEMP_PREFIX: &str = ".export-";
pub(crate) const OUTPUT_TEMP_SUFFIX: &str = ".tmp";
/// How spill directories' names start.
pub(crate) const SPILL_DIR_PREFIX: &str = "export-spill-";
/// Characters in tempfile's random part of a name (its default).
const RANDOM_CHARS: usize = 6;

/// How old an unlocked leftover must be before it is removed.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Which leftovers a directory is swept of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `.export-XXXXXX.tmp` files (the output directory).
    OutputTemps,
    /// `export-spill-XXXXXX` directories (the temp directory).
    SpillDirs,
}

impl Kind {
    fn matches(self, name: &str, is_dir: bool) -> bool {
        let random =
            |s: &str| s.len() == RANDOM_CHARS && s.bytes().all(|b| b.is_ascii_alphanumeric());
        match self {
            Kind::OutputTemps => {
                !is_dir
                    && name
                        .strip_prefix(OUTPUT_TEMP_PREFIX)
                        .and_then(|s| s.strip_suffix(OUTPUT_TEMP_SUFFIX))
                        .is_some_and(random)
            }
            Kind::SpillDirs => is_dir && name.strip_prefix(SPILL_DIR_PREFIX).is_some_and(random),
        }
    }
}

/// Takes the shared lock that marks `f` (a temporary file or a spill directory, opened) as in
/// use for as long as it is open. Never waits; if the filesystem has no locks, the age alone
/// protects the file.
pub(crate) fn hold(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain system call on a descriptor `f` owns; no memory is passed.
    unsafe {
        libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB);
    }
}

/// Opens `dir` (a spill directory just made) and [`hold`]s it; keep the result for as long
/// as the directory is in use.
pub(crate) fn hold_dir(dir: &Path) -> Option<File> {
    let f = File::open(dir).ok()?;
    hold(&f);
    Some(f)
}

/// The temporary files and spill directories of the exports running in this process, by a
/// number of their own: what [`remove_own`] removes.
static OWN: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());
static NEXT_OWN: AtomicU64 = AtomicU64::new(0);
/// Held shared by each export putting its output set in place; [`remove_own`] takes it
/// exclusively, so it neither removes files in the middle of that nor lets one begin after.
static PLACING: RwLock<()> = RwLock::new(());

/// A temporary file or spill directory of this process, registered for [`remove_own`] for as
/// long as this lives. Drop it after what it names is gone or renamed (declare it after the
/// temporary in a struct: fields drop in order).
#[derive(Debug)]
pub(crate) struct Own(u64);

impl Own {
    /// Makes a temporary file or directory (`make`) and registers its path (`path_of`) under
    /// the registry's lock: a cleanup sees it, or has run before it and keeps the lock, and
    /// then `make` never runs (the process is ending). Made first and registered after, a file
    /// made just then was left behind.
    pub(crate) fn make<T>(
        make: impl FnOnce() -> std::io::Result<T>,
        path_of: impl FnOnce(&T) -> &Path,
    ) -> std::io::Result<(T, Own)> {
        let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
        let made = make()?;
        let n = NEXT_OWN.fetch_add(1, Ordering::Relaxed);
        own.push((n, path_of(&made).to_path_buf()));
        Ok((made, Own(n)))
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = own.iter().position(|(n, _)| *n == self.0) {
            own.swap_remove(i);
        }
    }
}

/// Set once [`remove_own`] has begun.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`remove_own`] has begun: an export failing now fails because its files were
/// removed, and the process is about to end by the signal; it must not report that failure
/// nor exit first with another status.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Held while an output set is being put in place (see [`PLACING`]).
pub(crate) fn placing() -> RwLockReadGuard<'static, ()> {
    PLACING.read().unwrap_or_else(|e| e.into_inner())
}

/// Removes the temporary files and spill directories of every export running in this
/// process, for a handler of SIGINT or SIGTERM to call just before the process ends: an
/// output set being put in place is finished first, and no export can make a new temporary
/// file, or start putting a set in place, after this returns (it keeps both locks: the
/// process is ending). Returns how many were removed.
pub fn remove_own() -> usize {
    INTERRUPTED.store(true, Ordering::SeqCst);
    std::mem::forget(PLACING.write().unwrap_or_else(|e| e.into_inner()));
    let own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut removed = 0;
    for (_, path) in own.iter() {
        let r = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        removed += usize::from(r.is_ok());
    }
    std::mem::forget(own);
    removed
}

/// A spill directory made under `temp_dir` for one export: held ([`hold_dir`]) against other
/// exports' sweeps and registered for [`remove_own`]; removed when dropped.
pub(crate) struct SpillDir {
    dir: tempfile::TempDir,
    _held: Option<File>,
    _own: Own,
}

impl SpillDir {
    pub(crate) fn new(temp_dir: &Path) -> std::io::Result<SpillDir> {
        let (dir, own) = Own::make(
            || {
                tempfile::Builder::new()
                    .prefix(SPILL_DIR_PREFIX)
                    .tempdir_in(temp_dir)
            },
            |d| d.path(),
        )?;
        Ok(SpillDir {
            _held: hold_dir(dir.path()),
            _own: own,
            dir,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the leftovers of `kind` in `dir` that no running export holds and that are older
/// than `stale_after`; returns how many. Best effort: what cannot be read or removed stays.
pub(crate) fn sweep(dir: &Path, kind: Kind, stale_after: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for ent in entries.flatten() {
        // Not followed: a symlink is never a leftover.
        let Ok(meta) = std::fs::symlink_metadata(ent.path()) else {
            continue;
        };
        let name = ent.file_name();
        let is_dir = meta.is_dir();
        if !(is_dir || meta.is_file()) || !kind.matches(&name.to_string_lossy(), is_dir) {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > stale_after);
        if !old {
            continue;
        }
        let path = ent.path();
        let Some(_lock) = exclusive_lock(&path) else {
            continue;
        };
        let r = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match r {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted export");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a temporary file left by an interrupted export");
            }
        }
    }
    removed
}

/// An exclusive lock on `path`, if no one holds a lock on it.
fn exclusive_lock(path: &Path) -> Option<File> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).ok()?;
    // SAFETY: plain system call on a descriptor `f` owns; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn backdate(path: &Path, by: Duration) {
        File::open(path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }

    /// Only unlocked leftovers of the exact shapes older than the limit go: not a fresh one
    /// (maybe not locked yet), not one a running export holds, not another program's file.
    #[test]
    fn export_sweep_removes_only_stale_unlocked_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        let old = Duration::from_secs(7200);
        for n in [
            ".export-AbC123.tmp",
            ".export-held01.tmp",
            ".export-fresh1.tmp",
            ".export-notes.tmp",
            "report.tmp",
        ] {
            std::fs::write(p(n), b"partial").unwrap();
            if n != ".export-fresh1.tmp" {
                backdate(&p(n), old);
            }
        }
        for n in [
            "export-spill-Zz9yX8",
            "export-spill-held02",
            "export-spill-x",
        ] {
            std::fs::create_dir(p(n)).unwrap();
            std::fs::write(p(n).join("run"), b"x").unwrap();
            backdate(&p(n), old);
        }
        // A running export's: held through another open file, as the owner holds it.
        let held_file = File::open(p(".export-held01.tmp")).unwrap();
        hold(&held_file);
        let held_dir = hold_dir(&p("export-spill-held02")).unwrap();

        assert_eq!(sweep(d.path(), Kind::OutputTemps, STALE_AFTER), 1);
        assert_eq!(sweep(d.path(), Kind::SpillDirs, STALE_AFTER), 1);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".export-fresh1.tmp",
                ".export-held01.tmp",
                ".export-notes.tmp",
                "export-spill-held02",
                "export-spill-x",
                "report.tmp",
            ]
        );
        // Once its owner is gone, the held one is a leftover too.
        drop((held_file, held_dir));
        assert_eq!(sweep(d.path(), Kind::OutputTemps, STALE_AFTER), 1);
        assert_eq!(sweep(d.path(), Kind::SpillDirs, STALE_AFTER), 1);
    }
}
