//! The output formats, one JSON object per line, with keys in the order shown:
//!
//! | `--format` | line | for |
//! |---|---|---|
//! | `prompt-response` | `{"prompt","response"}` | the seed's format |
//! | `messages` | `{"messages":[{"role":"system",..}?,{"role":"user",..},{"role":"assistant",..}]}` | OpenAI SFT, TRL conversational, Axolotl `chat_template` |
//! | `prompt-completion` | `{"prompt","completion"}` | TRL standard prompt-completion |
//! | `dpo` | `{"prompt","chosen","rejected"}` | TRL DPO (standard form); corrections only |
//! | `kto` | `{"prompt","completion","label"}` | TRL / Axolotl KTO |
//!
//! The first three are SFT formats: they never contain a corrected original or an answer with
//! negative feedback.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Which trainer format export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    PromptResponse,
    Messages,
    PromptCompletion,
    Dpo,
    Kto,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::PromptResponse,
        Format::Messages,
        Format::PromptCompletion,
        Format::Dpo,
        Format::Kto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::PromptResponse => "prompt-response",
            Format::Messages => "messages",
            Format::PromptCompletion => "prompt-completion",
            Format::Dpo => "dpo",
            Format::Kto => "kto",
        }
    }

    /// Supervised fine-tuning formats: one good answer per prompt.
    pub fn is_sft(self) -> bool {
        matches!(
            self,
            Format::PromptResponse | Format::Messages | Format::PromptCompletion
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown format {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// What one output line is made of (already scrubbed).
pub(crate) struct LineParts<'a> {
    pub prompt: &'a str,
    pub completion: &'a str,
    /// DPO: the original answer.
    pub rejected: Option<&'a str>,
    /// KTO: desirable or not.
    pub label: Option<bool>,
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it (only `"`, `\` and
/// control characters); most texts need no escape, and are copied.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if crate::record::needs_json_escape(s) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Appends one line (without newline) to `out`: the same bytes serde_json writes for the
/// format's struct, keys in the order shown in the module documentation.
pub(crate) fn render_into(
    out: &mut Vec<u8>,
    format: Format,
    p: &LineParts<'_>,
    system_prompt: Option<&str>,
) {
    let field = |out: &mut Vec<u8>, sep: &str, name: &str, v: &str| {
        out.extend_from_slice(sep.as_bytes());
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_json_str(out, v);
    };
    match format {
        Format::PromptResponse => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "response", p.completion);
        }
        Format::Messages => {
            out.extend_from_slice(b"{\"messages\":[");
            let mut sep = "";
            let roles = [
                ("system", system_prompt),
                ("user", Some(p.prompt)),
                ("assistant", Some(p.completion)),
            ];
            for (role, content) in roles {
                if let Some(c) = content {
                    out.extend_from_slice(sep.as_bytes());
                    field(out, "{", "role", role);
                    field(out, ",", "content", c);
                    out.push(b'}');
                    sep = ",";
                }
            }
            out.push(b']');
        }
        Format::PromptCompletion => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "completion", p.completion);
        }
        Format::Dpo => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "chosen", p.completion);
            field(out, ",", "rejected", p.rejected.unwrap_or_default());
        }
        Format::Kto => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "completion", p.completion);
            out.extend_from_slice(if p.label.unwrap_or(true) {
                b",\"label\":true"
            } else {
                b",\"label\":false"
            });
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
        assert!("jsonl".parse::<Format>().is_err());
    }

    #[test]
    fn export_format_messages_with_system() {
        let p = LineParts {
            prompt: "q",
            completion: "a",
            rejected: None,
            label: None,
        };
        let mut out = Vec::new();
        render_into(&mut out, Format::Messages, &p, Some("s"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#
        );
    }

    proptest::proptest! {
        /// The hand-written renderer writes what serde_json writes for the format's struct.
        #[test]
        fn export_format_render_matches_serde_json(
            prompt in "(.|[\"\\\\\u{0}-\u{1f}\u{7f}é])*",
            completion in ".*",
            rejected in ".*",
            label in proptest::bool::ANY,
            system in proptest::option::of(".*"),
        ) {
            use serde_json::json;
            for format in Format::ALL {
                let p = LineParts {
                    prompt: &prompt,
                    completion: &completion,
                    rejected: Some(&rejected),
                    label: Some(label),
                };
                let want = match format {
                    Format::PromptResponse => json!({"prompt": prompt, "response": completion}),
                    Format::PromptCompletion => json!({"prompt": prompt, "completion": completion}),
                    Format::Dpo => json!({"prompt": prompt, "chosen": completion, "rejected": rejected}),
                    Format::Kto => json!({"prompt": prompt, "completion": completion, "label": label}),
                    Format::Messages => {
                        let mut m = Vec::new();
                        if let Some(s) = &system {
                            m.push(json!({"role": "system", "content": s}));
                        }
                        m.push(json!({"role": "user", "content": prompt}));
                        m.push(json!({"role": "assistant", "content": completion}));
                        json!({"messages": m})
                    }
                };
                let mut out = Vec::new();
                render_into(&mut out, format, &p, system.as_deref());
                proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), want.to_string());
            }
        }
    }
}
