//! The seed's capture kinds as functions that build records: a chat interaction, a
//! calculation, a spec Q&A, a generated document and a correction. Each keeps the seed's
//! prompt/response formatting, `source` and tags exactly, and gets a deterministic id.
//!
//! Ids: `train_YYYYMMDD_HHMMSS_` + 16 hex digits of an MD5 over the interaction's identity
//! (the request id when the log has one, else the source file's fingerprint and byte offset,
//! or the spool event's id) and its content. The time part is the interaction's own
//! timestamp; an interaction without one gets `00000000_000000`, because the capture time
//! would give a re-read line a different id. Correction ids (`corr_...`) hash the event's
//! identity and all four texts, so two corrections in one second never collide.

use crate::enrich::Enricher;
use crate::record::{CorrectionQuality, CorrectionRecord, Metadata, Quality, TrainingExample};
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde_json::{Map, Value};

/// What makes one interaction distinct from every other, for its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The service's own request id.
    RequestId(String),
    /// A line of a tailed file: the file's stable fingerprint and the line's byte offset.
    Position { fingerprint: String, offset: u64 },
    /// An event from the spool or the CLI, identified by its own id.
    Event(String),
}

impl Identity {
    fn key(&self) -> String {
        match self {
            Identity::RequestId(r) => format!("req\u{1f}{r}"),
            Identity::Position {
                fingerprint,
                offset,
            } => format!("pos\u{1f}{fingerprint}\u{1f}{offset}"),
            Identity::Event(e) => format!("evt\u{1f}{e}"),
        }
    }
}

/// A chat interaction as the seed's `capture()` takes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interaction {
    pub prompt: String,
    pub response: String,
    /// Defaults to "chat".
    pub source: Option<String>,
    pub skill_used: Option<String>,
    pub tier: Option<String>,
    pub latency_ms: Option<f64>,
    /// Given tags replace the auto tags (seed semantics).
    pub tags: Option<Vec<String>>,
    /// Defaults to "general".
    pub project: Option<String>,
    pub user_id: Option<String>,
    pub request_id: Option<String>,
    /// The interaction's own time; `None` stamps the capture time.
    pub timestamp: Option<DateTime<Utc>>,
    /// Extra metadata keys (origin file, offset, system prompt, ...).
    pub extra: Map<String, Value>,
}

mod md5_lanes;

/// 16 hex digits of an MD5 over `parts`, each followed by a separator byte (so
/// `["ab", "c"]` and `["a", "bc"]` differ): the hash part of every id the collector makes.
pub(crate) fn md5_hex16(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1e]);
    }
    hex16(&h.finalize()[..8])
}

/// The first 8 bytes of a digest as 16 lowercase hex digits (per example, on the hot path:
/// no allocation per digit).
fn hex16(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
    out
}

/// `%Y%m%d_%H%M%S` of the time, written directly (chrono's `format` parses the format string
/// on every call, which showed in the ingest profile).
fn id_time(ts: Option<DateTime<Utc>>) -> String {
    use chrono::{Datelike, Timelike};
    match ts {
        // chrono writes a sign for years outside 0..=9999; keep its exact output there.
        Some(t) if !(0..=9999).contains(&t.year()) => t.format("%Y%m%d_%H%M%S").to_string(),
        Some(t) => format!(
            "{:04}{:02}{:02}_{:02}{:02}{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => "00000000_000000".to_string(),
    }
}

/// Python's `str.strip()`, which the seed applies to every text it stores: Rust's `trim`
/// and Python agree on Unicode whitespace except the four ASCII separator controls
/// (0x1C..0x1F), which Python strips too (and counts as spaces between words, see
/// [`crate::enrich::token_count`]).
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.isspace` for one character (what `strip()` and `split()` go by).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// [`py_strip`] into an owned text, without the copy when there is nothing to strip (the
/// usual case; responses are kilobytes).
fn trimmed(s: String) -> String {
    let t = py_strip(&s);
    if t.len() == s.len() {
        s
    } else {
        t.to_string()
    }
}

/// The deterministic example id for an interaction.
pub fn example_id(
    identity: &Identity,
    timestamp: Option<DateTime<Utc>>,
    prompt: &str,
    response: &str,
) -> String {
    format!(
        "train_{}_{}",
        id_time(timestamp),
        md5_hex16(&[&identity.key(), prompt, response])
    )
}

/// [`example_id`] of many interactions at once: their MD5s run side by side, which is
/// several times faster per id than one after another.
pub fn example_ids(interactions: &[(&Identity, &Interaction)]) -> Vec<String> {
    let keys: Vec<String> = interactions.iter().map(|(id, _)| id.key()).collect();
    let digests = md5_lanes::digests(interactions.len(), 0x1e, |i| {
        let it = interactions[i].1;
        [
            keys[i].as_bytes(),
            it.prompt.as_bytes(),
            it.response.as_bytes(),
        ]
    });
    interactions
        .iter()
        .zip(digests)
        .map(|((_, it), d)| format!("train_{}_{}", id_time(it.timestamp), hex16(&d)))
        .collect()
}

/// Seed `capture()`: builds the example (enriched, tagged, with a deterministic id).
pub fn capture(enricher: &Enricher, identity: &Identity, it: Interaction) -> TrainingExample {
    let id = example_id(identity, it.timestamp, &it.prompt, &it.response);
    capture_with_id(enricher, id, it)
}

/// [`capture`] with the id already made (by [`example_ids`] for a batch).
pub fn capture_with_id(enricher: &Enricher, id: String, it: Interaction) -> TrainingExample {
    let enrichment = enricher.enrich(&it.prompt, &it.response);
    let tags = it.tags.unwrap_or(enrichment.tags);
    let timestamp = crate::clock::rfc3339(it.timestamp.unwrap_or_else(crate::clock::now));
    let mut extra = it.extra;
    if let Some(r) = it.request_id {
        extra.insert("request_id".into(), Value::String(r));
    }
    TrainingExample {
        id,
        timestamp,
        source: it.source.unwrap_or_else(|| "chat".to_string()),
        prompt: trimmed(it.prompt),
        response: trimmed(it.response),
        metadata: Metadata {
            skill_used: it.skill_used,
            tier_handled: it.tier,
            latency_ms: it.latency_ms,
            user_id: it.user_id,
            prompt_tokens: enrichment.prompt_tokens,
            response_tokens: enrichment.response_tokens,
            extra,
        },
        quality: Quality {
            user_feedback: None,
            was_corrected: false,
            verified_accurate: None,
            domain_relevance: enrichment.relevance,
            auto_score: enrichment.auto_score,
        },
        tags,
        project_context: it.project.unwrap_or_else(|| "general".to_string()),
        include_in_training: true,
    }
}

/// A calculation (seed `capture_calculation`).
#[derive(Debug, Clone)]
pub struct Calculation {
    pub description: String,
    pub inputs: Map<String, Value>,
    pub formula: String,
    pub result: Value,
    pub explanation: String,
    pub verified: bool,
}

/// Why a capture kind's fields cannot make an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("calculation description is empty (its first word becomes a tag)")]
    EmptyDescription,
}

/// Seed `capture_calculation`: `Calculate {description}: {json.dumps(inputs)}`.
pub fn calculation(
    enricher: &Enricher,
    identity: &Identity,
    calc: Calculation,
    base: Interaction,
) -> Result<TrainingExample, CaptureError> {
    let first = calc
        .description
        .split(is_py_space)
        .find(|w| !w.is_empty())
        .ok_or(CaptureError::EmptyDescription)?
        .to_lowercase();
    let prompt = format!(
        "Calculate {}: {}",
        calc.description,
        python_json(&Value::Object(calc.inputs))
    );
    let response = format!(
        "{}\n\nFormula: {}\nResult: {}",
        calc.explanation,
        calc.formula,
        python_str(&calc.result)
    );
    let source = if calc.verified {
        "verified_calculation"
    } else {
        "calculation"
    };
    Ok(capture(
        enricher,
        identity,
        Interaction {
            prompt,
            response,
            source: Some(source.into()),
            tags: Some(vec!["calculation".into(), first]),
            ..base
        },
    ))
}

/// Seed `capture_spec_qa`: the answer plus an optional quoted spec reference.
pub fn spec_qa(
    enricher: &Enricher,
    identity: &Identity,
    spec_section: &str,
    question: String,
    answer: String,
    quote: Option<&str>,
    base: Interaction,
) -> TrainingExample {
    let mut response = answer;
    if let Some(q) = quote.filter(|q| !q.is_empty()) {
        response.push_str(&format!("\n\nSpec reference: \"{q}\""));
    }
    capture(
        enricher,
        identity,
        Interaction {
            prompt: question,
            response,
            source: Some("spec_interpretation".into()),
            tags: Some(vec!["specs".into(), spec_section.replace(' ', "-")]),
            ..base
        },
    )
}

/// Seed `capture_document`: `{doc_type}_generation` with `was_used` and `modifications`.
#[allow(clippy::too_many_arguments)]
pub fn document(
    enricher: &Enricher,
    identity: &Identity,
    doc_type: &str,
    prompt: String,
    generated_doc: String,
    was_used: bool,
    modifications: &str,
    base: Interaction,
) -> TrainingExample {
    let mut ex = capture(
        enricher,
        identity,
        Interaction {
            prompt,
            response: generated_doc,
            source: Some(format!("{doc_type}_generation")),
            tags: Some(vec![doc_type.to_string(), "document-generation".into()]),
            ..base
        },
    );
    ex.metadata
        .extra
        .insert("was_used".into(), Value::Bool(was_used));
    ex.metadata
        .extra
        .insert("modifications".into(), Value::String(modifications.into()));
    ex
}

/// A correction as it arrives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Correction {
    pub original_prompt: String,
    pub original_response: String,
    pub corrected_response: String,
    pub reason: Option<String>,
    /// Defaults to "user".
    pub corrector: Option<String>,
    /// The original's example id or the service's request id, when the sender knows it.
    pub target: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// Seed `record_correction`: the correction record plus the `verified_correction` example
/// (the original prompt with the corrected response, tagged from both).
pub fn correction(
    enricher: &Enricher,
    identity: &Identity,
    c: Correction,
) -> (CorrectionRecord, TrainingExample) {
    let tags = enricher.auto_tags(&c.original_prompt, &c.corrected_response);
    let key = identity.key();
    let id = format!(
        "corr_{}_{}",
        id_time(c.timestamp),
        md5_hex16(&[
            &key,
            &c.original_prompt,
            &c.original_response,
            &c.corrected_response
        ])
    );
    let example = capture(
        enricher,
        &Identity::Event(format!("{key}\u{1f}corrected")),
        Interaction {
            prompt: c.original_prompt.clone(),
            response: c.corrected_response.clone(),
            source: Some("verified_correction".into()),
            tags: Some(tags.clone()),
            timestamp: c.timestamp,
            ..Interaction::default()
        },
    );
    let (original_example_id, original_request_id) = match c.target {
        Some(t) if t.starts_with("train_") => (Some(t), None),
        Some(t) => (None, Some(t)),
        None => (None, None),
    };
    let record = CorrectionRecord {
        id,
        timestamp: example.timestamp.clone(),
        source: "user_correction".into(),
        original_prompt: py_strip(&c.original_prompt).to_string(),
        original_response: py_strip(&c.original_response).to_string(),
        corrected_response: py_strip(&c.corrected_response).to_string(),
        correction_reason: c.reason,
        corrector: c.corrector.unwrap_or_else(|| "user".into()),
        quality: CorrectionQuality::default(),
        tags,
        include_in_training: true,
        original_example_id,
        original_request_id,
        example_id: Some(example.id.clone()),
    };
    (record, example)
}

/// Python's `json.dumps(v)` with default arguments: `", "` and `": "` separators and
/// non-ASCII escaped as `\uXXXX`, so calculation prompts match the seed byte for byte.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_python(v, PythonStyle::JsonDumps, &mut out);
    out
}

/// Which of Python's two ways of writing a value: `json.dumps` (`null`, `true`, strings
/// JSON-escaped) or `repr` (`None`, `True`, strings quoted as Python quotes them). Numbers,
/// lists and dicts are written alike.
#[derive(Clone, Copy)]
enum PythonStyle {
    JsonDumps,
    Repr,
}

fn write_python(v: &Value, style: PythonStyle, out: &mut String) {
    let repr = matches!(style, PythonStyle::Repr);
    let string = |s: &str, out: &mut String| {
        if repr {
            write_python_str_repr(s, out)
        } else {
            write_python_string(s, out)
        }
    };
    match v {
        Value::Null => out.push_str(if repr { "None" } else { "null" }),
        Value::Bool(b) => out.push_str(match (repr, b) {
            (true, true) => "True",
            (true, false) => "False",
            (false, true) => "true",
            (false, false) => "false",
        }),
        Value::Number(n) => out.push_str(&python_number(n)),
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(x, style, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(k, out);
                out.push_str(": ");
                write_python(x, style, out);
            }
            out.push('}');
        }
    }
}

fn write_python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr` of a JSON number (what both `json.dumps` and `str` print): integers as
/// is, floats as [`python_float`].
fn python_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => python_float(f),
        _ => n.to_string(),
    }
}

/// Python's `float.__repr__`: the shortest digits that read back as the same float (Rust's
/// `{:e}` gives the same ones), in positional notation for decimal exponents -4 to 15 (with
/// `.0` when whole) and otherwise as `d.ddde+XX`, the exponent signed and at least two
/// digits: `1e-05`, `1.5e-07`, `1e+16`, where serde_json writes `0.00001` and `1.5e-7`.
fn python_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} writes a decimal exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}e{esign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let point = exp as usize + 1;
    if digits.len() <= point {
        format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

/// Python's `str(result)` for a JSON value: strings bare, everything else as Python's
/// `repr` of what `json.loads` makes of it (`{'squares': 132, 'ok': True}`).
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            write_python(other, PythonStyle::Repr, &mut out);
            out
        }
    }
}

/// Python's `repr` of a string: single quotes, or double quotes when it holds a `'` and no
/// `"`; backslash escapes for the quote, `\\`, `\n`, `\r`, `\t` and characters Python does
/// not print (see [`python_printable`]).
fn write_python_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if python_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for one character: not a control, format, separator (other
/// than the space) or private-use character. Unassigned code points, which Python also
/// escapes, are printed: telling them apart needs the Unicode tables, and a calculation's
/// result does not hold them.
fn python_printable(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || matches!(u, 0xa0 | 0xad | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064)
        || matches!(u, 0x2066..=0x206f | 0x3000 | 0xfeff | 0xfff9..=0xfffb | 0x600..=0x605)
        || matches!(
            u,
            0x61c | 0x6dd | 0x70f | 0x180e | 0xe0001 | 0xe0020..=0xe007f
        )
        || matches!(u, 0xe000..=0xf8ff | 0xf0000..=0x10ffff))
}

#[cfg(test)]
mod tests {
    /// The two ways Python writes one value, as `python3 -c 'v = json.loads(...);
    /// print(json.dumps(v)); print(str(v))'` printed them.
    #[test]
    fn values_are_written_as_python_dumps_and_prints_them() {
        let v: Value = serde_json::from_str(
            r#"{"ok": true, "no": false, "none": null, "xs": [1.5, 2, "\u00e9's"]}"#,
        )
        .unwrap();
        assert_eq!(
            python_json(&v),
            r#"{"ok": true, "no": false, "none": null, "xs": [1.5, 2, "\u00e9's"]}"#
        );
        assert_eq!(
            python_str(&v),
            r#"{'ok': True, 'no': False, 'none': None, 'xs': [1.5, 2, "é's"]}"#
        );
    }
    use proptest::prelude::*;

    proptest! {
        /// The hand-written id time and hex are what chrono's format and `{:02x}` give.
        #[test]
        fn id_parts_match_the_formatting_they_replace(secs in -70_000_000_000i64..300_000_000_000i64, parts in proptest::collection::vec(".{0,20}", 0..4)) {
            let t = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0).unwrap();
            prop_assert_eq!(super::id_time(Some(t)), t.format("%Y%m%d_%H%M%S").to_string());
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let mut h = <md5::Md5 as md5::Digest>::new();
            for p in &refs {
                md5::Digest::update(&mut h, p.as_bytes());
                md5::Digest::update(&mut h, [0x1e]);
            }
            let want: String = md5::Digest::finalize(h)[..8].iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(super::md5_hex16(&refs), want);
        }
    }

    proptest! {
        /// Ids made in a batch (MD5s side by side) are the ids made one by one.
        #[test]
        fn batch_ids_equal_single_ids(
            items in proptest::collection::vec(
                (".{0,30}", ".{0,200}", proptest::option::of("[a-z0-9-]{0,12}"), any::<u32>(), proptest::option::of(0i64..4_000_000_000)),
                0..11),
        ) {
            let made: Vec<(super::Identity, super::Interaction)> = items
                .into_iter()
                .map(|(prompt, response, req, offset, secs)| {
                    let identity = match req {
                        Some(r) => super::Identity::RequestId(r),
                        None => super::Identity::Position { fingerprint: "f00d".into(), offset: offset.into() },
                    };
                    let timestamp = secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0));
                    (identity, super::Interaction { prompt, response, timestamp, ..Default::default() })
                })
                .collect();
            let pairs: Vec<(&super::Identity, &super::Interaction)> = made.iter().map(|(i, it)| (i, it)).collect();
            let singles: Vec<String> = made
                .iter()
                .map(|(i, it)| super::example_id(i, it.timestamp, &it.prompt, &it.response))
                .collect();
            prop_assert_eq!(super::example_ids(&pairs), singles);
        }
    }

    use super::*;
    use crate::config::DomainConfig;
    use chrono::TimeZone;

    fn enricher() -> Enricher {
        Enricher::new(&DomainConfig::default())
    }

    fn at() -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 5).unwrap())
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let pos = |o| Identity::Position {
            fingerprint: "abc".into(),
            offset: o,
        };
        let a = example_id(&pos(0), at(), "p", "r");
        assert_eq!(a, example_id(&pos(0), at(), "p", "r"));
        assert!(a.starts_with("train_20261127_080005_"));
        assert_eq!(a.len(), "train_20261127_080005_".len() + 16);
        assert_ne!(a, example_id(&pos(1), at(), "p", "r"));
        assert_ne!(a, example_id(&pos(0), at(), "p", "r2"));
        assert!(example_id(&pos(0), None, "p", "r").starts_with("train_00000000_000000_"));
    }

    #[test]
    fn capture_keeps_the_seed_fields() {
        let ex = capture(
            &enricher(),
            &Identity::RequestId("req-1".into()),
            Interaction {
                prompt: "  What's the TPO seam overlap?  ".into(),
                response: "2.5 inches per Carlisle.".into(),
                request_id: Some("req-1".into()),
                timestamp: at(),
                ..Interaction::default()
            },
        );
        assert_eq!(ex.prompt, "What's the TPO seam overlap?");
        assert_eq!(ex.source, "chat");
        assert_eq!(ex.project_context, "general");
        assert_eq!(ex.metadata.prompt_tokens, 5);
        assert_eq!(ex.metadata.request_id(), Some("req-1"));
        assert_eq!(ex.timestamp, "2026-11-27T08:00:05.000000Z");
        assert_eq!(ex.tags, vec!["tpo"]);
    }

    #[test]
    fn calculation_formats_like_the_seed() {
        let mut inputs = Map::new();
        inputs.insert("area_sqft".into(), Value::from(12000));
        inputs.insert("waste".into(), Value::from(0.1));
        inputs.insert("note".into(), Value::from("café"));
        let ex = calculation(
            &enricher(),
            &Identity::Event("e1".into()),
            Calculation {
                description: "Membrane quantity".into(),
                inputs,
                formula: "area * (1 + waste) / 100".into(),
                result: Value::from(132.0),
                explanation: "Squares of membrane needed.".into(),
                verified: true,
            },
            Interaction::default(),
        )
        .unwrap();
        assert_eq!(
            ex.prompt,
            "Calculate Membrane quantity: {\"area_sqft\": 12000, \"waste\": 0.1, \"note\": \"caf\\u00e9\"}"
        );
        assert_eq!(
            ex.response,
            "Squares of membrane needed.\n\nFormula: area * (1 + waste) / 100\nResult: 132.0"
        );
        assert_eq!(ex.source, "verified_calculation");
        assert_eq!(ex.tags, vec!["calculation", "membrane"]);
    }

    #[test]
    fn the_calculation_tag_is_the_first_word_as_python_splits_it() {
        // Python: "Membrane\x1cquantity".split()[0].lower() == "membrane".
        for description in ["Membrane\u{1c}quantity", "\u{1f} Membrane quantity"] {
            let ex = calculation(
                &enricher(),
                &Identity::Event("e1".into()),
                Calculation {
                    description: description.into(),
                    inputs: Map::new(),
                    formula: "f".into(),
                    result: Value::from(1),
                    explanation: "x".into(),
                    verified: true,
                },
                Interaction::default(),
            )
            .unwrap();
            assert_eq!(ex.tags, vec!["calculation", "membrane"], "{description:?}");
        }
    }

    #[test]
    fn floats_print_as_python_prints_them() {
        // What Python 3's repr() gives for each.
        for (f, want) in [
            (0.1, "0.1"),
            (132.0, "132.0"),
            (-0.0, "-0.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.30000000000000004, "0.30000000000000004"),
            (123456789.125, "123456789.125"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e29, "1.2345678901234568e+29"),
            (-2.5e-300, "-2.5e-300"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(python_float(f), want, "{f:e}");
        }
    }

    #[test]
    fn results_print_as_python_prints_them() {
        let v: Value = serde_json::from_str(
            r#"{"squares": 132, "rolls": [14, 2.5, null, true, false], "note": "it's \"ok\"", "plain": "café\n\u00a0x"}"#,
        )
        .unwrap();
        // Python 3: str(json.loads(...)) of the same text.
        assert_eq!(
            python_str(&v),
            r#"{'squares': 132, 'rolls': [14, 2.5, None, True, False], 'note': 'it\'s "ok"', 'plain': 'café\n\xa0x'}"#
        );
        assert_eq!(python_str(&serde_json::json!(["it's"])), r#"["it's"]"#);
        assert_eq!(python_str(&serde_json::json!("bare")), "bare");
        assert_eq!(python_str(&serde_json::json!(1e-5)), "1e-05");
    }

    #[test]
    fn spec_qa_and_document_keep_seed_tags() {
        let e = enricher();
        let ex = spec_qa(
            &e,
            &Identity::Event("e2".into()),
            "07 54 23",
            "Min seam width?".into(),
            "1.5 inches welded.".into(),
            Some("Seams shall be 1.5 in."),
            Interaction::default(),
        );
        assert_eq!(ex.tags, vec!["specs", "07-54-23"]);
        assert_eq!(ex.source, "spec_interpretation");
        assert!(ex
            .response
            .ends_with("\n\nSpec reference: \"Seams shall be 1.5 in.\""));
        let doc = document(
            &e,
            &Identity::Event("e3".into()),
            "rfi",
            "Write an RFI".into(),
            "RFI #12 ...".into(),
            false,
            "minor edits",
            Interaction::default(),
        );
        assert_eq!(doc.source, "rfi_generation");
        assert_eq!(doc.tags, vec!["rfi", "document-generation"]);
        assert_eq!(doc.metadata.extra["was_used"], Value::Bool(false));
        assert_eq!(doc.metadata.extra["modifications"], "minor edits");
    }

    #[test]
    fn correction_links_and_never_collides() {
        let e = enricher();
        let c = Correction {
            original_prompt: "What's the seam overlap for TPO?".into(),
            original_response: "2 inches minimum".into(),
            corrected_response: "2.5 inches minimum per most manufacturers.".into(),
            target: Some("req-9".into()),
            timestamp: at(),
            ..Correction::default()
        };
        let (rec, ex) = correction(&e, &Identity::Event("a".into()), c.clone());
        let (rec2, _) = correction(&e, &Identity::Event("b".into()), c);
        assert_ne!(rec.id, rec2.id);
        assert!(rec.id.starts_with("corr_20261127_080005_"));
        assert_eq!(rec.original_request_id.as_deref(), Some("req-9"));
        assert_eq!(rec.example_id.as_deref(), Some(ex.id.as_str()));
        assert_eq!(ex.source, "verified_correction");
        assert_eq!(ex.response, "2.5 inches minimum per most manufacturers.");
        assert_eq!(ex.tags, rec.tags);
    }
}
