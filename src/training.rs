//! The hand-off to training: `ready` (is there enough curated data?) and `train-check` (the
//! seed's weekly check: export, and when ready run the configured sync and train commands).
//!
//! Commands are argument lists run without a shell, so a prompt or path can never be
//! interpreted as shell syntax; `{export_path}` and `{count}` are replaced in every argument.
//! Their output goes to `train-check`'s stderr (as git's hooks' does), so its stdout holds
//! only its own report for the script that runs it.

use crate::config::Config;
use crate::datadir::{self, DataDirError, ExportRequest};
use serde::Serialize;
use std::path::Path;
use std::process::{Command, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot start {which} command {program:?}: {source}")]
    Spawn {
        which: &'static str,
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Seed `check_training_readiness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub current: u64,
    pub required: u64,
}

/// Counts what an export would produce now (into a scratch file, leaving the real export
/// untouched) against `training.min_examples` or the override.
pub fn ready(cfg: &Config, min_examples: Option<usize>) -> Result<Readiness, TrainingError> {
    let required = min_examples.unwrap_or(cfg.training.min_examples.0) as u64;
    let scratch = cfg.state_dir().join("tmp").join("ready_export.jsonl");
    // Only the count matters: no ids files, whatever `export.ids_file` says.
    let mut opts = datadir::export_options(cfg, &ExportRequest::default())?;
    opts.ids_file = false;
    let report = datadir::export_with(cfg, &opts, &scratch)?;
    for p in [
        crate::export::manifest_path(&scratch),
        crate::export::validation_path(&scratch),
        scratch,
    ] {
        let _ = std::fs::remove_file(p);
    }
    let current = report.after_filtering;
    Ok(Readiness {
        ready: current >= required,
        current,
        required,
    })
}

/// What `train-check` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TrainCheck {
    NotReady {
        current: u64,
        required: u64,
    },
    Triggered {
        count: u64,
        export_path: String,
        ran: Vec<String>,
    },
    CommandFailed {
        command: String,
        status: i32,
        count: u64,
    },
}

impl TrainCheck {
    /// What `train-check` prints on stdout: the seed's line, then the outcome as JSON, in
    /// every outcome, so a script tells "not ready" from "triggered" (both exit 0) by the
    /// last line's `outcome` (returned rather than printed so that the binary decides what a
    /// closed stdout means).
    pub fn report(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        match self {
            TrainCheck::NotReady { current, required } => {
                format!("Need more data: {current}/{required}\n{json}\n")
            }
            TrainCheck::Triggered { .. } => format!("Training triggered\n{json}\n"),
            TrainCheck::CommandFailed { .. } => format!("{json}\n"),
        }
    }

    /// 0, or the failing command's status.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TrainCheck::CommandFailed { status, .. } => {
                ExitCode::from((*status).clamp(1, 255) as u8)
            }
            _ => ExitCode::SUCCESS,
        }
    }
}

/// Seed `weekly_training_check`: export to the configured output; if there are at least
/// `min_examples`, run `sync_command` then `train_command`.
pub fn train_check(cfg: &Config) -> Result<TrainCheck, TrainingError> {
    let report = datadir::export(cfg, &ExportRequest::default())?;
    let count = report.after_filtering;
    let required = cfg.training.min_examples.0 as u64;
    if count < required {
        return Ok(TrainCheck::NotReady {
            current: count,
            required,
        });
    }
    let export_path = cfg.export.output.display().to_string();
    if cfg.training.sync_command.is_empty() && cfg.training.train_command.is_empty() {
        tracing::warn!(
            "ready, but neither training.sync_command nor training.train_command is set: the \
             export is written to {export_path}, nothing was run"
        );
    }
    let mut ran = Vec::new();
    for (which, argv) in [
        ("sync", &cfg.training.sync_command),
        ("train", &cfg.training.train_command),
    ] {
        if argv.is_empty() {
            continue;
        }
        let status = run_command(which, argv, &cfg.export.output, count)?;
        ran.push(which.to_string());
        if status != 0 {
            eprintln!(
                "error: {which} command {:?} failed with status {status}; training was not triggered",
                argv[0]
            );
            let outcome = TrainCheck::CommandFailed {
                command: which.into(),
                status,
                count,
            };
            return Ok(outcome);
        }
    }
    let outcome = TrainCheck::Triggered {
        count,
        export_path,
        ran,
    };
    Ok(outcome)
}

/// Replaces `{export_path}` and `{count}` in every argument.
pub fn expand(argv: &[String], export_path: &Path, count: u64) -> Vec<String> {
    argv.iter()
        .map(|a| {
            a.replace("{export_path}", &export_path.display().to_string())
                .replace("{count}", &count.to_string())
        })
        .collect()
}

fn run_command(
    which: &'static str,
    argv: &[String],
    export_path: &Path,
    count: u64,
) -> Result<i32, TrainingError> {
    let args = expand(argv, export_path, count);
    tracing::info!(command = ?args, "running {which} command");
    use std::os::fd::AsFd;
    let to_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from);
    let status = Command::new(&args[0])
        .args(&args[1..])
        .stdout(to_stderr)
        .status()
        .map_err(|source| TrainingError::Spawn {
            which,
            program: args[0].clone(),
            source,
        })?;
    // A command killed by a signal has no code; report it as 128 + signal like a shell.
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both exit 0: the last line of stdout tells them apart, for a script.
    #[test]
    fn every_report_ends_in_its_outcome_as_json() {
        let outcomes = [
            TrainCheck::NotReady {
                current: 6,
                required: 10,
            },
            TrainCheck::Triggered {
                count: 12,
                export_path: "/d/x.jsonl".into(),
                ran: vec!["sync".into()],
            },
            TrainCheck::CommandFailed {
                command: "sync".into(),
                status: 3,
                count: 12,
            },
        ];
        for (outcome, name) in outcomes
            .iter()
            .zip(["not_ready", "triggered", "command_failed"])
        {
            let report = outcome.report();
            let last: serde_json::Value =
                serde_json::from_str(report.lines().last().unwrap()).unwrap_or_default();
            assert_eq!(last["outcome"], name, "{report}");
        }
        assert!(outcomes[0].report().starts_with("Need more data: 6/10\n"));
    }

    #[test]
    fn placeholders_expand_in_every_argument() {
        let argv = vec![
            "modal".to_string(),
            "volume".into(),
            "put".into(),
            "vol".into(),
            "{export_path}".into(),
            "--n={count}".into(),
        ];
        let out = expand(&argv, Path::new("/d/x.jsonl"), 512);
        assert_eq!(out[4], "/d/x.jsonl");
        assert_eq!(out[5], "--n=512");
        assert_eq!(out[0], "modal");
    }
}
