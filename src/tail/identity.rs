//! File identity: which physical file (and which generation of its content) a handle refers to.
//!
//! A file is identified by `dev` + `inode` + a content **fingerprint**. The inode alone is not
//! enough (ext4 and tmpfs reuse inode numbers right after a delete, and copytruncate keeps the
//! inode while replacing the content); the content alone is not enough either (many files
//! start with the same header line, Vector #5833). The path plays no part, so a renamed file
//! keeps its identity and a rotated name that still matches the glob is not read twice.
//!
//! ## Fingerprint scheme
//!
//! The fingerprint is a SHA-256 (truncated to 128 bits) over the file's *first line*:
//!
//! * leading NUL bytes (the hole a stale copytruncate writer leaves) are not hashed byte by
//!   byte; their count is hashed instead, so a 100 MiB hole costs one scan, not a huge window;
//! * the window then runs from the first non-NUL byte up to and including the first `\n`,
//!   capped at [`FP_MAX_BYTES`] (1 KiB, Filebeat's and Alloy's window size) for files whose
//!   first line is longer than that.
//!
//! A file whose window is not complete yet (empty, only NULs, or a first line still being
//! written and shorter than 1 KiB) has no fingerprint *yet*. That costs nothing: such a file
//! has no complete line, and the tailer emits only complete lines, so identity is needed only
//! once the window is complete. This handles small files (unlike Filebeat's 1024-byte
//! minimum) and growing files (the window never changes once complete, so the id is stable
//! and can be used in example ids, unlike a fingerprint over "the first N bytes so far").
//! The window does not depend on any setting (Vector #15700: changing `max_line_bytes` must
//! not change every fingerprint).
//!
//! A **marker** (hash of up to 64 bytes just before a saved offset, after Fluent Bit's offset
//! marker) is stored with each checkpoint so a resume can check that the bytes before the
//! saved offset are still the bytes that were read, which catches truncate-and-rewrite with an
//! identical first line (Vector #23619).

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The first line is hashed up to this many bytes.
pub const FP_MAX_BYTES: usize = 1024;
/// A checkpoint marker covers at most this many bytes before the saved offset.
pub const MARKER_MAX_BYTES: u64 = 64;

/// Stable identity of one file generation: device, inode and first-line fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    dev: u64,
    inode: u64,
    fingerprint: [u8; 16],
}

impl FileId {
    /// Builds an id from its parts (used by the checkpoint loader and by tests).
    pub fn new(dev: u64, inode: u64, fingerprint: [u8; 16]) -> FileId {
        FileId {
            dev,
            inode,
            fingerprint,
        }
    }

    /// Device number of the file system holding the file.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// Inode number.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Raw fingerprint bytes.
    pub fn fingerprint(&self) -> [u8; 16] {
        self.fingerprint
    }

    /// The fingerprint as 32 lowercase hex digits. Same before and after a rename and across
    /// restarts; differs for a new file at the same path even if the inode is reused.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.dev, self.inode, self.fingerprint_hex())
    }
}

/// A computed fingerprint plus where its window lies, so it can be re-verified cheaply
/// (without rescanning the NUL run) while the file is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: [u8; 16],
    /// Number of leading NUL bytes before the window.
    pub nul_count: u64,
    /// Length of the hashed window (first line incl. `\n`, or `FP_MAX_BYTES`).
    pub window_len: u64,
}

fn hash_window(nul_count: u64, window: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"training-collector-fp-v1\0");
    h.update(nul_count.to_le_bytes());
    h.update(window);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Reads exactly `buf.len()` bytes at `pos`, or fewer at end of file. Returns the count.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Where the first non-NUL byte among the first `size` bytes of `file` is (`None`: there is
/// none), i.e. the length of the hole a stale copytruncate writer leaves.
pub fn leading_nuls(file: &File, size: u64) -> io::Result<Option<u64>> {
    // A small buffer for small files: this runs for every new file.
    let mut buf = vec![0u8; size.min(64 * 1024) as usize];
    let mut pos = 0u64;
    loop {
        if pos >= size {
            return Ok(None);
        }
        let want = buf.len().min((size - pos) as usize);
        let n = read_full_at(file, &mut buf[..want], pos)?;
        if n == 0 {
            return Ok(None);
        }
        match buf[..n].iter().position(|&b| b != 0) {
            Some(i) => return Ok(Some(pos + i as u64)),
            None => pos += n as u64,
        }
    }
}

/// Computes the fingerprint of `file` considering only its first `size` bytes.
/// `Ok(None)` means the window is not complete yet (see the module doc).
pub fn compute(file: &File, size: u64) -> io::Result<Option<Fingerprint>> {
    let Some(nul_count) = leading_nuls(file, size)? else {
        return Ok(None);
    };
    let avail = (size - nul_count).min(FP_MAX_BYTES as u64) as usize;
    let mut window = vec![0u8; avail];
    let n = read_full_at(file, &mut window, nul_count)?;
    Ok(of_window(nul_count, &window[..n]))
}

/// The fingerprint of content that starts with `nul_count` NUL bytes followed by `window`
/// (the bytes after them, at most [`FP_MAX_BYTES`] of them), if the window is complete.
fn of_window(nul_count: u64, window: &[u8]) -> Option<Fingerprint> {
    let window_len = match memchr::memchr(b'\n', window) {
        Some(i) => i + 1,
        None if window.len() >= FP_MAX_BYTES => FP_MAX_BYTES,
        None => return None,
    };
    Some(Fingerprint {
        hash: hash_window(nul_count, &window[..window_len]),
        nul_count,
        window_len: window_len as u64,
    })
}

/// The fingerprint of content read as a stream from its start (a compressed file's
/// decompressed bytes, which cannot be read at an offset): the same value [`compute`] gives
/// the same bytes in a file.
#[derive(Debug, Default)]
pub struct StreamFingerprint {
    nul_count: u64,
    window: Vec<u8>,
}

impl StreamFingerprint {
    /// Feeds the next bytes of the content; the fingerprint once its window is complete.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<Fingerprint> {
        if self.window.is_empty() {
            let nuls = data.iter().take_while(|&&b| b == 0).count();
            self.nul_count += nuls as u64;
            data = &data[nuls..];
        }
        let take = data.len().min(FP_MAX_BYTES - self.window.len());
        self.window.extend_from_slice(&data[..take]);
        of_window(self.nul_count, &self.window)
    }
}

/// Checks that the window recorded in `fp` still hashes to the same value (cheap: one read
/// of at most 1 KiB plus one byte). Used while a file is open to notice a rewrite.
pub fn still_matches(file: &File, size: u64, fp: &Fingerprint) -> io::Result<bool> {
    let end = fp.nul_count + fp.window_len;
    if size < end {
        return Ok(false);
    }
    if fp.nul_count > 0 {
        let mut b = [0u8; 1];
        if read_full_at(file, &mut b, fp.nul_count - 1)? != 1 || b[0] != 0 {
            return Ok(false);
        }
    }
    let mut window = vec![0u8; fp.window_len as usize];
    if read_full_at(file, &mut window, fp.nul_count)? != window.len() {
        return Ok(false);
    }
    if window.first() == Some(&0) {
        return Ok(false);
    }
    Ok(hash_window(fp.nul_count, &window) == fp.hash)
}

/// The marker for a saved `offset`: (length, hash) of the up to 64 bytes before it.
/// `None` when those bytes cannot be read in full (the file shrank).
pub fn marker(file: &File, offset: u64) -> io::Result<Option<(u32, [u8; 16])>> {
    let len = offset.min(MARKER_MAX_BYTES);
    if len == 0 {
        return Ok(Some((0, [0u8; 16])));
    }
    let mut buf = vec![0u8; len as usize];
    if read_full_at(file, &mut buf, offset - len)? != buf.len() {
        return Ok(None);
    }
    Ok(Some((len as u32, marker_hash(&buf))))
}

/// Hash of the bytes before a saved offset (see [`marker`]).
pub fn marker_hash(bytes: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"training-collector-marker-v1\0");
    h.update(bytes);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Lowercase hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Parses 32 hex digits into 16 bytes.
pub fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(content).expect("write");
        (f, content.len() as u64)
    }

    #[test]
    fn fingerprint_needs_a_complete_first_line() {
        let (f, n) = file_with(b"");
        assert_eq!(compute(f.as_file(), n).expect("io"), None);
        let (f, n) = file_with(b"partial");
        assert_eq!(compute(f.as_file(), n).expect("io"), None);
        let (f, n) = file_with(b"\0\0\0\0");
        assert_eq!(compute(f.as_file(), n).expect("io"), None);
        let (f, n) = file_with(b"one\n");
        let fp = compute(f.as_file(), n).expect("io").expect("complete");
        assert_eq!(fp.window_len, 4);
    }

    #[test]
    fn fingerprint_is_stable_while_the_file_grows() {
        let (f, n) = file_with(b"first line\nsecond");
        let a = compute(f.as_file(), n).expect("io").expect("fp");
        let (g, m) = file_with(b"first line\nsecond line\nthird\n");
        let b = compute(g.as_file(), m).expect("io").expect("fp");
        assert_eq!(a, b);
        assert!(still_matches(g.as_file(), m, &a).expect("io"));
        let (h, k) = file_with(b"other line\n");
        assert!(!still_matches(h.as_file(), k, &a).expect("io"));
    }

    #[test]
    fn long_first_line_uses_capped_window_and_nul_run_is_counted() {
        let long = vec![b'x'; FP_MAX_BYTES + 10];
        let (f, n) = file_with(&long);
        let fp = compute(f.as_file(), n).expect("io").expect("fp");
        assert_eq!(fp.window_len, FP_MAX_BYTES as u64);
        let (a, an) = file_with(b"\0\0line\n");
        let (b, bn) = file_with(b"\0\0\0line\n");
        let fa = compute(a.as_file(), an).expect("io").expect("fp");
        let fb = compute(b.as_file(), bn).expect("io").expect("fp");
        assert_eq!(fa.nul_count, 2);
        assert_ne!(fa.hash, fb.hash);
    }

    #[test]
    fn a_stream_gets_the_fingerprint_a_file_with_its_bytes_gets() {
        let long = vec![b'y'; FP_MAX_BYTES + 5];
        let contents: [&[u8]; 4] = [
            b"first line\nsecond\n",
            b"\0\0\0after a hole\nx",
            &long,
            b"no newline yet",
        ];
        for content in contents {
            let (f, n) = file_with(content);
            let want = compute(f.as_file(), n).expect("io");
            // Fed one byte at a time: pieces may split the NUL run and the window anywhere.
            let mut s = StreamFingerprint::default();
            let mut got = None;
            for b in content {
                got = got.or(s.feed(std::slice::from_ref(b)));
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(content));
        }
    }

    #[test]
    fn hex_round_trip() {
        let v: [u8; 16] = [0, 1, 2, 0xab, 0xff, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0x10];
        assert_eq!(parse_hex16(&hex(&v)), Some(v));
        assert_eq!(parse_hex16("zz"), None);
    }
}
