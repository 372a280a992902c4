//! Feedback and corrections through the spool (and the log) against the real daemon: the
//! result never depends on arrival order, re-delivery or a crash.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

fn sandbox(extra: &str) -> Sandbox {
    Sandbox::with_config(&(spool_config("") + extra))
}

/// The tests' config with flushes only on demand, and `spool_extra` in `[spool]`.
fn spool_config(spool_extra: &str) -> String {
    base_config(&[])
        .replace("flush_interval = \"200ms\"", "flush_interval = \"1h\"")
        .replace(
            "[spool]\ndir = \"spool\"\n",
            &format!("[spool]\ndir = \"spool\"\n{spool_extra}"),
        )
}

/// A metrics port, so `stats` can ask the running daemon how many examples it buffers.
fn with_metrics_port(cfg: String) -> String {
    with_metrics_at(cfg).0
}

/// The same, and the port's address.
fn with_metrics_at(cfg: String) -> (String, std::net::SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = cfg.replace(
        "[metrics]\nlisten = \"\"",
        &format!("[metrics]\nlisten = \"{addr}\""),
    );
    (cfg, addr)
}

/// Regular files waiting in the spool (not tmp/, done/, rejected/).
fn spool_files(sb: &Sandbox) -> usize {
    std::fs::read_dir(sb.path("spool"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .count()
}

/// SIGUSR1 until the spool is empty (its events durable and the files retired).
fn drain(sb: &Sandbox, d: &Running) {
    wait_until(T, "the spool to drain", || {
        d.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(150));
        spool_files(sb) == 0
    });
}

/// Examples the running daemon holds in memory (`stats`' `buffer_count`).
fn buffer_count(sb: &Sandbox) -> u64 {
    let (rc, stats, err) = sb.cli(&["stats", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    stats["buffer_count"].as_u64().unwrap_or(0)
}

fn capture_line(i: usize) -> String {
    format!(
        "{{\"type\":\"capture\",\"event_id\":\"cap-{i}\",\"prompt\":\"How wide is a TPO seam, case {i}?\",\"response\":\"At least 1.5 inches welded; see the manufacturer's detail {i}.\"}}\n"
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn flush(d: &Running) {
    d.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(400));
}

/// The two example lines every ordering scenario writes.
fn example_lines() -> Vec<String> {
    (0..2).map(|i| interaction_line("o", i)).collect()
}

fn feedback_cli(sb: &Sandbox) {
    let (rc, out, err) = sb.cli(&[
        "feedback",
        "o-000000",
        "negative",
        "--comment",
        "wrong overlap",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = sb.cli(&["feedback", "o-000001", "positive"]);
    assert_eq!(rc, 0, "{out}{err}");
}

fn feedback_log_lines() -> Vec<String> {
    vec![
        r#"{"event":"feedback","request_id":"o-000000","feedback":"negative","comment":"wrong overlap"}"#.into(),
        r#"{"event":"feedback","request_id":"o-000001","feedback":"up"}"#.into(),
    ]
}

/// What a scenario produced: stats, and the kto and prompt-response exports.
fn outcome(sb: &Sandbox) -> (Value, String, String) {
    let (rc, stats, err) = sb.cli(&["stats", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let mut stats: Value = serde_json::from_str(&stats).unwrap();
    // Rejected lines differ by scenario only if something was rejected: none should be.
    assert_eq!(stats["rejected"], serde_json::json!({}), "{stats}");
    stats["buffer_count"] = Value::Null;
    // The state of the prepared cache, not of the data: it depends on when the daemon ran.
    stats["prepared_for_export"] = Value::Null;
    let out = |fmt: &str| {
        let path = sb.path(&format!("{fmt}.jsonl"));
        let (rc, o, e) = sb.cli(&[
            "export",
            "--format",
            fmt,
            "--min-quality",
            "low",
            "--output",
            path.to_str().unwrap(),
        ]);
        assert_eq!(rc, 0, "{o}{e}");
        std::fs::read_to_string(path).unwrap()
    };
    (stats, out("kto"), out("prompt-response"))
}

fn scenario(name: &str, run: impl FnOnce(&Sandbox, &Path)) -> (Value, String, String) {
    let sb = sandbox("");
    let log = sb.path("logs/app.log");
    run(&sb, &log);
    let o = outcome(&sb);
    eprintln!("scenario {name}: {}", o.0);
    o
}

#[test]
fn every_ordering_of_an_example_and_its_feedback_gives_the_same_result() {
    let lines = |_: &Sandbox| example_lines();
    let results = [
        scenario("feedback before the example", |sb, log| {
            let d = sb.start();
            feedback_cli(sb);
            drain(sb, &d);
            append_lines(log, &lines(sb));
            wait_until(T, "examples", || {
                flush(&d);
                sb.examples().len() == 2
            });
            d.stop();
        }),
        scenario("feedback while the example is buffered", |sb, log| {
            let d = sb.start();
            append_lines(log, &lines(sb));
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(sb.examples().len(), 0);
            feedback_cli(sb);
            std::thread::sleep(Duration::from_millis(500));
            drain(sb, &d);
            d.stop();
        }),
        scenario("feedback after the example was flushed", |sb, log| {
            let d = sb.start();
            append_lines(log, &lines(sb));
            wait_until(T, "examples", || {
                flush(&d);
                sb.examples().len() == 2
            });
            feedback_cli(sb);
            drain(sb, &d);
            d.stop();
        }),
        scenario("feedback across a restart", |sb, log| {
            let d = sb.start();
            append_lines(log, &lines(sb));
            std::thread::sleep(Duration::from_millis(400));
            d.stop();
            feedback_cli(sb);
            let d = sb.start();
            drain(sb, &d);
            d.stop();
        }),
        scenario("feedback in the log after the example", |sb, log| {
            let mut all = lines(sb);
            all.extend(feedback_log_lines());
            append_lines(log, &all);
            let d = sb.start();
            std::thread::sleep(Duration::from_millis(500));
            d.stop();
        }),
        scenario("feedback in the log before the example", |sb, log| {
            let mut all = feedback_log_lines();
            all.extend(lines(sb));
            append_lines(log, &all);
            let d = sb.start();
            std::thread::sleep(Duration::from_millis(500));
            d.stop();
        }),
    ];
    let (stats, kto, sft) = &results[0];
    assert_eq!(stats["total_examples"], 2);
    assert_eq!(
        stats["feedback"],
        serde_json::json!({"positive": 1, "negative": 1, "orphaned": 0})
    );
    let kto_lines: Vec<Value> = kto
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kto_lines.len(), 2, "{kto}");
    for l in &kto_lines {
        let neg = l["prompt"].as_str().unwrap().contains("number 0?");
        assert_eq!(l["label"], Value::Bool(!neg), "{l}");
    }
    assert_eq!(
        sft.lines().count(),
        1,
        "negative feedback must not reach SFT output: {sft}"
    );
    assert!(sft.contains("number 1?"));
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(&r.0, stats, "stats of scenario {i} differ");
        assert_eq!(&r.1, kto, "kto export of scenario {i} differs");
        assert_eq!(&r.2, sft, "prompt-response export of scenario {i} differs");
    }
}

#[test]
fn a_correction_wins_whether_it_arrives_before_or_after_its_original() {
    let original = interaction_line("c", 0);
    let v: Value = serde_json::from_str(&original).unwrap();
    let (prompt, response) = (
        v["query"].as_str().unwrap().to_string(),
        v["response"].as_str().unwrap().to_string(),
    );
    let corrected = "Use a 3 inch welded seam: Firestone requires 3 inches, Carlisle 2.5; check the approved submittal.";
    let correct = |sb: &Sandbox| {
        let (rc, o, e) = sb.cli(&[
            "correct",
            "--prompt",
            &prompt,
            "--response",
            &response,
            "--corrected",
            corrected,
            "--reason",
            "cite manufacturers",
        ]);
        assert_eq!(rc, 0, "{o}{e}");
    };
    let run = |before: bool| {
        let sb = sandbox("");
        let log = sb.path("logs/app.log");
        let d = sb.start();
        if before {
            correct(&sb);
            drain(&sb, &d);
            append_lines(&log, std::slice::from_ref(&original));
        } else {
            append_lines(&log, std::slice::from_ref(&original));
            std::thread::sleep(Duration::from_millis(400));
            flush(&d);
            correct(&sb);
        }
        drain(&sb, &d);
        d.stop();
        let export = |fmt: &str| {
            let path = sb.path(&format!("{fmt}.jsonl"));
            let (rc, o, e) = sb.cli(&[
                "export",
                "--format",
                fmt,
                "--output",
                path.to_str().unwrap(),
            ]);
            assert_eq!(rc, 0, "{o}{e}");
            std::fs::read_to_string(path).unwrap()
        };
        (
            export("prompt-response"),
            export("dpo"),
            export("openai-dpo"),
        )
    };
    let (sft_before, dpo_before, openai_before) = run(true);
    let (sft_after, dpo_after, openai_after) = run(false);
    assert_eq!(sft_before, sft_after);
    assert_eq!(dpo_before, dpo_after);
    assert_eq!(openai_before, openai_after);
    let sft: Vec<Value> = sft_before
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sft.len(), 1, "{sft_before}");
    assert_eq!(sft[0]["response"], corrected);
    let dpo: Value =
        serde_json::from_str(dpo_before.lines().next().expect("one dpo pair")).unwrap();
    assert_eq!(dpo["chosen"], corrected);
    assert_eq!(dpo["rejected"], response.as_str());
    // OpenAI's preference format holds the same pair.
    let openai: Value =
        serde_json::from_str(openai_before.lines().next().expect("one pair")).unwrap();
    assert_eq!(openai["input"]["messages"][0]["content"], dpo["prompt"]);
    assert_eq!(openai["preferred_output"][0]["content"], corrected);
    assert_eq!(
        openai["non_preferred_output"][0]["content"],
        response.as_str()
    );
}

#[test]
fn the_same_spool_file_delivered_twice_is_applied_once() {
    let sb = sandbox("");
    let body = "{\"type\":\"feedback\",\"event_id\":\"evt-1\",\"id\":\"req-9\",\"feedback\":\"positive\"}\n{\"type\":\"capture\",\"prompt\":\"What is a cricket on a roof?\",\"response\":\"A small peaked structure that diverts water around a curb or chimney.\",\"request_id\":\"req-9\"}\n";
    for name in ["a.jsonl", "b.jsonl"] {
        std::fs::write(sb.path(&format!("spool/tmp-{name}")), body).unwrap();
        std::fs::rename(
            sb.path(&format!("spool/tmp-{name}")),
            sb.path(&format!("spool/{name}")),
        )
        .unwrap();
    }
    let d = sb.start();
    drain(&sb, &d);
    // And once more after the first two were applied.
    std::fs::write(sb.path("spool/c.jsonl"), body).unwrap();
    drain(&sb, &d);
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["total_examples"], 1, "{stats}");
    assert_eq!(stats["feedback"]["positive"], 1, "{stats}");
    assert_eq!(stats["feedback"]["orphaned"], 0, "{stats}");
}

#[test]
fn a_thousand_spool_files_at_once_are_all_applied() {
    let sb = sandbox("");
    std::fs::create_dir_all(sb.path("spool/tmp")).unwrap();
    for i in 0..1000 {
        let tmp = sb.path(&format!("spool/tmp/{i:04}.jsonl"));
        let value = if i % 4 == 0 { "negative" } else { "positive" };
        std::fs::write(&tmp, format!("{{\"type\":\"feedback\",\"event_id\":\"e{i}\",\"id\":\"r{i}\",\"feedback\":\"{value}\"}}\n")).unwrap();
        std::fs::rename(&tmp, sb.path(&format!("spool/{i:04}.jsonl"))).unwrap();
    }
    let d = sb.start();
    wait_until(Duration::from_secs(60), "1000 files applied", || {
        d.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(200));
        spool_files(&sb) == 0
    });
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        stats["feedback"],
        serde_json::json!({"positive": 750, "negative": 250, "orphaned": 1000})
    );
}

#[test]
fn bad_spool_input_is_refused_with_its_reason_while_good_lines_apply() {
    let sb = sandbox("\n[spool]\n");
    // A small size limit for the oversized-file case.
    let cfg = std::fs::read_to_string(sb.config_path())
        .unwrap()
        .replace("[spool]\ndir = \"spool\"\n\n", "")
        .replace(
            "\n[spool]\n",
            "\n[spool]\ndir = \"spool\"\nmax_file_bytes = \"2KiB\"\n",
        );
    std::fs::write(sb.config_path(), cfg).unwrap();
    let mixed = [
        r#"{"type":"feedback","id":"req-1","feedback":"positive"}"#,
        r#"{"type":"feedback","id":"req-2","feedback":"#,
        r#"{"type":"vote","id":"req-3"}"#,
        r#"{"type":"feedback","feedback":"negative"}"#,
        r#"{"type":"feedback","id":"req-4","feedback":"meh"}"#,
        r#"{"type":"feedback","id":"req-5","feedback":"negative"}"#,
    ]
    .join("\n");
    std::fs::write(sb.path("spool/mixed.jsonl"), mixed + "\n").unwrap();
    std::fs::write(sb.path("spool/big.jsonl"), format!("{{\"type\":\"feedback\",\"id\":\"req-6\",\"feedback\":\"positive\",\"comment\":\"{}\"}}\n", "x".repeat(4096))).unwrap();
    let outside = sb.path("outside.jsonl");
    std::fs::write(
        &outside,
        "{\"type\":\"feedback\",\"id\":\"req-7\",\"feedback\":\"positive\"}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, sb.path("spool/link.jsonl")).unwrap();
    let d = sb.start();
    drain(&sb, &d);
    d.stop();
    let err = std::fs::read_to_string(sb.path("spool/rejected/mixed.jsonl.error")).unwrap();
    assert!(err.contains("mixed.jsonl:2: not valid JSON"), "{err}");
    assert!(err.contains("mixed.jsonl:3: unknown type"), "{err}");
    assert!(
        err.contains("mixed.jsonl:4: invalid \"feedback\" event: missing field `id`"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:5: invalid feedback value"),
        "{err}"
    );
    assert!(
        !err.contains("mixed.jsonl:1:") && !err.contains("mixed.jsonl:6:"),
        "{err}"
    );
    assert!(sb.path("spool/rejected/mixed.jsonl").exists());
    let big = std::fs::read_to_string(sb.path("spool/rejected/big.jsonl.error")).unwrap();
    assert!(big.contains("over spool.max_file_bytes"), "{big}");
    let link = std::fs::read_to_string(sb.path("spool/rejected/link.jsonl.error")).unwrap();
    assert!(link.contains("symlink"), "{link}");
    assert!(outside.exists(), "the symlink's target must not be touched");
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    // The two good lines of mixed.jsonl applied; nothing from the refused files.
    assert_eq!(stats["feedback"]["positive"], 1, "{stats}");
    assert_eq!(stats["feedback"]["negative"], 1, "{stats}");
    let rejected: u64 = stats["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        rejected, 6,
        "4 bad lines + 2 refused files in the rejected stream: {stats}"
    );
}

#[test]
fn kill9_before_the_spool_file_is_retired_loses_nothing_and_counts_nothing_twice() {
    let sb = Sandbox::with_config(&with_metrics_port(spool_config("")));
    let d = sb.start();
    let (rc, _, e) = sb.cli(&["feedback", "req-1", "negative"]);
    assert_eq!(rc, 0, "{e}");
    let (rc, _, e) = sb.cli(&[
        "correct",
        "--prompt",
        "What is the TPO seam overlap?",
        "--response",
        "2 inches",
        "--corrected",
        "2.5 inches per Carlisle, 3 per Firestone.",
    ]);
    assert_eq!(rc, 0, "{e}");
    // Read by the daemon (the correction's example is buffered) but not yet durable
    // (flush_interval is 1h).
    wait_until(T, "the correction to be read", || buffer_count(&sb) == 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(spool_files(&sb), 2);
    d.kill9();
    assert_eq!(
        spool_files(&sb),
        2,
        "spool files retired before their events were durable"
    );
    let d = sb.start();
    drain(&sb, &d);
    // A second crash after the events are durable and the files gone changes nothing.
    d.kill9();
    let d = sb.start();
    std::thread::sleep(Duration::from_millis(300));
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["feedback"]["negative"], 1, "{stats}");
    assert_eq!(stats["corrections"], 1, "{stats}");
    assert_eq!(
        stats["total_examples"], 1,
        "the verified_correction example: {stats}"
    );
}

/// A correction that names no example is linked to the latest buffered example with the same
/// normalized prompt and answer (case and blanks aside): that example is written marked
/// `was_corrected`, so no export ever offers it as a good answer.
#[test]
fn an_untargeted_correction_marks_its_buffered_original_by_its_text() {
    let original = interaction_line("u", 0);
    let other = interaction_line("u", 1);
    let v: Value = serde_json::from_str(&original).unwrap();
    let prompt = format!("  {}", v["query"].as_str().unwrap().to_uppercase());
    let response = v["response"].as_str().unwrap().replace(' ', "  ");
    let sb = Sandbox::with_config(&with_metrics_port(spool_config("")));
    let d = sb.start();
    append_lines(&sb.path("logs/app.log"), &[original, other]);
    // Read and buffered (nothing is flushed before SIGUSR1 or 50 examples).
    wait_until(T, "both lines to be buffered", || {
        let (_, out, _) = sb.cli(&["stats"]);
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["buffered", "2"])
    });
    let (rc, o, e) = sb.cli(&[
        "correct",
        "--prompt",
        &prompt,
        "--response",
        &response,
        "--corrected",
        "Three inches, per the manufacturer's seam table.",
    ]);
    assert_eq!(rc, 0, "{o}{e}");
    // The correction must meet its original in the buffer: no flush before it is read (its
    // own example is the third buffered).
    wait_until(T, "the correction to be read", || buffer_count(&sb) == 3);
    drain(&sb, &d);
    d.stop();
    let corrected: Vec<(String, bool)> = sb
        .examples()
        .iter()
        .filter(|x| x["source"] != "verified_correction")
        .map(|x| {
            (
                x["metadata"]["request_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                x["quality"]["was_corrected"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(corrected.len(), 2, "{corrected:?}");
    assert_eq!(
        corrected.iter().filter(|(_, c)| *c).count(),
        1,
        "exactly the original is marked: {corrected:?}"
    );
}

/// A writer that ignores the rename and writes into the spool in place, pausing mid-line
/// while durable points come and go: the file is read once it has settled, whole, and
/// nothing is rejected or lost. (Read at once, the half line would be rejected and the file
/// moved to `rejected/` while its writer goes on writing into it.)
#[test]
fn a_spool_file_written_in_place_is_read_only_when_its_writer_is_done() {
    let sb = sandbox("");
    let d = sb.start();
    let path = sb.path("spool/in-place.jsonl");
    let (line0, line1) = (capture_line(0), capture_line(1));
    append(&path, &line0);
    std::thread::sleep(Duration::from_millis(300));
    let (head, tail) = line1.split_at(40);
    append(&path, head);
    for _ in 0..2 {
        d.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(150));
    }
    append(&path, tail);
    append(&path, &capture_line(2));
    drain(&sb, &d);
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["rejected"], serde_json::json!({}), "{stats}");
    assert_eq!(stats["total_examples"], 3, "{stats}");
    assert!(!sb.path("spool/rejected/in-place.jsonl").exists());
}

/// With `min_age = "0s"` a file can be read while its writer is still at it: it is not
/// retired (deleted) while it has changed since it was read, but read again, and what was
/// read twice counts once.
#[test]
fn a_spool_file_that_grows_after_it_was_read_is_read_again_not_deleted() {
    let (cfg, metrics) = with_metrics_at(spool_config("min_age = \"0s\"\n"));
    let sb = Sandbox::with_config(&cfg);
    let d = sb.start();
    let path = sb.path("spool/growing.jsonl");
    // Whole at first (renamed in, so the first read cannot catch it empty or half-written).
    std::fs::create_dir_all(sb.path("spool/tmp")).unwrap();
    let tmp = sb.path("spool/tmp/growing.jsonl");
    append(&tmp, &(capture_line(0) + &capture_line(1)));
    std::fs::rename(&tmp, &path).unwrap();
    wait_until(T, "the first two events to be read", || {
        buffer_count(&sb) == 2
    });
    append(&path, &capture_line(2));
    // The durable point that would retire it finds it changed.
    flush(&d);
    assert!(
        path.exists(),
        "a spool file was retired with events it never read"
    );
    drain(&sb, &d);
    let body = training_collector::metrics::http_get(metrics, "/metrics", T).unwrap();
    for (name, n) in [("reread", 1), ("processed", 1)] {
        let line = format!("training_collector_spool_files_{name}_total {n}");
        assert!(body.lines().any(|l| l == line), "{line}:\n{body}");
    }
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["total_examples"], 3, "{stats}");
    let ids: Vec<String> = sb
        .examples()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
}

/// A file read while its writer is still at it, with a bad line in it, is read again each
/// time it grows: its bad line is recorded as rejected once, when the file is retired, not
/// once per read.
#[test]
fn a_bad_line_of_a_spool_file_read_again_is_rejected_once() {
    let (cfg, _) = with_metrics_at(spool_config("min_age = \"0s\"\n"));
    let sb = Sandbox::with_config(&cfg);
    let d = sb.start();
    let path = sb.path("spool/slow-writer.jsonl");
    // Whole at first (renamed in, so the first read cannot catch it empty).
    put(
        &sb,
        "slow-writer.jsonl",
        &(capture_line(0) + "{\"type\": \"feedback\"}\n"),
    );
    wait_until(T, "the first event to be read", || buffer_count(&sb) == 1);
    append(&path, &capture_line(1));
    drain(&sb, &d);
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["total_examples"], 2, "{stats}");
    let rejected = sb.records("rejected_");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["offset"], 2, "{rejected:?}");
    let error = std::fs::read_to_string(sb.path("spool/rejected/slow-writer.jsonl.error")).unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
}

/// A writer that writes in place and pauses mid-line past durable points (even with
/// `min_age = "0s"`): the file is not read while its last line is unfinished, so that line
/// is not rejected and the file not moved to `rejected/` with its writer still at it.
#[test]
fn a_spool_file_is_not_read_while_its_last_line_is_unfinished() {
    let (cfg, _) = with_metrics_at(spool_config("min_age = \"0s\"\n"));
    let sb = Sandbox::with_config(&cfg);
    let d = sb.start();
    let path = sb.path("spool/slow-writer.jsonl");
    let line1 = capture_line(1);
    let (head, tail) = line1.split_at(40);
    append(&path, &(capture_line(0) + head));
    for _ in 0..4 {
        flush(&d);
    }
    assert!(path.exists(), "retired mid-line");
    assert!(sb.records("rejected_").is_empty());
    append(&path, tail);
    append(&path, &capture_line(2));
    drain(&sb, &d);
    d.stop();
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["total_examples"], 3, "{stats}");
    assert_eq!(stats["rejected"], serde_json::json!({}), "{stats}");
    assert!(!sb.path("spool/rejected").exists());
}

/// A file a writer left in spool/tmp/ (it died before its rename) is reported, once, in the
/// log and by the `spool_stale_tmp_files` gauge, and left where it is; a fresh one is a
/// writer at work and is not.
#[test]
fn a_spool_file_abandoned_in_tmp_is_reported_and_kept() {
    let (cfg, metrics) = with_metrics_at(spool_config(""));
    let sb = Sandbox::with_config(&cfg);
    std::fs::create_dir_all(sb.path("spool/tmp")).unwrap();
    let abandoned = sb.path("spool/tmp/crashed-writer.jsonl");
    append(&abandoned, &capture_line(0));
    std::fs::File::options()
        .write(true)
        .open(&abandoned)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
    append(&sb.path("spool/tmp/writing-now.jsonl"), &capture_line(1));
    let d = sb.start();
    wait_until(T, "the warning", || {
        sb.daemon_log().contains("spool/tmp/crashed-writer.jsonl")
    });
    let body = training_collector::metrics::http_get(metrics, "/metrics", T).unwrap();
    let gauge = "training_collector_spool_stale_tmp_files 1";
    assert!(body.lines().any(|l| l == gauge), "{gauge}:\n{body}");
    d.stop();
    let log = sb.daemon_log();
    assert_eq!(log.matches("crashed-writer.jsonl").count(), 1, "{log}");
    assert!(!log.contains("writing-now.jsonl"), "{log}");
    assert!(abandoned.exists());
    assert!(sb.examples().is_empty(), "nothing in tmp/ is delivered");
}

/// Puts `body` into the spool as `name`, the safe way (written aside, renamed in).
fn put(sb: &Sandbox, name: &str, body: &str) {
    let tmp = sb.path(&format!("spool/.{name}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, sb.path(&format!("spool/{name}"))).unwrap();
}

/// The kto export's label of the one example, and the prompt-response export's drop reasons.
fn kto_label_and_drops(sb: &Sandbox) -> (Value, Value) {
    let kto = sb.path("kto.jsonl");
    let (rc, _, err) = sb.cli(&[
        "export",
        "--format",
        "kto",
        "--min-quality",
        "low",
        "--output",
        kto.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let lines: Vec<Value> = std::fs::read_to_string(&kto)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (rc, report, err) = sb.cli(&[
        "export",
        "--min-quality",
        "low",
        "--output",
        sb.path("pr.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let report: Value = serde_json::from_str(&report).unwrap();
    (lines[0]["label"].clone(), report["dropped"].clone())
}

/// README: an `event_id` makes re-delivery safe. A feedback event delivered again after
/// later feedback counts once, at the time it first came, so the later feedback still wins.
#[test]
fn a_redelivered_feedback_event_does_not_outrank_later_feedback() {
    let sb = sandbox("");
    append(&sb.path("logs/app.log"), &(interaction_line("r", 2) + "\n"));
    let d = sb.start();
    let up = "{\"type\":\"feedback\",\"event_id\":\"e1\",\"id\":\"r-000002\",\"feedback\":\"positive\"}\n";
    let down = "{\"type\":\"feedback\",\"event_id\":\"e2\",\"id\":\"r-000002\",\"feedback\":\"negative\"}\n";
    put(&sb, "b1.jsonl", up);
    drain(&sb, &d);
    std::thread::sleep(Duration::from_millis(50));
    put(&sb, "b2.jsonl", down);
    drain(&sb, &d);
    std::thread::sleep(Duration::from_millis(50));
    put(&sb, "b1-again.jsonl", up);
    drain(&sb, &d);
    d.stop();
    let (label, dropped) = kto_label_and_drops(&sb);
    assert_eq!(label, false, "the thumbs down came last");
    assert_eq!(dropped["negative_feedback"], 1, "{dropped}");
    let (_, stats, _) = sb.cli(&["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["feedback"]["positive"], 1, "{stats}");
    assert_eq!(stats["feedback"]["negative"], 1, "{stats}");
}

/// Feedback without a time, queued while the daemon was down, keeps the order its files
/// were written in (their modification times), whatever their names.
#[test]
fn feedback_queued_while_the_daemon_is_down_keeps_the_order_it_was_given_in() {
    let sb = sandbox("");
    append(&sb.path("logs/app.log"), &(interaction_line("q", 1) + "\n"));
    let now = std::time::SystemTime::now();
    for (name, value, ago) in [
        ("z-first.jsonl", "positive", 10),
        ("a-second.jsonl", "negative", 5),
    ] {
        put(
            &sb,
            name,
            &format!("{{\"type\":\"feedback\",\"id\":\"q-000001\",\"feedback\":\"{value}\"}}\n"),
        );
        std::fs::File::options()
            .write(true)
            .open(sb.path(&format!("spool/{name}")))
            .unwrap()
            .set_modified(now - Duration::from_secs(ago))
            .unwrap();
    }
    let d = sb.start();
    drain(&sb, &d);
    d.stop();
    let (label, _) = kto_label_and_drops(&sb);
    assert_eq!(label, false, "the thumbs down was written last");
}

/// Feedback applied to a buffered example is ranked by when it was given, not by the
/// example's own timestamp: a service whose clock (or time zone) runs ahead must not pin
/// the first feedback against later feedback.
#[test]
fn feedback_on_a_buffered_example_with_a_timestamp_ahead_does_not_pin_it() {
    // Spool files read at once, so the first feedback finds its example still buffered.
    let sb2 = Sandbox::with_config(&spool_config("min_age = \"0s\"\n"));
    let line = interaction_line("f", 1).replace("2026-11-27T08:00:00Z", "2031-01-01T00:00:00Z");
    let d = sb2.start();
    append(&sb2.path("logs/app.log"), &(line + "\n"));
    std::thread::sleep(Duration::from_millis(500));
    let (rc, _, err) = sb2.cli(&["feedback", "f-000001", "positive"]);
    assert_eq!(rc, 0, "{err}");
    std::thread::sleep(Duration::from_millis(500));
    drain(&sb2, &d);
    let (rc, _, err) = sb2.cli(&["feedback", "f-000001", "negative"]);
    assert_eq!(rc, 0, "{err}");
    drain(&sb2, &d);
    d.stop();
    let ex = sb2.examples();
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(
        ex[0]["quality"]["user_feedback"], "positive",
        "applied while buffered"
    );
    let (label, _) = kto_label_and_drops(&sb2);
    assert_eq!(label, false, "the thumbs down came last");
}

/// Root only (CI runs as root): the daemon runs as `nobody` (uid 65534) over a sandbox it
/// owns, so that files of another user can be unreadable or unremovable to it. `None`
/// when not root (the permission cases cannot be made then).
fn as_nobody(sb: &Sandbox, sticky_root_spool: bool) -> Option<std::process::Command> {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the daemon as another user");
        return None;
    }
    let chown = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(
            unsafe { libc::chown(c.as_ptr(), 65534, 65534) },
            0,
            "{}",
            p.display()
        );
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["", "logs", "data", "spool", "config.toml"] {
        chown(&sb.path(d));
    }
    if sticky_root_spool {
        // A spool every writer may drop files into, where each may remove only its own.
        let c = std::ffi::CString::new(sb.path("spool").as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 0) }, 0);
        std::fs::set_permissions(sb.path("spool"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("--config")
        .arg(sb.config_path())
        .arg("run");
    Some(cmd)
}

/// A spool file the daemon cannot read (another user's, mode 0600) is refused into
/// `rejected/` with the reason, and does not hold up the files after it.
#[test]
fn an_unreadable_spool_file_is_refused_and_the_others_still_apply() {
    let sb = Sandbox::with_config(&spool_config("min_age = \"0s\"\n"));
    let Some(cmd) = as_nobody(&sb, false) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let secret = sb.path("spool/a-unreadable.jsonl");
    std::fs::write(
        &secret,
        "{\"type\":\"feedback\",\"id\":\"x\",\"feedback\":\"negative\"}\n",
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    put(&sb, "b-good.jsonl", &capture_line(1));
    let d = sb.start_command(cmd);
    drain(&sb, &d);
    d.stop();
    let report =
        std::fs::read_to_string(sb.path("spool/rejected/a-unreadable.jsonl.error")).unwrap();
    assert!(report.contains("refused: cannot read it"), "{report}");
    assert!(sb.path("spool/rejected/a-unreadable.jsonl").exists());
    let ex = sb.examples();
    assert_eq!(ex.len(), 1, "the good file applied: {ex:?}");
}

/// A spool file the daemon cannot remove (a sticky spool, another user's file) has its
/// events applied once, not again at every durable point; later feedback still wins.
#[test]
fn a_spool_file_that_cannot_be_removed_is_applied_once() {
    let sb = Sandbox::with_config(&spool_config("min_age = \"0s\"\n"));
    let Some(cmd) = as_nobody(&sb, true) else {
        return;
    };
    let stuck = format!(
        "{}{}",
        capture_line(7).replace("\"event_id\":\"cap-7\",", "\"request_id\":\"cap-7\","),
        "{\"type\":\"feedback\",\"id\":\"cap-7\",\"feedback\":\"positive\"}\n"
    );
    // Written by root: in the sticky spool, only root (or the file's owner) removes it.
    put(&sb, "a.jsonl", &stuck);
    let d = sb.start_command(cmd);
    wait_until(T, "the stuck file's events applied", || {
        flush(&d);
        !sb.examples().is_empty()
    });
    for _ in 0..4 {
        flush(&d);
    }
    put(
        &sb,
        "b.jsonl",
        "{\"type\":\"feedback\",\"id\":\"cap-7\",\"feedback\":\"negative\"}\n",
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        flush(&d);
    }
    d.stop();
    assert!(
        sb.path("spool/a.jsonl").exists(),
        "not removable by the daemon"
    );
    let lines = |prefix: &str| -> usize {
        std::fs::read_dir(sb.data())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
            .sum()
    };
    assert_eq!(lines("examples_"), 1, "the capture written once");
    assert_eq!(lines("feedback_"), 2, "each feedback event written once");
    let warned = sb.daemon_log().matches("cannot retire spool file").count();
    assert_eq!(warned, 2, "one warning per file:\n{}", sb.daemon_log());
    // The export below runs as root, which refuses a data_dir of another user's (told by
    // the owner of its state/).
    for dir in [sb.data(), sb.data().join("state")] {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 0) }, 0);
    }
    let (label, _) = kto_label_and_drops(&sb);
    assert_eq!(label, false, "the thumbs down came last");
}
