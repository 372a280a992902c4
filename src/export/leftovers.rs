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

use std::fs::File;
use std::path::Path;
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
