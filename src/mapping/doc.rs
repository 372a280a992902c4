//! A log line's JSON, parsed without copying its strings.
//!
//! `serde_json::Value` owns every string and hashes every key into an index map; a log
//! line's kilobyte-long response was copied once by the parser and again into the
//! interaction, and the parse was 2 us of a line's ~12 us of work. [`Doc`] borrows every
//! string that has no escapes from the line, keeps an object as its list of (key, value)
//! pairs, and gives mapping the few accessors it uses. Lookups follow `Value`'s rules: the
//! last of duplicate keys wins.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::fmt;

/// One JSON value, borrowing from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Doc<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Doc<'a>>),
    /// Members in line order, duplicates kept ([`Doc::get`] finds the last).
    Object(Vec<(Cow<'a, str>, Doc<'a>)>),
}

impl<'a> Doc<'a> {
    /// Parses one JSON text (the errors are serde_json's; see
    /// [`crate::record::parse_json_line`]).
    pub(crate) fn parse(text: &'a [u8]) -> Result<Doc<'a>, serde_json::Error> {
        crate::record::parse_json_line(text)
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Doc::Null)
    }

    pub(crate) fn is_object(&self) -> bool {
        matches!(self, Doc::Object(_))
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Doc::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&[Doc<'a>]> {
        match self {
            Doc::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An object's member (the last one of that name, as in `serde_json::Value`).
    pub(crate) fn get(&self, key: &str) -> Option<&Doc<'a>> {
        match self {
            Doc::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value` (for comparisons with configured values and
    /// for messages; not on the per-line path).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Doc::Null => Value::Null,
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Number(n) => Value::Number(n.clone()),
            Doc::Str(s) => Value::String(s.to_string()),
            Doc::Array(a) => Value::Array(a.iter().map(Doc::to_value).collect()),
            Doc::Object(members) => {
                let mut m = Map::new();
                for (k, v) in members {
                    m.insert(k.to_string(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }

    /// `self.to_value() == *want`, without building the value for scalars.
    pub(crate) fn equals(&self, want: &Value) -> bool {
        match (self, want) {
            (Doc::Null, Value::Null) => true,
            (Doc::Bool(a), Value::Bool(b)) => a == b,
            (Doc::Number(a), Value::Number(b)) => a == b,
            (Doc::Str(a), Value::String(b)) => a == b,
            (Doc::Array(_) | Doc::Object(_), Value::Array(_) | Value::Object(_)) => {
                self.to_value() == *want
            }
            _ => false,
        }
    }
}

/// `text` with every `\\uXXXX` escape of a lone UTF-16 surrogate (a high one not followed by
/// a low one, or a low one on its own) replaced by `\\ufffd`; `None` when it has none. JSON's
/// grammar allows such escapes, JavaScript and Python write them, and serde_json refuses
/// them. Only called for a line that did not parse, so it costs nothing per line.
pub(crate) fn replace_lone_surrogates(text: &[u8]) -> Option<Vec<u8>> {
    fn escape_at(text: &[u8], i: usize) -> Option<u16> {
        let hex = text.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = escape_at(text, i) else {
            // Any other escape: skip its two bytes, so `\\\\u` is not read as an escape.
            i += 2;
            continue;
        };
        let paired = (0xd800..0xdc00).contains(&unit)
            && escape_at(text, i + 6).is_some_and(|low| (0xdc00..0xe000).contains(&low));
        if paired {
            i += 12;
        } else if (0xd800..0xe000).contains(&unit) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
            buf.extend_from_slice(&text[copied..i]);
            buf.extend_from_slice(b"\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    let mut buf = out?;
    buf.extend_from_slice(&text[copied..]);
    Some(buf)
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Doc<'de>, E> {
        // As serde_json's Value: a float it cannot hold is null.
        Ok(Number::from_f64(f).map_or(Doc::Null, Doc::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_none<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Doc<'de>, D::Error> {
        Doc::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(Key(k)) = map.next_key()? {
            members.push((k, map.next_value()?));
        }
        Ok(Doc::Object(members))
    }
}

/// An object key, borrowed when it has no escapes (`Cow<str>`'s own impl always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let line = br#"{"q":"plain","r":"a\nb","k\u0041":1}"#;
        let doc = Doc::parse(line).unwrap();
        assert!(matches!(
            doc.get("q"),
            Some(Doc::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(doc.get("r"), Some(Doc::Str(Cow::Owned(s))) if s == "a\nb"));
        assert_eq!(doc.get("kA"), Some(&Doc::Number(1.into())));
    }

    #[test]
    fn lone_surrogate_escapes_become_replacement_characters() {
        let fix =
            |t: &str| replace_lone_surrogates(t.as_bytes()).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(fix(r#"{"a":"x\ud83d\ude00y"}"#), None);
        assert_eq!(
            fix(r#"{"a":"x\ud83dy"}"#).as_deref(),
            Some(r#"{"a":"x\ufffdy"}"#)
        );
        assert_eq!(
            fix(r#"{"a":"\ude00\ud83d"}"#).as_deref(),
            Some(r#"{"a":"\ufffd\ufffd"}"#)
        );
        assert_eq!(
            fix(r#"{"a":"\ud83d\ud83d\ude00"}"#).as_deref(),
            Some(r#"{"a":"\ufffd\ud83d\ude00"}"#)
        );
        // An escaped backslash before `ud800` is text, not an escape.
        assert_eq!(fix(r#"{"a":"\\ud800"}"#), None);
        assert_eq!(
            fix(r#"{"a":"end\ud800"#).as_deref(),
            Some(r#"{"a":"end\ufffd"#)
        );
    }

    #[test]
    fn the_last_duplicate_key_wins_as_in_serde_json() {
        let line = br#"{"a":1,"b":2,"a":3}"#;
        let doc = Doc::parse(line).unwrap();
        let value: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(doc.get("a").map(Doc::to_value), value.get("a").cloned());
        assert_eq!(doc.to_value(), value);
    }

    #[test]
    fn equals_compares_like_value() {
        let doc = Doc::parse(br#"{"n":1,"f":1.0,"s":"x","l":[1,"a"],"z":null}"#).unwrap();
        let get = |k| doc.get(k).unwrap();
        assert!(get("n").equals(&Value::from(1)));
        assert!(!get("n").equals(&Value::from(1.0)));
        assert!(get("f").equals(&Value::from(1.0)));
        assert!(get("s").equals(&Value::from("x")));
        assert!(!get("s").equals(&Value::from(1)));
        assert!(get("l").equals(&serde_json::json!([1, "a"])));
        assert!(get("z").equals(&Value::Null));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-c\"\\\\]{0,3}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON text parses to the same value as serde_json's, and fails where
        /// serde_json fails.
        #[test]
        fn parses_what_serde_json_parses(v in json_value(), cut in any::<prop::sample::Index>()) {
            let text = serde_json::to_vec(&v).unwrap();
            let doc = Doc::parse(&text).unwrap();
            // (Compared with serde_json's parse of the text, not with `v`: floats do not
            // round-trip exactly through serde_json's default number parsing.)
            prop_assert_eq!(doc.to_value(), serde_json::from_slice::<Value>(&text).unwrap());
            let broken = &text[..cut.index(text.len())];
            prop_assert_eq!(
                Doc::parse(broken).map(|d| d.to_value()).map_err(|e| e.to_string()),
                serde_json::from_slice::<Value>(broken).map_err(|e| e.to_string())
            );
        }
    }
}
