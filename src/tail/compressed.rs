//! Reading on in a compressed rotation: the file logrotate's `compress` made (gzip by
//! default; zstd, xz or bzip2 through `compresscmd`) of a file the tailer had a saved
//! position in but was not holding open when it was rotated (the daemon was stopped, the file
//! was closed for the open-file budget, or copytruncate's copy was compressed before it was
//! found). [`super::rotated`] finds such a file; this module reads its decompressed bytes
//! from the saved position to the end, a read budget at a time. The format is told by the
//! file's magic bytes, not its name.
//!
//! Offsets are offsets into the decompressed bytes, which are the original file's bytes, and
//! lines keep the original file's identity: a line gets the id reading the original would
//! have given it, so a line read from both (a crash after reading it from the original but
//! before its checkpoint) is one example, not two. The bytes before the saved position must
//! hash to the saved marker, as for any resume. A stream that ends early or breaks off (the
//! compressor still writing it) is read again from its start once it grows.

use super::checkpoint::Entry;
use super::identity::{self, read_full_at, FileId, StreamFingerprint, MARKER_MAX_BYTES};
use super::reader::{Reader, RAW_CAP, TAIL_KEEP};
use super::{emit, TailCounters, TailItem, CHUNK};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// At most this many decompressed bytes are looked at for a first line (a hole of NUL
/// bytes could otherwise make one look decompress a whole archive).
const FINGERPRINT_SCAN_MAX: u64 = 16 << 20;

/// Decompressed bytes kept for markers at most (see [`Compressed::recent`]).
const RECENT_MAX: usize = 1 << 20;

/// The compressions logrotate is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Codec {
    /// The compression `file` is in, by its magic bytes (`None`: not compressed, or not in
    /// one of these).
    pub(super) fn of(file: &File) -> Option<Codec> {
        let mut magic = [0u8; 6];
        let n = read_full_at(file, &mut magic, 0).ok()?;
        let magic = &magic[..n];
        if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Codec::Zstd)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Codec::Xz)
        } else if magic.starts_with(b"BZh") {
            Some(Codec::Bzip2)
        } else {
            None
        }
    }
}

/// The decompressed size a gzip file's trailer records (modulo 2^32; of its last member).
/// The other formats' files, written by a compressor reading a pipe, record none.
pub(super) fn recorded_size(file: &File, codec: Codec) -> Option<u32> {
    if codec != Codec::Gzip {
        return None;
    }
    let len = file.metadata().ok()?.len();
    let mut isize = [0u8; 4];
    if len < 18 || read_full_at(file, &mut isize, len - 4).ok()? != 4 {
        return None;
    }
    Some(u32::from_le_bytes(isize))
}

/// A decompressing reader over the whole of `file`, from its start. Each reads every
/// member, frame or stream concatenated in the file, as the format's own tool does.
fn decoder(file: &File, codec: Codec) -> io::Result<Box<dyn Read + Send>> {
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(0))?;
    let input = BufReader::with_capacity(CHUNK, f);
    Ok(match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
    })
}

/// The first-line fingerprint of a compressed file's decompressed content (`None`: no
/// complete first line, or not readable).
pub(super) fn first_line_fingerprint(file: &File, codec: Codec) -> Option<[u8; 16]> {
    let mut dec = decoder(file, codec).ok()?;
    let mut fp = StreamFingerprint::default();
    let mut buf = vec![0u8; 4096];
    let mut seen = 0u64;
    while seen < FINGERPRINT_SCAN_MAX {
        let n = dec.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        seen += n as u64;
        if let Some(f) = fp.feed(&buf[..n]) {
            return Some(f.hash);
        }
    }
    None
}

/// How one pass over a compressed rotation went.
pub(super) enum Pass {
    /// Lines handed out, and whether bytes are left for the next pass.
    Reading { items: usize, more: bool },
    /// Read to its end (an unterminated last line was handed out as rejected).
    Finished { items: usize },
    /// Not readable on: not the saved content, corrupt, or an early end that stopped
    /// growing.
    Failed { items: usize, why: String },
}

/// One compressed rotation being read from a saved position.
pub(super) struct Compressed {
    pub path: PathBuf,
    file: File,
    codec: Codec,
    decoder: Box<dyn Read + Send>,
    /// The original file's identity (see the module documentation).
    pub id: FileId,
    /// The saved position continued: lines are handed out from its offset, and its marker
    /// is checked against the bytes before it.
    start: Entry,
    /// Decompressed bytes taken from the decoder so far.
    pos: u64,
    /// Bytes before this are discarded, not fed (the saved offset; after an early end, what
    /// was already fed).
    skip_to: u64,
    /// Created at `start.offset`, once the marker matched.
    reader: Option<Reader>,
    /// The decompressed bytes from `recent_start` to `pos`: the bytes before the reader's
    /// offset, for the checkpoint's marker, and the ones before the saved offset (at most
    /// [`RECENT_MAX`]: while an oversize line is skipped the offset stays behind).
    recent: Vec<u8>,
    recent_start: u64,
    /// Unix time the file was last read (the checkpoint entry's `updated`).
    pub seen_unix: u64,
    /// The stream ended early or broke off: the file's size then, since when, and why.
    stalled: Option<(u64, Instant, String)>,
}

impl Compressed {
    /// Starts reading `file` (at `path`) from the saved position `start`.
    pub(super) fn new(
        file: File,
        path: PathBuf,
        codec: Codec,
        start: Entry,
        now_unix: u64,
    ) -> io::Result<Compressed> {
        let fp = start.fingerprint_bytes().unwrap_or_default();
        Ok(Compressed {
            codec,
            decoder: decoder(&file, codec)?,
            file,
            path,
            id: FileId::new(start.dev, start.inode, fp),
            pos: 0,
            skip_to: start.offset,
            start,
            reader: None,
            recent: Vec::new(),
            recent_start: 0,
            seen_unix: now_unix,
            stalled: None,
        })
    }

    /// Where it stands: the checkpoint entry for what was handed out so far.
    pub(super) fn entry(&self) -> Entry {
        // Under the name the globs selected it by (the saved one), not the archive's: what a
        // restart looks for it from, and what the config must still select for that.
        let mut e = self.start.clone();
        e.updated = self.seen_unix;
        if let Some(r) = &self.reader {
            e.offset = r.offset();
            match self.bytes_before(e.offset) {
                Some(b) => e.set_marker(b.len() as u32, &identity::marker_hash(b)),
                None => e.set_marker(0, &[0u8; 16]),
            }
        }
        e
    }

    /// The up to 64 decompressed bytes before `offset`, if still held.
    fn bytes_before(&self, offset: u64) -> Option<&[u8]> {
        let from = offset.saturating_sub(MARKER_MAX_BYTES);
        let end = self.recent_start + self.recent.len() as u64;
        if from < self.recent_start || offset > end {
            return None;
        }
        let a = (from - self.recent_start) as usize;
        Some(&self.recent[a..a + (offset - from) as usize])
    }

    fn remember(&mut self, data: &[u8], keep_from: u64) {
        self.recent.extend_from_slice(data);
        let mut drop = keep_from.saturating_sub(self.recent_start) as usize;
        if self.recent.len() - drop.min(self.recent.len()) > RECENT_MAX {
            // A checkpoint inside this line goes without a marker.
            drop = self.recent.len() - TAIL_KEEP;
        }
        let drop = drop.min(self.recent.len());
        self.recent.drain(..drop);
        self.recent_start += drop as u64;
    }

    /// Reads up to `budget` decompressed bytes, handing complete lines to `sink`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn service(
        &mut self,
        budget: usize,
        max_line: usize,
        rotate_wait: Duration,
        now_unix: u64,
        buf: &mut Vec<u8>,
        counters: &mut TailCounters,
        sink: &mut dyn FnMut(TailItem<'_>),
    ) -> Pass {
        let mut items = 0usize;
        if let Some((size, since, why)) = &self.stalled {
            let now_size = self.file.metadata().map_or(*size, |m| m.len());
            if now_size == *size {
                if since.elapsed() >= rotate_wait {
                    return Pass::Failed {
                        items,
                        why: format!("{why}, and the file stopped growing"),
                    };
                }
                return Pass::Reading { items, more: false };
            }
            // It grew: decompress it again from the start, up to where this one got.
            match decoder(&self.file, self.codec) {
                Ok(d) => self.decoder = d,
                Err(e) => {
                    return Pass::Failed {
                        items,
                        why: e.to_string(),
                    }
                }
            }
            if self.reader.is_some() {
                // What was fed already (its bytes are remembered).
                self.skip_to = self.pos;
            } else {
                // Still on the way to the saved offset: the remembered bytes are rebuilt.
                self.recent.clear();
                self.recent_start = 0;
            }
            self.pos = 0;
            self.stalled = None;
        }
        self.seen_unix = now_unix;
        let mut read = 0usize;
        while read < budget.max(1) {
            if self.pos == self.skip_to && self.reader.is_none() {
                // At the saved offset: the bytes before it must be the ones read.
                let offset = self.start.offset;
                let ok = self.start.marker_len == 0
                    || self.bytes_before(offset).is_some_and(|b| {
                        b.len() as u32 == self.start.marker_len
                            && Some(identity::marker_hash(b)) == self.start.marker_bytes()
                    });
                if !ok {
                    return Pass::Failed {
                        items,
                        why: "the bytes before the saved position differ".into(),
                    };
                }
                let mut r = Reader::new(offset);
                let keep = self.recent.len().min(TAIL_KEEP);
                r.seed_tail(&self.recent[self.recent.len() - keep..]);
                self.reader = Some(r);
            }
            let skipping = self.pos < self.skip_to;
            let mut want = CHUNK.min(budget.max(1) - read);
            if skipping {
                want = want.min((self.skip_to - self.pos) as usize);
            }
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = match self.decoder.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An early end (the compressor still writing) reads, depending on the format
                // and where the file ends, as an early EOF or as broken data: either way it
                // is read again if the file grows, and given up once it has not for
                // rotate_wait.
                Err(e) => {
                    let size = self.file.metadata().map_or(0, |m| m.len());
                    let why = if e.kind() == io::ErrorKind::UnexpectedEof {
                        "the compressed stream ends early".to_string()
                    } else {
                        format!("the compressed stream breaks off ({e})")
                    };
                    self.stalled = Some((size, Instant::now(), why));
                    return Pass::Reading { items, more: false };
                }
            };
            if n == 0 {
                if skipping || self.reader.is_none() {
                    return Pass::Failed {
                        items,
                        why: "it is shorter than the saved position".into(),
                    };
                }
                items += self.finish(counters, sink);
                return Pass::Finished { items };
            }
            read += n;
            self.pos += n as u64;
            let data = &buf[..n];
            if skipping {
                if self.reader.is_none() {
                    // Only what a marker and the reader's tail need.
                    let keep_from = self.pos.saturating_sub(TAIL_KEEP as u64);
                    self.remember(data, keep_from);
                }
                continue;
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            let (id, path) = (&self.id, self.path.as_path());
            reader.feed(data, max_line, &mut |offset, piece| {
                items += 1;
                emit(id, path, offset, piece, counters, sink);
            });
            let keep_from = reader.offset().saturating_sub(MARKER_MAX_BYTES);
            self.remember(data, keep_from);
        }
        Pass::Reading { items, more: true }
    }

    /// At the end of the stream: an unterminated last line is handed out as rejected.
    fn finish(&mut self, counters: &mut TailCounters, sink: &mut dyn FnMut(TailItem<'_>)) -> usize {
        let Some(reader) = self.reader.as_mut() else {
            return 0;
        };
        // A partial line, or an oversize one being skipped (its bytes are not kept).
        let Some((raw, len)) = reader.unterminated() else {
            return 0;
        };
        counters.rejected += 1;
        sink(TailItem::Rejected {
            file: &self.id,
            path: &self.path,
            offset: reader.offset(),
            reason: format!(
                "unterminated last line ({len} bytes, no newline) at the end of a compressed rotation"
            ),
            raw: &raw[..raw.len().min(RAW_CAP)],
            len: usize::try_from(len).unwrap_or(usize::MAX),
        });
        // The checkpoint then covers it: a restart does not hand it out again.
        let end = reader.read_pos();
        *reader = Reader::new(end);
        1
    }
}

#[cfg(test)]
pub(super) const CODECS: [Codec; 4] = [Codec::Gzip, Codec::Zstd, Codec::Xz, Codec::Bzip2];

#[cfg(test)]
/// `data` compressed as the format's own tool would (for tests).
pub(super) fn compress(data: &[u8], codec: Codec) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).expect("write");
            enc.finish().expect("finish")
        }
        Codec::Zstd => zstd::encode_all(data, 3).expect("zstd"),
        Codec::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(data).expect("write");
            enc.finish().expect("finish")
        }
        Codec::Bzip2 => {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            enc.write_all(data).expect("write");
            enc.finish().expect("finish")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_format_is_told_by_its_magic_bytes_and_its_first_line_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = b"first line\nsecond\n";
        let want = StreamFingerprint::default().feed(content).map(|f| f.hash);
        for codec in CODECS {
            // Named unlike its format: the bytes decide.
            let path = dir.path().join(format!("app.log.{codec:?}"));
            std::fs::write(&path, compress(content, codec)).expect("write");
            let file = File::open(&path).expect("open");
            assert_eq!(Codec::of(&file), Some(codec));
            assert_eq!(first_line_fingerprint(&file, codec), want, "{codec:?}");
        }
        let plain = dir.path().join("app.log.1");
        std::fs::write(&plain, content).expect("write");
        assert_eq!(Codec::of(&File::open(&plain).expect("open")), None);
    }

    fn lines_of(gz: &mut Compressed, counters: &mut TailCounters) -> (Vec<(u64, String)>, bool) {
        let mut got = Vec::new();
        let pass = gz.service(
            1 << 20,
            4096,
            Duration::from_secs(3600),
            0,
            &mut Vec::new(),
            counters,
            &mut |item| {
                if let TailItem::Line { offset, bytes, .. } = item {
                    got.push((offset, String::from_utf8_lossy(bytes).into_owned()));
                }
            },
        );
        let finished = match pass {
            Pass::Reading { .. } => false,
            Pass::Finished { .. } => true,
            Pass::Failed { why, .. } => panic!("failed: {why}"),
        };
        (got, finished)
    }

    #[test]
    fn a_compressed_file_still_being_written_is_read_on_once_it_grows() {
        for codec in CODECS {
            read_on_once_it_grows(codec);
        }
    }

    fn read_on_once_it_grows(codec: Codec) {
        let content: String = (0..20000).map(|i| format!("line number {i}\n")).collect();
        let bytes = content.as_bytes();
        let whole = compress(bytes, codec);
        // Saved near the start (the early end comes while lines are handed out), and far
        // into it (the early end comes while skipping to the saved position).
        for saved_line in [1usize, 15000] {
            let offset = content
                .match_indices('\n')
                .nth(saved_line - 1)
                .expect("line")
                .0 as u64
                + 1;
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("app.log.1.gz");
            // Half of the compressed bytes: the compressor is still writing.
            std::fs::write(&path, &whole[..whole.len() / 2]).expect("write");
            let mut start = Entry {
                dev: 1,
                inode: 2,
                fingerprint: "00".repeat(16),
                path: path.to_string_lossy().into_owned(),
                offset,
                updated: 0,
                marker: String::new(),
                marker_len: 0,
                awaiting_first_line: false,
                finished: false,
                fragment: None,
            };
            let before = &bytes[(offset as usize).saturating_sub(64)..offset as usize];
            start.set_marker(before.len() as u32, &identity::marker_hash(before));
            let file = File::open(&path).expect("open");
            let mut gz = Compressed::new(file, path.clone(), codec, start, 0).expect("reader");
            let mut counters = TailCounters::default();
            let (first, finished) = lines_of(&mut gz, &mut counters);
            assert!(!finished);
            // Unchanged: nothing more, not failed.
            let (none, finished) = lines_of(&mut gz, &mut counters);
            assert!(none.is_empty() && !finished);
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open")
                .write_all(&whole[whole.len() / 2..])
                .expect("append");
            let (rest, finished) = lines_of(&mut gz, &mut counters);
            assert!(finished, "{codec:?} saved at line {saved_line}");
            let all: Vec<(u64, String)> = first.into_iter().chain(rest).collect();
            let mut want = Vec::new();
            let mut off = 0u64;
            for i in 0..20000 {
                let l = format!("line number {i}");
                if i >= saved_line {
                    want.push((off, l.clone()));
                }
                off += l.len() as u64 + 1;
            }
            assert_eq!(all, want, "{codec:?} saved at line {saved_line}");
            // The checkpoint at the end has the marker of the real bytes before it.
            let e = gz.entry();
            assert_eq!(e.offset, bytes.len() as u64);
            let tail = &bytes[bytes.len() - 64..];
            assert_eq!(e.marker_bytes(), Some(identity::marker_hash(tail)));
        }
    }
}
