//! PII scrubbing of everything export writes: e-mail addresses (accented and other non-ASCII
//! letters included, `jöhn.müller@exämple.de`) become `[EMAIL]`, phone numbers (US forms such
//! as `(555) 123-4567`, `555-123-4567`, `+1 555.123.4567`, and international `+CC ...` numbers
//! of 8 to 15 digits, each with an extension such as `x204` or `ext. 204`) become `[PHONE]`,
//! and each configured pattern's matches become `[REDACTED]`. The example's own user id, where it appears as a whole word in
//! the text, is replaced by `[USER_<pseudonym>]`, the keyed hash of [`pseudonymize`], so the
//! same user stays recognisable across lines without being named.
//!
//! Patterns are deliberately conservative about bare digit runs: the reference domain is full
//! of measurements and quantities ("5000 sq ft", "2024 1500 300"), and mangling those would
//! damage the training data more than an unformatted 10-digit run is likely to leak.
//!
//! A match glued to a letter or digit is left alone (`ABC555-123-4567` is a part number), but
//! the letters of scripts written without spaces between words (Chinese, Japanese, Thai, ...;
//! and Korean, which attaches its particles) do not glue: `请致电555-123-4567关于` names a
//! phone number, and such a letter never belongs to an e-mail address either.

use regex::Regex;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// HMAC-SHA256 (RFC 2104) over `msg` with `key`; written out to avoid another dependency.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The pseudonym of a user id: the first 16 hex digits of HMAC-SHA256(key, user id). Stable for
/// one key, unlinkable to the id without it.
pub fn pseudonymize(key: &[u8], user_id: &str) -> String {
    hex(&hmac_sha256(key, user_id.as_bytes())[..8])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The compiled scrubber.
#[derive(Debug, Clone)]
pub struct Scrubber {
    email: Regex,
    intl_phone: Regex,
    us_phone: Regex,
    extra: Vec<Regex>,
    key: Vec<u8>,
}

impl Scrubber {
    pub fn new(extra: &[Regex], pseudonym_key: &[u8]) -> Self {
        // These literals are fixed and covered by tests; failing here is a programming error.
        let re = |s: &str| Regex::new(s).expect("built-in PII pattern compiles");
        // Letters and digits of an address: any script's (IDN domains, accented names) but
        // those written without spaces, whose text runs into the address with no separator.
        let unspaced: String = UNSPACED
            .iter()
            .map(|&(a, b)| format!("\\x{{{:x}}}-\\x{{{:x}}}", a as u32, b as u32))
            .collect();
        let alnum = format!(r"[[\p{{L}}\p{{N}}]--[{unspaced}]]");
        // Combining marks too: `zoë` may be written `zoe` + U+0308.
        let part = format!(r"[[\p{{L}}\p{{N}}\p{{M}}]--[{unspaced}]]");
        let letter = format!(r"[[\p{{L}}\p{{M}}]--[{unspaced}]]");
        let label = format!(r"{alnum}(?:(?:{part}|-)*{part})?");
        // `x204`, `ext204`, `ext. 204`, `extension 204` right after the number.
        let extension = r"(?:[ ]?(?i:x|ext\.?|extn\.?|extension)[ ]?\d{1,6})?";
        Scrubber {
            email: re(&format!(
                r"{alnum}(?:{part}|[._%+\-])*@{label}(?:\.{label})*\.{letter}{{2,}}"
            )),
            intl_phone: re(&format!(
                r"\+\d{{1,3}}(?:[ .\-]?\(?\d{{1,5}}\)?){{1,6}}{extension}"
            )),
            us_phone: re(&format!(
                r"(?:1[ .\-]?)?(?:\(\d{{3}}\)[ .\-]?|\d{{3}}[ .\-])\d{{3}}[ .\-]\d{{4}}{extension}"
            )),
            extra: extra.to_vec(),
            key: pseudonym_key.to_vec(),
        }
    }

    /// Scrubs one text; `user_id` is the example's user, replaced by its pseudonym.
    pub fn scrub(&self, text: &str, user_id: Option<&str>) -> String {
        self.scrub_cow(text, user_id).into_owned()
    }

    /// [`Scrubber::scrub`], borrowing the text back when nothing in it is replaced (most
    /// texts). Patterns that cannot match are not run: every e-mail has an `@`, every
    /// international number a `+`, and a US number ten digits (in ASCII text; elsewhere `\d`
    /// also matches other scripts' digits, so the pattern always runs).
    pub fn scrub_cow<'a>(&self, text: &'a str, user_id: Option<&str>) -> Cow<'a, str> {
        let bytes = text.as_bytes();
        let mut s = Cow::Borrowed(text);
        if memchr::memchr(b'@', bytes).is_some() {
            replace_bounded(&self.email, &mut s, "[EMAIL]", |m| Some(m.len()));
        }
        if memchr::memchr(b'+', bytes).is_some() {
            replace_bounded(&self.intl_phone, &mut s, "[PHONE]", intl_number_len);
        }
        if !text.is_ascii() || may_have_us_phone(bytes) {
            replace_bounded(&self.us_phone, &mut s, "[PHONE]", |m| Some(m.len()));
        }
        for re in &self.extra {
            if let Cow::Owned(r) = re.replace_all(&s, "[REDACTED]") {
                s = Cow::Owned(r);
            }
        }
        if let Some(uid) = user_id.map(str::trim).filter(|u| u.chars().count() >= 3) {
            // The keyed hash is computed only for texts that name the user.
            if let Some(r) = replace_word(&s, uid, || {
                format!("[USER_{}]", pseudonymize(&self.key, uid))
            }) {
                s = Cow::Owned(r);
            }
        }
        s
    }
}

/// Whether `bytes` holds at least ten ASCII digits. Counted per 64 bytes in a byte-wide sum
/// the compiler vectorizes, stopping at the tenth (a `filter().count()` widened every byte to
/// 64 bits: half of the scrubber's time).
fn has_ten_digits(bytes: &[u8]) -> bool {
    let mut n = 0usize;
    for block in bytes.chunks(64) {
        n += block
            .iter()
            .fold(0u8, |acc, &b| acc + (b.wrapping_sub(b'0') < 10) as u8) as usize;
        if n >= 10 {
            return true;
        }
    }
    false
}

/// Whether the US pattern could match `bytes` (ASCII). With AVX-512, exactly where three
/// digits, a space, dot or hyphen and four digits follow each other, as every match ends
/// (the exchange and the line number): most answers in the reference domain have ten digits
/// but no such run, and the regex's scan of a whole text cost several times this check.
/// Elsewhere, where ten digits are ([`has_ten_digits`]).
fn may_have_us_phone(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        // SAFETY: the CPU was just checked to support the enabled target features.
        return unsafe { has_phone_run_avx512(bytes) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: as above.
        return unsafe { has_phone_run_avx2(bytes) };
    }
    has_ten_digits(bytes)
}

/// [`has_phone_run_avx512`] with AVX2 (machines without AVX-512 ran the regex over every
/// text with ten digits: a twentieth of the export's time). The run is checked for 32 start
/// positions at once in byte vectors: eight loads at offsets 0 to 7, each compared (digits,
/// or at offset 3 a separator) and the results and-ed. (Bit masks as in the AVX-512 version
/// made LLVM take the byte-mask moves apart bit by bit: slower than the regex.) The last
/// starts, whose loads would reach past the text, are checked in a zero-padded copy (zeros
/// are neither digits nor separators).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn has_phone_run_avx2(bytes: &[u8]) -> bool {
    use std::arch::x86_64::*;
    /// Bytes one block of 32 starts reads.
    const SPAN: usize = 32 + 7;
    // Whether a run starts at one of `block[0..32]`; `block` holds at least SPAN bytes.
    let block_has_run = |block: &[u8]| -> bool {
        debug_assert!(block.len() >= SPAN);
        // SAFETY: offsets 0..=7 plus 32 bytes stay within the SPAN bytes of `block`.
        let load = |k: usize| unsafe { _mm256_loadu_si256(block.as_ptr().add(k).cast()) };
        let digit = |k: usize| {
            let x = _mm256_sub_epi8(load(k), _mm256_set1_epi8(b'0' as i8));
            // Unsigned `x <= 9`: AVX2 compares bytes as signed, so through a minimum.
            _mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(9)), x)
        };
        let v = load(3);
        let sep = _mm256_or_si256(
            _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b' ' as i8)),
            _mm256_or_si256(
                _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'.' as i8)),
                _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'-' as i8)),
            ),
        );
        let all = [0, 1, 2, 4, 5, 6, 7]
            .into_iter()
            .fold(sep, |acc, k| _mm256_and_si256(acc, digit(k)));
        _mm256_testz_si256(all, all) == 0
    };
    let mut at = 0;
    while at + SPAN <= bytes.len() {
        if block_has_run(&bytes[at..]) {
            return true;
        }
        at += 32;
    }
    // Fewer than SPAN bytes are left, so every start among them is one of the padded
    // block's 32.
    let rest = &bytes[at..];
    let mut padded = [0u8; 64];
    padded[..rest.len()].copy_from_slice(rest);
    block_has_run(&padded)
}

/// Whether `bytes` has `ddd[ .-]dddd`. Per 64-byte window a digit mask and a separator mask
/// (byte compares into mask registers); the windows overlap by the run's 8 bytes, so every
/// run lies inside one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn has_phone_run_avx512(bytes: &[u8]) -> bool {
    use std::arch::x86_64::*;
    const STEP: usize = 64 - 8;
    let zero = _mm512_set1_epi8(b'0' as i8);
    let ten = _mm512_set1_epi8(10);
    let (space, dot, dash) = (
        _mm512_set1_epi8(b' ' as i8),
        _mm512_set1_epi8(b'.' as i8),
        _mm512_set1_epi8(b'-' as i8),
    );
    let mut at = 0;
    loop {
        let rest = bytes.len() - at;
        let load = if rest >= 64 {
            u64::MAX
        } else {
            (1u64 << rest) - 1
        };
        // SAFETY: the masked load touches only bytes `at..at + min(64, rest)` of `bytes`; the
        // lanes past them are zeros, which are neither digits nor separators.
        let v = unsafe { _mm512_maskz_loadu_epi8(load, bytes.as_ptr().add(at).cast()) };
        let d = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, zero), ten);
        let sep = _mm512_cmpeq_epi8_mask(v, space)
            | _mm512_cmpeq_epi8_mask(v, dot)
            | _mm512_cmpeq_epi8_mask(v, dash);
        // Bit i: a separator at i, digits at i-3..i-1 and at i+1..i+4.
        if sep & d << 1 & d << 2 & d << 3 & d >> 1 & d >> 2 & d >> 3 & d >> 4 != 0 {
            return true;
        }
        if rest <= 64 {
            return false;
        }
        at += STEP;
    }
}

/// Where the scripts written without spaces between words are (and Korean, which attaches its
/// particles to the word before): their letters neither glue to a match nor belong to an
/// e-mail address. Inclusive ranges, in order.
const UNSPACED: &[(char, char)] = &[
    ('\u{0E00}', '\u{0EFF}'),   // Thai, Lao
    ('\u{1000}', '\u{109F}'),   // Myanmar
    ('\u{1100}', '\u{11FF}'),   // Hangul Jamo
    ('\u{1780}', '\u{17FF}'),   // Khmer
    ('\u{2E80}', '\u{2FDF}'),   // CJK and Kangxi radicals
    ('\u{3000}', '\u{9FFF}'),   // CJK punctuation, kana, Bopomofo, Hangul, ideographs
    ('\u{A960}', '\u{A97F}'),   // Hangul Jamo extended A
    ('\u{AC00}', '\u{D7FF}'),   // Hangul syllables, Jamo extended B
    ('\u{F900}', '\u{FAFF}'),   // CJK compatibility ideographs
    ('\u{FF00}', '\u{FFEF}'),   // half- and full-width forms
    ('\u{20000}', '\u{3FFFF}'), // CJK ideographs, extensions B to H
];

fn is_unspaced(c: char) -> bool {
    // Everything below Thai is spaced (ASCII, Latin, Greek, Cyrillic, Arabic, ...).
    c >= '\u{0E00}' && UNSPACED.iter().any(|&(a, b)| (a..=b).contains(&c))
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `c` next to a match makes it part of a longer token (`ABC555-123-4567`).
fn glues(c: char) -> bool {
    is_word(c) && !is_unspaced(c)
}

/// How much of an international-number match is the number, or `None` if none of it is: the
/// pattern's digit groups run on into whatever digits follow (`+44 20 7946 0958 2026`), so
/// the number is the longest run of whole groups with 8 to 15 digits (E.164's most), or for
/// `+1` (North America: ten digits after the country code) the one with 11 digits if there
/// is one. An extension is kept only with the whole number.
fn intl_number_len(m: &str) -> Option<usize> {
    let digits = |s: &str| s.bytes().filter(u8::is_ascii_digit).count();
    // An extension starts with a letter (`x204`, `ext. 204`).
    let number = match m.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => m[..i].trim_end_matches([' ', '.', '-']),
        None => m,
    };
    let b = number.as_bytes();
    // The ends of the digit groups (after a group's closing parenthesis), longest first: a
    // cut inside a run of digits would leave the rest glued to it.
    let mut ends = (1..=b.len()).rev().filter(|&i| match b[i - 1] {
        b')' => true,
        d if d.is_ascii_digit() => !b.get(i).is_some_and(|&c| c.is_ascii_digit() || c == b')'),
        _ => false,
    });
    let nanp = m.starts_with("+1") && !m[2..].starts_with(|c: char| c.is_ascii_digit());
    let end = if nanp {
        ends.clone()
            .find(|&i| digits(&number[..i]) == 11)
            .or_else(|| ends.find(|&i| (8..=15).contains(&digits(&number[..i]))))
    } else {
        ends.find(|&i| (8..=15).contains(&digits(&number[..i])))
    }?;
    Some(if end == number.len() { m.len() } else { end })
}

/// Replaces matches of `re` that are not glued to a neighbouring word character or digit (the
/// regex crate has no look-around): the first `fit(match)` bytes of each, when it gives a
/// length.
fn replace_bounded(
    re: &Regex,
    s: &mut Cow<'_, str>,
    token: &str,
    fit: impl Fn(&str) -> Option<usize>,
) {
    let text: &str = s;
    let mut out = String::new();
    let mut last = 0;
    let mut at = 0;
    while let Some(m) = re.find_at(text, at) {
        let end = fit(m.as_str()).map(|len| m.start() + len);
        let before = text[..m.start()].chars().next_back();
        let after = end.and_then(|e| text[e..].chars().next());
        let glued = before.is_some_and(|c| glues(c) || c == '+' || c == '@')
            || after.is_some_and(|c| glues(c) || c == '@');
        if let Some(end) = end.filter(|_| !glued) {
            out.push_str(&text[last..m.start()]);
            out.push_str(token);
            last = end;
            at = end;
        } else {
            // Retry one character further on: a shorter match may still be a real one.
            at = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
        }
        if at >= text.len() {
            break;
        }
    }
    if last > 0 {
        out.push_str(&text[last..]);
        *s = Cow::Owned(out);
    }
}

/// Replaces whole-word occurrences of `word` with `token()`; `None` when there are none.
fn replace_word(text: &str, word: &str, token: impl FnOnce() -> String) -> Option<String> {
    let mut out = String::new();
    let mut token = Some(token);
    let mut tok = String::new();
    let mut last = 0;
    // Most texts do not name their user: std's search needs no searcher built first.
    if !text.contains(word) {
        return None;
    }
    for i in memchr::memmem::find_iter(text.as_bytes(), word.as_bytes()) {
        if i < last {
            continue;
        }
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            continue;
        }
        if let Some(t) = token.take() {
            tok = t();
        }
        out.push_str(&text[last..i]);
        out.push_str(&tok);
        last = i + word.len();
    }
    if last == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Scrubber {
        Scrubber::new(&[Regex::new(r"ACCT-\d+").unwrap()], b"k")
    }

    #[test]
    fn export_pii_hmac_matches_rfc4231() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn export_pii_emails_and_phones_are_replaced() {
        let t = "Mail bob.smith+roof@acme-co.example.com or call (555) 123-4567, \
                 555-987-6543, +1 555.222.3333, 1-800-555-0199, +44 20 7946 0958 \
                 or +49 30 1234567. Ref ACCT-991.";
        let out = s().scrub(t, None);
        assert!(!out.contains('@'), "{out}");
        for digits in ["4567", "6543", "3333", "0199", "0958", "1234567", "991"] {
            assert!(!out.contains(digits), "{digits} left in {out}");
        }
        assert_eq!(out.matches("[PHONE]").count(), 6, "{out}");
        assert!(out.contains("[EMAIL]") && out.contains("[REDACTED]"));
    }

    #[test]
    fn export_pii_measurements_survive() {
        let t = "A 50x40 roof is 2000 sq ft, 20 squares; use 1.5 in polyiso at 2024 prices, \
                 section 07 54 23, 3 crews x 8 hours.";
        assert_eq!(s().scrub(t, None), t);
    }

    /// Scrubs each input and checks the output exactly.
    fn assert_scrubs(cases: &[(&str, &str)]) {
        let scrubber = s();
        for (text, want) in cases {
            assert_eq!(scrubber.scrub(text, None), *want, "input {text:?}");
        }
    }

    /// An international number followed by other digit groups (a roofer's measurements, a
    /// year) is scrubbed whole, and only the number: the pattern's groups run on into them.
    #[test]
    fn export_pii_intl_phone_followed_by_digits() {
        assert_scrubs(&[
            (
                "Call +44 20 7946 0958 12000 sq ft",
                "Call [PHONE] 12000 sq ft",
            ),
            ("+44 20 7946 0958 2026", "[PHONE] 2026"),
            ("+1 555 123 4567 2024 12 3", "[PHONE] 2024 12 3"),
            ("or +44 20 7946 0958 12000.", "or [PHONE] 12000."),
            ("+44 (20) 7946 0958 2026", "[PHONE] 2026"),
            ("+44 20 7946 0958 12000sqft", "[PHONE] 12000sqft"),
            // Alone, and a run of digits too long to be a number, as before.
            ("+44 20 7946 0958", "[PHONE]"),
            ("+1 555 123 4567.", "[PHONE]."),
            (
                "id +12345678901234567890 end",
                "id +12345678901234567890 end",
            ),
        ]);
    }

    /// Addresses with non-ASCII letters (names, IDN domains) and addresses and numbers inside
    /// text written without spaces are scrubbed.
    #[test]
    fn export_pii_non_ascii_neighbours_and_letters() {
        assert_scrubs(&[
            (
                "Email me at jöhn.müller@example.de today",
                "Email me at [EMAIL] today",
            ),
            (
                "Email me at bob@exämple.de today",
                "Email me at [EMAIL] today",
            ),
            ("mail zoë@example.com", "mail [EMAIL]"),
            ("mail zoe\u{308}@example.com", "mail [EMAIL]"),
            ("пишите иван@пример.рф", "пишите [EMAIL]"),
            ("请发邮件到bob@example.com谢谢", "请发邮件到[EMAIL]谢谢"),
            ("请致电555-123-4567关于", "请致电[PHONE]关于"),
            ("電話+81 3 1234 5678まで", "電話[PHONE]まで"),
            ("010-1234-5678로 연락", "010-1234-5678로 연락"),
            ("전화 555-123-4567로 연락", "전화 [PHONE]로 연락"),
            ("โทร 555-123-4567ครับ", "โทร [PHONE]ครับ"),
        ]);
    }

    /// Extensions go with the number.
    #[test]
    fn export_pii_phone_extensions() {
        assert_scrubs(&[
            ("Call 555-123-4567x204 today", "Call [PHONE] today"),
            ("Call 555-123-4567ext204 today", "Call [PHONE] today"),
            ("Call 555-123-4567 ext. 204 today", "Call [PHONE] today"),
            ("Call (555) 123-4567 x 12", "Call [PHONE]"),
            ("Call 555-123-4567 extension 9", "Call [PHONE]"),
            ("Call +44 20 7946 0958 ext. 204", "Call [PHONE]"),
            ("Call +44 20 7946 0958x204 now", "Call [PHONE] now"),
        ]);
    }

    /// Still glued, still left alone: a number inside a longer token of Latin letters or
    /// digits.
    #[test]
    fn export_pii_glued_tokens_survive() {
        for t in [
            "part ABC555-123-4567",
            "part 555-123-4567B",
            "sku 9555-123-4567",
            "ref müller555-123-4567",
        ] {
            assert_eq!(s().scrub(t, None), t);
        }
    }

    /// Ordinary quantities, dates and prices are not phone numbers.
    #[test]
    fn export_pii_quantities_dates_prices_survive() {
        for t in [
            "12000 sq ft",
            "2026-11-29",
            "$4,500",
            "R-38 insulation",
            "3/12 pitch",
            "Quote 2026-11-29: 12000 sq ft at $4,500, R-38 insulation, 3/12 pitch, 2x6 rafters.",
            "请在2026-11-29前完成12000平方英尺",
        ] {
            assert_eq!(s().scrub(t, None), t);
        }
    }

    proptest::proptest! {
        #[test]
        fn export_pii_ten_digits_counted_like_a_filter(s in "[a1 ]{0,300}") {
            let want = s.bytes().filter(u8::is_ascii_digit).count() >= 10;
            proptest::prop_assert_eq!(has_ten_digits(s.as_bytes()), want);
        }
    }

    /// A phone-run precheck, by name.
    #[cfg(target_arch = "x86_64")]
    type Precheck = (&'static str, fn(&[u8]) -> bool);

    /// The phone-run prechecks this CPU can run (AVX-512, AVX2).
    #[cfg(target_arch = "x86_64")]
    fn phone_run_prechecks() -> Vec<Precheck> {
        use std::arch::is_x86_feature_detected as has;
        let mut all: Vec<Precheck> = Vec::new();
        if has!("avx512f") && has!("avx512bw") {
            // SAFETY: the CPU supports the enabled target features.
            all.push(("avx512", |b| unsafe { has_phone_run_avx512(b) }));
        }
        if has!("avx2") {
            // SAFETY: as above.
            all.push(("avx2", |b| unsafe { has_phone_run_avx2(b) }));
        }
        all
    }

    /// Each phone-run precheck is exact about its run (so it never skips a text the US
    /// pattern matches), at every offset across the overlapping windows.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn export_pii_phone_run_precheck_finds_every_run() {
        let run = |b: &[u8]| {
            b.windows(8).any(|w| {
                w[..3].iter().chain(&w[4..]).all(u8::is_ascii_digit)
                    && matches!(w[3], b' ' | b'.' | b'-')
            })
        };
        let scrubber = s();
        for (name, precheck) in phone_run_prechecks() {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let alphabet = b"1111 .-a(";
            let (mut runs, mut phones) = (0, 0);
            for _ in 0..20_000 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = (state >> 33) as usize % 200;
                let t: String = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                        alphabet[(state >> 40) as usize % alphabet.len()] as char
                    })
                    .collect();
                let want = run(t.as_bytes());
                assert_eq!(precheck(t.as_bytes()), want, "{name}: {t:?}");
                runs += want as usize;
                if scrubber.us_phone.is_match(&t) {
                    phones += 1;
                    assert!(want, "{t:?}");
                }
            }
            assert!(runs > 1000 && phones > 20, "{runs} runs, {phones} phones");
            // Runs across the windows' edges (AVX-512: bytes 56..64 are in the first two
            // windows; AVX2: the 32-byte blocks and the zero-padded last one), and at the very
            // end of the text.
            for at in 40..80 {
                let t = format!("{}555-9876{}", "x".repeat(at), "x".repeat(at % 3));
                assert!(precheck(t.as_bytes()), "{name}: at {at}");
                let t = format!("{}555-987", "x".repeat(at));
                assert!(!precheck(t.as_bytes()), "{name}: at {at}");
            }
        }
    }

    /// A US number far into a long text, after a first block without digits, is still found.
    #[test]
    fn export_pii_phone_after_the_first_block() {
        let t = format!("{} call 555-987-6543 today", "roof ".repeat(40));
        assert!(s().scrub(&t, None).contains("[PHONE]"));
        let nine = format!("{} 555-987-654", "roof ".repeat(40));
        assert!(!has_ten_digits(nine.as_bytes()));
    }

    #[test]
    fn export_pii_user_id_becomes_pseudonym() {
        let out = s().scrub("I am jdoe42, not jdoe425.", Some("jdoe42"));
        let p = pseudonymize(b"k", "jdoe42");
        assert_eq!(out, format!("I am [USER_{p}], not jdoe425."));
        assert_ne!(pseudonymize(b"other", "jdoe42"), p);
    }
}
