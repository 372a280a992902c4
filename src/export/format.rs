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
                format!("unknown format {s:?}: expected prompt-response, messages, prompt-completion, dpo or kto")
            })
    }
}

#[derive(Serialize)]
struct PromptResponse<'a> {
    prompt: &'a str,
    response: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Messages<'a> {
    messages: Vec<Message<'a>>,
}

#[derive(Serialize)]
struct PromptCompletion<'a> {
    prompt: &'a str,
    completion: &'a str,
}

#[derive(Serialize)]
struct Dpo<'a> {
    prompt: &'a str,
    chosen: &'a str,
    rejected: &'a str,
}

#[derive(Serialize)]
struct Kto<'a> {
    prompt: &'a str,
    completion: &'a str,
    label: bool,
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

/// Renders one line (without newline).
pub(crate) fn render(
    format: Format,
    p: &LineParts<'_>,
    system_prompt: Option<&str>,
) -> Result<String, serde_json::Error> {
    match format {
        Format::PromptResponse => serde_json::to_string(&PromptResponse {
            prompt: p.prompt,
            response: p.completion,
        }),
        Format::Messages => {
            let mut messages = Vec::with_capacity(3);
            if let Some(sys) = system_prompt {
                messages.push(Message {
                    role: "system",
                    content: sys,
                });
            }
            messages.push(Message {
                role: "user",
                content: p.prompt,
            });
            messages.push(Message {
                role: "assistant",
                content: p.completion,
            });
            serde_json::to_string(&Messages { messages })
        }
        Format::PromptCompletion => serde_json::to_string(&PromptCompletion {
            prompt: p.prompt,
            completion: p.completion,
        }),
        Format::Dpo => serde_json::to_string(&Dpo {
            prompt: p.prompt,
            chosen: p.completion,
            rejected: p.rejected.unwrap_or_default(),
        }),
        Format::Kto => serde_json::to_string(&Kto {
            prompt: p.prompt,
            completion: p.completion,
            label: p.label.unwrap_or(true),
        }),
    }
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
        assert_eq!(
            render(Format::Messages, &p, Some("s")).unwrap(),
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#
        );
    }
}
