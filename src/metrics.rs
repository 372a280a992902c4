//! The daemon's counters and gauges, and the loopback HTTP endpoint that exposes them:
//! `/metrics` in the Prometheus text format and `/healthz` as JSON (also what `stats` asks
//! for the running daemon's `buffer_count`).
//!
//! Counters are plain atomics updated from the main loop; the endpoint runs on threads of
//! its own so a slow scraper can never stall intake, each connection on its own thread and
//! with a deadline so a slow client can never stall another (a health check). The
//! exposition format is small enough to write directly, which keeps a whole HTTP stack out
//! of a sidecar.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Bytes of rotated-away files closed before they were read (see `tail::Tailer::close`).
    pub unread_bytes_lost: AtomicU64,
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
    /// Which daemon this is (see [`Metrics::set_instance`]).
    instance: std::sync::OnceLock<Instance>,
    /// Unread bytes by the path the globs selected a file under (see [`Metrics::set_file_lags`]).
    file_lag_bytes: Mutex<BTreeMap<String, u64>>,
}

/// What `/healthz` says of the daemon's identity: its data_dir lock's instance id, and the
/// data_dir, for people.
#[derive(Debug)]
struct Instance {
    id: String,
    data_dir: String,
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

    /// Names the daemon in `/healthz` (`instance`, `data_dir`): `instance` is the id in its
    /// data_dir lock ([`crate::data_dir_lock`]), which `stats` checks before it takes the
    /// answer's `buffer_count` as its data_dir's. Set once; later calls are ignored.
    pub fn set_instance(&self, instance: &str, data_dir: &std::path::Path) {
        let _ = self.instance.set(Instance {
            id: instance.to_string(),
            data_dir: data_dir.display().to_string(),
        });
    }

    /// Sets the `file_lag_bytes` gauge from each tailed file's path and unread bytes. A file
    /// renamed away by a rotation is still read to its end under the name it had, next to the
    /// new file of that name: their lags are summed, since a scrape may hold only one series
    /// per label set (Prometheus rejects the duplicate), and "how far behind is this log"
    /// includes its rotated-away part.
    pub fn set_file_lags(&self, files: impl IntoIterator<Item = (String, u64)>) {
        let mut lags = BTreeMap::new();
        for (path, lag) in files {
            *lags.entry(path).or_insert(0u64) += lag;
        }
        if let Ok(mut m) = self.file_lag_bytes.lock() {
            *m = lags;
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
            "unread_bytes_lost_total",
            "counter",
            "Bytes of rotated-away log files closed before they were read: deleted and held past input.close_deleted_after while intake was paused (each also a rejected record, reason bytes_not_read).",
            g(&self.unread_bytes_lost),
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
        out.push_str("# HELP training_collector_file_lag_bytes Bytes of a tailed log not read yet (a file rotated away from the path included).\n# TYPE training_collector_file_lag_bytes gauge\n");
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
            "instance": self.instance.get().map(|i| i.id.as_str()),
            "data_dir": self.instance.get().map(|i| i.data_dir.as_str()),
        })
        .to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// At most this many connections are answered at once; more are closed unanswered until
/// one ends. Each ends within [`CONNECTION_DEADLINE`], so clients that hold a connection
/// open (send nothing, drip bytes, never read the answer) hold a slot for that long at most
/// and cannot keep a health check from an answer.
const MAX_CONNECTIONS: usize = 16;

/// The whole of one exchange, reading the request and writing the answer: a client that
/// takes longer is cut off. Prometheus' default scrape timeout is 10 s; the answer is
/// written from memory, so only a client that is not reading gets near this.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// A request head longer than this (a GET for two paths needs a few hundred bytes) is
/// answered 431 and closed, so a client cannot make the endpoint buffer without bound.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Serves `/metrics` and `/healthz` on `addr` from background threads until the process
/// exits. Returns the bound address (port 0 picks a free one).
///
/// One thread accepts; each connection is answered on a thread of its own, up to
/// [`MAX_CONNECTIONS`] at once, each within [`CONNECTION_DEADLINE`]. A handful of
/// hand-written lines rather than an HTTP crate: tiny_http (the small synchronous one) grows
/// its thread pool without bound and puts no deadline on reading a request, so the same
/// limits would have to be added around it anyway.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS as u64 {
                    active.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!("metrics: {MAX_CONNECTIONS} connections open, one refused");
                    continue;
                }
                let slot = Slot(active.clone());
                let metrics = metrics.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = answer(stream, &metrics) {
                            tracing::debug!("metrics request failed: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    // The closure, its slot with it, is dropped: the count stays right.
                    tracing::debug!("metrics: cannot start a thread for a connection: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// One of the [`MAX_CONNECTIONS`], given back when the connection's thread ends.
struct Slot(Arc<AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The time left until `deadline`, or a `TimedOut` error once it has passed (a zero
/// timeout would mean "wait forever" to the socket).
fn left(deadline: Instant) -> std::io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection deadline passed",
        )),
    }
}

/// Reads the request head (up to the blank line), within `deadline` and
/// [`MAX_REQUEST_BYTES`]; `None` when it is too long.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let deadline = Instant::now() + CONNECTION_DEADLINE;
    let (status, ctype, body) = match read_head(&mut stream, deadline)? {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".to_string(),
        ),
        Some(head) => {
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/healthz" => ("200 OK", "application/json", metrics.health_json()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics or /healthz\n".to_string(),
                ),
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Written in pieces, each with the time left, so a client that stops reading is cut off
    // at the deadline however large the answer.
    let mut rest = response.as_bytes();
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        match stream.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.flush()
}

/// A minimal HTTP GET for `stats` and tests: returns the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
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

    /// A rotated file still being read and the new file under its old name make one series.
    #[test]
    fn file_lags_are_one_series_per_path() {
        let m = Metrics::default();
        m.set_file_lags([
            ("/l/app.log".to_string(), 10),
            ("/l/b.log".to_string(), 1),
            ("/l/app.log".to_string(), 5),
        ]);
        let body = m.render();
        let lags: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("training_collector_file_lag_bytes{"))
            .collect();
        assert_eq!(
            lags,
            [
                "training_collector_file_lag_bytes{path=\"/l/app.log\"} 15",
                "training_collector_file_lag_bytes{path=\"/l/b.log\"} 1",
            ]
        );
    }

    /// A request head that never ends is cut off at MAX_REQUEST_BYTES with a 431, and a
    /// client that sends nothing is disconnected at the deadline, not held forever.
    #[test]
    fn oversized_and_silent_requests_are_cut_off() {
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::default()).unwrap();
        let mut big = TcpStream::connect(addr).unwrap();
        big.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // One byte over the cap, so the server has read it all when it answers (closing with
        // bytes unread would reset the connection).
        let mut header = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
        header.resize(MAX_REQUEST_BYTES + 1, b'a');
        big.write_all(&header).unwrap();
        let mut resp = String::new();
        let _ = big.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 431"), "{resp:?}");

        let mut silent = TcpStream::connect(addr).unwrap();
        silent
            .set_read_timeout(Some(CONNECTION_DEADLINE * 4))
            .unwrap();
        let mut buf = [0u8; 16];
        match silent.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent client is still connected: {other:?}"),
        }
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
