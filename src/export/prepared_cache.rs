//! The prepared cache: what export's read-time work found in each sealed example segment (one
//! [`LineFacts`] per line: what the filters read, where the scrubbed texts are, the
//! exact-dedup key, the MinHash band keys), kept under `state/export-cache/`, so that the next
//! export reads ~230 bytes per example instead of parsing, scrubbing and MinHashing every line
//! of every segment again. `ready` runs a whole export each time it is asked, and exports
//! are run again and again as data accumulates, while most segments never change. The daemon
//! writes the entries for the config's options ahead, as it seals segments
//! ([`super::prepare_ahead`]), so even a user's first export finds them.
//!
//! An entry does not depend on the export's filters: it keeps what they read of each line
//! (relevance, tags, score, characters, timestamp, user and its id) and the prepared texts of every
//! example that only an option filter could drop, and the reader applies the options
//! ([`LineFacts::apply_options`]). So an export with `--tag`, `--min-score`, `--since`,
//! `--split-by` or `--no-corrections` reads the entries the daemon wrote for the config.
//!
//! An entry is used only when all of these hold, and is a miss otherwise (the segment is read
//! as without a cache and its entry written anew):
//! - its fingerprint is this export's: the options that decide the facts (the PII patterns
//!   and pseudonym key; the MinHash parameters; the evaluation sets' contents; whether the
//!   format is a preference one, which reads no example's texts), the cache format and
//!   the program itself (version, size and modification time of the executable), so a new
//!   binary or a changed option never reads facts another one made. Each fingerprint has its
//!   own directory; the four most recently used are kept, unless unused for a week.
//! - the segment is the one the entry was made from: sealed segments never change (DESIGN.md),
//!   and the entry records the segment's size, modification time and hashes of its first and
//!   last 4 KiB, so a segment replaced under the same name is not mistaken for the old one.
//! - its checksum is right. Entries are renamed into place whole but not fsynced (a cache is
//!   not worth the disk's time): one torn by a crash reads as a miss.
//!
//! A cache that cannot be read or written (read-only state directory, full disk) costs only
//! speed: a warning, and the export goes on without it. Open segments are never cached.

use super::codec::{Dec, Enc};
use super::input::InputSummary;
use super::join::Ex;
use super::pii::hex;
use super::prepare::{FilterInputs, LineFacts};
use super::ExportOptions;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// The cache's directory under the state directory.
pub const DIR_NAME: &str = "export-cache";
/// First bytes of an entry; the last digit is the format's version (also in the fingerprint).
const MAGIC: &[u8; 8] = b"TCPREP04";
/// How many fingerprints' directories are kept (an export with other options, `ready` with
/// the config's): the most recently used.
const KEEP_FINGERPRINTS: usize = 4;
/// Bytes hashed at each end of a segment for its identity.
const EDGE_BYTES: u64 = 4096;
/// A record length that marks the trailer.
const END: u32 = u32::MAX;
/// Another fingerprint's directory unused for this long is removed (an upgrade leaves the
/// old program's behind for good).
const UNUSED_FINGERPRINT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// An entry younger than this is kept even when its segment is not among an export's inputs:
/// it may be of a segment sealed (and prepared by the daemon) while that export ran.
const FRESH_ENTRY: std::time::Duration = std::time::Duration::from_secs(600);
/// A temporary entry older than this was left by a process that died; it is removed.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the cache did in one export, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Sealed example segments whose facts came from the cache.
    pub reused: u64,
    /// Sealed example segments read and prepared, whose entries were written.
    pub written: u64,
}

/// The fingerprint of everything besides a segment's bytes that decides its facts, as hex
/// (the name of its directory). `eval` is the evaluation sets' index when export
/// decontaminates (its files' digests, taken as it read them). `None` (no cache) when the
/// program's own file cannot be read.
pub(crate) fn fingerprint(
    opts: &ExportOptions,
    eval: Option<&super::decontaminate::EvalIndex>,
) -> Option<String> {
    let digests: Vec<&str> = eval
        .iter()
        .flat_map(|ix| ix.summaries.iter().map(|s| s.sha256.as_str()))
        .collect();
    fingerprint_with(opts, &digests)
}

/// [`fingerprint`] from the evaluation sets' SHA-256 digests alone (for looking at the cache
/// without building the sets' index: `stats`).
pub(crate) fn fingerprint_with(opts: &ExportOptions, eval_sets: &[&str]) -> Option<String> {
    // Every field is named, so a new option cannot be left out by mistake: it is either in
    // the fingerprint or listed as not deciding any line's facts.
    let ExportOptions {
        format,
        // The option filters, the time window and the split are applied to the facts after
        // the cache (`LineFacts::apply_options`): entries keep what they read.
        min_quality: _,
        include_corrections: _,
        min_prompt_chars: _,
        min_response_chars: _,
        max_prompt_chars: _,
        max_response_chars: _,
        min_score: _,
        tags: _,
        exclude_tags: _,
        declared_tags: _,
        strict_tags: _,
        since: _,
        until: _,
        split_by: _,
        max_examples: _,
        val_fraction: _,
        system_prompt: _,
        pii_patterns,
        pseudonym_key,
        near_dup_threshold,
        temp_dir: _,
        progress: _,
        config_digest: _,
        ids_file: _,
        // Through `eval`, which read them.
        decontaminate: _,
        decontaminate_ngram,
        cache_dir: _,
    } = opts;
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map_err(
            |e| tracing::warn!(error = %e, "export cache off: cannot read the program's own file"),
        )
        .ok()?;
    let (bands, rows) = super::dedup::lsh_params(near_dup_threshold.max(f64::MIN_POSITIVE));
    let described = serde_json::json!({
        "magic": String::from_utf8_lossy(MAGIC),
        "version": env!("CARGO_PKG_VERSION"),
        "exe": [exe.len(), exe.mtime(), exe.mtime_nsec()],
        "preference": format.kind() == super::Kind::Preference,
        "pii_patterns": pii_patterns.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "pseudonym_key": hex(&Sha256::digest(pseudonym_key)),
        "lsh": (*near_dup_threshold > 0.0).then_some([bands, rows]),
        "eval_sets": eval_sets,
        "ngram": decontaminate_ngram,
    });
    Some(hex(&Sha256::digest(described.to_string().as_bytes()))[..32].to_string())
}

/// Which segment an entry was made from. Not the tailer's `tail::identity::FileId` (device,
/// inode and first line), which names a file that is still growing: a sealed segment is
/// complete, so its size, mtime and both ends say more, and a data directory copied
/// elsewhere (new inodes, `cp -a` keeps mtimes) keeps its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    size: u64,
    mtime_ns: i128,
    head: u64,
    tail: u64,
}

impl Identity {
    fn of(file: &File) -> std::io::Result<Identity> {
        let m = file.metadata()?;
        let size = m.len();
        let edge = |off: u64| -> std::io::Result<u64> {
            let mut buf = vec![0u8; EDGE_BYTES.min(size) as usize];
            file.read_exact_at(&mut buf, off)?;
            Ok(xxhash_rust::xxh3::xxh3_64(&buf))
        };
        Ok(Identity {
            size,
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            head: edge(0)?,
            tail: edge(size.saturating_sub(EDGE_BYTES))?,
        })
    }
    fn encode(&self, e: &mut Enc<'_>) {
        e.u64(self.size)
            .u128(self.mtime_ns as u128)
            .u64(self.head)
            .u64(self.tail);
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self, String> {
        Ok(Identity {
            size: d.u64()?,
            mtime_ns: d.u128()? as i128,
            head: d.u64()?,
            tail: d.u64()?,
        })
    }
}

/// One fingerprint's directory of entries, one per sealed example segment.
pub(crate) struct PreparedCache {
    dir: PathBuf,
    fingerprint: String,
    pub(crate) stats: CacheStats,
}

impl PreparedCache {
    /// The directory for `fingerprint` under `root`, made if need be and marked as just used;
    /// the least recently used other fingerprints' directories beyond the few kept are removed.
    /// `None` (with a warning) if it cannot be made.
    pub(crate) fn open(root: &Path, fingerprint: String) -> Option<Self> {
        let dir = root.join(&fingerprint);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "export cache off: cannot make its directory");
            return None;
        }
        // Its modification time says when it was last used.
        let _ = File::open(&dir).and_then(|d| d.set_modified(std::time::SystemTime::now()));
        remove_old_fingerprints(root, &fingerprint);
        Some(PreparedCache {
            dir,
            fingerprint,
            stats: CacheStats::default(),
        })
    }

    /// The directory for `fingerprint` under `root` if it exists, for looking only: nothing
    /// is made, marked or removed.
    pub(crate) fn existing(root: &Path, fingerprint: String) -> Option<Self> {
        let dir = root.join(&fingerprint);
        dir.is_dir().then_some(PreparedCache {
            dir,
            fingerprint,
            stats: CacheStats::default(),
        })
    }

    fn entry_path(&self, segment: &Path) -> Option<PathBuf> {
        let name = segment.file_name()?;
        let mut n = name.to_os_string();
        n.push(".prep");
        Some(self.dir.join(n))
    }

    /// The cached facts of the sealed segment `segment`, open as `file`, if its entry is there
    /// and sound; `None` is a miss.
    pub(crate) fn read(&mut self, segment: &Path, file: &File) -> Option<CachedSegment> {
        let path = self.entry_path(segment)?;
        let entry = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(entry = %path.display(), error = %e, "export cache: unreadable entry, preparing the segment again");
                return None;
            }
        };
        match self.check(entry, file) {
            Ok(Some(seg)) => {
                self.stats.reused += 1;
                Some(seg)
            }
            Ok(None) => None,
            Err(reason) => {
                tracing::warn!(entry = %path.display(), reason = %reason, "export cache: damaged entry, preparing the segment again");
                None
            }
        }
    }

    /// Whether `segment` (open as `file`) has an entry of this fingerprint made from it: its
    /// header only, not the checksum over the whole entry (what the daemon asks before
    /// preparing a segment ahead; an export still checks everything and rewrites a damaged
    /// entry).
    pub(crate) fn has_entry(&self, segment: &Path, file: &File) -> bool {
        let entry = self.entry_path(segment).and_then(|p| File::open(p).ok());
        entry.is_some_and(|e| matches!(self.header(&e, file), Ok(Some(_))))
    }

    /// Reads an entry's header: `Ok(Some(its length))` when it names this fingerprint and the
    /// segment open as `segment` as it is now, `Ok(None)` when it names another fingerprint or
    /// another segment of that name.
    fn header(&self, entry: &File, segment: &File) -> Result<Option<usize>, String> {
        let head = read_frame(&mut BufReader::with_capacity(512, entry))?.ok_or("no header")?;
        let d = &mut Dec::new(&head);
        if d.take_bytes(MAGIC.len())? != MAGIC {
            return Err("not a prepared cache entry".into());
        }
        if d.str()? != self.fingerprint {
            return Ok(None);
        }
        let made_from = Identity::decode(d)?;
        d.end()?;
        let now = Identity::of(segment).map_err(|e| e.to_string())?;
        Ok((now == made_from).then_some(head.len()))
    }

    /// `Ok(None)`: a sound entry, but made from another segment of that name (or with
    /// another fingerprint).
    fn check(&self, entry: File, segment: &File) -> Result<Option<CachedSegment>, String> {
        let io = |e: std::io::Error| e.to_string();
        // The header: magic, fingerprint, the segment's identity.
        let Some(head_len) = self.header(&entry, segment)? else {
            return Ok(None);
        };
        // The checksum, over everything before it.
        let len = entry.metadata().map_err(io)?.len();
        let body = len
            .checked_sub(8)
            .filter(|&b| b >= 4 + head_len as u64 + 28)
            .ok_or("too short")?;
        (&entry).seek(SeekFrom::Start(0)).map_err(io)?;
        let mut r = BufReader::with_capacity(256 << 10, &entry);
        let mut h = Xxh3::new();
        let mut left = body;
        let mut buf = vec![0u8; 256 << 10];
        while left > 0 {
            let n = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..n]).map_err(io)?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let mut sum = [0u8; 8];
        r.read_exact(&mut sum).map_err(io)?;
        if u64::from_le_bytes(sum) != h.digest() {
            return Err("checksum mismatch".into());
        }
        // The trailer: the end marker, then lines, bytes and records.
        let mut trailer = [0u8; 28];
        entry.read_exact_at(&mut trailer, body - 28).map_err(io)?;
        let t = &mut Dec::new(&trailer);
        if t.u32()? != END {
            return Err("no trailer".into());
        }
        let (lines, bytes, records) = (t.u64()?, t.u64()?, t.u64()?);
        (&entry)
            .seek(SeekFrom::Start(4 + head_len as u64))
            .map_err(io)?;
        Ok(Some(CachedSegment {
            reader: BufReader::with_capacity(256 << 10, entry),
            buf: Vec::new(),
            lines,
            bytes,
            records_left: records,
        }))
    }

    /// A writer for the entry of the sealed segment `segment`, open as `file`; `None` (with
    /// a warning) if it cannot be made.
    pub(crate) fn writer(&self, segment: &Path, file: &File) -> Option<EntryWriter> {
        let path = self.entry_path(segment)?;
        let made = (|| -> std::io::Result<EntryWriter> {
            let identity = Identity::of(file)?;
            // A long-running writer (the daemon's) may find its directory removed as one of
            // the least recently used by exports with other options meanwhile.
            std::fs::create_dir_all(&self.dir)?;
            let (tmp, own) = super::leftovers::Own::make(
                || {
                    tempfile::Builder::new()
                        .prefix(".tmp-")
                        .tempfile_in(&self.dir)
                },
                |t| t.path(),
            )?;
            let out = BufWriter::with_capacity(256 << 10, tmp.reopen()?);
            let mut w = EntryWriter {
                _own: own,
                tmp,
                out,
                path,
                hasher: Xxh3::new(),
                records: 0,
                frame: Vec::new(),
            };
            let mut head = Vec::new();
            let e = &mut Enc(&mut head);
            e.bytes(MAGIC).str(&self.fingerprint);
            identity.encode(e);
            w.write_frame(&head)?;
            Ok(w)
        })();
        made.map_err(|e| tracing::warn!(dir = %self.dir.display(), error = %e, "export cache: cannot write an entry"))
            .ok()
    }

    /// Removes the entries of segments not in `live` (the sealed example segments this export
    /// read: the others were deleted since) unless just written, and temporary entries left
    /// by a process that died.
    pub(crate) fn prune(&self, live: &[PathBuf]) {
        let keep: std::collections::HashSet<PathBuf> =
            live.iter().filter_map(|s| self.entry_path(s)).collect();
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for ent in dir.flatten() {
            let path = ent.path();
            let name = ent.file_name();
            let older_than = |limit| {
                ent.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > limit)
            };
            let stale = if name.to_string_lossy().starts_with(".tmp-") {
                older_than(STALE_TEMP)
            } else {
                // A fresh entry may be of a segment sealed after this export listed its
                // inputs (the daemon prepares segments as it seals them).
                !keep.contains(&path) && older_than(FRESH_ENTRY)
            };
            if stale {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Removes the directories of fingerprints other than `current` beyond the
/// [`KEEP_FINGERPRINTS`] - 1 most recently used, and those unused for [`UNUSED_FINGERPRINT`].
fn remove_old_fingerprints(root: &Path, current: &str) {
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = dir
        .flatten()
        .filter(|e| e.file_name() != current && e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (used, e.path())
        })
        .collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (i, (used, old)) in others.into_iter().enumerate() {
        let unused = used.elapsed().is_ok_and(|age| age > UNUSED_FINGERPRINT);
        if i + 1 >= KEEP_FINGERPRINTS || unused {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// The entries being written, by example file index, each with its file's summary once the
/// file has been read to its end; and how many have been put in place.
#[derive(Default)]
pub(crate) struct PendingEntries {
    open: std::collections::BTreeMap<u32, (EntryWriter, Option<InputSummary>)>,
    pub(crate) written: u64,
}

impl PendingEntries {
    pub(crate) fn start(&mut self, file: u32, w: EntryWriter) {
        self.open.insert(file, (w, None));
    }

    /// File `file` was read to its end: this is what reading it gave.
    pub(crate) fn read_whole(&mut self, file: u32, summary: &InputSummary) {
        if let Some((_, s)) = self.open.get_mut(&file) {
            *s = Some(summary.clone());
        }
    }

    /// Adds a line's record to file `file`'s entry, if one is being written; an entry that
    /// cannot be written is given up (a warning: the cache only costs speed).
    pub(crate) fn push(&mut self, file: u32, line_no: u64, facts: &Result<LineFacts, String>) {
        if let Some((w, _)) = self.open.get_mut(&file) {
            if let Err(e) = w.push(line_no, facts) {
                tracing::warn!(error = %e, "export cache: cannot write an entry");
                self.open.remove(&file);
            }
        }
    }

    /// Finishes (writes and puts in place) the entries of files before `file`, whose lines
    /// have all been filed. An entry whose file was not read to its end is dropped.
    pub(crate) fn finish_before(&mut self, file: u32) {
        while let Some(e) = self.open.first_entry().filter(|e| *e.key() < file) {
            let (w, summary) = e.remove();
            match summary.map(|s| w.finish(&s)) {
                Some(Ok(())) => self.written += 1,
                Some(Err(e)) => tracing::warn!(error = %e, "export cache: cannot write an entry"),
                None => {}
            }
        }
    }
}

/// Reads one length-prefixed frame; `None` at the trailer's marker.
fn read_frame(r: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    Ok(read_frame_into(r, &mut buf)?.then_some(buf))
}

fn read_frame_into(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(len);
    if len == END {
        return Ok(false);
    }
    buf.clear();
    if len <= 1 << 20 {
        buf.resize(len as usize, 0);
        r.read_exact(buf).map_err(|e| e.to_string())?;
        return Ok(true);
    }
    // A long frame is read as the bytes come rather than into a buffer of the stated length:
    // a damaged length (the header is read before the checksum is checked) must not allocate
    // gigabytes.
    r.take(u64::from(len))
        .read_to_end(buf)
        .map_err(|e| e.to_string())?;
    if buf.len() != len as usize {
        return Err("frame cut short".into());
    }
    Ok(true)
}

/// One line's record in an entry: its facts, or why it could not be read.
fn encode_line(line_no: u64, facts: &Result<LineFacts, String>, out: &mut Vec<u8>) {
    let e = &mut Enc(out);
    e.u64(line_no);
    match facts {
        Ok(f) => {
            e.u8(0)
                .str(&f.id)
                .opt_str(f.request_id.as_deref())
                .u128(f.prompt_key);
            f.ex.encode_in_file(0, e);
            f.filters.encode(e);
            e.u32(f.bands.len() as u32);
            for &b in &f.bands {
                e.u64(b);
            }
        }
        Err(reason) => {
            e.u8(1).str(reason);
        }
    }
}

/// `with_tags`: see [`FilterInputs::decode`].
fn decode_line(
    buf: &[u8],
    file: u32,
    with_tags: bool,
) -> Result<(u64, Result<LineFacts, String>), String> {
    let d = &mut Dec::new(buf);
    let line_no = d.u64()?;
    let facts = match d.u8()? {
        0 => {
            let id = d.str()?;
            let request_id = d.opt_str()?;
            let prompt_key = d.u128()?;
            let mut ex = Ex::decode(d)?;
            ex.loc.file = file;
            let filters = FilterInputs::decode(d, with_tags)?;
            let n = d.u32()? as usize;
            let mut bands = Vec::with_capacity(n.min(super::dedup::MAX_HASHES));
            for _ in 0..n {
                bands.push(d.u64()?);
            }
            Ok(LineFacts {
                id,
                request_id,
                // Read back from the segment for the few lines a correction may name.
                user_id: None,
                prompt_key,
                ex,
                filters,
                bands,
            })
        }
        1 => Err(d.str()?),
        t => return Err(format!("bad line tag {t}")),
    };
    d.end()?;
    Ok((line_no, facts))
}

/// A sound entry, read line by line.
pub(crate) struct CachedSegment {
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// What the segment's [`InputSummary`] says (non-blank lines, bytes).
    lines: u64,
    bytes: u64,
    records_left: u64,
}

impl CachedSegment {
    /// The summary reading the segment would give.
    pub(crate) fn summary(&self, path: &Path) -> InputSummary {
        InputSummary {
            path: path.display().to_string(),
            kind: "examples",
            bytes: self.bytes,
            lines: self.lines,
            torn_tail_skipped: false,
        }
    }

    /// The next line's (line number, facts or why it was unreadable), with its location's
    /// file index set to `file` (its tags kept if `with_tags`); `None` after the last. An
    /// error here is an entry that passed its checksum yet does not decode: a bug, not a torn
    /// file.
    pub(crate) fn next(
        &mut self,
        file: u32,
        with_tags: bool,
    ) -> Result<Option<CachedLine>, String> {
        if self.records_left == 0 {
            return Ok(None);
        }
        if !read_frame_into(&mut self.reader, &mut self.buf)? {
            return Err("entry ends before its last record".into());
        }
        self.records_left -= 1;
        decode_line(&self.buf, file, with_tags).map(Some)
    }
}

/// One line of a cached segment: (line number, its facts or why it was unreadable).
pub(crate) type CachedLine = (u64, Result<LineFacts, String>);

/// Lines decoded per batch handed from the decoding thread to the reading one.
const DECODE_BATCH: usize = 1024;

impl CachedSegment {
    /// Decodes the lines on a thread of `scope`, in batches, while the caller files the ones
    /// before (decoding was half of the reading thread's time on a cached segment). The
    /// receiver yields the batches in order, then an error if the entry does not decode
    /// (see [`CachedSegment::next`]); the thread stops early if the receiver is dropped.
    pub(crate) fn decode_on<'scope>(
        mut self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        file: u32,
        with_tags: bool,
    ) -> std::sync::mpsc::Receiver<Result<Vec<CachedLine>, String>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(DECODE_BATCH);
            loop {
                match self.next(file, with_tags) {
                    Ok(Some(line)) => {
                        batch.push(line);
                        if batch.len() == DECODE_BATCH {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(DECODE_BATCH));
                            if tx.send(Ok(full)).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Ok(batch));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// Writes one segment's entry as its lines are prepared; [`EntryWriter::finish`] puts it in
/// place. Dropped unfinished, it leaves nothing.
pub(crate) struct EntryWriter {
    tmp: tempfile::NamedTempFile,
    /// Its temporary name, for an interrupt to remove (after `tmp`: dropped once it is gone).
    _own: super::leftovers::Own,
    out: BufWriter<File>,
    path: PathBuf,
    hasher: Xxh3,
    records: u64,
    frame: Vec<u8>,
}

impl EntryWriter {
    fn write_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hasher.update(b);
        self.out.write_all(b)
    }

    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l != END)
            .ok_or_else(|| std::io::Error::other("cache record over 4 GiB"))?;
        self.write_raw(&len.to_le_bytes())?;
        self.write_raw(frame)
    }

    /// Adds a line's record (`facts` before the options are applied, with any band index).
    pub(crate) fn push(
        &mut self,
        line_no: u64,
        facts: &Result<LineFacts, String>,
    ) -> std::io::Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        encode_line(line_no, facts, &mut frame);
        let r = self.write_frame(&frame);
        self.frame = frame;
        self.records += 1;
        r
    }

    /// Writes the trailer and renames the entry into place. `summary` is what reading the
    /// segment gave.
    pub(crate) fn finish(mut self, summary: &InputSummary) -> std::io::Result<()> {
        self.write_raw(&END.to_le_bytes())?;
        let mut t = Vec::new();
        Enc(&mut t)
            .u64(summary.lines)
            .u64(summary.bytes)
            .u64(self.records);
        self.write_raw(&t)?;
        let sum = self.hasher.digest();
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.flush()?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged header length (read before the checksum) is an error, not a huge buffer.
    #[test]
    fn export_prepared_cache_damaged_frame_length_reads_only_what_is_there() {
        let mut bytes = (u32::MAX - 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"TCPREP04 and little else");
        let mut buf = Vec::new();
        let err = read_frame_into(&mut &bytes[..], &mut buf).unwrap_err();
        assert_eq!(err, "frame cut short");
        assert!(buf.capacity() < 1 << 20, "{}", buf.capacity());
    }

    /// An entry whose checksum is right but whose record does not decode (which only a bug
    /// could write) is read as a hit, and its decoding thread reports the error (which stops
    /// the export) rather than ending early as if the segment were shorter.
    #[test]
    fn export_prepared_cache_undecodable_record_is_an_error_not_a_short_segment() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("examples_1.jsonl");
        std::fs::write(&seg, b"{}\n{}\n").unwrap();
        let file = File::open(&seg).unwrap();
        let mut cache = PreparedCache::open(&dir.path().join("cache"), "fp".into()).unwrap();
        let mut w = cache.writer(&seg, &file).unwrap();
        w.push(1, &Err("line one is unreadable".into())).unwrap();
        // A record with an unknown tag, written as a sound frame.
        w.write_frame(&[2, 0, 0, 0, 0, 0, 0, 0, 7]).unwrap();
        w.records += 1;
        let summary = InputSummary {
            path: seg.display().to_string(),
            kind: "examples",
            bytes: 6,
            lines: 2,
            torn_tail_skipped: false,
        };
        w.finish(&summary).unwrap();
        let got = cache.read(&seg, &file).expect("a sound entry");
        assert_eq!(got.summary(&seg).lines, 2);
        let batches: Vec<_> =
            std::thread::scope(|s| got.decode_on(s, 0, false).into_iter().collect());
        assert_eq!(batches.len(), 1, "{batches:?}");
        let err = batches[0].as_ref().unwrap_err();
        assert!(err.contains("bad line tag 7"), "{err}");
        assert_eq!(cache.stats.reused, 1);
    }
}
