//! File discovery: expands the include globs into the regular files present right now, minus
//! the excluded ones ([`Exclude`]), keyed by (device, inode) of their targets (symlinks are
//! followed), and works out which existing directories a file-system watcher should observe.
//!
//! Discovery is a plain re-scan (like Vector) so it is correct even when inotify events were
//! lost (queue overflow, NFS); the watcher only makes it prompt.
//!
//! The glob crate skips names that are not UTF-8 without a word, and the checkpoint keeps
//! paths as text, so such files are not read; [`NonUtf8Names`] at least says so, once per
//! name, for those whose name (read with U+FFFD for the bad bytes) a glob would select.

use glob::{MatchOptions, Pattern};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory to watch and whether its subdirectories matter too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchSpec {
    pub dir: PathBuf,
    pub recursive: bool,
}

/// One matching file found by a scan.
#[derive(Clone, Debug)]
pub struct Found {
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
    /// Size, mtime and ctime at the scan: a file the tailer closed while idle is opened
    /// again only when they change.
    pub stat: Stat,
}

/// What a scan's `stat` says changed in a file: its size, mtime and ctime (seconds,
/// nanoseconds). The ctime also moves on a rename, and a file that reuses a deleted file's
/// inode gets a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stat {
    pub fn of(md: &std::fs::Metadata) -> Stat {
        Stat {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

pub(crate) const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Checks that every pattern is a valid glob.
pub fn validate(patterns: &[String]) -> Result<(), (String, glob::PatternError)> {
    for p in patterns {
        Pattern::new(p).map_err(|e| (p.clone(), e))?;
    }
    Ok(())
}

/// Files the include globs match that are never read, such as logs logrotate compressed
/// (`*.gz`): read as lines, they would only fill the rejected file. A pattern with a `/` is
/// matched against the whole path (resolved like the include globs); one without, against
/// the file name alone, so `*.gz` excludes compressed files in every directory.
#[derive(Clone, Debug, Default)]
pub struct Exclude {
    /// Name patterns that are `*` and a literal (`*.gz`): a suffix compare, not a glob
    /// match (every scan matches every file against every pattern).
    name_suffixes: Vec<String>,
    by_name: Vec<Pattern>,
    by_path: Vec<Pattern>,
}

impl Exclude {
    /// Compiles the patterns; an invalid one is returned with its error.
    pub fn new(patterns: &[String]) -> Result<Self, (String, glob::PatternError)> {
        let mut ex = Exclude::default();
        for p in patterns {
            let pattern = Pattern::new(p).map_err(|e| (p.clone(), e))?;
            if p.contains('/') {
                ex.by_path.push(pattern);
            } else if let Some(suffix) = p.strip_prefix('*').filter(|rest| !has_meta(rest)) {
                ex.name_suffixes.push(suffix.to_string());
            } else {
                ex.by_name.push(pattern);
            }
        }
        Ok(ex)
    }

    /// Whether `path` is excluded.
    pub fn matches(&self, path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let name = path.file_name();
        name.is_some_and(|n| {
            self.name_suffixes
                .iter()
                .any(|s| n.as_bytes().ends_with(s.as_bytes()))
        }) || self
            .by_path
            .iter()
            .any(|p| p.matches_path_with(path, OPTIONS))
            || name.is_some_and(|n| {
                self.by_name
                    .iter()
                    .any(|p| p.matches_path_with(Path::new(n), OPTIONS))
            })
    }
}

/// The valid patterns, compiled (invalid ones are refused by [`validate`] and at reload).
pub(super) fn compile(patterns: &[String]) -> Vec<Pattern> {
    patterns
        .iter()
        .filter_map(|p| Pattern::new(p).ok())
        .collect()
}

/// Whether a scan would read a file at `path`: an include pattern matches the name and no
/// exclusion does (whether a file is there or not).
pub(super) fn selects(include: &[Pattern], exclude: &Exclude, path: &Path) -> bool {
    include.iter().any(|p| p.matches_path_with(path, OPTIONS)) && !exclude.matches(path)
}

/// Expands the patterns, leaving out what `exclude` matches. Files are returned sorted by
/// path, one entry per (dev, inode) (the first path in sorted order wins when a file is
/// reachable by several paths, e.g. a symlink and its target). Unreadable directories and
/// vanished entries are skipped.
pub fn scan(patterns: &[String], exclude: &Exclude) -> Vec<Found> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in patterns {
        match glob::glob_with(p, OPTIONS) {
            Ok(iter) => {
                for entry in iter {
                    match entry {
                        Ok(path) if exclude.matches(&path) => {}
                        Ok(path) => paths.push(path),
                        Err(e) => tracing::debug!(error = %e, "glob entry skipped"),
                    }
                }
            }
            Err(e) => tracing::warn!(pattern = %p, error = %e, "invalid glob pattern ignored"),
        }
    }
    paths.sort();
    paths.dedup();
    let mut seen: HashMap<(u64, u64), ()> = HashMap::new();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        // `metadata` follows symlinks: a symlinked path is tailed as its target.
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            Err(_) => continue,
        };
        if !md.is_file() {
            continue;
        }
        let key = (md.dev(), md.ino());
        if seen.insert(key, ()).is_none() {
            out.push(Found {
                path,
                dev: key.0,
                inode: key.1,
                stat: Stat::of(&md),
            });
        }
    }
    out
}

fn has_meta(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// The name a pattern component stands for when it matches only that name: plain text, and
/// the one-character classes `glob::Pattern::escape` writes (`[[]`, `[]]`, `[*]`, `[?]`),
/// as in a config folder's escaped path (`/srv/app[[]1[]]`). `None` for a wildcard.
pub(crate) fn literal_component(component: &str) -> Option<String> {
    if !has_meta(component) {
        return Some(component.to_string());
    }
    let mut out = String::new();
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => return None,
            '[' => {
                let mut class = chars.clone();
                // `[!` opens a negated class, not a literal `!`.
                match (class.next(), class.next()) {
                    (Some(lit), Some(']')) if lit != '!' => {
                        out.push(lit);
                        chars = class;
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Finds the files a glob would select but for a name that is not UTF-8 (see the module
/// documentation). A folder is listed only when its mtime changed since the last listing, so
/// this costs a `stat` per folder per scan; the folders looked in are the patterns' literal
/// ones and those of the files found (under a `**`, a folder holding only such names is
/// missed).
#[derive(Debug, Default)]
pub struct NonUtf8Names {
    /// Folder -> its mtime when listed, and the names found then.
    listed: HashMap<PathBuf, ((i64, i64), Vec<PathBuf>)>,
    warned: HashSet<PathBuf>,
}

impl NonUtf8Names {
    /// Looks again after a scan of `patterns` that found `found`; warns of each name once.
    pub fn check(&mut self, patterns: &[String], exclude: &Exclude, found: &[Found]) {
        let names: Vec<Pattern> = patterns
            .iter()
            .filter_map(|p| Path::new(p).file_name()?.to_str())
            .filter_map(|n| Pattern::new(n).ok())
            .collect();
        let mut dirs: HashSet<PathBuf> = patterns
            .iter()
            .map(|p| literal_dir(p))
            .filter(|(_, deeper)| !deeper)
            .map(|(d, _)| d)
            .collect();
        // A scan's files come sorted by path, a folder's together: one entry per folder, not
        // an allocation per file (this runs at every scan, over thousands of files).
        let mut last: Option<&Path> = None;
        for parent in found.iter().filter_map(|f| f.path.parent()) {
            if last != Some(parent) {
                last = Some(parent);
                if !dirs.contains(parent) {
                    dirs.insert(parent.to_path_buf());
                }
            }
        }
        self.listed.retain(|d, _| dirs.contains(d));
        for dir in dirs {
            let Ok(md) = std::fs::metadata(&dir) else {
                self.listed.remove(&dir);
                continue;
            };
            let mtime = (md.mtime(), md.mtime_nsec());
            if self.listed.get(&dir).is_some_and(|(m, _)| *m == mtime) {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut bad = Vec::new();
            for e in rd.filter_map(Result::ok) {
                let name = e.file_name();
                if name.to_str().is_some() {
                    continue;
                }
                let lossy = name.to_string_lossy();
                let path = e.path();
                if names.iter().any(|p| p.matches_with(&lossy, OPTIONS)) && !exclude.matches(&path)
                {
                    if self.warned.insert(path.clone()) {
                        tracing::warn!(
                            path = %path.display(),
                            "a log file name is not UTF-8: the file is not read (rename it to read it)"
                        );
                    }
                    bad.push(path);
                }
            }
            self.listed.insert(dir, (mtime, bad));
        }
    }

    /// How many such files the folders held when last listed.
    pub fn count(&self) -> usize {
        self.listed.values().map(|(_, v)| v.len()).sum()
    }
}

/// The directory a pattern's files are in, as far as it is literal: the path up to the
/// first component with a wildcard, or the parent of a pattern without one (`.` when that
/// is empty); and whether files in its subdirectories can match too (a wildcard before the
/// last component: `**` or `dir/*/x.log`).
pub fn literal_dir(pattern: &str) -> (PathBuf, bool) {
    let path = Path::new(pattern);
    let comps: Vec<Option<String>> = path
        .components()
        .map(|c| literal_component(c.as_os_str().to_str().unwrap_or("")))
        .collect();
    let (root, deeper) = match comps.iter().position(Option::is_none) {
        Some(i) => (
            comps[..i].iter().flatten().collect::<PathBuf>(),
            i + 1 < comps.len(),
        ),
        None => (
            comps[..comps.len().saturating_sub(1)]
                .iter()
                .flatten()
                .collect(),
            false,
        ),
    };
    if root.as_os_str().is_empty() {
        (PathBuf::from("."), deeper)
    } else {
        (root, deeper)
    }
}

/// The existing directories to watch for the patterns: each pattern's [`literal_dir`], or
/// its nearest existing ancestor. Recursive when a wildcard sits in a directory component
/// or the literal prefix does not exist yet.
pub fn watch_specs(patterns: &[String]) -> Vec<WatchSpec> {
    let mut specs: Vec<WatchSpec> = Vec::new();
    for p in patterns {
        let path = Path::new(p);
        let (mut dir, mut recursive) = literal_dir(p);
        while !dir.is_dir() {
            recursive = true;
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => dir = parent.to_path_buf(),
                _ => {
                    dir = PathBuf::from(if path.is_absolute() { "/" } else { "." });
                    break;
                }
            }
        }
        if let Some(existing) = specs.iter_mut().find(|s| s.dir == dir) {
            existing.recursive |= recursive;
        } else {
            specs.push(WatchSpec { dir, recursive });
        }
    }
    specs.sort();
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that is not UTF-8 is counted once it would match, whatever the scans since.
    #[test]
    fn names_that_are_not_utf8_are_counted_when_a_glob_would_select_them() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = |n: &[u8]| dir.path().join(std::ffi::OsStr::from_bytes(n));
        std::fs::write(bad(b"caf\xe9.log"), b"x\n").expect("write");
        std::fs::write(bad(b"caf\xe9.txt"), b"x\n").expect("write");
        std::fs::write(bad(b"old\xe9.log.gz"), b"x\n").expect("write");
        std::fs::write(dir.path().join("ok.log"), b"x\n").expect("write");
        let patterns = vec![dir.path().join("*.log").display().to_string()];
        let exclude = Exclude::new(&["*.gz".to_string()]).expect("exclude");
        let mut n = NonUtf8Names::default();
        n.check(&patterns, &exclude, &[]);
        assert_eq!(n.count(), 1);
        n.check(&patterns, &exclude, &[]);
        assert_eq!(n.count(), 1);
        std::fs::remove_file(bad(b"caf\xe9.log")).expect("remove");
        n.check(&patterns, &exclude, &[]);
        assert_eq!(n.count(), 0);
    }

    #[test]
    fn a_pattern_names_its_literal_directory() {
        let p = PathBuf::from;
        assert_eq!(
            literal_dir("/var/log/app/*.log"),
            (p("/var/log/app"), false)
        );
        assert_eq!(
            literal_dir("/var/log/app/x.log"),
            (p("/var/log/app"), false)
        );
        assert_eq!(literal_dir("/var/log/*/x.log"), (p("/var/log"), true));
        assert_eq!(literal_dir("/var/log/**/*.log"), (p("/var/log"), true));
        assert_eq!(literal_dir("x.log"), (p("."), false));
        assert_eq!(literal_dir("*.log"), (p("."), false));
        // An escaped folder (a relative glob under a config folder named `app[1]`) is the
        // folder itself, not a wildcard.
        assert_eq!(
            literal_dir("/srv/app[[]1[]]/logs/*.log"),
            (p("/srv/app[1]/logs"), false)
        );
        assert_eq!(literal_dir("/srv/app[12]/x.log"), (p("/srv"), true));
        assert_eq!(literal_dir("/srv/app[!1]/x.log"), (p("/srv"), true));
    }

    /// The suffix compare that stands in for `*<literal>` name patterns decides as the glob
    /// does, on names that end, or nearly end, with the literal.
    #[test]
    fn exclude_suffix_patterns_match_as_the_glob_does() {
        let patterns = ["*.gz", "*.jsonl.1", "*", "*x", "*.Z", "*-old"];
        let names = [
            "a.gz",
            ".gz",
            "gz",
            "a.gz.1",
            "a.GZ",
            "app.jsonl.1",
            "app.jsonl.10",
            "x",
            "",
            "box",
            "a.Z",
            "a.z",
            "f-old",
            "-old",
            "f-olds",
            "日本.gz",
            "a.g",
        ];
        for p in patterns {
            let fast = Exclude::new(&[p.to_string()]).unwrap();
            assert_eq!(fast.name_suffixes.len(), 1, "{p} takes the suffix path");
            let glob = Pattern::new(p).unwrap();
            for n in names {
                let path = PathBuf::from("/var/log").join(n);
                let want = path
                    .file_name()
                    .is_some_and(|f| glob.matches_path_with(Path::new(f), OPTIONS));
                assert_eq!(fast.matches(&path), want, "{p} on {n:?}");
            }
        }
        // Patterns with other wildcards still go through the glob.
        let ex = Exclude::new(&["*.[gx]z".into(), "*.log.?".into()]).unwrap();
        assert!(ex.name_suffixes.is_empty());
        assert!(ex.matches(Path::new("/x/a.xz")) && ex.matches(Path::new("/x/a.log.1")));
    }

    #[test]
    fn exclude_matches_names_anywhere_and_paths_whole() {
        let ex = Exclude::new(&["*.gz".into(), "/var/log/app/debug-*.jsonl".into()]).unwrap();
        assert!(ex.matches(Path::new("/var/log/app/app.jsonl.2.gz")));
        assert!(ex.matches(Path::new("/srv/x/y/z.gz")));
        assert!(!ex.matches(Path::new("/var/log/app/app.jsonl.1")));
        assert!(!ex.matches(Path::new("/var/log/app/gz")));
        assert!(ex.matches(Path::new("/var/log/app/debug-1.jsonl")));
        assert!(!ex.matches(Path::new("/var/log/other/debug-1.jsonl")));
        assert!(Exclude::new(&["[".into()]).is_err());
    }

    #[test]
    fn scan_leaves_out_excluded_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["app.jsonl", "app.jsonl.1", "app.jsonl.2.gz"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let pat = format!(
            "{}/app.jsonl*",
            Pattern::escape(&dir.path().to_string_lossy())
        );
        let names = |ex: &Exclude| -> Vec<String> {
            scan(std::slice::from_ref(&pat), ex)
                .iter()
                .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&Exclude::default()).len(), 3);
        let ex = Exclude::new(&["*.gz".into()]).unwrap();
        assert_eq!(names(&ex), ["app.jsonl", "app.jsonl.1"]);
    }

    #[test]
    fn scan_follows_symlinks_and_dedupes_by_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("a.log"), b"x\n").expect("write");
        std::fs::write(d.join("b.log"), b"y\n").expect("write");
        std::fs::create_dir(d.join("sub.log")).expect("mkdir");
        std::os::unix::fs::symlink(d.join("a.log"), d.join("c.log")).expect("symlink");
        let pat = format!("{}/*.log", Pattern::escape(&d.to_string_lossy()));
        let found = scan(&[pat], &Exclude::default());
        let names: Vec<_> = found
            .iter()
            .map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, vec![Some("a.log".into()), Some("b.log".into())]);
    }

    #[test]
    fn watch_specs_pick_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_string_lossy().into_owned();
        std::fs::create_dir(dir.path().join("logs")).expect("mkdir");
        let specs = watch_specs(&[
            format!("{d}/logs/*.jsonl"),
            format!("{d}/logs/**/*.jsonl"),
            format!("{d}/missing/*.log"),
        ]);
        assert_eq!(
            specs,
            vec![
                WatchSpec {
                    dir: dir.path().to_path_buf(),
                    recursive: true
                },
                WatchSpec {
                    dir: dir.path().join("logs"),
                    recursive: true
                },
            ]
        );
        let specs = watch_specs(&[format!("{d}/logs/app.jsonl")]);
        assert_eq!(
            specs,
            vec![WatchSpec {
                dir: dir.path().join("logs"),
                recursive: false
            }]
        );
    }
}
