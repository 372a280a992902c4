//! Helpers shared by the integration tests: where `../shared` is, and running python3 (the
//! log generator and the seed oracle).

#![allow(dead_code)]

use std::path::PathBuf;

/// The shared folder beside the checkout (CI lays it there); TRAINING_COLLECTOR_SHARED
/// overrides it.
pub fn shared_dir() -> PathBuf {
    if let Ok(p) = std::env::var("TRAINING_COLLECTOR_SHARED") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.join("bench/training_collector.py").exists(),
        "the seed is not at {} (set TRAINING_COLLECTOR_SHARED to the shared/ folder)",
        p.display()
    );
    p
}

/// Runs `python3 args...` in a scratch folder with `input` (JSON lines) on its stdin and
/// returns the JSON lines it prints: how the tests ask the seed's own code.
pub fn python_json_lines(
    args: &[&std::ffi::OsStr],
    input: impl IntoIterator<Item = serde_json::Value>,
) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let scratch = tempfile::tempdir().unwrap();
    let mut child = Command::new("python3")
        .args(args)
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input: String = input.into_iter().map(|v| format!("{v}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread: the child's answers fill its stdout pipe meanwhile.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "python3 {args:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The seed's answer for each (prompt, response) pair, one JSON object each, from
/// tests/support/seed_oracle.py run over the seed's own code (`extra`: its options, such as
/// `--texts` for the stripped texts the seed stores).
pub fn seed_oracle(pairs: &[(String, String)], extra: &[&str]) -> Vec<serde_json::Value> {
    let oracle = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/seed_oracle.py");
    let bench = shared_dir().join("bench");
    let mut args = vec![std::ffi::OsStr::new(oracle), bench.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    python_json_lines(
        &args,
        pairs
            .iter()
            .map(|(p, r)| serde_json::json!({"prompt": p, "response": r})),
    )
}

/// Runs genlog.py and returns its lines.
pub fn genlog(n: usize, seed: u64, extra: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("python3")
        .arg(shared_dir().join("bench/genlog.py"))
        .arg(n.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .args(extra)
        .output()
        .expect("python3 runs genlog.py");
    assert!(
        out.status.success(),
        "genlog.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("genlog output is UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_training-collector"))
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with `what` then.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One interaction line in the default (seed-style) log format.
pub fn interaction_line(tag: &str, i: usize) -> String {
    serde_json::json!({
        "ts": "2026-11-27T08:00:00Z",
        "event": "interaction",
        "request_id": format!("{tag}-{i:06}"),
        "query": format!("What is the TPO seam overlap for roof section {tag} number {i}?"),
        "response": format!("Use a 2.5 inch welded seam per Carlisle for section {tag} {i}, check the submittal."),
        "user_id": "u1",
    })
    .to_string()
}

/// What the daemon logs once its inputs are open and its signal handlers installed.
pub const READY_LINE: &str = "training-collector running";

/// A scratch installation: a folder with logs/, data/, spool/ and a config.toml.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// `extra` is appended to a base config tuned for fast tests (short intervals, no
    /// metrics endpoint); later keys of the same table override nothing, so pass whole
    /// tables that the base does not have, or use `with_config`.
    pub fn new() -> Sandbox {
        Sandbox::with_config(&base_config(&[]))
    }

    pub fn with_config(config: &str) -> Sandbox {
        Sandbox::with_config_in(config, tempfile::tempdir().unwrap())
    }

    /// Like `with_config`, in a folder whose name starts with `prefix` (glob characters,
    /// say).
    pub fn with_config_named(config: &str, prefix: &str) -> Sandbox {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        Sandbox::with_config_in(config, dir)
    }

    fn with_config_in(config: &str, dir: tempfile::TempDir) -> Sandbox {
        for d in ["logs", "data", "spool"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config.toml")
    }

    pub fn start(&self) -> Running {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(self.config_path()).arg("run");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.start_command(cmd)
    }

    /// Starts a prepared command (the daemon, perhaps behind `sh -c ... exec`) with its
    /// stderr in daemon.log, and waits until it is ready.
    pub fn start_command(&self, mut cmd: Command) -> Running {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let ready_before = self.daemon_log().matches(READY_LINE).count();
        let mut running = Running {
            child: cmd.spawn().expect("the daemon starts"),
            log: self.path("daemon.log"),
        };
        // Signals sent before the handlers are installed would kill it: wait for readiness.
        wait_until(Duration::from_secs(20), "the daemon to be ready", || {
            assert!(
                running.is_running(),
                "the daemon exited at start:\n{}",
                self.daemon_log()
            );
            self.daemon_log().matches(READY_LINE).count() > ready_before
        });
        running
    }

    /// Runs a CLI command against this sandbox's config; returns (status, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `export --output out.jsonl` plus `extra` arguments, which must succeed: its report
    /// and the bytes of the training file.
    pub fn export_to_out(&self, extra: &[&str]) -> (Value, Vec<u8>) {
        let out = self.path("out.jsonl");
        let mut a = vec!["export", "--output", out.to_str().unwrap()];
        a.extend_from_slice(extra);
        let (rc, o, e) = self.cli(&a);
        assert_eq!(rc, 0, "{o}{e}");
        let report: Value = serde_json::from_str(&o).unwrap();
        (report, std::fs::read(&out).unwrap())
    }

    /// Every example record in data/, sealed and open segments (a torn last line of an
    /// open segment is not a record yet).
    pub fn examples(&self) -> Vec<Value> {
        records(&self.data(), "examples_")
    }

    pub fn records(&self, prefix: &str) -> Vec<Value> {
        records(&self.data(), prefix)
    }

    /// Request ids of all examples, sorted (with repeats, so a duplicate shows).
    pub fn example_request_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .examples()
            .iter()
            .filter_map(|e| e["metadata"]["request_id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
}

/// A config for tests: everything under the sandbox, fast intervals, no metrics port.
/// `extra` lines go into `[buffer]`-free top-level tables appended at the end.
pub fn base_config(extra: &[&str]) -> String {
    let mut s = String::from(
        r#"data_dir = "data"
log_level = "info"

[input]
paths = ["logs/*.log"]
rotate_wait = "5s"
rescan_interval = "100ms"

[buffer]
size = 50
flush_interval = "200ms"

[spool]
dir = "spool"

[metrics]
listen = ""
"#,
    );
    for e in extra {
        s.push_str(e);
        s.push('\n');
    }
    s
}

pub fn records(dir: &Path, prefix: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with(prefix) && (n.ends_with(".jsonl") || n.ends_with(".jsonl.open"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.split_inclusive('\n') {
            if !line.ends_with('\n') {
                continue;
            }
            out.push(
                serde_json::from_str(line.trim_end())
                    .unwrap_or_else(|e| panic!("{}: bad record {line:?}: {e}", f.display())),
            );
        }
    }
    out
}

/// A running daemon process.
pub struct Running {
    pub child: Child,
    log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// SIGTERM and wait; asserts a clean exit (status 0) within `timeout`.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait(Duration::from_secs(30));
        assert_eq!(
            status,
            Some(0),
            "daemon did not exit 0 on SIGTERM; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for exit; returns the exit code (None on timeout or death by signal).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends lines (each gets a newline) to a file, creating it.
pub fn append_lines(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
}

/// The request ids `tag-000000` .. for `range`, sorted like `example_request_ids`.
pub fn ids(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("{tag}-{i:06}")).collect();
    v.sort();
    v
}
