//! Helpers shared by the integration tests: where `../shared` is, and running python3.

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
