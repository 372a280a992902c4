//! Line -> event mapping: what one JSON line of the service's log means.
//!
//! The service's log format is not ours, so every field is found through a list of JSON
//! Pointer candidates (first present wins) from `[input.fields]`. `[input.match]` decides
//! which lines are interactions; `[input.events]` recognises feedback and corrections that
//! the service logs itself. Other valid JSON is skipped (and counted by the caller); a line
//! that is not a JSON object, or an interaction that lacks a prompt or response, is a
//! [`Rejection`] with a reason a person can act on.

use crate::capture::{Correction, Interaction};
use crate::config::{InputConfig, Pointer};
use crate::record::Feedback;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use doc::Doc;
use indexmap::IndexMap;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

mod doc;

/// A feedback event as it arrives (log line, spool or CLI).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackInput {
    pub target: String,
    pub feedback: Feedback,
    pub comment: Option<String>,
    pub user: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// What a log line is.
#[derive(Debug, Clone, PartialEq)]
pub enum LineEvent {
    Interaction(Box<Interaction>),
    Feedback(FeedbackInput),
    Correction(Box<Correction>),
    /// Valid JSON that is none of the above (heartbeats, cache hits, ...).
    Skip,
}

/// Why a line could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// Field = value conditions compiled from a `match` table.
#[derive(Debug, Clone)]
struct Conditions(Vec<(String, Value)>);

impl Conditions {
    fn compile(table: &IndexMap<String, toml::Value>) -> Conditions {
        Conditions(
            table
                .iter()
                .map(|(k, v)| {
                    let ptr = if k.starts_with('/') {
                        k.clone()
                    } else {
                        format!("/{}", k.replace('~', "~0").replace('/', "~1"))
                    };
                    (ptr, toml_to_json(v))
                })
                .collect(),
        )
    }

    fn matches(&self, doc: &Doc) -> bool {
        self.0
            .iter()
            .all(|(p, want)| pointer(doc, p).is_some_and(|v| v.equals(want)))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// The compiled mapping for one `[input]` configuration.
#[derive(Debug, Clone)]
pub struct Mapper {
    interaction: Conditions,
    feedback: Conditions,
    correction: Conditions,
    cfg: InputConfig,
}

/// The UTF-8 byte order mark.
pub(crate) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl Mapper {
    pub fn new(cfg: &InputConfig) -> Mapper {
        Mapper {
            interaction: Conditions::compile(&cfg.match_),
            feedback: Conditions::compile(&cfg.events.feedback.match_),
            correction: Conditions::compile(&cfg.events.correction.match_),
            cfg: cfg.clone(),
        }
    }

    /// Maps one complete line (UTF-8, without its terminator).
    pub fn map(&self, line: &[u8]) -> Result<LineEvent, Rejection> {
        // A UTF-8 byte order mark (written at the start of a file by some writers, e.g.
        // .NET's) is not part of the JSON.
        let line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
        // A blank line carries nothing; it is skipped, not an error.
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(LineEvent::Skip);
        }
        let doc = match Doc::parse(line) {
            Ok(doc) => doc,
            Err(e) => {
                let rejection = Rejection(format!("not valid JSON: {e}"));
                // JavaScript's and Python's JSON writers escape a lone UTF-16 surrogate (half
                // an emoji cut off by a truncation) as `\ud83d`, which JSON's grammar allows
                // and serde_json refuses: read it as U+FFFD rather than lose the interaction.
                let Some(repaired) = doc::replace_lone_surrogates(line) else {
                    return Err(rejection);
                };
                return match Doc::parse(&repaired) {
                    Ok(doc) => self.map_doc(&doc),
                    Err(_) => Err(rejection),
                };
            }
        };
        self.map_doc(&doc)
    }

    fn map_doc(&self, doc: &Doc) -> Result<LineEvent, Rejection> {
        if !doc.is_object() {
            return Err(Rejection(format!(
                "not a JSON object (a line must be one object, this is {})",
                kind_of(doc)
            )));
        }
        if self.interaction.matches(doc) {
            return self
                .interaction_of(doc)
                .map(|i| LineEvent::Interaction(Box::new(i)));
        }
        if !self.feedback.is_empty() && self.feedback.matches(doc) {
            return self.feedback_of(doc).map(LineEvent::Feedback);
        }
        if !self.correction.is_empty() && self.correction.matches(doc) {
            return self
                .correction_of(doc)
                .map(|c| LineEvent::Correction(Box::new(c)));
        }
        Ok(LineEvent::Skip)
    }

    fn interaction_of(&self, doc: &Doc) -> Result<Interaction, Rejection> {
        let f = &self.cfg.fields;
        let messages = first(doc, &f.messages).and_then(Doc::as_array);
        let prompt = first_string(doc, &f.prompt)
            .or_else(|| messages.and_then(|m| last_user_message(m)))
            .ok_or_else(|| not_text_or_missing(doc, "prompt", &f.prompt, &f.messages))?;
        let response = first_string(doc, &f.response)
            .or_else(|| messages.and_then(|m| assistant_after_last_user(m)))
            .ok_or_else(|| not_text_or_missing(doc, "response", &f.response, &f.messages))?;
        let mut extra = Map::new();
        if let Some(system) = messages.and_then(|m| system_message(m)) {
            extra.insert("system_prompt".into(), Value::String(system));
        }
        let timestamp = first_timestamp(doc, &f.timestamp);
        if timestamp.is_none() {
            // The line has a time this reader cannot make out: the example is stamped with
            // the capture time, and the line's own text is kept beside it rather than lost.
            if let Some(raw) = first(doc, &f.timestamp) {
                extra.insert("unparsed_timestamp".into(), raw.to_value());
            }
        }
        Ok(Interaction {
            prompt,
            response,
            source: first_label(doc, &f.source),
            skill_used: first_label(doc, &f.skill_used),
            tier: first_label(doc, &f.tier_handled),
            latency_ms: first(doc, &f.latency_ms).and_then(|v| as_f64(Scalar::from(v))),
            tags: first(doc, &f.tags).and_then(string_list),
            project: first_label(doc, &f.project_context),
            user_id: first_id(doc, &f.user_id),
            request_id: first_nonblank_id(doc, &f.request_id),
            timestamp,
            extra,
        })
    }

    fn feedback_of(&self, doc: &Doc) -> Result<FeedbackInput, Rejection> {
        let f = &self.cfg.events.feedback;
        let target = first_nonblank_id(doc, &f.target)
            .ok_or_else(|| missing("feedback target", &[&f.target]))?;
        let raw = first(doc, &f.value).ok_or_else(|| missing("feedback value", &[&f.value]))?;
        let feedback = feedback_of(Scalar::from(raw), || raw.to_value()).map_err(Rejection)?;
        Ok(FeedbackInput {
            target,
            feedback,
            comment: first_string(doc, &f.comment),
            user: first_id(doc, &f.user),
            timestamp: first_timestamp(doc, &f.timestamp),
        })
    }

    fn correction_of(&self, doc: &Doc) -> Result<Correction, Rejection> {
        let f = &self.cfg.events.correction;
        let get = |name: &str, ptrs: &Vec<Pointer>| {
            first_string(doc, ptrs).ok_or_else(|| missing(name, &[ptrs]))
        };
        Ok(Correction {
            original_prompt: get("original prompt", &f.original_prompt)?,
            original_response: get("original response", &f.original_response)?,
            corrected_response: get("corrected response", &f.corrected_response)?,
            reason: first_string(doc, &f.reason),
            corrector: first_id(doc, &f.corrector),
            target: first_nonblank_id(doc, &f.target),
            timestamp: first_timestamp(doc, &f.timestamp),
        })
    }
}

/// Why an interaction has no prompt (or response): a candidate that holds something other
/// than text (`"query": 42`) is named, since "missing" would send its reader looking for a
/// field that is there.
fn not_text_or_missing(
    doc: &Doc,
    what: &str,
    ptrs: &Vec<Pointer>,
    messages: &Vec<Pointer>,
) -> Rejection {
    let held = ptrs
        .iter()
        .find_map(|p| pointer(doc, &p.0).filter(|v| !v.is_null()).map(|v| (p, v)));
    match held {
        Some((p, v)) => Rejection(format!(
            "field {what} is not text: {} holds {}",
            p.0,
            kind_of(v)
        )),
        None => missing(what, &[ptrs, messages]),
    }
}

fn missing(what: &str, lists: &[&Vec<Pointer>]) -> Rejection {
    let tried: Vec<&str> = lists
        .iter()
        .flat_map(|l| l.iter().map(|p| p.0.as_str()))
        .collect();
    Rejection(format!(
        "missing required field: {what} (tried {})",
        tried.join(", ")
    ))
}

fn kind_of(v: &Doc) -> &'static str {
    match v {
        Doc::Null => "null",
        Doc::Bool(_) => "a boolean",
        Doc::Number(_) => "a number",
        Doc::Str(_) => "a string",
        Doc::Array(_) => "an array",
        Doc::Object(_) => "an object",
    }
}

/// `Value::pointer` (RFC 6901) on a [`Doc`], without unescaping reference tokens that have
/// nothing to unescape (mapping resolves about twenty pointers per line).
fn pointer<'d, 'a>(doc: &'d Doc<'a>, p: &str) -> Option<&'d Doc<'a>> {
    if p.is_empty() {
        return Some(doc);
    }
    let rest = p.strip_prefix('/')?;
    rest.split('/').try_fold(doc, |v, token| {
        let token: Cow<str> = if token.contains('~') {
            Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(token)
        };
        match v {
            Doc::Object(_) => v.get(&token),
            Doc::Array(a) => {
                // serde_json's rule: digits only, no leading zero (except "0" itself).
                if token.is_empty()
                    || !token.bytes().all(|b| b.is_ascii_digit())
                    || (token.len() > 1 && token.starts_with('0'))
                {
                    return None;
                }
                token.parse::<usize>().ok().and_then(|i| a.get(i))
            }
            _ => None,
        }
    })
}

/// The first candidate pointer that resolves to a non-null value.
fn first<'d, 'a>(doc: &'d Doc<'a>, ptrs: &[Pointer]) -> Option<&'d Doc<'a>> {
    ptrs.iter()
        .filter_map(|p| pointer(doc, &p.0))
        .find(|v| !v.is_null())
}

/// The first candidate that is a string (or text parts, for message-style content).
fn first_string(doc: &Doc, ptrs: &[Pointer]) -> Option<String> {
    ptrs.iter()
        .filter_map(|p| pointer(doc, &p.0))
        .find_map(content_text)
}

/// Ids may be logged as numbers; they are kept as text.
fn first_id(doc: &Doc, ptrs: &[Pointer]) -> Option<String> {
    ids(doc, ptrs).next()
}

/// A request id is what tells two interactions with the same texts apart in their ids, so
/// a blank one (a service that logs `""` when the request had no id) is no id at all: the
/// line's position identifies it instead, or every repeat of a question would share one id
/// and all but the first be dropped as replays. The same goes for the target of feedback or
/// a correction: a blank `example_id` beside a real `request_id` is not the target.
fn first_nonblank_id(doc: &Doc, ptrs: &[Pointer]) -> Option<String> {
    ids(doc, ptrs).find(|id| !id.trim().is_empty())
}

/// The candidates that hold an id (a string or a number), in order.
fn ids<'p>(doc: &'p Doc, ptrs: &'p [Pointer]) -> impl Iterator<Item = String> + 'p {
    ptrs.iter()
        .filter_map(|p| pointer(doc, &p.0))
        .filter_map(|v| match v {
            Doc::Str(s) => Some(s.to_string()),
            Doc::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// A label (skill, tier, project, source): services log tiers and projects as numbers as
/// often as strings (`"tier": 2`), and such a value is the label, not a missing one.
fn first_label(doc: &Doc, ptrs: &[Pointer]) -> Option<String> {
    ptrs.iter()
        .filter_map(|p| pointer(doc, &p.0))
        .find_map(|v| match v {
            Doc::Number(n) => Some(n.to_string()),
            other => content_text(other),
        })
}

/// The first candidate that reads as a time: a line with a `timestamp` the reader cannot
/// make out and a `ts` it can is stamped with its `ts`.
fn first_timestamp(doc: &Doc, ptrs: &[Pointer]) -> Option<DateTime<Utc>> {
    ptrs.iter()
        .filter_map(|p| pointer(doc, &p.0))
        .find_map(|v| timestamp_of(Scalar::from(v)))
}

/// The scalar part of a JSON value, from a log line's [`Doc`] or from a `Value` (spool
/// files, the command line), so both are read by the same rules.
#[derive(Clone, Copy)]
enum Scalar<'v> {
    Str(&'v str),
    Number(&'v Number),
    Bool(bool),
    Other,
}

impl<'v> From<&'v Doc<'_>> for Scalar<'v> {
    fn from(v: &'v Doc<'_>) -> Self {
        match v {
            Doc::Str(s) => Scalar::Str(s),
            Doc::Number(n) => Scalar::Number(n),
            Doc::Bool(b) => Scalar::Bool(*b),
            _ => Scalar::Other,
        }
    }
}

impl<'v> From<&'v Value> for Scalar<'v> {
    fn from(v: &'v Value) -> Self {
        match v {
            Value::String(s) => Scalar::Str(s),
            Value::Number(n) => Scalar::Number(n),
            Value::Bool(b) => Scalar::Bool(*b),
            _ => Scalar::Other,
        }
    }
}

fn as_f64(v: Scalar) -> Option<f64> {
    match v {
        Scalar::Number(n) => n.as_f64(),
        Scalar::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A list of strings; a lone string is a list of one (`"tags": "tpo"` means the tag, and was
/// silently ignored for the auto tags), a blank one none.
fn string_list(v: &Doc) -> Option<Vec<String>> {
    if let Some(s) = v.as_str() {
        let s = s.trim();
        return (!s.is_empty()).then(|| vec![s.to_string()]);
    }
    let arr = v.as_array()?;
    Some(
        arr.iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
    )
}

/// A string, or OpenAI content parts `[{"type":"text","text":...}]` joined.
fn content_text(v: &Doc) -> Option<String> {
    match v {
        Doc::Str(s) => Some(s.to_string()),
        Doc::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Doc::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn role_of<'d>(m: &'d Doc) -> Option<&'d str> {
    m.get("role").and_then(Doc::as_str)
}

fn last_user_message(msgs: &[Doc]) -> Option<String> {
    msgs.iter()
        .rev()
        .find(|m| role_of(m) == Some("user"))
        .and_then(|m| m.get("content").and_then(content_text))
}

fn assistant_after_last_user(msgs: &[Doc]) -> Option<String> {
    let last_user = msgs.iter().rposition(|m| role_of(m) == Some("user"))?;
    msgs[last_user + 1..]
        .iter()
        .find(|m| role_of(m) == Some("assistant"))
        .and_then(|m| m.get("content").and_then(content_text))
}

fn system_message(msgs: &[Doc]) -> Option<String> {
    msgs.iter()
        .find(|m| matches!(role_of(m), Some("system") | Some("developer")))
        .and_then(|m| m.get("content").and_then(content_text))
}

/// RFC 3339; the same with a `+hhmm` offset, a `,` before the fraction (Python's
/// `logging`), or no offset (taken as UTC); RFC 2822; or Unix time in seconds,
/// milliseconds, microseconds or nanoseconds (told apart by magnitude), as a number or a
/// string of digits.
pub fn parse_timestamp(v: &Value) -> Option<DateTime<Utc>> {
    timestamp_of(Scalar::from(v))
}

fn timestamp_of(v: Scalar) -> Option<DateTime<Utc>> {
    match v {
        Scalar::Str(s) => text_timestamp(s.trim()),
        Scalar::Number(n) => match n.as_i64() {
            Some(i) => epoch_int(i),
            None => epoch_float(n.as_f64()?),
        },
        _ => None,
    }
}

fn text_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // `2026-11-27 08:00:00,123`: the comma of Python's logging and of ISO 8601 itself.
    let dotted;
    let s = if s.len() > 19 && s.as_bytes()[19] == b',' {
        dotted = format!("{}.{}", &s[..19], &s[20..]);
        dotted.as_str()
    } else {
        s
    };
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.with_timezone(&Utc));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if let Ok(i) = s.parse::<i64>() {
            return epoch_int(i);
        }
        return s.parse::<f64>().ok().and_then(epoch_float);
    }
    None
}

/// Unix time by magnitude: seconds up to the year 5138 (1e11), then milliseconds, then
/// microseconds (from 1e14), then nanoseconds (from 1e17): a 16-digit microsecond stamp
/// read as milliseconds would be the year 58,000.
fn epoch_int(i: i64) -> Option<DateTime<Utc>> {
    let a = i.unsigned_abs();
    let micros = if a < 100_000_000_000 {
        i.checked_mul(1_000_000)?
    } else if a < 100_000_000_000_000 {
        i.checked_mul(1_000)?
    } else if a < 100_000_000_000_000_000 {
        i
    } else {
        i / 1_000
    };
    Utc.timestamp_micros(micros).single()
}

fn epoch_float(x: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() {
        return None;
    }
    let a = x.abs();
    let micros = if a < 1e11 {
        x * 1e6
    } else if a < 1e14 {
        x * 1e3
    } else if a < 1e17 {
        x
    } else {
        x / 1e3
    };
    if micros.abs() > i64::MAX as f64 {
        return None;
    }
    Utc.timestamp_micros(micros.round() as i64).single()
}

/// Thumbs values as services write them: positive/negative, up/down, thumbs_up/thumbs_down,
/// true/false, 1/-1.
pub fn parse_feedback(v: &Value) -> Result<Feedback, String> {
    feedback_of(Scalar::from(v), || v.clone())
}

/// [`parse_feedback`]; `shown` gives the value as JSON for the error message.
fn feedback_of(v: Scalar, shown: impl FnOnce() -> Value) -> Result<Feedback, String> {
    let bad = || {
        format!(
            "invalid feedback value {}: expected \"positive\" or \"negative\" (also up/down, true/false, 1/-1)",
            shown()
        )
    };
    match v {
        Scalar::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "positive" | "up" | "thumbs_up" | "thumbsup" | "+1" | "1" | "true" => {
                Ok(Feedback::Positive)
            }
            "negative" | "down" | "thumbs_down" | "thumbsdown" | "-1" | "false" => {
                Ok(Feedback::Negative)
            }
            _ => Err(bad()),
        },
        Scalar::Bool(true) => Ok(Feedback::Positive),
        Scalar::Bool(false) => Ok(Feedback::Negative),
        Scalar::Number(n) => match n.as_i64() {
            Some(1) => Ok(Feedback::Positive),
            Some(-1) => Ok(Feedback::Negative),
            _ => Err(bad()),
        },
        Scalar::Other => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_agrees_with_serde_json() {
        let text = r#"{"a":{"b":[10,{"c":"x"}],"":{"":1},"d/e":2,"f~g":3,"~1":5},"n":null,"01":4}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let parsed = Doc::parse(text.as_bytes()).unwrap();
        for p in [
            "",
            "/",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/01",
            "/a/b/2",
            "/a/b/-",
            "/a/b/+1",
            "/a//",
            "/a/d~1e",
            "/a/f~0g",
            "/a/~01",
            "/a/~1",
            "/n",
            "/01",
            "/x/y",
            "a",
            "/a/b/1/c/d",
        ] {
            assert_eq!(
                pointer(&parsed, p).map(Doc::to_value).as_ref(),
                doc.pointer(p),
                "{p}"
            );
        }
    }
    use crate::config::Config;
    use std::path::Path;

    fn mapper(extra_toml: &str) -> Mapper {
        let cfg = Config::parse(extra_toml, "t.toml", Path::new("/")).unwrap();
        Mapper::new(&cfg.input)
    }

    fn interaction(m: &Mapper, line: &str) -> Interaction {
        match m.map(line.as_bytes()) {
            Ok(LineEvent::Interaction(i)) => *i,
            other => panic!("expected an interaction, got {other:?}"),
        }
    }

    #[test]
    fn a_byte_order_mark_before_a_line_is_not_part_of_it() {
        let m = mapper("");
        let line = r#"{"event":"interaction","request_id":"req-9","query":"What is EPDM?","response":"A rubber membrane."}"#;
        let plain = interaction(&m, line);
        let with_bom = format!("\u{feff}{line}");
        assert_eq!(with_bom.as_bytes()[..3], *UTF8_BOM);
        assert_eq!(interaction(&m, &with_bom), plain);
        // Only a mark: blank.
        assert!(matches!(m.map(UTF8_BOM), Ok(LineEvent::Skip)));
    }

    #[test]
    fn flat_seed_style_lines_map_with_defaults() {
        let m = mapper("");
        let i = interaction(
            &m,
            r#"{"ts":"2026-11-27T08:00:00.037Z","event":"interaction","request_id":"req-1","query":"What is TPO?","response":"A membrane.","skill":"spec_lookup","tier":"tier2","latency_ms":812.5,"user_id":"u7","project":"Warehouse 12"}"#,
        );
        assert_eq!(i.prompt, "What is TPO?");
        assert_eq!(i.response, "A membrane.");
        assert_eq!(i.skill_used.as_deref(), Some("spec_lookup"));
        assert_eq!(i.tier.as_deref(), Some("tier2"));
        assert_eq!(i.latency_ms, Some(812.5));
        assert_eq!(i.user_id.as_deref(), Some("u7"));
        assert_eq!(i.project.as_deref(), Some("Warehouse 12"));
        assert_eq!(i.request_id.as_deref(), Some("req-1"));
        assert_eq!(
            i.timestamp.unwrap().to_rfc3339(),
            "2026-11-27T08:00:00.037+00:00"
        );
    }

    #[test]
    fn tags_logged_as_one_string_are_that_tag() {
        let m = mapper("");
        let line = |tags: &str| {
            format!(
                r#"{{"event":"interaction","query":"What is TPO?","response":"A membrane.","tags":{tags}}}"#
            )
        };
        let tags = |tags: &str| interaction(&m, &line(tags)).tags;
        assert_eq!(
            tags(r#"["tpo","specs"]"#),
            Some(vec!["tpo".into(), "specs".into()])
        );
        assert_eq!(tags(r#""tpo""#), Some(vec!["tpo".into()]));
        assert_eq!(tags(r#"" tpo ""#), Some(vec!["tpo".into()]));
        assert_eq!(tags(r#""  ""#), None);
        assert_eq!(tags("7"), None);
    }

    #[test]
    fn nested_openai_style_lines_map_with_configured_pointers() {
        let m = mapper(
            r#"
[input.match]
"/kind" = "llm.call"
[input.fields]
messages = ["/request/messages"]
response = ["/output/text"]
request_id = ["/trace/id"]
timestamp = ["/@timestamp"]
skill_used = ["/meta/skill"]
user_id = ["/meta/user"]
"#,
        );
        let i = interaction(
            &m,
            r#"{"@timestamp":"2026-11-27T08:00:00Z","kind":"llm.call","trace":{"id":"req-2"},"request":{"messages":[{"role":"system","content":"You are a roofing estimator."},{"role":"user","content":"first"},{"role":"assistant","content":"a1"},{"role":"user","content":[{"type":"text","text":"How many squares?"}]}]},"output":{"text":"About 40."},"meta":{"skill":"estimating","user":"u1"}}"#,
        );
        assert_eq!(i.prompt, "How many squares?");
        assert_eq!(i.response, "About 40.");
        assert_eq!(i.request_id.as_deref(), Some("req-2"));
        assert_eq!(i.extra["system_prompt"], "You are a roofing estimator.");
        assert!(i.timestamp.is_some());
    }

    #[test]
    fn other_json_is_skipped_and_broken_lines_are_rejected_with_reasons() {
        let m = mapper("");
        assert_eq!(
            m.map(br#"{"event":"cache_hit","key":"x"}"#),
            Ok(LineEvent::Skip)
        );
        assert_eq!(m.map(b""), Ok(LineEvent::Skip));
        assert_eq!(m.map(b"  \t"), Ok(LineEvent::Skip));
        let e = m.map(b"INFO worker-3 heartbeat ok").unwrap_err();
        assert!(e.0.starts_with("not valid JSON"), "{e}");
        let e = m
            .map(br#"{"ts":"x","event":"interaction","query":"What is the TPO se"#)
            .unwrap_err();
        assert!(e.0.starts_with("not valid JSON"), "{e}");
        let e = m
            .map(br#"{"event":"interaction","request_id":"r"}"#)
            .unwrap_err();
        assert!(e.0.contains("missing required field: prompt"), "{e}");
        let e = m
            .map(br#"{"event":"interaction","query":42,"response":"r"}"#)
            .unwrap_err();
        assert_eq!(e.0, "field prompt is not text: /query holds a number");
        let e = m
            .map(br#"{"event":"interaction","query":"q","response":{"text":"r"}}"#)
            .unwrap_err();
        assert_eq!(e.0, "field response is not text: /response holds an object");
        let e = m.map(b"[1,2]").unwrap_err();
        assert!(e.0.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn feedback_and_corrections_in_the_log() {
        let m = mapper("");
        match m.map(
            br#"{"event":"feedback","request_id":"req-1","feedback":"down","comment":"wrong"}"#,
        ) {
            Ok(LineEvent::Feedback(f)) => {
                assert_eq!(f.target, "req-1");
                assert_eq!(f.feedback, Feedback::Negative);
                assert_eq!(f.comment.as_deref(), Some("wrong"));
            }
            other => panic!("{other:?}"),
        }
        // A blank example id is no target: the request id beside it is.
        match m.map(br#"{"event":"feedback","example_id":"","request_id":"req-1","feedback":"up"}"#)
        {
            Ok(LineEvent::Feedback(f)) => assert_eq!(f.target, "req-1"),
            other => panic!("{other:?}"),
        }
        let e = m
            .map(br#"{"event":"feedback","example_id":" ","feedback":"up"}"#)
            .unwrap_err();
        assert!(
            e.0.contains("missing required field: feedback target"),
            "{e}"
        );
        match m.map(br#"{"event":"correction","example_id":"","request_id":"req-1","original_prompt":"p","original_response":"r","corrected_response":"c"}"#) {
            Ok(LineEvent::Correction(c)) => assert_eq!(c.target.as_deref(), Some("req-1")),
            other => panic!("{other:?}"),
        }
        let e = m
            .map(br#"{"event":"feedback","request_id":"req-1","feedback":"meh"}"#)
            .unwrap_err();
        assert!(e.0.contains("invalid feedback value"), "{e}");
        match m.map(br#"{"event":"correction","request_id":"req-1","original_prompt":"p","original_response":"r","corrected_response":"c"}"#) {
            Ok(LineEvent::Correction(c)) => {
                assert_eq!(c.target.as_deref(), Some("req-1"));
                assert_eq!(c.corrected_response, "c");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timestamps_in_several_forms() {
        let t = |v: Value| parse_timestamp(&v).map(|t| t.timestamp_millis());
        assert_eq!(t(Value::from("2026-11-27T08:00:00Z")), Some(1795766400000));
        assert_eq!(t(Value::from("2026-11-27 08:00:00")), Some(1795766400000));
        assert_eq!(t(Value::from(1795766400)), Some(1795766400000));
        assert_eq!(t(Value::from(1795766400000i64)), Some(1795766400000));
        assert_eq!(t(Value::from("yesterday")), None);
        // Offsets without a colon, a comma before the fraction, RFC 2822, digit strings.
        assert_eq!(
            t(Value::from("2026-11-27T10:00:00.5+0200")),
            Some(1795766400500)
        );
        assert_eq!(t(Value::from("2026-11-27 08:00:00,5")), Some(1795766400500));
        assert_eq!(
            t(Value::from("Fri, 27 Nov 2026 08:00:00 +0000")),
            Some(1795766400000)
        );
        assert_eq!(t(Value::from("1795766400")), Some(1795766400000));
        // Micro- and nanoseconds are told from milliseconds by magnitude.
        assert_eq!(t(Value::from(1795766400123456i64)), Some(1795766400123));
        assert_eq!(t(Value::from(1795766400123456789i64)), Some(1795766400123));
        assert_eq!(t(Value::from(-86400)), Some(-86400000));
    }
}
