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

/// Generous: only reached when something is wrong (or the machine is badly overloaded).
const T: Duration = Duration::from_secs(60);

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
    let mut v: Vec<String> = parts.iter().flat_map(|(t, r)| ids(t, r.clone())).collect();
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
    let start = std::time::Instant::now();
    while distinct_ids(sb) < n {
        if start.elapsed() > T {
            panic!(
                "timed out waiting for {n} distinct examples, have {}\ndaemon log:\n{}",
                distinct_ids(sb),
                tail_of_log(sb)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the daemon's threads are doing (for timeouts).
fn threads_of(pid: i32) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.filter_map(Result::ok) {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            let stat = read("stat");
            let state = stat.split(") ").nth(1).and_then(|r| r.split(' ').next());
            out.push_str(&format!(
                "{} {} state={} wchan={}\n",
                t.file_name().to_string_lossy(),
                read("comm").trim(),
                state.unwrap_or("?"),
                read("wchan")
            ));
        }
    }
    out
}

/// SIGTERM and wait for exit 0; on a timeout, say what the daemon was doing.
fn stop(sb: &Sandbox, mut d: Running) {
    d.signal(libc::SIGTERM);
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0), "daemon exit {st}:\n{}", tail_of_log(sb));
            return;
        }
        if start.elapsed() > T {
            let threads = threads_of(d.pid());
            panic!(
                "the daemon did not exit within {T:?} of SIGTERM; threads:\n{threads}log:\n{}",
                tail_of_log(sb)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let start = std::time::Instant::now();
    while !daemon_has_open(d, path) {
        if start.elapsed() > T {
            panic!(
                "timed out waiting for the daemon to open {}; threads:\n{}",
                path.display(),
                threads_of(d.pid())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the daemon holds `path`, deleted, open (its space not yet freed).
fn daemon_holds_deleted(d: &Running, canonical: &Path) -> bool {
    let want = format!("{} (deleted)", canonical.display());
    let Ok(rd) = std::fs::read_dir(format!("/proc/{}/fd", d.pid())) else {
        return false;
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|l| l.as_os_str() == want.as_str())
}

/// With an hour-long `rescan_interval`, a deleted log is closed (its disk space freed) once
/// `rotate_wait` runs out, not at the next re-scan an hour later.
#[test]
fn a_deleted_log_is_closed_at_rotate_wait_not_at_the_next_rescan() {
    let cfg = config(&["logs/*.log"], "")
        .replace("rescan_interval = \"100ms\"", "rescan_interval = \"1h\"")
        .replace("rotate_wait = \"5s\"", "rotate_wait = \"1s\"");
    assert!(cfg.contains("rescan_interval = \"1h\"") && cfg.contains("rotate_wait = \"1s\""));
    let sb = Sandbox::with_config(&cfg);
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("w", 0..3));
    let d = sb.start();
    wait_for(&sb, 3);
    let canonical = std::fs::canonicalize(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    wait_until(T, "the deletion seen", || {
        sb.daemon_log().contains("file renamed away or deleted")
    });
    wait_until(T, "the deleted log closed after rotate_wait", || {
        !daemon_holds_deleted(&d, &canonical)
    });
    assert!(sb.daemon_log().contains("closed rotated-away file"));
    stop(&sb, d);
    assert_exact(&sb, &ids("w", 0..3));
    no_rejected(&sb);
}

fn rejected(sb: &Sandbox) -> Vec<Value> {
    sb.records("rejected_")
}

fn no_rejected(sb: &Sandbox) {
    let r = rejected(sb);
    assert!(r.is_empty(), "unexpected rejected records: {r:?}");
}

/// The config's folder has glob characters in its name (`app[1]...`): the relative glob
/// `logs/*.log` under it still finds the logs there (the folder part used to be read as a
/// character class, so nothing was ever read).
#[test]
fn relative_globs_work_under_a_config_folder_named_with_glob_characters() {
    let sb = Sandbox::with_config_named(&config(&["logs/*.log"], ""), "app[1]*?");
    assert!(sb.dir.path().to_string_lossy().contains("app[1]*?"));
    append_lines(&sb.path("logs/app.log"), &lines("g", 0..5));
    let d = sb.start();
    wait_for(&sb, 5);
    stop(&sb, d);
    assert_exact(&sb, &ids("g", 0..5));
}

/// While a file renamed by a rotation is still held (read to its end, kept until quiet for
/// `rotate_wait`), the new file has its old name: a scrape lists one `file_lag_bytes`
/// series for that name, not two (Prometheus refuses a scrape with duplicate series).
#[test]
fn a_scrape_during_a_rotation_lists_each_series_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(&["logs/*.log"], "")
        .replace("rotate_wait = \"5s\"", "rotate_wait = \"1h\"")
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""));
    assert!(cfg.contains("rotate_wait = \"1h\""), "{cfg}");
    let sb = Sandbox::with_config(&cfg);
    append_lines(&sb.path("logs/app.log"), &lines("r", 0..3));
    let d = sb.start();
    wait_for(&sb, 3);
    std::fs::rename(sb.path("logs/app.log"), sb.path("logs/app.log.1")).unwrap();
    append_lines(&sb.path("logs/app.log"), &lines("r", 3..6));
    wait_for(&sb, 6);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let scrape = || {
        training_collector::metrics::http_get(addr, "/metrics", Duration::from_secs(5))
            .expect("metrics")
    };
    let value = |body: &str, name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    // Both files held, and a full poll (which sets the lags) after that was seen.
    let mut polls = 0;
    wait_until(T, "both files open", || {
        let body = scrape();
        polls = value(&body, "training_collector_full_polls_total");
        value(&body, "training_collector_open_files") == 2
    });
    let mut body = String::new();
    wait_until(T, "a full poll with both files open", || {
        body = scrape();
        value(&body, "training_collector_full_polls_total") > polls + 1
    });
    assert_eq!(value(&body, "training_collector_open_files"), 2, "{body}");
    let mut series = std::collections::HashSet::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (key, _) = line.rsplit_once(' ').unwrap();
        assert!(series.insert(key), "{key} listed twice:\n{body}");
    }
    let app = sb.path("logs/app.log").display().to_string();
    assert!(
        series.contains(format!("training_collector_file_lag_bytes{{path=\"{app}\"}}").as_str()),
        "{body}"
    );
    stop(&sb, d);
    assert_exact(&sb, &ids("r", 0..6));
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
    stop(&sb, d);
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
    stop(&sb, d);
    // And after a restart, neither name is read again.
    let d = sb.start();
    append_lines(&log, &lines("g", 70..80));
    wait_for(&sb, 80);
    stop(&sb, d);
    assert_exact(&sb, &ids("g", 0..80));
}

#[test]
fn many_rapid_rename_rotations_with_shifting_names_inside_the_glob() {
    shifting_rotations("");
}

/// The same with room for three open files among the forty: the rotated files are closed
/// when idle and opened again whenever a rename (a new ctime) or a late write changes them.
#[test]
fn many_rapid_rename_rotations_inside_the_glob_under_a_three_file_budget() {
    shifting_rotations("max_open_files = 3\n");
}

fn shifting_rotations(input_extra: &str) {
    // logrotate-style numbering: app.log -> app.log.1 -> app.log.2 ..., all matching the
    // glob, as fast as the test can go: nothing may be missed or read twice.
    let sb = sandbox(&["logs/app.log*"], input_extra);
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
    stop(&sb, d);
    assert_exact(&sb, &ids("q", 0..rotations * per));
    no_rejected(&sb);
    if !input_extra.is_empty() {
        // The budget did bind.
        assert!(sb
            .daemon_log()
            .contains("more matching files than input.max_open_files"));
    }
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
    stop(&sb, d);
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
    stop(&sb, d);
    // Written while stopped: more in a, a new file b.
    append_lines(&a, &lines("a", 100..150));
    append_lines(&b, &lines("b", 0..50));
    let d = sb.start();
    wait_for(&sb, 200);
    append_lines(&a, &lines("a", 150..160));
    wait_for(&sb, 210);
    stop(&sb, d);
    // A start with nothing new reads nothing.
    let d = sb.start();
    std::thread::sleep(Duration::from_millis(300));
    stop(&sb, d);
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
    stop(&sb, d);
    w.raw(second.as_bytes());
    w.raw(b"\n");
    w.write(&lines("p", 11..12));
    let d = sb.start();
    wait_for(&sb, 12);
    stop(&sb, d);
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
    stop(&sb, d);
    assert_exact_modulo_identical_repeats(&sb, &ids("p", 0..13));
    no_rejected(&sb);
}

#[test]
fn crlf_line_endings_and_a_byte_order_mark_are_read_like_plain_lines() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    // A UTF-8 byte order mark first, as .NET's writers put there.
    w.raw(b"\xEF\xBB\xBF");
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
    stop(&sb, d);
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
    stop(&sb, d);
    assert_exact(
        &sb,
        &all_ids(&[("n1", 0..10), ("n2", 0..10), ("n3", 0..10)]),
    );
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
                    w.write(&lines(
                        &format!("f{f:02}"),
                        chunk[0]..chunk[chunk.len() - 1] + 1,
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_for(&sb, 50 * per);
    stop(&sb, d);
    let want: Vec<(String, std::ops::Range<usize>)> =
        (0..50).map(|f| (format!("f{f:02}"), 0..per)).collect();
    let want: Vec<(&str, std::ops::Range<usize>)> =
        want.iter().map(|(t, r)| (t.as_str(), r.clone())).collect();
    assert_exact(&sb, &all_ids(&want));
    no_rejected(&sb);
}

/// Writes to open logs are read on their file events alone: with thousands of matching files
/// a re-scan of the globs (a stat of every path and every open file) costs milliseconds, and
/// a service writing a few lines at a time wakes the daemon hundreds of times a second. With
/// `rescan_interval = "1h"`, lines appended one at a time to 40 of 300 files in a `**` tree
/// are all read with no full poll at all; a new file still gets one at once.
#[test]
fn writes_to_open_logs_are_read_without_rescanning_the_globs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(&["logs/**/*.log"], "")
        .replace("rescan_interval = \"100ms\"", "rescan_interval = \"1h\"")
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""));
    assert!(cfg.contains("rescan_interval = \"1h\""), "{cfg}");
    let sb = Sandbox::with_config(&cfg);
    let tag = |f: usize| format!("d{}f{}", f / 30, f % 30);
    let path = |f: usize| sb.path(&format!("logs/d{}/f{}.log", f / 30, f % 30));
    for f in 0..300 {
        std::fs::create_dir_all(path(f).parent().unwrap()).unwrap();
        append_lines(&path(f), &lines(&tag(f), 0..1));
    }
    let d = sb.start();
    wait_for(&sb, 300);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metric = |name: &str| -> u64 {
        let body = training_collector::metrics::http_get(addr, "/metrics", Duration::from_secs(5))
            .expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    let full = "training_collector_full_polls_total";
    let light = "training_collector_light_polls_total";
    let (full_before, light_before) = (metric(full), metric(light));
    // Every seventh file (43 of them) gets four more lines.
    let written = (0..300).step_by(300 / 40).count();
    for i in 1..5 {
        for f in (0..300).step_by(300 / 40) {
            append_lines(&path(f), &lines(&tag(f), i..i + 1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(&sb, 300 + 4 * written);
    assert_eq!(
        metric(full),
        full_before,
        "writes to open logs made the daemon re-scan the globs"
    );
    assert!(
        metric(light) > light_before,
        "no light poll read the writes"
    );
    // A new file is a creation: found at once, in spite of the hour-long rescan_interval.
    append_lines(&sb.path("logs/d0/new.log"), &lines("new", 0..1));
    // Its line too, before the stop: a file the daemon has not found yet is read after the
    // next start, not at shutdown.
    wait_for(&sb, 300 + 4 * written + 1);
    assert!(metric(full) > full_before);
    stop(&sb, d);
    let mut want: Vec<String> = (0..300)
        .flat_map(|f| {
            let n = if f % (300 / 40) == 0 { 5 } else { 1 };
            ids(&tag(f), 0..n)
        })
        .chain(ids("new", 0..1))
        .collect();
    want.sort();
    assert_exact(&sb, &want);
    no_rejected(&sb);
}

/// copy + truncate by hand, the copy outside the glob; the writer keeps its descriptor and
/// appends right after each truncation. The daemon must have read a generation before it is
/// copied away (copytruncate with an unmatched copy name loses unread lines by design).
fn copytruncate_rounds(positional: bool) {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = if positional {
        Writer::positional(&log)
    } else {
        Writer::append(&log)
    };
    let d = sb.start();
    let per = 30;
    let rounds = 4;
    for r in 0..rounds {
        w.write(&lines("t", r * per..(r + 1) * per));
        wait_for(&sb, (r + 1) * per);
        std::fs::copy(&log, sb.path(&format!("logs/app.log.{r}"))).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    // Longer than the old offset after the last truncation, written at once.
    w.write(&lines("t", rounds * per..rounds * per + 2 * per));
    wait_for(&sb, rounds * per + 2 * per);
    stop(&sb, d);
    assert_exact(&sb, &ids("t", 0..rounds * per + 2 * per));
    no_rejected(&sb);
    if positional {
        // The stale writer left a NUL hole at the start of the file: skipped, not read.
        let bytes = std::fs::read(&log).unwrap();
        assert_eq!(bytes[0], 0, "expected a NUL hole");
    }
    for e in sb.examples() {
        assert!(!e.to_string().contains("\\u0000"), "NUL bytes in {e}");
    }
}

#[test]
fn copytruncate_while_an_appending_writer_keeps_writing() {
    copytruncate_rounds(false);
}

#[test]
fn copytruncate_with_a_stale_writer_leaving_a_nul_hole() {
    copytruncate_rounds(true);
}

#[test]
fn truncation_while_running_to_shorter_and_longer_content() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    append_lines(&log, &[HEADER.to_string()]);
    append_lines(&log, &lines("u", 0..20));
    let d = sb.start();
    wait_for(&sb, 20);
    // Same header (same fingerprint), fewer lines than before.
    let mut short = vec![HEADER.to_string()];
    short.extend(lines("v", 0..5));
    std::fs::write(&log, short.join("\n") + "\n").unwrap();
    wait_for(&sb, 25);
    // Same header, as many lines as before (same size): only the content differs.
    let mut same = vec![HEADER.to_string()];
    same.extend(lines("w", 0..5));
    std::fs::write(&log, same.join("\n") + "\n").unwrap();
    wait_for(&sb, 30);
    // Same header, longer than before.
    let mut long = vec![HEADER.to_string()];
    long.extend(lines("x", 0..40));
    std::fs::write(&log, long.join("\n") + "\n").unwrap();
    wait_for(&sb, 70);
    stop(&sb, d);
    assert_exact(
        &sb,
        &all_ids(&[("u", 0..20), ("v", 0..5), ("w", 0..5), ("x", 0..40)]),
    );
}

#[test]
fn truncation_while_stopped_with_new_content_shorter_equal_and_longer() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let rewrite = |tag: &str, n: usize| {
        let mut v = vec![HEADER.to_string()];
        v.extend(lines(tag, 0..n));
        // Truncate in place (same inode), as `: > file` plus a write would.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        f.write_all((v.join("\n") + "\n").as_bytes()).unwrap();
    };
    append_lines(&log, &[HEADER.to_string()]);
    append_lines(&log, &lines("a", 0..30));
    let d = sb.start();
    wait_for(&sb, 30);
    stop(&sb, d);
    let mut want = 30;
    for (tag, n) in [("s", 10), ("e", 10), ("l", 60)] {
        rewrite(tag, n);
        let d = sb.start();
        want += n;
        wait_for(&sb, want);
        stop(&sb, d);
    }
    assert_exact(
        &sb,
        &all_ids(&[("a", 0..30), ("s", 0..10), ("e", 0..10), ("l", 0..60)]),
    );
    assert!(
        sb.daemon_log()
            .contains("truncated or rewritten while stopped"),
        "{}",
        tail_of_log(&sb)
    );
}

#[test]
fn delete_and_recreate_at_the_same_path() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let with_header = |tag: &str, r: std::ops::Range<usize>| {
        let mut v = vec![HEADER.to_string()];
        v.extend(lines(tag, r));
        v
    };
    append_lines(&log, &with_header("d", 0..20));
    let d = sb.start();
    wait_for(&sb, 20);
    // While running, immediately recreated with the same first line.
    std::fs::remove_file(&log).unwrap();
    append_lines(&log, &with_header("e", 0..40));
    wait_for(&sb, 60);
    stop(&sb, d);
    // While stopped: the inode number is likely reused, the first line is the same, the
    // new content is longer than the saved offset.
    std::fs::remove_file(&log).unwrap();
    append_lines(&log, &with_header("f", 0..50));
    let d = sb.start();
    wait_for(&sb, 110);
    // And shorter than the saved offset.
    stop(&sb, d);
    std::fs::remove_file(&log).unwrap();
    append_lines(&log, &with_header("h", 0..3));
    let d = sb.start();
    wait_for(&sb, 113);
    stop(&sb, d);
    assert_exact(
        &sb,
        &all_ids(&[("d", 0..20), ("e", 0..40), ("f", 0..50), ("h", 0..3)]),
    );
}

#[test]
fn kill9_mid_stream_then_restart_loses_nothing_and_repeats_only_identical_records() {
    let sb = Sandbox::with_config(&config(&["logs/*.log"], "").replace(
        "size = 50\nflush_interval = \"200ms\"",
        "size = 7\nflush_interval = \"100ms\"",
    ));
    let log = sb.path("logs/app.log");
    let n = 3000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut w = Writer::append(&log);
            for c in 0..n / 10 {
                w.write(&lines("k", c * 10..c * 10 + 10));
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for round in 0..3 {
        let d = sb.start();
        let before = distinct_ids(&sb);
        wait_until(T, "progress before the crash", || {
            distinct_ids(&sb) > before + 50 || (writer.is_finished() && round > 0)
        });
        d.kill9();
    }
    writer.join().unwrap();
    let d = sb.start();
    wait_for(&sb, n);
    stop(&sb, d);
    let repeats = assert_exact_modulo_identical_repeats(&sb, &ids("k", 0..n));
    eprintln!("{repeats} lines repeated after the crashes");
}

/// Bytes of example segments in data/ (cheap to poll, unlike parsing them).
fn example_segment_bytes(sb: &Sandbox) -> u64 {
    std::fs::read_dir(sb.path("data"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("examples_"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A backlog read much faster than it is prepared: many polls' batches are in flight on the
/// worker threads at every durable point (every 10 ms here), so a checkpoint that covered a
/// batch still being prepared would lose its lines at the kill. Each kill lands once a few
/// MB of examples have been written since the start, i.e. mid-stream.
#[test]
fn kill9_while_a_large_backlog_is_in_flight_loses_nothing() {
    let sb = Sandbox::with_config(
        &config(&["logs/*.log"], "read_budget = \"64KiB\"\n").replace(
            "size = 50\nflush_interval = \"200ms\"",
            "size = 500\nflush_interval = \"10ms\"",
        ),
    );
    let n = 150_000;
    append_lines(&sb.path("logs/big.log"), &lines("q", 0..n));
    let mut kills = 0;
    for _ in 0..4 {
        let d = sb.start();
        let before = example_segment_bytes(&sb);
        let (mut last, mut since) = (before, std::time::Instant::now());
        let mid_stream = loop {
            let now = example_segment_bytes(&sb);
            if now > before + (3 << 20) {
                break true;
            }
            if now != last {
                (last, since) = (now, std::time::Instant::now());
            } else if since.elapsed() > Duration::from_secs(3) {
                break false; // nothing left to read
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !mid_stream {
            stop(&sb, d);
            break;
        }
        d.kill9();
        kills += 1;
    }
    let d = sb.start();
    wait_for(&sb, n);
    stop(&sb, d);
    let repeats = assert_exact_modulo_identical_repeats(&sb, &ids("q", 0..n));
    eprintln!("{kills} kills, {repeats} lines repeated");
    assert!(kills > 0, "the backlog was read before a kill could land");
}

#[test]
fn a_2mib_line_is_rejected_whole_under_the_default_limit_and_kept_under_a_larger_one() {
    let big = |i: usize| {
        serde_json::json!({
            "event": "interaction",
            "request_id": format!("big-{i:06}"),
            "query": "What does the long spec say about TPO seams?",
            "response": "x".repeat(2 << 20),
        })
        .to_string()
    };
    for limit in [None, Some("4MiB")] {
        let extra = limit.map(|l| format!("max_line_bytes = \"{l}\"\n"));
        let sb = sandbox(&["logs/*.log"], extra.as_deref().unwrap_or(""));
        let log = sb.path("logs/app.log");
        let mut w = Writer::append(&log);
        w.write(&lines("b", 0..5));
        let d = sb.start();
        wait_for(&sb, 5);
        let line = big(0);
        let offset = std::fs::metadata(&log).unwrap().len();
        // Written in pieces, so it is read across several polls.
        for chunk in line.as_bytes().chunks(300 * 1024) {
            w.raw(chunk);
            std::thread::sleep(Duration::from_millis(20));
        }
        w.raw(b"\n");
        w.write(&lines("b", 5..10));
        if limit.is_none() {
            wait_for(&sb, 10);
            stop(&sb, d);
            assert_exact(&sb, &ids("b", 0..10));
            let r = rejected(&sb);
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0]["offset"], offset, "{}", r[0]["reason"]);
            assert_eq!(r[0]["raw_len"], line.len(), "{}", r[0]["reason"]);
            assert!(
                r[0]["reason"].as_str().unwrap().contains("max_line_bytes"),
                "{}",
                r[0]["reason"]
            );
            assert!(r[0]["raw"].as_str().unwrap().len() <= 4096);
        } else {
            wait_for(&sb, 11);
            stop(&sb, d);
            let mut want = ids("b", 0..10);
            want.push("big-000000".into());
            want.sort();
            assert_exact(&sb, &want);
            let ex = sb.examples();
            let e = ex
                .iter()
                .find(|e| e["metadata"]["request_id"] == "big-000000")
                .unwrap();
            assert_eq!(e["response"].as_str().unwrap().len(), 2 << 20);
            no_rejected(&sb);
        }
    }
}

#[test]
fn invalid_utf8_is_rejected_with_its_offset_and_the_neighbours_are_kept() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("i", 0..3));
    let bad_at = std::fs::metadata(&log).unwrap().len();
    let mut bad = interaction_line("bad", 0).into_bytes();
    let pos = bad.len() - 20;
    bad[pos] = 0xff;
    bad[pos + 1] = 0xfe;
    w.raw(&bad);
    w.raw(b"\n");
    let bad2_at = bad_at + bad.len() as u64 + 1;
    w.raw(b"\xc3\x28 latin-1 caf\xe9\r\n");
    w.write(&lines("i", 3..6));
    let d = sb.start();
    wait_for(&sb, 6);
    wait_until(T, "2 rejected records", || rejected(&sb).len() >= 2);
    stop(&sb, d);
    assert_exact(&sb, &ids("i", 0..6));
    let mut r = rejected(&sb);
    r.sort_by_key(|v| v["offset"].as_u64());
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["offset"], bad_at);
    assert_eq!(r[0]["raw_len"], bad.len());
    assert_eq!(r[1]["offset"], bad2_at);
    for x in &r {
        assert!(
            x["reason"].as_str().unwrap().contains("UTF-8"),
            "{}",
            x["reason"]
        );
    }
}

#[test]
fn a_corrupt_checkpoint_file_is_set_aside_and_nothing_is_lost() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("z", 0..40));
    let d = sb.start();
    wait_for(&sb, 40);
    stop(&sb, d);
    let cp = sb.path("data/state/checkpoints.json");
    assert!(cp.exists());
    let len = std::fs::metadata(&cp).unwrap().len() as usize;
    // Zero-filled, as after a crash on some file systems.
    std::fs::write(&cp, vec![0u8; len]).unwrap();
    append_lines(&log, &lines("z", 40..60));
    let d = sb.start();
    wait_for(&sb, 60);
    stop(&sb, d);
    assert_exact_modulo_identical_repeats(&sb, &ids("z", 0..60));
    let aside: Vec<String> = std::fs::read_dir(sb.path("data/state"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoints.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    // A fresh, valid checkpoint again: the next start reads nothing twice.
    let before = sb.example_request_ids().len();
    let d = sb.start();
    append_lines(&log, &lines("z", 60..65));
    wait_for(&sb, 65);
    stop(&sb, d);
    assert_eq!(sb.example_request_ids().len(), before + 5);
}

#[test]
fn a_symlinked_log_path_is_followed_through_target_rotation() {
    // logs/current.log -> ../real/app-N.log, re-pointed at each rotation.
    let sb = sandbox(&["logs/current.log"], "");
    std::fs::create_dir_all(sb.path("real")).unwrap();
    let link = sb.path("logs/current.log");
    let target = |n: usize| sb.path(&format!("real/app-{n}.log"));
    append_lines(&target(0), &lines("y", 0..20));
    std::os::unix::fs::symlink(target(0), &link).unwrap();
    let d = sb.start();
    wait_for(&sb, 20);
    for n in 1..4 {
        append_lines(&target(n), &lines("y", n * 20..n * 20 + 10));
        let tmp = sb.path("logs/.current.tmp");
        std::os::unix::fs::symlink(target(n), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        // The old target still gets lines from a writer that has not switched yet.
        append_lines(&target(n - 1), &lines("y", 100 + n * 10..100 + n * 10 + 10));
        append_lines(&target(n), &lines("y", n * 20 + 10..n * 20 + 20));
        wait_for(&sb, 20 + n * 30);
    }
    stop(&sb, d);
    // Restart through the link resumes exactly.
    append_lines(&target(3), &lines("y", 200..210));
    let d = sb.start();
    wait_for(&sb, 20 + 90 + 10);
    stop(&sb, d);
    assert_exact(
        &sb,
        &all_ids(&[("y", 0..80), ("y", 110..140), ("y", 200..210)]),
    );
}

#[test]
fn start_at_end_skips_what_was_there_at_the_first_start_only() {
    let sb = sandbox(&["logs/*.log"], "start_at = \"end\"\n");
    let a = sb.path("logs/a.log");
    let mut w = Writer::append(&a);
    w.write(&lines("old", 0..30));
    // A line still being written at startup is read whole once it completes.
    let partial = interaction_line("s", 0);
    let (p1, p2) = partial.split_at(40);
    w.raw(p1.as_bytes());
    let d = sb.start();
    wait_open(&d, &a);
    w.raw(p2.as_bytes());
    w.raw(b"\n");
    w.write(&lines("s", 1..10));
    // A file appearing later is read from its start.
    append_lines(&sb.path("logs/b.log"), &lines("sb", 0..10));
    wait_for(&sb, 20);
    stop(&sb, d);
    // Written while stopped: not skipped (the checkpoint exists now).
    w.write(&lines("s", 10..20));
    append_lines(&sb.path("logs/c.log"), &lines("sc", 0..5));
    let d = sb.start();
    wait_for(&sb, 35);
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("s", 0..20), ("sb", 0..10), ("sc", 0..5)]));
    no_rejected(&sb);
}

/// Runs the real logrotate (`-f`, its own state file) on `logs/app.log` with `mode`.
fn logrotate(sb: &Sandbox, mode: &str) {
    logrotate_with(sb, &[mode, "nocompress"]);
}

/// Runs the real logrotate on `logs/app.log` with these directives.
fn logrotate_with(sb: &Sandbox, directives: &[&str]) {
    let conf = sb.path("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n    rotate 100\n    missingok\n    {}\n}}\n",
            sb.path("logs/app.log").display(),
            directives.join("\n    ")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(logrotate_bin())
        .arg("-f")
        .arg("-s")
        .arg(sb.path("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "logrotate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn logrotate_bin() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/logrotate");
    if p.exists() {
        p
    } else {
        PathBuf::from("logrotate")
    }
}

#[test]
fn logrotate_compressed_copies_matching_the_glob_are_not_read() {
    // `compress` + `delaycompress` with a glob that takes in the rotated names: app.log.1 is
    // a copy (recognised, not read twice); app.log.2.gz and older are gzip, which the default
    // `input.exclude` leaves out. Read as lines they would fill the rejected file.
    let sb = sandbox(&["logs/app.log*"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    let d = sb.start();
    let per = 15;
    let rounds = 5;
    for r in 0..rounds {
        w.write(&lines("gz", r * per..(r + 1) * per));
        wait_for(&sb, (r + 1) * per);
        logrotate_with(&sb, &["copytruncate", "compress", "delaycompress"]);
    }
    w.write(&lines("gz", rounds * per..rounds * per + 5));
    wait_for(&sb, rounds * per + 5);
    stop(&sb, d);
    assert!(sb.path("logs/app.log.3.gz").exists());
    assert_exact(&sb, &ids("gz", 0..rounds * per + 5));
    no_rejected(&sb);
}

#[test]
fn logrotate_create_mode() {
    // Rotated names (app.log.1, .2, ...) are outside the glob: the daemon follows the
    // renamed file by its descriptor, the writer writes to its old descriptor until it
    // reopens, then to the file logrotate created.
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    let d = sb.start();
    let per = 20;
    let rounds = 6;
    for r in 0..rounds {
        wait_open(&d, &log);
        w.write(&lines("lc", r * per..r * per + per / 2));
        logrotate(&sb, "create");
        w.write(&lines("lc", r * per + per / 2..(r + 1) * per));
        w = Writer::append(&log);
    }
    w.write(&lines("lc", rounds * per..rounds * per + 5));
    wait_for(&sb, rounds * per + 5);
    stop(&sb, d);
    assert_exact(&sb, &ids("lc", 0..rounds * per + 5));
    assert!(sb.path(&format!("logs/app.log.{rounds}")).exists());
    no_rejected(&sb);
}

#[test]
fn logrotate_copytruncate_mode_with_copies_matching_the_glob() {
    // The copies (app.log.1, shifted to .2, ...) match the glob: they are recognised as
    // copies and not read again, and the truncated original is read from its start while
    // the writer keeps appending to the same descriptor.
    let sb = sandbox(&["logs/app.log*"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    let d = sb.start();
    let per = 12;
    let rounds = 6;
    for r in 0..rounds {
        w.write(&lines("lt", r * per..(r + 1) * per));
        // Lines written after the daemon's last read and before the copy are in the copy
        // only; make the copy after the daemon has read them (see the copy-in-progress
        // limitation in the tail module docs).
        wait_for(&sb, (r + 1) * per);
        logrotate(&sb, "copytruncate");
    }
    w.write(&lines("lt", rounds * per..rounds * per + 30));
    wait_for(&sb, rounds * per + 30);
    stop(&sb, d);
    assert_exact(&sb, &ids("lt", 0..rounds * per + 30));
    assert!(sb.path(&format!("logs/app.log.{rounds}")).exists());
    no_rejected(&sb);
}

#[test]
fn logrotate_copytruncate_mode_with_copies_outside_the_glob() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    let d = sb.start();
    let per = 25;
    let rounds = 5;
    for r in 0..rounds {
        w.write(&lines("lo", r * per..(r + 1) * per));
        wait_for(&sb, (r + 1) * per);
        logrotate(&sb, "copytruncate");
        // Right after the truncation, before the daemon may have looked.
        w.write(&lines("lo", 1000 + r * 3..1000 + r * 3 + 3));
    }
    wait_for(&sb, rounds * per + rounds * 3);
    stop(&sb, d);
    assert_exact(
        &sb,
        &all_ids(&[("lo", 0..rounds * per), ("lo", 1000..1000 + rounds * 3)]),
    );
    no_rejected(&sb);
}

#[test]
fn a_corrupt_checkpoint_under_start_at_end_does_not_skip_lines_written_while_stopped() {
    // start_at = "end" is for the very first start; a checkpoint that existed but cannot be
    // read is not a first start: re-reading (identical ids) beats losing lines.
    let sb = sandbox(&["logs/*.log"], "start_at = \"end\"\n");
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("before", 0..10));
    let d = sb.start();
    wait_open(&d, &log);
    append_lines(&log, &lines("ce", 0..20));
    wait_for(&sb, 20);
    stop(&sb, d);
    let cp = sb.path("data/state/checkpoints.json");
    std::fs::write(&cp, b"{\"version\":1,\"files\":[{\"dev\":").unwrap();
    append_lines(&log, &lines("ce", 20..30));
    let d = sb.start();
    wait_until(T, "the lines written while stopped", || {
        sb.example_request_ids().contains(&"ce-000029".to_string())
    });
    stop(&sb, d);
    let got: Vec<String> = {
        let mut v = sb.example_request_ids();
        v.dedup();
        v.retain(|r| r.starts_with("ce-"));
        v
    };
    assert_eq!(got, ids("ce", 0..30), "{}", diff(&got, &ids("ce", 0..30)));
}

#[test]
fn rotation_while_stopped_finishes_the_rotated_file_and_does_not_reread_it() {
    let sb = sandbox(&["logs/app.log*"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("rs", 0..30));
    let d = sb.start();
    wait_for(&sb, 30);
    stop(&sb, d);
    // While stopped: more lines, rotation (the rotated name still matches), more lines to
    // the old descriptor, a new file.
    w.write(&lines("rs", 30..40));
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    w.write(&lines("rs", 40..45));
    append_lines(&log, &lines("rs", 45..60));
    let d = sb.start();
    wait_for(&sb, 60);
    stop(&sb, d);
    assert_exact(&sb, &ids("rs", 0..60));
}

#[test]
fn logrotate_compress_without_delaycompress_while_stopped_loses_nothing() {
    // The daemon is stopped with lines unread; logrotate renames app.log to app.log.1 and
    // compresses it at once (no `delaycompress`), then the service writes a new app.log.
    // The unread lines are only in app.log.1.gz, out of the globs: the daemon finds it next
    // to the saved path and reads it on from the saved offset. Both glob styles: rotated
    // names outside the globs, and inside them with `*.gz` excluded by default.
    for glob in ["logs/*.log", "logs/app.log*"] {
        let sb = sandbox(&[glob], "");
        let log = sb.path("logs/app.log");
        let mut w = Writer::append(&log);
        w.write(&lines("cz", 0..30));
        let d = sb.start();
        wait_for(&sb, 30);
        stop(&sb, d);
        w.write(&lines("cz", 30..45));
        logrotate_with(&sb, &["create", "compress"]);
        assert!(sb.path("logs/app.log.1.gz").exists() && !sb.path("logs/app.log.1").exists());
        append_lines(&log, &lines("cz", 45..60));
        let d = sb.start();
        wait_for(&sb, 60);
        stop(&sb, d);
        assert_exact(&sb, &ids("cz", 0..60));
        no_rejected(&sb);
        // Read once: another restart reads nothing again.
        let d = sb.start();
        append_lines(&log, &lines("cz", 60..62));
        wait_for(&sb, 62);
        stop(&sb, d);
        assert_exact(&sb, &ids("cz", 0..62));
    }
}

#[test]
fn logrotate_compresscmd_zstd_xz_bzip2_while_stopped_loses_nothing() {
    // As above with logrotate's `compresscmd`: the unread lines are only in app.log.1.zst
    // (.xz, .bz2), which the default `input.exclude` leaves out; told by its magic bytes.
    for (cmd, ext) in [("zstd", "zst"), ("xz", "xz"), ("bzip2", "bz2")] {
        let sb = sandbox(&["logs/app.log*"], "");
        let log = sb.path("logs/app.log");
        let mut w = Writer::append(&log);
        w.write(&lines(cmd, 0..30));
        let d = sb.start();
        wait_for(&sb, 30);
        stop(&sb, d);
        w.write(&lines(cmd, 30..45));
        let compresscmd = format!("compresscmd {}", tool(cmd).display());
        let compressext = format!("compressext .{ext}");
        logrotate_with(&sb, &["create", "compress", &compresscmd, &compressext]);
        let rotated = sb.path(&format!("logs/app.log.1.{ext}"));
        assert!(rotated.exists() && !sb.path("logs/app.log.1").exists());
        append_lines(&log, &lines(cmd, 45..60));
        let d = sb.start();
        wait_for(&sb, 60);
        stop(&sb, d);
        assert_exact(&sb, &ids(cmd, 0..60));
        no_rejected(&sb);
    }
}

/// A compressor from Debian (`.ci/run` installs it), by its absolute path as logrotate wants.
fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is installed (by .ci/run)"))
}

#[test]
fn kill9_then_logrotate_compress_repeats_only_identical_records() {
    // A crash leaves the checkpoint behind what was written to segments; the lines after it
    // are read again from the gzip file, with the ids reading the original gave them.
    let sb = Sandbox::with_config(&config(&["logs/*.log"], "").replace(
        "size = 50\nflush_interval = \"200ms\"",
        "size = 5\nflush_interval = \"30s\"",
    ));
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("kz", 0..20));
    let d = sb.start();
    wait_for(&sb, 20);
    // A durable point now (SIGUSR1), none after it: the checkpoint stays at line 20.
    let cp = sb.path("data/state/checkpoints.json");
    d.signal(libc::SIGUSR1);
    // (The file is in the checkpoint from the poll that found it, at offset 0.)
    wait_until(T, "the checkpoint at line 20", || {
        std::fs::read_to_string(&cp)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v["files"][0]["offset"].as_u64() > Some(0))
    });
    w.write(&lines("kz", 20..40));
    wait_for(&sb, 40);
    d.kill9();
    w.write(&lines("kz", 40..50));
    logrotate_with(&sb, &["create", "compress"]);
    append_lines(&log, &lines("kz", 50..60));
    let d = sb.start();
    wait_for(&sb, 60);
    stop(&sb, d);
    let repeats = assert_exact_modulo_identical_repeats(&sb, &ids("kz", 0..60));
    assert!(
        repeats > 0,
        "the crash should have left lines to read again"
    );
}

#[test]
fn logrotate_create_while_stopped_with_rotated_names_outside_the_glob() {
    // The rotated file (app.log.1) is not under `logs/*.log`: found next to the saved path
    // by its inode, read on from the saved offset, including lines written to it after the
    // rotation by a writer that had not reopened yet.
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("cs", 0..20));
    let d = sb.start();
    wait_for(&sb, 20);
    stop(&sb, d);
    w.write(&lines("cs", 20..30));
    logrotate(&sb, "create");
    w.write(&lines("cs", 30..35));
    append_lines(&log, &lines("cs", 35..50));
    let d = sb.start();
    wait_for(&sb, 50);
    stop(&sb, d);
    assert_exact(&sb, &ids("cs", 0..50));
    no_rejected(&sb);
}

#[test]
fn logrotate_copytruncate_and_compress_outside_the_glob_while_running() {
    // Lines written just before copytruncate can only be read in the copy, which `compress`
    // (no `delaycompress`) turns into app.log.1.gz at once.
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    let d = sb.start();
    let per = 20;
    let rounds = 5;
    for r in 0..rounds {
        w.write(&lines("tz", r * per..(r + 1) * per - 5));
        wait_for(&sb, (r + 1) * per - 5);
        // The daemon is stopped (SIGSTOP) while five more lines are written and logrotate
        // runs: they are in the compressed copy only.
        d.signal(libc::SIGSTOP);
        w.write(&lines("tz", (r + 1) * per - 5..(r + 1) * per));
        logrotate_with(&sb, &["copytruncate", "compress"]);
        d.signal(libc::SIGCONT);
    }
    w.write(&lines("tz", rounds * per..rounds * per + 5));
    wait_for(&sb, rounds * per + 5);
    stop(&sb, d);
    assert_exact(&sb, &ids("tz", 0..rounds * per + 5));
    no_rejected(&sb);
}

#[test]
fn logrotate_olddir_while_stopped_and_while_running_loses_nothing() {
    // logrotate's `olddir` moves rotated files out of the log's directory; with
    // `input.rotated_dirs` naming it (relative to the log, as logrotate reads it, or
    // absolute) the daemon looks there too. Each rotation leaves lines only in the rotated
    // file: twice while the daemon is stopped (renamed, then compressed at once), then
    // with copytruncate + compress while it is held by SIGSTOP.
    let archive = tempfile::tempdir().unwrap();
    let sb = sandbox(
        &["logs/*.log"],
        &format!("rotated_dirs = [\"old\", {:?}]\n", archive.path()),
    );
    std::fs::create_dir_all(sb.path("logs/old")).unwrap();
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("od", 0..20));
    let mut d = sb.start();
    wait_for(&sb, 20);
    for (round, directives) in [
        (1, &["create", "olddir old"][..]),
        (2, &["create", "compress", "olddir old"][..]),
    ] {
        stop(&sb, d);
        w.write(&lines("od", round * 20..round * 20 + 10));
        logrotate_with(&sb, directives);
        assert!(sb.path("logs/old/app.log.1").exists() == (round == 1));
        w = Writer::append(&log);
        w.write(&lines("od", round * 20 + 10..round * 20 + 20));
        d = sb.start();
        wait_for(&sb, round * 20 + 20);
    }
    assert!(sb.path("logs/old/app.log.1.gz").exists());
    let olddir = format!("olddir {}", archive.path().display());
    w.write(&lines("od", 60..75));
    wait_for(&sb, 75);
    d.signal(libc::SIGSTOP);
    w.write(&lines("od", 75..80));
    logrotate_with(&sb, &["copytruncate", "compress", &olddir]);
    d.signal(libc::SIGCONT);
    assert!(archive.path().join("app.log.1.gz").exists());
    w.write(&lines("od", 80..90));
    wait_for(&sb, 90);
    stop(&sb, d);
    assert_exact(&sb, &ids("od", 0..90));
    no_rejected(&sb);
}

#[test]
fn ignore_older_skips_what_old_files_held_and_reads_what_is_appended() {
    let sb = sandbox(&["logs/*.log"], "ignore_older = \"1h\"\n");
    let old = sb.path("logs/archive.log");
    append_lines(&old, &lines("io", 0..10));
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
    append_lines(&sb.path("logs/app.log"), &lines("ir", 0..10));
    let d = sb.start();
    wait_for(&sb, 10);
    wait_open(&d, &old);
    append_lines(&old, &lines("io", 10..15));
    wait_for(&sb, 15);
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("ir", 0..10), ("io", 10..15)]));
    no_rejected(&sb);
}

#[test]
fn kill9_during_rapid_rotations_loses_nothing() {
    // Shifting rotated names inside the glob, a writer that never stops, and two crashes:
    // every line arrives, repeats are identical records.
    let sb = Sandbox::with_config(&config(&["logs/app.log*"], "").replace(
        "size = 50\nflush_interval = \"200ms\"",
        "size = 10\nflush_interval = \"100ms\"",
    ));
    let dir = sb.path("logs");
    let rotations = 40;
    let per = 30;
    let writer = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            for r in 0..rotations {
                let mut w = Writer::append(&dir.join("app.log"));
                w.write(&lines("kr", r * per..r * per + per / 2));
                for k in (1..=r).rev() {
                    std::fs::rename(
                        dir.join(format!("app.log.{k}")),
                        dir.join(format!("app.log.{}", k + 1)),
                    )
                    .unwrap();
                }
                std::fs::rename(dir.join("app.log"), dir.join("app.log.1")).unwrap();
                w.write(&lines("kr", r * per + per / 2..(r + 1) * per));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    for _ in 0..2 {
        let d = sb.start();
        let before = distinct_ids(&sb);
        wait_until(T, "progress before the crash", || {
            distinct_ids(&sb) > before + 40 || writer.is_finished()
        });
        d.kill9();
    }
    writer.join().unwrap();
    let d = sb.start();
    wait_for(&sb, rotations * per);
    stop(&sb, d);
    assert_exact_modulo_identical_repeats(&sb, &ids("kr", 0..rotations * per));
}

#[test]
fn a_new_file_is_checkpointed_when_found_so_a_crash_then_compress_loses_nothing() {
    // Nothing becomes durable here (a long flush interval, a big buffer): the only thing
    // the checkpoint can hold of the new file is its discovery, written right after the poll
    // that found it. After a kill -9, logrotate moves the file out of the globs and
    // compresses it: the restart knows the file from that entry and reads it from the
    // gzip file. (Before, a file found since the last durable point was unknown after a
    // crash, and its lines were lost.)
    let sb = Sandbox::with_config(&config(&["logs/*.log"], "").replace(
        "size = 50\nflush_interval = \"200ms\"",
        "size = 1000\nflush_interval = \"1h\"",
    ));
    let log = sb.path("logs/app.log");
    let d = sb.start();
    append_lines(&log, &lines("nf", 0..12));
    wait_open(&d, &log);
    let cp = sb.path("data/state/checkpoints.json");
    wait_until(T, "the new file in the checkpoint", || {
        std::fs::read_to_string(&cp).is_ok_and(|t| t.contains("app.log"))
    });
    d.kill9();
    assert!(sb.example_request_ids().is_empty(), "nothing was durable");
    logrotate_with(&sb, &["create", "compress"]);
    assert!(sb.path("logs/app.log.1.gz").exists());
    append_lines(&log, &lines("nf", 12..15));
    let d = sb.start();
    wait_until(T, "all 15 lines, flushed by SIGUSR1", || {
        d.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(50));
        distinct_ids(&sb) >= 15
    });
    stop(&sb, d);
    assert_exact(&sb, &ids("nf", 0..15));
    no_rejected(&sb);
}

#[test]
fn random_rotations_restarts_and_crashes_with_the_real_logrotate_lose_nothing() {
    // A soak in miniature: per seed, a random mix of appends, the real logrotate (one of six
    // configurations: create, copytruncate, compress with and without delaycompress, zstd
    // through compresscmd), SIGHUP, clean stops and kill -9 with lines in flight, and
    // rotations while the daemon is down; at the end every line is there once (or, after a
    // crash, repeated as an identical record). It keeps to what the README promises: the
    // service reopens its log after a create rotation, at most one rotation while the
    // daemon is down, and content the daemon has seen before a rotation can take it away
    // while it is down.
    // TC_SOAK_SEEDS=13..500 runs a longer soak with other seeds.
    let seeds = std::env::var("TC_SOAK_SEEDS").ok().map(|s| {
        let (first, last) = s.split_once("..").expect("TC_SOAK_SEEDS is first..last");
        first.parse::<u64>().expect("a seed")..=last.parse::<u64>().expect("a seed")
    });
    for seed in seeds.unwrap_or(1..=12) {
        soak(seed, 40);
    }
}

/// Waits until the first `n` lines are all in data/ (the soak's `history` says how it got
/// there if they never are).
fn settle(sb: &Sandbox, n: usize, history: &[String]) {
    let start = std::time::Instant::now();
    while distinct_ids(sb) < n {
        assert!(
            start.elapsed() < T,
            "{} of {n} lines\nsteps:\n{}\ndaemon log:\n{}",
            distinct_ids(sb),
            history.join("\n"),
            sb.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the checkpoint on disk holds a file seen before its first line, by this inode.
fn checkpoint_awaits_first_line(sb: &Sandbox, ino: u64) -> bool {
    let Ok(text) = std::fs::read_to_string(sb.path("data/state/checkpoints.json")) else {
        return false;
    };
    let Ok(doc) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    doc["files"].as_array().is_some_and(|files| {
        files
            .iter()
            .any(|f| f["inode"] == ino && f["awaiting_first_line"] == true)
    })
}

/// The soak's view of a stopped daemon's state: the checkpoint, the lines in data/, and the
/// log files (name:inode:size).
fn state_of(sb: &Sandbox) -> String {
    use std::os::unix::fs::MetadataExt;
    let checkpoint =
        std::fs::read_to_string(sb.path("data/state/checkpoints.json")).unwrap_or_default();
    let files: Vec<String> = std::fs::read_dir(sb.path("logs"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            format!(
                "{}:{}:{}",
                e.file_name().to_string_lossy(),
                md.ino(),
                md.len()
            )
        })
        .collect();
    format!(
        "{} lines in data/; files {files:?}; checkpoint {checkpoint}",
        distinct_ids(sb)
    )
}

/// A xorshift generator: the test needs a reproducible sequence, not statistical quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn soak(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let glob = ["logs/*.log", "logs/app.log*"][rng.below(2)];
    let sb = Sandbox::with_config(&config(&[glob], "").replace(
        "size = 50\nflush_interval = \"200ms\"",
        "size = 10\nflush_interval = \"100ms\"",
    ));
    let log = sb.path("logs/app.log");
    let tag = format!("soak{seed}");
    let zstd = format!("compresscmd {}", tool("zstd").display());
    // What happened, for the failure message.
    let mut history: Vec<String> = Vec::new();
    // One logrotate configuration per run, as in a deployment (mixing them makes logrotate
    // itself overwrite rotated files).
    let how: Vec<&str> = match seed % 6 {
        0 => vec!["create"],
        1 => vec!["create", "compress"],
        2 => vec!["create", "compress", "delaycompress"],
        3 => vec!["copytruncate"],
        4 => vec!["copytruncate", "compress"],
        _ => vec!["create", "compress", &zstd, "compressext .zst"],
    };
    history.push(format!("seed {seed}, glob {glob}, logrotate {how:?}"));
    let mut w = Writer::append(&log);
    // Lines written so far; `write` appends n more and says which.
    let mut written = 0;
    let write = |w: &mut Writer, written: &mut usize, n: usize| {
        w.write(&lines(&tag, *written..*written + n));
        *written += n;
        format!("lines {}..{}", *written - n, *written)
    };
    let mut crashed = false;
    let mut d = sb.start();
    history.push(write(&mut w, &mut written, 5));
    wait_for(&sb, 5);
    for _ in 0..steps {
        let action = rng.below(10);
        match action {
            0..=3 => {
                let n = 1 + rng.below(15);
                history.push(write(&mut w, &mut written, n));
            }
            4 | 5 => {
                history.push("logrotate".into());
                logrotate_with(&sb, &how);
                // With create, the service reopens its log. The daemon sees the new content
                // before anything can rotate it away while the daemon is down (content it
                // never saw, rotated out of the globs while it is down, cannot be found).
                if how[0] == "create" {
                    w = Writer::append(&log);
                }
                history.push(write(&mut w, &mut written, 1 + rng.below(3)));
                settle(&sb, written, &history);
            }
            6 | 7 => {
                // The content is seen (as above), then a few lines more may be in flight.
                settle(&sb, written, &history);
                // In flight in a file the daemon has seen only empty (just rotated): the
                // checkpoint knows it by its inode once the daemon has seen it, which finds
                // it renamed, not copied or compressed (nothing links a copy to a file seen
                // empty). Otherwise the daemon must see its first line before it can crash.
                if let Some(ino) = std::fs::metadata(&log)
                    .ok()
                    .filter(|m| m.len() == 0)
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                {
                    let renamed = how[0] == "create"
                        && (!how.contains(&"compress") || how.contains(&"delaycompress"));
                    if !renamed {
                        history.push(write(&mut w, &mut written, 1));
                        settle(&sb, written, &history);
                    } else {
                        history.push("wait until the checkpoint holds the empty log".into());
                        let start = std::time::Instant::now();
                        while !checkpoint_awaits_first_line(&sb, ino) {
                            assert!(
                                start.elapsed() < T,
                                "the empty log (inode {ino}) never reached the checkpoint; {}\nsteps:\n{}\ndaemon log:\n{}",
                                state_of(&sb),
                                history.join("\n"),
                                sb.daemon_log()
                            );
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                history.push(write(&mut w, &mut written, rng.below(5)));
                if action == 6 {
                    history.push("kill -9".into());
                    d.kill9();
                    crashed = true;
                } else {
                    history.push("stop".into());
                    stop(&sb, d);
                }
                // While it is down: lines, then perhaps a rotation, then lines again.
                let n = rng.below(10);
                history.push(write(&mut w, &mut written, n));
                if rng.below(2) == 0 {
                    history.push("logrotate".into());
                    logrotate_with(&sb, &how);
                    if how[0] == "create" {
                        w = Writer::append(&log);
                    }
                }
                let n = rng.below(10);
                history.push(write(&mut w, &mut written, n));
                history.push(format!("start; {}", state_of(&sb)));
                d = sb.start();
            }
            8 => {
                history.push("SIGHUP".into());
                d.signal(libc::SIGHUP);
            }
            _ => {
                let ms = rng.below(200) as u64;
                history.push(format!("sleep {ms}ms"));
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
    }
    let total = written;
    let start = std::time::Instant::now();
    while distinct_ids(&sb) < total && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&sb, d);
    let mut got = sb.example_request_ids();
    got.dedup();
    let want = ids(&tag, 0..total);
    assert!(
        got == want,
        "seed {seed}: {}\nsteps:\n{}\nat the end: {}\ndaemon log:\n{}",
        diff(&got, &want),
        history.join("\n"),
        state_of(&sb),
        sb.daemon_log()
    );
    if crashed {
        assert_exact_modulo_identical_repeats(&sb, &want);
    } else {
        assert_exact(&sb, &want);
    }
    no_rejected(&sb);
}

#[test]
fn a_file_reachable_by_several_globs_and_a_symlink_is_read_once() {
    let sb = sandbox(
        &["logs/*.log", "logs/app.*", "alias/*.log", "deep/**/*.log"],
        "",
    );
    std::fs::create_dir_all(sb.path("alias")).unwrap();
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("m", 0..20));
    std::os::unix::fs::symlink(&log, sb.path("alias/link.log")).unwrap();
    let d = sb.start();
    wait_for(&sb, 20);
    append_lines(&log, &lines("m", 20..30));
    // A directory tree created while running, under a `**` glob.
    std::fs::create_dir_all(sb.path("deep/a/b/c")).unwrap();
    append_lines(&sb.path("deep/a/b/c/x.log"), &lines("dp", 0..10));
    wait_for(&sb, 40);
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("m", 0..30), ("dp", 0..10)]));
}

#[test]
fn a_recreated_file_reusing_a_closed_files_inode_is_read_from_its_start() {
    // rotate_wait short, so the deleted file is closed and its position saved; the new file
    // at the same path (often the same inode on ext4) has the same first line. Recreated
    // while running and while stopped, alternately.
    let cfg =
        config(&["logs/*.log"], "").replace("rotate_wait = \"5s\"", "rotate_wait = \"300ms\"");
    let sb = Sandbox::with_config(&cfg);
    let log = sb.path("logs/app.log");
    let with_header = |tag: &str, r: std::ops::Range<usize>| {
        let mut v = vec![HEADER.to_string()];
        v.extend(lines(tag, r));
        v
    };
    let closed = || sb.daemon_log().matches("closed rotated-away file").count();
    let mut want = 0;
    let mut inodes = Vec::new();
    let mut d = Some(sb.start());
    for (round, tag) in ["ra", "rb", "rc", "rd", "re"].into_iter().enumerate() {
        let n = if round % 2 == 0 { 30 } else { 45 };
        append_lines(&log, &with_header(tag, 0..n));
        inodes.push(std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(&log).unwrap(),
        ));
        if d.is_none() {
            d = Some(sb.start());
        }
        want += n;
        wait_for(&sb, want);
        let before = closed();
        std::fs::remove_file(&log).unwrap();
        wait_until(T, "the deleted file to be closed", || closed() > before);
        if round % 2 == 1 {
            stop(&sb, d.take().unwrap());
        }
    }
    if let Some(d) = d {
        stop(&sb, d);
    }
    eprintln!("inodes: {inodes:?}");
    assert_exact(
        &sb,
        &all_ids(&[
            ("ra", 0..30),
            ("rb", 0..45),
            ("rc", 0..30),
            ("rd", 0..45),
            ("re", 0..30),
        ]),
    );
}

#[test]
fn sigterm_right_after_a_rotation_out_of_the_glob_still_reads_the_rotated_file_to_its_end() {
    // After a restart the rotated file cannot be found any more (its name left the glob):
    // what was written to it before the stop must have been read by then.
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("st", 0..20));
    let mut d = sb.start();
    wait_for(&sb, 20);
    // Frozen, so it cannot read between the rotation and the stop.
    d.signal(libc::SIGSTOP);
    w.write(&lines("st", 20..40));
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    w.write(&lines("st", 40..60));
    append_lines(&log, &lines("st", 60..70));
    d.signal(libc::SIGTERM);
    d.signal(libc::SIGCONT);
    assert_eq!(d.wait(T), Some(0), "{}", tail_of_log(&sb));
    let d = sb.start();
    wait_for(&sb, 70);
    stop(&sb, d);
    assert_exact(&sb, &ids("st", 0..70));
}

#[test]
fn an_unterminated_last_line_of_a_rotated_away_file_is_rejected_not_dropped() {
    let cfg =
        config(&["logs/*.log"], "").replace("rotate_wait = \"5s\"", "rotate_wait = \"300ms\"");
    let sb = Sandbox::with_config(&cfg);
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("ut", 0..10));
    let d = sb.start();
    wait_for(&sb, 10);
    let at = std::fs::metadata(&log).unwrap().len();
    let cut = interaction_line("ut", 10);
    w.raw(&cut.as_bytes()[..50]);
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    append_lines(&log, &lines("ut", 11..20));
    wait_for(&sb, 19);
    wait_until(T, "the rejected unterminated line", || {
        !rejected(&sb).is_empty()
    });
    stop(&sb, d);
    let mut want = ids("ut", 0..10);
    want.extend(ids("ut", 11..20));
    want.sort();
    assert_exact(&sb, &want);
    let r = rejected(&sb);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["offset"], at);
    assert_eq!(r[0]["raw_len"], 50);
    assert!(
        r[0]["reason"].as_str().unwrap().contains("unterminated"),
        "{}",
        r[0]["reason"]
    );
}

/// The same for a file whose only line never got its newline: it was never read (a file
/// has no identity before its first line is complete), and is still kept, not dropped,
/// when rotated away; the daemon lets go of it.
#[test]
fn a_rotated_away_file_holding_only_an_unterminated_line_is_rejected_not_dropped() {
    let cfg =
        config(&["logs/*.log"], "").replace("rotate_wait = \"5s\"", "rotate_wait = \"300ms\"");
    let sb = Sandbox::with_config(&cfg);
    let log = sb.path("logs/app.log");
    let cut = interaction_line("uo", 0);
    let mut w = Writer::append(&log);
    w.raw(&cut.as_bytes()[..60]);
    let d = sb.start();
    wait_open(&d, &log);
    std::fs::rename(&log, sb.path("app.log.1")).unwrap();
    wait_until(T, "the rejected unterminated line", || {
        !rejected(&sb).is_empty()
    });
    wait_until(T, "the rotated file closed", || {
        !daemon_has_open(&d, &sb.path("app.log.1"))
    });
    stop(&sb, d);
    assert!(sb.examples().is_empty());
    let r = rejected(&sb);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["offset"], 0);
    assert_eq!(r[0]["raw_len"], 60);
    assert!(
        r[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unterminated only line"),
        "{}",
        r[0]["reason"]
    );
}

#[test]
fn a_checkpoint_write_interrupted_by_a_crash_is_ignored_and_the_old_positions_used() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("tm", 0..25));
    let d = sb.start();
    wait_for(&sb, 25);
    stop(&sb, d);
    // What a kill -9 between writing the temp file and renaming it leaves behind.
    std::fs::write(
        sb.path("data/state/checkpoints.json.tmp"),
        b"{\"version\":1,\"fi",
    )
    .unwrap();
    append_lines(&log, &lines("tm", 25..30));
    let d = sb.start();
    wait_for(&sb, 30);
    stop(&sb, d);
    assert_exact(&sb, &ids("tm", 0..30));
    assert!(!sb.path("data/state/checkpoints.json.tmp").exists());
}

/// More log files than the daemon may open (`ulimit -n 64`, soft and hard, so the limit
/// cannot be raised): the tailer used to take every descriptor, after which the daemon could
/// not even list its data directory to write a segment. With the open-file budget, files
/// read to their end are closed and opened again when they change; across a kill -9 and a
/// restart under the same limit nothing is lost, and a repeat is an identical record.
#[test]
fn more_log_files_than_the_open_file_limit() {
    let sb = sandbox(&["logs/*.log"], "");
    let files = 150;
    let tag = |f: usize| format!("m{f:03}");
    let write = |range: std::ops::Range<usize>| {
        for f in 0..files {
            append_lines(
                &sb.path(&format!("logs/{}.log", tag(f))),
                &lines(&tag(f), range.clone()),
            );
        }
    };
    let start = || {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" --config \"$1\" run")
            .arg(bin())
            .arg(sb.config_path());
        sb.start_command(cmd)
    };
    write(0..2);
    let d = start();
    wait_for(&sb, files * 2);
    // Every file changes again: each closed one is opened again where it was.
    write(2..3);
    wait_for(&sb, files * 3);
    d.kill9();
    write(3..4);
    let d = start();
    wait_for(&sb, files * 4);
    stop(&sb, d);
    let tags: Vec<String> = (0..files).map(tag).collect();
    let want: Vec<(&str, std::ops::Range<usize>)> =
        tags.iter().map(|t| (t.as_str(), 0..4)).collect();
    assert_exact_modulo_identical_repeats(&sb, &all_ids(&want));
    no_rejected(&sb);
    let log = sb.daemon_log();
    assert!(
        log.contains("more matching files than input.max_open_files"),
        "{}",
        tail_of_log(&sb)
    );
    assert!(!log.contains("Too many open files"), "{}", tail_of_log(&sb));
}

#[test]
fn kill9_while_the_log_is_empty_then_rotated_away_while_down_loses_nothing() {
    // logrotate's `create` leaves the log empty; the daemon dies before its first line
    // arrives, and the service writes it and is rotated out of the globs while the daemon is
    // down. The daemon had only the empty file's inode to go on.
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    append_lines(&log, &lines("e", 0..20));
    let d = sb.start();
    wait_for(&sb, 20);
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    std::fs::File::create(&log).unwrap();
    let checkpoint = sb.path("data/state/checkpoints.json");
    wait_until(T, "the empty log in the checkpoint", || {
        std::fs::read_to_string(&checkpoint)
            .is_ok_and(|c| c.contains("\"awaiting_first_line\":true"))
    });
    d.kill9();
    append_lines(&log, &lines("e", 20..50));
    std::fs::rename(&log, sb.path("logs/app.log.2")).unwrap();
    append_lines(&log, &lines("e", 50..60));
    let d = sb.start();
    wait_for(&sb, 60);
    stop(&sb, d);
    assert_exact_modulo_identical_repeats(&sb, &ids("e", 0..60));
    no_rejected(&sb);
}

/// An unterminated last line already longer than `max_line_bytes` is skipped as it is read,
/// not held in memory: closing the rotated-away file must still hand it out as rejected,
/// whole length and all, rather than drop it without a trace.
#[test]
fn an_oversize_unterminated_last_line_of_a_rotated_away_file_is_rejected_not_dropped() {
    let cfg = config(&["logs/*.log"], "max_line_bytes = 2000\n")
        .replace("rotate_wait = \"5s\"", "rotate_wait = \"300ms\"");
    let sb = Sandbox::with_config(&cfg);
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("ou", 0..3));
    let d = sb.start();
    wait_for(&sb, 3);
    let at = std::fs::metadata(&log).unwrap().len();
    let mut long = br#"{"event":"interaction","query":""#.to_vec();
    long.resize(5000, b'x');
    w.raw(&long);
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    append_lines(&log, &lines("ou", 3..5));
    wait_for(&sb, 5);
    wait_until(T, "the rejected unterminated line", || {
        !rejected(&sb).is_empty()
    });
    wait_until(T, "the rotated file closed", || {
        !daemon_has_open(&d, &sb.path("logs/app.log.1"))
    });
    stop(&sb, d);
    assert_exact(&sb, &ids("ou", 0..5));
    assert_one_unterminated_rejected(&sb, at, 5000, "max_line_bytes");
}

/// The same at shutdown, for a deleted file (no restart can find it again): the oversize
/// unterminated line it ends in is rejected then.
#[test]
fn an_oversize_unterminated_last_line_of_a_deleted_file_is_rejected_at_shutdown() {
    let sb = sandbox(&["logs/*.log"], "max_line_bytes = 2000\n");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("od", 0..3));
    let d = sb.start();
    wait_for(&sb, 3);
    let at = std::fs::metadata(&log).unwrap().len();
    w.raw(&[b'x'; 5000]);
    std::fs::remove_file(&log).unwrap();
    // Long before rotate_wait (5 s): only the shutdown can account for the line.
    stop(&sb, d);
    assert_exact(&sb, &ids("od", 0..3));
    assert_one_unterminated_rejected(&sb, at, 5000, "at shutdown");
}

/// The one rejected record is the unterminated line of `len` bytes at `offset`, with `why`
/// in its reason.
fn assert_one_unterminated_rejected(sb: &Sandbox, offset: u64, len: u64, why: &str) {
    let r = rejected(sb);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["offset"], offset);
    assert_eq!(r[0]["raw_len"], len);
    let reason = r[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("unterminated") && reason.contains(why),
        "{reason}"
    );
}

/// logrotate's `create` renames the log while the service is in the middle of a line, and
/// the collector is stopped before the service finishes it on its old descriptor. A restart
/// finds the renamed file again, so the shutdown must neither reject the fragment nor save a
/// position after it: the restart reads the finished line whole, once.
#[test]
fn a_line_split_across_a_shutdown_in_a_rotated_file_is_read_whole_after_the_restart() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("sp", 0..5));
    let d = sb.start();
    wait_for(&sb, 5);
    let split = interaction_line("sp", 5);
    w.raw(&split.as_bytes()[..40]);
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    append_lines(&log, &lines("sp", 10..12));
    wait_for(&sb, 7);
    // Well within rotate_wait (5 s): the rotated file is still open, its last line partial.
    stop(&sb, d);
    no_rejected(&sb);
    w.raw(&split.as_bytes()[40..]);
    w.raw(b"\n");
    w.write(&lines("sp", 6..8));
    let d = sb.start();
    wait_for(&sb, 10);
    // The fragment is given up only when the file is closed for good: a second line left
    // unfinished is rejected after rotate_wait, once.
    let cut = interaction_line("sp", 8);
    w.raw(&cut.as_bytes()[..30]);
    wait_until(T, "the rejected unterminated line", || {
        !rejected(&sb).is_empty()
    });
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("sp", 0..8), ("sp", 10..12)]));
    let r = rejected(&sb);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["raw_len"], 30);
    assert!(
        r[0]["reason"]
            .as_str()
            .unwrap()
            .contains("after rotate_wait"),
        "{}",
        r[0]["reason"]
    );
}

/// A file the config stops selecting (`input.exclude`, or narrower `input.paths`) is not
/// read on: not after a restart, where its saved position must not be "found rotated" at its
/// own name, nor after a reload, where it must not be read through its handle as a rotated
/// file is. Selected again, it resumes where reading stopped.
#[test]
fn a_file_the_config_stops_selecting_is_not_read_after_a_restart_or_a_reload() {
    let sb = sandbox(&["logs/*.log"], "");
    let (a, b) = (sb.path("logs/a.log"), sb.path("logs/b.log"));
    let excluding = config(&["logs/*.log"], "exclude = [\"b.log\"]\n");
    append_lines(&a, &lines("xa", 0..3));
    append_lines(&b, &lines("xb", 0..3));
    let d = sb.start();
    wait_for(&sb, 6);
    stop(&sb, d);
    std::fs::write(sb.config_path(), &excluding).unwrap();
    append_lines(&b, &lines("xb", 3..6));
    append_lines(&a, &lines("xa", 3..6));
    let d = sb.start();
    wait_for(&sb, 9);
    // Time for a search outside the globs to have found b.log (the bug read it at once).
    std::thread::sleep(Duration::from_millis(500));
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("xa", 0..6), ("xb", 0..3)]));
    std::fs::write(sb.config_path(), config(&["logs/*.log"], "")).unwrap();
    let d = sb.start();
    wait_for(&sb, 12);
    let reloads = sb.daemon_log().matches("config reloaded").count();
    std::fs::write(sb.config_path(), &excluding).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(T, "the reload", || {
        sb.daemon_log().matches("config reloaded").count() > reloads
    });
    // Well within rotate_wait (5 s), which a file read on as rotated would wait out.
    append_lines(&b, &lines("xb", 6..9));
    append_lines(&a, &lines("xa", 6..9));
    wait_for(&sb, 15);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!daemon_has_open(&d, &b), "{}", tail_of_log(&sb));
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("xa", 0..9), ("xb", 0..6)]));
    no_rejected(&sb);
}

/// After more than a day down, every log was rotated out of the globs with lines unread, and
/// there are more of them than are looked for in one poll (64): each is still found and read
/// on from its saved position. The saved positions are older than the day after which
/// positions of files not seen are forgotten; one not looked for yet must not be forgotten.
#[test]
fn more_logs_rotated_during_a_long_downtime_than_one_poll_looks_for_lose_nothing() {
    const N: usize = 80;
    let sb = sandbox(&["logs/*.log"], "");
    let tag = |i: usize| format!("m{i:02}");
    for i in 0..N {
        append_lines(
            &sb.path(&format!("logs/{}.log", tag(i))),
            &lines(&tag(i), 0..2),
        );
    }
    let d = sb.start();
    wait_for(&sb, 2 * N);
    stop(&sb, d);
    for i in 0..N {
        let log = sb.path(&format!("logs/{}.log", tag(i)));
        append_lines(&log, &lines(&tag(i), 2..3));
        std::fs::rename(&log, sb.path(&format!("logs/{}.log.1", tag(i)))).unwrap();
    }
    // Two days later.
    let d = sb.start_with_env(&[("TRAINING_COLLECTOR_CLOCK_OFFSET_SECS", "172800")]);
    wait_for(&sb, 3 * N);
    stop(&sb, d);
    let parts: Vec<(String, std::ops::Range<usize>)> = (0..N).map(|i| (tag(i), 0..3)).collect();
    let parts: Vec<(&str, std::ops::Range<usize>)> =
        parts.iter().map(|(t, r)| (t.as_str(), r.clone())).collect();
    assert_exact(&sb, &all_ids(&parts));
}

/// The same split line, but the rotated file is deleted before the restart (logrotate's
/// `rotate 1` removed it, say): the start of the line the shutdown kept for the restart is
/// all there is of it, and it is rejected with the bytes the collector had and a reason, not
/// lost without a trace.
#[test]
fn a_split_line_of_a_rotated_file_deleted_before_the_restart_is_rejected_with_its_bytes() {
    let sb = sandbox(&["logs/*.log"], "");
    let log = sb.path("logs/app.log");
    let mut w = Writer::append(&log);
    w.write(&lines("sd", 0..5));
    let d = sb.start();
    wait_for(&sb, 5);
    let at = std::fs::metadata(&log).unwrap().len();
    let split = interaction_line("sd", 5);
    w.raw(&split.as_bytes()[..40]);
    std::fs::rename(&log, sb.path("logs/app.log.1")).unwrap();
    append_lines(&log, &lines("sd", 10..12));
    wait_for(&sb, 7);
    // Well within rotate_wait (5 s): the rotated file is still open, its last line partial.
    stop(&sb, d);
    no_rejected(&sb);
    drop(w);
    std::fs::remove_file(sb.path("logs/app.log.1")).unwrap();
    append_lines(&log, &lines("sd", 12..14));
    let d = sb.start();
    wait_for(&sb, 9);
    wait_until(T, "the rejected fragment", || !rejected(&sb).is_empty());
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("sd", 0..5), ("sd", 10..14)]));
    let r = rejected(&sb);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["offset"], at);
    assert_eq!(r[0]["raw_len"], 40);
    assert_eq!(r[0]["raw"], &split[..40]);
    let reason = r[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("unterminated") && reason.contains("not found"),
        "{reason}"
    );
    // Said once: a further restart does not reject it again.
    let d = sb.start();
    append_lines(&log, &lines("sd", 14..15));
    wait_for(&sb, 10);
    stop(&sb, d);
    assert_eq!(rejected(&sb).len(), 1);
}

/// With a long `rescan_interval`, appends are read on inotify events alone. A deploy that
/// removes and re-creates the log folder, and a reload that adds a folder to `input.paths`,
/// must leave the new folders watched: lines written there are read at once, not at the
/// next re-scan an hour later.
#[test]
fn watches_follow_a_recreated_log_folder_and_a_reload_that_adds_one() {
    let cfg = config(&["logs/*.log"], "")
        .replace("rescan_interval = \"100ms\"", "rescan_interval = \"1h\"");
    assert!(cfg.contains("\"1h\""));
    let sb = Sandbox::with_config(&cfg);
    let logs = sb.path("logs");
    append_lines(&logs.join("a.log"), &lines("wa", 0..3));
    let d = sb.start();
    wait_for(&sb, 3);
    append_lines(&logs.join("a.log"), &lines("wa", 3..5));
    wait_for(&sb, 5);
    // The deploy: the folder goes (the daemon sees that), then comes back empty, then the
    // service starts writing into it.
    std::fs::remove_dir_all(&logs).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::create_dir(&logs).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append_lines(&logs.join("b.log"), &lines("wb", 0..3));
    wait_for(&sb, 8);
    append_lines(&logs.join("b.log"), &lines("wb", 3..6));
    wait_for(&sb, 11);
    // A reload that adds a folder: its file's lines so far are read by the full poll the
    // reload makes; what is appended after must be noticed too.
    let other = sb.path("other");
    std::fs::create_dir(&other).unwrap();
    append_lines(&other.join("c.log"), &lines("wc", 0..3));
    std::fs::write(
        sb.config_path(),
        cfg.replace(
            "paths = [\"logs/*.log\"]",
            "paths = [\"logs/*.log\", \"other/*.log\"]",
        ),
    )
    .unwrap();
    let reloads = sb.daemon_log().matches("config reloaded").count();
    d.signal(libc::SIGHUP);
    wait_until(T, "the reload", || {
        sb.daemon_log().matches("config reloaded").count() > reloads
    });
    wait_for(&sb, 14);
    append_lines(&other.join("c.log"), &lines("wc", 3..6));
    wait_for(&sb, 17);
    stop(&sb, d);
    assert_exact(&sb, &all_ids(&[("wa", 0..5), ("wb", 0..6), ("wc", 0..6)]));
}

/// A log whose name is not UTF-8 cannot be read (globs and the checkpoint take names as
/// text); the daemon says so, once, naming the file, and reads the others.
#[test]
fn a_log_name_that_is_not_utf8_is_warned_of_once() {
    use std::os::unix::ffi::OsStrExt;
    let sb = sandbox(&["logs/*.log"], "");
    let bad = sb
        .path("logs")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.log"));
    append_lines(&bad, &lines("nu", 0..3));
    append_lines(&sb.path("logs/ok.log"), &lines("ok", 0..3));
    let d = sb.start();
    wait_for(&sb, 3);
    append_lines(&sb.path("logs/ok.log"), &lines("ok", 3..6));
    append_lines(&bad, &lines("nu", 3..6));
    wait_for(&sb, 6);
    // Scans since (every 100 ms) must not say it again.
    std::thread::sleep(Duration::from_millis(500));
    stop(&sb, d);
    assert_exact(&sb, &ids("ok", 0..6));
    let log = sb.daemon_log();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("not UTF-8")).collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("caf\u{fffd}.log"), "{}", warned[0]);
}

/// Two replicas' logs start with the same line, so they share a fingerprint; feedback the
/// service logs at the same offset in both is two events, not one delivered twice: each
/// gets its own id, and `stats` counts both.
#[test]
fn feedback_logged_at_the_same_offset_of_two_logs_with_the_same_first_line_counts_twice() {
    let sb = sandbox(&["logs/*.log"], "");
    let fb = |target: &str, value: &str| {
        serde_json::json!({"event": "feedback", "request_id": target, "feedback": value})
            .to_string()
    };
    let a = interaction_line("fa", 0);
    let b = interaction_line("fb", 0);
    assert_eq!(a.len(), b.len());
    append_lines(
        &sb.path("logs/app-a.log"),
        &[HEADER.to_string(), a, fb("fa-000000", "positive")],
    );
    append_lines(
        &sb.path("logs/app-b.log"),
        &[HEADER.to_string(), b, fb("fb-000000", "negative")],
    );
    let d = sb.start();
    wait_for(&sb, 2);
    wait_until(T, "both feedback events", || {
        sb.records("feedback_").len() == 2
    });
    stop(&sb, d);
    let events = sb.records("feedback_");
    assert_ne!(events[0]["id"], events[1]["id"], "{events:?}");
    let (rc, out, err) = sb.cli(&["stats", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["feedback"]["positive"], 1, "{out}");
    assert_eq!(stats["feedback"]["negative"], 1, "{out}");
}
