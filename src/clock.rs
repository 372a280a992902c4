//! Wall-clock time for timestamps, segment names and day-change sealing.
//!
//! All time in the collector comes from here so that tests can move it: the environment
//! variable `TRAINING_COLLECTOR_CLOCK_OFFSET_SECS` (read once) shifts "now" by that many
//! seconds, which lets a process-level test start the daemon a few seconds before a UTC
//! midnight without waiting for one.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use std::sync::OnceLock;

fn offset() -> Duration {
    static OFFSET: OnceLock<Duration> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("TRAINING_COLLECTOR_CLOCK_OFFSET_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Duration::seconds)
            .unwrap_or_else(Duration::zero)
    })
}

/// A file's modification time on this clock (shifted as [`now`] is), and never later than
/// [`now`]: a file stamped in the future (a clock set wrong) is taken as written now.
pub fn file_time(modified: std::time::SystemTime) -> DateTime<Utc> {
    (DateTime::<Utc>::from(modified) + offset()).min(now())
}

/// The current UTC time (shifted by the test offset, if any).
pub fn now() -> DateTime<Utc> {
    Utc::now() + offset()
}

/// The current time as RFC 3339 with microseconds and a `Z` suffix.
pub fn now_rfc3339() -> String {
    rfc3339(now())
}

/// Formats a time the way every record of the collector does.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}
