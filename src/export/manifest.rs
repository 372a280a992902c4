//! Atomic output files and the export manifest.
//!
//! Every file export writes (the training set, the validation set, the manifest) is written to
//! a temporary file in the destination directory and fsynced ([`AtomicFile::stage`]); once all
//! are, [`super::output_set`] renames them over their destinations together, the manifest last,
//! so a reader never sees half a training set and a failure before the renames leaves the
//! previous set intact.
//!
//! The manifest, `<output>.manifest.json` (e.g. `training_export.jsonl.manifest.json`), records
//! what the set was built from and how: format, config digest, the input segments read (with
//! the bytes and lines taken from each), counts per drop reason, and the sha256 and line count
//! of each output file. It holds no wall-clock time, so the same inputs give the same manifest.

use super::input::InputSummary;
use super::ExportError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// How much [`AtomicFile::write_lines`] writes between writeback hints.
const WRITEBACK_STEP: u64 = 8 << 20;

/// A file being written atomically, hashing what goes through it (or, once its hasher is
/// detached, leaving that to the caller).
pub(crate) struct AtomicFile {
    dest: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    /// Its temporary name, for an interrupt to remove (after `out`: dropped once it is gone).
    own: super::leftovers::Own,
    /// `None` once [`AtomicFile::detach_hasher`] took it.
    hasher: Option<Sha256>,
    pub(crate) lines: u64,
    /// Bytes written, and how many of them have been handed to the kernel's writeback.
    written: u64,
    flushed: u64,
}

impl AtomicFile {
    pub(crate) fn create(dest: &Path) -> Result<Self, ExportError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tmp, own) = super::leftovers::Own::make(
            || {
                tempfile::Builder::new()
                    .prefix(super::leftovers::OUTPUT_TEMP_PREFIX)
                    .suffix(super::leftovers::OUTPUT_TEMP_SUFFIX)
                    // The mode a file created the ordinary way gets (0666 less the umask),
                    // not tempfile's 0600: the rename keeps it, and a sync job reading the set
                    // as another user of the group (the shipped unit's UMask=0027) must be
                    // able to.
                    .permissions(std::fs::Permissions::from_mode(0o666))
                    .tempfile_in(&dir)
            },
            |t| t.path(),
        )
        .map_err(|e| ExportError::Output {
            path: dest.to_path_buf(),
            source: e,
        })?;
        super::leftovers::hold(tmp.as_file());
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            own,
            out: BufWriter::with_capacity(256 << 10, tmp),
            hasher: Some(Sha256::new()),
            lines: 0,
            written: 0,
            flushed: 0,
        })
    }

    fn err(&self, e: std::io::Error) -> ExportError {
        ExportError::Output {
            path: self.dest.clone(),
            source: e,
        }
    }

    /// Writes `line` and a newline.
    pub(crate) fn write_line(&mut self, line: &[u8]) -> Result<(), ExportError> {
        if let Some(h) = &mut self.hasher {
            h.update(line);
            h.update(b"\n");
        }
        self.lines += 1;
        self.written += line.len() as u64 + 1;
        let r = self
            .out
            .write_all(line)
            .and_then(|_| self.out.write_all(b"\n"));
        r.map_err(|e| self.err(e))
    }

    /// Takes the file's hasher: from here on the caller hashes exactly the bytes it writes,
    /// in order (on a thread of its own, beside the one writing), and stages with
    /// [`AtomicFile::stage_detached`].
    pub(crate) fn detach_hasher(&mut self) -> OutputHasher {
        match self.hasher.take() {
            // It has seen every byte written so far.
            Some(hasher) => OutputHasher {
                hasher,
                bytes: self.written,
            },
            // Taken before: a fresh one has seen nothing, which `stage_detached` reports
            // unless nothing was written.
            None => OutputHasher {
                hasher: Sha256::new(),
                bytes: 0,
            },
        }
    }

    /// Writes `n` lines at once (`batch` is those lines, each with its newline).
    pub(crate) fn write_lines(&mut self, batch: &[u8], n: u64) -> Result<(), ExportError> {
        if let Some(h) = &mut self.hasher {
            h.update(batch);
        }
        self.lines += n;
        let r = self.out.write_all(batch);
        r.map_err(|e| self.err(e))?;
        self.written += batch.len() as u64;
        if self.written - self.flushed >= WRITEBACK_STEP {
            self.start_writeback()?;
        }
        Ok(())
    }

    /// Starts the kernel writing what was written so far, without waiting, so the fsync in
    /// [`AtomicFile::stage`] finds little left to do (it was most of export's last 0.1 s).
    /// Only a hint: the fsync is what makes the file durable.
    fn start_writeback(&mut self) -> Result<(), ExportError> {
        let r = self.out.flush();
        r.map_err(|e| self.err(e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.out.get_ref().as_file().as_raw_fd();
            // SAFETY: plain system call on a file descriptor this struct owns; no memory is
            // passed. Its result is deliberately ignored (see above).
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.flushed as libc::off64_t,
                    (self.written - self.flushed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.flushed = self.written;
        Ok(())
    }

    /// Flushes and fsyncs, ready to be renamed into place ([`Staged::put_in_place`]).
    pub(crate) fn stage(mut self) -> Result<Staged, ExportError> {
        let hasher = self
            .hasher
            .take()
            .ok_or_else(|| ExportError::Internal("output hasher detached".into()))?;
        self.finish(hasher)
    }

    /// [`AtomicFile::stage`] with the hasher [`AtomicFile::detach_hasher`] gave out, which
    /// must have seen every byte written.
    pub(crate) fn stage_detached(self, h: OutputHasher) -> Result<Staged, ExportError> {
        if self.hasher.is_some() || h.bytes != self.written {
            return Err(ExportError::Internal(format!(
                "{}: the output hasher saw {} bytes of {}",
                self.dest.display(),
                h.bytes,
                self.written
            )));
        }
        self.finish(h.hasher)
    }

    fn finish(self, hasher: Sha256) -> Result<Staged, ExportError> {
        let dest = self.dest;
        let err = |e: std::io::Error| ExportError::Output {
            path: dest.clone(),
            source: e,
        };
        let tmp = self.out.into_inner().map_err(|e| err(e.into_error()))?;
        tmp.as_file().sync_all().map_err(err)?;
        Ok(Staged {
            record: OutputFile {
                path: dest.display().to_string(),
                sha256: super::pii::hex(&hasher.finalize()),
                lines: self.lines,
            },
            dest,
            tmp,
            _own: self.own,
        })
    }
}

/// A file written whole and fsynced under its temporary name, waiting to be renamed over its
/// destination; dropped instead, the temporary file is removed.
pub(crate) struct Staged {
    pub(crate) dest: PathBuf,
    pub(crate) record: OutputFile,
    /// Kept open until the rename: its lock tells a later export's sweep that the file is
    /// in use ([`super::leftovers`]).
    tmp: tempfile::NamedTempFile,
    _own: super::leftovers::Own,
}

impl Staged {
    /// Renames the file over its destination. The rename is durable only once the directory
    /// is synced, which the caller does once for every file of the set.
    pub(crate) fn put_in_place(self) -> Result<OutputFile, ExportError> {
        self.tmp
            .persist(&self.dest)
            .map_err(|e| ExportError::Output {
                path: self.dest.clone(),
                source: e.error,
            })?;
        Ok(self.record)
    }
}

/// The SHA-256 of an output file, computed apart from its writes
/// ([`AtomicFile::detach_hasher`]).
pub(crate) struct OutputHasher {
    hasher: Sha256,
    /// Bytes hashed, checked against the bytes written when staged.
    bytes: u64,
}

impl OutputHasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }
}

/// One written output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub sha256: String,
    pub lines: u64,
}

/// The options that shaped the set, as recorded in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestOptions {
    pub min_quality: &'static str,
    pub include_corrections: bool,
    pub min_prompt_chars: usize,
    pub min_response_chars: usize,
    /// The length limits and the lowest score, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prompt_chars: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_chars: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    /// The limit on lines, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_examples: Option<u64>,
    /// The tag filters, when set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_tags: Vec<String>,
    pub val_fraction: f64,
    pub near_dup_threshold: f64,
    pub lsh_bands: usize,
    pub lsh_rows: usize,
    pub shingle_words: usize,
    pub system_prompt: bool,
    pub pii_patterns: Vec<String>,
    /// "user" when the split went by user (by prompt otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_by: Option<&'static str>,
    /// The time window (`--since`, `--until`), RFC 3339 UTC, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The evaluation sets examples were checked against, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decontamination: Option<Decontamination>,
}

/// How export decontaminated: the run length and each evaluation file read.
#[derive(Debug, Clone, Serialize)]
pub struct Decontamination {
    pub ngram_words: usize,
    pub eval_sets: Vec<super::decontaminate::EvalSetSummary>,
}

/// The content of `<output>.manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub tool: &'static str,
    pub version: &'static str,
    pub format: &'static str,
    pub config_digest: String,
    pub options: ManifestOptions,
    pub inputs: Vec<InputSummary>,
    pub total_raw: u64,
    pub after_filtering: u64,
    pub dropped: BTreeMap<String, u64>,
    pub output: OutputFile,
    pub validation: Option<OutputFile>,
    /// Why there is no validation file although `val_fraction` asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_note: Option<String>,
    /// The ids files (`--ids`), line for line with `output` and `validation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_ids: Option<OutputFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_ids: Option<OutputFile>,
}

/// Where the manifest of `output` goes.
pub fn manifest_path(output: &Path) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "training_export.jsonl".into());
    name.push(".manifest.json");
    output.with_file_name(name)
}

/// Writes the manifest to a temporary file, for [`super::output_set::replace`] to put in
/// place after the files it describes.
pub(crate) fn stage_manifest(path: &Path, m: &Manifest) -> Result<Staged, ExportError> {
    let text = serde_json::to_string_pretty(m)
        .map_err(|e| ExportError::Internal(format!("cannot serialize manifest: {e}")))?;
    let mut f = AtomicFile::create(path)?;
    f.write_line(text.as_bytes())?;
    f.stage()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        super::super::pii::hex(&Sha256::digest(bytes))
    }

    /// A detached hasher fed the bytes written gives the file's digest; one that missed
    /// bytes, or a second one taken after writes, is refused when staging and the destination
    /// is never created; `stage` after a detach is refused too.
    #[test]
    fn export_detached_hasher_must_see_every_byte_written() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.jsonl");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_line(b"{\"x\":1}").unwrap();
        let mut h = f.detach_hasher();
        f.write_lines(b"{\"x\":2}\n{\"x\":3}\n", 2).unwrap();
        h.update(b"{\"x\":2}\n{\"x\":3}\n");
        let out = f.stage_detached(h).unwrap().put_in_place().unwrap();
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(bytes, b"{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n");
        assert_eq!(out.sha256, sha(&bytes));
        assert_eq!(out.lines, 3);

        let missed = dir.path().join("b.jsonl");
        let mut f = AtomicFile::create(&missed).unwrap();
        let mut h = f.detach_hasher();
        f.write_lines(b"one\ntwo\n", 2).unwrap();
        h.update(b"one\n");
        assert!(f.stage_detached(h).is_err());
        assert!(!missed.exists());

        let twice = dir.path().join("c.jsonl");
        let mut f = AtomicFile::create(&twice).unwrap();
        let _first = f.detach_hasher();
        f.write_lines(b"one\n", 1).unwrap();
        let mut second = f.detach_hasher();
        f.write_lines(b"two\n", 1).unwrap();
        second.update(b"two\n");
        assert!(f.stage_detached(second).is_err());
        assert!(!twice.exists());

        let inline = dir.path().join("d.jsonl");
        let mut f = AtomicFile::create(&inline).unwrap();
        let _h = f.detach_hasher();
        assert!(f.stage().is_err());
        assert!(!inline.exists());
    }
}
