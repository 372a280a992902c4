//! MD5 of many messages at once, one message per lane.
//!
//! One MD5 is a chain of 64 dependent steps per block, so a single message runs at the
//! latency of that chain (about 5 cycles a byte; 14% of ingest CPU went to example ids).
//! Here `LANES` messages are hashed side by side: each step is applied to every lane's
//! state, the lanes are independent, and the compiler turns the per-lane loops into vector
//! instructions. A lane that finishes its message takes the next one, so lanes stay busy
//! however the lengths differ (the "multi-buffer" scheme of Intel's and minio's hashers).
//!
//! The digests are exactly `md-5`'s; the tests compare them on random messages.

/// Messages hashed side by side: as many 32-bit lanes as one vector register holds (SSE2
/// baseline 4, AVX2 8, AVX-512 16, chosen when the process starts hashing).
const BASE_LANES: usize = 4;

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Per step: the additive constant, the rotation and the message word.
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];
const S: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

/// One message, already padded: its 64-byte blocks.
struct Padded {
    bytes: Vec<u8>,
}

impl Padded {
    /// The message made of `parts`, each followed by `sep` (as `md5_hex16` hashes them),
    /// with MD5's padding and bit length.
    fn new(parts: &[&[u8]], sep: u8, buf: Vec<u8>) -> Padded {
        let mut bytes = buf;
        bytes.clear();
        for p in parts {
            bytes.extend_from_slice(p);
            bytes.push(sep);
        }
        let bits = (bytes.len() as u64).wrapping_mul(8);
        bytes.push(0x80);
        while bytes.len() % 64 != 56 {
            bytes.push(0);
        }
        bytes.extend_from_slice(&bits.to_le_bytes());
        Padded { bytes }
    }

    fn blocks(&self) -> usize {
        self.bytes.len() / 64
    }

    fn word(&self, block: usize, w: usize) -> u32 {
        let at = block * 64 + w * 4;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }
}

/// The MD5 digest of each message; message `i` is `parts_of(i)`, each part followed by
/// `sep`.
pub(crate) fn digests<'a>(
    count: usize,
    sep: u8,
    parts_of: impl Fn(usize) -> [&'a [u8]; 3],
) -> Vec<[u8; 16]> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU was just checked to support the enabled target features.
            return unsafe { digests_avx512(count, sep, parts_of) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just checked to support the enabled target features.
            return unsafe { digests_avx2(count, sep, parts_of) };
        }
    }
    digests_in_lanes::<BASE_LANES, _>(count, sep, parts_of)
}

/// [`digests_in_lanes`] on 16 lanes compiled for AVX-512 (which also has a vector rotate).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn digests_avx512<'a>(
    count: usize,
    sep: u8,
    parts_of: impl Fn(usize) -> [&'a [u8]; 3],
) -> Vec<[u8; 16]> {
    digests_in_lanes::<16, _>(count, sep, parts_of)
}

/// [`digests_in_lanes`] on 8 lanes compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn digests_avx2<'a>(
    count: usize,
    sep: u8,
    parts_of: impl Fn(usize) -> [&'a [u8]; 3],
) -> Vec<[u8; 16]> {
    digests_in_lanes::<8, _>(count, sep, parts_of)
}

#[inline(always)]
fn digests_in_lanes<'a, const LANES: usize, F: Fn(usize) -> [&'a [u8]; 3]>(
    count: usize,
    sep: u8,
    parts_of: F,
) -> Vec<[u8; 16]> {
    let mut out = vec![[0u8; 16]; count];
    let mut state = [[0u32; LANES]; 4];
    // Per lane: the message it hashes and the next block of it.
    let mut lane: [Option<(usize, Padded, usize)>; LANES] = std::array::from_fn(|_| None);
    let mut next = 0;
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        for (l, slot) in lane.iter_mut().enumerate() {
            if slot.is_none() && next < count {
                let buf = spare.pop().unwrap_or_default();
                *slot = Some((next, Padded::new(&parts_of(next), sep, buf), 0));
                for (s, init) in state.iter_mut().zip(INIT) {
                    s[l] = init;
                }
                next += 1;
            }
        }
        if lane.iter().all(Option::is_none) {
            return out;
        }
        let mut m = [[0u32; LANES]; 16];
        for (l, slot) in lane.iter().enumerate() {
            if let Some((_, msg, block)) = slot {
                for (w, words) in m.iter_mut().enumerate() {
                    words[l] = msg.word(*block, w);
                }
            }
        }
        compress(&mut state, &m);
        for (l, slot) in lane.iter_mut().enumerate() {
            let Some((i, msg, block)) = slot else {
                continue;
            };
            *block += 1;
            if *block == msg.blocks() {
                for (w, s) in state.iter().enumerate() {
                    out[*i][w * 4..w * 4 + 4].copy_from_slice(&s[l].to_le_bytes());
                }
                if let Some((_, msg, _)) = slot.take() {
                    spare.push(msg.bytes);
                }
            }
        }
    }
}

/// One MD5 block on every lane (lanes without a message compute garbage, unread). The
/// lanes are index loops on purpose: that is the shape the compiler vectorizes.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn compress<const LANES: usize>(state: &mut [[u32; LANES]; 4], m: &[[u32; LANES]; 16]) {
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (g, s) = match i / 16 {
            0 => (i, S[i % 4]),
            1 => ((5 * i + 1) % 16, S[4 + i % 4]),
            2 => ((3 * i + 5) % 16, S[8 + i % 4]),
            _ => ((7 * i) % 16, S[12 + i % 4]),
        };
        let mut f = [0u32; LANES];
        for l in 0..LANES {
            f[l] = match i / 16 {
                0 => (b[l] & c[l]) | (!b[l] & d[l]),
                1 => (b[l] & d[l]) | (c[l] & !d[l]),
                2 => b[l] ^ c[l] ^ d[l],
                _ => c[l] ^ (b[l] | !d[l]),
            };
        }
        let mut new_b = [0u32; LANES];
        for l in 0..LANES {
            new_b[l] = b[l].wrapping_add(
                a[l].wrapping_add(f[l])
                    .wrapping_add(K[i])
                    .wrapping_add(m[g][l])
                    .rotate_left(s),
            );
        }
        a = d;
        d = c;
        c = b;
        b = new_b;
    }
    for (st, v) in state.iter_mut().zip([a, b, c, d]) {
        for l in 0..LANES {
            st[l] = st[l].wrapping_add(v[l]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    fn reference(parts: &[&[u8]; 3], sep: u8) -> [u8; 16] {
        let mut h = Md5::new();
        for p in parts {
            h.update(p);
            h.update([sep]);
        }
        h.finalize().into()
    }

    #[test]
    fn each_part_is_followed_by_the_separator() {
        let d = digests(1, b'c', |_| {
            [b"ab".as_slice(), b"".as_slice(), b"".as_slice()]
        });
        let want: [u8; 16] = Md5::digest(b"abccc").into();
        assert_eq!(d, vec![want]);
    }

    proptest! {
        /// Lengths straddle the padding boundaries (55/56/64 bytes) and lanes refill at
        /// different times.
        #[test]
        fn digests_equal_md5_crate(
            msgs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..20),
                 proptest::collection::vec(any::<u8>(), 0..130),
                 proptest::collection::vec(any::<u8>(), 0..300)),
                0..40),
        ) {
            let parts: Vec<[&[u8]; 3]> = msgs
                .iter()
                .map(|(a, b, c)| [a.as_slice(), b.as_slice(), c.as_slice()])
                .collect();
            let want: Vec<[u8; 16]> = parts.iter().map(|p| reference(p, 0x1e)).collect();
            prop_assert_eq!(&digests(parts.len(), 0x1e, |i| parts[i]), &want);
            prop_assert_eq!(&digests_in_lanes::<4, _>(parts.len(), 0x1e, |i| parts[i]), &want);
            prop_assert_eq!(&digests_in_lanes::<8, _>(parts.len(), 0x1e, |i| parts[i]), &want);
            prop_assert_eq!(&digests_in_lanes::<16, _>(parts.len(), 0x1e, |i| parts[i]), &want);
        }
    }
}
