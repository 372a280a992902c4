//! Deduplication helpers: the prompt normalisation shared by exact dedup and the split, and
//! MinHash signatures with LSH banding for near duplicates.
//!
//! Near duplicates: a text (prompt and answer together, so two different calculations that
//! share a long template are not merged just because their questions look alike) is cut into
//! 5-word shingles of its lowercased alphanumeric words (a text of fewer than 5 words is one
//! shingle). Its signature is the minimum of `bands x rows` seeded hashes over those shingles.
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
    if s.is_ascii() {
        // One pass over the bytes (export normalizes every prompt and response).
        let mut out = Vec::with_capacity(s.len());
        let mut space = false;
        for &b in s.as_bytes() {
            // The ASCII chars `char::is_whitespace` accepts.
            if matches!(b, b'\t'..=b'\r' | b' ') {
                space = !out.is_empty();
            } else {
                if space {
                    out.push(b' ');
                    space = false;
                }
                out.push(b.to_ascii_lowercase());
            }
        }
        return String::from_utf8(out).expect("ASCII stays valid UTF-8");
    }
    let mut out = String::with_capacity(s.len());
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
    out
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

/// FNV-1a over bytes, then mixed.
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

fn shingle_hash(ws: &[u64]) -> u64 {
    ws.iter()
        .fold(0x5851_f42d_4c95_7f2du64, |acc, w| mix(acc ^ w))
}

/// `sig[i] = min over shingles h of (h * mul[i] + add[i])`.
#[inline(always)]
fn min_hashes_generic(sig: &mut [u64], mul: &[u64], add: &[u64], shingles: &[u64]) {
    for &h in shingles {
        for ((s, a), b) in sig.iter_mut().zip(mul).zip(add) {
            *s = (*s).min(h.wrapping_mul(*a).wrapping_add(*b));
        }
    }
}

/// The same loop compiled for AVX-512, where 64-bit multiplies and minimums vectorize
/// (8 lanes); the x86-64 baseline (SSE2) has neither.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn min_hashes_avx512(sig: &mut [u64], mul: &[u64], add: &[u64], shingles: &[u64]) {
    min_hashes_generic(sig, mul, add, shingles)
}

fn min_hashes(sig: &mut [u64], mul: &[u64], add: &[u64], shingles: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the CPU was just checked to support the enabled target features.
        unsafe { min_hashes_avx512(sig, mul, add, shingles) };
        return;
    }
    min_hashes_generic(sig, mul, add, shingles)
}

/// [`hash_bytes`] of the ASCII-lowercased bytes, without building the lowercased copy.
fn hash_lower_ascii(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in b {
        h ^= x.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

/// The LSH band keys of a text: one 64-bit hash per band, or none when it has no words.
/// `salt` separates groups that must never be merged (e.g. KTO labels).
pub fn band_hashes(text: &str, bands: usize, rows: usize, salt: u64) -> Vec<u64> {
    // Word hashes once; a shingle's hash folds its words' hashes in order, which avoids
    // building a string per shingle.
    let word_hashes: Vec<u64> = if text.is_ascii() {
        // The same words, split on bytes instead of decoded chars.
        text.as_bytes()
            .split(|b| !b.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(MAX_WORDS)
            .map(hash_lower_ascii)
            .collect()
    } else {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(MAX_WORDS)
            .map(|w| {
                if w.is_ascii() {
                    hash_lower_ascii(w.as_bytes())
                } else {
                    hash_bytes(w.to_lowercase().as_bytes())
                }
            })
            .collect()
    };
    if word_hashes.is_empty() {
        return Vec::new();
    }
    let n = bands * rows;
    let mut sig = vec![u64::MAX; n];
    // Hash function i is h -> a_i * h + b_i (mod 2^64, a_i odd): a bijection of the
    // well-mixed shingle hash, one multiply-add per row instead of a full mix (this loop
    // was a third of export's time), and a loop the compiler vectorizes.
    let (mul, add): (Vec<u64>, Vec<u64>) = (0..n as u64)
        .map(|i| (mix(i ^ 0x5eed) | 1, mix(i ^ 0xadd5)))
        .unzip();
    let shingles: Vec<u64> = if word_hashes.len() < SHINGLE_WORDS {
        vec![shingle_hash(&word_hashes)]
    } else {
        word_hashes
            .windows(SHINGLE_WORDS)
            .map(shingle_hash)
            .collect()
    };
    min_hashes(&mut sig, &mul, &add, &shingles);
    sig.chunks(rows)
        .enumerate()
        .map(|(b, rows)| {
            let mut h = mix(salt ^ (b as u64).wrapping_mul(0x1000_0000_01b3));
            for r in rows {
                h = mix(h ^ r);
            }
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn export_dedup_normalize_ascii_path_matches_the_word_split(
            s in "[ aZ?\t\n\x0b\x0c\r\x1c\x00]{0,40}"
        ) {
            let slow = s
                .split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" ");
            proptest::prop_assert_eq!(normalize(&s), slow);
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
    }
}
