//! Preparing sealed example segments ahead of export: the work an export does on first
//! reading a segment (parse, static filters, PII scrub, exact key, MinHash; see
//! [`super::prepared_cache`]), done once, when the segment is sealed, so that the next export
//! with the same options (`export` without flags, `ready`, `train-check`: the config's
//! options) reads the cached facts instead. The daemon calls it from a thread of its own
//! (`crate::cache_warmer`); a user's first export then costs what a repeated one does.
//!
//! It writes exactly the entry an export would write for the segment: the same facts, made
//! by the same code ([`super::prepare::example`]) with the same fingerprint. What depends on
//! feedback and corrections (which keys the join needs) is decided by each export as it
//! files the facts, so nothing prepared here goes stale when feedback arrives later.

use super::decontaminate::EvalIndex;
use super::input;
use super::join::KeyFilter;
use super::pii::Scrubber;
use super::prepare::{self, Ctx, Scratch};
use super::prepared_cache::PreparedCache;
use super::{ExportError, ExportOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What [`AheadPreparer::prepare`] did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its entry was written.
    Written,
    /// It already had an entry made from it with these options.
    AlreadyCached,
    /// It is an open segment (only sealed ones are cached) or is gone.
    NotSealed,
    /// The entry could not be written (a warning says why); the next export prepares the
    /// segment itself.
    NotWritten,
    /// Its caller said to stop while it was being read; nothing was left behind.
    Stopped,
}

/// How many of the sealed segments `sealed` have an entry made from them with `opts` (for
/// `stats`; nothing is made or removed); `None` when these options have no cache.
pub fn prepared_count(
    opts: &ExportOptions,
    sealed: &[PathBuf],
) -> Result<Option<u64>, ExportError> {
    let Some(root) = &opts.cache_dir else {
        return Ok(None);
    };
    // The sets' digests, not their index: building that is an export's work.
    let digests = opts
        .decontaminate
        .iter()
        .map(|p| super::decontaminate::file_digest(p))
        .collect::<Result<Vec<String>, _>>()?;
    let digests: Vec<&str> = digests.iter().map(String::as_str).collect();
    let Some(fingerprint) = super::prepared_cache::fingerprint_with(opts, &digests) else {
        return Ok(None);
    };
    let Some(cache) = PreparedCache::existing(root, fingerprint) else {
        return Ok(Some(0));
    };
    let prepared = sealed
        .iter()
        .filter(|seg| std::fs::File::open(seg).is_ok_and(|file| cache.has_entry(seg, &file)))
        .count();
    Ok(Some(prepared as u64))
}

/// Size and modification time of each evaluation set, as they were when the index was read.
type EvalStamp = Vec<Option<(u64, i64, i64)>>;

fn eval_stamp(paths: &[PathBuf]) -> EvalStamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// Prepares sealed example segments into the prepared cache for one set of export options.
pub struct AheadPreparer {
    opts: ExportOptions,
    scrubber: Scrubber,
    eval: Option<EvalIndex>,
    eval_stamp: EvalStamp,
    lsh: Option<(usize, usize)>,
    cache: PreparedCache,
}

impl AheadPreparer {
    /// A preparer for `opts` (the evaluation sets are read now); `None` when these options
    /// have no cache (`cache_dir` unset, or it cannot be made: a warning says why).
    pub fn new(opts: ExportOptions) -> Result<Option<AheadPreparer>, ExportError> {
        super::validate(&opts)?;
        let Some(root) = opts.cache_dir.clone() else {
            return Ok(None);
        };
        let eval_stamp = eval_stamp(&opts.decontaminate);
        let eval = (!opts.decontaminate.is_empty())
            .then(|| EvalIndex::load(&opts.decontaminate, opts.decontaminate_ngram))
            .transpose()?;
        let Some(cache) = super::prepared_cache::fingerprint(&opts, eval.as_ref())
            .and_then(|fp| PreparedCache::open(&root, fp))
        else {
            return Ok(None);
        };
        let near = opts.near_dup_threshold > 0.0;
        let lsh =
            near.then(|| super::dedup::lsh_params(opts.near_dup_threshold.max(f64::MIN_POSITIVE)));
        Ok(Some(AheadPreparer {
            scrubber: Scrubber::new(&opts.pii_patterns, &opts.pseudonym_key),
            opts,
            eval,
            eval_stamp,
            lsh,
            cache,
        }))
    }

    /// Whether an evaluation set changed on disk since it was read (its contents are in the
    /// fingerprint): entries made now would be of no use to the next export; make a new
    /// preparer.
    pub fn is_stale(&self) -> bool {
        eval_stamp(&self.opts.decontaminate) != self.eval_stamp
    }

    /// Removes the entries of sealed segments not in `live` (deleted since; an entry written
    /// in the last minutes is kept) and temporary entries left by a process that died: a
    /// daemon whose data is never exported would otherwise keep the entries of every segment
    /// a consumer deleted.
    pub fn prune(&self, live: &[PathBuf]) {
        self.cache.prune(live);
    }

    /// Writes the cache entry of the sealed segment `segment` unless it has one made from it.
    /// `go_on` is asked before each chunk of the segment (about 2 MiB) is prepared: it may
    /// wait (the daemon holds the work back while its intake catches up), and false stops
    /// the reading, leaving nothing behind.
    pub fn prepare(
        &mut self,
        segment: &Path,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Outcome, ExportError> {
        if input::is_open_segment(segment) {
            return Ok(Outcome::NotSealed);
        }
        let file = match std::fs::File::open(segment) {
            Ok(f) => f,
            // Deleted meanwhile (retention): nothing to prepare.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::NotSealed),
            Err(source) => {
                return Err(ExportError::Input {
                    path: segment.to_path_buf(),
                    source,
                })
            }
        };
        if self.cache.has_entry(segment, &file) {
            return Ok(Outcome::AlreadyCached);
        }
        let Some(mut entry) = self.cache.writer(segment, &file) else {
            return Ok(Outcome::NotWritten);
        };
        // Facts do not depend on feedback or corrections: each export decides from its own
        // what to take of them (see `super::Filing`), so none are named here.
        let (no_prompts, no_targets) = (Default::default(), KeyFilter::new());
        let ctx = Ctx {
            opts: &self.opts,
            scrubber: &self.scrubber,
            lsh: self.lsh,
            corrected_prompts: &no_prompts,
            targets: &no_targets,
            eval: self.eval.as_ref(),
            for_cache: true,
        };
        let mut scratch = Scratch::new(self.lsh);
        let mut stopped = false;
        let mut write_error = None;
        let read = input::for_each_chunk(
            segment,
            "examples",
            |_| {},
            |chunk| {
                if !go_on() {
                    stopped = true;
                    return Err(ExportError::Internal("stopped".into()));
                }
                for line in chunk.lines() {
                    let facts = prepare::example(&line, 0, &ctx, &mut scratch)
                        .map(|r| r.facts)
                        .map_err(|e| e.to_string());
                    if let Err(e) = entry.push(line.no, &facts) {
                        write_error = Some(e);
                        return Err(ExportError::Internal("cache entry not written".into()));
                    }
                }
                Ok(())
            },
        );
        if stopped {
            return Ok(Outcome::Stopped);
        }
        if let Some(e) = write_error {
            tracing::warn!(segment = %segment.display(), error = %e, "export cache: cannot write an entry");
            return Ok(Outcome::NotWritten);
        }
        let (summary, _) = read?;
        match entry.finish(&summary) {
            Ok(()) => Ok(Outcome::Written),
            Err(e) => {
                tracing::warn!(segment = %segment.display(), error = %e, "export cache: cannot write an entry");
                Ok(Outcome::NotWritten)
            }
        }
    }
}
