//! The checkpoint file `checkpoints.json`: where each known file was read up to.
//!
//! Format (versioned so later layouts can be told apart):
//! `{"version":1,"files":[{"dev","inode","fingerprint","path","offset","updated","marker","marker_len"}]}`
//! where `offset` is the start of the first line not yet handed to the caller, `updated` is
//! the unix time the file was last seen, and `marker`/`marker_len` describe the bytes just
//! before `offset` (see `identity`), checked on resume. `path` is informational: identity is
//! `dev` + `inode` + `fingerprint`.
//!
//! A file seen only before it had a complete first line (logrotate's `create` leaves it
//! empty) has no fingerprint yet; it is saved by `dev` + `inode` alone, with
//! `"awaiting_first_line":true`, offset 0 and an all-zero fingerprint (so a reader that
//! does not know the flag takes it for a position no file's content matches). After a
//! restart such an entry finds the file renamed out of the globs by its inode, and everything
//! in it is new.
//!
//! A position read to its end from a compressed rotation carries `"finished":true`: a restart
//! does not look for (and decompress) that content again (see `rotated`).
//!
//! A rotated-away file that ends in an unterminated line at shutdown is saved at the start
//! of that line, for the restart to read it whole once the writer finishes it; the entry
//! carries what there was of the line then, `"fragment":{"len","raw"}` (`raw`: its first
//! 4 KiB, in hex), so a restart that does not find the file again can still say what was
//! lost, with those bytes, instead of nothing.
//!
//! Writes are atomic (temp file, fsync, rename, fsync of the directory), so a crash leaves
//! either the old or the new file, never a torn one. A leftover temp file is an interrupted
//! write; the old file is still consistent and is preferred. A file that cannot be parsed
//! (truncated, zero-filled: Promtail #1457, #6268) is moved aside rather than crash-looping
//! the daemon. A file of a newer version (a downgrade) is not corrupt: moved aside, every
//! log would be read again from its start and every example still in the logs written a
//! second time, so loading it is an error that says what to do instead.

use super::identity::{hex, parse_hex16};
use super::TailError;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Name of the checkpoint file inside the state directory.
pub const FILE_NAME: &str = "checkpoints.json";
const TMP_NAME: &str = "checkpoints.json.tmp";
const VERSION: u32 = 1;

/// One saved position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: String,
    pub path: String,
    pub offset: u64,
    pub updated: u64,
    #[serde(default)]
    pub marker: String,
    #[serde(default)]
    pub marker_len: u32,
    /// The file had no complete first line when it was saved: known by `dev` + `inode` only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_first_line: bool,
    /// The position was read on to its end from a compressed rotation, whose content cannot
    /// change: it is kept so the content is known if it comes back, but not looked for
    /// outside the globs again (which meant decompressing it again at every restart).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// The unterminated last line the position is at, as the shutdown left it (see the
    /// module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment: Option<Fragment>,
}

/// What a shutdown had of an unterminated last line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// Its whole length in bytes.
    pub len: u64,
    /// Its first bytes (at most 4 KiB), in hex.
    pub raw: String,
}

impl Fragment {
    pub fn new(raw: &[u8], len: u64) -> Fragment {
        Fragment { len, raw: hex(raw) }
    }

    /// The bytes `raw` holds (none if it is not well-formed hex).
    pub fn raw_bytes(&self) -> Vec<u8> {
        let b = self.raw.as_bytes();
        if !b.len().is_multiple_of(2) {
            return Vec::new();
        }
        b.chunks(2)
            .map(|p| {
                let hi = (p[0] as char).to_digit(16)?;
                let lo = (p[1] as char).to_digit(16)?;
                Some((hi * 16 + lo) as u8)
            })
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_default()
    }
}

impl Entry {
    /// The position of a file without a complete first line yet (see the module
    /// documentation): everything in it is unread.
    pub fn awaiting_first_line(dev: u64, inode: u64, path: String, updated: u64) -> Entry {
        Entry {
            dev,
            inode,
            fingerprint: hex(&[0u8; 16]),
            path,
            offset: 0,
            updated,
            marker: String::new(),
            marker_len: 0,
            awaiting_first_line: true,
            finished: false,
            fragment: None,
        }
    }

    /// The first-line fingerprint the saved content has, if well formed; `None` for an entry
    /// awaiting its first line, which no content matches.
    pub fn fingerprint_bytes(&self) -> Option<[u8; 16]> {
        if self.awaiting_first_line {
            return None;
        }
        parse_hex16(&self.fingerprint)
    }

    /// The marker hash as bytes (`None` when there is no marker).
    pub fn marker_bytes(&self) -> Option<[u8; 16]> {
        parse_hex16(&self.marker)
    }

    /// Equal in everything but the `updated` time (used to skip no-op writes).
    pub fn same_position(&self, other: &Entry) -> bool {
        self.dev == other.dev
            && self.inode == other.inode
            && self.fingerprint == other.fingerprint
            && self.path == other.path
            && self.offset == other.offset
            && self.marker == other.marker
            && self.marker_len == other.marker_len
            && self.awaiting_first_line == other.awaiting_first_line
            && self.fragment == other.fragment
    }

    /// Sets the marker fields.
    pub fn set_marker(&mut self, len: u32, hash: &[u8; 16]) {
        self.marker_len = len;
        self.marker = if len == 0 { String::new() } else { hex(hash) };
    }
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    files: Vec<Entry>,
}

/// Result of loading the state directory.
#[derive(Debug)]
pub enum Loaded {
    /// No checkpoint file: the very first start.
    Missing,
    /// The file was unusable and has been moved to the given path (or could not be moved).
    Corrupt { moved_to: Option<PathBuf> },
    /// Saved positions.
    Entries(Vec<Entry>),
}

fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if doc.version != VERSION {
        return Err(format!("unsupported checkpoint version {}", doc.version));
    }
    if let Some(bad) = doc
        .files
        .iter()
        .find(|e| parse_hex16(&e.fingerprint).is_none())
    {
        return Err(format!("malformed fingerprint {:?}", bad.fingerprint));
    }
    Ok(doc.files)
}

/// Loads `state_dir/checkpoints.json`. A corrupt file is logged, moved aside to
/// `checkpoints.json.corrupt-<unix time>` and reported as `Loaded::Corrupt`.
pub fn load(state_dir: &Path, now_unix: u64) -> Result<Loaded, TailError> {
    let path = state_dir.join(FILE_NAME);
    // A temp file left behind is a write that never reached its rename: discard it.
    let tmp = state_dir.join(TMP_NAME);
    if tmp.exists() {
        tracing::warn!(path = %tmp.display(), "removing interrupted checkpoint write");
        if let Err(e) = fs::remove_file(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove stale temp file");
        }
    }
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => return Err(TailError::CheckpointRead { path, source }),
    };
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    if let Ok(Versioned { version }) = serde_json::from_slice(&bytes) {
        if version > VERSION {
            let why = format!(
                "it was written by a newer training-collector (checkpoint version {version}; \
                 this one reads version {VERSION}): run that version, or move the file aside \
                 to read every log again from its start (the examples read again are \
                 counted once)"
            );
            return Err(TailError::CheckpointRead {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, why),
            });
        }
    }
    match parse(&bytes) {
        Ok(entries) => Ok(Loaded::Entries(entries)),
        Err(reason) => {
            let aside = state_dir.join(format!("{FILE_NAME}.corrupt-{now_unix}"));
            let moved_to = match fs::rename(&path, &aside) {
                Ok(()) => Some(aside),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot move corrupt checkpoint file aside");
                    None
                }
            };
            tracing::error!(
                path = %path.display(),
                reason = %reason,
                moved_to = ?moved_to,
                "checkpoint file is corrupt; starting without saved positions"
            );
            Ok(Loaded::Corrupt { moved_to })
        }
    }
}

/// Writes the entries atomically: temp file, fsync, rename, fsync of the directory.
pub fn store(state_dir: &Path, entries: &[Entry]) -> Result<(), TailError> {
    let path = state_dir.join(FILE_NAME);
    let tmp = state_dir.join(TMP_NAME);
    let doc = Document {
        version: VERSION,
        files: entries.to_vec(),
    };
    let werr = |source: io::Error| TailError::CheckpointWrite {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(&doc).map_err(|e| werr(io::Error::other(e)))?;
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(&bytes).map_err(werr)?;
        f.write_all(b"\n").map_err(werr)?;
        f.sync_all().map_err(werr)?;
    }
    fs::rename(&tmp, &path).map_err(werr)?;
    File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64) -> Entry {
        Entry {
            dev: 1,
            inode: 2,
            fingerprint: "00112233445566778899aabbccddeeff".into(),
            path: "/x/a.log".into(),
            offset,
            updated: 5,
            marker: String::new(),
            marker_len: 0,
            awaiting_first_line: false,
            finished: false,
            fragment: None,
        }
    }

    #[test]
    fn a_fragment_round_trips_and_is_left_out_when_there_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = entry(9);
        e.fragment = Some(Fragment::new(b"{\"a\":\xff", 5000));
        store(dir.path(), &[e.clone(), entry(3)]).expect("store");
        match load(dir.path(), 1).expect("load") {
            Loaded::Entries(got) => {
                assert_eq!(got, vec![e, entry(3)]);
                let f = got[0].fragment.as_ref().expect("fragment");
                assert_eq!(f.raw_bytes(), b"{\"a\":\xff");
                assert_eq!(f.len, 5000);
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert_eq!(text.matches("fragment").count(), 1, "{text}");
    }

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            load(dir.path(), 1).expect("load"),
            Loaded::Missing
        ));
        store(dir.path(), &[entry(7)]).expect("store");
        match load(dir.path(), 1).expect("load") {
            Loaded::Entries(e) => assert_eq!(e, vec![entry(7)]),
            other => panic!("unexpected {other:?}"),
        }
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert!(text.starts_with("{\"version\":1,\"files\":[{\"dev\":1,\"inode\":2,"));
    }

    #[test]
    fn zero_filled_file_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE_NAME), [0u8; 100]).expect("write");
        match load(dir.path(), 42).expect("load") {
            Loaded::Corrupt { moved_to } => {
                let p = moved_to.expect("moved");
                assert!(p.ends_with("checkpoints.json.corrupt-42"));
                assert!(p.exists());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    /// A downgrade: the newer version's file stays where it is, untouched, and the load
    /// fails with a reason that names the versions.
    #[test]
    fn a_file_of_a_newer_version_is_an_error_not_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let newer = format!("{{\"version\":{},\"files\":[],\"more\":1}}\n", VERSION + 1);
        fs::write(dir.path().join(FILE_NAME), &newer).expect("write");
        let err = match load(dir.path(), 7) {
            Err(e) => e.to_string(),
            Ok(other) => panic!("loaded {other:?}"),
        };
        assert!(
            err.contains("newer") && err.contains(&format!("version {}", VERSION + 1)),
            "{err}"
        );
        let kept = fs::read_to_string(dir.path().join(FILE_NAME)).expect("still there");
        assert_eq!(kept, newer);
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn interrupted_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &[entry(3)]).expect("store");
        fs::write(dir.path().join(TMP_NAME), b"{\"version\":1,\"fi").expect("write");
        match load(dir.path(), 1).expect("load") {
            Loaded::Entries(e) => assert_eq!(e, vec![entry(3)]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!dir.path().join(TMP_NAME).exists());
    }
}
