//! The files of one output, replaced as a set.
//!
//! An export to `<name>.jsonl` owns five paths beside it: the training set, its ids file
//! (`<name>.ids.txt`), the validation set (`<name>.val.jsonl`), its ids file
//! (`<name>.val.ids.txt`) and the manifest (`<name>.jsonl.manifest.json`). After an export
//! exactly the files it wrote are there: a validation or ids file of an earlier export with
//! other options is removed, or a job globbing the directory would train, or evaluate, on
//! stale data the manifest does not mention. Nothing but those paths is ever removed.
//!
//! [`replace`] gets every new file already written and fsynced under a temporary name, and
//! checks each path can be replaced before changing anything; a failure there leaves the old
//! set as it was (the temporary files go when dropped). Then the old manifest is removed, the
//! data files renamed into place, stale members removed, and the new manifest renamed in last,
//! so a manifest (which holds the sha256 of each file) only ever describes files in place.
//!
//! What remains: the renames are separate system calls. A crash, or an I/O error, between the
//! removal of the old manifest and the rename of the new one leaves some new and some old
//! files with no manifest at all; never a manifest that contradicts the files. POSIX has no
//! rename of several files at once, and a rollback would fail in the same ways.

use super::manifest::{self, Staged};
use super::{split, ExportError};
use std::path::{Path, PathBuf};

/// Every path the set of `output` may hold: data files first, the manifest last.
pub(crate) fn member_paths(output: &Path) -> [PathBuf; 5] {
    let val = split::validation_path(output);
    [
        output.to_path_buf(),
        split::ids_path(output),
        split::ids_path(&val),
        val,
        manifest::manifest_path(output),
    ]
}

/// Replaces the set of `output` by `files` (each a member of it, see [`member_paths`]) and
/// `manifest`; members not among them are removed. See the module documentation for what a
/// failure leaves.
pub(crate) fn replace(
    output: &Path,
    files: Vec<Staged>,
    manifest: Staged,
) -> Result<(), ExportError> {
    let members = member_paths(output);
    let err = |path: &Path, source| ExportError::Output {
        path: path.to_path_buf(),
        source,
    };
    if let Some(f) = files
        .iter()
        .chain([&manifest])
        .find(|f| !members.contains(&f.dest))
    {
        return Err(ExportError::Internal(format!(
            "{} is not a file of the output set of {}",
            f.dest.display(),
            output.display()
        )));
    }
    // Every member must be a path a file can be renamed over, or removed from: a directory
    // there (rename(2) fails with EISDIR) would otherwise stop the set half replaced.
    let mut stale = Vec::new();
    for path in &members {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(path, e)),
        };
        if meta.is_dir() {
            return Err(err(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "a directory is where an export file goes",
                ),
            ));
        }
        let written = files.iter().chain([&manifest]).any(|f| &f.dest == path);
        if !written {
            stale.push(path);
        }
    }
    // From here on, the old set is being replaced: an interrupt waits (see
    // `leftovers::remove_own`).
    let _placing = super::leftovers::placing();
    let manifest_dest = manifest.dest.clone();
    remove_if_present(&manifest_dest).map_err(|e| err(&manifest_dest, e))?;
    for f in files {
        f.put_in_place()?;
    }
    for path in stale.into_iter().filter(|p| **p != manifest_dest) {
        remove_if_present(path).map_err(|e| err(path, e))?;
    }
    // The data files' renames are made durable before the manifest that describes them.
    sync_dir(&manifest_dest);
    manifest.put_in_place()?;
    sync_dir(&manifest_dest);
    Ok(())
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Syncs the directory holding `file`, which makes renames and removals in it durable; a
/// failure only loses that durability, so it is not reported.
fn sync_dir(file: &Path) {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
