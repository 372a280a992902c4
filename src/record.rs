//! The records the collector writes and reads: the seed's `TrainingExample` (field names kept
//! exactly, so existing consumers of the seed's files keep working), the correction record, the
//! feedback event and the rejected-input record.
//!
//! Every record is one JSON object on one line of a segment file (see `segment`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How strongly an example belongs to the configured domain (seed `_assess_relevance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relevance {
    Low,
    Medium,
    High,
}

impl Relevance {
    pub fn as_str(self) -> &'static str {
        match self {
            Relevance::Low => "low",
            Relevance::Medium => "medium",
            Relevance::High => "high",
        }
    }
}

impl std::str::FromStr for Relevance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Relevance::Low),
            "medium" => Ok(Relevance::Medium),
            "high" => Ok(Relevance::High),
            other => Err(format!(
                "unknown quality level {other:?}: expected high, medium or low"
            )),
        }
    }
}

/// A thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feedback {
    Positive,
    Negative,
}

impl Feedback {
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::Positive => "positive",
            Feedback::Negative => "negative",
        }
    }
}

impl std::str::FromStr for Feedback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "positive" => Ok(Feedback::Positive),
            "negative" => Ok(Feedback::Negative),
            other => Err(format!(
                "feedback must be \"positive\" or \"negative\", not {other:?}"
            )),
        }
    }
}

/// The seed's `metadata` dict. The six seed keys always serialize (as `null` when unknown);
/// anything else (request id, origin file and offset, `was_used`, ...) rides in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Metadata {
    pub skill_used: Option<String>,
    pub tier_handled: Option<String>,
    pub latency_ms: Option<f64>,
    pub user_id: Option<String>,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// The service's own request id, when the log line carried one.
    pub fn request_id(&self) -> Option<&str> {
        self.extra.get("request_id").and_then(Value::as_str)
    }
}

/// The seed's `quality` dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub user_feedback: Option<Feedback>,
    pub was_corrected: bool,
    pub verified_accurate: Option<bool>,
    pub domain_relevance: Relevance,
    pub auto_score: f64,
}

/// One captured interaction (seed `TrainingExample`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingExample {
    pub id: String,
    pub timestamp: String,
    pub source: String,
    pub prompt: String,
    pub response: String,
    pub metadata: Metadata,
    pub quality: Quality,
    pub tags: Vec<String>,
    pub project_context: String,
    pub include_in_training: bool,
}

impl TrainingExample {
    /// Seed `add_feedback` applied in place: the feedback, and `verified_accurate` on positive.
    pub fn apply_feedback(&mut self, feedback: Feedback) {
        self.quality.user_feedback = Some(feedback);
        if feedback == Feedback::Positive {
            self.quality.verified_accurate = Some(true);
        }
    }
}

/// The correction's own `quality` dict (seed: constant "very_high" / "high").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrectionQuality {
    pub learning_value: String,
    pub domain_relevance: String,
}

impl Default for CorrectionQuality {
    fn default() -> Self {
        CorrectionQuality {
            learning_value: "very_high".into(),
            domain_relevance: "high".into(),
        }
    }
}

/// A human correction of an answer (seed `record_correction`), plus the links that let export
/// replace the original: the original's example id or request id when the sender knew them,
/// and the id of the `verified_correction` example captured with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrectionRecord {
    pub id: String,
    pub timestamp: String,
    pub source: String,
    pub original_prompt: String,
    pub original_response: String,
    pub corrected_response: String,
    pub correction_reason: Option<String>,
    pub corrector: String,
    pub quality: CorrectionQuality,
    pub tags: Vec<String>,
    pub include_in_training: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_example_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example_id: Option<String>,
}

/// A thumbs up/down that refers to an example by its id or by the service's request id.
/// Written to the feedback stream when it could not be applied to a buffered example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    /// Deterministic id of the event itself, so a re-delivered event is recognised.
    pub id: String,
    pub timestamp: String,
    /// Example id (`train_...`) or the service's request id.
    pub target: String,
    pub feedback: Feedback,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Input that could not be used, kept with the reason so nothing is lost silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub timestamp: String,
    /// The file (log or spool) the input came from.
    pub source: String,
    /// Byte offset of the line in that file (log), or the 1-based line number (spool).
    pub offset: u64,
    pub reason: String,
    /// Length of the raw input in bytes; `raw` holds at most the first few KiB of it.
    pub raw_len: usize,
    pub raw: String,
}

/// The stable kind of a rejection reason, for counting: the reason without the details that
/// vary per line ("not valid JSON: EOF while parsing at column 90" -> "not valid JSON";
/// "missing required field: prompt (tried /prompt, /query)" -> "missing required field:
/// prompt"; `unknown type "vote": ...` -> "unknown type").
pub fn reason_kind(reason: &str) -> String {
    let (prefix, rest) = match reason.strip_prefix("spool: ") {
        Some(r) => ("spool: ", r),
        None => ("", reason),
    };
    let kind = if rest.starts_with("line is ") && rest.contains("max_line_bytes") {
        "line longer than max_line_bytes".to_string()
    } else if rest.starts_with("invalid UTF-8") {
        "invalid UTF-8".to_string()
    } else if let Some(field) = rest.strip_prefix("missing required field: ") {
        let field = field.split(" (").next().unwrap_or(field);
        format!("missing required field: {field}")
    } else {
        let head = rest.split(':').next().unwrap_or(rest);
        let head = head.split(" (").next().unwrap_or(head).trim();
        // Drop a trailing quoted value (`unknown type "vote"`).
        match head
            .strip_suffix('"')
            .and_then(|h| h.rfind(" \"").map(|i| &h[..i]))
        {
            Some(h) => h.trim().to_string(),
            None => head.to_string(),
        }
    };
    format!("{prefix}{kind}")
}

/// How much of a rejected line is kept in its record.
pub const REJECTED_RAW_CAP: usize = 4096;

impl RejectedRecord {
    pub fn new(source: &str, offset: u64, reason: impl Into<String>, raw: &[u8]) -> Self {
        let capped = &raw[..raw.len().min(REJECTED_RAW_CAP)];
        RejectedRecord {
            timestamp: crate::clock::now_rfc3339(),
            source: source.to_string(),
            offset,
            reason: reason.into(),
            raw_len: raw.len(),
            raw: String::from_utf8_lossy(capped).into_owned(),
        }
    }
}

impl TrainingExample {
    /// Appends the example as one JSON line (without the newline), byte for byte what
    /// `serde_json::to_writer` writes for it (proptested), but with the texts copied in one
    /// go when they need no escaping: serde_json checks every byte through a table, which
    /// was 5-6% of ingest's CPU on kilobyte responses.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(self.prompt.len() + self.response.len() + 512);
        out.extend_from_slice(b"{\"id\":");
        json_str(out, &self.id);
        out.extend_from_slice(b",\"timestamp\":");
        json_str(out, &self.timestamp);
        out.extend_from_slice(b",\"source\":");
        json_str(out, &self.source);
        out.extend_from_slice(b",\"prompt\":");
        json_str(out, &self.prompt);
        out.extend_from_slice(b",\"response\":");
        json_str(out, &self.response);
        let m = &self.metadata;
        out.extend_from_slice(b",\"metadata\":{\"skill_used\":");
        json_opt_str(out, m.skill_used.as_deref());
        out.extend_from_slice(b",\"tier_handled\":");
        json_opt_str(out, m.tier_handled.as_deref());
        out.extend_from_slice(b",\"latency_ms\":");
        json_serde(out, &m.latency_ms);
        out.extend_from_slice(b",\"user_id\":");
        json_opt_str(out, m.user_id.as_deref());
        out.extend_from_slice(b",\"prompt_tokens\":");
        out.extend_from_slice(itoa::Buffer::new().format(m.prompt_tokens).as_bytes());
        out.extend_from_slice(b",\"response_tokens\":");
        out.extend_from_slice(itoa::Buffer::new().format(m.response_tokens).as_bytes());
        for (k, v) in &m.extra {
            out.push(b',');
            json_str(out, k);
            out.push(b':');
            json_serde(out, v);
        }
        let q = &self.quality;
        out.extend_from_slice(b"},\"quality\":{\"user_feedback\":");
        json_opt_str(out, q.user_feedback.map(Feedback::as_str));
        out.extend_from_slice(b",\"was_corrected\":");
        out.extend_from_slice(if q.was_corrected { b"true" } else { b"false" });
        out.extend_from_slice(b",\"verified_accurate\":");
        json_serde(out, &q.verified_accurate);
        out.extend_from_slice(b",\"domain_relevance\":");
        json_str(out, q.domain_relevance.as_str());
        out.extend_from_slice(b",\"auto_score\":");
        json_serde(out, &q.auto_score);
        out.extend_from_slice(b"},\"tags\":[");
        for (i, t) in self.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, t);
        }
        out.extend_from_slice(b"],\"project_context\":");
        json_str(out, &self.project_context);
        out.extend_from_slice(b",\"include_in_training\":");
        out.extend_from_slice(if self.include_in_training {
            b"true}"
        } else {
            b"false}"
        });
    }
}

/// A JSON string: copied between quotes when nothing in it needs escaping (what serde_json
/// escapes: `"`, `\\` and control characters), else written by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if needs_json_escape(s) {
        json_serde(out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Parses one JSON text (a log or segment line) borrowing from it. Its UTF-8 is checked once,
/// by simdutf8, and it is parsed as a `str`: parsing bytes, serde_json checks each string it
/// borrows on its own (a tenth of export's read phase). Text that is not UTF-8 is parsed as
/// bytes, so the error is serde_json's own.
pub(crate) fn parse_json_line<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, serde_json::Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => serde_json::from_str(s),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// Whether serde_json would escape anything in `s` (`"`, `\\` or a control character).
/// Branch-free per 64-byte block, so the compiler vectorizes the check; a byte-at-a-time
/// `any` was a tenth of export's writing phase.
pub(crate) fn needs_json_escape(s: &str) -> bool {
    s.as_bytes().chunks(64).any(|block| {
        block.iter().fold(false, |acc, &b| {
            acc | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    })
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("a JSON value always serializes into memory");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line exactly as the seed's `json.dumps(asdict(ex))` writes it.
    const SEED_LINE: &str = r#"{"id": "train_20261127_080000_1a2b3c4d", "timestamp": "2026-11-27T08:00:00.123456", "source": "chat", "prompt": "What's TPO production rate?", "response": "About 10 squares per crew day.", "metadata": {"skill_used": null, "tier_handled": null, "latency_ms": 812.5, "user_id": "u1", "prompt_tokens": 4, "response_tokens": 6}, "quality": {"user_feedback": null, "was_corrected": false, "verified_accurate": null, "domain_relevance": "medium", "auto_score": 0.6}, "tags": ["tpo", "labor"], "project_context": "general", "include_in_training": true}"#;

    #[test]
    fn seed_line_round_trips_with_the_same_fields() {
        let ex: TrainingExample = serde_json::from_str(SEED_LINE).unwrap();
        assert_eq!(ex.quality.domain_relevance, Relevance::Medium);
        let back: Value = serde_json::to_value(&ex).unwrap();
        let orig: Value = serde_json::from_str(SEED_LINE).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn extra_metadata_survives_a_round_trip() {
        let mut ex: TrainingExample = serde_json::from_str(SEED_LINE).unwrap();
        ex.metadata
            .extra
            .insert("request_id".into(), Value::from("req-1"));
        let line = serde_json::to_string(&ex).unwrap();
        let back: TrainingExample = serde_json::from_str(&line).unwrap();
        assert_eq!(back.metadata.request_id(), Some("req-1"));
        assert_eq!(back, ex);
    }

    #[test]
    fn positive_feedback_verifies_negative_does_not() {
        let mut ex: TrainingExample = serde_json::from_str(SEED_LINE).unwrap();
        ex.apply_feedback(Feedback::Negative);
        assert_eq!(ex.quality.verified_accurate, None);
        ex.apply_feedback(Feedback::Positive);
        assert_eq!(ex.quality.user_feedback, Some(Feedback::Positive));
        assert_eq!(ex.quality.verified_accurate, Some(true));
    }

    #[test]
    fn reasons_group_by_kind() {
        for (reason, kind) in [
            (
                "not valid JSON: EOF while parsing a string at line 1 column 90",
                "not valid JSON",
            ),
            (
                "missing required field: prompt (tried /prompt, /query)",
                "missing required field: prompt",
            ),
            (
                "line is 2097152 bytes, longer than max_line_bytes (1048576)",
                "line longer than max_line_bytes",
            ),
            ("invalid UTF-8 at byte 17", "invalid UTF-8"),
            (
                "spool: unknown type \"vote\": expected one of feedback",
                "spool: unknown type",
            ),
            (
                "spool: refused: a symlink (spool files must be regular files)",
                "spool: refused",
            ),
            (
                "field prompt is not text: /query holds a number",
                "field prompt is not text",
            ),
            (
                "invalid feedback value \"meh\": expected",
                "invalid feedback value",
            ),
        ] {
            assert_eq!(reason_kind(reason), kind, "{reason}");
        }
    }

    #[test]
    fn rejected_raw_is_capped_and_lossy() {
        let raw = vec![0xffu8; REJECTED_RAW_CAP * 2];
        let r = RejectedRecord::new("a.log", 7, "not UTF-8", &raw);
        assert_eq!(r.raw_len, REJECTED_RAW_CAP * 2);
        assert!(r.raw.chars().count() <= REJECTED_RAW_CAP);
    }

    pub(crate) fn arb_text() -> impl Strategy<Value = String> {
        // Plain text most of the time, and every kind of byte serde_json escapes.
        prop_oneof![
            "[a-zA-Z0-9 .,?]{0,200}",
            "[a-z \"\\\\\\x00-\\x1f\\x7f/é漢😀]{0,40}",
        ]
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            arb_text().prop_map(Value::from),
            proptest::collection::vec(arb_text(), 0..3).prop_map(Value::from),
        ]
    }

    pub(crate) fn arb_example() -> impl Strategy<Value = TrainingExample> {
        (
            (arb_text(), arb_text(), arb_text(), arb_text()),
            (
                proptest::option::of(arb_text()),
                proptest::option::of(any::<f64>()),
                any::<usize>(),
                proptest::collection::vec((arb_text(), arb_value()), 0..4),
            ),
            (
                proptest::option::of(prop_oneof![
                    Just(Feedback::Positive),
                    Just(Feedback::Negative)
                ]),
                any::<bool>(),
                proptest::option::of(any::<bool>()),
                any::<f64>(),
            ),
            proptest::collection::vec(arb_text(), 0..4),
        )
            .prop_map(
                |(
                    (id, prompt, response, project),
                    (skill, latency, n, extra),
                    (fb, corrected, verified, score),
                    tags,
                )| {
                    TrainingExample {
                        id,
                        timestamp: "2026-11-27T08:00:00.000000Z".into(),
                        source: "chat".into(),
                        prompt,
                        response,
                        metadata: Metadata {
                            skill_used: skill.clone(),
                            tier_handled: None,
                            latency_ms: latency,
                            user_id: skill,
                            prompt_tokens: n,
                            response_tokens: n / 3,
                            extra: extra.into_iter().collect(),
                        },
                        quality: Quality {
                            user_feedback: fb,
                            was_corrected: corrected,
                            verified_accurate: verified,
                            domain_relevance: Relevance::High,
                            auto_score: score,
                        },
                        tags,
                        project_context: project,
                        include_in_training: !corrected,
                    }
                },
            )
    }

    proptest! {
        /// The hand-written line is exactly serde_json's.
        #[test]
        fn write_json_is_byte_for_byte_serde_json(ex in arb_example()) {
            let mut fast = Vec::new();
            ex.write_json(&mut fast);
            let slow = serde_json::to_vec(&ex).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&slow));
        }

        /// A rendered line reads back as the record it was rendered from (the daemon buffers
        /// examples as lines and reads one back when feedback or a correction changes it).
        /// Finite numbers only: JSON has no NaN, and log lines cannot carry one.
        #[test]
        fn a_rendered_line_reads_back_as_its_record(mut ex in arb_example()) {
            ex.metadata.latency_ms = ex.metadata.latency_ms.filter(|x| x.is_finite());
            if !ex.quality.auto_score.is_finite() {
                ex.quality.auto_score = 0.5;
            }
            let mut line = Vec::new();
            ex.write_json(&mut line);
            let back: TrainingExample = serde_json::from_slice(&line).unwrap();
            prop_assert_eq!(back, ex);
        }
    }
}
