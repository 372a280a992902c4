//! The data directory as the commands see it: which segment files feed `export` and
//! `stats`, how the config and command-line overrides become export options, and the
//! running daemon's live buffer count for `stats`.

use crate::config::Config;
use crate::export::{self, ExportInputs, ExportOptions, ExportReport, Format};
use crate::record::Relevance;
use crate::segment::{self, Stream};
use crate::stats::{self, Stats};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Failures of the data-directory commands.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(transparent)]
    Segment(#[from] segment::SegmentError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} belongs to {owner}, and this command would leave files there that only root \
         can use (the daemon, running as {owner}, could then not read or write them): run it \
         as that user, e.g. `sudo -u {owner} training-collector ...`"
    )]
    OwnedByAnother { path: PathBuf, owner: String },
    #[error(
        "data_dir {0} does not exist: the daemon makes it at its first start (`run` with this \
         config); check data_dir and --config"
    )]
    NoDataDir(PathBuf),
}

/// Refuses to let root write into a data_dir that belongs to another user (the daemon's
/// service account): what a command run by root makes there (`state/`, the pseudonym key
/// at mode 0600, the export cache, the lock file) would be root's, and the daemon could
/// no longer start (`cannot lock state/daemon.lock`) or export.
///
/// Whose it is: the owner of `state/`, which the daemon makes at its first start; before
/// that, the data_dir's own owner, except for `daemon` (`run`): a daemon run as root on a
/// directory another user owns (a container's volume) makes `state/` its own, and is then
/// its owner. A data_dir that does not exist yet is left to the command.
pub fn refuse_root_in_anothers_data_dir(cfg: &Config, daemon: bool) -> Result<(), DataDirError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let owner = match std::fs::metadata(cfg.state_dir()) {
        Ok(meta) => meta.uid(),
        Err(_) if daemon => return Ok(()),
        Err(_) => match std::fs::metadata(&cfg.data_dir) {
            Ok(meta) => meta.uid(),
            Err(_) => return Ok(()),
        },
    };
    if owner == 0 {
        return Ok(());
    }
    Err(DataDirError::OwnedByAnother {
        path: cfg.data_dir.clone(),
        owner: user_name(owner).unwrap_or_else(|| format!("uid {owner}")),
    })
}

/// The name of user `uid`, when the user database has one.
fn user_name(uid: u32) -> Option<String> {
    // SAFETY: passwd is plain data (integers and pointers), for which all zeroes is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` is as long as we say; on
    // success `found` points at `pwd`, whose strings live in `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string in `buf`, still alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Every segment (sealed and open) of the examples, feedback and corrections streams.
pub fn inputs(cfg: &Config) -> Result<ExportInputs, DataDirError> {
    Ok(ExportInputs {
        examples: segment::list(&cfg.data_dir, Stream::Examples)?,
        feedback: segment::list(&cfg.data_dir, Stream::Feedback)?,
        corrections: segment::list(&cfg.data_dir, Stream::Corrections)?,
    })
}

/// Command-line overrides of the `[export]` config.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub format: Option<Format>,
    pub min_quality: Option<Relevance>,
    /// `--min-score`: overrides `export.min_score`.
    pub min_score: Option<f64>,
    /// `--max-examples`: overrides `export.max_examples`.
    pub max_examples: Option<u64>,
    /// `--tag`: replaces `export.tags` when given.
    pub tags: Vec<String>,
    /// `--exclude-tag`: besides `export.exclude_tags`.
    pub exclude_tags: Vec<String>,
    pub include_corrections: Option<bool>,
    pub output: Option<PathBuf>,
    pub val_fraction: Option<f64>,
    /// `--ids`: write the ids files whatever `export.ids_file` says.
    pub ids: bool,
    /// `--no-cache`: leave the prepared cache alone (neither read nor write it).
    pub no_cache: bool,
    /// `--decontaminate`: evaluation sets besides `export.decontaminate`.
    pub decontaminate: Vec<PathBuf>,
    /// `--since`, `--until`: the time window, in microseconds since the epoch (see
    /// [`export::input::time_bound_micros`]).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// `--split-by`: overrides `export.split_by`.
    pub split_by: Option<export::SplitBy>,
    pub progress: bool,
}

/// The export options for a config plus overrides; invalid overrides are refused here,
/// before any work starts.
pub fn export_options(cfg: &Config, req: &ExportRequest) -> Result<ExportOptions, DataDirError> {
    // Made here (by the pseudonym key), a mistyped data_dir would export nothing and tell
    // `ready` and `train-check` "not enough data" for ever.
    if !cfg.data_dir.is_dir() {
        return Err(DataDirError::NoDataDir(cfg.data_dir.clone()));
    }
    let e = &cfg.export;
    let format = req.format.unwrap_or(e.format);
    let min_quality = req.min_quality.unwrap_or(e.min_quality);
    let val_fraction = req.val_fraction.unwrap_or(e.val_fraction);
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataDirError::Invalid(format!(
            "--val-fraction must be at least 0 and below 1, not {val_fraction}"
        )));
    }
    let split_by = req.split_by.unwrap_or(e.split_by);
    let min_score = req.min_score.unwrap_or(e.min_score);
    let (since, until) = (req.since, req.until);
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(DataDirError::Invalid(
                "--since must be before --until".into(),
            ));
        }
    }
    Ok(ExportOptions {
        format,
        min_quality,
        include_corrections: req.include_corrections.unwrap_or(e.include_corrections),
        min_prompt_chars: e.min_prompt_chars,
        min_response_chars: e.min_response_chars,
        max_prompt_chars: e.max_prompt_chars,
        max_response_chars: e.max_response_chars,
        min_score,
        tags: if req.tags.is_empty() {
            e.tags.clone()
        } else {
            req.tags.clone()
        },
        max_examples: req.max_examples.unwrap_or(e.max_examples),
        exclude_tags: e
            .exclude_tags
            .iter()
            .chain(&req.exclude_tags)
            .cloned()
            .collect(),
        // The auto tags: a record gets `general` when no tag pattern matches it.
        declared_tags: cfg
            .domain
            .tags
            .keys()
            .cloned()
            .chain(["general".to_string()])
            .collect(),
        strict_tags: req.tags.iter().chain(&req.exclude_tags).cloned().collect(),
        val_fraction,
        system_prompt: (!e.system_prompt.is_empty()).then(|| e.system_prompt.clone()),
        pii_patterns: e.pii_patterns.iter().map(|p| p.0.clone()).collect(),
        pseudonym_key: pseudonym_key(&cfg.state_dir())?,
        near_dup_threshold: e.near_dup_threshold,
        temp_dir: cfg.state_dir().join("tmp"),
        progress: req.progress,
        config_digest: cfg.digest(),
        ids_file: req.ids || e.ids_file,
        decontaminate: e
            .decontaminate
            .iter()
            .chain(&req.decontaminate)
            .cloned()
            .collect(),
        decontaminate_ngram: e.decontaminate_ngram,
        since,
        until,
        split_by,
        cache_dir: (!req.no_cache).then(|| cfg.state_dir().join(export::prepared_cache::DIR_NAME)),
    })
}

/// Builds the training set (see `export`).
pub fn export(cfg: &Config, req: &ExportRequest) -> Result<ExportReport, DataDirError> {
    let output = req
        .output
        .clone()
        .unwrap_or_else(|| cfg.export.output.clone());
    export_with(cfg, &export_options(cfg, req)?, &output)
}

/// Builds the training set from every segment into `output` with options already made.
pub fn export_with(
    cfg: &Config,
    opts: &ExportOptions,
    output: &Path,
) -> Result<ExportReport, DataDirError> {
    create_dir(&opts.temp_dir)?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    Ok(export::export(&inputs(cfg)?, opts, output)?)
}

fn create_dir(p: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(p).map_err(|source| DataDirError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// The pseudonym key's file in the state directory.
const PSEUDONYM_KEY_FILE: &str = "pseudonym.key";

/// The key for pseudonymizing user ids: 32 random bytes made on first use and kept in
/// `state/pseudonym.key` (mode 0600), so the same user maps to the same pseudonym in every
/// export of this installation and to none elsewhere.
pub fn pseudonym_key(state_dir: &Path) -> Result<Vec<u8>, DataDirError> {
    let path = state_dir.join(PSEUDONYM_KEY_FILE);
    let io = |source| DataDirError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 16 => return Ok(k),
        // Cut short (a crash of an older version while writing it): made anew. Another
        // process doing the same meanwhile is fine: only one new key is put in place.
        Ok(_) => {
            let _ = std::fs::remove_file(&path);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    create_dir(state_dir)?;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(io)?;
    // Written whole under a name of its own (mode 0600, as tempfile makes it), then put in
    // place without replacing anything, which fails if another process (the daemon
    // preparing segments ahead, an export) made the key first: then that key is the one, so
    // every process uses the same.
    let mut tmp = tempfile::Builder::new()
        .prefix(".pseudonym.key.")
        .tempfile_in(state_dir)
        .map_err(io)?;
    tmp.write_all(&key).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(&path).map_err(io)
        }
        Err(e) => Err(io(e.error)),
    }
}

/// `stats`: the counts over every segment, plus the running daemon's buffer; and a note for
/// the operator when the buffer could not be counted although something answered.
pub fn stats(cfg: &Config) -> Result<(Stats, Option<String>), DataDirError> {
    let inputs = inputs(cfg)?;
    let rejected = segment::list(&cfg.data_dir, Stream::Rejected)?;
    let mut s = stats::collect(&inputs, &rejected)?;
    let note = match live_buffer_count(cfg) {
        Ok(n) => {
            s.buffer_count = n.unwrap_or(0);
            None
        }
        Err(note) => Some(note),
    };
    s.total_examples += s.buffer_count;
    s.prepared_for_export = prepared_for_export(cfg, &inputs.examples);
    Ok((s, note))
}

/// How many of the sealed example segments among `examples` are in the prepared cache for
/// the config's export options; `None` when that cannot be told (an evaluation set missing,
/// say: `stats` does not fail for it).
fn prepared_for_export(cfg: &Config, examples: &[PathBuf]) -> Option<stats::PreparedForExport> {
    let sealed = export::input::sealed_segments(examples);
    let n = sealed.len() as u64;
    // No key yet: nothing was prepared, and looking must not make one.
    if !cfg.state_dir().join(PSEUDONYM_KEY_FILE).exists() {
        return Some(stats::PreparedForExport {
            prepared: 0,
            sealed: n,
        });
    }
    let opts = export_options(cfg, &ExportRequest::default()).ok()?;
    let prepared = export::prepare_ahead::prepared_count(&opts, &sealed).ok()??;
    Some(stats::PreparedForExport {
        prepared,
        sealed: n,
    })
}

/// The running daemon's buffered example count, asked of its `/healthz` endpoint: at the
/// address the daemon recorded in its lock file (where it really listens, which the config
/// no longer says after a refused `metrics.listen` change), then at the config's
/// `metrics.listen`. `None` when the endpoint is off or nothing listens there (no daemon
/// runs, so nothing is buffered). An answer counts only if it names the instance this
/// data_dir's lock file records: another daemon (of another data_dir) or another program on
/// that address is not ours, and its numbers are not taken; why, is the error.
fn live_buffer_count(cfg: &Config) -> Result<Option<u64>, String> {
    let recorded = crate::data_dir_lock::recorded_endpoint(&cfg.data_dir);
    let mut addrs: Vec<std::net::SocketAddr> = recorded.into_iter().collect();
    if let Some(addr) = cfg.metrics.listen.0 {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    let ours = crate::data_dir_lock::recorded_instance(&cfg.data_dir);
    let mut not_ours = None;
    for addr in addrs {
        match ask_healthz(addr, ours.as_deref(), &cfg.data_dir) {
            Ok(Some(n)) => return Ok(Some(n)),
            Ok(None) => {}
            // The recorded address of a daemon since stopped may be another's by now: only
            // what answers at the configured address is worth a word.
            Err(e) if Some(addr) == cfg.metrics.listen.0 => not_ours = Some(e),
            Err(_) => {}
        }
    }
    not_ours.map_or(Ok(None), Err)
}

/// Asks `addr` for its `/healthz`: the buffered count if the daemon there is instance
/// `ours`, `None` if nothing listens there, why not otherwise.
fn ask_healthz(
    addr: std::net::SocketAddr,
    ours: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Option<u64>, String> {
    let body = match crate::metrics::http_get(addr, "/healthz", Duration::from_millis(500)) {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => {
            return Err(format!(
            "buffer_count not counted: asking http://{addr}/healthz (metrics.listen) failed: {e}"
        ))
        }
    };
    let not_ours = |what: &str| {
        format!(
            "buffer_count not counted: {what} answers on {addr} (metrics.listen), not the daemon \
             of {}; is this config's metrics.listen the one that daemon uses?",
            data_dir.display()
        )
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Err(not_ours("another program"));
    };
    if ours.is_none() || v.get("instance").and_then(|i| i.as_str()) != ours {
        let other = match v.get("data_dir").and_then(|d| d.as_str()) {
            Some(d) => format!("the daemon of {d}"),
            None => "another program".to_string(),
        };
        return Err(not_ours(&other));
    }
    Ok(v.get("buffer_count").and_then(|n| n.as_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `stats` tells how many sealed example segments are prepared for the config's export
    /// options, without making anything (no key, no cache directory) to find out.
    #[test]
    fn stats_counts_the_sealed_segments_prepared_for_export() {
        let f = crate::export::tests::fixture();
        let cfg = Config {
            data_dir: f.dir.path().to_path_buf(),
            ..Config::default()
        };
        let sealed = segment::list(&cfg.data_dir, Stream::Examples)
            .unwrap()
            .iter()
            .filter(|p| !export::input::is_open_segment(p))
            .count() as u64;
        assert!(sealed >= 1);
        let before = stats(&cfg).unwrap().0.prepared_for_export;
        assert_eq!(
            before,
            Some(stats::PreparedForExport {
                prepared: 0,
                sealed
            })
        );
        assert!(!cfg.state_dir().exists(), "stats made the state directory");
        let out = f.dir.path().join("out.jsonl");
        export(
            &cfg,
            &ExportRequest {
                output: Some(out.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        let after = stats(&cfg).unwrap().0.prepared_for_export.unwrap();
        assert_eq!((after.prepared, after.sealed), (sealed, sealed));
        // Other filters read the same entries; options that decide the facts (near-duplicate
        // detection off) are another cache, which the export did not write.
        let filtered = Config {
            export: crate::config::ExportConfig {
                min_prompt_chars: 11,
                min_score: 0.9,
                tags: vec!["tpo".into()],
                ..cfg.export.clone()
            },
            ..cfg.clone()
        };
        let theirs = stats(&filtered).unwrap().0.prepared_for_export.unwrap();
        assert_eq!((theirs.prepared, theirs.sealed), (sealed, sealed));
        let other = Config {
            export: crate::config::ExportConfig {
                near_dup_threshold: 0.0,
                ..cfg.export.clone()
            },
            ..cfg.clone()
        };
        let theirs = stats(&other).unwrap().0.prepared_for_export.unwrap();
        assert_eq!(theirs.prepared, 0);
        // With an evaluation set, whose digest (not its index) `stats` takes.
        let eval = f.dir.path().join("eval.jsonl");
        std::fs::write(
            &eval,
            "{\"q\": \"What is the capital of France these days?\"}\n",
        )
        .unwrap();
        let decontaminated = Config {
            export: crate::config::ExportConfig {
                decontaminate: vec![eval],
                ..cfg.export.clone()
            },
            ..cfg.clone()
        };
        assert_eq!(
            stats(&decontaminated)
                .unwrap()
                .0
                .prepared_for_export
                .unwrap()
                .prepared,
            0
        );
        export(
            &decontaminated,
            &ExportRequest {
                output: Some(out.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        let after = stats(&decontaminated)
            .unwrap()
            .0
            .prepared_for_export
            .unwrap();
        assert_eq!((after.prepared, after.sealed), (sealed, sealed));
        assert!(
            stats::render_table(&stats(&cfg).unwrap().0).contains(&format!(
                "prepared for export: {sealed} of {sealed} sealed segments"
            ))
        );
    }

    /// The key is made once (mode 0600) and read back after; many processes making it at the
    /// same moment (the daemon at start, an export) all end up with the one that was kept.
    #[test]
    fn pseudonym_key_is_made_once_and_shared_by_racing_makers() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let barrier = std::sync::Barrier::new(8);
            let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
                let makers: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            pseudonym_key(&state).unwrap()
                        })
                    })
                    .collect();
                makers.into_iter().map(|m| m.join().unwrap()).collect()
            });
            let kept = std::fs::read(state.join("pseudonym.key")).unwrap();
            assert_eq!(kept.len(), 32);
            assert!(
                keys.iter().all(|k| *k == kept),
                "round {round}: keys differ"
            );
            let mode = std::fs::metadata(state.join("pseudonym.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(pseudonym_key(&state).unwrap(), kept);
            let left: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
            assert_eq!(left.len(), 1, "no temporary files left: {left:?}");
        }
        // A key cut short is made anew, not used.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PSEUDONYM_KEY_FILE), b"short").unwrap();
        let key = pseudonym_key(dir.path()).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(
            std::fs::read(dir.path().join(PSEUDONYM_KEY_FILE)).unwrap(),
            key
        );
    }
}
