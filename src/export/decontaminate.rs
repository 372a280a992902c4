//! Decontamination against evaluation sets: an example whose prompt or answer shares a run of
//! `n` words (12 by default, as datatrove's n-gram decontamination) with any text of an
//! evaluation file is dropped (`eval_contamination`), so a model is not trained on the
//! questions, or the answers, it will be graded on.
//!
//! An evaluation file is JSON lines in any shape (the formats export writes, a benchmark's
//! `question`/`answer`, chat `messages`): every string value of a line, at any depth, is one
//! text; a line that is not JSON is a text itself. Words are runs of letters and digits,
//! lowercased, so case, punctuation and spacing do not hide a copy. A text shorter than `n`
//! words (a short question) matches a prompt or answer that is that text exactly, word for
//! word; texts under [`MIN_WHOLE_WORDS`] words (labels, choice letters) are not used.
//!
//! The index holds one 64-bit hash per distinct `n`-word run of the evaluation texts (a
//! 10,000-question set of 100-word texts: about a million, some 16 MiB).

use super::ExportError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// Words in a run by default (datatrove's `n_grams`).
pub const DEFAULT_NGRAM_WORDS: usize = 12;
/// Shorter evaluation texts are not matched at all: a one- or two-word text ("A", "True",
/// "Paris") is a label, and matching it would drop unrelated examples.
pub const MIN_WHOLE_WORDS: usize = 3;

/// What the manifest records of one evaluation file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvalSetSummary {
    pub path: String,
    pub sha256: String,
    /// Texts read from it (string values, or non-JSON lines).
    pub texts: u64,
}

/// The word runs of the evaluation sets.
#[derive(Debug, Default)]
pub(crate) struct EvalIndex {
    n: usize,
    runs: HashSet<u64>,
    /// Hashes of whole texts of [`MIN_WHOLE_WORDS`] to `n - 1` words.
    whole: HashSet<u64>,
    pub(crate) summaries: Vec<EvalSetSummary>,
}

/// Per-thread buffers for [`EvalIndex::contaminated`].
#[derive(Default)]
pub(crate) struct Words {
    text: String,
    /// (start, end) byte offsets of each word in `text`.
    spans: Vec<(usize, usize)>,
}

impl Words {
    /// `s` as lowercase words separated by single spaces.
    fn split(&mut self, s: &str) {
        self.text.clear();
        self.spans.clear();
        for word in s
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            let start = self.text.len();
            if word.is_ascii() {
                self.text
                    .extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            } else {
                self.text.extend(word.chars().flat_map(char::to_lowercase));
            }
            self.spans.push((start, self.text.len()));
        }
    }

    /// The hashes of every `n`-word run.
    fn runs(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        self.spans
            .windows(n)
            .map(move |w| xxh3_64(&self.text.as_bytes()[w[0].0..w[n - 1].1]))
    }
}

impl EvalIndex {
    /// Reads the evaluation files. `n` is the run length in words (at least 1).
    pub(crate) fn load(paths: &[PathBuf], n: usize) -> Result<EvalIndex, ExportError> {
        let mut index = EvalIndex {
            n: n.max(1),
            ..EvalIndex::default()
        };
        let mut words = Words::default();
        for path in paths {
            let before = index.runs.len() + index.whole.len();
            let summary = index.add_file(path, &mut words)?;
            if index.runs.len() + index.whole.len() == before {
                tracing::warn!(path = %path.display(), texts = summary.texts, "evaluation set adds nothing to check against (no text of {MIN_WHOLE_WORDS} words or more that another set does not have)");
            } else {
                tracing::debug!(path = %path.display(), texts = summary.texts, runs = index.runs.len(), "evaluation set read");
            }
            index.summaries.push(summary);
        }
        Ok(index)
    }

    fn add_file(&mut self, path: &Path, words: &mut Words) -> Result<EvalSetSummary, ExportError> {
        let err = |source: std::io::Error| ExportError::Input {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(err)?;
        let mut reader = BufReader::new(Hashing {
            inner: file,
            hasher: Sha256::new(),
        });
        let mut texts = 0u64;
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(err)? == 0 {
                break;
            }
            line_no += 1;
            let Ok(text) = std::str::from_utf8(&line) else {
                return Err(ExportError::InvalidOption(format!(
                    "evaluation set {}:{line_no}: not UTF-8",
                    path.display()
                )));
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => {
                    let mut strings = Vec::new();
                    collect_strings(&value, &mut strings);
                    for s in strings {
                        texts += 1;
                        self.add_text(s, words);
                    }
                }
                Err(_) => {
                    texts += 1;
                    self.add_text(text, words);
                }
            }
        }
        let sha256 = hex(&reader.into_inner().hasher.finalize());
        Ok(EvalSetSummary {
            path: path.display().to_string(),
            sha256,
            texts,
        })
    }

    fn add_text(&mut self, text: &str, words: &mut Words) {
        words.split(text);
        let count = words.spans.len();
        if count >= self.n {
            self.runs.extend(words.runs(self.n));
        } else if count >= MIN_WHOLE_WORDS {
            self.whole.insert(xxh3_64(words.text.as_bytes()));
        }
    }

    /// Whether any of `texts` (a prompt, an answer) shares an `n`-word run with an evaluation
    /// text, or is a short evaluation text word for word.
    pub(crate) fn contaminated(&self, texts: &[&str], words: &mut Words) -> bool {
        texts.iter().any(|t| {
            words.split(t);
            let count = words.spans.len();
            if count >= self.n {
                words.runs(self.n).any(|h| self.runs.contains(&h))
            } else {
                count >= MIN_WHOLE_WORDS && self.whole.contains(&xxh3_64(words.text.as_bytes()))
            }
        })
    }
}

/// Every string value in `v`, depth first (object keys are not texts).
fn collect_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// A reader that hashes what passes through it (the manifest's sha256 of an evaluation file
/// is of the bytes that were read, not of a second read that may see another version).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(lines: &[&str], n: usize) -> (tempfile::TempDir, EvalIndex) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("eval.jsonl");
        std::fs::write(&path, lines.join("\n")).expect("write");
        let index = EvalIndex::load(&[path], n).expect("load");
        (dir, index)
    }

    const QUESTION: &str =
        "What is the minimum side lap for a TPO membrane on a low slope roof in a high wind zone?";

    #[test]
    fn a_run_of_n_words_from_any_string_of_any_shape_matches() {
        let (_d, ix) = index(
            &[
                &serde_json::json!({"question": QUESTION, "answer": "B"}).to_string(),
                &serde_json::json!({"messages": [{"role": "user", "content": "Explain how flashing is lapped over the base sheet at a parapet wall corner, step by step please."}]}).to_string(),
                "plain text line: the quick brown fox jumps over the lazy dog near the old barn door",
            ],
            12,
        );
        assert_eq!(ix.summaries[0].texts, 2 + 2 + 1);
        let w = &mut Words::default();
        // Twelve words of the question inside a longer prompt, other case and punctuation.
        assert!(ix.contaminated(
            &["Quick one -- MINIMUM side-lap for a TPO membrane on a low slope roof, in a high wind zone thanks"],
            w
        ));
        // From the nested chat message, and in the answer rather than the prompt.
        assert!(ix.contaminated(
            &[
                "unrelated prompt",
                "flashing is lapped over the base sheet at a parapet wall corner step by step"
            ],
            w
        ));
        assert!(ix.contaminated(
            &["The quick brown fox jumps over the lazy dog near the old barn door."],
            w
        ));
        // Eleven words in a row are not enough; neither are the words out of order.
        assert!(!ix.contaminated(&["side lap for a TPO membrane on a low slope roof"], w));
        assert!(!ix.contaminated(
            &["roof slope low a on membrane TPO a for lap side minimum the is what"],
            w
        ));
        // The label "B" is not a text that matches anything.
        assert!(!ix.contaminated(&["B"], w));
    }

    #[test]
    fn a_short_text_matches_only_a_text_that_is_it_word_for_word() {
        let (_d, ix) = index(
            &[r#"{"prompt": "How long do shingles last?", "label": "yes"}"#],
            12,
        );
        let w = &mut Words::default();
        assert!(ix.contaminated(&["how long do SHINGLES last"], w));
        assert!(!ix.contaminated(&["How long do shingles last on a north-facing roof?"], w));
        assert!(!ix.contaminated(&["yes"], w));
    }

    #[test]
    fn the_run_length_is_the_setting() {
        let (_d, ix) = index(&[QUESTION], 5);
        let w = &mut Words::default();
        assert!(ix.contaminated(&["a TPO membrane on a"], w));
        assert!(!ix.contaminated(&["a TPO membrane on"], w));
    }

    #[test]
    fn the_summary_names_the_file_and_its_digest_and_bad_files_are_errors() {
        let (d, ix) = index(&["one two three four"], 12);
        let bytes = std::fs::read(d.path().join("eval.jsonl")).expect("read");
        assert_eq!(ix.summaries[0].sha256, hex(&Sha256::digest(&bytes)));
        assert!(ix.summaries[0].path.ends_with("eval.jsonl"));
        let missing = EvalIndex::load(&[d.path().join("nope.jsonl")], 12);
        assert!(
            matches!(missing, Err(ExportError::Input { .. })),
            "{missing:?}"
        );
        let bad = d.path().join("bad.jsonl");
        std::fs::write(&bad, b"fine line\n\xff\xfe\n").expect("write");
        let err = EvalIndex::load(&[bad], 12).expect_err("not UTF-8");
        assert!(err.to_string().contains("bad.jsonl:2: not UTF-8"), "{err}");
    }
}
