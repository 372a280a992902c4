//! Finding a file again after it was rotated out of the globs while the tailer was not
//! holding it open: the daemon was stopped, the file had been closed for the open-file
//! budget, or copytruncate copied it to a name the globs do not match. Its lines after the
//! saved position would otherwise be lost, since a scan of the globs cannot see it.
//!
//! logrotate leaves rotated files next to the original, or in its `olddir` (given here as
//! `input.rotated_dirs`), so those directories are searched, once per saved position, for:
//! 1. the same file (device + inode) under another name, with the saved first line and the
//!    bytes before the saved offset unchanged (`create` rotation, `app.jsonl` ->
//!    `app.jsonl.1`);
//! 2. a copy: another file whose name starts like the original's, with the same first line
//!    and the same bytes before the saved offset (copytruncate's copy);
//! 3. a compressed file (gzip, zstd, xz or bzip2) whose name starts like the original's and
//!    whose decompressed first line is the saved one (`compress` without `delaycompress`):
//!    read by [`super::compressed`], which checks the bytes before the saved offset.
//!
//! A position saved before its file had a complete first line (an empty file, as logrotate's
//! `create` leaves it) has no first line to compare: it is found by its inode alone, in the
//! same directories, uncompressed ([`find_same_inode`]), and everything in it is new.
//!
//! Files the globs match, and files already open, are left to the tailer's scan.

use super::checkpoint::Entry;
use super::compressed::{self, Codec};
use super::identity::{self, Fingerprint};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// At most this many compressed files (the newest first) are looked into per search, so a
/// directory of old archives costs little.
const COMPRESSED_CANDIDATES: usize = 16;

/// Where the content of a saved position was found.
pub(super) enum Found {
    /// An uncompressed file holding it: to be read from the saved offset.
    Plain {
        file: File,
        md: Box<Metadata>,
        path: PathBuf,
        fp: Fingerprint,
    },
    /// A compressed file whose decompressed content starts with the saved first line.
    Compressed {
        file: File,
        path: PathBuf,
        codec: Codec,
    },
}

/// The part of a file name a rotated name starts with: up to the first `.` (`app.jsonl` ->
/// `app`, so `app.jsonl.1`, `app.jsonl-20261128.gz` and, with logrotate's `extension`,
/// `app-20261128.jsonl.gz` all count).
fn stem(name: &str) -> &str {
    match name.find('.') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

/// One regular file of a listed directory.
struct Listed {
    path: PathBuf,
    dev: u64,
    inode: u64,
    modified: Option<SystemTime>,
}

/// Directory listings taken once per round of searches: after a restart, many saved
/// positions may point into one directory of many files.
#[derive(Default)]
pub(super) struct Listings(HashMap<PathBuf, Vec<Listed>>);

impl Listings {
    fn of(&mut self, dir: &Path) -> &[Listed] {
        self.0.entry(dir.to_path_buf()).or_insert_with(|| {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return Vec::new();
            };
            rd.flatten()
                .filter_map(|entry| {
                    let path = entry.path();
                    let md = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                    Some(Listed {
                        dev: md.dev(),
                        inode: md.ino(),
                        modified: md.modified().ok(),
                        path,
                    })
                })
                .collect()
        })
    }
}

/// Where an `input.rotated_dirs` entry points for logs in `log_dir`: relative entries are
/// read against it, as logrotate reads `olddir` (`join` keeps an absolute one as it is).
/// `.` and `./old` name the directories they name (`components` drops an inner `.`).
pub(crate) fn rotated_dir(log_dir: &Path, entry: &Path) -> PathBuf {
    log_dir.join(entry).components().collect()
}

/// The log's directory, then each of `rotated_dirs`, each once.
fn search_dirs(log_dir: &Path, rotated_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(rotated_dirs.len() + 1);
    let candidates = std::iter::once(log_dir.components().collect())
        .chain(rotated_dirs.iter().map(|d| rotated_dir(log_dir, d)));
    for dir in candidates {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Searches the directory of `e.path`, then each of `rotated_dirs` (relative ones against
/// that directory), for its content (see the module documentation). `skip(dev, inode)` says
/// which files the tailer already has or will find by its globs.
pub(super) fn find(
    e: &Entry,
    rotated_dirs: &[PathBuf],
    skip: &dyn Fn(u64, u64) -> bool,
    listings: &mut Listings,
) -> Option<Found> {
    let saved = Path::new(&e.path);
    let dir = saved.parent()?;
    let stem = stem(saved.file_name()?.to_str()?);
    let fp = e.fingerprint_bytes()?;
    let mut named_alike = Vec::new();
    for dir in &search_dirs(dir, rotated_dirs) {
        for f in listings.of(dir) {
            if skip(f.dev, f.inode) {
                continue;
            }
            // (Another file may have the inode number by now: a gzip file made of it, say.)
            if (f.dev, f.inode) == (e.dev, e.inode) {
                if let Some(found) = plain(e, fp, f.path.clone(), true) {
                    return Some(found);
                }
            }
            let alike = f
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(stem));
            if alike {
                named_alike.push((f.modified, f.path.clone()));
            }
        }
    }
    // The newest first: the latest rotation is the likeliest.
    named_alike.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    // Uncompressed copies before compressed files: while the compressor is still writing
    // its file, the file it compresses is whole.
    let mut packed = Vec::new();
    for (_, path) in named_alike {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if let Some(codec) = Codec::of(&file) {
            packed.push((file, path, codec));
        } else if e.marker_len > 0 || e.offset == 0 {
            if let Some(found) = plain(e, fp, path, false) {
                return Some(found);
            }
        }
    }
    // The marker is checked by the reader, once it has decompressed that far.
    let (file, path, codec) = packed
        .into_iter()
        .take(COMPRESSED_CANDIDATES)
        .find(|(file, _, codec)| compressed::first_line_fingerprint(file, *codec) == Some(fp))?;
    // Its trailer says it ends at the saved offset: read to its end before it was
    // compressed (the usual case for a rotated file closed after rotate_wait), nothing to
    // decompress.
    if compressed::recorded_size(&file, codec) == Some(e.offset as u32) {
        tracing::debug!(path = %path.display(), "compressed rotation already read to its end");
        return None;
    }
    Some(Found::Compressed { file, path, codec })
}

/// Searches where [`find`] searches for the file of a position saved before the file had a
/// complete first line (`e.awaiting_first_line`): it can be known by its inode only. A
/// compressed file that got the inode number since is not it.
pub(super) fn find_same_inode(
    e: &Entry,
    rotated_dirs: &[PathBuf],
    skip: &dyn Fn(u64, u64) -> bool,
    listings: &mut Listings,
) -> Option<(File, Metadata, PathBuf)> {
    let dir = Path::new(&e.path).parent()?;
    for dir in &search_dirs(dir, rotated_dirs) {
        for f in listings.of(dir) {
            if (f.dev, f.inode) != (e.dev, e.inode) || skip(f.dev, f.inode) {
                continue;
            }
            let Ok(file) = File::open(&f.path) else {
                continue;
            };
            let Ok(md) = file.metadata() else { continue };
            if (md.dev(), md.ino()) == (e.dev, e.inode) && Codec::of(&file).is_none() {
                return Some((file, md, f.path.clone()));
            }
        }
    }
    None
}

/// `path` as an uncompressed file holding `e`'s content up to its offset.
fn plain(e: &Entry, fp: [u8; 16], path: PathBuf, same_inode: bool) -> Option<Found> {
    let file = File::open(&path).ok()?;
    let md = file.metadata().ok()?;
    if same_inode && (md.dev(), md.ino()) != (e.dev, e.inode) {
        return None;
    }
    if md.len() < e.offset {
        return None;
    }
    let f = identity::compute(&file, md.len()).ok()??;
    if f.hash != fp || !super::marker_ok(&file, e).unwrap_or(false) {
        return None;
    }
    Some(Found::Plain {
        file,
        md: Box::new(md),
        path,
        fp: f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_file_gzip_is_still_compressing_is_preferred_to_its_gzip_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain_copy = dir.path().join("app.log.1");
        std::fs::write(&plain_copy, b"first\nsecond\nthird\n").expect("write");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"first\nsecond\nthird\n").expect("write");
        let gz = enc.finish().expect("finish");
        // Written after the copy (newer), and not finished.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("app.log.1.gz"), &gz[..gz.len() - 8]).expect("write");
        let file = File::open(&plain_copy).expect("open");
        let mut e = saved_at(dir.path(), (0, 0), 6);
        let (len, hash) = identity::marker(&file, 6).expect("io").expect("marker");
        e.set_marker(len, &hash);
        assert_eq!(found_path(&e), (plain_copy, false));
    }

    /// A saved position 6 bytes into `app.log` in `dir`, whose first line is "first".
    fn saved_at(dir: &Path, (dev, inode): (u64, u64), offset: u64) -> Entry {
        let fp = identity::StreamFingerprint::default()
            .feed(b"first\n")
            .expect("fingerprint");
        Entry {
            dev,
            inode,
            fingerprint: identity::hex(&fp.hash),
            path: dir.join("app.log").to_string_lossy().into_owned(),
            offset,
            updated: 0,
            marker: String::new(),
            marker_len: 0,
            awaiting_first_line: false,
            finished: false,
            fragment: None,
        }
    }

    /// Where `find` found `e`'s content, and whether it was a gzip file.
    fn found_path(e: &Entry) -> (PathBuf, bool) {
        found_in(e, &[]).expect("not found")
    }

    /// The same, searching `rotated_dirs` too; `None` if not found.
    fn found_in(e: &Entry, rotated_dirs: &[PathBuf]) -> Option<(PathBuf, bool)> {
        match find(e, rotated_dirs, &|_, _| false, &mut Listings::default())? {
            Found::Plain { path, .. } => Some((path, false)),
            Found::Compressed { path, .. } => Some((path, true)),
        }
    }

    #[test]
    fn each_directory_to_search_is_listed_once() {
        let p = PathBuf::from;
        let dirs = [
            p("."),
            p("old"),
            p("./old/"),
            p("/var/log/archive"),
            p("/var/log/app"),
        ];
        assert_eq!(
            search_dirs(Path::new("/var/log/app"), &dirs),
            [
                p("/var/log/app"),
                p("/var/log/app/old"),
                p("/var/log/archive")
            ]
        );
    }

    #[test]
    fn rotated_dirs_are_searched_relative_to_the_log_or_absolute() {
        let logs = tempfile::tempdir().expect("tempdir");
        let archive = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(logs.path().join("old")).expect("mkdir");
        let content = b"first\nsecond\n";
        // logrotate's olddir with create: the same file, renamed into old/.
        let renamed = logs.path().join("old/app.log.1");
        std::fs::write(&renamed, content).expect("write");
        let md = std::fs::metadata(&renamed).expect("stat");
        let e = saved_at(logs.path(), (md.dev(), md.ino()), 6);
        assert_eq!(found_in(&e, &[]), None, "not next to the log");
        let old = [PathBuf::from("old")];
        assert_eq!(found_in(&e, &old), Some((renamed.clone(), false)));
        // With compress, into a directory named by its absolute path.
        std::fs::remove_file(&renamed).expect("rm");
        let gz = archive.path().join("app.log-20261128.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).expect("create"),
            flate2::Compression::fast(),
        );
        enc.write_all(content).expect("write");
        enc.finish().expect("finish");
        let e = saved_at(logs.path(), (0, 0), 6);
        assert_eq!(found_in(&e, &old), None);
        let both = [PathBuf::from("old"), archive.path().to_path_buf()];
        assert_eq!(found_in(&e, &both), Some((gz, true)));
    }

    #[test]
    fn a_gzip_file_that_took_the_saved_inode_number_is_still_looked_into() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gz = dir.path().join("app.log.1.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).expect("create"),
            flate2::Compression::fast(),
        );
        enc.write_all(b"first\nsecond\n").expect("write");
        enc.finish().expect("finish");
        let md = std::fs::metadata(&gz).expect("stat");
        let e = saved_at(dir.path(), (md.dev(), md.ino()), 6);
        assert_eq!(found_path(&e), (gz, true));
        // Saved at its end: nothing to read, not decompressed again.
        let e = saved_at(dir.path(), (md.dev(), md.ino()), 13);
        assert_eq!(found_in(&e, &[]), None);
    }

    #[test]
    fn rotated_names_start_with_the_stem() {
        assert_eq!(stem("app.jsonl"), "app");
        assert_eq!(stem("app"), "app");
        assert_eq!(stem(".hidden.log"), ".hidden.log");
        assert_eq!(stem("service-a.v2.log"), "service-a");
    }
}
