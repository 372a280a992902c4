//! The deterministic train/validation split. A line goes to validation when the hash of its
//! normalized prompt, read as a fraction of 2^64, is below `val_fraction`; the decision depends
//! on the prompt alone, so one prompt (and every line sharing it, e.g. the desirable and the
//! undesirable KTO answers to it) lands in one file only, run after run.
//!
//! With [`SplitBy::User`], the hash of the example's user id decides instead (a correction
//! goes with the user of the example it corrects), so everything one user asked lands on one
//! side, and a validation score is not inflated by a user's near-repeats of their own
//! training questions; lines with no known user still go by their prompt.
//!
//! The validation file sits beside the output: `<dir>/<output file stem>.val.jsonl`, where the
//! stem drops the last extension (`training_export.jsonl` -> `training_export.val.jsonl`).

use super::dedup::{key128, normalize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What keeps lines together on one side of the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitBy {
    /// The normalized prompt.
    #[default]
    Prompt,
    /// The user id (`metadata.user_id`), else the prompt.
    User,
}

impl SplitBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitBy::Prompt => "prompt",
            SplitBy::User => "user",
        }
    }
}

impl serde::Serialize for SplitBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl FromStr for SplitBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prompt" => Ok(SplitBy::Prompt),
            "user" => Ok(SplitBy::User),
            other => Err(format!(
                "unknown split_by {other:?}: use \"prompt\" or \"user\""
            )),
        }
    }
}

/// The split group of a user id: a salted hash, so it says nothing about the split by prompt.
pub(crate) fn user_group(user_id: &str) -> u64 {
    (key128(&format!("split-user\0{user_id}")) >> 64) as u64
}

/// Whether a line goes to validation: by its group when it has one (see [`SplitBy::User`]),
/// else by its prompt.
pub(crate) fn is_validation_line(group: Option<u64>, prompt: &str, val_fraction: f64) -> bool {
    match group {
        Some(g) => below_fraction(g, val_fraction),
        None => is_validation(prompt, val_fraction),
    }
}

/// Whether a 64-bit hash, read as a fraction of 2^64, is below `val_fraction`.
fn below_fraction(h: u64, val_fraction: f64) -> bool {
    val_fraction > 0.0 && (h as f64) / 18_446_744_073_709_551_616.0 < val_fraction
}

/// Whether a prompt belongs to the validation set.
pub fn is_validation(prompt: &str, val_fraction: f64) -> bool {
    if val_fraction <= 0.0 {
        return false;
    }
    // A salt keeps the split independent of the dedup key, which uses the same normalisation.
    let h = (key128(&format!("split\0{}", normalize(prompt))) >> 64) as u64;
    below_fraction(h, val_fraction)
}

/// The validation file that goes with `output`.
pub fn validation_path(output: &Path) -> PathBuf {
    output.with_file_name(format!("{}.val.jsonl", stem(output)))
}

/// The ids file that goes with an output file (the training or the validation set):
/// `<stem>.ids.txt`, line N holding the id of the record line N was made from.
pub fn ids_path(output: &Path) -> PathBuf {
    output.with_file_name(format!("{}.ids.txt", stem(output)))
}

/// The file name without its last extension.
fn stem(output: &Path) -> String {
    output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "training_export".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_split_names_and_fraction() {
        assert_eq!(
            validation_path(Path::new("/d/training_export.jsonl")),
            Path::new("/d/training_export.val.jsonl")
        );
        assert_eq!(
            validation_path(Path::new("out")),
            Path::new("out.val.jsonl")
        );
        assert_eq!(
            ids_path(Path::new("/d/training_export.val.jsonl")),
            Path::new("/d/training_export.val.ids.txt")
        );
        let n = (0..2000)
            .filter(|i| is_validation(&format!("prompt number {i}"), 0.1))
            .count();
        assert!((120..280).contains(&n), "{n}");
        assert!(is_validation("Same  Prompt", 0.5) == is_validation("same prompt", 0.5));
        assert!(!is_validation("x", 0.0));
    }
}
