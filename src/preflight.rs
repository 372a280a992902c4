//! Start-up checks of the config against the filesystem: input directories and
//! `rotated_dirs` that do not exist, and evaluation sets (`export.decontaminate`) that are
//! not files. None is an error (a service may create its log directory after the daemon
//! starts, logrotate creates `olddir` on its first run, and an evaluation set matters only
//! to `export`, which refuses to run without it), but each is a likely cause of "nothing is
//! collected" or "export fails", so `check-config` prints them and the daemon logs them at
//! start and on reload.

use crate::config::Config;
use crate::tail::discovery::literal_dir;
use crate::tail::rotated::rotated_dir;
use std::path::PathBuf;

/// Warnings for paths in `cfg` that point at nothing, in config order.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut log_dirs: Vec<PathBuf> = Vec::new();
    for (i, pattern) in cfg.input.paths.iter().enumerate() {
        let (dir, deeper) = literal_dir(pattern);
        if !dir.is_dir() {
            out.push(format!(
                "input.paths[{i}] = {pattern:?}: the directory {} does not exist (yet); \
                 it is watched for",
                dir.display()
            ));
        } else if !deeper && !log_dirs.contains(&dir) {
            log_dirs.push(dir);
        }
    }
    for (i, rotated) in cfg.input.rotated_dirs.iter().enumerate() {
        let mut missing: Vec<PathBuf> = if rotated.is_absolute() {
            vec![rotated.clone()]
        } else {
            log_dirs.iter().map(|d| rotated_dir(d, rotated)).collect()
        };
        missing.retain(|d| !d.is_dir());
        for dir in missing {
            out.push(format!(
                "input.rotated_dirs[{i}] = {:?}: {} is not a directory; files logrotate \
                 moves there cannot be found until it is",
                rotated.display(),
                dir.display()
            ));
        }
    }
    for (i, set) in cfg.export.decontaminate.iter().enumerate() {
        if !set.is_file() {
            out.push(format!(
                "export.decontaminate[{i}] = {:?}: not a file; export stops until it is",
                set.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(paths: &[String], rotated_dirs: &[PathBuf]) -> Config {
        let mut cfg = Config::default();
        cfg.input.paths = paths.to_vec();
        cfg.input.rotated_dirs = rotated_dirs.to_vec();
        cfg
    }

    #[test]
    fn missing_input_and_rotated_directories_are_named() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir_all(logs.join("old")).unwrap();
        let glob = |d: &Path| format!("{}/*.log", d.display());
        let absent = root.path().join("absent");
        let archive = root.path().join("archive");
        // Everything there: no warning.
        std::fs::create_dir(&archive).unwrap();
        let good = config(&[glob(&logs)], &[PathBuf::from("old"), archive.clone()]);
        assert_eq!(warnings(&good), Vec::<String>::new());
        std::fs::remove_dir(&archive).unwrap();
        let cfg = config(
            &[glob(&logs), glob(&absent), glob(&root.path().join("*"))],
            &[
                PathBuf::from("old"),
                PathBuf::from("older"),
                archive.clone(),
            ],
        );
        let w = warnings(&cfg);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[0].starts_with("input.paths[1]") && w[0].contains("absent"),
            "{w:#?}"
        );
        // Relative ones are looked for next to each log directory that exists.
        assert!(w[1].starts_with("input.rotated_dirs[1]"), "{w:#?}");
        assert!(
            w[1].contains(&logs.join("older").display().to_string()),
            "{w:#?}"
        );
        assert!(w[2].starts_with("input.rotated_dirs[2]"), "{w:#?}");
        assert!(w[2].contains(&archive.display().to_string()), "{w:#?}");
    }

    #[test]
    fn an_evaluation_set_that_is_not_a_file_is_named() {
        let root = tempfile::tempdir().unwrap();
        let golden = root.path().join("golden.jsonl");
        std::fs::write(&golden, "{}\n").unwrap();
        let mut cfg = config(&[], &[]);
        cfg.export.decontaminate = vec![golden, root.path().join("typo.jsonl")];
        let w = warnings(&cfg);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with("export.decontaminate[1]") && w[0].contains("typo.jsonl"),
            "{w:#?}"
        );
    }
}
