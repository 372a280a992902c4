//! The few filesystem operations whose exact semantics the segment contract depends on:
//! a rename that never replaces an existing file, and an fsync of the directory so that a
//! created or renamed name survives a power loss.

use super::name::{self, SegmentName, MAX_NUMBER};
use super::SegmentError;
use std::io;
use std::path::{Path, PathBuf};

/// Makes the directory entries of `dir` (new files, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    let d = std::fs::File::open(dir).map_err(|e| SegmentError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| SegmentError::io("fsync directory", dir, e))
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing `to`: sealed
/// files are never overwritten, even by a file we produced ourselves.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let f = CString::new(from.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let t = CString::new(to.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Filesystems without RENAME_NOREPLACE: fall through to check-then-rename, which
            // is safe here because only one writer per stream renames into data_dir.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {}
            _ => return Err(err),
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "target segment already exists",
        ));
    }
    std::fs::rename(from, to)
}

/// Seals the `.open` file at `path` (named `open_name`) by renaming it to its sealed name,
/// or, if that name is somehow taken, to the next free number of the same day. Returns the
/// sealed path. The caller fsyncs the directory: an error from the rename itself means the
/// file is still open, an error after it does not.
pub(crate) fn seal_file(
    dir: &Path,
    open_name: SegmentName,
    path: &Path,
) -> Result<PathBuf, SegmentError> {
    let mut target = open_name.sealed();
    loop {
        let to = dir.join(target.file_name());
        match rename_noreplace(path, &to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let found = name::scan(dir, open_name.stream)?;
                let next = name::highest_number(&found, open_name.day).max(target.number) + 1;
                if next > MAX_NUMBER {
                    return Err(SegmentError::NumbersExhausted {
                        stream: open_name.stream,
                        day: open_name.day,
                    });
                }
                tracing::warn!(
                    taken = %to.display(),
                    number = next,
                    "sealed segment name already exists; sealing under the next free number"
                );
                target = target.with_number(next);
            }
            Err(e) => return Err(SegmentError::io("rename to sealed name", path, e)),
        }
    }
}
