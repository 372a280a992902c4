//! The commands a user runs besides the daemon: check-config, export, ready, train-check,
//! stats, against data the real daemon captured.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

/// An interaction whose text shares no 5-word run with any other (so near-dedup keeps all).
fn distinct_line(i: usize) -> String {
    const WORDS: [&str; 24] = [
        "tpo",
        "seam",
        "flashing",
        "parapet",
        "coping",
        "drain",
        "scupper",
        "cricket",
        "curb",
        "membrane",
        "insulation",
        "tapered",
        "fastener",
        "adhesive",
        "gutter",
        "fascia",
        "boot",
        "reglet",
        "submittal",
        "warranty",
        "crew",
        "estimate",
        "schedule",
        "inspection",
    ];
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut words = |k: usize| -> String {
        (0..k)
            .map(|_| {
                x ^= x >> 29;
                x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                WORDS[(x >> 40) as usize % WORDS.len()]
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    serde_json::json!({
        "ts": "2026-11-27T08:00:00Z", "event": "interaction", "request_id": format!("e-{i:06}"),
        "query": format!("Roof question {i}: {}?", words(10)),
        "response": format!("Answer {i} per Carlisle: {}.", words(24)),
    })
    .to_string()
}

/// A sandbox whose daemon has captured `n` examples (plus planted PII in the first).
fn captured(n: usize, extra_config: &str) -> Sandbox {
    let sb = Sandbox::with_config(&(base_config(&[]) + extra_config));
    let mut lines: Vec<String> = (0..n).map(distinct_line).collect();
    if n > 0 {
        let mut v: Value = serde_json::from_str(&lines[0]).unwrap();
        v["response"] = Value::from(
            "Call Dana at (555) 867-5309 or mail dana.roofer@example.com about the TPO seam and the Carlisle submittal.",
        );
        lines[0] = v.to_string();
    }
    append_lines(&sb.path("logs/app.log"), &lines);
    let d = sb.start();
    wait_until(T, "all examples", || sb.examples().len() == n);
    d.stop();
    sb
}

#[test]
fn check_config_prints_the_effective_config_or_the_error_position() {
    let sb = Sandbox::with_config(&base_config(&[]));
    let (rc, out, err) = sb.cli(&["check-config"]);
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(out.contains("flush_interval = \"200ms\""), "{out}");
    assert!(out.contains("[domain.tags]"), "{out}");
    std::fs::write(
        sb.config_path(),
        "[buffer]\nsize = 5\nflush_intervall = \"5s\"\n",
    )
    .unwrap();
    let (rc, _, err) = sb.cli(&["check-config"]);
    assert_eq!(rc, 2);
    let cfg = sb.config_path().display().to_string();
    assert!(
        err.contains(&format!("{cfg}:3:1: unknown field `flush_intervall`")),
        "{err}"
    );
    // Every command refuses a bad config the same way, the daemon included.
    let (rc, _, err) = sb.cli(&["run"]);
    assert_eq!(rc, 2);
    assert!(err.contains(&format!("{cfg}:3:1")), "{err}");
}

/// Paths that point at nothing are valid (they may appear later) but likely mistakes:
/// check-config and the daemon's log name them.
#[test]
fn check_config_and_the_daemon_warn_of_directories_that_do_not_exist() {
    let cfg = base_config(&[])
        .replace(
            "paths = [\"logs/*.log\"]",
            "paths = [\"logs/*.log\", \"nologs/*.log\"]",
        )
        .replace("[input]\n", "[input]\nrotated_dirs = [\"old\"]\n");
    let sb = Sandbox::with_config(&cfg);
    let (rc, _, err) = sb.cli(&["check-config"]);
    assert_eq!(rc, 0, "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(warnings[0].contains("input.paths[1]") && warnings[0].contains("nologs"));
    assert!(warnings[1].contains("input.rotated_dirs[0]") && warnings[1].contains("logs/old"));
    let d = sb.start();
    wait_until(T, "the warnings in the daemon's log", || {
        sb.daemon_log().contains("input.rotated_dirs[0]")
    });
    assert!(sb.daemon_log().contains("nologs"), "{}", sb.daemon_log());
    // Once the directories are there, nothing to say.
    std::fs::create_dir_all(sb.path("logs/old")).unwrap();
    std::fs::create_dir_all(sb.path("nologs/old")).unwrap();
    let (rc, _, err) = sb.cli(&["check-config"]);
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    d.stop();
}

#[test]
fn ready_and_train_check_run_the_hooks_only_when_ready() {
    let sb = captured(6, "");
    let record = sb.path("calls.txt");
    let script = |name: &str, status: i32| {
        let p = sb.path(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit {status}\n",
                record.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let (sync_ok, train_ok, sync_bad) = (
        script("sync.sh", 0),
        script("train.sh", 0),
        script("bad_sync.sh", 3),
    );
    let base = std::fs::read_to_string(sb.config_path()).unwrap();
    let with_training = |min: usize, sync: &str| {
        format!(
            "{base}\n[training]\nmin_examples = {min}\nsync_command = [\"{sync}\", \"put\", \"{{export_path}}\", \"/training_conversations.jsonl\"]\ntrain_command = [\"{train_ok}\", \"--examples\", \"{{count}}\"]\n"
        )
    };

    std::fs::write(sb.config_path(), with_training(10, &sync_ok)).unwrap();
    let (rc, out, _) = sb.cli(&["ready"]);
    assert_eq!(rc, 1);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        r,
        serde_json::json!({"ready": false, "current": 6, "required": 10})
    );
    let (rc, out, _) = sb.cli(&["ready", "--min-examples", "6"]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out, err) = sb.cli(&["train-check"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("Need more data: 6/10"), "{out}");
    assert!(!record.exists(), "hooks ran although not ready");

    std::fs::write(sb.config_path(), with_training(5, &sync_ok)).unwrap();
    let (rc, out, err) = sb.cli(&["train-check"]);
    assert_eq!(rc, 0, "{out}{err}");
    let export = sb.path("data/training_export.jsonl").display().to_string();
    let calls = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        calls,
        format!("sync.sh put {export} /training_conversations.jsonl\ntrain.sh --examples 6\n")
    );
    assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 6);

    std::fs::remove_file(&record).unwrap();
    std::fs::write(sb.config_path(), with_training(5, &sync_bad)).unwrap();
    let (rc, _, err) = sb.cli(&["train-check"]);
    assert_eq!(rc, 3, "the failing command's status");
    assert!(
        err.contains("sync command") && err.contains("status 3"),
        "{err}"
    );
    let calls = std::fs::read_to_string(&record).unwrap();
    assert!(
        calls.starts_with("bad_sync.sh") && !calls.contains("train.sh"),
        "{calls}"
    );
}

/// The second export reads every sealed segment's facts from the prepared cache under
/// `state/export-cache` and writes the same bytes; `--no-cache` neither reads nor writes it;
/// a segment sealed after the first export is prepared and cached by the next.
#[test]
fn export_reuses_the_prepared_cache_of_sealed_segments_through_the_cli() {
    let sb = captured(30, "");
    let export = |extra: &[&str]| sb.export_to_out(extra);
    let sealed_segments = || {
        std::fs::read_dir(sb.path("data"))
            .unwrap()
            .filter(|e| {
                let n = e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                n.starts_with("examples_") && n.ends_with(".jsonl")
            })
            .count() as u64
    };
    let sealed = sealed_segments();
    assert!(sealed >= 1);
    let (cold, cold_bytes) = export(&[]);
    assert_eq!(cold["prepared_cache"]["written"], sealed, "{cold}");
    assert_eq!(cold["prepared_cache"]["reused"], 0, "{cold}");
    let entries = std::fs::read_dir(sb.path("data/state/export-cache"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum::<usize>();
    assert_eq!(entries as u64, sealed);
    let (warm, warm_bytes) = export(&[]);
    assert_eq!(warm["prepared_cache"]["reused"], sealed, "{warm}");
    assert_eq!(warm["prepared_cache"]["written"], 0, "{warm}");
    assert_eq!(warm_bytes, cold_bytes);
    assert_eq!(warm["output_sha256"], cold["output_sha256"]);
    let (plain, plain_bytes) = export(&["--no-cache"]);
    assert!(plain.get("prepared_cache").is_none(), "{plain}");
    assert_eq!(plain_bytes, cold_bytes);
    assert_eq!(plain["dropped"], warm["dropped"]);

    // More traffic, sealed at shutdown: one more segment, prepared once.
    append_lines(
        &sb.path("logs/app.log"),
        &(30..40).map(distinct_line).collect::<Vec<_>>(),
    );
    let d = sb.start();
    wait_until(T, "all examples", || sb.examples().len() == 40);
    d.stop();
    let now_sealed = sealed_segments();
    assert!(now_sealed > sealed);
    let (next, _) = export(&[]);
    assert_eq!(next["prepared_cache"]["reused"], sealed, "{next}");
    assert_eq!(
        next["prepared_cache"]["written"],
        now_sealed - sealed,
        "{next}"
    );
    assert_eq!(next["after_filtering"], 40, "{next}");
}

#[test]
fn export_formats_pii_split_and_determinism_through_the_cli() {
    let sb = captured(40, "");
    let out = sb.path("out.jsonl");
    let run = |args: &[&str]| {
        let mut a = vec!["export", "--output", out.to_str().unwrap()];
        a.extend_from_slice(args);
        let (rc, o, e) = sb.cli(&a);
        assert_eq!(rc, 0, "{o}{e}");
        serde_json::from_str::<Value>(&o).unwrap()
    };
    for (fmt, keys) in [
        ("prompt-response", vec!["prompt", "response"]),
        ("messages", vec!["messages"]),
        ("prompt-completion", vec!["completion", "prompt"]),
        ("alpaca", vec!["input", "instruction", "output"]),
        ("prompt-completion-messages", vec!["completion", "prompt"]),
    ] {
        let report = run(&["--format", fmt]);
        assert_eq!(report["after_filtering"], 40, "{report}");
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            !text.contains("867-5309") && !text.contains("dana.roofer@example.com"),
            "PII in {fmt}: {text}"
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let mut got: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            got.sort();
            assert_eq!(got, keys, "{fmt}: {line}");
        }
    }
    let first = run(&["--val-fraction", "0.25"]);
    let bytes = std::fs::read(&out).unwrap();
    let second = run(&["--val-fraction", "0.25"]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        bytes,
        "same inputs, different bytes"
    );
    assert_eq!(first["output_sha256"], second["output_sha256"]);
    let val_path = first["validation_path"].as_str().unwrap();
    let prompts = |p: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["prompt"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (train, val) = (prompts(out.to_str().unwrap()), prompts(val_path));
    assert!(!val.is_empty() && !train.is_empty());
    assert!(train.is_disjoint(&val));
    assert_eq!(train.len() + val.len(), 40);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(first["manifest_path"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert!(manifest.to_string().contains("examples_"), "{manifest}");
    // --ids: an id per line beside each file, naming an example that was captured.
    assert!(first.get("ids_path").is_none(), "{first}");
    let with_ids = run(&["--val-fraction", "0.25", "--ids"]);
    assert_eq!(with_ids["output_sha256"], first["output_sha256"]);
    let captured: std::collections::BTreeSet<String> = sb
        .examples()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let ids_of = |p: &str| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let train_ids = ids_of(with_ids["ids_path"].as_str().unwrap());
    let val_ids = ids_of(&val_path.replace(".val.jsonl", ".val.ids.txt"));
    assert_eq!(train_ids.len(), train.len());
    assert_eq!(val_ids.len(), val.len());
    assert!(train_ids
        .iter()
        .chain(&val_ids)
        .all(|id| captured.contains(id)));
    let (rc, _, err) = sb.cli(&["export", "--format", "csv"]);
    assert_ne!(rc, 0);
    assert!(err.contains("csv"), "{err}");
}

#[test]
fn stats_counts_match_the_capture() {
    let sb = captured(12, "");
    append_lines(&sb.path("logs/app.log"), &["garbage".to_string()]);
    let d = sb.start();
    wait_until(T, "the rejected line", || {
        !sb.records("rejected_").is_empty()
    });
    // The segment the first run's shutdown sealed is prepared for export after this start.
    wait_until(T, "stats to count it prepared for export", || {
        let (_, out, _) = sb.cli(&["stats", "--json"]);
        let s: Value = serde_json::from_str(&out).unwrap();
        s["prepared_for_export"] == serde_json::json!({"prepared": 1, "sealed": 1})
    });
    d.stop();
    let (rc, out, _) = sb.cli(&["stats", "--json"]);
    assert_eq!(rc, 0);
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["total_examples"], 12);
    assert_eq!(s["buffer_count"], 0);
    assert_eq!(s["by_source"]["chat"], 12);
    assert_eq!(s["by_relevance"]["high"], 12);
    let rejected: u64 = s["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(rejected, 1);
    let (_, table, _) = sb.cli(&["stats"]);
    assert!(
        table.contains("examples") && table.contains("12"),
        "{table}"
    );
}

#[test]
fn export_shows_progress_on_a_terminal_only() {
    let sb = captured(20, "");
    // `script` (util-linux) gives the command a pseudo-terminal, as a person's shell would.
    let cmd = format!(
        "'{}' --config '{}' export",
        bin().display(),
        sb.config_path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("reading examples") && tty.contains("KiB"),
        "no progress bar on a terminal: {tty}"
    );
    let (rc, stdout, stderr) = sb.cli(&["export"]);
    assert_eq!(rc, 0);
    assert!(
        !stderr.contains("reading examples"),
        "progress drawn into a pipe: {stderr}"
    );
    serde_json::from_str::<Value>(&stdout).expect("stdout stays pure JSON");
}

/// `export.ids_file = true` in the config does what `--ids` does.
#[test]
fn export_ids_file_from_the_config() {
    let sb = captured(5, "[export]\nids_file = true\n");
    let (rc, out, err) = sb.cli(&["export"]);
    assert_eq!(rc, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let ids = std::fs::read_to_string(report["ids_path"].as_str().unwrap()).unwrap();
    assert_eq!(ids.lines().count(), 5, "{ids}");
    assert!(ids.lines().all(|id| id.starts_with("train_")), "{ids}");
}

/// `export.decontaminate` (relative to the config file) and `--decontaminate` leave out
/// examples that share a run of words with an evaluation set.
#[test]
fn export_decontaminates_against_evaluation_sets_from_the_config_and_the_command_line() {
    let sb = captured(10, "[export]\ndecontaminate = [\"eval/golden.jsonl\"]\n");
    let field = |i: usize, key: &str| -> String {
        serde_json::from_str::<Value>(&distinct_line(i)).unwrap()[key]
            .as_str()
            .unwrap()
            .to_string()
    };
    std::fs::create_dir_all(sb.path("eval")).unwrap();
    // A benchmark item asking example 3's question, worded in other case.
    let golden = serde_json::json!({"question": field(3, "query").to_uppercase(), "answer": "A"});
    std::fs::write(sb.path("eval/golden.jsonl"), format!("{golden}\n")).unwrap();
    // Plain text lines holding example 7's answer.
    std::fs::write(sb.path("held_out.txt"), field(7, "response") + "\n").unwrap();
    let out = sb.path("out.jsonl");
    let export = |extra: &[&str]| -> (Value, String) {
        let mut args = vec!["export", "--output", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (rc, o, e) = sb.cli(&args);
        assert_eq!(rc, 0, "{o}{e}");
        (
            serde_json::from_str(&o).unwrap(),
            std::fs::read_to_string(&out).unwrap(),
        )
    };
    let (report, text) = export(&[]);
    assert_eq!(report["after_filtering"], 9, "{report}");
    assert_eq!(report["dropped"]["eval_contamination"], 1, "{report}");
    assert!(!text.contains(&field(3, "query")), "{text}");
    let held_out = sb.path("held_out.txt");
    let (report, text) = export(&["--decontaminate", held_out.to_str().unwrap()]);
    assert_eq!(report["after_filtering"], 8, "{report}");
    assert_eq!(report["dropped"]["eval_contamination"], 2, "{report}");
    assert!(!text.contains(&field(7, "query")), "{text}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(report["manifest_path"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let sets = manifest["options"]["decontamination"]["eval_sets"].to_string();
    assert!(
        sets.contains("golden.jsonl") && sets.contains("held_out.txt"),
        "{sets}"
    );
    // A missing evaluation set is an error that names it, not a silently unfiltered set.
    let (rc, _, err) = sb.cli(&["export", "--decontaminate", "nowhere.jsonl"]);
    assert_ne!(rc, 0);
    assert!(err.contains("nowhere.jsonl"), "{err}");
    // The cause is said once, not once per layer of the error.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    std::fs::write(sb.config_path(), "[export]\ndecontaminate_ngram = 2\n").unwrap();
    let (rc, _, err) = sb.cli(&["check-config"]);
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains(":2:") && err.contains("decontaminate_ngram"),
        "{err}"
    );
}

/// `train-check`'s stdout is its own report, whatever the hand-off commands print: theirs
/// goes to its stderr (the journal, under the timer), so a script can read the report.
#[test]
fn train_check_keeps_the_commands_output_off_its_stdout() {
    let sb = captured(3, "");
    let hook = sb.path("chatty.sh");
    std::fs::write(&hook, "#!/bin/sh\necho \"uploading $1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = std::fs::read_to_string(sb.config_path()).unwrap();
    std::fs::write(
        sb.config_path(),
        format!(
            "{base}\n[training]\nmin_examples = 1\nsync_command = [\"{}\", \"{{count}}\"]\n",
            hook.display()
        ),
    )
    .unwrap();
    let (rc, out, err) = sb.cli(&["train-check"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(err.contains("uploading 3"), "{err}");
    assert!(!out.contains("uploading"), "{out}");
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["outcome"], "triggered", "{out}");
}

/// Ready with no hand-off commands configured: the export is written and the report says
/// none ran, and so does a warning (the seed's "Training triggered" alone would mislead).
#[test]
fn train_check_without_commands_says_that_nothing_ran() {
    let sb = captured(3, "[training]\nmin_examples = 1\n");
    let (rc, out, err) = sb.cli(&["train-check"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(err.contains("nothing was run"), "{err}");
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["ran"], serde_json::json!([]), "{out}");
    assert!(sb.path("data/training_export.jsonl").exists());
}

/// A data_dir that does not exist (mistyped, or the daemon never ran with this config) is an
/// error, not an empty data set: `ready` would otherwise answer "not ready, 0" for ever.
/// Nothing is made.
#[test]
fn the_export_commands_refuse_a_data_dir_that_does_not_exist() {
    let sb = Sandbox::with_config(
        &base_config(&[]).replace("data_dir = \"data\"", "data_dir = \"dta\""),
    );
    for (args, code) in [(&["ready"][..], 2), (&["export"], 1), (&["train-check"], 1)] {
        let (rc, out, err) = sb.cli(args);
        assert_eq!(rc, code, "{args:?}: {out}{err}");
        assert!(err.contains("dta does not exist"), "{args:?}: {err}");
    }
    assert!(!sb.path("dta").exists());
}

/// A wrapper script tells "not ready" (1) from a failure (2): an export that cannot run (its
/// evaluation set is missing) is not an answer of "not enough data".
#[test]
fn ready_fails_with_its_own_exit_code() {
    let sb = captured(3, "[export]\ndecontaminate = [\"missing-eval.jsonl\"]\n");
    let (rc, out, err) = sb.cli(&["ready", "--min-examples", "1"]);
    assert_eq!(rc, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("missing-eval.jsonl"), "{err}");
    let (rc, out, err) = sb.cli(&["ready", "--min-examples", "9"]);
    assert_eq!(rc, 2, "{out}{err}");
}

/// An operator trying a command as root on a data_dir the daemon's own user owns would leave
/// root's files there (`state/`, the pseudonym key, the lock file), and the daemon could not
/// start again; the commands that write there refuse, naming the user to run them as, and
/// make nothing. A daemon run as root on a volume another user owns (a container's) is its
/// owner once it has made `state/`.
#[test]
fn root_is_refused_in_a_data_dir_that_belongs_to_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let sb = captured(3, "");
    let chown = |p: &std::path::Path, id: u32| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(c.as_ptr(), id, id) }, 0);
    };
    let refused = |args: &[&str], code: i32| {
        let (rc, out, err) = sb.cli(args);
        assert_eq!(rc, code, "{args:?}: {out}{err}");
        assert!(
            err.contains("belongs to nobody") && err.contains("sudo -u nobody"),
            "{args:?}: {err}"
        );
    };
    // Installed, the daemon not started yet: the data_dir is its user's.
    std::fs::remove_dir_all(sb.path("data/state")).unwrap();
    chown(&sb.data(), 65534);
    refused(&["ready"], 2);
    refused(&["export"], 1);
    refused(&["train-check"], 1);
    assert!(!sb.path("data/state").exists(), "root made state/");
    // Reading is harmless.
    let (rc, out, err) = sb.cli(&["stats", "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    // The daemon has run as its user: root's daemon is refused too.
    std::fs::create_dir(sb.path("data/state")).unwrap();
    chown(&sb.path("data/state"), 65534);
    refused(&["run"], 1);
    refused(&["ready"], 2);
    // A container's volume: another user's folder, where a daemon run as root made state/.
    chown(&sb.path("data/state"), 0);
    let (rc, out, err) = sb.cli(&["ready", "--min-examples", "3"]);
    assert_eq!(rc, 0, "{out}{err}");
}

/// `ready` counts through a scratch export and leaves none of its files behind, whatever the
/// export options add (validation file, ids files).
#[test]
fn ready_leaves_no_scratch_files_behind() {
    let sb = captured(8, "[export]\nids_file = true\nval_fraction = 0.5\n");
    let (rc, out, err) = sb.cli(&["ready", "--min-examples", "8"]);
    assert_eq!(rc, 0, "{out}{err}");
    let left: Vec<String> = std::fs::read_dir(sb.path("data/state/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `--since` and `--until` select examples by their timestamp (the captured lines are all
/// from 2026-11-27T08:00:00Z); a time that cannot be read is refused before any work.
#[test]
fn export_time_window_through_the_cli() {
    let sb = captured(6, "");
    let export = |args: &[&str]| -> (i32, Value, String) {
        let mut a = vec!["export"];
        a.extend_from_slice(args);
        let (rc, out, err) = sb.cli(&a);
        (rc, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    };
    let (rc, r, err) = export(&["--since", "2026-11-27", "--until", "2026-11-27T08:00:01Z"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(r["after_filtering"], 6, "{r}");
    let (rc, r, err) = export(&["--since", "2026-11-27T08:00:01+00:00"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(r["after_filtering"], 0, "{r}");
    assert_eq!(r["dropped"]["outside_time_range"], 6, "{r}");
    let (rc, _, err) = export(&["--until", "last week"]);
    assert_ne!(rc, 0);
    assert!(err.contains("--until") && err.contains("RFC 3339"), "{err}");
    let (rc, _, err) = export(&["--since", "2026-11-28", "--until", "2026-11-27"]);
    assert_ne!(rc, 0);
    assert!(err.contains("--since must be before --until"), "{err}");
}

/// `--split-by user` reaches the export (the manifest says so); a wrong value is refused.
#[test]
fn export_split_by_through_the_cli_and_the_config() {
    let sb = captured(6, "[export]\nsplit_by = \"user\"\nval_fraction = 0.5\n");
    let (rc, out, err) = sb.cli(&["export"]);
    assert_eq!(rc, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(r["manifest_path"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["options"]["split_by"], "user", "{manifest}");
    let (rc, out, err) = sb.cli(&["export", "--split-by", "prompt"]);
    assert_eq!(rc, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(r["manifest_path"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert!(manifest["options"].get("split_by").is_none(), "{manifest}");
    let (rc, _, err) = sb.cli(&["export", "--split-by", "users"]);
    assert_ne!(rc, 0);
    assert!(
        err.contains("split_by") && err.contains("\"user\""),
        "{err}"
    );
}

/// `--min-score` overrides `export.min_score`; the config's length bounds reach the export.
#[test]
fn export_score_and_length_bounds_through_the_cli_and_the_config() {
    let sb = captured(20, "[export]\nmax_response_chars = 100000\n");
    let export = |args: &[&str]| {
        let mut a = vec!["export"];
        a.extend_from_slice(args);
        let (rc, out, err) = sb.cli(&a);
        (
            rc,
            serde_json::from_str::<Value>(&out).unwrap_or(Value::Null),
            err,
        )
    };
    let (rc, all, err) = export(&[]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(all["after_filtering"], 20, "{all}");
    let manifest = |r: &Value| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(r["manifest_path"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(manifest(&all)["options"]["max_response_chars"], 100000);
    let (rc, r, err) = export(&["--min-score", "1"]);
    assert_eq!(rc, 0, "{err}");
    let kept = r["after_filtering"].as_u64().unwrap();
    let low = r["dropped"]["low_score"].as_u64().unwrap_or(0);
    assert!(low > 0 && kept + low == 20, "{r}");
    assert_eq!(manifest(&r)["options"]["min_score"], 1.0);
    let (rc, _, err) = export(&["--min-score", "1.5"]);
    assert_ne!(rc, 0);
    assert!(
        err.contains("--min-score") && err.contains("from 0 to 1"),
        "{err}"
    );
    let (rc, r, err) = export(&["--max-examples", "5", "--val-fraction", "0.5"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(r["after_filtering"], 5, "{r}");
    assert_eq!(r["dropped"]["over_max_examples"], 15, "{r}");
    assert_eq!(manifest(&r)["options"]["max_examples"], 5);
    // The tag filters: every captured example has tags of its own; none has this one.
    let tags: std::collections::BTreeSet<String> = sb
        .examples()
        .iter()
        .flat_map(|e| e["tags"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(!tags.is_empty());
    // A tag domain.tags names that no example has selects nothing (one neither names is an
    // error: export_tag_filters_ignore_case_and_refuse_unknown_tags).
    let unused = ["rfi", "safety", "bur", "pvc", "epdm", "scheduling"]
        .into_iter()
        .find(|t| !tags.contains(*t))
        .expect("a default tag that no example has");
    let (rc, r, err) = export(&["--tag", unused]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(r["after_filtering"], 0, "{r}");
    assert_eq!(r["dropped"]["tag_not_selected"], 20, "{r}");
    let mut every: Vec<&str> = vec!["export"];
    for t in &tags {
        every.extend(["--exclude-tag", t.as_str()]);
    }
    let (rc, out, err) = sb.cli(&every);
    assert_eq!(rc, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let untagged = sb
        .examples()
        .iter()
        .filter(|e| e["tags"].as_array().unwrap().is_empty())
        .count();
    assert!(untagged < 20);
    assert_eq!(r["after_filtering"], untagged, "{r}");
    assert_eq!(
        manifest(&r)["options"]["exclude_tags"]
            .as_array()
            .unwrap()
            .len(),
        tags.len()
    );
}

/// Only an unnamed config falls back to the bundled default: a file named by `--config` or
/// TRAINING_COLLECTOR_CONFIG that is missing is an error, even spelt like the default.
#[test]
fn a_named_config_that_is_missing_is_an_error_even_spelt_like_the_default() {
    let empty = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.current_dir(empty.path())
            .args(args)
            .env_remove("TRAINING_COLLECTOR_CONFIG");
        if let Some(v) = env {
            cmd.env("TRAINING_COLLECTOR_CONFIG", v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    for (args, env) in [
        (&["--config", "./config.toml", "check-config"][..], None),
        (&["check-config"][..], Some("./config.toml")),
        (&["check-config"][..], Some("config.toml")),
    ] {
        let (rc, err) = run(args, env);
        assert_eq!(rc, Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains("./config.toml: cannot read config")
                || err.contains("config.toml: cannot read config"),
            "{args:?} {env:?}: {err}"
        );
        assert!(!err.contains("embedded"), "{args:?} {env:?}: {err}");
    }
    let (rc, err) = run(&["check-config"], None);
    assert_eq!(rc, Some(0), "{err}");
    assert!(err.contains("config OK: <embedded config.toml>"), "{err}");
}

/// A pipe whose reader is gone: every write to it fails with EPIPE.
fn closed_pipe() -> std::process::Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// The spool is shared by the service's users (a group, `chmod 2775`): the `tmp/` the first
/// `feedback` makes takes the spool's own mode, not that writer's umask, so a writer with
/// another umask (an operator trying it as root, umask 022) does not lock the others out.
#[test]
fn the_spools_tmp_folder_is_made_as_shareable_as_the_spool() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let spool = sb.path("spool");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" --config \"$1\" feedback req-1 positive")
        .arg(bin())
        .arg(sb.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(spool.join("tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o2775, "{mode:o}");
}

/// `stats --json | true`: a reader that goes away is not an error, and the command's work
/// stands (a spooled feedback event is not retried into a duplicate by a caller that saw a
/// failure).
#[test]
fn a_closed_stdout_ends_a_command_quietly_with_its_own_exit_code() {
    let sb = Sandbox::new();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(sb.config_path())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdout(closed_pipe())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    for args in [
        &["stats", "--json"][..],
        &["stats"],
        &["check-config"],
        &["feedback", "req-1", "positive"],
    ] {
        let (rc, err) = run(args);
        assert_eq!(rc, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let spooled: Vec<_> = std::fs::read_dir(sb.path("spool"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .collect();
    assert_eq!(spooled.len(), 1, "the feedback event, once");
    // `ready` keeps its own answer (1: not ready) rather than one about the pipe.
    let (rc, err) = run(&["ready"]);
    assert_eq!(rc, Some(1), "{err}");
}

/// The daemon's log going nowhere (its stderr a pipe whose reader died) must not stop it:
/// it keeps capturing and still shuts down cleanly.
#[test]
fn the_daemon_outlives_a_closed_stderr() {
    let sb = Sandbox::new();
    append_lines(
        &sb.path("logs/app.log"),
        &(0..3).map(distinct_line).collect::<Vec<_>>(),
    );
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--config")
        .arg(sb.config_path())
        .arg("run")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(closed_pipe())
        .stderr(closed_pipe());
    let mut daemon = cmd.spawn().unwrap();
    wait_until(T, "the examples", || {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon died: {:?}",
            daemon.try_wait()
        );
        sb.examples().len() == 3
    });
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) }, 0);
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The files an export to `out` may write, in a fixed order: training, its ids, validation,
/// its ids, manifest.
fn output_set(out: &std::path::Path) -> [std::path::PathBuf; 5] {
    let val = out.with_file_name("out.val.jsonl");
    [
        out.to_path_buf(),
        out.with_file_name("out.ids.txt"),
        val.clone(),
        val.with_file_name("out.val.ids.txt"),
        out.with_file_name("out.jsonl.manifest.json"),
    ]
}

/// Names in `dir` starting with `prefix`.
fn names_starting(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// An export without `--val-fraction` and `--ids` to where one with them went removes the
/// validation and ids files it did not write (a job globbing the directory would otherwise
/// train on stale data the manifest does not mention), and nothing else.
#[test]
fn export_again_with_fewer_files_removes_the_previous_ones() {
    let sb = captured(40, "");
    let out = sb.path("out.jsonl");
    std::fs::write(sb.path("out.notes.txt"), "mine").unwrap();
    let (report, _) = sb.export_to_out(&["--val-fraction", "0.25", "--ids"]);
    assert!(report["validation_count"].as_u64().unwrap() > 0, "{report}");
    assert!(output_set(&out).iter().all(|p| p.exists()));

    let (report, _) = sb.export_to_out(&[]);
    assert_eq!(report["validation_path"], Value::Null, "{report}");
    let [train, train_ids, val, val_ids, manifest] = output_set(&out);
    assert!(train.exists() && manifest.exists());
    for stale in [train_ids, val, val_ids] {
        assert!(!stale.exists(), "{} is left", stale.display());
    }
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["validation"], Value::Null);
    assert_eq!(
        std::fs::read_to_string(sb.path("out.notes.txt")).unwrap(),
        "mine"
    );
}

/// An export that fails before its files are in place (here a directory where the validation
/// ids file goes) leaves every file of the previous export as it was, and no temporary file.
#[test]
fn export_that_fails_leaves_the_previous_set_untouched() {
    let sb = captured(40, "");
    let out = sb.path("out.jsonl");
    sb.export_to_out(&["--val-fraction", "0.25", "--ids"]);
    let val_ids = sb.path("out.val.ids.txt");
    std::fs::remove_file(&val_ids).unwrap();
    std::fs::create_dir(&val_ids).unwrap();
    std::fs::write(val_ids.join("x"), "").unwrap();
    let before: Vec<Option<Vec<u8>>> = output_set(&out)
        .iter()
        .map(|p| std::fs::read(p).ok())
        .collect();

    let (rc, o, e) = sb.cli(&[
        "export",
        "--format",
        "messages",
        "--output",
        out.to_str().unwrap(),
        "--val-fraction",
        "0.25",
        "--ids",
    ]);
    assert_ne!(rc, 0, "{o}{e}");
    assert!(e.contains("out.val.ids.txt"), "{e}");
    let after: Vec<Option<Vec<u8>>> = output_set(&out)
        .iter()
        .map(|p| std::fs::read(p).ok())
        .collect();
    assert!(before == after, "the previous set changed");
    assert!(val_ids.join("x").exists());
    assert_eq!(
        names_starting(sb.dir.path(), ".export-"),
        Vec::<String>::new()
    );
}

/// What interrupted exports left (a half-written output file beside the output, a spill
/// directory under state/tmp) is removed by the next export once stale; a recent one, maybe
/// another export's that is still running, stays.
#[test]
fn export_removes_what_interrupted_exports_left() {
    let sb = captured(5, "");
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    let tmp = sb.path("data/state/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stale_file = sb.path(".export-AbC123.tmp");
    let fresh_file = sb.path(".export-Fresh1.tmp");
    let stale_dir = tmp.join("export-spill-Zz9yX8");
    std::fs::write(&stale_file, "{\"prompt\":\"half a li").unwrap();
    std::fs::write(&fresh_file, "{\"prompt\":\"half a li").unwrap();
    std::fs::create_dir(&stale_dir).unwrap();
    for p in [&stale_file, &stale_dir] {
        std::fs::File::open(p).unwrap().set_modified(old).unwrap();
    }
    sb.export_to_out(&[]);
    assert!(!stale_file.exists() && !stale_dir.exists());
    assert!(fresh_file.exists());
    assert_eq!(names_starting(&tmp, "export-spill-"), Vec::<String>::new());
}

/// Export files get the mode a file created the ordinary way gets, 0666 less the umask (the
/// shipped unit's UMask=0027 gives 0640, for a sync job in the group), not tempfile's 0600.
#[test]
fn export_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let sb = captured(20, "");
    let out = sb.path("out.jsonl");
    for (umask, mode) in [("027", 0o640), ("022", 0o644)] {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(bin())
            .arg("--config")
            .arg(sb.config_path())
            .args(["export", "--val-fraction", "0.25", "--ids", "--output"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        for p in output_set(&out) {
            let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, mode, "{} under umask {umask}: {got:o}", p.display());
        }
    }
}

/// `feedback` and `correct` refuse a blank id or text as a usage error (exit 2), and spool
/// nothing: the daemon would refuse such an event later, where the user does not look.
#[test]
fn feedback_and_correct_refuse_blank_arguments() {
    let sb = Sandbox::with_config(&base_config(&[]));
    let ok = [
        "--prompt",
        "What is the TPO seam overlap?",
        "--response",
        "2 inches",
        "--corrected",
        "2.5 inches",
    ];
    let mut cases: Vec<Vec<String>> = vec![
        vec!["feedback".into(), " ".into(), "positive".into()],
        vec!["feedback".into(), "".into(), "negative".into()],
        vec!["feedback".into(), "req-1".into(), "meh".into()],
    ];
    for i in [1, 3, 5] {
        let mut a: Vec<String> = std::iter::once("correct")
            .chain(ok)
            .map(String::from)
            .collect();
        a[i + 1] = "\t ".into();
        cases.push(a);
    }
    let mut a: Vec<String> = std::iter::once("correct")
        .chain(ok)
        .map(String::from)
        .collect();
    a.extend(["--id".into(), " ".into()]);
    cases.push(a);
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (rc, o, e) = sb.cli(&args);
        assert_eq!(rc, 2, "{args:?}: {o}{e}");
        assert!(e.contains("invalid value"), "{args:?}: {e}");
        let spooled: Vec<_> = walkdir_files(&sb.path("spool"));
        assert!(spooled.is_empty(), "{args:?} spooled {spooled:?}");
    }
    // The same commands with real values are spooled.
    let (rc, _, e) = sb.cli(&["feedback", "req-1", "positive"]);
    assert_eq!(rc, 0, "{e}");
    let args: Vec<&str> = std::iter::once("correct").chain(ok).collect();
    let (rc, _, e) = sb.cli(&args);
    assert_eq!(rc, 0, "{e}");
    assert_eq!(walkdir_files(&sb.path("spool")).len(), 2);
}

/// Every file under `dir`, at any depth.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = ent.path();
        if p.is_dir() {
            out.extend(walkdir_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A split that puts no line in validation (a small export, a small fraction) writes no
/// validation file, whose emptiness loaders and trainers choke on, and removes the one an
/// earlier export left; the report and the manifest say why.
#[test]
fn export_writes_no_empty_validation_file() {
    let sb = captured(6, "");
    let out = sb.path("out.jsonl");
    let val = sb.path("out.val.jsonl");
    let (r, _) = sb.export_to_out(&["--val-fraction", "0.9", "--ids"]);
    assert!(r["validation_count"].as_u64().unwrap() > 0, "{r}");
    assert!(val.exists() && sb.path("out.val.ids.txt").exists());

    let (r, _) = sb.export_to_out(&["--val-fraction", "0.000001", "--ids"]);
    assert_eq!(r["train_count"], 6, "{r}");
    assert_eq!(r["validation_path"], Value::Null, "{r}");
    let note = r["validation_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("no validation file") && note.contains("0.000001"),
        "{r}"
    );
    assert!(!val.exists(), "an empty or stale validation file is left");
    assert!(!sb.path("out.val.ids.txt").exists());
    let m: Value = serde_json::from_slice(&std::fs::read(manifest_of(&out)).unwrap()).unwrap();
    assert_eq!(m["validation"], Value::Null, "{m}");
    assert_eq!(m["validation_note"], r["validation_note"], "{m}");
}

fn manifest_of(out: &std::path::Path) -> std::path::PathBuf {
    out.with_file_name("out.jsonl.manifest.json")
}

/// Tag filters ignore case (a log's "Warranty-Claim" and `--tag warranty-claim` are one
/// tag), and a tag that no record has and domain.tags does not name (a typo) is not a silent
/// filter that selects nothing, or excludes nothing: on the command line it stops the export
/// before anything is written, naming the known tags; in the config, which may name a tag
/// captures have not brought yet, it is a warning. A blank tag in the config is an error at
/// its line and column.
#[test]
fn export_tag_filters_ignore_case_and_refuse_unknown_tags() {
    let sb = Sandbox::with_config(&base_config(&[]));
    let mut lines: Vec<String> = (0..30).map(distinct_line).collect();
    // A tag the service logs itself: free-form, not one of domain.tags.
    let mut tagged: Value = serde_json::from_str(&distinct_line(30)).unwrap();
    tagged["tags"] = serde_json::json!(["Warranty-Claim"]);
    lines.push(tagged.to_string());
    append_lines(&sb.path("logs/app.log"), &lines);
    let d = sb.start();
    wait_until(T, "all examples", || sb.examples().len() == 31);
    d.stop();
    let with_tpo = sb
        .examples()
        .iter()
        .filter(|e| e["tags"].as_array().unwrap().iter().any(|t| t == "tpo"))
        .count() as u64;
    assert!((1..31).contains(&with_tpo), "{with_tpo} of 31 tagged tpo");

    for spelling in ["tpo", "TPO", "Tpo"] {
        let (r, _) = sb.export_to_out(&["--tag", spelling]);
        assert_eq!(r["after_filtering"], with_tpo, "--tag {spelling}: {r}");
        let (r, _) = sb.export_to_out(&["--exclude-tag", spelling]);
        assert_eq!(
            r["dropped"]["excluded_tag"], with_tpo,
            "--exclude-tag {spelling}: {r}"
        );
    }
    let (r, _) = sb.export_to_out(&["--tag", "warranty-claim"]);
    assert_eq!(r["after_filtering"], 1, "{r}");

    let out = sb.path("out.jsonl");
    let before = std::fs::read(&out).unwrap();
    for flag in ["--tag", "--exclude-tag"] {
        let (rc, o, e) = sb.cli(&["export", "--output", out.to_str().unwrap(), flag, "tpyo"]);
        assert_eq!(rc, 1, "{flag} tpyo: {o}{e}");
        assert!(
            e.contains("\"tpyo\"") && e.contains("tpo, ") && e.contains("Warranty-Claim"),
            "{flag} tpyo: {e}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), before, "{flag} tpyo wrote");
    }
    let (rc, _, e) = sb.cli(&["export", "--tag", " "]);
    assert_eq!(rc, 2, "{e}");

    // The config's filters: case ignored too; an unknown tag warned of, not fatal.
    let cfg = base_config(&["[export]", "exclude_tags = [\"TPO\", \"tpyo\"]"]);
    std::fs::write(sb.config_path(), &cfg).unwrap();
    let (rc, o, e) = sb.cli(&["export", "--output", out.to_str().unwrap()]);
    assert_eq!(rc, 0, "{o}{e}");
    let r: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(r["dropped"]["excluded_tag"], with_tpo, "{r}");
    assert!(
        e.contains("export.exclude_tags") && e.contains("\"tpyo\"") && e.contains("tpo, "),
        "{e}"
    );
    // A blank one is refused where it is written.
    let cfg = base_config(&["[export]", "tags = [\"tpo\", \"  \"]"]);
    std::fs::write(sb.config_path(), &cfg).unwrap();
    let (rc, _, e) = sb.cli(&["check-config"]);
    assert_eq!(rc, 2, "{e}");
    let line = cfg.lines().count();
    let at = format!(
        "{}:{line}:16: export.tags[1] is blank",
        sb.config_path().display()
    );
    assert!(e.contains(&at), "{e}");
}

/// A data dir of `segments` sealed example segments of `per` examples each, written
/// directly (capturing this many through the daemon would take most of the test's time).
fn many_segments(sb: &Sandbox, segments: usize, per: usize) {
    for s in 0..segments {
        let mut text = String::new();
        for j in 0..per {
            let i = s * per + j;
            let line = serde_json::json!({
                "id": format!("train_20261127_080000_{i:016x}"),
                "timestamp": "2026-11-27T08:00:00.000000Z", "source": "chat",
                "prompt": format!("What is the TPO seam overlap for roof section {i} of warehouse {}?", i * 7),
                "response": format!("Use a 2.5 inch welded seam per Carlisle for section {i}, then check submittal {}.", i * 13),
                "metadata": {"skill_used": null, "tier_handled": null, "latency_ms": null,
                             "user_id": "u1", "prompt_tokens": 12, "response_tokens": 14},
                "quality": {"user_feedback": null, "was_corrected": false, "verified_accurate": null,
                            "domain_relevance": "high", "auto_score": 0.6},
                "tags": ["tpo"], "project_context": "W", "include_in_training": true,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(
            sb.data()
                .join(format!("examples_20261127_{:04}.jsonl", s + 1)),
            text,
        )
        .unwrap();
    }
}

/// Temporary files of exports under the sandbox: output temporaries, spill directories,
/// prepared cache entries being written.
fn export_temporaries(sb: &Sandbox) -> Vec<String> {
    let mut found = names_starting(sb.dir.path(), ".export-");
    found.extend(names_starting(&sb.path("data/state/tmp"), "export-spill-"));
    let cache = sb.path("data/state/export-cache");
    for ent in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        if ent.path().is_dir() {
            found.extend(names_starting(&ent.path(), ".tmp-"));
        }
    }
    found
}

/// Ctrl-C (SIGINT) or SIGTERM during an export ends it as the signal would (the shell sees
/// status 130 or 143), after removing its temporary files and spill directory, and leaves
/// the previous output set as it was (or, had the signal come during the renames, the new
/// one whole): nothing waits for a later export's hourly sweep.
#[test]
fn an_interrupted_export_removes_its_temporary_files() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::with_config(&base_config(&[]));
    std::fs::create_dir_all(sb.data()).unwrap();
    many_segments(&sb, 150, 200);
    let out = sb.path("out.jsonl");
    let (first, _) = sb.export_to_out(&["--no-cache", "--val-fraction", "0.2", "--ids"]);
    let before: Vec<Option<Vec<u8>>> = output_set(&out)
        .iter()
        .map(|p| std::fs::read(p).ok())
        .collect();
    assert!(before.iter().all(Option::is_some));

    // (signal, what must exist before it is sent: a stage of the export, extra arguments)
    let rounds: [(i32, &str, &[&str]); 3] = [
        (libc::SIGINT, "spill directory and cache entries", &[]),
        (libc::SIGINT, "output temporaries", &["--no-cache"]),
        (libc::SIGTERM, "output temporaries", &["--no-cache"]),
    ];
    for (sig, stage, extra) in rounds {
        let mut interrupted = false;
        for _attempt in 0..5 {
            let mut child = std::process::Command::new(bin())
                .arg("--config")
                .arg(sb.config_path())
                .args([
                    "export",
                    "--output",
                    out.to_str().unwrap(),
                    "--val-fraction",
                    "0.2",
                    "--ids",
                ])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Polled tightly: the stage lasts a fraction of a second in a release build.
            let start = std::time::Instant::now();
            let reached = loop {
                let t = export_temporaries(&sb);
                let there = match stage {
                    "output temporaries" => t.iter().any(|n| n.starts_with(".export-")),
                    _ => {
                        t.iter().any(|n| n.starts_with("export-spill-"))
                            && t.iter().any(|n| n.starts_with(".tmp-"))
                    }
                };
                if there || child.try_wait().unwrap().is_some() || start.elapsed() > T * 3 {
                    break there;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
            let status = child.wait().unwrap();
            assert_eq!(
                export_temporaries(&sb),
                Vec::<String>::new(),
                "left after signal {sig} at the {stage}"
            );
            if status.success() {
                // Finished before the signal: the new set is whole; try again.
                continue;
            }
            assert!(reached, "{stage} never appeared: {status:?}");
            assert_eq!(status.signal(), Some(sig), "{status:?}");
            let after: Vec<Option<Vec<u8>>> = output_set(&out)
                .iter()
                .map(|p| std::fs::read(p).ok())
                .collect();
            assert!(
                after == before,
                "the previous output set changed at the {stage}"
            );
            interrupted = true;
            break;
        }
        assert!(
            interrupted,
            "every export finished before signal {sig} at the {stage}"
        );
    }
    let (r, _) = sb.export_to_out(&["--val-fraction", "0.2", "--ids"]);
    assert_eq!(r["after_filtering"], first["after_filtering"], "{r}");
    assert_eq!(r["output_sha256"], first["output_sha256"], "{r}");
}

/// An export started with SIGHUP ignored (`nohup`, `trap '' HUP`) keeps it ignored: the
/// hangup nohup shields it from must not end it through the handler that cleans up after
/// Ctrl-C.
#[test]
fn an_export_started_with_sighup_ignored_is_not_ended_by_a_hangup() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::with_config(&base_config(&[]));
    std::fs::create_dir_all(sb.data()).unwrap();
    many_segments(&sb, 150, 200);
    let out = sb.path("out.jsonl");
    // One export first, which makes the folders the temporaries are looked for in.
    sb.export_to_out(&["--no-cache"]);
    let mut hung_up_mid_export = false;
    for _attempt in 0..5 {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' HUP; exec \"$0\" --config \"$1\" export --no-cache --output \"$2\"")
            .arg(bin())
            .arg(sb.config_path())
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Once the export has made its spill directory (its signal handlers, if any, are in
        // place by then), hang up on it until it ends.
        let start = std::time::Instant::now();
        let mut reached = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if !reached
                && export_temporaries(&sb)
                    .iter()
                    .any(|n| n.starts_with("export-spill-"))
            {
                reached = true;
            }
            if reached {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
            }
            assert!(start.elapsed() < T * 3, "the export did not end");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(status.signal(), None, "ended by a signal: {status:?}");
        assert!(status.success(), "{status:?}");
        if reached {
            hung_up_mid_export = true;
            break;
        }
    }
    assert!(
        hung_up_mid_export,
        "every export finished before its spill directory was seen"
    );
    assert!(out.exists());
    assert_eq!(export_temporaries(&sb), Vec::<String>::new());
}
