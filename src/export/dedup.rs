//! Deduplication helpers: the prompt normalisation shared by exact dedup and the split, and
//! MinHash signatures with LSH banding for near duplicates.
//!
//! Near duplicates: a text (prompt and answer together, so two different calculations that
//! share a long template are not merged just because their questions look alike) is cut into
//! 5-word shingles of its lowercased alphanumeric words (a text of fewer than 5 words is one
//! shingle). Its signature is the minimum of `bands x rows` seeded 16-bit hashes over those
//! shingles (see [`Lanes`] for what 16 bits cost).
//! Two texts whose signatures agree on every row of at least one band are near duplicates: for
//! Jaccard similarity `s` that happens with probability `1 - (1 - s^rows)^bands`, an S-curve
//! whose midpoint is about `(1/bands)^(1/rows)`. [`lsh_params`] picks `bands` and `rows` (at
//! most 128 hashes) whose midpoint is closest to the configured threshold; the default 0.8 gives
//! 11 bands x 11 rows (midpoint 0.804: a pair at 0.9 is caught with probability 0.98, a pair at
//! 0.6 with 0.04). Like datatrove, bucket collisions are not re-verified against the signatures.

use sha2::{Digest, Sha256};

/// Default Jaccard threshold for near duplicates.
pub const DEFAULT_NEAR_DUP_THRESHOLD: f64 = 0.8;
/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;
/// At most this many hash functions.
pub const MAX_HASHES: usize = 128;
/// Only the first words of very long texts are shingled: enough to tell texts apart, and it
/// bounds the cost of one signature.
const MAX_WORDS: usize = 4096;

/// Lowercase, whitespace collapsed to single spaces, trimmed.
pub fn normalize(s: &str) -> String {
    let mut out = String::new();
    normalize_into(s, &mut out);
    out
}

/// [`normalize`] into a reused buffer (cleared first): export normalizes every prompt and
/// response, and the allocation showed in its profile.
pub fn normalize_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        let mut v = std::mem::take(out).into_bytes();
        normalize_ascii(s.as_bytes(), &mut v);
        // Only ASCII bytes were written.
        *out = String::from_utf8(v).unwrap_or_default();
        return;
    }
    out.reserve(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        // Most text is ASCII; its fast path avoids the per-char Unicode tables.
        if w.is_ascii() {
            out.extend(w.bytes().map(|b| b.to_ascii_lowercase() as char));
        } else {
            out.extend(w.chars().flat_map(char::to_lowercase));
        }
    }
}

/// The ASCII case. Most texts have single spaces between words and nothing else blank, and
/// are only lowercased, in a loop the compiler vectorizes. Otherwise every byte is written (a
/// blank as a space) and the write position advances unless it is a blank after a blank;
/// blanks at the start count as following one, and a blank left at the end is cut.
fn normalize_ascii(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    // The ASCII chars `char::is_whitespace` accepts: \t \n \x0b \x0c \r and space.
    let other_blank = s
        .iter()
        .fold(false, |acc, &b| acc | (b.wrapping_sub(b'\t') < 5));
    // Two spaces in a row, as a fold the compiler vectorizes (`memmem::find` built a searcher
    // per call, a seventieth of the reading threads' time).
    let double_space = s
        .iter()
        .zip(s.get(1..).unwrap_or_default())
        .fold(false, |acc, (&a, &b)| acc | ((a == b' ') & (b == b' ')));
    let simple =
        !other_blank && s.first() != Some(&b' ') && s.last() != Some(&b' ') && !double_space;
    if simple {
        out.extend(
            s.iter()
                .map(|&b| b | (((b.wrapping_sub(b'A') < 26) as u8) << 5)),
        );
        return;
    }
    out.resize(s.len(), 0);
    let mut j = 0;
    let mut prev_blank = true;
    for &b in s {
        let blank = matches!(b, b'\t'..=b'\r' | b' ');
        // j never passes the read position, so it is in bounds.
        out[j] = if blank { b' ' } else { b.to_ascii_lowercase() };
        j += (!(blank && prev_blank)) as usize;
        prev_blank = blank;
    }
    if prev_blank && j > 0 {
        j -= 1;
    }
    out.truncate(j);
}

/// A 128-bit grouping key for a normalized text (XXH3-128). Export only compares these keys
/// for equality (exact dedup, joins); a collision needs about 2^64 distinct texts.
pub fn fast_key128(normalized: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(normalized.as_bytes())
}

/// A 128-bit key for a normalized text (first half of its SHA-256).
pub fn key128(normalized: &str) -> u128 {
    let d = Sha256::digest(normalized.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// Bands and rows for a Jaccard threshold in (0, 1]: among the splits of at most
/// [`MAX_HASHES`] hashes whose midpoint `(1/bands)^(1/rows)` is within 0.01 of the threshold,
/// the one with the most hashes (the steepest curve); if none is that close, the closest.
pub fn lsh_params(threshold: f64) -> (usize, usize) {
    let mut all = Vec::new();
    for rows in 1..=MAX_HASHES {
        for bands in 1..=MAX_HASHES / rows {
            let mid = (1.0 / bands as f64).powf(1.0 / rows as f64);
            all.push(((mid - threshold).abs(), bands, rows));
        }
    }
    let close = all
        .iter()
        .filter(|(err, _, _)| *err <= 0.01)
        .max_by(|a, b| (a.1 * a.2).cmp(&(b.1 * b.2)).then(b.0.total_cmp(&a.0)));
    let pick = close.or_else(|| all.iter().min_by(|a, b| a.0.total_cmp(&b.0)));
    pick.map_or((1, MAX_HASHES), |&(_, b, r)| (b, r))
}

/// splitmix64 finaliser: a cheap, well-mixed 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The word hash's constants, shared by every variant of it below (scalar, branch-free, AVX2,
/// AVX-512), which must agree to the bit: the multiplier per 8-byte chunk, the length's
/// multiplier (the seed), and the bits that lowercase ASCII letters (and leave digits).
const WORD_K: u64 = 0x9fb2_1c65_1e98_df25;
const WORD_LEN_K: u64 = 0x6a09_e667_f3bc_c909;
const LOWERCASE: u64 = 0x2020_2020_2020_2020;

/// A word's hash: its bytes eight at a time, one multiply and rotation each. Not mixed at the
/// end: [`shingle_hash`] mixes, and among the words of one length up to 8 bytes the hash is
/// one to one (an odd multiply and a rotation are bijections), so those never collide.
/// (Byte-at-a-time FNV was a tenth of export's time; a final mix per word, a tenth of a
/// signature's.)
fn hash_bytes(b: &[u8]) -> u64 {
    hash_span(b, 0, b.len(), 0)
}

/// [`hash_bytes`] of `text[start..end]` lowercased, for words of ASCII letters and digits
/// only: setting bit 5 of every byte lowercases the letters and leaves the digits as they are.
fn hash_lower_ascii(text: &[u8], start: usize, end: usize) -> u64 {
    hash_span(text, start, end, LOWERCASE)
}

/// [`hash_bytes`] of `text[start..end]` with `or` applied to every byte. The last partial
/// chunk is read as 8 bytes of `text` and masked when `text` goes on that far, which avoids
/// a variable-length copy per word.
#[inline(always)]
fn hash_span(text: &[u8], start: usize, end: usize, or: u64) -> u64 {
    let step = |h: u64, v: u64| (h ^ v).wrapping_mul(WORD_K).rotate_left(29);
    // The length goes in first, so zero padding cannot make two words alike.
    let mut h = ((end - start) as u64).wrapping_mul(WORD_LEN_K);
    let (chunks, rest) = text[start..end].as_chunks::<8>();
    for c in chunks {
        h = step(h, u64::from_le_bytes(*c) | or);
    }
    if !rest.is_empty() {
        let from = end - rest.len();
        let mask = u64::MAX >> (8 * (8 - rest.len()));
        let v = match text[from..].first_chunk::<8>() {
            Some(c) => u64::from_le_bytes(*c) & mask,
            None => rest
                .iter()
                .enumerate()
                .fold(0u64, |v, (i, &c)| v | (c as u64) << (8 * i)),
        };
        h = step(h, v | (or & mask));
    }
    h
}

/// [`hash_lower_ascii`] with a branch-free path for the words of at most 8 bytes that are not
/// at the very end of the text (most words): one load, masked to the word. Word lengths vary
/// at random, and the general loop's length-dependent branches were mispredicted.
#[inline(always)]
fn hash_word(text: &[u8], start: usize, end: usize) -> u64 {
    let len = end - start;
    if let Some(chunk) = text[start..].first_chunk::<8>().filter(|_| len <= 8) {
        // `len` is 1..=8 here, so the shift is 0..=56.
        let mask = u64::MAX >> (8 * (8 - len));
        let v = (u64::from_le_bytes(*chunk) | LOWERCASE) & mask;
        let h = (len as u64).wrapping_mul(WORD_LEN_K);
        return (h ^ v).wrapping_mul(WORD_K).rotate_left(29);
    }
    hash_lower_ascii(text, start, end)
}

/// Appends the hashes of the first `room` words (runs of ASCII letters and digits) of `b`.
/// Word boundaries come from a bit mask per 64 bytes (a vectorized loop, or two compares into
/// mask registers with AVX-512); starts and ends are collected first (with AVX-512, 16 bits at
/// a time by compressing lane numbers, without a branch per word) and hashed after, in a loop
/// without data-dependent branches, so the hashes of consecutive words overlap in the pipeline
/// (hashed as they were found, every word's hash waited on a mispredicted branch).
fn ascii_words(b: &[u8], room: usize, out: &mut Vec<u64>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("bmi1")
    {
        // SAFETY: the CPU was just checked to support the enabled target features.
        unsafe { ascii_words_avx512(b, room, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("bmi1")
    {
        // SAFETY: the CPU was just checked to support the enabled target features.
        unsafe { ascii_words_avx2(b, room, out) };
        return;
    }
    ascii_words_generic(
        b,
        room,
        out,
        word_mask,
        bit_positions_by_eight,
        hash_words_two_chunks,
    )
}

/// [`ascii_words_generic`] with AVX2 (where there is no AVX-512, as on some of the machines
/// this runs on): the 64-byte mask is two compares per half and a byte-mask move (the
/// generic loop, even compiled for AVX2, built it from 64 shifted lanes: a fifth of the
/// word finding), positions eight bits at a time without a branch per bit, and words hashed
/// four at a time ([`hash_words_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1")]
unsafe fn ascii_words_avx2(b: &[u8], room: usize, out: &mut Vec<u64>) {
    ascii_words_generic(
        b,
        room,
        out,
        // SAFETY (both): this function only runs where AVX2 is supported.
        |block| unsafe { word_mask_avx2(block) },
        bit_positions_by_eight,
        |b, starts, ends, take, out| unsafe { hash_words_avx2(b, starts, ends, take, out) },
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,popcnt,bmi1")]
unsafe fn ascii_words_avx512(b: &[u8], room: usize, out: &mut Vec<u64>) {
    ascii_words_generic(
        b,
        room,
        out,
        // SAFETY (all three): this function only runs where AVX-512F, BW and DQ are supported.
        |block| unsafe { word_mask_avx512(block) },
        |bits, base, out| unsafe { bit_positions_avx512(bits, base, out) },
        |b, starts, ends, take, out| unsafe { hash_words_avx512(b, starts, ends, take, out) },
    )
}

/// Bit i: byte i of `block` (at most 64 bytes) is an ASCII letter or digit.
#[inline(always)]
fn word_mask(block: &[u8]) -> u64 {
    let mut mask = 0u64;
    for (i, &c) in block.iter().enumerate() {
        let alnum = c.wrapping_sub(b'0') < 10 || (c | 0x20).wrapping_sub(b'a') < 26;
        mask |= (alnum as u64) << i;
    }
    mask
}

/// [`word_mask`] with AVX2: per 32-byte half, `c - '0' <= 9` and `(c | 0x20) - 'a' <= 25` as
/// unsigned byte compares (a minimum and an equality: AVX2 has no unsigned compare) and one
/// byte-mask move. A short last block is copied into a zeroed one first (zeros are neither
/// letters nor digits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn word_mask_avx2(block: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let mut padded = [0u8; 64];
    let full: &[u8] = if block.len() >= 64 {
        block
    } else {
        padded[..block.len()].copy_from_slice(block);
        &padded
    };
    let half = |at: usize| -> u64 {
        // SAFETY: `full` holds at least 64 bytes, and `at` is 0 or 32.
        let v = unsafe { _mm256_loadu_si256(full.as_ptr().add(at).cast()) };
        let at_most =
            |x: __m256i, max: i8| _mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(max)), x);
        let digit = at_most(_mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8)), 9);
        let lower = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
        let alpha = at_most(_mm256_sub_epi8(lower, _mm256_set1_epi8(b'a' as i8)), 25);
        _mm256_movemask_epi8(_mm256_or_si256(digit, alpha)) as u32 as u64
    };
    half(0) | half(32) << 32
}

/// [`word_mask`] as two byte compares into mask registers (the loop above, even compiled for
/// AVX-512, built the mask from 64 shifted lanes and reduced them: a fifth of the MinHash).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn word_mask_avx512(block: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    // A short last block is loaded under a mask: the bytes past it read as zeros, which are
    // neither letters nor digits.
    let load = if block.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << block.len()) - 1
    };
    // SAFETY: the masked load touches only the `block.len()` bytes of `block`.
    let v = unsafe { _mm512_maskz_loadu_epi8(load, block.as_ptr().cast()) };
    let digit = _mm512_cmplt_epu8_mask(
        _mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8)),
        _mm512_set1_epi8(10),
    );
    let lower = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
    let alpha = _mm512_cmplt_epu8_mask(
        _mm512_sub_epi8(lower, _mm512_set1_epi8(b'a' as i8)),
        _mm512_set1_epi8(26),
    );
    digit | alpha
}

/// Room the position lists need: 64 bits and the 16 lanes a compressed store may write past.
const POSITIONS: usize = 64 + 16;

type Positions = [u32; POSITIONS];

/// Appends the [`hash_word`]s of the first `take` (start, end) pairs: the plain form, the
/// tests' reference for the others.
#[cfg(test)]
fn hash_words(b: &[u8], starts: &Positions, ends: &Positions, take: usize, out: &mut Vec<u64>) {
    out.extend((0..take).map(|k| hash_word(b, starts[k] as usize, ends[k] as usize)));
}

/// [`hash_words`] without a branch on the word's length for words of up to 16 bytes: both
/// 8-byte chunks are loaded and masked, and the hash of one or of both chunks is picked (as
/// [`hash_words_avx512`] does per lane). Longer words, and words whose second chunk would
/// reach past the text, take [`hash_word`].
#[inline(always)]
fn hash_words_two_chunks(
    b: &[u8],
    starts: &Positions,
    ends: &Positions,
    take: usize,
    out: &mut Vec<u64>,
) {
    let step = |h: u64, v: u64| (h ^ v).wrapping_mul(WORD_K).rotate_left(29);
    out.extend((0..take).map(|k| {
        let (start, end) = (starts[k] as usize, ends[k] as usize);
        let len = end - start;
        match b.get(start..start + 16) {
            Some(chunks) if len <= 16 => {
                let (c0, c1) = chunks.split_at(8);
                let c0 = u64::from_le_bytes(c0.try_into().expect("8 bytes"));
                let c1 = u64::from_le_bytes(c1.try_into().expect("8 bytes"));
                // Bytes of each chunk in the word (the second chunk's mask is only used when
                // the word is longer than 8 bytes, so its shift stays below 64 there).
                let m0 = u64::MAX >> (8 * (8 - len.min(8)));
                let m1 = u64::MAX >> ((8 * (16 - len)) & 63);
                let h1 = step((len as u64).wrapping_mul(WORD_LEN_K), (c0 | LOWERCASE) & m0);
                let h2 = step(h1, (c1 | LOWERCASE) & m1);
                if len > 8 {
                    h2
                } else {
                    h1
                }
            }
            _ => hash_word(b, start, end),
        }
    }));
}

/// [`hash_words`] four words at a time with AVX2, as [`hash_words_avx512`] does eight: each
/// word's two 8-byte chunks loaded, masked to its length and folded in, for words of at most
/// 16 bytes (longer ones are hashed again one by one; words whose chunks would reach past the
/// text go one by one). AVX2 has no 64-bit multiply, so each one is three 32-bit ones; still
/// about half the instructions of a word hashed on its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hash_words_avx2(
    b: &[u8],
    starts: &Positions,
    ends: &Positions,
    take: usize,
    out: &mut Vec<u64>,
) {
    use std::arch::x86_64::*;
    // `a * k` mod 2^64 from 32-bit halves: lo*lo + ((hi*lo + lo*hi) << 32).
    let mul = |a: __m256i, k: u64| {
        let k_lo = _mm256_set1_epi64x((k & 0xffff_ffff) as i64);
        let k_hi = _mm256_set1_epi64x((k >> 32) as i64);
        let cross = _mm256_add_epi64(
            _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), k_lo),
            _mm256_mul_epu32(a, k_hi),
        );
        _mm256_add_epi64(_mm256_mul_epu32(a, k_lo), _mm256_slli_epi64::<32>(cross))
    };
    let step = |h: __m256i, v: __m256i| {
        let x = mul(_mm256_xor_si256(h, v), WORD_K);
        _mm256_or_si256(_mm256_slli_epi64::<29>(x), _mm256_srli_epi64::<35>(x))
    };
    let or = _mm256_set1_epi64x(LOWERCASE as i64);
    let ones = _mm256_set1_epi64x(-1);
    let chunk = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes")) as i64;
    out.reserve(take);
    let mut k = 0;
    // Every lane reads 16 bytes from its start; starts ascend, so the last lane's bounds it.
    while k + 4 <= take && starts[k + 3] as usize + 16 <= b.len() {
        let s: [usize; 4] = std::array::from_fn(|i| starts[k + i] as usize);
        let c0 = _mm256_setr_epi64x(chunk(s[0]), chunk(s[1]), chunk(s[2]), chunk(s[3]));
        let c1 = _mm256_setr_epi64x(
            chunk(s[0] + 8),
            chunk(s[1] + 8),
            chunk(s[2] + 8),
            chunk(s[3] + 8),
        );
        // SAFETY: `k + 4 <= take <= POSITIONS` keeps both 4-lane loads in the arrays.
        let st = unsafe { _mm_loadu_si128(starts.as_ptr().add(k).cast()) };
        let en = unsafe { _mm_loadu_si128(ends.as_ptr().add(k).cast()) };
        let len32 = _mm_sub_epi32(en, st);
        let len = _mm256_cvtepu32_epi64(len32);
        // Bits of each chunk outside the word, shifted off the top: 64 - 8 * len and
        // 128 - 8 * len, at least 0 (lanes of at most 8 bytes use only the first chunk,
        // lanes past 16 bytes are hashed again below).
        let len8 = _mm_slli_epi32::<3>(len32);
        let zero = _mm_setzero_si128();
        let cut0 = _mm_max_epi32(_mm_sub_epi32(_mm_set1_epi32(64), len8), zero);
        let cut1 = _mm_max_epi32(_mm_sub_epi32(_mm_set1_epi32(128), len8), zero);
        let m0 = _mm256_srlv_epi64(ones, _mm256_cvtepu32_epi64(cut0));
        let m1 = _mm256_srlv_epi64(ones, _mm256_cvtepu32_epi64(cut1));
        let h0 = mul(len, WORD_LEN_K);
        let h1 = step(h0, _mm256_and_si256(_mm256_or_si256(c0, or), m0));
        let h2 = step(h1, _mm256_and_si256(_mm256_or_si256(c1, or), m1));
        let two_chunks = _mm256_cmpgt_epi64(len, _mm256_set1_epi64x(8));
        let h = _mm256_blendv_epi8(h1, h2, two_chunks);
        let at = out.len();
        // SAFETY: room for `take` more was reserved, and at most `take` are written.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), h);
            out.set_len(at + 4);
        }
        let long = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(
            len,
            _mm256_set1_epi64x(16),
        )));
        for i in 0..4 {
            if long & (1 << i) != 0 {
                out[at + i] = hash_lower_ascii(b, s[i], ends[k + i] as usize);
            }
        }
        k += 4;
    }
    out.extend((k..take).map(|k| hash_word(b, starts[k] as usize, ends[k] as usize)));
}

/// [`hash_words`] eight words at a time: each word's first two 8-byte chunks gathered, masked
/// to its length and folded in, for words of at most 16 bytes (long words are hashed again
/// one by one, and words whose chunks would reach past the text go one by one). Hashed one by
/// one, a word cost a load whose address waited on its start and a branch on its length,
/// mispredicted for the words longer than 8 bytes (one in thirteen in the generated logs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn hash_words_avx512(
    b: &[u8],
    starts: &Positions,
    ends: &Positions,
    take: usize,
    out: &mut Vec<u64>,
) {
    use std::arch::x86_64::*;
    const K: i64 = WORD_K as i64;
    const LEN_K: i64 = WORD_LEN_K as i64;
    let or = _mm512_set1_epi64(LOWERCASE as i64);
    let ones = _mm512_set1_epi64(-1);
    let step = |h: __m512i, v: __m512i| {
        _mm512_rol_epi64::<29>(_mm512_mullo_epi64(
            _mm512_xor_si512(h, v),
            _mm512_set1_epi64(K),
        ))
    };
    out.reserve(take);
    let mut k = 0;
    // Gather offsets are signed 32-bit: longer texts take the scalar path.
    let gatherable = i32::try_from(b.len()).is_ok();
    // Every lane reads 16 bytes from its start; starts ascend, so the last lane's bounds it.
    while gatherable && k + 8 <= take && starts[k + 7] as usize + 16 <= b.len() {
        // SAFETY: `k + 8 <= take <= POSITIONS` keeps both 8-lane loads in the arrays.
        let s = unsafe { _mm256_loadu_si256(starts.as_ptr().add(k).cast()) };
        let e = unsafe { _mm256_loadu_si256(ends.as_ptr().add(k).cast()) };
        let len = _mm512_cvtepu32_epi64(_mm256_sub_epi32(e, s));
        // SAFETY: each lane reads bytes start..start + 16, within `b` (checked above).
        let c0 = unsafe { _mm512_i32gather_epi64::<1>(s, b.as_ptr().cast()) };
        let s8 = _mm256_add_epi32(s, _mm256_set1_epi32(8));
        let c1 = unsafe { _mm512_i32gather_epi64::<1>(s8, b.as_ptr().cast()) };
        // The bytes of each chunk in the word: 8 * (8 - len) and 8 * (16 - len) bits shifted
        // off the top, none when the word fills the chunk (lanes past 16 bytes are hashed
        // again below).
        let eight = _mm512_set1_epi64(8);
        let sixteen = _mm512_set1_epi64(16);
        let m0 = _mm512_srlv_epi64(
            ones,
            _mm512_slli_epi64::<3>(_mm512_sub_epi64(eight, _mm512_min_epu64(len, eight))),
        );
        let m1 = _mm512_srlv_epi64(
            ones,
            _mm512_slli_epi64::<3>(_mm512_sub_epi64(sixteen, _mm512_min_epu64(len, sixteen))),
        );
        let h0 = _mm512_mullo_epi64(len, _mm512_set1_epi64(LEN_K));
        let h1 = step(h0, _mm512_and_si512(_mm512_or_si512(c0, or), m0));
        let h2 = step(h1, _mm512_and_si512(_mm512_or_si512(c1, or), m1));
        let two_chunks = _mm512_cmpgt_epu64_mask(len, eight);
        let h = _mm512_mask_mov_epi64(h1, two_chunks, h2);
        let at = out.len();
        // SAFETY: room for `take` more was reserved, and at most `take` are written.
        unsafe {
            _mm512_storeu_si512(out.as_mut_ptr().add(at).cast(), h);
            out.set_len(at + 8);
        }
        let mut long = _mm512_cmpgt_epu64_mask(len, sixteen);
        while long != 0 {
            let i = long.trailing_zeros() as usize;
            out[at + i] = hash_lower_ascii(b, starts[k + i] as usize, ends[k + i] as usize);
            long &= long - 1;
        }
        k += 8;
    }
    out.extend((k..take).map(|k| hash_word(b, starts[k] as usize, ends[k] as usize)));
}

/// Writes `base +` the position of every set bit of `bits` (lowest first) to `out` and
/// returns how many: the plain form, the tests' reference for the others.
#[cfg(test)]
fn bit_positions(mut bits: u64, base: u32, out: &mut [u32; POSITIONS]) -> usize {
    let mut n = 0;
    while bits != 0 {
        out[n] = base + bits.trailing_zeros();
        n += 1;
        bits &= bits - 1;
    }
    n
}

/// [`bit_positions`] eight bits at a time (as simdjson flattens its bit sets): eight
/// positions are written whether or not that many bits are left, so the only branch is per
/// eight bits; what is written past the count is ignored (the 80 places of `out` hold it).
#[inline(always)]
fn bit_positions_by_eight(mut bits: u64, base: u32, out: &mut [u32; POSITIONS]) -> usize {
    let n = bits.count_ones() as usize;
    let mut at = 0;
    while at < n {
        // `at` is at most 56 here (n <= 64), so `at + 8 <= 64` places are written.
        let group: &mut [u32; 8] = (&mut out[at..at + 8]).try_into().expect("8 places");
        for slot in group {
            *slot = base.wrapping_add(bits.trailing_zeros());
            bits &= bits.wrapping_sub(1);
        }
        at += 8;
    }
    n
}

/// [`bit_positions`] without a branch per bit: 16 bits at a time, the lane numbers of the set
/// bits compressed to the front of a vector and stored whole (what is past the count is
/// overwritten or ignored).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn bit_positions_avx512(bits: u64, base: u32, out: &mut [u32; POSITIONS]) -> usize {
    use std::arch::x86_64::*;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut n = 0;
    for q in 0..4u32 {
        let m = (bits >> (16 * q)) as u16;
        let at = _mm512_add_epi32(lanes, _mm512_set1_epi32((base + 16 * q) as i32));
        let v = _mm512_maskz_compress_epi32(m, at);
        // SAFETY: `n` is at most 48 here (the set bits of the lower quarters), so the 16
        // lanes stored fit in the 80 of `out`.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(n).cast(), v) };
        n += m.count_ones() as usize;
    }
    n
}

#[inline(always)]
fn ascii_words_generic(
    b: &[u8],
    room: usize,
    out: &mut Vec<u64>,
    word_mask: impl Fn(&[u8]) -> u64,
    positions: impl Fn(u64, u32, &mut [u32; POSITIONS]) -> usize,
    hash_words: impl Fn(&[u8], &Positions, &Positions, usize, &mut Vec<u64>),
) {
    // Per block: the starts of the words it closes (the one left open by the blocks before
    // first) and their (exclusive) ends; the k-th end closes the k-th start. A block of 64
    // bytes starts at most 32 words, and one may be open from before. Positions are u32: a
    // text is one line, and lines are capped far below 4 GiB.
    let mut starts = [0u32; POSITIONS];
    let mut ends = [0u32; POSITIONS];
    let mut open: Option<u32> = None;
    let mut left = room;
    for (ci, block) in b.chunks(64).enumerate() {
        if left == 0 {
            return;
        }
        let base = (ci * 64) as u32;
        let mask = word_mask(block);
        // Bit i: byte i - 1 is in a word. Bits past a short last block are zero in `mask`,
        // so a word running to the end of the text ends at `block.len()` there.
        let before = mask << 1 | open.is_some() as u64;
        let st = mask & !before;
        let en = !mask & before;
        // The open word's start goes first: its bit is taken over from the last block.
        let ns = positions(st | open.is_some() as u64, base, &mut starts);
        if let Some(o) = open {
            starts[0] = o;
        }
        let ne = positions(en, base, &mut ends);
        // At most the last start is still open.
        open = (ns > ne).then(|| starts[ne]);
        let take = ne.min(left);
        left -= take;
        hash_words(b, &starts, &ends, take, out);
    }
    if let (Some(s), true) = (open, left > 0) {
        // The text ends in a word, at the end of a full block.
        out.push(hash_word(b, s as usize, b.len()));
    }
}

/// Word hashes of a shingle combined: each position rotated by its own amount (so order
/// matters) and xored, folded to 32 bits, mixed once (murmur3's 32-bit finaliser). A rotation
/// is a bijection, so two shingles that differ in one word (with a different hash) differ
/// before the fold; after it, two different shingles collide with chance 2^-32, which only
/// nudges a Jaccard estimate. 32 bits because the signature rows read 16-bit halves of it
/// (see [`Lanes`]): a 64-bit mix then folded cost a third of a signature, its multiplies
/// emulated in vectors.
#[inline(always)]
fn shingle_hash(ws: &[u64]) -> u32 {
    let x = ws.iter().enumerate().fold(ws.len() as u64, |acc, (i, w)| {
        acc ^ w.rotate_left(13 * i as u32)
    });
    mix32(x)
}

#[inline(always)]
fn mix32(x: u64) -> u32 {
    let mut h = (x ^ (x >> 32)) as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The [`shingle_hash`] of every window of [`SHINGLE_WORDS`] words, written as five shifted
/// slices so the compiler vectorizes it (a window iterator did not).
#[inline(always)]
fn shingle_hashes_generic(w: &[u64], out: &mut Vec<u32>) {
    const _: () = assert!(SHINGLE_WORDS == 5);
    let Some(m) = (w.len() + 1).checked_sub(SHINGLE_WORDS).filter(|&m| m > 0) else {
        return;
    };
    let (a, b, c, d, e) = (&w[..m], &w[1..=m], &w[2..m + 2], &w[3..m + 3], &w[4..m + 4]);
    // Into a slice of known length: `extend` over a map was not vectorized.
    let from = out.len();
    out.resize(from + m, 0);
    let o = &mut out[from..from + m];
    for j in 0..m {
        o[j] = mix32(
            5 ^ a[j]
                ^ b[j].rotate_left(13)
                ^ c[j].rotate_left(26)
                ^ d[j].rotate_left(39)
                ^ e[j].rotate_left(52),
        );
    }
}

/// [`shingle_hashes_generic`] compiled for AVX2 (four 64-bit words a vector).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn shingle_hashes_avx2(w: &[u64], out: &mut Vec<u32>) {
    shingle_hashes_generic(w, out)
}

/// [`shingle_hashes_generic`] compiled for AVX-512 (eight words a vector, and the rotations
/// one instruction each; AVX2 builds a 64-bit rotation from two shifts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn shingle_hashes_avx512(w: &[u64], out: &mut Vec<u32>) {
    shingle_hashes_generic(w, out)
}

fn shingle_hashes(w: &[u64], out: &mut Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU was just checked to support the enabled target features.
        unsafe { shingle_hashes_avx512(w, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked to support the enabled target features.
        unsafe { shingle_hashes_avx2(w, out) };
        return;
    }
    shingle_hashes_generic(w, out)
}

/// Signature lanes computed: every split allows at most [`MAX_HASHES`] rows in all, and a
/// fixed count lets the whole signature live in vector registers.
const LANES: usize = MAX_HASHES;
/// 16-bit rows: 32 a vector with AVX-512 (the 128-row minimum per shingle was a sixth of the
/// reading threads' time with 32-bit rows; 16-bit ones cut the export's CPU by 6%). Row `i`
/// is a bijection of one 16-bit half of the 32-bit shingle hash, the low half for even rows
/// and the high half for odd ones, so a band's rows use both. With 2^16 values a row, two
/// different shingles share a row's value by chance more often than with 2^32: the minimums
/// of two unrelated texts of `n` shingles agree by chance in about `n / 2^17` of the rows
/// (0.2% at 300 shingles, 3% at the 4,096-word cap), which raises a pair's chance of sharing
/// a band as if its Jaccard similarity `s` were `s + (1 - s) n / 2^17`; for the texts export
/// sees, well inside the S-curve's own spread.
type Lanes = [u16; LANES];

/// The shingle hash's half that row `i` reads.
#[inline(always)]
fn row_input(h: u32, i: usize) -> u16 {
    (h >> (16 * (i & 1))) as u16
}

/// `sig[i] = min over shingles h of (row_input(h, i) * mul[i] + add[i]) mod 2^16`. The rows
/// are kept as even and odd halves, so each half is one loop over one broadcast value, which
/// the compiler vectorizes.
#[inline(always)]
fn min_hashes_generic(sig: &mut Lanes, mul: &Lanes, add: &Lanes, shingles: &[u32]) {
    const HALF: usize = LANES / 2;
    let split = |v: &Lanes| -> [[u16; HALF]; 2] {
        [
            std::array::from_fn(|j| v[2 * j]),
            std::array::from_fn(|j| v[2 * j + 1]),
        ]
    };
    let (m, a) = (split(mul), split(add));
    let mut s = split(sig);
    for &h in shingles {
        for (half, s) in s.iter_mut().enumerate() {
            let x = row_input(h, half);
            for j in 0..HALF {
                s[j] = s[j].min(x.wrapping_mul(m[half][j]).wrapping_add(a[half][j]));
            }
        }
    }
    for j in 0..HALF {
        sig[2 * j] = s[0][j];
        sig[2 * j + 1] = s[1][j];
    }
}

/// [`min_hashes_generic`] with AVX-512: the shingle hash broadcast as 32-bit lanes is, read
/// as 16-bit lanes, exactly the rows' inputs (low half, high half, ...), so a shingle is four
/// multiply-add-minimum steps over the 128 rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn min_hashes_avx512(sig: &mut Lanes, mul: &Lanes, add: &Lanes, shingles: &[u32]) {
    use std::arch::x86_64::*;
    const V: usize = LANES / 32;
    // SAFETY (all loads and stores): vector `j` covers lanes 32j..32j + 32 of a 128-lane array.
    let load = |v: &Lanes, j: usize| unsafe { _mm512_loadu_si512(v.as_ptr().add(32 * j).cast()) };
    let m: [__m512i; V] = std::array::from_fn(|j| load(mul, j));
    let a: [__m512i; V] = std::array::from_fn(|j| load(add, j));
    let mut s: [__m512i; V] = std::array::from_fn(|j| load(sig, j));
    for &h in shingles {
        let x = _mm512_set1_epi32(h as i32);
        for j in 0..V {
            let row = _mm512_add_epi16(_mm512_mullo_epi16(x, m[j]), a[j]);
            s[j] = _mm512_min_epu16(s[j], row);
        }
    }
    for (j, v) in s.iter().enumerate() {
        unsafe { _mm512_storeu_si512(sig.as_mut_ptr().add(32 * j).cast(), *v) };
    }
}

/// [`min_hashes_avx512`] with AVX2: 16 rows a vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_hashes_avx2(sig: &mut Lanes, mul: &Lanes, add: &Lanes, shingles: &[u32]) {
    use std::arch::x86_64::*;
    const V: usize = LANES / 16;
    // SAFETY (all loads and stores): vector `j` covers lanes 16j..16j + 16 of a 128-lane array.
    let load = |v: &Lanes, j: usize| unsafe { _mm256_loadu_si256(v.as_ptr().add(16 * j).cast()) };
    let m: [__m256i; V] = std::array::from_fn(|j| load(mul, j));
    let a: [__m256i; V] = std::array::from_fn(|j| load(add, j));
    let mut s: [__m256i; V] = std::array::from_fn(|j| load(sig, j));
    for &h in shingles {
        let x = _mm256_set1_epi32(h as i32);
        for j in 0..V {
            let row = _mm256_add_epi16(_mm256_mullo_epi16(x, m[j]), a[j]);
            s[j] = _mm256_min_epu16(s[j], row);
        }
    }
    for (j, v) in s.iter().enumerate() {
        unsafe { _mm256_storeu_si256(sig.as_mut_ptr().add(16 * j).cast(), *v) };
    }
}

fn min_hashes(sig: &mut Lanes, mul: &Lanes, add: &Lanes, shingles: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") {
            // SAFETY: the CPU was just checked to support the enabled target features.
            unsafe { min_hashes_avx512(sig, mul, add, shingles) };
            return;
        }
        if has!("avx2") {
            // SAFETY: as above.
            unsafe { min_hashes_avx2(sig, mul, add, shingles) };
            return;
        }
    }
    min_hashes_generic(sig, mul, add, shingles)
}

/// The LSH band keys of a text: one 64-bit hash per band, or none when it has no words.
/// `salt` separates groups that must never be merged (e.g. KTO labels).
pub fn band_hashes(text: &str, bands: usize, rows: usize, salt: u64) -> Vec<u64> {
    MinHasher::new(bands, rows).band_hashes(&[text], salt)
}

/// Computes [`band_hashes`] for many texts, reusing its tables and buffers.
pub struct MinHasher {
    rows: usize,
    /// Rows actually used (bands x rows), at most [`LANES`].
    n: usize,
    mul: Box<Lanes>,
    add: Box<Lanes>,
    words: Vec<u64>,
    shingles: Vec<u32>,
    sig: Box<Lanes>,
}

impl MinHasher {
    pub fn new(bands: usize, rows: usize) -> Self {
        let n = (bands * rows).min(LANES);
        // Hash function i is h -> a_i * x + b_i (mod 2^16, a_i odd) of the half `x` of the
        // well-mixed shingle hash that row `i` reads: a bijection of it, one multiply-add
        // per row instead of a full mix, and a loop the compiler vectorizes.
        let mut mul = Box::new([0u16; LANES]);
        let mut add = Box::new([0u16; LANES]);
        for i in 0..LANES {
            mul[i] = mix(i as u64 ^ 0x5eed) as u16 | 1;
            add[i] = mix(i as u64 ^ 0xadd5) as u16;
        }
        MinHasher {
            rows: rows.max(1),
            n,
            mul,
            add,
            words: Vec::new(),
            shingles: Vec::new(),
            sig: Box::new([u16::MAX; LANES]),
        }
    }

    /// The band hashes of `parts` joined by newlines (which only separate words), without
    /// building the joined text.
    pub fn band_hashes(&mut self, parts: &[&str], salt: u64) -> Vec<u64> {
        // Word hashes once; a shingle's hash folds its words' hashes in order, which avoids
        // building a string per shingle.
        self.words.clear();
        for text in parts {
            let room = MAX_WORDS - self.words.len();
            if text.is_ascii() {
                // The same words, split on bytes instead of decoded chars.
                ascii_words(text.as_bytes(), room, &mut self.words);
            } else {
                self.words.extend(
                    text.split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                        .take(room)
                        .map(|w| {
                            if w.is_ascii() {
                                hash_lower_ascii(w.as_bytes(), 0, w.len())
                            } else {
                                hash_bytes(w.to_lowercase().as_bytes())
                            }
                        }),
                );
            }
        }
        if self.words.is_empty() {
            return Vec::new();
        }
        self.sig.fill(u16::MAX);
        self.shingles.clear();
        if self.words.len() < SHINGLE_WORDS {
            self.shingles.push(shingle_hash(&self.words));
        } else {
            shingle_hashes(&self.words, &mut self.shingles);
        }
        min_hashes(&mut self.sig, &self.mul, &self.add, &self.shingles);
        // A band's key: its rows four at a time (packed into 64 bits), one multiply and
        // rotation each (bijections of the running hash xor the four, so bands differing in
        // their last four rows always differ, and earlier differences survive but by chance
        // 2^-64), seeded by band and salt, mixed once. Only the equality of keys matters.
        // (XXH3 per band, with the rows copied to bytes first, was a twentieth of a
        // signature.)
        const K: u64 = 0x9fb2_1c65_1e98_df25;
        self.sig[..self.n]
            .chunks(self.rows)
            .enumerate()
            .map(|(b, rows)| {
                let seed = mix(salt ^ (b as u64).wrapping_mul(0x1000_0000_01b3));
                let h = rows.chunks(4).fold(seed, |h, four| {
                    let v = four
                        .iter()
                        .enumerate()
                        .fold(0u64, |v, (k, &r)| v | (r as u64) << (16 * k));
                    (h ^ v).wrapping_mul(K).rotate_left(31)
                });
                mix(h)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `normalize` must equal: whitespace-split words, lowercased, joined by one space.
    fn word_split_normalize(s: &str) -> String {
        s.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    }

    proptest::proptest! {
        #[test]
        fn export_dedup_normalize_ascii_path_matches_the_word_split(
            s in "[ aZ?\t\n\x0b\x0c\r\x1c\x00]{0,40}"
        ) {
            proptest::prop_assert_eq!(normalize(&s), word_split_normalize(&s));
        }
    }

    proptest::proptest! {
        #[test]
        fn export_dedup_ascii_words_match_the_byte_split(
            s in "[ aZ09.,\n-]{0,200}",
            room in 0usize..50,
        ) {
            let want: Vec<u64> = s
                .as_bytes()
                .split(|b| !b.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .take(room)
                .map(|w| hash_bytes(w.to_ascii_lowercase().as_slice()))
                .collect();
            for (name, got) in every_ascii_words(s.as_bytes(), room) {
                proptest::prop_assert_eq!(&got[1..], &want[..], "{}", name);
            }
        }

        #[test]
        fn export_dedup_normalize_long_ascii_matches_the_word_split(
            s in "[ aZ?\t\n]{0,200}"
        ) {
            proptest::prop_assert_eq!(normalize(&s), word_split_normalize(&s));
        }
    }

    /// [`ascii_words`]'s output by every implementation this CPU can run (the generic one
    /// always), each after one value already in the output vector.
    fn every_ascii_words(b: &[u8], room: usize) -> Vec<(&'static str, Vec<u64>)> {
        let run = |f: &dyn Fn(&mut Vec<u64>)| {
            let mut out = vec![7];
            f(&mut out);
            out
        };
        let mut all = vec![(
            "generic",
            run(&|o| ascii_words_generic(b, room, o, word_mask, bit_positions, hash_words)),
        )];
        all.push((
            "generic, by eight",
            run(&|o| {
                ascii_words_generic(
                    b,
                    room,
                    o,
                    word_mask,
                    bit_positions_by_eight,
                    hash_words_two_chunks,
                )
            }),
        ));
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("popcnt") && has!("bmi1") {
                // SAFETY: the CPU supports the enabled target features.
                all.push(("avx2", run(&|o| unsafe { ascii_words_avx2(b, room, o) })));
            }
            if has!("avx512f")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("popcnt")
                && has!("bmi1")
            {
                // SAFETY: as above.
                all.push((
                    "avx512",
                    run(&|o| unsafe { ascii_words_avx512(b, room, o) }),
                ));
            }
        }
        all
    }

    proptest::proptest! {
        /// The word hashers, given word positions directly: every word length around the
        /// 8- and 16-byte chunk edges and past them, eight or more words at a time, words
        /// near the text's end (whose chunks would reach past it), the hashes of the
        /// lowercased words.
        #[test]
        fn export_dedup_hash_words_match_hash_bytes(
            words in proptest::collection::vec(
                (1usize..=40, 0usize..36, 1usize..=3),
                1..=POSITIONS,
            ),
            tail in 0usize..20,
        ) {
            const ALNUM: &[u8] = b"aB3cD4eF5gH6iJ7kL8mN9oP0qR1sT2uVwXyZ";
            let mut text = Vec::new();
            let (mut starts, mut ends) = ([0u32; POSITIONS], [0u32; POSITIONS]);
            for (k, &(len, first, gap)) in words.iter().enumerate() {
                starts[k] = text.len() as u32;
                text.extend((0..len).map(|i| ALNUM[(first + i) % ALNUM.len()]));
                ends[k] = text.len() as u32;
                text.extend_from_slice(&b" .,"[..gap]);
            }
            text.truncate(ends[words.len() - 1] as usize + tail.min(3));
            let want: Vec<u64> = (0..words.len())
                .map(|k| {
                    let w = &text[starts[k] as usize..ends[k] as usize];
                    hash_bytes(&w.to_ascii_lowercase())
                })
                .collect();
            let mut got = vec![7];
            hash_words(&text, &starts, &ends, words.len(), &mut got);
            proptest::prop_assert_eq!(&got[1..], &want[..], "scalar");
            let mut got = vec![7];
            hash_words_two_chunks(&text, &starts, &ends, words.len(), &mut got);
            proptest::prop_assert_eq!(&got[1..], &want[..], "two chunks");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = vec![7];
                // SAFETY: the CPU supports the enabled target features.
                unsafe { hash_words_avx2(&text, &starts, &ends, words.len(), &mut got) };
                proptest::prop_assert_eq!(&got[1..], &want[..], "avx2");
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                let mut got = vec![7];
                // SAFETY: the CPU supports the enabled target features.
                unsafe { hash_words_avx512(&text, &starts, &ends, words.len(), &mut got) };
                proptest::prop_assert_eq!(&got[1..], &want[..], "avx512");
            }
        }
    }

    /// Words that end exactly at a block's end, or run across one, or end the text there.
    #[test]
    fn export_dedup_ascii_words_at_block_edges() {
        for len in [1usize, 63, 64, 65, 127, 128, 129, 200] {
            for word in [1usize, 7, 8, 9, 70] {
                for gap in [1usize, 2] {
                    let mut s = String::new();
                    while s.len() < len {
                        s.push_str(&"Ab9".repeat(word)[..word]);
                        s.push_str(&" ,"[..gap]);
                    }
                    for t in [&s[..len], s[..len].trim_end_matches([' ', ','])] {
                        let want: Vec<u64> = t
                            .as_bytes()
                            .split(|b| !b.is_ascii_alphanumeric())
                            .filter(|w| !w.is_empty())
                            .map(|w| hash_bytes(w.to_ascii_lowercase().as_slice()))
                            .collect();
                        for (name, got) in every_ascii_words(t.as_bytes(), usize::MAX) {
                            assert_eq!(got[1..], want, "{name} {t:?}");
                        }
                    }
                }
            }
        }
    }

    /// The S-curve holds for the hash family: texts one word apart (Jaccard about 0.9) share
    /// a band almost always, texts ten words apart (about 0.35) almost never, and unrelated
    /// texts never. A weak word, shingle or row hash shows up here as misses or false hits.
    #[test]
    fn export_dedup_near_duplicate_rates_follow_the_s_curve() {
        let (bands, rows) = lsh_params(DEFAULT_NEAR_DUP_THRESHOLD);
        let mut m = MinHasher::new(bands, rows);
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = mix(state);
            state
        };
        let word = |r: u64| format!("w{}", r % 50_000);
        let shares = |a: &[u64], b: &[u64]| a.iter().zip(b).any(|(x, y)| x == y);
        let (mut one, mut ten, mut unrelated) = (0, 0, 0);
        const N: usize = 200;
        for _ in 0..N {
            let words: Vec<String> = (0..100).map(|_| word(next())).collect();
            let base = m.band_hashes(&[&words.join(" ")], 0);
            let mut v1 = words.clone();
            v1[(next() % 100) as usize] = word(next());
            let mut v10 = words.clone();
            for k in 0..10 {
                v10[k * 10 + (next() % 10) as usize] = word(next());
            }
            let other: Vec<String> = (0..100).map(|_| word(next())).collect();
            one += shares(&base, &m.band_hashes(&[&v1.join(" ")], 0)) as usize;
            ten += shares(&base, &m.band_hashes(&[&v10.join(" ")], 0)) as usize;
            unrelated += shares(&base, &m.band_hashes(&[&other.join(" ")], 0)) as usize;
        }
        assert!(one >= N * 9 / 10, "one word apart: {one} of {N}");
        assert!(ten <= N / 20, "ten words apart: {ten} of {N}");
        assert_eq!(unrelated, 0);
    }

    proptest::proptest! {
        /// Every signature implementation this CPU can run gives each row's minimum of its
        /// half of the shingle hashes, multiplied and added (16 bits, wrapping), continuing
        /// from the signature it is given.
        #[test]
        fn export_dedup_min_hashes_are_each_rows_minimum(
            shingles in proptest::collection::vec(proptest::num::u32::ANY, 0..300),
            start in proptest::num::u16::ANY,
        ) {
            let m = MinHasher::new(11, 11);
            let want: Vec<u16> = (0..LANES)
                .map(|i| {
                    shingles.iter().fold(start, |min, &h| {
                        min.min(row_input(h, i).wrapping_mul(m.mul[i]).wrapping_add(m.add[i]))
                    })
                })
                .collect();
            let run = |f: &dyn Fn(&mut Lanes)| {
                let mut sig = [start; LANES];
                f(&mut sig);
                sig.to_vec()
            };
            let mut all = vec![(
                "generic",
                run(&|sig| min_hashes_generic(sig, &m.mul, &m.add, &shingles)),
            )];
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") {
                    // SAFETY: the CPU supports the enabled target features.
                    all.push(("avx2", run(&|sig| unsafe {
                        min_hashes_avx2(sig, &m.mul, &m.add, &shingles)
                    })));
                }
                if has!("avx512f") && has!("avx512bw") {
                    // SAFETY: as above.
                    all.push(("avx512", run(&|sig| unsafe {
                        min_hashes_avx512(sig, &m.mul, &m.add, &shingles)
                    })));
                }
            }
            for (name, got) in all {
                proptest::prop_assert_eq!(&got, &want, "{}", name);
            }
        }
    }

    proptest::proptest! {
        /// Every shingle-hash implementation this CPU can run gives each 5-word window's
        /// [`shingle_hash`], after what is already in the output.
        #[test]
        fn export_dedup_shingle_hashes_are_each_windows_hash(
            words in proptest::collection::vec(proptest::num::u64::ANY, 0..40),
        ) {
            let want: Vec<u32> = words.windows(SHINGLE_WORDS).map(shingle_hash).collect();
            let run = |f: &dyn Fn(&mut Vec<u32>)| {
                let mut out = vec![7];
                f(&mut out);
                out[1..].to_vec()
            };
            let mut all = vec![("generic", run(&|o| shingle_hashes_generic(&words, o)))];
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") {
                    // SAFETY: the CPU supports the enabled target features.
                    all.push(("avx2", run(&|o| unsafe { shingle_hashes_avx2(&words, o) })));
                }
                if has!("avx512f") {
                    // SAFETY: as above.
                    all.push(("avx512", run(&|o| unsafe { shingle_hashes_avx512(&words, o) })));
                }
            }
            for (name, got) in all {
                proptest::prop_assert_eq!(&got, &want, "{}", name);
            }
        }
    }

    /// Texts at the word cap (4,096 words), where chance agreement of 16-bit row minimums is
    /// highest: unrelated ones never share a band, ones a word apart always do.
    #[test]
    fn export_dedup_long_texts_unrelated_never_share_a_band() {
        let (bands, rows) = lsh_params(DEFAULT_NEAR_DUP_THRESHOLD);
        let mut m = MinHasher::new(bands, rows);
        let mut state = 0x0fed_cba9_8765_4321u64;
        let mut next = move || {
            state = mix(state);
            state
        };
        let text = |next: &mut dyn FnMut() -> u64| -> Vec<String> {
            (0..MAX_WORDS)
                .map(|_| format!("w{}", next() % 50_000))
                .collect()
        };
        let shares = |a: &[u64], b: &[u64]| a.iter().zip(b).any(|(x, y)| x == y);
        let base = m.band_hashes(&[&text(&mut next).join(" ")], 0);
        for _ in 0..30 {
            let words = text(&mut next);
            let other = m.band_hashes(&[&words.join(" ")], 0);
            assert!(!shares(&base, &other));
            let mut near = words.clone();
            near[(next() % MAX_WORDS as u64) as usize] = "changed".into();
            assert!(shares(&other, &m.band_hashes(&[&near.join(" ")], 0)));
        }
    }

    #[test]
    fn export_dedup_normalize() {
        assert_eq!(normalize("  How   MANY\tsquares?\n"), "how many squares?");
    }

    #[test]
    fn export_dedup_default_params_are_11_by_11() {
        assert_eq!(lsh_params(0.8), (11, 11));
        let (b, r) = lsh_params(0.5);
        assert!(b * r <= MAX_HASHES);
    }

    #[test]
    fn export_dedup_near_texts_share_a_band_far_ones_do_not() {
        let a = "How many squares of TPO membrane do I need for a flat roof that is fifty by forty feet with a parapet on three sides and two drains? The answer is about 20 squares plus waste for the parapet flashing.";
        let b = "How many squares of TPO membrane do I need for a flat roof that is fifty by forty feet with a parapet on three sides and two drains? The answer is about 20 squares plus waste for the parapet flashing!!";
        let c = "What fastener pattern does the manufacturer require in the corner zones of a mechanically attached EPDM system at ninety mph design wind speed?";
        let (bands, rows) = lsh_params(0.8);
        let ha = band_hashes(a, bands, rows, 0);
        let hb = band_hashes(b, bands, rows, 0);
        let hc = band_hashes(c, bands, rows, 0);
        assert_eq!(
            ha, hb,
            "punctuation-only difference is identical after shingling"
        );
        assert!(ha.iter().zip(&hc).all(|(x, y)| x != y));
        assert_ne!(band_hashes(a, bands, rows, 1), ha, "salt separates groups");
        let (p, r) = a.split_at(a.find('?').unwrap() + 1);
        assert_eq!(
            MinHasher::new(bands, rows).band_hashes(&[p, r.trim_start()], 0),
            ha,
            "parts hash like the text they make joined by a newline"
        );
    }
}
