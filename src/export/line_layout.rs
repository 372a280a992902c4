//! Reads an example line laid out exactly as the collector writes it, without serde.
//!
//! Every example line in a segment was written by [`crate::record::TrainingExample::write_json`]
//! (byte for byte what `serde_json` writes, proptested there): the same keys in the same
//! order, no whitespace, the six seed metadata keys first and any extras after them. Reading
//! such a line field by field, by comparing it with that layout, takes less than half the
//! time serde's derived deserializer takes (which matches every key against every field name,
//! and reads the texts' characters through a general string reader); that was a quarter of
//! export's reading work.
//!
//! It is only a shortcut: [`read`] gives `None` as soon as a line departs from that layout in
//! any way (a key out of place, whitespace, an escape outside the prompt and answer, a nested
//! extra, an unusual number, a field repeated), and the caller then parses the line with serde,
//! which decides whether it is an example and gives the error if not. What [`read`] does return
//! is what serde returns for that line; `export_line_layout_reads_like_serde` holds it to that
//! over generated lines and their variations.
//!
//! The caller takes what [`read`] returns only for a UTF-8 line without control characters
//! (JSON forbids them in strings, and outside strings they could only be whitespace, which
//! the layout has none of).

use super::prepare::{AnyStr, ExLine, MetaLine, ReqId};
use crate::record::{Feedback, Quality, Relevance};
use std::borrow::Cow;

/// Reads `line`, or `None` if it is not in the collector's own layout (see the module docs).
/// The tags are checked but kept only when `want_tags` (only the tag filters read them, and
/// their vector was one allocation per line).
pub(super) fn read(line: &str, want_tags: bool) -> Option<ExLine<'_>> {
    let mut c = Cursor { s: line, i: 0 };
    c.lit(b"{\"id\":")?;
    let id = c.plain_str()?;
    c.lit(b",\"timestamp\":")?;
    let timestamp = c.plain_str()?;
    c.lit(b",\"source\":")?;
    let source = c.plain_str()?;
    c.lit(b",\"prompt\":")?;
    let prompt = c.text()?;
    c.lit(b",\"response\":")?;
    let response = c.text()?;
    c.lit(b",\"metadata\":{\"skill_used\":")?;
    let skill_used = c.null_or(Cursor::plain_str)?.map(|_| AnyStr);
    c.lit(b",\"tier_handled\":")?;
    let tier_handled = c.null_or(Cursor::plain_str)?.map(|_| AnyStr);
    c.lit(b",\"latency_ms\":")?;
    let latency_ms = c.null_or(Cursor::f64)?;
    c.lit(b",\"user_id\":")?;
    let user_id = c.null_or(Cursor::plain_str)?.map(str::to_owned);
    c.lit(b",\"prompt_tokens\":")?;
    let prompt_tokens = c.usize()?;
    c.lit(b",\"response_tokens\":")?;
    let response_tokens = c.usize()?;
    let (mut request_id, mut request_id_seen) = (None, false);
    while c.lit(b",").is_some() {
        let key = c.plain_str()?;
        c.lit(b":")?;
        match key {
            // A seed key again: serde calls that a duplicate field.
            "skill_used" | "tier_handled" | "latency_ms" | "user_id" | "prompt_tokens"
            | "response_tokens" => return None,
            "request_id" if request_id_seen => return None,
            "request_id" => {
                request_id_seen = true;
                // `null` is no request id (an `Option`'s null), any other value is one.
                request_id = match c.peek()? {
                    b'"' => Some(ReqId::Str(Cow::Borrowed(c.plain_str()?))),
                    _ if c.lit(b"null").is_some() => None,
                    _ => {
                        c.scalar()?;
                        Some(ReqId::Other)
                    }
                }
            }
            _ => {
                if c.peek()? == b'"' {
                    c.plain_str()?;
                } else {
                    c.scalar()?;
                }
            }
        }
    }
    c.lit(b"},\"quality\":{\"user_feedback\":")?;
    let user_feedback = c.null_or(|c| match c.plain_str()? {
        "positive" => Some(Feedback::Positive),
        "negative" => Some(Feedback::Negative),
        _ => None,
    })?;
    c.lit(b",\"was_corrected\":")?;
    let was_corrected = c.bool()?;
    c.lit(b",\"verified_accurate\":")?;
    let verified_accurate = c.null_or(Cursor::bool)?;
    c.lit(b",\"domain_relevance\":")?;
    let domain_relevance = match c.plain_str()? {
        "high" => Relevance::High,
        "medium" => Relevance::Medium,
        "low" => Relevance::Low,
        _ => return None,
    };
    c.lit(b",\"auto_score\":")?;
    let auto_score = c.f64()?;
    c.lit(b"},\"tags\":[")?;
    let mut tags = Vec::new();
    if c.lit(b"]").is_none() {
        loop {
            let tag = c.plain_str()?;
            if want_tags {
                tags.push(Cow::Borrowed(tag));
            }
            if c.lit(b"]").is_some() {
                break;
            }
            c.lit(b",")?;
        }
    }
    c.lit(b",\"project_context\":")?;
    c.plain_str()?;
    c.lit(b",\"include_in_training\":")?;
    let include_in_training = c.bool()?;
    c.lit(b"}")?;
    if c.i != line.len() {
        return None;
    }
    Some(ExLine {
        id: Cow::Borrowed(id),
        timestamp: Cow::Borrowed(timestamp),
        source: Cow::Borrowed(source),
        prompt,
        response,
        metadata: MetaLine {
            skill_used,
            tier_handled,
            latency_ms,
            user_id,
            prompt_tokens,
            response_tokens,
            request_id,
        },
        quality: Quality {
            user_feedback,
            was_corrected,
            verified_accurate,
            domain_relevance,
            auto_score,
        },
        tags,
        project_context: AnyStr,
        include_in_training,
    })
}

/// A position in the line being read. Every method either reads what it names and moves on,
/// or gives `None` (the line is then left to serde, so where the cursor stopped is moot).
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.s.as_bytes()[self.i..]
    }

    fn peek(&self) -> Option<u8> {
        self.rest().first().copied()
    }

    /// Exactly the bytes `l` (an array, so that the comparison is inlined for its length
    /// instead of a `memcmp` call per key).
    fn lit<const N: usize>(&mut self, l: &[u8; N]) -> Option<()> {
        let next: &[u8; N] = self.rest().get(..N)?.try_into().ok()?;
        (next == l).then(|| self.i += N)
    }

    /// `null` (as `Some(None)`), or what `f` reads.
    fn null_or<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.lit(b"null").is_some() {
            Some(None)
        } else {
            f(self).map(Some)
        }
    }

    /// A string without escapes, as the slice of the line between its quotes.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let n = memchr::memchr2(b'"', b'\\', self.rest())?;
        if self.rest()[n] != b'"' {
            return None;
        }
        let start = self.i;
        self.i += n + 1;
        // Both ends are next to an ASCII quote, so they are character boundaries.
        self.s.get(start..start + n)
    }

    /// A prompt or answer: the slice of the line when it has no escapes, else decoded by
    /// serde_json (which rejects what it rejects in a whole line, e.g. a lone surrogate).
    fn text(&mut self) -> Option<Cow<'a, str>> {
        let open = self.i;
        self.lit(b"\"")?;
        let mut escaped = false;
        loop {
            let n = memchr::memchr2(b'"', b'\\', self.rest())?;
            if self.rest()[n] == b'"' {
                self.i += n + 1;
                break;
            }
            // A backslash and the character it escapes (a `\u` escape's hex digits hold
            // neither a quote nor a backslash).
            escaped = true;
            if n + 2 > self.rest().len() {
                return None;
            }
            self.i += n + 2;
        }
        let quoted = self.s.get(open..self.i)?;
        if escaped {
            serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&quoted[1..quoted.len() - 1]))
        }
    }

    fn bool(&mut self) -> Option<bool> {
        if self.lit(b"true").is_some() {
            Some(true)
        } else {
            self.lit(b"false").map(|_| false)
        }
    }

    /// A JSON number, by the grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    /// Returns its text and whether it is an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let b = self.rest();
        let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let mut k = usize::from(b.first() == Some(&b'-'));
        match b.get(k) {
            Some(b'0') => k += 1,
            Some(b'1'..=b'9') => k += digits(k),
            _ => return None,
        }
        let mut integer = true;
        if b.get(k) == Some(&b'.') {
            let n = digits(k + 1);
            if n == 0 {
                return None;
            }
            k += 1 + n;
            integer = false;
        }
        if matches!(b.get(k), Some(b'e' | b'E')) {
            k += 1;
            if matches!(b.get(k), Some(b'+' | b'-')) {
                k += 1;
            }
            let n = digits(k);
            if n == 0 {
                return None;
            }
            k += n;
            integer = false;
        }
        let text = self.s.get(self.i..self.i + k)?;
        self.i += k;
        Some((text, integer))
    }

    /// A number as serde_json reads it into an `f64`: correctly rounded (its integers go
    /// through `u64`/`i64`, whose conversion rounds the same way, and `-0` is `-0.0`); out of
    /// range is serde's error, so `None`.
    fn f64(&mut self) -> Option<f64> {
        let (text, _) = self.number()?;
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    /// A number that serde reads into a `usize`: a non-negative integer that fits.
    fn usize(&mut self) -> Option<usize> {
        match self.number()? {
            (text, true) if !text.starts_with('-') => text.parse().ok(),
            _ => None,
        }
    }

    /// A number, `true`, `false` or `null` (an extra metadata value that is not a string).
    fn scalar(&mut self) -> Option<()> {
        if self.lit(b"true").is_some() || self.lit(b"false").is_some() {
            return Some(());
        }
        if self.lit(b"null").is_some() {
            return Some(());
        }
        self.f64().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::arb_example;
    use crate::record::TrainingExample;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Everything export takes from a line, comparable (numbers by their bits).
    fn seen(x: &ExLine<'_>) -> String {
        let m = &x.metadata;
        let q = &x.quality;
        format!(
            "{:?}",
            (
                (&x.id, &x.timestamp, &x.source, &x.prompt, &x.response),
                (
                    m.skill_used.is_some(),
                    m.tier_handled.is_some(),
                    m.latency_ms.map(f64::to_bits),
                    &m.user_id,
                    m.prompt_tokens,
                    m.response_tokens,
                    match &m.request_id {
                        None => "absent".to_string(),
                        Some(ReqId::Str(s)) => format!("str {s:?}"),
                        Some(ReqId::Other) => "other".to_string(),
                    },
                ),
                (
                    q.user_feedback,
                    q.was_corrected,
                    q.verified_accurate,
                    q.domain_relevance,
                    q.auto_score.to_bits(),
                ),
                (x.tags.clone(), x.include_in_training),
            )
        )
    }

    /// The contract: where [`read`] reads a line at all, serde reads it, and the same.
    /// Returns whether [`read`] read it.
    fn read_like_serde(line: &str) -> Result<bool, TestCaseError> {
        let Some(fast) = read(line, true) else {
            return Ok(false);
        };
        match serde_json::from_str::<ExLine<'_>>(line) {
            Ok(strict) => prop_assert_eq!(seen(&fast), seen(&strict), "line {}", line),
            Err(e) => prop_assert!(false, "read a line serde rejects ({e}): {line}"),
        }
        Ok(true)
    }

    fn line_of(ex: &TrainingExample) -> String {
        let mut out = Vec::new();
        ex.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// An example as the collector writes them: strings outside the texts without anything
    /// JSON escapes, extras that are strings or scalars, finite numbers; texts anything.
    fn arb_plain_example() -> impl Strategy<Value = TrainingExample> {
        let plain = "[a-zA-Z0-9 ._:/é漢-]{0,12}";
        (
            arb_example(),
            (plain, plain, proptest::option::of(plain), plain),
            proptest::collection::vec(
                (
                    plain,
                    prop_oneof![
                        Just(Value::Null),
                        any::<bool>().prop_map(Value::from),
                        any::<i64>().prop_map(Value::from),
                        any::<u64>().prop_map(Value::from),
                        (-1e300f64..1e300).prop_map(Value::from),
                        plain.prop_map(Value::from),
                    ],
                ),
                0..4,
            ),
            (
                proptest::option::of(prop_oneof![
                    plain.prop_map(Value::from),
                    any::<u64>().prop_map(Value::from),
                    Just(Value::Null),
                ]),
                prop_oneof![
                    Just(Relevance::High),
                    Just(Relevance::Medium),
                    Just(Relevance::Low)
                ],
                -1e6f64..1e6,
                proptest::option::of(-1e9f64..1e9),
                proptest::collection::vec(plain, 0..4),
            ),
        )
            .prop_map(
                |(mut ex, (id, source, user, project), extra, (rid, rel, score, lat, tags))| {
                    ex.id = id;
                    ex.source = source;
                    ex.metadata.user_id = user.clone();
                    ex.metadata.skill_used = user;
                    ex.metadata.tier_handled = Some(project.clone());
                    ex.metadata.latency_ms = lat;
                    ex.metadata.extra = extra
                        .into_iter()
                        .filter(|(k, _)| !SEED_KEYS.contains(&k.as_str()))
                        .collect();
                    ex.metadata.extra.remove("request_id");
                    if let Some(r) = rid {
                        ex.metadata.extra.insert("request_id".into(), r);
                    }
                    ex.quality.domain_relevance = rel;
                    ex.quality.auto_score = score;
                    ex.tags = tags;
                    ex.project_context = project;
                    ex
                },
            )
    }

    const SEED_KEYS: [&str; 6] = [
        "skill_used",
        "tier_handled",
        "latency_ms",
        "user_id",
        "prompt_tokens",
        "response_tokens",
    ];

    proptest! {
        /// Lines as the collector writes them are read, as serde reads them.
        #[test]
        fn export_line_layout_reads_the_collectors_lines(ex in arb_plain_example()) {
            let line = line_of(&ex);
            prop_assert!(read_like_serde(&line)?, "not read: {}", line);
        }

        /// Any example, and any line one edit away from one: read only as serde reads it.
        #[test]
        fn export_line_layout_reads_like_serde(
            ex in prop_oneof![arb_example(), arb_plain_example()],
            edits in proptest::collection::vec(
                (any::<proptest::sample::Index>(), 0usize..12),
                0..3,
            ),
        ) {
            let mut line = line_of(&ex);
            read_like_serde(&line)?;
            for (at, what) in edits {
                let cuts: Vec<usize> = (0..=line.len()).filter(|&i| line.is_char_boundary(i)).collect();
                let i = cuts[at.index(cuts.len())];
                const INSERTS: [&str; 10] = [" ", ",", "\"", "\\", "0", "}", "-", "e", ".", "1"];
                match what {
                    0 => {
                        // Delete the character at i.
                        if let Some(c) = line[i..].chars().next() {
                            line.replace_range(i..i + c.len_utf8(), "");
                        }
                    }
                    1 => {
                        // Repeat the key and value that start before i (a duplicate field).
                        if let Some(k) = line[..i].rfind(",\"") {
                            let end = line[i..].find(',').map_or(line.len(), |e| i + e);
                            let dup = line[k..end].to_string();
                            line.insert_str(end, &dup);
                        }
                    }
                    n => line.insert_str(i, INSERTS[n - 2]),
                }
                read_like_serde(&line)?;
            }
        }

        /// Numbers come out as serde's, bit for bit, wherever they are read.
        #[test]
        fn export_line_layout_numbers_are_serdes(
            ex in arb_plain_example(),
            number in "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
        ) {
            let line = line_of(&ex);
            for key in [",\"auto_score\":", ",\"prompt_tokens\":", ",\"latency_ms\":"] {
                let start = line.find(key).unwrap() + key.len();
                let end = start + line[start..].find([',', '}']).unwrap();
                let mut l = line.clone();
                l.replace_range(start..end, &number);
                read_like_serde(&l)?;
            }
        }
    }

    /// Lines around the edges of the layout: each is read like serde or left to it, and
    /// the ones the collector may write are read.
    #[test]
    fn export_line_layout_edge_cases() {
        let ex = TrainingExample {
            id: "train_1".into(),
            timestamp: "2026-11-27T08:00:00.000000Z".into(),
            source: "chat".into(),
            prompt: "What is \"EPDM\"?\nAsk.".into(),
            response: "A membrane \\ roof.".into(),
            metadata: Default::default(),
            quality: Quality {
                user_feedback: None,
                was_corrected: false,
                verified_accurate: None,
                domain_relevance: Relevance::High,
                auto_score: 1.0,
            },
            tags: vec!["epdm".into()],
            project_context: String::new(),
            include_in_training: true,
        };
        let base = line_of(&ex);
        let read_ok = |line: &str| read_like_serde(line).unwrap();
        assert!(read_ok(&base), "{base}");
        let with = |from: &str, to: &str| {
            assert!(base.contains(from), "{from}");
            base.replacen(from, to, 1)
        };
        // Read, and as serde reads them.
        for line in [
            with("\"auto_score\":1.0", "\"auto_score\":-0"),
            with("\"auto_score\":1.0", "\"auto_score\":-0.0"),
            with("\"auto_score\":1.0", "\"auto_score\":18446744073709551616"),
            with(
                "\"auto_score\":1.0",
                "\"auto_score\":0.30000000000000004441",
            ),
            with(
                "\"response_tokens\":0",
                "\"response_tokens\":0,\"request_id\":7",
            ),
            with(
                "\"response_tokens\":0",
                "\"response_tokens\":0,\"request_id\":\"r-1\"",
            ),
            with(
                "\"response_tokens\":0",
                "\"response_tokens\":0,\"origin_file\":null",
            ),
            with("\"user_feedback\":null", "\"user_feedback\":\"negative\""),
            with("\"prompt\":\"", "\"prompt\":\"\\u00e9\\ud83d\\ude00"),
        ] {
            assert!(read_ok(&line), "{line}");
        }
        // Left to serde (which may or may not take them).
        for line in [
            with("\"auto_score\":1.0", "\"auto_score\":1e400"),
            with("\"auto_score\":1.0", "\"auto_score\":01"),
            with("\"auto_score\":1.0", "\"auto_score\":1."),
            with("\"auto_score\":1.0", "\"auto_score\":.5"),
            with("\"auto_score\":1.0", "\"auto_score\":null"),
            with("\"prompt_tokens\":0", "\"prompt_tokens\":1.0"),
            with("\"prompt_tokens\":0", "\"prompt_tokens\":-1"),
            with(
                "\"prompt_tokens\":0",
                "\"prompt_tokens\":18446744073709551616",
            ),
            with(
                "\"response_tokens\":0",
                "\"response_tokens\":0,\"request_id\":\"a\",\"request_id\":\"b\"",
            ),
            with(
                "\"response_tokens\":0",
                "\"response_tokens\":0,\"user_id\":\"u\"",
            ),
            with(
                "\"response_tokens\":0",
                "\"response_tokens\":0,\"request_id\":[1]",
            ),
            with("\"response_tokens\":0", "\"response_tokens\":0,\"x\":{}"),
            with("\"id\":\"train_1\"", "\"id\":\"train\\u005f1\""),
            with("\"id\":\"train_1\"", "\"id\": \"train_1\""),
            with("\"prompt\":\"", "\"prompt\":\"\\ud800"),
            with("\"user_feedback\":null", "\"user_feedback\":\"Positive\""),
            with(
                "\"domain_relevance\":\"high\"",
                "\"domain_relevance\":\"High\"",
            ),
            with("\"project_context\":\"\"", "\"project_context\":null"),
            with("\"tags\":[\"epdm\"]", "\"tags\":[\"epdm\",]"),
            with("\"tags\":[\"epdm\"]", "\"tags\":[1]"),
            with(
                ",\"include_in_training\":true}",
                ",\"include_in_training\":true,\"x\":1}",
            ),
            format!("{base} "),
            base[..base.len() - 1].to_string(),
        ] {
            assert!(!read_ok(&line), "read: {line}");
        }
    }
}
