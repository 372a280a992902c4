//! The daemon as a process: flushing at size and on the timer, signals, sealing, crash
//! recovery, backpressure on a failing disk, reload, metrics.

mod support;

use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn captures_lines_and_stops_cleanly_sealing_everything() {
    let sb = Sandbox::new();
    let lines: Vec<String> = (0..120).map(|i| interaction_line("a", i)).collect();
    append_lines(&sb.path("logs/app.log"), &lines);
    let d = sb.start();
    wait_until(T, "120 examples", || sb.examples().len() == 120);
    d.stop();
    assert_eq!(sb.example_request_ids(), ids("a", 0..120));
    let open: Vec<_> = std::fs::read_dir(sb.data())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".open"))
        .collect();
    assert!(
        open.is_empty(),
        "segments left open after SIGTERM: {open:?}"
    );
}
