//! The daemon's counters and gauges, and the loopback HTTP endpoint that exposes them:
//! `/metrics` in the Prometheus text format and `/healthz` as JSON (also what `stats` asks
//! for the running daemon's `buffer_count`).
//!
//! Counters are plain atomics updated from the main loop; the endpoint runs on its own
//! thread so a slow scraper can never stall intake. The exposition format is small enough to
//! write directly, which keeps a whole HTTP stack out of a sidecar.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the daemon reports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub examples_captured: AtomicU64,
    pub lines_skipped: AtomicU64,
    pub feedback_applied: AtomicU64,
    pub feedback_deferred: AtomicU64,
    pub corrections: AtomicU64,
    pub spool_files_processed: AtomicU64,
    pub spool_files_rejected: AtomicU64,
    pub spool_files_reread: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub bytes_written: AtomicU64,
    pub checkpoints_written: AtomicU64,
    pub full_polls: AtomicU64,
    pub light_polls: AtomicU64,
    pub buffered_examples: AtomicU64,
    pub last_flush_unix_seconds: AtomicU64,
    pub open_files: AtomicU64,
    pub idle_files_closed: AtomicU64,
    pub files_waiting: AtomicU64,
    /// Files `input.paths` would select but for a name that is not UTF-8: not read.
    pub log_names_not_utf8: AtomicU64,
    pub spool_stale_tmp_files: AtomicU64,
    /// Spool files applied but not retired (see `spool::Unretired`).
    pub spool_files_unretired: AtomicU64,
    /// Sealed example segments prepared for export in the background (`export.prepare_ahead`).
    pub segments_prepared_ahead: AtomicU64,
    /// Sealed example segments left for the exports to prepare (an error, or none to be had).
    pub segments_not_prepared_ahead: AtomicU64,
    /// True while writes fail and intake is paused.
    pub backpressure: AtomicBool,
    pub rejected_by_reason: Mutex<BTreeMap<String, u64>>,
    pub file_lag_bytes: Mutex<Vec<(String, u64)>>,
}

/// Rejection reasons are free text (they name the field or the parse error); metrics group
/// them by their stable prefix so the label set stays small.
pub fn reason_label(reason: &str) -> String {
    crate::record::reason_kind(reason)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: &str) {
        if let Ok(mut m) = self.rejected_by_reason.lock() {
            *m.entry(reason_label(reason)).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP training_collector_{name} {help}\n# TYPE training_collector_{name} {kind}\ntraining_collector_{name} {value}\n"
            ));
        };
        metric(
            "lines_read_total",
            "counter",
            "Complete log lines read.",
            g(&self.lines_read),
        );
        metric(
            "bytes_read_total",
            "counter",
            "Bytes of complete log lines read.",
            g(&self.bytes_read),
        );
        metric(
            "examples_captured_total",
            "counter",
            "Training examples captured.",
            g(&self.examples_captured),
        );
        metric(
            "lines_skipped_total",
            "counter",
            "Valid JSON lines that are not interactions or events.",
            g(&self.lines_skipped),
        );
        metric(
            "feedback_applied_total",
            "counter",
            "Feedback applied to a buffered example.",
            g(&self.feedback_applied),
        );
        metric(
            "feedback_deferred_total",
            "counter",
            "Feedback written to the feedback stream for a later join.",
            g(&self.feedback_deferred),
        );
        metric(
            "corrections_total",
            "counter",
            "Corrections recorded.",
            g(&self.corrections),
        );
        metric(
            "spool_files_processed_total",
            "counter",
            "Spool files applied and removed.",
            g(&self.spool_files_processed),
        );
        metric(
            "spool_files_rejected_total",
            "counter",
            "Spool files moved to spool/rejected.",
            g(&self.spool_files_rejected),
        );
        metric(
            "spool_files_reread_total",
            "counter",
            "Spool files that changed after they were read (written in place), read again.",
            g(&self.spool_files_reread),
        );
        metric(
            "flushes_total",
            "counter",
            "Buffer flushes to the segments.",
            g(&self.flushes),
        );
        metric(
            "flush_errors_total",
            "counter",
            "Failed segment writes (retried).",
            g(&self.flush_errors),
        );
        metric(
            "bytes_written_total",
            "counter",
            "Bytes written to segments.",
            g(&self.bytes_written),
        );
        metric(
            "checkpoints_written_total",
            "counter",
            "Checkpoint files written.",
            g(&self.checkpoints_written),
        );
        metric(
            "full_polls_total",
            "counter",
            "Polls that re-scanned the globs and looked at every open log (each input.rescan_interval, and after file events other than writes).",
            g(&self.full_polls),
        );
        metric(
            "light_polls_total",
            "counter",
            "Polls that read on only the logs file events reported written to.",
            g(&self.light_polls),
        );
        metric(
            "buffered_examples",
            "gauge",
            "Examples in the buffer, not yet written.",
            g(&self.buffered_examples),
        );
        metric(
            "last_flush_timestamp_seconds",
            "gauge",
            "Unix time of the last successful flush.",
            g(&self.last_flush_unix_seconds),
        );
        metric(
            "open_files",
            "gauge",
            "Log files being tailed.",
            g(&self.open_files),
        );
        metric(
            "idle_files_closed",
            "gauge",
            "Matching log files closed while idle to stay within input.max_open_files.",
            g(&self.idle_files_closed),
        );
        metric(
            "files_waiting",
            "gauge",
            "Matching log files not read yet for want of room in input.max_open_files.",
            g(&self.files_waiting),
        );
        metric(
            "log_names_not_utf8",
            "gauge",
            "Files input.paths would select but for a name that is not UTF-8: not read (rename them).",
            g(&self.log_names_not_utf8),
        );
        metric(
            "spool_stale_tmp_files",
            "gauge",
            "Files in spool/tmp/ unchanged for an hour: writers that died before renaming them into the spool.",
            g(&self.spool_stale_tmp_files),
        );
        metric(
            "spool_files_unretired",
            "gauge",
            "Spool files whose events are applied but which could not be removed or moved (permissions): not read again while unchanged.",
            g(&self.spool_files_unretired),
        );
        metric(
            "segments_prepared_ahead_total",
            "counter",
            "Sealed example segments prepared for export in the background (export.prepare_ahead): their cache entries written.",
            g(&self.segments_prepared_ahead),
        );
        metric(
            "segments_not_prepared_ahead_total",
            "counter",
            "Sealed example segments the background preparation could not prepare (see the log); exports prepare them.",
            g(&self.segments_not_prepared_ahead),
        );
        metric(
            "backpressure",
            "gauge",
            "1 while writes fail and intake is paused.",
            u64::from(self.backpressure.load(Ordering::Relaxed)),
        );
        out.push_str("# HELP training_collector_rejected_total Lines and events put in the rejected stream, by reason.\n# TYPE training_collector_rejected_total counter\n");
        if let Ok(m) = self.rejected_by_reason.lock() {
            for (reason, n) in m.iter() {
                out.push_str(&format!(
                    "training_collector_rejected_total{{reason=\"{}\"}} {n}\n",
                    escape(reason)
                ));
            }
        }
        out.push_str("# HELP training_collector_file_lag_bytes Bytes of a tailed file not read yet.\n# TYPE training_collector_file_lag_bytes gauge\n");
        if let Ok(files) = self.file_lag_bytes.lock() {
            for (path, lag) in files.iter() {
                out.push_str(&format!(
                    "training_collector_file_lag_bytes{{path=\"{}\"}} {lag}\n",
                    escape(path)
                ));
            }
        }
        out
    }

    /// The `/healthz` body.
    pub fn health_json(&self) -> String {
        serde_json::json!({
            "status": if self.backpressure.load(Ordering::Relaxed) { "degraded" } else { "ok" },
            "buffer_count": self.buffered_examples.load(Ordering::Relaxed),
            "last_flush_timestamp_seconds": self.last_flush_unix_seconds.load(Ordering::Relaxed),
            "pid": std::process::id(),
        })
        .to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` on `addr` from a background thread until the process
/// exits. Returns the bound address (port 0 picks a free one).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &metrics) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    // Drain the headers so the client sees a clean close.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => ("200 OK", "application/json", metrics.health_json()),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// A minimal HTTP GET for `stats` and tests: returns the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "HTTP error: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_by_prefix() {
        assert_eq!(
            reason_label("not valid JSON: EOF while parsing at line 1"),
            "not_valid_json"
        );
        assert_eq!(
            reason_label("missing required field: prompt (tried /prompt)"),
            "missing_required_field_prompt"
        );
    }

    #[test]
    fn endpoint_serves_metrics_and_health() {
        let m = Arc::new(Metrics::default());
        Metrics::add(&m.lines_read, 3);
        m.rejected("not valid JSON: x");
        m.buffered_examples.store(2, Ordering::Relaxed);
        let addr = serve("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let body = http_get(addr, "/metrics", Duration::from_secs(2)).unwrap();
        assert!(
            body.contains("training_collector_lines_read_total 3\n"),
            "{body}"
        );
        assert!(body.contains("training_collector_rejected_total{reason=\"not_valid_json\"} 1"));
        let health: serde_json::Value =
            serde_json::from_str(&http_get(addr, "/healthz", Duration::from_secs(2)).unwrap())
                .unwrap();
        assert_eq!(health["buffer_count"], 2);
        assert!(http_get(addr, "/nope", Duration::from_secs(2)).is_err());
    }
}
