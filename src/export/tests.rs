//! End-to-end tests of `export` over planted fixture segments.

use super::*;
use crate::record::{CorrectionQuality, Feedback, Metadata, Quality, TrainingExample};
use serde_json::Value;
use std::fs;
use std::io::Write;

/// [`super::run`] three ways: without the prepared cache, then twice with it (kept under the
/// options' `temp_dir` for the whole test, so a test's later exports read what its earlier
/// ones cached, under other options too). All three must give the same report and the same
/// bytes in every file; the second cached run must read every sealed segment from the cache.
/// Every export test in this file goes through it.
fn run(
    inputs: &ExportInputs,
    o: &ExportOptions,
    out: &Path,
    budget: usize,
) -> Result<ExportReport, ExportError> {
    let plain = super::run(inputs, o, out, budget)?;
    assert!(plain.prepared_cache.is_none());
    let files = output_files(out);
    let sealed = inputs
        .examples
        .iter()
        .filter(|p| !input::is_open_segment(p))
        .count() as u64;
    let cached = ExportOptions {
        cache_dir: Some(o.temp_dir.with_extension("prepared-cache")),
        ..o.clone()
    };
    for pass in ["first", "second"] {
        let rep = super::run(inputs, &cached, out, budget).expect("cached run");
        let stats = rep.prepared_cache.expect("cache on");
        assert_eq!(
            stats.reused + stats.written,
            sealed,
            "{pass} cached run: {stats:?}"
        );
        if pass == "second" {
            assert_eq!(stats.reused, sealed, "second cached run: {stats:?}");
        }
        assert_eq!(
            report_sans_cache(&rep),
            report_sans_cache(&plain),
            "{pass} cached run"
        );
        assert!(
            output_files(out) == files,
            "{pass} cached run wrote other bytes"
        );
    }
    Ok(plain)
}

fn report_sans_cache(r: &ExportReport) -> Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("prepared_cache");
    v
}

/// The bytes of every file an export to `out` may write.
fn output_files(out: &Path) -> Vec<Option<Vec<u8>>> {
    let val = split::validation_path(out);
    [
        out.to_path_buf(),
        split::ids_path(out),
        split::ids_path(&val),
        manifest::manifest_path(out),
        val,
    ]
    .iter()
    .map(|p| fs::read(p).ok())
    .collect()
}

pub(crate) struct Ex<'a> {
    pub id: &'a str,
    pub ts: &'a str,
    pub prompt: &'a str,
    pub response: &'a str,
    pub rel: Relevance,
    pub score: f64,
    pub request_id: Option<&'a str>,
    pub source: &'a str,
    pub feedback: Option<Feedback>,
    pub include: bool,
    pub user: Option<&'a str>,
    pub tags: &'a [&'a str],
}

impl<'a> Ex<'a> {
    pub fn new(id: &'a str, ts: &'a str, prompt: &'a str, response: &'a str) -> Self {
        Ex {
            id,
            ts,
            prompt,
            response,
            rel: Relevance::High,
            score: 0.5,
            request_id: None,
            source: "chat",
            feedback: None,
            include: true,
            user: None,
            tags: &["tpo"],
        }
    }

    pub fn line(&self) -> String {
        let mut md = Metadata {
            user_id: self.user.map(String::from),
            ..Default::default()
        };
        if let Some(r) = self.request_id {
            md.extra.insert("request_id".into(), Value::from(r));
        }
        serde_json::to_string(&TrainingExample {
            id: self.id.into(),
            timestamp: self.ts.into(),
            source: self.source.into(),
            prompt: self.prompt.into(),
            response: self.response.into(),
            metadata: md,
            quality: Quality {
                user_feedback: self.feedback,
                was_corrected: false,
                verified_accurate: None,
                domain_relevance: self.rel,
                auto_score: self.score,
            },
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            project_context: "general".into(),
            include_in_training: self.include,
        })
        .unwrap()
    }
}

pub(crate) fn fb(id: &str, ts: &str, target: &str, f: Feedback) -> String {
    serde_json::to_string(&FeedbackEvent {
        id: id.into(),
        timestamp: ts.into(),
        target: target.into(),
        feedback: f,
        comment: None,
        user: None,
    })
    .unwrap()
}

pub(crate) struct Corr<'a> {
    pub id: &'a str,
    pub ts: &'a str,
    pub prompt: &'a str,
    pub original: &'a str,
    pub corrected: &'a str,
    pub orig_id: Option<&'a str>,
    pub orig_req: Option<&'a str>,
    pub example_id: Option<&'a str>,
}

impl Corr<'_> {
    pub fn line(&self) -> String {
        serde_json::to_string(&CorrectionRecord {
            id: self.id.into(),
            timestamp: self.ts.into(),
            source: "user_correction".into(),
            original_prompt: self.prompt.into(),
            original_response: self.original.into(),
            corrected_response: self.corrected.into(),
            correction_reason: Some("wrong".into()),
            corrector: "user".into(),
            quality: CorrectionQuality::default(),
            tags: vec![],
            include_in_training: true,
            original_example_id: self.orig_id.map(String::from),
            original_request_id: self.orig_req.map(String::from),
            example_id: self.example_id.map(String::from),
        })
        .unwrap()
    }
}

fn write(path: &Path, lines: &[String], torn_tail: Option<&str>) {
    let mut f = fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    if let Some(t) = torn_tail {
        write!(f, "{t}").unwrap();
    }
}

/// Inputs of one example segment (`lines`) and one corrections segment holding `corr`.
fn examples_and_a_correction(d: &Path, lines: &[String], corr: &Corr<'_>) -> ExportInputs {
    let seg = d.join("examples_1.jsonl");
    write(&seg, lines, None);
    let corrections = d.join("corrections_1.jsonl");
    write(&corrections, &[corr.line()], None);
    ExportInputs {
        examples: vec![seg],
        corrections: vec![corrections],
        ..Default::default()
    }
}

const P_CORR: &str = "What is the fastener spacing for TPO in the corner zone?";
const R_WRONG: &str = "Twelve inches on center everywhere, corners included.";
const R_RIGHT: &str = "Six inches on center in corners, per the manufacturer's wind uplift table.";
const P_PLAIN_CORR: &str = "How long does EPDM adhesive need to flash off before mating?";
const R_PLAIN_WRONG: &str = "No flash off time is needed, mate immediately.";
const R_PLAIN_RIGHT: &str = "Until it is dry to the touch, usually 10 to 20 minutes.";
const NEAR_A: &str = "For a flat roof of fifty by forty feet with a parapet on three sides, two drains and one scupper, how many squares of sixty mil TPO do I need including waste for the parapet flashing details?";
const NEAR_B: &str = "For a flat roof of fifty by forty feet with a parapet on three sides, two drains and one scupper, how many squares of sixty mil TPO do I need including waste for the parapet flashing details, please?";
// Long enough that the pair is clearly near (Jaccard of their 5-word shingles 0.94, caught
// with probability 0.9994 at the default threshold; with only the first sentence it was
// 0.85, caught with probability 0.86, which made the case depend on the hash seeds).
const NEAR_RESP: &str = "About twenty squares of field membrane plus roughly three squares for parapet walls and flashing details, so order twenty four squares. Measure the parapet height first: walls under eighteen inches take one roll width of flashing, taller walls need a second piece and more termination bar. Add the drain and scupper boots, inside and outside corners, and a roll of seam tape for the field seams before you place the order with the distributor. Keep the rolls dry and off the deck until the day they go down, and plan the seams so that water runs over them toward the drains rather than against the laps.";

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub inputs: ExportInputs,
}

/// Planted cases; see each line's comment.
pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut e1 = vec![
        // Plain good examples.
        Ex::new("train_a", "2026-11-01T10:00:00Z", "How many squares in a 40 by 50 roof?", "Twenty squares, since a square is 100 sq ft.").line(),
        Ex::new("train_b", "2026-11-01T10:01:00Z", "What is the minimum slope for a TPO roof?", "A quarter inch per foot is the usual minimum.").line(),
        // Exact duplicates by normalized prompt: c2 has positive feedback (feedback file) and wins
        // over c1's higher auto_score.
        Ex { score: 0.9, ..Ex::new("train_c1", "2026-11-01T10:02:00Z", "Do I need a vapor retarder over a concrete deck?", "Usually not, unless the building is humid inside.") }.line(),
        Ex { score: 0.3, ..Ex::new("train_c2", "2026-11-01T10:03:00Z", "  do I need a VAPOR retarder over a concrete deck? ", "Yes when interior humidity is high; check the dew point calculation.") }.line(),
        // Near duplicates: the higher auto_score (d2) wins.
        Ex { score: 0.4, ..Ex::new("train_d1", "2026-11-01T10:04:00Z", NEAR_A, NEAR_RESP) }.line(),
        Ex { score: 0.8, ..Ex::new("train_d2", "2026-11-01T10:05:00Z", NEAR_B, NEAR_RESP) }.line(),
        // Corrected via request id.
        Ex { request_id: Some("req-orig"), ..Ex::new("train_orig", "2026-11-01T10:06:00Z", P_CORR, R_WRONG) }.line(),
        Ex { source: "verified_correction", ..Ex::new("train_vc", "2026-11-01T12:00:00Z", P_CORR, R_RIGHT) }.line(),
        // Corrected via normalized prompt + response only (the correction differs in case/space).
        Ex::new("train_plain", "2026-11-01T10:07:00Z", P_PLAIN_CORR, R_PLAIN_WRONG).line(),
        // Negative feedback that arrives before the example's timestamp (by id) and after it (by
        // request id).
        Ex::new("train_neg_before", "2026-11-01T10:08:00Z", "Can I install TPO over wet insulation?", "Sure, moisture does not matter for TPO at all.").line(),
        Ex { request_id: Some("req-neg-after"), ..Ex::new("train_neg_after", "2026-11-01T10:09:00Z", "Is fall protection optional under six feet?", "It is always optional for roofers at any height.") }.line(),
        // Positive then negative later: dropped. Negative then positive later: kept.
        Ex::new("train_flip_neg", "2026-11-01T10:10:00Z", "What R-value does 2 inch polyiso give?", "About R-11.4 for two inches of polyiso board.").line(),
        Ex::new("train_flip_pos", "2026-11-01T10:11:00Z", "What R-value does 3 inch polyiso give?", "About R-17 for three inches of polyiso board.").line(),
        // Negative feedback applied inside the example.
        Ex { feedback: Some(Feedback::Negative), ..Ex::new("train_inneg", "2026-11-01T10:12:00Z", "Can I use roofing tar on a PVC membrane?", "Yes, tar works great on PVC membranes.") }.line(),
        // PII.
        Ex { user: Some("jdoe42"), ..Ex::new("train_pii", "2026-11-01T10:13:00Z", "Email the bid to jane.doe@example.com or call (555) 123-4567 - I am jdoe42", "Sent to jane.doe@example.com; the office number is +44 20 7946 0958 and 555-987-6543.") }.line(),
        // Filters.
        Ex { rel: Relevance::Low, ..Ex::new("train_low", "2026-11-01T10:14:00Z", "What is the capital of France today?", "Paris is the capital city of France.") }.line(),
        Ex::new("train_shortp", "2026-11-01T10:15:00Z", "TPO?", "Thermoplastic polyolefin single-ply membrane.").line(),
        Ex::new("train_shortr", "2026-11-01T10:16:00Z", "What does EPDM stand for?", "Rubber.").line(),
        Ex { include: false, ..Ex::new("train_excl", "2026-11-01T10:17:00Z", "Internal test prompt for the pipeline", "Internal test response, not for training.") }.line(),
        "this is not json".to_string(),
    ];
    // Many distinct prompts so the validation split has something on both sides.
    let many: Vec<String> = (0..40)
        .map(|i| {
            Ex::new(
                Box::leak(format!("train_m{i:02}").into_boxed_str()),
                "2026-11-02T09:00:00Z",
                Box::leak(
                    format!("Question number {i} about coping details on parapet {i}?")
                        .into_boxed_str(),
                ),
                Box::leak(
                    format!("Answer {i}: use a continuous cleat and a {i} inch coping cap.")
                        .into_boxed_str(),
                ),
            )
            .line()
        })
        .collect();
    e1.extend(many);
    write(&d.join("examples_20261101_0001.jsonl"), &e1, None);
    let torn = Ex::new(
        "train_torn",
        "2026-11-03T00:00:00Z",
        "This torn line must never be read by export",
        "Because the writer has not finished it yet.",
    )
    .line();
    write(
        &d.join("examples_20261103_0002.jsonl.open"),
        &[
            // A replay of train_a.
            Ex::new(
                "train_a",
                "2026-11-01T10:00:00Z",
                "How many squares in a 40 by 50 roof?",
                "Twenty squares, since a square is 100 sq ft.",
            )
            .line(),
            Ex::new(
                "train_late",
                "2026-11-03T00:00:00Z",
                "What is a cricket on a roof used for?",
                "It diverts water around a curb or chimney toward drains.",
            )
            .line(),
        ],
        Some(&torn),
    );
    write(
        &d.join("feedback_20261101_0001.jsonl"),
        &[
            fb(
                "f1",
                "2026-11-01T09:00:00Z",
                "train_neg_before",
                Feedback::Negative,
            ),
            fb(
                "f2",
                "2026-11-01T11:00:00Z",
                "req-neg-after",
                Feedback::Negative,
            ),
            fb("f3", "2026-11-01T11:00:00Z", "train_c2", Feedback::Positive),
            fb(
                "f4",
                "2026-11-01T11:00:00Z",
                "train_flip_neg",
                Feedback::Positive,
            ),
            fb(
                "f5",
                "2026-11-01T11:30:00Z",
                "train_flip_neg",
                Feedback::Negative,
            ),
            fb(
                "f6",
                "2026-11-01T11:30:00Z",
                "train_flip_pos",
                Feedback::Positive,
            ),
            fb(
                "f7",
                "2026-11-01T11:00:00Z",
                "train_flip_pos",
                Feedback::Negative,
            ),
            fb("f8", "2026-11-01T11:00:00Z", "nobody", Feedback::Negative),
        ],
        None,
    );
    write(
        &d.join("corrections_20261101_0001.jsonl"),
        &[
            Corr {
                id: "corr_1",
                ts: "2026-11-01T12:00:00Z",
                prompt: P_CORR,
                original: R_WRONG,
                corrected: R_RIGHT,
                orig_id: None,
                orig_req: Some("req-orig"),
                example_id: Some("train_vc"),
            }
            .line(),
            Corr {
                id: "corr_2",
                ts: "2026-11-01T12:01:00Z",
                prompt: &P_PLAIN_CORR.to_uppercase(),
                original: &format!("  {}  ", R_PLAIN_WRONG.replace(' ', "   ")),
                corrected: R_PLAIN_RIGHT,
                orig_id: None,
                orig_req: None,
                example_id: None,
            }
            .line(),
        ],
        None,
    );
    let inputs = ExportInputs {
        examples: vec![
            d.join("examples_20261101_0001.jsonl"),
            d.join("examples_20261103_0002.jsonl.open"),
        ],
        feedback: vec![d.join("feedback_20261101_0001.jsonl")],
        corrections: vec![d.join("corrections_20261101_0001.jsonl")],
    };
    Fixture { dir, inputs }
}

fn opts(f: &Fixture, format: Format) -> ExportOptions {
    ExportOptions {
        format,
        temp_dir: f.dir.path().join("tmp"),
        config_digest: "digest-1".into(),
        pseudonym_key: b"secret".to_vec(),
        pii_patterns: vec![regex::Regex::new(r"cricket").unwrap()],
        ..Default::default()
    }
}

/// Runs with a tiny spill budget so every sorter goes through disk runs.
fn run_export(f: &Fixture, o: &ExportOptions, name: &str) -> (ExportReport, Vec<Value>) {
    let out = f.dir.path().join(name);
    let rep = run(&f.inputs, o, &out, 512).unwrap();
    let lines = read_lines(&out);
    (rep, lines)
}

fn read_lines(p: &Path) -> Vec<Value> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn texts(lines: &[Value]) -> String {
    serde_json::to_string(lines).unwrap()
}

/// Runs an export (with a tiny spill budget) into `out`; returns its report, the values of
/// `field` in its lines (train and validation), sorted, and its manifest.
fn export_field(
    inputs: &ExportInputs,
    o: &ExportOptions,
    out: &Path,
    field: &str,
) -> (ExportReport, Vec<String>, Value) {
    let rep = run(inputs, o, out, 512).unwrap();
    let mut lines = read_lines(out);
    if let Some(v) = &rep.validation_path {
        lines.extend(read_lines(Path::new(v)));
    }
    let mut got: Vec<String> = lines
        .iter()
        .map(|v| v[field].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let m = serde_json::from_str(&fs::read_to_string(&rep.manifest_path).unwrap()).unwrap();
    (rep, got, m)
}

#[test]
fn export_prompt_response_planted_cases() {
    let f = fixture();
    let (rep, lines) = run_export(&f, &opts(&f, Format::PromptResponse), "pr.jsonl");
    let all = texts(&lines);
    let prompts: Vec<&str> = lines
        .iter()
        .map(|l| l["prompt"].as_str().unwrap())
        .collect();
    let count = |p: &str| {
        prompts
            .iter()
            .filter(|x| x.to_lowercase().contains(&p.to_lowercase()))
            .count()
    };
    // Replay dropped, torn line ignored.
    assert_eq!(count("40 by 50 roof"), 1);
    assert!(!all.contains("torn line"));
    assert_eq!(rep.dropped["duplicate_id"], 1);
    // Exact dup: positive feedback beats a higher score.
    assert_eq!(count("vapor retarder"), 1);
    assert!(all.contains("dew point"));
    // Near dup: higher score wins.
    assert_eq!(count("fifty by forty"), 1);
    assert!(all.contains("details, please?"));
    // Corrections: the corrected answer, never the original.
    assert!(!all.contains(R_WRONG) && !all.contains(R_PLAIN_WRONG));
    assert!(all.contains(R_RIGHT) && all.contains(R_PLAIN_RIGHT));
    assert_eq!(count("corner zone"), 1);
    // Negative feedback, before or after the example, by id, request id or inside it.
    for bad in [
        "wet insulation",
        "fall protection",
        "2 inch polyiso",
        "tar on a pvc",
    ] {
        assert_eq!(count(bad), 0, "{bad}");
    }
    assert_eq!(
        count("3 inch polyiso"),
        1,
        "latest (positive) feedback wins"
    );
    // PII.
    assert!(!all.contains("jane.doe") && !all.contains("4567") && !all.contains("0958"));
    assert!(!all.contains("6543") && !all.contains("jdoe42") && !all.contains("cricket"));
    assert!(all.contains("[EMAIL]") && all.contains("[PHONE]") && all.contains("[USER_"));
    assert!(all.contains("[REDACTED]"));
    // Filters.
    for gone in ["capital of France", "TPO?", "EPDM stand", "Internal test"] {
        assert_eq!(count(gone), 0, "{gone}");
    }
    for reason in [
        "negative_feedback",
        "corrected_original",
        "low_relevance",
        "short_prompt",
        "short_response",
        "not_included",
        "exact_duplicate",
        "near_duplicate",
        "unreadable_line",
    ] {
        assert!(
            rep.dropped.get(reason).copied().unwrap_or(0) > 0,
            "{reason}: {:?}",
            rep.dropped
        );
    }
    assert_eq!(rep.dropped["negative_feedback"], 4);
    assert_eq!(rep.dropped["corrected_original"], 2);
    // Accounting: every raw record is written or dropped exactly once.
    let dropped: u64 = rep.dropped.values().sum();
    assert_eq!(rep.total_raw, rep.after_filtering + dropped);
    assert_eq!(rep.after_filtering as usize, lines.len());
    // Output order: timestamp then id, so the latest example (with a redacted word) is last.
    assert!(lines.last().unwrap()["prompt"]
        .as_str()
        .unwrap()
        .contains("[REDACTED]"));
    for l in &lines {
        assert_eq!(l.as_object().unwrap().len(), 2);
        assert!(l["prompt"].is_string() && l["response"].is_string());
    }
    // Manifest.
    let m: Value = serde_json::from_str(&fs::read_to_string(&rep.manifest_path).unwrap()).unwrap();
    assert_eq!(m["config_digest"], "digest-1");
    assert_eq!(m["format"], "prompt-response");
    assert_eq!(m["output"]["sha256"], rep.output_sha256.as_str());
    assert_eq!(m["inputs"].as_array().unwrap().len(), 4);
    assert_eq!(m["inputs"][1]["torn_tail_skipped"], true);
    assert_eq!(m["dropped"]["duplicate_id"], 1);
    assert!(rep.manifest_path.ends_with("pr.jsonl.manifest.json"));
    // Spill files are gone.
    assert_eq!(fs::read_dir(f.dir.path().join("tmp")).unwrap().count(), 0);
}

/// What one output line says, read back by its format's schema (exact keys, every message
/// `{"role","content"}`, roles in order); panics on a line that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LineContent {
    system: Option<String>,
    prompt: String,
    answer: String,
    rejected: Option<String>,
    label: Option<bool>,
}

fn line_content(format: Format, l: &Value) -> LineContent {
    let obj = l.as_object().unwrap();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let text = |v: &Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("{format}: {l}"))
            .to_string()
    };
    let message = |m: &Value, role: &str| {
        let m = m.as_object().unwrap();
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["role", "content"],
            "{format}: {l}"
        );
        assert_eq!(m["role"], role, "{format}: {l}");
        text(&m["content"])
    };
    // A conversation: an optional system message and the user's.
    let asked = |v: &Value| -> (Option<String>, String) {
        match v.as_array().unwrap().as_slice() {
            [u] => (None, message(u, "user")),
            [s, u] => (Some(message(s, "system")), message(u, "user")),
            other => panic!("{format}: {other:?}"),
        }
    };
    let reply = |v: &Value| match v.as_array().unwrap().as_slice() {
        [a] => message(a, "assistant"),
        other => panic!("{format}: {other:?}"),
    };
    let plain = |prompt: &str, answer: &str| LineContent {
        system: None,
        prompt: text(&obj[prompt]),
        answer: text(&obj[answer]),
        rejected: None,
        label: None,
    };
    let want_keys: &[&str] = match format {
        Format::PromptResponse => &["prompt", "response"],
        Format::PromptCompletion | Format::PromptCompletionMessages => &["prompt", "completion"],
        Format::Alpaca => &["instruction", "input", "output"],
        Format::Messages => &["messages"],
        Format::Dpo | Format::DpoMessages => &["prompt", "chosen", "rejected"],
        Format::OpenaiDpo => &["input", "preferred_output", "non_preferred_output"],
        Format::Kto | Format::KtoMessages => &["prompt", "completion", "label"],
    };
    assert_eq!(keys, want_keys, "{format}: {l}");
    match format {
        Format::PromptResponse => plain("prompt", "response"),
        Format::PromptCompletion => plain("prompt", "completion"),
        Format::PromptCompletionMessages => {
            let (system, prompt) = asked(&obj["prompt"]);
            let answer = reply(&obj["completion"]);
            LineContent {
                system,
                prompt,
                answer,
                rejected: None,
                label: None,
            }
        }
        Format::Alpaca => {
            assert_eq!(obj["input"], "", "{l}");
            plain("instruction", "output")
        }
        Format::Messages => {
            let m = obj["messages"].as_array().unwrap();
            let (last, asked_part) = m.split_last().unwrap();
            let (system, prompt) = asked(&Value::Array(asked_part.to_vec()));
            let answer = message(last, "assistant");
            LineContent {
                system,
                prompt,
                answer,
                rejected: None,
                label: None,
            }
        }
        Format::Dpo => LineContent {
            rejected: Some(text(&obj["rejected"])),
            ..plain("prompt", "chosen")
        },
        Format::DpoMessages => {
            let (system, prompt) = asked(&obj["prompt"]);
            let (answer, rejected) = (reply(&obj["chosen"]), Some(reply(&obj["rejected"])));
            LineContent {
                system,
                prompt,
                answer,
                rejected,
                label: None,
            }
        }
        Format::OpenaiDpo => {
            let input = obj["input"].as_object().unwrap();
            assert_eq!(input.keys().collect::<Vec<_>>(), ["messages"], "{l}");
            let (system, prompt) = asked(&input["messages"]);
            let answer = reply(&obj["preferred_output"]);
            let rejected = Some(reply(&obj["non_preferred_output"]));
            LineContent {
                system,
                prompt,
                answer,
                rejected,
                label: None,
            }
        }
        Format::Kto => LineContent {
            label: Some(obj["label"].as_bool().unwrap()),
            ..plain("prompt", "completion")
        },
        Format::KtoMessages => {
            let (system, prompt) = asked(&obj["prompt"]);
            let answer = reply(&obj["completion"]);
            let label = Some(obj["label"].as_bool().unwrap());
            LineContent {
                system,
                prompt,
                answer,
                rejected: None,
                label,
            }
        }
    }
}

#[test]
fn export_every_format_parses_into_its_schema_and_has_no_pii() {
    let f = fixture();
    for format in Format::ALL {
        let mut o = opts(&f, format);
        o.system_prompt = Some("You are a roofing assistant.".into());
        let (rep, lines) = run_export(&f, &o, &format!("{format}.jsonl"));
        assert_eq!(rep.format, format);
        let all = texts(&lines);
        assert!(
            !all.contains("jane.doe") && !all.contains("4567") && !all.contains("0958"),
            "{format}"
        );
        assert!(!lines.is_empty(), "{format}");
        for l in &lines {
            let c = line_content(format, l);
            let conversational = matches!(
                format,
                Format::Messages
                    | Format::PromptCompletionMessages
                    | Format::DpoMessages
                    | Format::OpenaiDpo
                    | Format::KtoMessages
            );
            let want_system = conversational.then(|| "You are a roofing assistant.".to_string());
            assert_eq!(c.system, want_system, "{format}: {l}");
        }
        if format.is_sft() {
            assert!(!all.contains(R_WRONG) && !all.contains("moisture does not matter"));
        }
    }
}

/// Formats of one kind differ only in shape: each writes exactly the lines (prompt, answers,
/// label) its kind's plain format writes, in the same order, to the same split.
#[test]
fn export_formats_of_one_kind_hold_the_same_lines() {
    let f = fixture();
    let content = |format: Format, name: &str| {
        let mut o = opts(&f, format);
        o.val_fraction = 0.5;
        let (rep, lines) = run_export(&f, &o, name);
        let val = read_lines(rep.validation_path.as_deref().map(Path::new).unwrap());
        let read = |ls: &[Value]| -> Vec<LineContent> {
            ls.iter().map(|l| line_content(format, l)).collect()
        };
        (read(&lines), read(&val), rep.dropped)
    };
    for format in Format::ALL {
        let base = match format.kind() {
            Kind::Sft => Format::PromptResponse,
            Kind::Preference => Format::Dpo,
            Kind::Binary => Format::Kto,
        };
        let (train, val, dropped) = content(format, &format!("{format}.jsonl"));
        let (want_train, want_val, want_dropped) = content(base, &format!("base-{format}.jsonl"));
        assert!(train.len() + val.len() >= 2, "{format}");
        // The split is compared on both sides (the fixture's two DPO pairs fall on one).
        assert!(format.kind() == Kind::Preference || !val.is_empty() && !train.is_empty());
        assert_eq!(train, want_train, "{format}");
        assert_eq!(val, want_val, "{format}");
        assert_eq!(dropped, want_dropped, "{format}");
    }
}

#[test]
fn export_dpo_pairs_come_from_corrections() {
    let f = fixture();
    let (rep, lines) = run_export(&f, &opts(&f, Format::Dpo), "dpo.jsonl");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let l = lines.iter().find(|l| l["prompt"] == P_CORR).unwrap();
    assert_eq!(l["chosen"], R_RIGHT);
    assert_eq!(l["rejected"], R_WRONG);
    assert!(rep.dropped["not_a_preference_pair"] > 0);
}

#[test]
fn export_kto_labels() {
    let f = fixture();
    let (rep, lines) = run_export(&f, &opts(&f, Format::Kto), "kto.jsonl");
    let label_of = |needle: &str| -> Vec<bool> {
        lines
            .iter()
            .filter(|l| l["completion"].as_str().unwrap().contains(needle))
            .map(|l| l["label"].as_bool().unwrap())
            .collect()
    };
    assert_eq!(label_of("moisture does not matter"), [false]);
    assert_eq!(label_of("always optional"), [false]);
    assert_eq!(label_of("tar works great"), [false]);
    assert_eq!(label_of("R-11.4"), [false]);
    assert_eq!(label_of("R-17"), [true]);
    assert_eq!(label_of(R_WRONG), [false]);
    assert_eq!(label_of(R_RIGHT), [true]);
    assert_eq!(label_of("dew point"), [true]);
    assert!(
        label_of("coping cap").is_empty(),
        "unlabeled examples are left out"
    );
    let labels = rep.labels.unwrap();
    assert!(labels.desirable > 0 && labels.undesirable > 0);
    assert_eq!(labels.desirable + labels.undesirable, rep.after_filtering);
    assert!(rep.dropped["unlabeled"] > 0);
}

#[test]
fn export_is_byte_identical_and_splits_by_prompt() {
    let f = fixture();
    let mut o = opts(&f, Format::Messages);
    o.val_fraction = 0.3;
    let (r1, _) = run_export(&f, &o, "one.jsonl");
    let (r2, _) = run_export(&f, &o, "two.jsonl");
    assert_eq!(
        fs::read(&r1.output_path).unwrap(),
        fs::read(&r2.output_path).unwrap()
    );
    let v1 = r1.validation_path.clone().unwrap();
    assert!(v1.ends_with("one.val.jsonl"));
    assert_eq!(
        fs::read(&v1).unwrap(),
        fs::read(r2.validation_path.unwrap()).unwrap()
    );
    // The in-memory path (no spill) gives the same bytes as the spilled one.
    let out3 = f.dir.path().join("three.jsonl");
    let r3 = export(&f.inputs, &o, &out3).unwrap();
    assert_eq!(r3.output_sha256, r1.output_sha256);
    assert!(r1.validation_count > 0 && r1.train_count > 0);
    assert_eq!(r1.after_filtering, r1.train_count + r1.validation_count);
    let user = |p: &str| -> Vec<String> {
        read_lines(Path::new(p))
            .iter()
            .map(|l| dedup::normalize(l["messages"][1]["content"].as_str().unwrap()))
            .collect()
    };
    let train = user(&r1.output_path);
    let val = user(&v1);
    assert!(train.iter().all(|p| !val.contains(p)));
}

/// `--ids`: beside each output file, line N of `<stem>.ids.txt` is the id of the record line
/// N was made from (its prompt, scrubbed as export scrubs it, is the line's prompt); the
/// output itself is the same as without it, and the manifest lists the ids files.
#[test]
fn export_ids_files_name_the_record_of_each_line() {
    let f = fixture();
    // Every record's prompt and user, by id: examples and corrections.
    let mut records: std::collections::HashMap<String, (String, Option<String>)> =
        Default::default();
    for path in f.inputs.examples.iter().chain(&f.inputs.corrections) {
        for line in fs::read_to_string(path).unwrap().lines() {
            // (A torn last line of an open segment is not a record.)
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let prompt = v.get("prompt").or_else(|| v.get("original_prompt"));
            let user = v["metadata"]["user_id"].as_str().map(String::from);
            if let (Some(id), Some(prompt)) = (v["id"].as_str(), prompt.and_then(Value::as_str)) {
                records.insert(id.into(), (prompt.into(), user));
            }
        }
    }
    for format in [Format::PromptResponse, Format::Dpo] {
        let mut o = opts(&f, format);
        o.val_fraction = 0.3;
        let (plain, _) = run_export(&f, &o, &format!("plain-{format}.jsonl"));
        assert_eq!(plain.ids_path, None);
        o.ids_file = true;
        let (rep, _) = run_export(&f, &o, &format!("ids-{format}.jsonl"));
        assert_eq!(rep.output_sha256, plain.output_sha256, "{format}");
        let scrubber = pii::Scrubber::new(&o.pii_patterns, &o.pseudonym_key);
        let outputs = [Some(rep.output_path.clone()), rep.validation_path.clone()];
        let mut lines_seen = 0;
        for out in outputs.iter().flatten() {
            let out = Path::new(out);
            let ids = fs::read_to_string(split::ids_path(out)).unwrap();
            let ids: Vec<&str> = ids.lines().collect();
            let lines = read_lines(out);
            assert_eq!(ids.len(), lines.len(), "{format} {}", out.display());
            for (id, line) in ids.iter().zip(&lines) {
                let (prompt, user) = records
                    .get(*id)
                    .unwrap_or_else(|| panic!("{format}: {id} names no record"));
                assert_eq!(
                    line["prompt"],
                    scrubber.scrub(prompt, user.as_deref()),
                    "{format}: {id}"
                );
            }
            lines_seen += lines.len();
        }
        assert_eq!(lines_seen as u64, rep.after_filtering);
        assert!(
            lines_seen > 0 && rep.validation_count > 0,
            "{format}: {rep:?}"
        );
        let ids_path = split::ids_path(Path::new(&rep.output_path));
        assert_eq!(rep.ids_path.as_deref(), ids_path.to_str());
        let manifest: Value = serde_json::from_str(
            &fs::read_to_string(manifest::manifest_path(Path::new(&rep.output_path))).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["output_ids"]["lines"], rep.train_count);
        assert_eq!(manifest["validation_ids"]["lines"], rep.validation_count);
    }
}

#[test]
fn export_kto_split_keeps_a_prompt_in_one_file() {
    let f = fixture();
    let mut o = opts(&f, Format::Kto);
    o.val_fraction = 0.5;
    let (r, _) = run_export(&f, &o, "k.jsonl");
    let prompts = |p: &str| -> Vec<String> {
        read_lines(Path::new(p))
            .iter()
            .map(|l| dedup::normalize(l["prompt"].as_str().unwrap()))
            .collect()
    };
    let train = prompts(&r.output_path);
    let val = prompts(&r.validation_path.unwrap());
    assert!(train.iter().all(|p| !val.contains(p)));
}

#[test]
fn export_without_corrections() {
    let f = fixture();
    let mut o = opts(&f, Format::PromptResponse);
    o.include_corrections = false;
    let (rep, lines) = run_export(&f, &o, "nc.jsonl");
    let all = texts(&lines);
    assert!(!all.contains(R_RIGHT) && !all.contains(R_PLAIN_RIGHT));
    assert!(!all.contains(R_WRONG), "a corrected original stays out");
    assert_eq!(rep.dropped["correction_excluded"], 1);
    let dropped: u64 = rep.dropped.values().sum();
    assert_eq!(rep.total_raw, rep.after_filtering + dropped);
    o.format = Format::Dpo;
    let (_, lines) = run_export(&f, &o, "nc-dpo.jsonl");
    assert!(lines.is_empty());
}

#[test]
fn export_quality_threshold() {
    let f = fixture();
    let mut o = opts(&f, Format::PromptResponse);
    o.min_quality = Relevance::Low;
    let (_, lines) = run_export(&f, &o, "low.jsonl");
    assert!(texts(&lines).contains("capital of France"));
}

#[test]
fn export_rejects_bad_options_and_missing_inputs() {
    let f = fixture();
    let mut o = opts(&f, Format::PromptResponse);
    o.val_fraction = 1.0;
    assert!(matches!(
        export(&f.inputs, &o, &f.dir.path().join("x.jsonl")),
        Err(ExportError::InvalidOption(_))
    ));
    let o = opts(&f, Format::PromptResponse);
    let inputs = ExportInputs {
        examples: vec![f.dir.path().join("missing.jsonl")],
        ..Default::default()
    };
    assert!(matches!(
        export(&inputs, &o, &f.dir.path().join("x.jsonl")),
        Err(ExportError::Input { .. })
    ));
    assert!(!f.dir.path().join("x.jsonl").exists());
}

/// Writes `n` generated examples (1% replays, 2% with feedback, 0.5% corrected) in segments of
/// 10,000, with realistic lengths and many near-identical templated prompts.
pub(crate) fn generate(dir: &Path, n: usize) -> ExportInputs {
    let words = [
        "tpo",
        "epdm",
        "membrane",
        "flashing",
        "parapet",
        "drain",
        "scupper",
        "polyiso",
        "crew",
        "squares",
        "fastener",
        "seam",
        "primer",
        "coping",
        "curb",
        "deck",
        "insulation",
        "slope",
    ];
    let mut inputs = ExportInputs::default();
    let mut fbw = Vec::new();
    let mut corr = Vec::new();
    let mut seg: Option<std::io::BufWriter<fs::File>> = None;
    for i in 0..n {
        if i % 10_000 == 0 {
            let p = dir.join(format!("examples_{:04}.jsonl", i / 10_000));
            seg = Some(std::io::BufWriter::new(fs::File::create(&p).unwrap()));
            inputs.examples.push(p);
        }
        let w = |k: usize| words[(i * 7 + k * 13 + i / 3) % words.len()];
        let prompt = format!(
            "Question {i}: how should the {} be detailed at the {} next to the {} on a {} job with {} existing {}?",
            w(1), w(2), w(3), w(4), i % 97, w(5)
        );
        let response = format!(
            "For job {i}, install the {} first, then the {} and {}; keep the {} lapped {} inches and prime the {} before the {} goes down. Call 555-010-{:04} with questions.",
            w(6), w(7), w(8), w(9), i % 12 + 2, w(10), w(11), i % 10_000
        );
        let id = format!("train_gen_{i:08}");
        let ts = format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60);
        let mut ex = Ex::new(&id, &ts, &prompt, &response);
        ex.score = (i % 100) as f64 / 100.0;
        ex.rel = [Relevance::High, Relevance::Medium, Relevance::Low][i % 3];
        let line = ex.line();
        let s = seg.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        if i % 100 == 0 {
            writeln!(s, "{line}").unwrap();
        }
        if i % 50 == 0 {
            let f = if i % 100 == 0 {
                Feedback::Positive
            } else {
                Feedback::Negative
            };
            fbw.push(fb(&format!("fb{i}"), "2026-12-01T00:00:00Z", &id, f));
        }
        if i % 200 == 0 {
            corr.push(
                Corr {
                    id: &format!("corr{i}"),
                    ts: &ts,
                    prompt: &prompt,
                    original: &response,
                    corrected: &format!("{response} Corrected."),
                    orig_id: Some(&id),
                    orig_req: None,
                    example_id: None,
                }
                .line(),
            );
        }
    }
    drop(seg);
    let fp = dir.join("feedback_0001.jsonl");
    write(&fp, &fbw, None);
    let cp = dir.join("corrections_0001.jsonl");
    write(&cp, &corr, None);
    inputs.feedback.push(fp);
    inputs.corrections.push(cp);
    inputs
}

/// Sanity check of speed and memory on generated data; run with
/// `EXPORT_N=100000 cargo test --release --lib export_generated -- --ignored --nocapture`
/// under `/usr/bin/time -v` for the peak RSS.
#[test]
#[ignore]
fn export_generated_at_scale() {
    let n: usize = std::env::var("EXPORT_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    // EXPORT_GEN_DIR: generate there and keep the files (to time the CLI on them).
    let gen_dir = std::env::var_os("EXPORT_GEN_DIR").map(PathBuf::from);
    let t0 = std::time::Instant::now();
    let inputs = generate(gen_dir.as_deref().unwrap_or(dir.path()), n);
    eprintln!("generated {n} in {:?}", t0.elapsed());
    let o = ExportOptions {
        temp_dir: dir.path().join("tmp"),
        val_fraction: 0.1,
        ..Default::default()
    };
    let t1 = std::time::Instant::now();
    let rep = export(&inputs, &o, &dir.path().join("out.jsonl")).unwrap();
    eprintln!(
        "exported in {:?}: {}",
        t1.elapsed(),
        serde_json::to_string(&rep).unwrap()
    );
    let t2 = std::time::Instant::now();
    let st = crate::stats::collect(&inputs, &[]).unwrap();
    eprintln!(
        "stats in {:?}: {} examples",
        t2.elapsed(),
        st.total_examples
    );
    assert_eq!(st.total_examples, n as u64);
}

/// The manifest's SHA-256 of each output file is the digest of the file's bytes, over many
/// batches (the digests are computed on a thread of their own, beside the writes).
#[test]
fn export_manifest_digests_are_those_of_the_files_written() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let inputs = generate(dir.path(), 4000);
    let o = ExportOptions {
        temp_dir: dir.path().join("tmp"),
        val_fraction: 0.2,
        ids_file: true,
        // A long system prompt in every line makes megabytes of a few thousand examples.
        format: Format::Messages,
        system_prompt: Some("Answer as a careful roofing estimator. ".repeat(60)),
        ..Default::default()
    };
    let rep = export(&inputs, &o, &dir.path().join("out.jsonl")).unwrap();
    let m: Value = serde_json::from_str(&fs::read_to_string(&rep.manifest_path).unwrap()).unwrap();
    let digest = |p: &str| pii::hex(&Sha256::digest(fs::read(p).unwrap()));
    let train = fs::read(&rep.output_path).unwrap();
    // Several of the renderer's 1 MiB batches, in both files.
    assert!(train.len() > 3 << 20, "{} bytes", train.len());
    assert_eq!(rep.output_sha256, digest(&rep.output_path));
    for key in ["output", "validation", "output_ids", "validation_ids"] {
        let f = &m[key];
        let path = f["path"].as_str().unwrap_or_else(|| panic!("{key}: {m}"));
        assert_eq!(f["sha256"], Value::from(digest(path)), "{key}");
        let lines = fs::read(path)
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        assert_eq!(f["lines"], Value::from(lines), "{key}");
    }
    assert!(
        rep.validation_count > 200 && rep.train_count > 1000,
        "{rep:?}"
    );
}

#[test]
fn export_feedback_ties_by_file_order_and_id_linked_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut was_corrected: Value = serde_json::from_str(
        &Ex::new(
            "train_wc",
            "2026-11-01T10:03:00Z",
            "Was this one corrected while buffered?",
            "Yes, the daemon marked it as corrected.",
        )
        .line(),
    )
    .unwrap();
    was_corrected["quality"]["was_corrected"] = Value::Bool(true);
    write(
        &d.join("examples_1.jsonl"),
        &[
            Ex::new(
                "train_tie_neg",
                "2026-11-01T10:00:00Z",
                "Tie one: which feedback wins here?",
                "The one in the later feedback file wins.",
            )
            .line(),
            Ex::new(
                "train_tie_pos",
                "2026-11-01T10:01:00Z",
                "Tie two: which feedback wins here?",
                "The one in the later feedback file wins.",
            )
            .line(),
            Ex::new(
                "train_byid",
                "2026-11-01T10:02:00Z",
                "Which sealant goes on pitch pans?",
                "Any caulk from the hardware store works.",
            )
            .line(),
            was_corrected.to_string(),
        ],
        None,
    );
    let ts = "2026-11-02T00:00:00Z";
    write(
        &d.join("feedback_1.jsonl"),
        &[
            fb("a1", ts, "train_tie_neg", Feedback::Positive),
            fb("a2", ts, "train_tie_pos", Feedback::Negative),
        ],
        None,
    );
    write(
        &d.join("feedback_2.jsonl"),
        &[
            fb("b1", ts, "train_tie_neg", Feedback::Negative),
            fb("b2", ts, "train_tie_pos", Feedback::Positive),
        ],
        None,
    );
    // Linked by example id only: its prompt/answer text does not match the example's.
    write(
        &d.join("corrections_1.jsonl"),
        &[Corr {
            id: "corr_x",
            ts,
            prompt: "Which sealant for pitch pockets?",
            original: "whatever",
            corrected: "A pourable sealer made for pitch pans, per the manufacturer.",
            orig_id: Some("train_byid"),
            orig_req: None,
            example_id: None,
        }
        .line()],
        None,
    );
    let inputs = ExportInputs {
        examples: vec![d.join("examples_1.jsonl")],
        feedback: vec![d.join("feedback_1.jsonl"), d.join("feedback_2.jsonl")],
        corrections: vec![d.join("corrections_1.jsonl")],
    };
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    let out = d.join("out.jsonl");
    let rep = export(&inputs, &o, &out).unwrap();
    let all = texts(&read_lines(&out));
    assert!(!all.contains("Tie one") && all.contains("Tie two"), "{all}");
    assert!(
        !all.contains("hardware store") && all.contains("pourable sealer"),
        "{all}"
    );
    assert!(!all.contains("buffered"), "{all}");
    assert_eq!(rep.dropped["corrected_original"], 2);
    assert_eq!(rep.dropped["negative_feedback"], 1);
}

#[test]
fn export_near_dedup_can_be_turned_off_and_system_prompt_is_optional() {
    let f = fixture();
    let mut o = opts(&f, Format::Messages);
    o.near_dup_threshold = 0.0;
    let (rep, lines) = run_export(&f, &o, "nonear.jsonl");
    assert!(!rep.dropped.contains_key("near_duplicate"));
    let all = texts(&lines);
    assert!(all.contains(NEAR_A) && all.contains(NEAR_B));
    for l in &lines {
        let roles: Vec<&str> = l["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant"]);
    }
}

/// Every format, on the fixture and on generated data: the spilled path (tiny budget) and the
/// in-memory path give the same bytes.
#[test]
fn export_spilled_and_in_memory_runs_are_identical_in_every_format() {
    let f = fixture();
    let gen_dir = f.dir.path().join("gen");
    fs::create_dir_all(&gen_dir).unwrap();
    let generated = generate(&gen_dir, 600);
    for inputs in [&f.inputs, &generated] {
        for format in Format::ALL {
            let mut o = opts(&f, format);
            o.val_fraction = 0.2;
            let small = f.dir.path().join(format!("small-{format}.jsonl"));
            let big = f.dir.path().join(format!("big-{format}.jsonl"));
            let a = run(inputs, &o, &small, 300).unwrap();
            let b = run(inputs, &o, &big, 1 << 30).unwrap();
            assert_eq!(a.output_sha256, b.output_sha256, "{format}");
            assert_eq!(a.dropped, b.dropped, "{format}");
            // Both absent when no line falls in validation.
            assert_eq!(
                fs::read(small.with_file_name(format!("small-{format}.val.jsonl"))).ok(),
                fs::read(big.with_file_name(format!("big-{format}.val.jsonl"))).ok(),
                "{format}"
            );
            assert_eq!(a.validation_count, b.validation_count, "{format}");
        }
    }
}

/// Texts come back from the segment whichever way they were kept: raw bytes (no escapes),
/// parsed again (escapes, including an escape serde_json would not write), or owned (scrubbed).
#[test]
fn export_texts_are_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = Ex::new(
        "train_a",
        "2026-11-01T10:00:00Z",
        "How wide is a standard roll of TPO membrane?",
        "Ten or twelve feet wide, and some makers sell sixteen foot rolls as well.",
    );
    let escaped = Ex::new(
        "train_b",
        "2026-11-01T10:01:00Z",
        "Quote: \"primer\"\nthen\ttab, café, TPO/EPDM and a back\\slash?",
        "Line one\nline two with \"quotes\" and é, which the file spells as an escape.",
    );
    let mut pii = Ex::new(
        "train_c",
        "2026-11-01T10:02:00Z",
        "Call me at (555) 123-4567 about the drains, I am jdoe42.",
        "I will mail bob@example.com and jdoe42 the drain schedule today.",
    );
    pii.user = Some("jdoe42");
    let lines = vec![
        plain.line(),
        // `\u00e9` and `\/` are valid JSON that serde_json never writes.
        escaped
            .line()
            .replace('é', "\\u00e9")
            .replace("TPO/EPDM", "TPO\\/EPDM"),
        pii.line(),
    ];
    let seg = d.join("examples_1.jsonl");
    write(&seg, &lines, None);
    let inputs = ExportInputs {
        examples: vec![seg],
        ..Default::default()
    };
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        pseudonym_key: b"k".to_vec(),
        ..Default::default()
    };
    let scrubber = pii::Scrubber::new(&[], b"k");
    for budget in [200, 1 << 30] {
        let out = d.join(format!("out-{budget}.jsonl"));
        let rep = run(&inputs, &o, &out, budget).unwrap();
        assert_eq!(rep.after_filtering, 3);
        let got = fs::read_to_string(&out).unwrap();
        let want: String = [&plain, &escaped, &pii]
            .iter()
            .map(|e| {
                let mut line = Vec::new();
                format::render_into(
                    &mut line,
                    Format::PromptResponse,
                    &format::LineParts {
                        prompt: &scrubber.scrub(e.prompt, e.user),
                        completion: &scrubber.scrub(e.response, e.user),
                        rejected: None,
                        label: None,
                    },
                    None,
                );
                String::from_utf8(line).unwrap() + "\n"
            })
            .collect();
        assert_eq!(got, want);
        assert!(!got.contains("\\/") && got.contains("[PHONE]"));
    }
}

/// `n` words that differ from other seeds' words (for near-dedup cases built to a Jaccard
/// similarity).
fn words(seed: u64, n: u64) -> String {
    (0..n)
        .map(|i| format!("w{}", (i * 7919 + seed * 104_729) % 100_003))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exports `inputs` into `d` twice: with a budget so small that everything spills, and with
/// one so large that nothing does; the report and the output of each.
fn export_spilled_and_in_memory(d: &Path, inputs: &ExportInputs) -> Vec<(ExportReport, String)> {
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    [200, 1 << 30]
        .into_iter()
        .map(|budget| {
            let out = d.join(format!("out-{budget}.jsonl"));
            let rep = run(inputs, &o, &out, budget).unwrap();
            (rep, fs::read_to_string(&out).unwrap())
        })
        .collect()
}

/// Near dedup reads every candidate's band keys back from the band store, examples' (stored
/// at read time) and corrections' (stored when the join has run) alike: a correction that
/// nearly repeats an example outranks it and the example goes as a near duplicate, spilled or
/// not.
#[test]
fn export_near_duplicate_of_a_correction_loses_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (p_near, r_near) = (words(1, 60), words(2, 140));
    let p_corr = format!("{p_near} please");
    let others: Vec<(String, String)> = (3..9)
        .map(|s| (words(s, 60), words(s + 100, 140)))
        .collect();
    let mut lines = vec![Ex::new("train_near", "2026-11-01T10:00:00Z", &p_near, &r_near).line()];
    for (i, (p, r)) in others.iter().enumerate() {
        let id = format!("train_{i}");
        lines.push(Ex::new(&id, "2026-11-01T11:00:00Z", p, r).line());
    }
    let seg = d.join("examples_1.jsonl");
    write(&seg, &lines, None);
    let corr = d.join("corrections_1.jsonl");
    let c = Corr {
        id: "corr_1",
        ts: "2026-11-01T12:00:00Z",
        prompt: &p_corr,
        original: "An answer nobody gave.",
        corrected: &r_near,
        orig_id: Some("train_missing"),
        orig_req: None,
        example_id: None,
    };
    write(&corr, &[c.line()], None);
    let inputs = ExportInputs {
        examples: vec![seg],
        corrections: vec![corr],
        ..Default::default()
    };
    for (rep, got) in export_spilled_and_in_memory(d, &inputs) {
        assert_eq!(
            rep.dropped.get("near_duplicate"),
            Some(&1),
            "{:?}",
            rep.dropped
        );
        assert_eq!(rep.after_filtering, 7);
        assert!(got.contains(&p_corr), "the correction is kept");
        assert!(
            !got.contains(&format!("{p_near}\"")),
            "the example is dropped"
        );
        for (p, _) in &others {
            assert!(got.contains(p.as_str()));
        }
    }
}

/// A line that is not UTF-8 is unreadable (counted, warned about), and the lines around it are
/// exported: the whole-line UTF-8 check falls back to serde_json's own parse for its error.
#[test]
fn export_line_with_invalid_utf8_is_unreadable_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = Ex::new(
        "train_a",
        "2026-11-01T10:00:00Z",
        "How wide is a standard roll of TPO membrane?",
        "Ten or twelve feet wide, and some makers sell sixteen foot rolls as well.",
    )
    .line();
    let other = Ex::new(
        "train_c",
        "2026-11-01T10:02:00Z",
        "How long does EPDM adhesive need to flash off before mating?",
        "Until it is dry to the touch, usually ten to twenty minutes in mild weather.",
    )
    .line();
    let mut bad = Ex::new(
        "train_b",
        "2026-11-01T10:01:00Z",
        "What is the fastener spacing for TPO in the corner zone?",
        "Six inches on center in corners, per the manufacturer's wind uplift table.",
    )
    .line()
    .into_bytes();
    let at = bad.windows(5).position(|w| w == b"inche").unwrap();
    bad[at] = 0xff;
    let mut bytes = good.into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(&bad);
    bytes.push(b'\n');
    bytes.extend_from_slice(other.as_bytes());
    bytes.push(b'\n');
    let (rep, got) = export_one_segment(d, &bytes);
    assert_eq!(rep.total_raw, 3);
    assert_eq!(rep.after_filtering, 2);
    assert_eq!(rep.dropped.get("unreadable_line"), Some(&1));
    assert!(got.contains("TPO membrane") && got.contains("EPDM adhesive"));
}

/// Exports one segment of these bytes with the default options: the report and the output.
fn export_one_segment(d: &Path, bytes: &[u8]) -> (ExportReport, String) {
    let seg = d.join("examples_1.jsonl");
    fs::write(&seg, bytes).unwrap();
    let inputs = ExportInputs {
        examples: vec![seg],
        ..Default::default()
    };
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    let out = d.join("out.jsonl");
    let rep = run(&inputs, &o, &out, 1 << 20).unwrap();
    (rep, fs::read_to_string(&out).unwrap())
}

/// Near dedup runs among the exact survivors only: a copy that exact dedup dropped does not
/// take a near duplicate of itself down with it. Y (best) and X share a prompt, X goes as
/// Y's exact duplicate; Z nearly repeats X (prompt plus a word, same long answer) but not Y
/// (another answer), and ranks below X, so it stays. Spilled or not.
#[test]
fn export_an_exact_duplicate_drops_no_near_duplicate_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (prompt, answer_y, answer_x) = (words(1, 30), words(2, 150), words(3, 150));
    let prompt_z = format!("{prompt} again");
    let mut y = Ex::new("train_y", "2026-11-01T10:00:00Z", &prompt, &answer_y);
    y.feedback = Some(Feedback::Positive);
    let mut x = Ex::new("train_x", "2026-11-01T10:01:00Z", &prompt, &answer_x);
    x.score = 0.9;
    let mut z = Ex::new("train_z", "2026-11-01T10:02:00Z", &prompt_z, &answer_x);
    z.score = 0.4;
    let seg = d.join("examples_1.jsonl");
    write(&seg, &[y.line(), x.line(), z.line()], None);
    let inputs = ExportInputs {
        examples: vec![seg],
        ..Default::default()
    };
    for (rep, got) in export_spilled_and_in_memory(d, &inputs) {
        assert_eq!(
            rep.dropped.get("exact_duplicate"),
            Some(&1),
            "{:?}",
            rep.dropped
        );
        assert_eq!(rep.dropped.get("near_duplicate"), None, "{:?}", rep.dropped);
        assert!(got.contains(&answer_y) && got.contains(&prompt_z));
        assert_eq!(got.lines().count(), 2);
    }
    // Without Y, X is kept and Z goes as its near duplicate: the case is a near pair.
    let seg = d.join("examples_2.jsonl");
    write(&seg, &[x.line(), z.line()], None);
    let inputs = ExportInputs {
        examples: vec![seg],
        ..Default::default()
    };
    for (rep, _) in export_spilled_and_in_memory(d, &inputs) {
        assert_eq!(
            rep.dropped.get("near_duplicate"),
            Some(&1),
            "{:?}",
            rep.dropped
        );
    }
}

/// JSON forbids raw control characters in strings and lone surrogate escapes: such lines are
/// unreadable whichever way the texts are read (the fast reading of prompts and answers does
/// not check for control characters itself), while a tab between tokens is valid JSON.
#[test]
fn export_control_characters_in_texts_and_lone_surrogates_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // (what the prompt asks about, the edit that makes the line what the case is about)
    let cases: [(&str, Option<(&str, &str)>); 5] = [
        ("TPO in the corner zone", None),
        // A raw control character in a text.
        (
            "EPDM at the eaves",
            Some(("at the eaves", "at the\u{1}eaves")),
        ),
        // A raw tab in a text.
        ("PVC at the ridge", Some(("at the ridge", "at the\tridge"))),
        // A lone surrogate escape.
        ("mod bit at curbs", Some(("at curbs", "at \\ud800curbs"))),
        // A tab between two tokens: valid.
        ("TPO at the drains", Some(("\",\"", "\",\t\""))),
    ];
    let lines: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(k, (place, edit))| {
            let line = Ex::new(
                &format!("train_{k}"),
                &format!("2026-11-01T10:{k:02}:00Z"),
                &format!("What is the fastener spacing for {place}?"),
                "Six inches on center in corners, per the manufacturer's wind uplift table.",
            )
            .line();
            match edit {
                Some((from, to)) => {
                    assert!(line.contains(from), "{line}");
                    line.replacen(from, to, 1)
                }
                None => line,
            }
        })
        .collect();
    let (rep, got) = export_one_segment(d, (lines.join("\n") + "\n").as_bytes());
    assert_eq!(rep.total_raw, 5);
    assert_eq!(
        rep.dropped.get("unreadable_line"),
        Some(&3),
        "{:?}",
        rep.dropped
    );
    assert_eq!(rep.after_filtering, 2);
    assert!(
        got.contains("corner zone") && got.contains("at the drains"),
        "{got}"
    );
}

#[test]
fn export_leaves_out_what_shares_a_run_of_words_with_an_evaluation_set() {
    let f = fixture();
    let eval = f.dir.path().join("golden.jsonl");
    // One planted prompt (in a benchmark's shape, other case, a word changed after the run)
    // and one correction's answer (chat shape): both must go, in every format.
    let question = NEAR_A.to_uppercase().replace("DETAILS", "WORK");
    fs::write(
        &eval,
        format!(
            "{}\n{}\n",
            serde_json::json!({"question": question, "answer": "B"}),
            serde_json::json!({"messages": [{"role": "assistant", "content": R_PLAIN_RIGHT}]}),
        ),
    )
    .unwrap();
    let contaminated = |v: &Value| {
        let t = v.to_string();
        t.contains(&NEAR_A[..60]) || t.contains(R_PLAIN_RIGHT)
    };
    for format in [Format::PromptResponse, Format::Dpo, Format::Kto] {
        let plain = opts(&f, format);
        let (rep0, lines0) = run_export(&f, &plain, "plain.jsonl");
        assert!(
            lines0.iter().any(contaminated),
            "{format:?}: the fixture plants them"
        );
        let mut o = plain.clone();
        o.decontaminate = vec![eval.clone()];
        let (rep, lines) = run_export(&f, &o, "clean.jsonl");
        let kept: Vec<Value> = lines0
            .iter()
            .filter(|v| !contaminated(v))
            .cloned()
            .collect();
        assert_eq!(lines, kept, "{format:?}");
        assert_eq!(rep.total_raw, rep0.total_raw);
        let dropped: u64 = rep.dropped.values().sum();
        assert_eq!(rep.total_raw, rep.after_filtering + dropped);
        assert!(rep.dropped["eval_contamination"] >= (lines0.len() - lines.len()) as u64);
        let m: Value =
            serde_json::from_str(&fs::read_to_string(&rep.manifest_path).unwrap()).unwrap();
        let d = &m["options"]["decontamination"];
        assert_eq!(d["ngram_words"], 12);
        let sha = pii::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            fs::read(&eval).unwrap(),
        ));
        assert_eq!(d["eval_sets"][0]["sha256"], Value::from(sha));
        // question, "B", "assistant", the answer.
        assert_eq!(d["eval_sets"][0]["texts"], 4);
        // Without evaluation sets the manifest says nothing of them.
        let m0: Value =
            serde_json::from_str(&fs::read_to_string(&rep0.manifest_path).unwrap()).unwrap();
        assert!(m0["options"].get("decontamination").is_none());
    }
    let mut o = opts(&f, Format::PromptResponse);
    o.decontaminate = vec![f.dir.path().join("missing.jsonl")];
    let err = run(&f.inputs, &o, &f.dir.path().join("x.jsonl"), 512).unwrap_err();
    assert!(err.to_string().contains("missing.jsonl"), "{err}");
}

#[test]
fn export_keeps_only_records_inside_the_time_window() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let day = |n: u32| format!("2026-11-{n:02}T12:00:00");
    let days: Vec<String> = (1..=6).map(day).collect();
    let prompt = |n: usize| format!("How many squares of TPO for roof number {n} today?");
    let answer = |n: usize| format!("About {n} squares with ten percent waste for the laps.");
    let (prompts, answers): (Vec<String>, Vec<String>) =
        (1..=6).map(|n| (prompt(n), answer(n))).unzip();
    let mut lines: Vec<String> = (0..6)
        .map(|i| Ex::new(&format!("train_{i}"), &days[i], &prompts[i], &answers[i]).line())
        .collect();
    // No readable timestamp: older than any `since`.
    lines.push(
        Ex::new(
            "train_x",
            "yesterday-ish",
            "How long is a TPO warranty?",
            "Twenty years for the sixty mil membrane.",
        )
        .line(),
    );
    let corrected = "Exactly three squares, measured on site.";
    let inputs = examples_and_a_correction(
        d,
        &lines,
        &Corr {
            id: "corr_1",
            ts: &day(5),
            prompt: &prompts[2],
            original: &answers[2],
            corrected,
            orig_id: Some("train_2"),
            orig_req: None,
            example_id: None,
        },
    );
    let export = |since: Option<&str>, until: Option<&str>| {
        let o = ExportOptions {
            temp_dir: d.join("tmp"),
            since: since.map(|s| input::time_bound_micros(s).unwrap()),
            until: until.map(|s| input::time_bound_micros(s).unwrap()),
            ..Default::default()
        };
        let out = d.join("out.jsonl");
        let rep = run(&inputs, &o, &out, 512).unwrap();
        let prompts: Vec<String> = read_lines(&out)
            .iter()
            .map(|v| v["prompt"].as_str().unwrap().to_string())
            .collect();
        let m: Value =
            serde_json::from_str(&fs::read_to_string(&rep.manifest_path).unwrap()).unwrap();
        (rep, prompts, m)
    };
    let (all, all_prompts, m) = export(None, None);
    assert_eq!(all.after_filtering, 7, "{all:?}");
    assert!(m["options"].get("since").is_none());
    // Days 2 to 4 (until is exclusive): the examples of days 2 and 4; day 3's was corrected
    // (on day 5, outside), so neither it nor its correction is in.
    let (rep, got, m) = export(Some("2026-11-02"), Some("2026-11-04T12:00:01Z"));
    assert_eq!(got, [prompts[1].clone(), prompts[3].clone()]);
    assert_eq!(rep.dropped["outside_time_range"], 4 + 1, "{rep:?}");
    assert_eq!(rep.dropped["corrected_original"], 1);
    assert_eq!(rep.total_raw, all.total_raw);
    assert_eq!(m["options"]["since"], "2026-11-02T00:00:00Z");
    assert_eq!(m["options"]["until"], "2026-11-04T12:00:01Z");
    // From day 5 on: the examples of days 5 and 6 and the correction; the undated one is out.
    let (_, got, _) = export(Some("2026-11-05"), None);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.contains(&prompts[2]) && got.contains(&prompts[4]) && got.contains(&prompts[5]));
    // Until day 2: day 1's and the undated one.
    let (_, got, _) = export(None, Some("2026-11-02"));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(all_prompts.iter().any(|p| p == &got[0]));
    let bad = ExportOptions {
        temp_dir: d.join("tmp"),
        since: Some(10),
        until: Some(10),
        ..Default::default()
    };
    assert!(run(&inputs, &bad, &d.join("x.jsonl"), 512).is_err());
    assert!(input::time_bound_micros("last tuesday").is_err());
}

#[test]
fn export_split_by_user_keeps_a_user_and_the_corrections_of_their_answers_on_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let val = |u: &str| split::is_validation_line(Some(split::user_group(u)), "", 0.5);
    // Three users on each side (found, not assumed: the hash decides).
    let mut users: Vec<String> = Vec::new();
    for side in [false, true] {
        users.extend(
            (0..)
                .map(|i| format!("user-{i}"))
                .filter(|u| val(u) == side)
                .take(3),
        );
    }
    // (Not naming the user: export replaces a user's id in the text with a pseudonym.)
    let prompt = |u: usize, k: usize| format!("Question {k} from customer {u} about TPO seams?");
    let answer = |u: usize, k: usize| format!("Answer {k} for customer {u}: weld and check them.");
    let mut lines = Vec::new();
    let mut owner = std::collections::HashMap::new();
    for (u, user) in users.iter().enumerate() {
        for k in 0..4 {
            let id = format!("train_{u}_{k}");
            let (p, a) = (prompt(u, k), answer(u, k));
            owner.insert(p.clone(), Some(user.clone()));
            lines.push(
                Ex {
                    user: Some(user),
                    feedback: Some(Feedback::Positive),
                    ..Ex::new(&id, "2026-11-01T10:00:00Z", &p, &a)
                }
                .line(),
            );
        }
    }
    // No user: by its prompt.
    for k in 0..6 {
        let p = format!("Anonymous question {k} about roof drains and scuppers?");
        owner.insert(p.clone(), None);
        lines.push(
            Ex {
                feedback: Some(Feedback::Positive),
                ..Ex::new(
                    &format!("train_anon_{k}"),
                    "2026-11-01T10:00:00Z",
                    &p,
                    "Size them for the hundred year storm.",
                )
            }
            .line(),
        );
    }
    // A correction of an answer whose prompt alone would send it to the other side, linked
    // by example id.
    let (cu, ck) = (0..users.len())
        .flat_map(|u| (0..4).map(move |k| (u, k)))
        .find(|&(u, k)| split::is_validation(&prompt(u, k), 0.5) != val(&users[u]))
        .expect("some prompt's side differs from its user's");
    let corrected = "Weld the seams at the right temperature, then probe every seam.";
    let inputs = examples_and_a_correction(
        d,
        &lines,
        &Corr {
            id: "corr_1",
            ts: "2026-11-02T10:00:00Z",
            prompt: &prompt(cu, ck),
            original: &answer(cu, ck),
            corrected,
            orig_id: Some(&format!("train_{cu}_{ck}")),
            orig_req: None,
            example_id: None,
        },
    );
    for format in [Format::PromptResponse, Format::Kto] {
        let o = ExportOptions {
            format,
            temp_dir: d.join("tmp"),
            val_fraction: 0.5,
            split_by: SplitBy::User,
            ..Default::default()
        };
        let out = d.join("out.jsonl");
        let rep = run(&inputs, &o, &out, 512).unwrap();
        let mut sides: Vec<(String, String, bool)> = Vec::new();
        for (path, side) in [(out.clone(), false), (validation_path(&out), true)] {
            for v in read_lines(&path) {
                let p = v["prompt"].as_str().unwrap().to_string();
                let c = v.get("response").or(v.get("completion")).unwrap();
                sides.push((p, c.as_str().unwrap().to_string(), side));
            }
        }
        assert_eq!(sides.len() as u64, rep.after_filtering);
        for (p, c, side) in &sides {
            match &owner[p] {
                Some(u) => assert_eq!(*side, val(u), "{format:?}: {p} / {c}"),
                None => assert_eq!(*side, split::is_validation(p, 0.5), "{p}"),
            }
        }
        // The correction went with its original's user (checked above), and so did the
        // corrected original (KTO).
        let corrected_lines: Vec<&(String, String, bool)> = sides
            .iter()
            .filter(|(p, _, _)| *p == prompt(cu, ck))
            .collect();
        assert!(
            corrected_lines.iter().any(|(_, c, _)| c == corrected),
            "{format:?}: {corrected_lines:?}"
        );
        if format == Format::Kto {
            assert_eq!(corrected_lines.len(), 2, "{corrected_lines:?}");
        }
        let m: Value =
            serde_json::from_str(&fs::read_to_string(&rep.manifest_path).unwrap()).unwrap();
        assert_eq!(m["options"]["split_by"], "user");
    }
}

#[test]
fn export_keeps_texts_within_the_length_bounds_and_scores_above_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Prompts of 40 characters ("é" counts as one), answers of 60; one long prompt, one long
    // answer, one low score.
    let prompt = |n: usize| format!("Squares of TPO for a flat roof, no. {n:02}?é");
    let answer =
        |n: usize| format!("About {n:02} squares of membrane, ten percent waste and laps éé.");
    assert_eq!(
        (prompt(1).chars().count(), answer(1).chars().count()),
        (40, 60)
    );
    let long_prompt = format!("{} And the flashing?", prompt(3));
    let long_answer = format!("{} Plus flashing.", answer(4));
    let (p, a): (Vec<String>, Vec<String>) = (0..6).map(|n| (prompt(n), answer(n))).unzip();
    let ts = "2026-11-01T12:00:00";
    let mut lines = Vec::new();
    for i in [0, 1, 2, 5] {
        lines.push(Ex::new(&format!("train_{i}"), ts, &p[i], &a[i]).line());
    }
    lines.push(Ex::new("train_3", ts, &long_prompt, &a[3]).line());
    lines.push(Ex::new("train_4", ts, &p[4], &long_answer).line());
    lines.push(
        Ex {
            score: 0.2,
            ..Ex::new(
                "train_low",
                ts,
                "Is a cricket needed behind a chimney?",
                &a[5],
            )
        }
        .line(),
    );
    // A correction whose corrected answer fits but whose original is long: kept as SFT, too
    // long as a preference pair (the rejected answer is trained on too).
    let inputs = examples_and_a_correction(
        d,
        &lines,
        &Corr {
            id: "corr_1",
            ts,
            prompt: &p[2],
            original: &long_answer,
            corrected: &answer(42),
            orig_id: Some("train_2"),
            orig_req: None,
            example_id: None,
        },
    );
    let export = |format: Format, max: (usize, usize), min_score: f64| {
        let o = ExportOptions {
            format,
            temp_dir: d.join("tmp"),
            max_prompt_chars: max.0,
            max_response_chars: max.1,
            min_score,
            ..Default::default()
        };
        export_field(&inputs, &o, &d.join(format!("{format}.jsonl")), "prompt")
    };
    // No bounds: every example but the corrected original, and the correction.
    let (rep, got, m) = export(Format::PromptResponse, (0, 0), 0.0);
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(["long_prompt", "long_response", "low_score"]
        .iter()
        .all(|r| !rep.dropped.contains_key(*r)));
    assert!(
        m["options"].get("max_prompt_chars").is_none() && m["options"].get("min_score").is_none()
    );
    // Bounds at exactly the planted lengths: only the longer texts and the low score go.
    let (rep, got, m) = export(Format::PromptResponse, (40, 60), 0.5);
    assert_eq!(rep.dropped.get("long_prompt"), Some(&1), "{rep:?}");
    assert_eq!(rep.dropped.get("long_response"), Some(&1), "{rep:?}");
    assert_eq!(rep.dropped.get("low_score"), Some(&1), "{rep:?}");
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(!got.contains(&long_prompt) && !got.contains(&p[4]) && got.contains(&p[2]));
    assert_eq!(m["options"]["max_prompt_chars"], 40);
    assert_eq!(m["options"]["max_response_chars"], 60);
    assert_eq!(m["options"]["min_score"], 0.5);
    // One character less: every 40-character prompt is too long (the corrected original
    // counts as corrected first), the correction's too; the shorter question stays.
    let (rep, got, _) = export(Format::PromptResponse, (39, 0), 0.0);
    assert_eq!(got, ["Is a cricket needed behind a chimney?"]);
    assert_eq!(rep.dropped["long_prompt"], 5 + 1, "{rep:?}");
    // As a DPO pair, the correction's long original makes it too long.
    let (rep, got, _) = export(Format::Dpo, (0, 0), 0.0);
    assert_eq!(got, [p[2].clone()]);
    let (rep2, got, _) = export(Format::Dpo, (0, 60), 0.0);
    assert!(got.is_empty());
    assert_eq!(rep2.dropped["long_response"], 1, "{rep:?} {rep2:?}");
    let bad = ExportOptions {
        temp_dir: d.join("tmp"),
        min_score: 1.5,
        ..Default::default()
    };
    assert!(run(&inputs, &bad, &d.join("x.jsonl"), 512).is_err());
}

#[test]
fn export_keeps_the_selected_tags_and_leaves_out_the_excluded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ts = "2026-11-01T12:00:00";
    // (id, tags): a quote in a tag makes its line go through serde instead of the layout read.
    let planted: [(&str, &[&str]); 5] = [
        ("train_a", &["tpo"]),
        ("train_b", &["epdm"]),
        ("train_c", &["tpo", "pricing"]),
        ("train_d", &[]),
        ("train_e", &["say \"when\""]),
    ];
    let prompts: Vec<String> = planted
        .iter()
        .map(|(id, _)| format!("Which membrane suits the roof of {id} best?"))
        .collect();
    let answer = "The sixty mil membrane, fully adhered, with the manufacturer's warranty.";
    let lines: Vec<String> = planted
        .iter()
        .zip(&prompts)
        .map(|((id, tags), p)| {
            Ex {
                tags,
                ..Ex::new(id, ts, p, answer)
            }
            .line()
        })
        .collect();
    let seg = d.join("examples_1.jsonl");
    write(&seg, &lines, None);
    let corr = Corr {
        id: "corr_1",
        ts,
        prompt: "How far apart are the fasteners on a flashing termination bar?",
        original: "Twelve inches is fine everywhere.",
        corrected: "Six to eight inches on center, per the manufacturer.",
        orig_id: None,
        orig_req: None,
        example_id: None,
    }
    .line();
    assert!(corr.contains("\"tags\":[]"));
    let corrections = d.join("corrections_1.jsonl");
    write(
        &corrections,
        &[corr.replace("\"tags\":[]", "\"tags\":[\"epdm\",\"flashing\"]")],
        None,
    );
    let inputs = ExportInputs {
        examples: vec![seg],
        corrections: vec![corrections],
        ..Default::default()
    };
    let export = |tags: &[&str], exclude: &[&str]| {
        let o = ExportOptions {
            temp_dir: d.join("tmp"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            exclude_tags: exclude.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        export_field(&inputs, &o, &d.join("out.jsonl"), "prompt")
    };
    let want = |ids: &[usize], corr: bool| {
        let mut w: Vec<String> = ids.iter().map(|&i| prompts[i].clone()).collect();
        if corr {
            w.push("How far apart are the fasteners on a flashing termination bar?".into());
        }
        w.sort();
        w
    };
    let (rep, got, m) = export(&[], &[]);
    assert_eq!(got, want(&[0, 1, 2, 3, 4], true));
    assert!(m["options"].get("tags").is_none() && m["options"].get("exclude_tags").is_none());
    assert!(!rep.dropped.contains_key("tag_not_selected"));
    let (rep, got, m) = export(&["tpo"], &[]);
    assert_eq!(got, want(&[0, 2], false));
    assert_eq!(rep.dropped["tag_not_selected"], 3 + 1, "{rep:?}");
    assert_eq!(m["options"]["tags"], serde_json::json!(["tpo"]));
    let (rep, got, _) = export(&[], &["pricing"]);
    assert_eq!(got, want(&[0, 1, 3, 4], true));
    assert_eq!(rep.dropped["excluded_tag"], 1, "{rep:?}");
    // Exclusion wins over selection; the correction has its own tags.
    let (rep, got, m) = export(&["tpo", "flashing", "say \"when\""], &["pricing"]);
    assert_eq!(got, want(&[0, 4], true));
    assert_eq!(rep.dropped["excluded_tag"], 1, "{rep:?}");
    assert_eq!(rep.dropped["tag_not_selected"], 2, "{rep:?}");
    assert_eq!(m["options"]["exclude_tags"], serde_json::json!(["pricing"]));
    let (rep, got, _) = export(&[], &["flashing"]);
    assert_eq!(got, want(&[0, 1, 2, 3, 4], false));
    assert_eq!(rep.dropped["excluded_tag"], 1, "{rep:?}");
}

#[test]
fn export_max_examples_keeps_the_best_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Scores 0.1 to 0.8, newest last; train_1 (score 0.2) has a thumbs up; train_3 was
    // corrected (its correction ranks first; the original is out anyway).
    let prompts: Vec<String> = (1..=8)
        .map(|i| format!("How many squares of membrane for building number {i}?"))
        .collect();
    let answer = |i: usize| format!("About {i}0 squares including the waste for the laps.");
    let lines: Vec<String> = (0..8)
        .map(|i| {
            let ts = format!("2026-11-0{}T12:00:00", i + 1);
            Ex {
                score: (i + 1) as f64 / 10.0,
                ..Ex::new(&format!("train_{i}"), &ts, &prompts[i], &answer(i))
            }
            .line()
        })
        .collect();
    let seg = d.join("examples_1.jsonl");
    write(&seg, &lines, None);
    let feedback = d.join("feedback_1.jsonl");
    write(
        &feedback,
        &[fb(
            "fb_1",
            "2026-11-09T00:00:00",
            "train_1",
            Feedback::Positive,
        )],
        None,
    );
    let corrections = d.join("corrections_1.jsonl");
    let corrected = "Exactly thirty two squares, measured on site last week.";
    let corr = Corr {
        id: "corr_1",
        ts: "2026-11-09T00:00:00",
        prompt: &prompts[3],
        original: &answer(3),
        corrected,
        orig_id: Some("train_3"),
        orig_req: None,
        example_id: None,
    };
    write(&corrections, &[corr.line()], None);
    let inputs = ExportInputs {
        examples: vec![seg],
        feedback: vec![feedback],
        corrections: vec![corrections],
    };
    let export = |max: u64, val: f64| {
        let o = ExportOptions {
            temp_dir: d.join("tmp"),
            max_examples: max,
            val_fraction: val,
            ..Default::default()
        };
        export_field(&inputs, &o, &d.join("out.jsonl"), "response")
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (all, got, m) = export(0, 0.0);
    assert_eq!(got.len(), 8, "{got:?}");
    assert!(!all.dropped.contains_key("over_max_examples"));
    assert!(m["options"].get("max_examples").is_none());
    // The correction, the thumbs up, then the highest scores.
    let (rep, got, m) = export(3, 0.0);
    assert_eq!(got, sorted(vec![corrected.into(), answer(1), answer(7)]));
    assert_eq!(rep.dropped["over_max_examples"], 5, "{rep:?}");
    assert_eq!(m["options"]["max_examples"], 3);
    let (_, got, _) = export(5, 0.0);
    assert_eq!(
        got,
        sorted(vec![
            corrected.into(),
            answer(1),
            answer(7),
            answer(6),
            answer(5)
        ])
    );
    // Train and validation together.
    let (rep, got, _) = export(4, 0.5);
    assert_eq!(
        got,
        sorted(vec![corrected.into(), answer(1), answer(7), answer(6)])
    );
    assert_eq!(rep.train_count + rep.validation_count, 4);
    let (rep, got, _) = export(100, 0.0);
    assert_eq!(got.len(), 8);
    assert!(!rep.dropped.contains_key("over_max_examples"));
}

/// Examples for the prepared cache's tests: four distinct ones, two with request ids.
fn cache_examples(d: &Path) -> PathBuf {
    let seg = d.join("examples_20261101_0001.jsonl");
    let mut lines = Vec::new();
    for (i, (p, r)) in [
        (P_CORR, R_WRONG),
        (P_PLAIN_CORR, R_PLAIN_WRONG),
        (NEAR_A, NEAR_RESP),
        (
            "How do I contact support about a leak?",
            "Write to help@example.com or call 555-123-4567.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("ex_{i}");
        let req = format!("req_{i}");
        let mut e = Ex::new(&id, "2026-11-01T10:00:00", p, r);
        if i % 2 == 0 {
            e.request_id = Some(&req);
        }
        lines.push(e.line());
    }
    write(&seg, &lines, None);
    seg
}

/// An export of `inputs` with the cache under `root`; its report and output bytes.
fn cached_export(inputs: &ExportInputs, o: &ExportOptions, root: &Path) -> (ExportReport, Vec<u8>) {
    let out = o.temp_dir.with_file_name("cached.jsonl");
    let c = ExportOptions {
        cache_dir: Some(root.to_path_buf()),
        ..o.clone()
    };
    let rep = super::run(inputs, &c, &out, 1 << 20).unwrap();
    let bytes = train_and_validation_bytes(&rep, &out);
    (rep, bytes)
}

fn plain_export(inputs: &ExportInputs, o: &ExportOptions) -> (ExportReport, Vec<u8>) {
    let out = o.temp_dir.with_file_name("plain.jsonl");
    let rep = super::run(inputs, o, &out, 1 << 20).unwrap();
    let bytes = train_and_validation_bytes(&rep, &out);
    (rep, bytes)
}

/// The training file's bytes, then the validation file's when the export wrote one.
fn train_and_validation_bytes(rep: &ExportReport, out: &Path) -> Vec<u8> {
    let mut bytes = fs::read(out).unwrap();
    if rep.validation_count > 0 {
        bytes.extend(b"--- validation ---\n");
        bytes.extend(fs::read(split::validation_path(out)).unwrap());
    }
    bytes
}

fn cache_stats(r: &ExportReport) -> (u64, u64) {
    let s = r.prepared_cache.unwrap();
    (s.reused, s.written)
}

/// Thumbs down for `ex_1` (by id) and `req_2` (by request id), and a correction of the
/// ([`P_CORR`], [`R_WRONG`]) pair (by pair, to [`R_RIGHT`]), in segments of day `day`
/// (YYYYMMDD) under `d`: what [`cache_examples`]' lines receive after they were cached.
fn late_feedback_and_correction(d: &Path, day: &str) -> (PathBuf, PathBuf) {
    let ts = |t: &str| format!("{}-{}-{}T{t}", &day[..4], &day[4..6], &day[6..]);
    let feedback = d.join(format!("feedback_{day}_0001.jsonl"));
    write(
        &feedback,
        &[
            fb("fb_1", &ts("10:00:00"), "ex_1", Feedback::Negative),
            fb("fb_2", &ts("10:00:00"), "req_2", Feedback::Negative),
        ],
        None,
    );
    let corrections = d.join(format!("corrections_{day}_0001.jsonl"));
    let at = ts("11:00:00");
    let by_pair = Corr {
        id: "corr_pair",
        ts: &at,
        prompt: P_CORR,
        original: R_WRONG,
        corrected: R_RIGHT,
        orig_id: None,
        orig_req: None,
        example_id: None,
    };
    write(&corrections, &[by_pair.line()], None);
    (feedback, corrections)
}

/// Feedback and corrections that arrive after a segment was cached reach its examples: by
/// id, by request id, and by (prompt, answer), which a cached line must be read again for.
#[test]
fn export_prepared_cache_serves_feedback_and_corrections_that_arrive_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("cache");
    let seg = cache_examples(d);
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    let only = ExportInputs {
        examples: vec![seg.clone()],
        ..Default::default()
    };
    let (first, _) = cached_export(&only, &o, &root);
    assert_eq!(cache_stats(&first), (0, 1));
    assert_eq!(first.after_filtering, 4, "{first:?}");

    let (feedback, corrections) = late_feedback_and_correction(d, "20261102");
    let all = ExportInputs {
        examples: vec![seg],
        feedback: vec![feedback],
        corrections: vec![corrections],
    };
    let (warm, warm_bytes) = cached_export(&all, &o, &root);
    assert_eq!(cache_stats(&warm), (1, 0));
    let (plain, plain_bytes) = plain_export(&all, &o);
    assert_eq!(
        report_sans_cache(&warm)["dropped"],
        report_sans_cache(&plain)["dropped"]
    );
    assert_eq!(warm_bytes, plain_bytes);
    // And the late records did take effect.
    assert_eq!(warm.dropped.get("negative_feedback"), Some(&2), "{warm:?}");
    assert_eq!(warm.dropped.get("corrected_original"), Some(&1), "{warm:?}");
    let text = String::from_utf8(warm_bytes).unwrap();
    assert!(text.contains(R_RIGHT) && !text.contains(R_WRONG), "{text}");
}

/// What the daemon prepares ahead ([`prepare_ahead`]) is what an export reuses: with every
/// sealed segment prepared, an export reads all of them from the cache, prepares none, and
/// writes what an export without a cache writes, with feedback, corrections, an evaluation
/// set and a time window.
#[test]
fn export_prepare_ahead_writes_the_entries_an_export_reuses() {
    use prepare_ahead::{AheadPreparer, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("cache");
    let seg = cache_examples(d);
    let second = d.join("examples_20261102_0001.jsonl");
    write(
        &second,
        &[
            Ex::new("ex_s", "2026-11-02T10:00:00", P_PLAIN_CORR, R_PLAIN_RIGHT).line(),
            Ex::new("ex_n", "2026-11-02T10:30:00", NEAR_B, NEAR_RESP).line(),
            "not json".to_string(),
        ],
        None,
    );
    let open = d.join("examples_20261103_0001.jsonl.open");
    write(
        &open,
        &[Ex::new("ex_o", "2026-11-03T11:00:00", P_CORR, R_RIGHT).line()],
        Some("{\"id\": \"torn"),
    );
    let (feedback, corrections) = late_feedback_and_correction(d, "20261104");
    let eval = d.join("eval.jsonl");
    fs::write(&eval, format!("{{\"question\": \"{P_PLAIN_CORR}\"}}\n")).unwrap();
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        decontaminate: vec![eval],
        pii_patterns: vec![regex::Regex::new("squares").unwrap()],
        ..Default::default()
    };
    let mut ahead = AheadPreparer::new(ExportOptions {
        cache_dir: Some(root.clone()),
        ..o.clone()
    })
    .unwrap()
    .expect("a cache");
    let go = &mut || true;
    assert_eq!(ahead.prepare(&seg, go).unwrap(), Outcome::Written);
    assert_eq!(ahead.prepare(&second, go).unwrap(), Outcome::Written);
    assert_eq!(ahead.prepare(&seg, go).unwrap(), Outcome::AlreadyCached);
    assert_eq!(ahead.prepare(&open, go).unwrap(), Outcome::NotSealed);
    let gone = d.join("examples_20261101_0009.jsonl");
    assert_eq!(ahead.prepare(&gone, go).unwrap(), Outcome::NotSealed);
    assert!(!ahead.is_stale());
    // The very entries an export writes (whose inputs list the segments in another order).
    let exported = d.join("cache-of-an-export");
    cached_export(
        &ExportInputs {
            examples: vec![open.clone(), second.clone(), seg.clone()],
            ..Default::default()
        },
        &o,
        &exported,
    );
    let entries = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = walk(root)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(entries(&root).len(), 2);
    assert!(entries(&root) == entries(&exported), "entries differ");

    let all = ExportInputs {
        examples: vec![seg, second, open],
        feedback: vec![feedback],
        corrections: vec![corrections],
    };
    for window in [
        (None, None),
        (
            None,
            Some(input::time_bound_micros("2026-11-02T00:00:00").unwrap()),
        ),
    ] {
        let o = ExportOptions {
            since: window.0,
            until: window.1,
            ..o.clone()
        };
        let (warm, warm_bytes) = cached_export(&all, &o, &root);
        assert_eq!(cache_stats(&warm), (2, 0), "{window:?}");
        let (plain, plain_bytes) = plain_export(&all, &o);
        let counts = |r: &ExportReport| {
            let mut v = report_sans_cache(r);
            for path in ["output_path", "manifest_path"] {
                v.as_object_mut().unwrap().remove(path);
            }
            v
        };
        assert_eq!(counts(&warm), counts(&plain));
        assert_eq!(warm_bytes, plain_bytes, "{window:?}");
        assert!(warm.after_filtering > 0, "{warm:?}");
        if window.1.is_none() {
            assert!(warm.dropped.contains_key("eval_contamination"), "{warm:?}");
        }
    }
}

/// A raised stop leaves nothing behind (the daemon is shutting down), and a preparer knows
/// when an evaluation set it read has changed (its entries would be of no use).
#[test]
fn export_prepare_ahead_stops_cleanly_and_notices_a_changed_evaluation_set() {
    use prepare_ahead::{AheadPreparer, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("cache");
    let seg = cache_examples(d);
    let eval = d.join("eval.jsonl");
    fs::write(&eval, "{\"q\": \"What is the capital of France today?\"}\n").unwrap();
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        decontaminate: vec![eval.clone()],
        cache_dir: Some(root.clone()),
        ..Default::default()
    };
    let mut ahead = AheadPreparer::new(o.clone()).unwrap().expect("a cache");
    let mut asked = 0;
    assert_eq!(
        ahead
            .prepare(&seg, &mut || {
                asked += 1;
                false
            })
            .unwrap(),
        Outcome::Stopped
    );
    assert_eq!(asked, 1, "asked before the first chunk");
    let left: Vec<_> = walk(&root);
    assert!(left.is_empty(), "nothing left behind: {left:?}");
    assert!(!ahead.is_stale());
    fs::write(
        &eval,
        "{\"q\": \"What is the capital of Spain, these days?\"}\n",
    )
    .unwrap();
    assert!(ahead.is_stale());
    // Its directory removed meanwhile (exports with other options evict the least recently
    // used): it is made again.
    fs::remove_dir_all(&root).unwrap();
    assert_eq!(ahead.prepare(&seg, &mut || true).unwrap(), Outcome::Written);
    assert_eq!(walk(&root).len(), 1, "{:?}", walk(&root));
    // Without a cache directory there is nothing to prepare into.
    let none = AheadPreparer::new(ExportOptions {
        cache_dir: None,
        ..o
    })
    .unwrap();
    assert!(none.is_none());
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The time window is applied after the cache: one entry serves every window, whichever
/// window built it.
#[test]
fn export_prepared_cache_serves_every_time_window() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seg = d.join("examples_20261101_0001.jsonl");
    let prompts: Vec<String> = (1..=6)
        .map(|n| format!("How many squares of TPO for roof number {n} today?"))
        .collect();
    let answer = "About twelve squares with ten percent waste for the laps.";
    let lines: Vec<String> = (0..6)
        .map(|i| {
            let id = format!("ex_{i}");
            let ts = format!("2026-11-0{}T12:00:00", i + 1);
            Ex::new(&id, &ts, &prompts[i], answer).line()
        })
        .collect();
    write(&seg, &lines, None);
    let inputs = ExportInputs {
        examples: vec![seg],
        ..Default::default()
    };
    let window = |since: Option<&str>, until: Option<&str>| ExportOptions {
        temp_dir: d.join("tmp"),
        since: since.map(|s| input::time_bound_micros(s).unwrap()),
        until: until.map(|s| input::time_bound_micros(s).unwrap()),
        ..Default::default()
    };
    let windows = [
        (Some("2026-11-03"), None, 4),
        (None, None, 6),
        (None, Some("2026-11-02"), 1),
        (Some("2026-11-02"), Some("2026-11-05"), 3),
    ];
    // Built by a windowed export, then read by the others.
    let root = d.join("cache");
    for (i, (since, until, n)) in windows.into_iter().enumerate() {
        let o = window(since, until);
        let (rep, bytes) = cached_export(&inputs, &o, &root);
        assert_eq!(cache_stats(&rep), if i == 0 { (0, 1) } else { (1, 0) });
        assert_eq!(rep.after_filtering, n, "{since:?}..{until:?}");
        let (plain, plain_bytes) = plain_export(&inputs, &o);
        assert_eq!(report_sans_cache(&rep), {
            let mut v = report_sans_cache(&plain);
            v["output_path"] = report_sans_cache(&rep)["output_path"].clone();
            v["manifest_path"] = report_sans_cache(&rep)["manifest_path"].clone();
            v
        });
        assert_eq!(bytes, plain_bytes, "{since:?}..{until:?}");
    }
}

/// `n` example lines that differ in everything the filters read (relevance, score, tags,
/// user, inclusion, lengths) and are far from duplicates of each other (words drawn from a
/// vocabulary).
fn varied_examples(n: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "flashing",
        "membrane",
        "ridge",
        "valley",
        "gutter",
        "shingle",
        "underlayment",
        "decking",
        "fascia",
        "soffit",
        "parapet",
        "scupper",
        "drip",
        "edge",
        "sealant",
        "fastener",
        "batten",
        "purlin",
        "truss",
        "vent",
        "chimney",
        "skylight",
        "ice",
        "dam",
    ];
    let mut r: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r
    };
    let mut lines = Vec::new();
    for i in 0..n {
        let mut text = |words: u64| -> String {
            (0..words)
                .map(|_| WORDS[next() as usize % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let prompt_words = 2 + i as u64 % 14;
        let prompt = format!("{}?", text(prompt_words));
        let answer = format!("{}.", text(3 + (i as u64 * 7) % 20));
        let id = format!("ex_v{i}");
        let ts = format!("2026-11-{:02}T10:00:00", 1 + i % 28);
        let mut e = Ex::new(&id, &ts, &prompt, &answer);
        let x = next();
        e.rel = [Relevance::High, Relevance::Medium, Relevance::Low][x as usize % 3];
        e.score = ((x >> 8) % 100) as f64 / 100.0;
        const TAGS: [&[&str]; 4] = [&["tpo"], &["epdm", "pricing"], &[], &["pricing"]];
        e.tags = TAGS[(x >> 16) as usize % 4];
        e.user = [Some("u_ann"), Some("u_bo"), Some("u_cy"), None][(x >> 24) as usize % 4];
        e.include = (x >> 32) % 9 != 0;
        if (x >> 40) % 13 == 0 {
            e.source = "verified_correction";
        }
        lines.push(e.line());
    }
    lines
}

/// An entry does not depend on the export's filters: made by an export with the defaults (as
/// the daemon makes them for the config), it serves exports with any filter, split or
/// corrections setting, which write what they would write without a cache.
#[test]
fn export_prepared_cache_serves_every_option_filter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The lines the late feedback and correction name, and varied ones.
    let seg = cache_examples(d);
    let mut lines: Vec<String> = fs::read_to_string(&seg)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.extend(varied_examples(80));
    write(&seg, &lines, None);
    let (feedback, corrections) = late_feedback_and_correction(d, "20261102");
    let inputs = ExportInputs {
        examples: vec![seg],
        feedback: vec![feedback],
        corrections: vec![corrections],
    };
    // An evaluation set with the texts of every fourth varied line (whatever the filters
    // say of it): with it, the entries must say which lines it contaminates, also of those
    // the writing export's filters dropped.
    let eval = d.join("eval.jsonl");
    let eval_lines: Vec<String> = lines[4..]
        .iter()
        .step_by(4)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            serde_json::json!({"question": v["prompt"], "answer": v["response"]}).to_string()
        })
        .collect();
    write(&eval, &eval_lines, None);
    let plain_o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    let eval_o = ExportOptions {
        decontaminate: vec![eval.clone()],
        decontaminate_ngram: 3,
        ..plain_o.clone()
    };
    for (o, root) in [(plain_o, d.join("cache")), (eval_o, d.join("cache-eval"))] {
        let (first, _) = cached_export(&inputs, &o, &root);
        assert_eq!(cache_stats(&first), (0, 1));
        let variants: Vec<(&str, ExportOptions)> = vec![
            (
                "min_quality high",
                ExportOptions {
                    min_quality: Relevance::High,
                    ..o.clone()
                },
            ),
            (
                "min_quality low",
                ExportOptions {
                    min_quality: Relevance::Low,
                    ..o.clone()
                },
            ),
            (
                "a tag",
                ExportOptions {
                    tags: vec!["pricing".into()],
                    ..o.clone()
                },
            ),
            (
                "an excluded tag",
                ExportOptions {
                    exclude_tags: vec!["tpo".into()],
                    ..o.clone()
                },
            ),
            (
                "min_score",
                ExportOptions {
                    min_score: 0.5,
                    ..o.clone()
                },
            ),
            (
                "short prompts only",
                ExportOptions {
                    max_prompt_chars: 75,
                    ..o.clone()
                },
            ),
            (
                "long answers only",
                ExportOptions {
                    min_response_chars: 70,
                    ..o.clone()
                },
            ),
            (
                "no minimums",
                ExportOptions {
                    min_prompt_chars: 0,
                    min_response_chars: 0,
                    ..o.clone()
                },
            ),
            (
                "no corrections",
                ExportOptions {
                    include_corrections: false,
                    ..o.clone()
                },
            ),
            (
                "by prompt",
                ExportOptions {
                    val_fraction: 0.5,
                    ..o.clone()
                },
            ),
            (
                "by user",
                ExportOptions {
                    split_by: SplitBy::User,
                    val_fraction: 0.5,
                    ..o.clone()
                },
            ),
            (
                "kto",
                ExportOptions {
                    format: Format::Kto,
                    ..o.clone()
                },
            ),
        ];
        let mut outputs = std::collections::HashSet::new();
        for (what, v) in &variants {
            let (rep, bytes) = cached_export(&inputs, v, &root);
            assert_eq!(cache_stats(&rep), (1, 0), "{what}");
            let (plain, plain_bytes) = plain_export(&inputs, v);
            assert_eq!(rep.dropped, plain.dropped, "{what}");
            assert_eq!(rep.validation_count, plain.validation_count, "{what}");
            assert!(
                bytes == plain_bytes,
                "{what}: other bytes than without the cache"
            );
            outputs.insert(bytes);
        }
        // Each filter changed the output: none of them was ignored.
        assert_eq!(
            outputs.len(),
            variants.len(),
            "two variants wrote the same set"
        );
    }
}

/// An entry is used only for the options, program and segment it was made for, and only
/// when it is whole: anything else is a miss, prepared afresh (and written again), with the
/// same output as without a cache.
#[test]
fn export_prepared_cache_entry_is_not_used_for_other_options_segments_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("cache");
    let seg = cache_examples(d);
    let inputs = ExportInputs {
        examples: vec![seg.clone()],
        ..Default::default()
    };
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    let check = |o: &ExportOptions, want: (u64, u64), what: &str| {
        let (rep, bytes) = cached_export(&inputs, o, &root);
        assert_eq!(cache_stats(&rep), want, "{what}");
        let (plain, plain_bytes) = plain_export(&inputs, o);
        assert_eq!(rep.dropped, plain.dropped, "{what}");
        assert_eq!(bytes, plain_bytes, "{what}");
        bytes
    };
    check(&o, (0, 1), "first");
    check(&o, (1, 0), "again");
    let entry = || {
        let dirs: Vec<PathBuf> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs[0].join("examples_20261101_0001.jsonl.prep")
    };
    assert!(entry().is_file());

    // Another PII pattern: another fingerprint, its own directory.
    let o2 = ExportOptions {
        pii_patterns: vec![regex::Regex::new("squares").unwrap()],
        ..o.clone()
    };
    let scrubbed = check(&o2, (0, 1), "other options");
    assert!(String::from_utf8(scrubbed).unwrap().contains("[REDACTED]"));
    assert_eq!(fs::read_dir(&root).unwrap().count(), 2);
    check(&o2, (1, 0), "other options again");
    // The same evaluation set path with other contents: another fingerprint.
    let eval = d.join("eval.jsonl");
    fs::write(
        &eval,
        "{\"question\": \"What is the capital of France?\"}\n",
    )
    .unwrap();
    let o3 = ExportOptions {
        decontaminate: vec![eval.clone()],
        ..o.clone()
    };
    check(&o3, (0, 1), "an evaluation set");
    check(&o3, (1, 0), "an evaluation set again");
    fs::write(&eval, format!("{{\"question\": \"{P_PLAIN_CORR}\"}}\n")).unwrap();
    let (rep, _) = plain_export(&inputs, &o3);
    assert_eq!(rep.dropped.get("eval_contamination"), Some(&1), "{rep:?}");
    check(&o3, (0, 1), "the evaluation set changed");
    fs::remove_dir_all(&root).unwrap();
    check(&o, (0, 1), "rebuilt");

    // A damaged entry: a byte flipped in the middle, or cut short.
    let good = fs::read(entry()).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x20;
    fs::write(entry(), &flipped).unwrap();
    check(&o, (0, 1), "flipped byte");
    assert_eq!(
        fs::read(entry()).unwrap(),
        good,
        "the entry is written again"
    );
    fs::write(entry(), &good[..good.len() - 9]).unwrap();
    check(&o, (0, 1), "cut short");
    fs::write(entry(), b"").unwrap();
    check(&o, (0, 1), "empty");
    check(&o, (1, 0), "mended");

    // Another segment under the same name, the same size and modification time: told apart
    // by its content.
    let meta = fs::metadata(&seg).unwrap();
    let text = fs::read_to_string(&seg).unwrap().replace("ex_0", "ex_9");
    assert_eq!(text.len() as u64, meta.len());
    fs::write(&seg, &text).unwrap();
    fs::File::options()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    assert_eq!(
        fs::metadata(&seg).unwrap().modified().unwrap(),
        meta.modified().unwrap()
    );
    check(&o, (0, 1), "replaced segment");
    let ids = {
        let c = ExportOptions {
            cache_dir: Some(root.clone()),
            ids_file: true,
            ..o.clone()
        };
        let out = d.join("ids.jsonl");
        super::run(&inputs, &c, &out, 1 << 20).unwrap();
        fs::read_to_string(split::ids_path(&out)).unwrap()
    };
    assert!(ids.contains("ex_9") && !ids.contains("ex_0"), "{ids}");
}

/// Entries of deleted segments go, open segments are never cached, and only the few most
/// recently used fingerprints' directories are kept.
#[test]
fn export_prepared_cache_keeps_only_live_sealed_segments_and_recent_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("cache");
    let seg = cache_examples(d);
    let second = d.join("examples_20261102_0001.jsonl");
    write(
        &second,
        &[Ex::new("ex_s", "2026-11-02T10:00:00", P_PLAIN_CORR, R_PLAIN_RIGHT).line()],
        None,
    );
    let open = d.join("examples_20261102_0002.jsonl.open");
    write(
        &open,
        &[Ex::new("ex_o", "2026-11-02T11:00:00", NEAR_B, NEAR_RESP).line()],
        Some("{\"id\": \"torn"),
    );
    let o = ExportOptions {
        temp_dir: d.join("tmp"),
        ..Default::default()
    };
    let mut inputs = ExportInputs {
        examples: vec![seg, second.clone(), open],
        ..Default::default()
    };
    let (rep, _) = cached_export(&inputs, &o, &root);
    assert_eq!(cache_stats(&rep), (0, 2));
    let fp_dir = fs::read_dir(&root).unwrap().next().unwrap().unwrap().path();
    let entries = || {
        let mut names: Vec<String> = fs::read_dir(&fp_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        entries(),
        [
            "examples_20261101_0001.jsonl.prep",
            "examples_20261102_0001.jsonl.prep"
        ]
    );
    let (rep, _) = cached_export(&inputs, &o, &root);
    assert_eq!(cache_stats(&rep), (2, 0));
    // The second segment is deleted (retention): its entry goes with the next export, once
    // it is not fresh (a fresh one may be of a segment the daemon sealed and prepared while
    // the export ran, after it listed its inputs).
    fs::remove_file(&second).unwrap();
    inputs.examples.remove(1);
    let (rep, _) = cached_export(&inputs, &o, &root);
    assert_eq!(cache_stats(&rep), (1, 0));
    assert_eq!(entries().len(), 2, "a fresh entry is kept");
    let age = |p: &Path, secs: u64| {
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
            .unwrap()
    };
    age(&fp_dir.join("examples_20261102_0001.jsonl.prep"), 700);
    let (rep, _) = cached_export(&inputs, &o, &root);
    assert_eq!(cache_stats(&rep), (1, 0));
    assert_eq!(entries(), ["examples_20261101_0001.jsonl.prep"]);
    // A temporary entry left by a process killed while writing: removed once it is old.
    let left = fp_dir.join(".tmp-killed");
    fs::write(&left, b"half an entry").unwrap();
    cached_export(&inputs, &o, &root);
    assert!(
        left.exists(),
        "a fresh temporary entry may be another export's"
    );
    age(&left, 7200);
    cached_export(&inputs, &o, &root);
    assert!(!left.exists());

    // Six different options, one after another: the four most recent are kept. (A pause
    // between them: the file system's clock, which says when a directory was last used, has
    // a coarse tick.)
    let mut dirs = Vec::new();
    for i in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let oi = ExportOptions {
            pii_patterns: vec![regex::Regex::new(&format!("no-such-text-{i}")).unwrap()],
            ..o.clone()
        };
        let (rep, _) = cached_export(&inputs, &oi, &root);
        assert_eq!(cache_stats(&rep), (0, 1));
        dirs.push(root.join(prepared_cache::fingerprint(&oi, None).unwrap()));
    }
    let mut kept: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    kept.sort();
    let mut want = dirs[2..].to_vec();
    want.sort();
    assert_eq!(kept, want);
    // One unused for over a week (an older program's, say) goes even among the four.
    fs::File::open(&dirs[2])
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86400))
        .unwrap();
    let last = ExportOptions {
        pii_patterns: vec![regex::Regex::new("no-such-text-5").unwrap()],
        ..o.clone()
    };
    let (rep, _) = cached_export(&inputs, &last, &root);
    assert_eq!(
        cache_stats(&rep),
        (1, 0),
        "the newest fingerprint's own entry"
    );
    assert!(!dirs[2].exists());
    assert!(dirs[3].exists() && dirs[4].exists() && dirs[5].exists());
}

/// One step of the prepared cache's model-based test.
#[derive(Debug, Clone)]
enum CacheOp {
    /// A new sealed segment of `n` examples drawn from `seed` (a few prompts and answers, so
    /// exact and near duplicates, replays and PII occur).
    Seal { n: usize, seed: u64 },
    /// The open segment, rewritten with `n` examples and a torn last line.
    Open { n: usize, seed: u64 },
    /// Feedback on the `k`-th example written so far, by its id or its request id.
    Feedback {
        k: usize,
        positive: bool,
        by_request: bool,
    },
    /// A correction of the `k`-th example, naming its id or only its (prompt, answer).
    Correct { k: usize, by_pair: bool },
    /// The `k`-th sealed segment is deleted (retention).
    Delete { k: usize },
    /// A byte of the `k`-th cache entry on disk is flipped.
    Damage { k: usize, at: usize },
    /// An export with options variant `v`: with the cache, and without it.
    Export { v: u8 },
}

fn cache_op() -> impl proptest::strategy::Strategy<Value = CacheOp> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (1usize..12, any::<u64>()).prop_map(|(n, seed)| CacheOp::Seal { n, seed }),
        1 => (1usize..6, any::<u64>()).prop_map(|(n, seed)| CacheOp::Open { n, seed }),
        2 => (any::<usize>(), any::<bool>(), any::<bool>())
            .prop_map(|(k, positive, by_request)| CacheOp::Feedback { k, positive, by_request }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(k, by_pair)| CacheOp::Correct { k, by_pair }),
        1 => any::<usize>().prop_map(|k| CacheOp::Delete { k }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(k, at)| CacheOp::Damage { k, at }),
        4 => (0u8..10).prop_map(|v| CacheOp::Export { v }),
    ]
}

/// An example the model wrote: (id, request id, prompt, answer).
type ModelEx = (String, Option<String>, String, String);

fn model_examples(tag: &str, n: usize, seed: u64) -> (Vec<String>, Vec<ModelEx>) {
    const PROMPTS: [&str; 4] = [
        NEAR_A,
        NEAR_B,
        "How long does EPDM adhesive need to flash off before mating the sheets?",
        "What is the fastener spacing for TPO in the corner zone of a tall building?",
    ];
    const ANSWERS: [&str; 3] = [
        NEAR_RESP,
        "Until it is dry to the touch, usually 10 to 20 minutes; ask dana.roofer@example.com.",
        "Six inches on center in corners, per the manufacturer's wind uplift table.",
    ];
    let mut lines = Vec::new();
    let mut exs = Vec::new();
    for i in 0..n {
        let r = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i as u64 * 1442695040888963407);
        let id = format!("ex_{tag}_{i}");
        let req = r.is_multiple_of(3).then(|| format!("req_{tag}_{i}"));
        let prompt = format!(
            "{} {}",
            PROMPTS[(r >> 8) as usize % 4],
            ["", "Thanks."][(r >> 12) as usize % 2]
        );
        let answer = ANSWERS[(r >> 16) as usize % 3].to_string();
        let ts = format!(
            "2026-11-{:02}T{:02}:00:00",
            1 + (r >> 20) % 28,
            (r >> 28) % 24
        );
        let mut e = Ex::new(&id, &ts, &prompt, &answer);
        e.request_id = req.as_deref();
        e.rel = [Relevance::High, Relevance::Medium, Relevance::Low][(r >> 32) as usize % 3];
        e.score = ((r >> 36) % 100) as f64 / 100.0;
        const TAGS: [&[&str]; 4] = [&["tpo"], &["epdm", "pricing"], &[], &["pricing"]];
        e.tags = TAGS[(r >> 44) as usize % 4];
        e.user = [Some("u_ann"), Some("u_bo"), None][(r >> 48) as usize % 3];
        e.include = !r.is_multiple_of(11);
        let line = e.line();
        if r.is_multiple_of(7) {
            lines.push(line.clone()); // a replay
        }
        lines.push(line);
        exs.push((id, req, prompt, answer));
    }
    (lines, exs)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Model-based: segments are sealed, opened, deleted; feedback and corrections arrive;
    /// cache entries get damaged; and every export with the cache (kept across the steps, so
    /// it holds entries of earlier options, deleted segments and damaged bytes) writes the
    /// same report and bytes as one without, and accounts for every sealed segment.
    #[test]
    fn export_prepared_cache_agrees_with_no_cache_through_any_history(
        ops in proptest::collection::vec(cache_op(), 1..14)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = d.join("cache");
        let mut sealed: Vec<PathBuf> = Vec::new();
        let mut written: Vec<ModelEx> = Vec::new();
        let (mut feedback, mut corrections) = (Vec::new(), Vec::new());
        let open = d.join("examples_29991231_0001.jsonl.open");
        let thanks = regex::Regex::new("Thanks").unwrap();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                CacheOp::Seal { n, seed } => {
                    let (lines, exs) = model_examples(&format!("s{step}"), n, seed);
                    let p = d.join(format!("examples_20261101_{step:04}.jsonl"));
                    write(&p, &lines, None);
                    sealed.push(p);
                    written.extend(exs);
                }
                CacheOp::Open { n, seed } => {
                    let (lines, exs) = model_examples(&format!("o{step}"), n, seed);
                    write(&open, &lines, Some("{\"id\": \"torn"));
                    written.extend(exs);
                }
                CacheOp::Feedback { k, positive, by_request } => {
                    if let Some((id, req, _, _)) = written.get(k % written.len().max(1)) {
                        let target = if by_request { req.as_deref().unwrap_or(id) } else { id };
                        let f = if positive { Feedback::Positive } else { Feedback::Negative };
                        feedback.push(fb(&format!("fb_{step}"), "2026-12-01T00:00:00", target, f));
                    }
                }
                CacheOp::Correct { k, by_pair } => {
                    if let Some((id, _, prompt, answer)) = written.get(k % written.len().max(1)) {
                        corrections.push(
                            Corr {
                                id: &format!("corr_{step}"),
                                ts: "2026-11-15T00:00:00",
                                prompt,
                                original: answer,
                                corrected: "Measure on site first; the corner zone takes six inches on center.",
                                orig_id: (!by_pair).then_some(id.as_str()),
                                orig_req: None,
                                example_id: None,
                            }
                            .line(),
                        );
                    }
                }
                CacheOp::Delete { k } => {
                    if !sealed.is_empty() {
                        let p = sealed.remove(k % sealed.len());
                        fs::remove_file(p).unwrap();
                    }
                }
                CacheOp::Damage { k, at } => {
                    let mut entries: Vec<PathBuf> = fs::read_dir(&root)
                        .into_iter()
                        .flatten()
                        .flat_map(|fp| fs::read_dir(fp.unwrap().path()).unwrap())
                        .map(|e| e.unwrap().path())
                        .collect();
                    entries.sort();
                    if !entries.is_empty() {
                        let p = &entries[k % entries.len()];
                        let mut b = fs::read(p).unwrap();
                        if !b.is_empty() {
                            let i = at % b.len();
                            b[i] ^= 0x41;
                            fs::write(p, b).unwrap();
                        }
                    }
                }
                CacheOp::Export { v } => {
                    let fpath = d.join("feedback_20261201_0001.jsonl");
                    write(&fpath, &feedback, None);
                    let cpath = d.join("corrections_20261201_0001.jsonl");
                    write(&cpath, &corrections, None);
                    let mut examples = sealed.clone();
                    if open.exists() {
                        examples.push(open.clone());
                    }
                    let inputs = ExportInputs {
                        examples,
                        feedback: vec![fpath],
                        corrections: vec![cpath],
                    };
                    let mut o = ExportOptions {
                        temp_dir: d.join("tmp"),
                        pii_patterns: vec![thanks.clone()],
                        ..Default::default()
                    };
                    match v {
                        0 => {}
                        1 => o.since = Some(input::time_bound_micros("2026-11-10").unwrap()),
                        2 => o.min_quality = Relevance::High,
                        3 => o.near_dup_threshold = 0.0,
                        4 => o.format = Format::Kto,
                        5 => o.tags = vec!["pricing".into()],
                        6 => {
                            o.exclude_tags = vec!["epdm".into()];
                            o.min_score = 0.4;
                        }
                        7 => {
                            o.max_prompt_chars = 80;
                            o.min_response_chars = 70;
                        }
                        8 => o.include_corrections = false,
                        _ => {
                            o.split_by = SplitBy::User;
                            o.val_fraction = 0.4;
                        }
                    }
                    let (plain, plain_bytes) = plain_export(&inputs, &o);
                    let (cached, cached_bytes) = cached_export(&inputs, &o, &root);
                    let (reused, made) = cache_stats(&cached);
                    proptest::prop_assert_eq!(reused + made, sealed.len() as u64);
                    let mut want = report_sans_cache(&plain);
                    let got = report_sans_cache(&cached);
                    // The two outputs are in different files; everything else must agree.
                    for k in ["output_path", "manifest_path", "validation_path"] {
                        want[k] = got[k].clone();
                    }
                    proptest::prop_assert_eq!(got, want);
                    proptest::prop_assert!(cached_bytes == plain_bytes, "step {}: other bytes", step);
                }
            }
        }
    }
}

/// A correction's lines are scrubbed with the user id of the example it corrects (linked by
/// example id, or only by its prompt and answer), so the same question carries the same
/// pseudonym in both, and no line shows the id beside it.
#[test]
fn export_correction_gets_its_originals_user_pseudonym() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p1 = "Hi, this is jdoe42 from the Warehouse 12 crew: what primer goes under TPO?";
    let p2 = "jdoe42 again: how wide are the seam overlaps on TPO?";
    let lines = [
        Ex {
            user: Some("jdoe42"),
            ..Ex::new("train_1", "2026-11-01T10:00:00Z", p1, "Any primer will do.")
        }
        .line(),
        Ex {
            user: Some("jdoe42"),
            ..Ex::new("train_2", "2026-11-01T11:00:00Z", p2, "One inch is plenty.")
        }
        .line(),
    ];
    let seg = d.join("examples_1.jsonl");
    write(&seg, &lines, None);
    let corrections = d.join("corrections_1.jsonl");
    let by_id = Corr {
        id: "corr_1",
        ts: "2026-11-02T10:00:00Z",
        prompt: p1,
        original: "Any primer will do.",
        corrected: "Use the membrane maker's primer, jdoe42.",
        orig_id: Some("train_1"),
        orig_req: None,
        example_id: None,
    };
    let by_pair = Corr {
        id: "corr_2",
        prompt: p2,
        original: "One inch is plenty.",
        corrected: "Six inches for a welded seam.",
        orig_id: None,
        ..by_id
    };
    write(&corrections, &[by_id.line(), by_pair.line()], None);
    let inputs = ExportInputs {
        examples: vec![seg],
        corrections: vec![corrections],
        ..Default::default()
    };
    let key = b"secret";
    let user = format!("[USER_{}]", pii::pseudonymize(key, "jdoe42"));
    for format in [Format::PromptResponse, Format::Kto, Format::Dpo] {
        let o = ExportOptions {
            format,
            temp_dir: d.join("tmp"),
            pseudonym_key: key.to_vec(),
            ..Default::default()
        };
        let out = d.join("out.jsonl");
        run(&inputs, &o, &out, 512).unwrap();
        let got = read_lines(&out);
        let all = texts(&got);
        assert!(!all.contains("jdoe42"), "{format:?}: {all}");
        let prompts: Vec<&str> = got.iter().map(|l| l["prompt"].as_str().unwrap()).collect();
        for p in [p1, p2] {
            let want = p.replace("jdoe42", &user);
            assert!(prompts.contains(&want.as_str()), "{format:?}: {prompts:?}");
        }
        if format != Format::Dpo {
            assert!(all.contains(&format!("maker's primer, {user}.")), "{all}");
        }
    }
}
