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
//! 10,000-question set of 100-word texts: about a million, some 16 MiB). A run's hash is
//! rolled over its words' hashes, so checking a text costs one hash per word and one lookup
//! per run, whatever `n` is; the lookups need no second hashing (the keys are hashes).
//!
//! This is work on every example's text, on the export's worker threads, and only when an
//! evaluation set is given.

use super::ExportError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
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

/// Keys that are hashes already are used as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with it; anything else still works, slowly.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<Prehashed>>;

/// The word runs of the evaluation sets.
#[derive(Debug, Default)]
pub(crate) struct EvalIndex {
    n: usize,
    runs: HashSet64,
    /// Hashes of whole texts of [`MIN_WHOLE_WORDS`] to `n - 1` words.
    whole: HashSet64,
    pub(crate) summaries: Vec<EvalSetSummary>,
}

/// The multiplier of the rolling run hash (odd, so that multiplying by it loses nothing).
const ROLL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Per-thread buffers for [`EvalIndex::contaminated`]: the words of a text, each as the hash
/// of its lowercase form.
#[derive(Default)]
pub(crate) struct Words {
    hashes: Vec<u64>,
    word: String,
}

impl Words {
    /// The words of `s`: runs of letters and digits, lowercased.
    fn split(&mut self, s: &str) {
        self.hashes.clear();
        if s.is_ascii() {
            // Most text: bytes, no Unicode tables.
            let b = s.as_bytes();
            let mut lower = [0u8; 64];
            let mut i = 0;
            while i < b.len() {
                if !b[i].is_ascii_alphanumeric() {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let w = &b[start..i];
                let h = if w.len() <= lower.len() {
                    for (d, s) in lower.iter_mut().zip(w) {
                        *d = s.to_ascii_lowercase();
                    }
                    xxh3_64(&lower[..w.len()])
                } else {
                    xxh3_64(&w.to_ascii_lowercase())
                };
                self.hashes.push(h);
            }
            return;
        }
        for w in s
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            self.word.clear();
            self.word.extend(w.chars().flat_map(char::to_lowercase));
            self.hashes.push(xxh3_64(self.word.as_bytes()));
        }
    }

    /// The hash of every `n`-word run: sum of `h[i] * ROLL^(n-1-k)` over its words, rolled
    /// along the text.
    fn runs(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        let out = ROLL.wrapping_pow(n as u32 - 1);
        let mut h = 0u64;
        self.hashes.iter().enumerate().filter_map(move |(i, &w)| {
            if i >= n {
                h = h.wrapping_sub(self.hashes[i - n].wrapping_mul(out));
            }
            h = h.wrapping_mul(ROLL).wrapping_add(w);
            (i + 1 >= n).then_some(h)
        })
    }

    /// The hash of the whole text, as one run.
    fn whole(&self) -> u64 {
        self.runs(self.hashes.len().max(1)).next().unwrap_or(0)
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
                return Err(ExportError::EvalSet {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason: "not UTF-8 (an evaluation set is UTF-8 JSON lines or text)",
                });
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
        let sha256 = super::pii::hex(&reader.into_inner().hasher.finalize());
        Ok(EvalSetSummary {
            path: path.display().to_string(),
            sha256,
            texts,
        })
    }

    fn add_text(&mut self, text: &str, words: &mut Words) {
        words.split(text);
        let count = words.hashes.len();
        if count >= self.n {
            self.runs.extend(words.runs(self.n));
        } else if count >= MIN_WHOLE_WORDS {
            self.whole.insert(words.whole());
        }
    }

    /// Whether any of `texts` (a prompt, an answer) shares an `n`-word run with an evaluation
    /// text, or is a short evaluation text word for word.
    pub(crate) fn contaminated(&self, texts: &[&str], words: &mut Words) -> bool {
        texts.iter().any(|t| {
            words.split(t);
            let count = words.hashes.len();
            if count >= self.n {
                words.runs(self.n).any(|h| self.runs.contains(&h))
            } else {
                count >= MIN_WHOLE_WORDS && self.whole.contains(&words.whole())
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
/// The SHA-256 of an evaluation set's bytes, as [`EvalIndex::load`] records it, without
/// reading its texts.
pub(crate) fn file_digest(path: &Path) -> Result<String, ExportError> {
    let err = |source: std::io::Error| ExportError::Input {
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).map_err(err)?, &mut hasher).map_err(err)?;
    Ok(super::pii::hex(&hasher.finalize()))
}

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
    fn a_rolled_run_hash_is_the_hash_of_that_run_alone() {
        let text: Vec<String> = (0..30).map(|i| format!("w{}", i * 7 % 11)).collect();
        let (a, b) = (&mut Words::default(), &mut Words::default());
        a.split(&text.join(" "));
        for n in [1, 5, 12] {
            let rolled: Vec<u64> = a.runs(n).collect();
            assert_eq!(rolled.len(), 30 + 1 - n);
            for (i, h) in rolled.iter().enumerate() {
                b.split(&text[i..i + n].join(", "));
                assert_eq!(*h, b.whole(), "n {n}, run {i}");
            }
        }
        // Words are compared lowercased, ASCII or not, and split on anything else.
        a.split("ÉCOLE Normale—supérieure");
        b.split("école normale supérieure");
        assert_eq!(a.whole(), b.whole());
        b.split("ecole normale superieure");
        assert_ne!(a.whole(), b.whole());
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
        assert_eq!(
            ix.summaries[0].sha256,
            super::super::pii::hex(&Sha256::digest(&bytes))
        );
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
