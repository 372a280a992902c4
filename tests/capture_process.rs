//! How a log line becomes an example, through the real daemon: every style of log the
//! benchmark generator writes, and the lines services really write around it (unicode,
//! control characters, CRLF endings, very long texts, missing and extra fields, nested
//! messages), each compared with what the seed's own code computes; and the fields the
//! seed has no opinion on (ids, times, labels) checked against the README.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(60);

/// Writes `lines` (each with its terminator) into logs/app.log, runs the daemon until the
/// whole file is checkpointed, stops it, and returns the byte offset of each line.
fn ingest(sb: &Sandbox, lines: &[(String, &str)]) -> Vec<u64> {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for (l, end) in lines {
        offsets.push(bytes.len() as u64);
        bytes.extend_from_slice(l.as_bytes());
        bytes.extend_from_slice(end.as_bytes());
    }
    std::fs::write(sb.path("logs/app.log"), &bytes).unwrap();
    let d = sb.start();
    let size = bytes.len();
    wait_until(T, "the whole log checkpointed", || {
        std::fs::read_to_string(sb.data().join("state/checkpoints.json")).is_ok_and(|c| {
            c.contains(&format!("\"offset\": {size}")) || c.contains(&format!("\"offset\":{size}"))
        })
    });
    d.stop();
    offsets
}

fn substring_config(extra: &str) -> String {
    base_config(&["[domain]", "match_mode = \"substring\"", extra])
}

/// What the seed would be given for a line: (prompt, response, skill, tier, user, project),
/// or None for a line that is not an interaction.
type Expect = Option<(String, String, Value, Value, Value, Value)>;

/// `marker` is the text every line the config selects as an interaction carries: such a line
/// that is not an example must be rejected, any other JSON line skipped.
fn check_against_seed(sb: &Sandbox, lines: &[(String, &str)], expect: &[Expect], marker: &str) {
    let offsets = ingest(sb, lines);
    let examples = sb.examples();
    let by_offset: HashMap<u64, &Value> = examples
        .iter()
        .map(|e| (e["metadata"]["origin_offset"].as_u64().unwrap(), e))
        .collect();
    assert_eq!(by_offset.len(), examples.len(), "two examples of one line");
    let pairs: Vec<(String, String)> = expect
        .iter()
        .flatten()
        .map(|(p, r, ..)| (p.clone(), r.clone()))
        .collect();
    let mut oracle = seed_oracle(&pairs, &["--texts"]).into_iter();
    let rejected: Vec<u64> = sb
        .records("rejected_")
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    let mut differences = Vec::new();
    let mut interactions = 0;
    for ((line, _), (off, want)) in lines.iter().zip(offsets.iter().zip(expect)) {
        let Some((_, _, skill, tier, user, project)) = want else {
            assert!(!by_offset.contains_key(off), "an example of {line:.80}");
            let is_json = serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object());
            let is_broken_interaction = is_json && line.contains(marker);
            assert_eq!(
                rejected.contains(off),
                !is_json || is_broken_interaction,
                "rejected or skipped wrongly: {line:.80}"
            );
            continue;
        };
        interactions += 1;
        let seed = oracle.next().unwrap();
        let Some(ex) = by_offset.get(off) else {
            differences.push(format!("no example of {line:.80}"));
            continue;
        };
        let got = json!({
            "relevance": ex["quality"]["domain_relevance"],
            "auto_score": ex["quality"]["auto_score"],
            "tags": ex["tags"],
            "prompt_tokens": ex["metadata"]["prompt_tokens"],
            "response_tokens": ex["metadata"]["response_tokens"],
            "prompt": ex["prompt"],
            "response": ex["response"],
        });
        if got != seed {
            differences.push(format!(
                "{line:.100}\n  seed: {seed:.300}\n  rust: {got:.300}"
            ));
        }
        let meta = &ex["metadata"];
        let fields = json!([
            meta["skill_used"],
            meta["tier_handled"],
            meta["user_id"],
            ex["project_context"]
        ]);
        let want_fields = json!([skill, tier, user, project]);
        if fields != want_fields {
            differences.push(format!("{line:.100}\n  fields {fields} != {want_fields}"));
        }
        assert_eq!(ex["source"], "chat");
        assert_eq!(ex["include_in_training"], true);
    }
    assert_eq!(
        examples.len(),
        interactions,
        "examples that are no interaction"
    );
    assert!(
        differences.is_empty(),
        "{} of {interactions} differ from the seed:\n{}",
        differences.len(),
        differences[..differences.len().min(5)].join("\n")
    );
}

/// Lines services write that the generator does not: unicode and escapes, the separator
/// controls Python strips, long texts, missing, null and extra fields, numbers.
fn flat_edge_lines() -> Vec<String> {
    let base = |i: usize, q: &str, r: &str| {
        json!({"ts": "2026-11-27T09:00:00Z", "event": "interaction", "request_id": format!("edge-{i}"),
               "query": q, "response": r, "skill": "spec_lookup", "tier": "tier1", "user_id": "u9",
               "project": "Warehouse 12"})
    };
    let mut lines = vec![
        base(0, "Café façade with EPDM 😀 membrane", "Ñandú naïve résumé — Johns Manville\u{a0}base flash").to_string(),
        base(1, "  \u{1f}Padded TPO question about the seam\u{1c} ", "\u{1e} A welded seam per Carlisle. \u{1f}\n").to_string(),
        base(2, "\tTabs and\r\nCRLF inside the TPO text\r\n", "NUL \u{0} and LS \u{2028} kept, flashing").to_string(),
        base(3, "A very long answer about the roof drain?", &"membrane seam crew steps ".repeat(8_000)).to_string(),
        json!({"event": "interaction", "request_id": "edge-4", "query": "Only the required fields, TPO?", "response": "Yes."}).to_string(),
        json!({"event": "interaction", "request_id": "edge-5", "query": "Nulls for every optional field?", "response": "Scupper and cricket.",
               "ts": null, "skill": null, "tier": null, "user_id": null, "project": null}).to_string(),
        json!({"event": "interaction", "request_id": "edge-6", "query": "Extra fields too?", "response": "Ignored, polyiso.",
               "trace": {"span": [1, 2]}, "model": "x", "tokens": 12}).to_string(),
        // Escaped as Python's json.dumps writes non-ASCII (a surrogate pair for the emoji).
        r#"{"event": "interaction", "request_id": "edge-7", "query": "Escaped caf\u00e9 \ud83d\ude00 EPDM?", "response": "Quote \" and backslash \\ in a flashing answer."}"#.to_string(),
    ];
    let mut e = base(
        8,
        "Numbers where text goes?",
        "A tier, a project and a skill as numbers.",
    );
    e["tier"] = json!(2);
    e["project"] = json!(12);
    e["skill"] = json!(3);
    e["user_id"] = json!(42);
    lines.push(e.to_string());
    lines
}

fn flat_expect(line: &str) -> Expect {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["event"] != "interaction" || !v["query"].is_string() || !v["response"].is_string() {
        return None;
    }
    let text = |x: &Value| match x {
        Value::Number(n) => json!(n.to_string()),
        other => other.clone(),
    };
    Some((
        v["query"].as_str().unwrap().to_string(),
        v["response"].as_str().unwrap().to_string(),
        text(&v["skill"]),
        text(&v["tier"]),
        text(&v["user_id"]),
        match &v["project"] {
            Value::Null => json!("general"),
            p => text(p),
        },
    ))
}

#[test]
fn flat_logs_become_the_examples_the_seed_would_make() {
    let sb = Sandbox::with_config(&substring_config(""));
    let mut lines: Vec<(String, &str)> = genlog(600, 3, &["--bad-every", "37"])
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, if i % 5 == 0 { "\r\n" } else { "\n" }))
        .collect();
    lines.extend(flat_edge_lines().into_iter().map(|l| (l, "\r\n")));
    let expect: Vec<Expect> = lines.iter().map(|(l, _)| flat_expect(l)).collect();
    assert!(expect.iter().flatten().count() > 550);
    check_against_seed(&sb, &lines, &expect, "\"interaction\"");
}

#[test]
fn nested_message_logs_become_the_examples_the_seed_would_make() {
    let sb = Sandbox::with_config(&substring_config(
        r#"[input.match]
"/kind" = "llm.call"
[input.fields]
messages = ["/request/messages"]
response = ["/output/text"]
request_id = ["/trace/id"]
timestamp = ["/@timestamp"]
skill_used = ["/meta/skill"]
user_id = ["/meta/user"]"#,
    ));
    let mut lines: Vec<String> = genlog(600, 4, &["--style", "nested", "--bad-every", "41"]);
    // Content parts, several turns, and a system message that is not the prompt.
    lines.push(json!({"kind": "llm.call", "trace": {"id": "n-1"}, "meta": {"skill": "estimating", "user": "u3"},
        "request": {"messages": [{"role": "system", "content": "You are a roofing estimator."},
            {"role": "user", "content": "First question about EPDM?"}, {"role": "assistant", "content": "An answer."},
            {"role": "user", "content": [{"type": "text", "text": "How many squares of TPO"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": " for 12,000 sq ft?"}]}]},
        "output": {"text": "  About 120 squares plus 10% waste for the membrane.  "}}).to_string());
    let lines: Vec<(String, &str)> = lines.into_iter().map(|l| (l, "\n")).collect();
    let expect: Vec<Expect> = lines
        .iter()
        .map(|(l, _)| {
            let v: Value = serde_json::from_str(l).ok()?;
            if v["kind"] != "llm.call" {
                return None;
            }
            let msgs = v["request"]["messages"].as_array().unwrap();
            let user = msgs.iter().rev().find(|m| m["role"] == "user").unwrap();
            let prompt = match &user["content"] {
                Value::String(s) => s.clone(),
                parts => parts
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            Some((
                prompt,
                v["output"]["text"].as_str().unwrap().to_string(),
                v["meta"]["skill"].clone(),
                Value::Null,
                v["meta"]["user"].clone(),
                json!("general"),
            ))
        })
        .collect();
    assert!(expect.iter().flatten().count() > 550);
    check_against_seed(&sb, &lines, &expect, "\"llm.call\"");
}

#[test]
fn a_blank_request_id_does_not_merge_repeated_questions() {
    let sb = Sandbox::new();
    // A service that logs "" when a request came without an id, asked the same thing again.
    let line = |rid: Value| {
        let mut v = json!({"ts": "2026-11-27T08:00:00Z", "event": "interaction",
            "query": "What is the TPO seam overlap?", "response": "2.5 inches per Carlisle."});
        if !rid.is_null() {
            v["request_id"] = rid;
        }
        (v.to_string(), "\n")
    };
    let lines = vec![
        line(json!("")),
        line(json!("")),
        line(json!("  ")),
        line(Value::Null),
    ];
    ingest(&sb, &lines);
    let examples = sb.examples();
    let mut ids: Vec<&str> = examples.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        4,
        "repeated questions merged into one id: {examples:#?}"
    );
    for e in &examples {
        assert!(
            e["metadata"].get("request_id").is_none(),
            "a blank request id kept as one: {e}"
        );
    }
    // Counted once each by export's replay filter: all four are there until the dedup of
    // identical prompts, which keeps one on purpose.
    let (report, _) = sb.export_to_out(&["--min-quality", "low"]);
    assert_eq!(report["total_raw"], 4, "{report}");
}

#[test]
fn log_times_in_other_formats_and_zones_are_the_lines_own_time() {
    let sb = Sandbox::new();
    let cases: Vec<(Value, Value, &str)> = vec![
        // (timestamp, ts, the example's timestamp)
        (
            Value::Null,
            json!("2026-11-27T10:00:00+02:00"),
            "2026-11-27T08:00:00.000000Z",
        ),
        (
            Value::Null,
            json!("2026-11-27T10:00:00.250+0200"),
            "2026-11-27T08:00:00.250000Z",
        ),
        (
            Value::Null,
            json!("2026-11-27 08:00:00,125"),
            "2026-11-27T08:00:00.125000Z",
        ),
        (
            Value::Null,
            json!("2026-11-27 13:30:00+05:30"),
            "2026-11-27T08:00:00.000000Z",
        ),
        (
            Value::Null,
            json!("Fri, 27 Nov 2026 08:00:00 GMT"),
            "2026-11-27T08:00:00.000000Z",
        ),
        (
            Value::Null,
            json!(1795766400),
            "2026-11-27T08:00:00.000000Z",
        ),
        (
            Value::Null,
            json!(1795766400.5),
            "2026-11-27T08:00:00.500000Z",
        ),
        (
            Value::Null,
            json!(1795766400123i64),
            "2026-11-27T08:00:00.123000Z",
        ),
        (
            Value::Null,
            json!(1795766400123456i64),
            "2026-11-27T08:00:00.123456Z",
        ),
        (
            Value::Null,
            json!(1795766400123456789i64),
            "2026-11-27T08:00:00.123456Z",
        ),
        (
            Value::Null,
            json!("1795766400"),
            "2026-11-27T08:00:00.000000Z",
        ),
        // A `timestamp` it cannot read does not hide a `ts` it can.
        (
            json!("not a time"),
            json!("2026-11-27T08:00:00Z"),
            "2026-11-27T08:00:00.000000Z",
        ),
    ];
    let mut lines = Vec::new();
    for (i, (timestamp, ts, _)) in cases.iter().enumerate() {
        let mut v = json!({"event": "interaction", "request_id": format!("t-{i}"),
            "query": format!("Question {i} about TPO?"), "response": "An answer."});
        if !timestamp.is_null() {
            v["timestamp"] = timestamp.clone();
        }
        v["ts"] = ts.clone();
        lines.push((v.to_string(), "\n"));
    }
    // No time it can read at all: stamped when captured, the line's own text kept.
    lines.push((
        json!({"event": "interaction", "request_id": "t-last", "ts": "sometime Tuesday",
            "query": "Question last?", "response": "An answer."})
        .to_string(),
        "\n",
    ));
    ingest(&sb, &lines);
    let examples = sb.examples();
    let by_rid: HashMap<&str, &Value> = examples
        .iter()
        .map(|e| (e["metadata"]["request_id"].as_str().unwrap(), e))
        .collect();
    let mut wrong = Vec::new();
    for (i, (timestamp, ts, want)) in cases.iter().enumerate() {
        let e = by_rid[format!("t-{i}").as_str()];
        let id_time = want[..19].replace(['-', ':'], "").replace('T', "_");
        if e["timestamp"] != *want
            || !e["id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("train_{id_time}_"))
        {
            wrong.push(format!(
                "{timestamp} / {ts}: {} {} (want {want})",
                e["timestamp"], e["id"]
            ));
        }
        assert!(e["metadata"].get("unparsed_timestamp").is_none(), "{e}");
    }
    assert!(
        wrong.is_empty(),
        "log times read wrongly:\n{}",
        wrong.join("\n")
    );
    let last = by_rid["t-last"];
    assert!(last["id"]
        .as_str()
        .unwrap()
        .starts_with("train_00000000_000000_"));
    assert_eq!(last["metadata"]["unparsed_timestamp"], "sometime Tuesday");
}

/// The seed's own `capture_calculation` over each event: its stored prompt and response.
fn seed_calculations(events: &[Value]) -> Vec<(String, String)> {
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import training_collector as tc
c = tc.TrainingCollector(storage_path="./oracle_data", buffer_size=10**9, auto_flush=False)
for line in sys.stdin:
    e = json.loads(line)
    c.capture_calculation(e["description"], e["inputs"], e["formula"], e["result"], e["explanation"])
    print(json.dumps([c.buffer[-1].prompt, c.buffer[-1].response]))
"#;
    let bench = shared_dir().join("bench");
    python_json_lines(
        &["-c".as_ref(), script.as_ref(), bench.as_os_str()],
        events.iter().cloned(),
    )
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect()
}

#[test]
fn calculations_print_numbers_and_results_as_the_seed_prints_them() {
    let sb = Sandbox::with_config(&base_config(&[]).replace(
        "[spool]\ndir = \"spool\"\n",
        "[spool]\ndir = \"spool\"\nmin_age = \"0s\"\n",
    ));
    let events: Vec<Value> = vec![
        json!({"description": "Fastener spacing", "inputs": {"wind_uplift_psf": 1e-5, "tolerance": 1.5e-7, "area_sqft": 12000, "waste": 0.1, "big": 1e16, "whole": 45.0},
               "formula": "area / spacing", "result": 0.00012, "explanation": "Fasteners per square."}),
        json!({"description": "Membrane quantity", "inputs": {"area_sqft": 1e17}, "formula": "area / 100",
               "result": 1e15, "explanation": "Squares of membrane."}),
        json!({"description": "Drain count", "inputs": {}, "formula": "n", "result": -0.0, "explanation": "None needed."}),
        json!({"description": "Roll count", "inputs": {"area_sqft": 12000}, "formula": "area / 1000",
               "result": {"rolls": 12, "waste": 0.1, "seamed": true, "tape": null, "note": "it's 10' wide", "sizes": [10, "12'"]},
               "explanation": "Rolls of 10 ft membrane."}),
    ];
    let mut spool = String::new();
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        e["type"] = json!("calculation");
        e["event_id"] = json!(format!("calc-{i}"));
        spool.push_str(&format!("{e}\n"));
    }
    std::fs::write(sb.path("spool/calc.jsonl"), spool).unwrap();
    let d = sb.start();
    wait_until(T, "the calculations captured", || {
        sb.examples().len() == events.len()
    });
    d.stop();
    let examples = sb.examples();
    for (e, (prompt, response)) in events.iter().zip(seed_calculations(&events)) {
        let ex = examples
            .iter()
            .find(|x| {
                x["prompt"].as_str().unwrap().starts_with(&format!(
                    "Calculate {}:",
                    e["description"].as_str().unwrap()
                ))
            })
            .unwrap();
        assert_eq!(ex["prompt"], prompt);
        assert_eq!(ex["response"], response);
    }
}

#[test]
fn a_lone_surrogate_escape_does_not_lose_the_interaction() {
    let sb = Sandbox::new();
    // What JSON.stringify (and Python's json.dumps) write for a string cut in the middle of
    // an emoji: the high half of its surrogate pair, escaped.
    let long = "Fully adhered TPO over polyiso, seams welded. ".repeat(200);
    let lines = vec![
        (
            format!(
                r#"{{"ts": "2026-11-27T08:00:00Z", "event": "interaction", "request_id": "s-1", "query": "Best membrane for this roof \ud83d", "response": "{long}\ud83d\ude00 and a cut \udc00"}}"#
            ),
            "\n",
        ),
        (interaction_line("s", 2), "\n"),
    ];
    ingest(&sb, &lines);
    let examples = sb.examples();
    let rejected = sb.records("rejected_");
    assert!(rejected.is_empty(), "rejected: {rejected:?}");
    assert_eq!(examples.len(), 2, "{examples:?}");
    let ex = examples
        .iter()
        .find(|e| e["metadata"]["request_id"] == "s-1")
        .unwrap();
    assert_eq!(ex["prompt"], "Best membrane for this roof \u{fffd}");
    assert_eq!(
        ex["response"],
        format!("{}\u{1f600} and a cut \u{fffd}", long.trim_start())
    );
}

#[test]
fn feedback_logged_with_a_blank_example_id_reaches_its_request() {
    let sb = Sandbox::new();
    let lines = vec![
        (interaction_line("fb", 1), "\n"),
        (
            json!({"ts": "2026-11-27T08:00:01Z", "event": "feedback", "example_id": "",
                   "request_id": "fb-000001", "feedback": "down"})
            .to_string(),
            "\n",
        ),
    ];
    ingest(&sb, &lines);
    let (rc, out, err) = sb.cli(&["stats", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        stats["feedback"],
        json!({"positive": 0, "negative": 1, "orphaned": 0}),
        "{stats}"
    );
}
