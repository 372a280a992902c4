//! The output formats, one JSON object per line, with keys in the order shown:
//!
//! | `--format` | line | for |
//! |---|---|---|
//! | `prompt-response` | `{"prompt","response"}` | the seed's format |
//! | `messages` | `{"messages":[{"role":"system",..}?,{"role":"user",..},{"role":"assistant",..}]}` | OpenAI SFT, TRL conversational, Axolotl `chat_template` |
//! | `prompt-completion` | `{"prompt","completion"}` | TRL standard prompt-completion |
//! | `prompt-completion-messages` | `{"prompt":[system?,user],"completion":[assistant]}` | TRL conversational prompt-completion |
//! | `alpaca` | `{"instruction","input":"","output"}` | Axolotl `alpaca` |
//! | `dpo` | `{"prompt","chosen","rejected"}` | TRL DPO (standard form); corrections only |
//! | `dpo-messages` | `{"prompt":[system?,user],"chosen":[assistant],"rejected":[assistant]}` | TRL DPO (conversational form) |
//! | `openai-dpo` | `{"input":{"messages":[system?,user]},"preferred_output":[assistant],"non_preferred_output":[assistant]}` | OpenAI preference fine-tuning |
//! | `kto` | `{"prompt","completion","label"}` | TRL / Axolotl KTO |
//! | `kto-messages` | `{"prompt":[system?,user],"completion":[assistant],"label"}` | TRL KTO (conversational form) |
//!
//! Each message is `{"role","content"}`; the system message is there only with a system prompt.
//! What a line holds is decided by the format's [`Kind`]: the SFT formats never contain a
//! corrected original or an answer with negative feedback, the preference formats pair a
//! correction with the answer it corrects, the binary ones label answers good or bad.

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
    PromptCompletionMessages,
    Alpaca,
    Dpo,
    DpoMessages,
    OpenaiDpo,
    Kto,
    KtoMessages,
}

/// What a format's lines are made of, which decides which records make them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Supervised fine-tuning: one good answer per prompt.
    Sft,
    /// A preferred and a rejected answer to one prompt: a correction and its original.
    Preference,
    /// An answer labelled desirable or not (thumbs up or down, a correction or its original).
    Binary,
}

impl Format {
    pub const ALL: [Format; 10] = [
        Format::PromptResponse,
        Format::Messages,
        Format::PromptCompletion,
        Format::PromptCompletionMessages,
        Format::Alpaca,
        Format::Dpo,
        Format::DpoMessages,
        Format::OpenaiDpo,
        Format::Kto,
        Format::KtoMessages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::PromptResponse => "prompt-response",
            Format::Messages => "messages",
            Format::PromptCompletion => "prompt-completion",
            Format::PromptCompletionMessages => "prompt-completion-messages",
            Format::Alpaca => "alpaca",
            Format::Dpo => "dpo",
            Format::DpoMessages => "dpo-messages",
            Format::OpenaiDpo => "openai-dpo",
            Format::Kto => "kto",
            Format::KtoMessages => "kto-messages",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Format::PromptResponse
            | Format::Messages
            | Format::PromptCompletion
            | Format::PromptCompletionMessages
            | Format::Alpaca => Kind::Sft,
            Format::Dpo | Format::DpoMessages | Format::OpenaiDpo => Kind::Preference,
            Format::Kto | Format::KtoMessages => Kind::Binary,
        }
    }

    /// Supervised fine-tuning formats: one good answer per prompt.
    pub fn is_sft(self) -> bool {
        self.kind() == Kind::Sft
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
    let rejected = p.rejected.unwrap_or_default();
    let label = p.label.unwrap_or(true);
    match format {
        Format::PromptResponse => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "response", p.completion);
        }
        Format::Messages => {
            out.extend_from_slice(b"{\"messages\":[");
            conversation(out, system_prompt, p.prompt);
            out.push(b',');
            message(out, "assistant", p.completion);
            out.push(b']');
        }
        Format::PromptCompletion => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "completion", p.completion);
        }
        Format::PromptCompletionMessages => {
            out.extend_from_slice(b"{\"prompt\":[");
            conversation(out, system_prompt, p.prompt);
            out.push(b']');
            answer(out, "completion", p.completion);
        }
        Format::Alpaca => {
            field(out, "{", "instruction", p.prompt);
            field(out, ",", "input", "");
            field(out, ",", "output", p.completion);
        }
        Format::Dpo => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "chosen", p.completion);
            field(out, ",", "rejected", rejected);
        }
        Format::DpoMessages => {
            out.extend_from_slice(b"{\"prompt\":[");
            conversation(out, system_prompt, p.prompt);
            out.push(b']');
            answer(out, "chosen", p.completion);
            answer(out, "rejected", rejected);
        }
        Format::OpenaiDpo => {
            out.extend_from_slice(b"{\"input\":{\"messages\":[");
            conversation(out, system_prompt, p.prompt);
            out.extend_from_slice(b"]}");
            answer(out, "preferred_output", p.completion);
            answer(out, "non_preferred_output", rejected);
        }
        Format::Kto => {
            field(out, "{", "prompt", p.prompt);
            field(out, ",", "completion", p.completion);
            push_label(out, label);
        }
        Format::KtoMessages => {
            out.extend_from_slice(b"{\"prompt\":[");
            conversation(out, system_prompt, p.prompt);
            out.push(b']');
            answer(out, "completion", p.completion);
            push_label(out, label);
        }
    }
    out.push(b'}');
}

/// `<sep>"name":<v as a JSON string>`.
fn field(out: &mut Vec<u8>, sep: &str, name: &str, v: &str) {
    field_name(out, sep, name);
    push_json_str(out, v);
}

/// `<sep>"name":`.
fn field_name(out: &mut Vec<u8>, sep: &str, name: &str) {
    out.extend_from_slice(sep.as_bytes());
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `{"role":..,"content":..}`.
fn message(out: &mut Vec<u8>, role: &str, content: &str) {
    field(out, "{", "role", role);
    field(out, ",", "content", content);
    out.push(b'}');
}

/// The system message (if any) and the user's, as array elements.
fn conversation(out: &mut Vec<u8>, system_prompt: Option<&str>, prompt: &str) {
    if let Some(s) = system_prompt {
        message(out, "system", s);
        out.push(b',');
    }
    message(out, "user", prompt);
}

/// `,"name":[{"role":"assistant","content":..}]`.
fn answer(out: &mut Vec<u8>, name: &str, content: &str) {
    field_name(out, ",", name);
    out.push(b'[');
    message(out, "assistant", content);
    out.push(b']');
}

fn push_label(out: &mut Vec<u8>, label: bool) {
    out.extend_from_slice(if label {
        b",\"label\":true"
    } else {
        b",\"label\":false"
    });
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
            let mut asked = Vec::new();
            if let Some(s) = &system {
                asked.push(json!({"role": "system", "content": s}));
            }
            asked.push(json!({"role": "user", "content": prompt}));
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
                    Format::Alpaca => json!({"instruction": prompt, "input": "", "output": completion}),
                    Format::Messages => {
                        let mut m = asked.clone();
                        m.push(json!({"role": "assistant", "content": completion}));
                        json!({"messages": m})
                    }
                    Format::DpoMessages => json!({
                        "prompt": asked,
                        "chosen": [{"role": "assistant", "content": completion}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                    }),
                    Format::OpenaiDpo => json!({
                        "input": {"messages": asked},
                        "preferred_output": [{"role": "assistant", "content": completion}],
                        "non_preferred_output": [{"role": "assistant", "content": rejected}],
                    }),
                    Format::PromptCompletionMessages => json!({
                        "prompt": asked,
                        "completion": [{"role": "assistant", "content": completion}],
                    }),
                    Format::KtoMessages => json!({
                        "prompt": asked,
                        "completion": [{"role": "assistant", "content": completion}],
                        "label": label,
                    }),
                };
                let mut out = Vec::new();
                render_into(&mut out, format, &p, system.as_deref());
                proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), want.to_string());
            }
        }
    }
}
