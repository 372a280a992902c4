//! Tailing against the real binary: what comes out of the daemon is compared, as an exact
//! multiset of request ids (and, where a crash allows repeats, as identical records), with
//! what was written, through rotation (rename, copytruncate, the real `logrotate`),
//! truncation, delete+recreate, restarts, crashes, odd lines and many files.
//!
//! Every interaction line carries a unique request id, so "the sorted ids equal `ids(..)`"
//! proves nothing was lost and nothing was read twice.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(30);

/// A header line that is valid JSON but not an interaction (skipped by the mapper): files
/// that start with it share their first line, hence their fingerprint.
const HEADER: &str = r#"{"event":"start","service":"roofing-assistant"}"#;

fn lines(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| interaction_line(tag, i)).collect()
}

/// The base test config with other input globs and extra `[input]` keys.
fn config(paths: &[&str], input_extra: &str) -> String {
    let p: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    let base = base_config(&[]);
    let from = "paths = [\"logs/*.log\"]\n";
    assert!(base.contains(from));
    base.replace(from, &format!("paths = [{}]\n{input_extra}", p.join(", ")))
}

fn sandbox(paths: &[&str], input_extra: &str) -> Sandbox {
    Sandbox::with_config(&config(paths, input_extra))
}

/// Sorted union of several id ranges.
fn all_ids(parts: &[(&str, std::ops::Range<usize>)]) -> Vec<String> {
    let mut v: Vec<String> = parts
        .iter()
        .flat_map(|(t, r)| ids(t, r.clone()))
        .collect();
    v.sort();
    v
}

fn distinct_ids(sb: &Sandbox) -> usize {
    let mut v = sb.example_request_ids();
    v.dedup();
    v.len()
}

/// Waits until at least `n` distinct request ids are in data/ (written and flushed).
fn wait_for(sb: &Sandbox, n: usize) {
    wait_until(T, &format!("{n} distinct examples"), || distinct_ids(sb) >= n);
}

/// Explains how `got` differs from `want` (both sorted).
fn diff(got: &[String], want: &[String]) -> String {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for g in got {
        *count.entry(g).or_default() += 1;
    }
    for w in want {
        *count.entry(w).or_default() -= 1;
    }
    let missing: Vec<&str> = count
        .iter()
        .filter(|(_, &c)| c < 0)
        .map(|(k, _)| *k)
        .collect();
    let extra: Vec<String> = count
        .iter()
        .filter(|(_, &c)| c > 0)
        .map(|(k, c)| format!("{k} x{c}"))
        .collect();
    format!(
        "got {} ids, want {}; missing {}: {:?}; extra {}: {:?}",
        got.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(20)],
        extra.len(),
        &extra[..extra.len().min(20)]
    )
}

/// Nothing lost, nothing duplicated.
fn assert_exact(sb: &Sandbox, want: &[String]) {
    let got = sb.example_request_ids();
    assert!(
        got == want,
        "{}\ndaemon log:\n{}",
        diff(&got, want),
        tail_of_log(sb)
    );
}

fn tail_of_log(sb: &Sandbox) -> String {
    let log = sb.daemon_log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// After a crash: every wanted id is there, nothing else, and an id that repeats repeats as
/// an identical record (same example id and content).
fn assert_exact_modulo_identical_repeats(sb: &Sandbox, want: &[String]) -> usize {
    let mut by_rid: BTreeMap<String, Value> = BTreeMap::new();
    let mut repeats = 0;
    for mut e in sb.examples() {
        let rid = e["metadata"]["request_id"].as_str().unwrap().to_string();
        // The path may legitimately differ if the line was re-read under a rotated name.
        e["metadata"]["origin_file"] = Value::Null;
        if let Some(prev) = by_rid.get(&rid) {
            assert_eq!(prev, &e, "{rid} repeated with different content");
            repeats += 1;
        } else {
            by_rid.insert(rid, e);
        }
    }
    let got: Vec<String> = by_rid.into_keys().collect();
    assert!(
        got == want,
        "{}\ndaemon log:\n{}",
        diff(&got, want),
        tail_of_log(sb)
    );
    repeats
}

/// A log writer that keeps its file descriptor, like the service does.
struct Writer {
    f: std::fs::File,
}

impl Writer {
    /// O_APPEND: after a truncation the next write lands at the new end.
    fn append(path: &Path) -> Writer {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Writer { f }
    }

    /// Without O_APPEND: after a truncation the next write lands at the old position,
    /// leaving a hole of NUL bytes (a "stale" copytruncate writer).
    fn positional(path: &Path) -> Writer {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .unwrap();
        Writer { f }
    }

    fn write(&mut self, lines: &[String]) {
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        self.f.write_all(&buf).unwrap();
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.f.write_all(bytes).unwrap();
    }
}

/// Whether the daemon holds `path` open right now (from /proc/<pid>/fd).
fn daemon_has_open(d: &Running, path: &Path) -> bool {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", d.pid())) else {
        return false;
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|l| l == want)
}

fn wait_open(d: &Running, path: &Path) {
    wait_until(T, &format!("the daemon to open {}", path.display()), || {
        daemon_has_open(d, path)
    });
}

fn rejected(sb: &Sandbox) -> Vec<Value> {
    sb.records("rejected_")
}

fn no_rejected(sb: &Sandbox) {
    let r = rejected(sb);
    assert!(r.is_empty(), "unexpected rejected records: {r:?}");
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_and_the_new_one_from_the_start() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("r", 0..40));
    let d = sb.start();
    wait_for(&sb, 40);
    // The writer keeps writing to its descriptor after the rename (it has not reopened
    // yet), then reopens the path and writes to the new file.
    w.write(&lines("r", 40..60));
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    w.write(&lines("r", 60..80));
    let mut w = Writer::append(&log);
    w.write(&lines("r", 80..120));
    wait_for(&sb, 120);
    d.stop();
    assert_exact(&sb, &ids("r", 0..120));
    no_rejected(&sb);
}

#[test]
fn rotated_name_that_still_matches_the_glob_is_not_read_twice() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("g", 0..30));
    let d = sb.start();
    wait_for(&sb, 30);
    std::fs::rename(&log, sb.path("logs/app-1.log")).unwrap();
    append_lines(&sb.path("logs/app-1.log"), &lines("g", 30..40));
    append_lines(&log, &lines("g", 40..70));
    wait_for(&sb, 70);
    d.stop();
    // And after a restart, neither name is read again.
    let d = sb.start();
    append_lines(&log, &lines("g", 70..80));
    wait_for(&sb, 80);
    d.stop();
    assert_exact(&sb, &ids("g", 0..80));
}

#[test]
fn many_rapid_rename_rotations_with_shifting_names_inside_the_glob() {
    // logrotate-style numbering: app.log -> app.log.1 -> app.log.2 ..., all matching the
    // glob, as fast as the test can go: nothing may be missed or read twice.
    let sb = sandbox(&["logs/app.log*"], "");
    let dir = sb.path("logs");
    let d = sb.start();
    let rotations = 40;
    let per = 25;
    for r in 0..rotations {
        let mut w = Writer::append(&dir.join("app.log"));
        w.write(&lines("q", r * per..r * per + per / 2));
        for k in (1..=r).rev() {
            std::fs::rename(
                dir.join(format!("app.log.{k}")),
                dir.join(format!("app.log.{}", k + 1)),
            )
            .unwrap();
        }
        std::fs::rename(dir.join("app.log"), dir.join("app.log.1")).unwrap();
        // The writer has not reopened yet.
        w.write(&lines("q", r * per + per / 2..(r + 1) * per));
    }
    wait_for(&sb, rotations * per);
    d.stop();
    assert_exact(&sb, &ids("q", 0..rotations * per));
    no_rejected(&sb);
}

#[test]
fn many_rapid_rename_rotations_out_of_the_glob() {
    // Rotated names leave the glob: the open descriptor is all the daemon has. Each new
    // file only needs to have been seen once (opened) before it is rotated.
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let d = sb.start();
    let rotations = 30;
    let per = 20;
    for r in 0..rotations {
        let mut w = Writer::append(&log);
        wait_open(&d, &log);
        w.write(&lines("o", r * per..r * per + per / 2));
        std::fs::rename(&log, sb.path(&format!("logs/app.log.{r}"))).unwrap();
        w.write(&lines("o", r * per + per / 2..(r + 1) * per));
    }
    wait_for(&sb, rotations * per);
    d.stop();
    assert_exact(&sb, &ids("o", 0..rotations * per));
}

#[test]
fn restart_resumes_exactly_where_it_stopped() {
    let sb = sandbox(&["logs/*.log"], "");
    let a = sb.path("logs/a.log");
    let b = sb.path("logs/b.log");
    append_lines(&a, &lines("a", 0..100));
    let d = sb.start();
    wait_for(&sb, 100);
    d.stop();
    // Written while stopped: more in a, a new file b.
    append_lines(&a, &lines("a", 100..150));
    append_lines(&b, &lines("b", 0..50));
    let d = sb.start();
    wait_for(&sb, 200);
    append_lines(&a, &lines("a", 150..160));
    wait_for(&sb, 210);
    d.stop();
    // A start with nothing new reads nothing.
    let d = sb.start();
    std::thread::sleep(Duration::from_millis(300));
    d.stop();
    assert_exact(&sb, &all_ids(&[("a", 0..160), ("b", 0..50)]));
    no_rejected(&sb);
}

#[test]
fn a_partial_line_across_a_restart_is_completed_once() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("p", 0..10));
    let half = interaction_line("p", 10);
    let (first, second) = half.split_at(half.len() / 2);
    w.raw(first.as_bytes());
    let d = sb.start();
    wait_for(&sb, 10);
    d.stop();
    w.raw(second.as_bytes());
    w.raw(b"\n");
    w.write(&lines("p", 11..12));
    let d = sb.start();
    wait_for(&sb, 12);
    d.stop();
    assert_exact(&sb, &ids("p", 0..12));
    // And once more across a crash.
    let d = sb.start();
    let last = interaction_line("p", 12);
    let (first, second) = last.split_at(last.len() / 3);
    w.raw(first.as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    w.raw(second.as_bytes());
    w.raw(b"\n");
    let d = sb.start();
    wait_for(&sb, 13);
    d.stop();
    assert_exact_modulo_identical_repeats(&sb, &ids("p", 0..13));
    no_rejected(&sb);
}

#[test]
fn crlf_line_endings_are_read_like_lf() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    for (i, l) in lines("c", 0..20).iter().enumerate() {
        w.raw(l.as_bytes());
        w.raw(if i % 2 == 0 { b"\r\n" } else { b"\n" });
    }
    let d = sb.start();
    // A CRLF split across two reads.
    w.raw(interaction_line("c", 20).as_bytes());
    w.raw(b"\r");
    std::thread::sleep(Duration::from_millis(200));
    w.raw(b"\n");
    wait_for(&sb, 21);
    d.stop();
    assert_exact(&sb, &ids("c", 0..21));
    for e in sb.examples() {
        let r = e["response"].as_str().unwrap();
        assert!(!r.contains('\r'), "{e}");
    }
    no_rejected(&sb);
}

#[test]
fn files_appearing_while_running_are_found_even_in_a_directory_created_later() {
    let sb = sandbox(&["logs/*.log", "later/sub/*.log"], "");
    let d = sb.start();
    append_lines(&sb.path("logs/one.log"), &lines("n1", 0..10));
    wait_for(&sb, 10);
    append_lines(&sb.path("logs/two.log"), &lines("n2", 0..10));
    std::fs::create_dir_all(sb.path("later/sub")).unwrap();
    append_lines(&sb.path("later/sub/three.log"), &lines("n3", 0..10));
    // Not matching: ignored.
    append_lines(&sb.path("logs/four.txt"), &lines("n4", 0..10));
    wait_for(&sb, 30);
    d.stop();
    assert_exact(&sb, &all_ids(&[("n1", 0..10), ("n2", 0..10), ("n3", 0..10)]));
}

#[test]
fn fifty_files_written_at_once() {
    let sb = sandbox(&["logs/*.log"], "");
    let d = sb.start();
    let per = 40;
    let threads: Vec<_> = (0..50)
        .map(|f| {
            let path = sb.path(&format!("logs/f{f:02}.log"));
            std::thread::spawn(move || {
                let mut w = Writer::append(&path);
                for chunk in (0..per).collect::<Vec<_>>().chunks(7) {
                    w.write(&lines(&format!("f{f:02}"), chunk[0]..chunk[chunk.len() - 1] + 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_for(&sb, 50 * per);
    d.stop();
    let want: Vec<(String, std::ops::Range<usize>)> =
        (0..50).map(|f| (format!("f{f:02}"), 0..per)).collect();
    let want: Vec<(&str, std::ops::Range<usize>)> =
        want.iter().map(|(t, r)| (t.as_str(), r.clone())).collect();
    assert_exact(&sb, &all_ids(&want));
    no_rejected(&sb);
}
