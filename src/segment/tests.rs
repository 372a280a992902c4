//! Tests of the segment writer, recovery and reader: the file-level contract of DESIGN.md
//! ("Files") checked against real files in temporary directories.

use super::*;
use chrono::TimeZone;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn opts(max_file_bytes: u64, rotate_secs: u64, fsync: bool) -> SegmentOptions {
    SegmentOptions {
        max_file_bytes,
        rotate_interval: Duration::from_secs(rotate_secs),
        fsync,
    }
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid test time")
}

fn line(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n}}}").into_bytes()
}

/// Names of all files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}

/// The `n` of every record of `stream`, across all segments in write order.
fn all_ns(dir: &Path, stream: Stream) -> Vec<u64> {
    let files = list(dir, stream).expect("list");
    read_records::<serde_json::Value>(&files)
        .map(|r| {
            let (_, _, v) = r.expect("io");
            v.expect("json")["n"].as_u64().expect("n")
        })
        .collect()
}

fn open_writer(dir: &Path, o: SegmentOptions) -> (SegmentWriter, Recovery) {
    SegmentWriter::open(dir, Stream::Examples, o).expect("open")
}

#[test]
fn writers_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<SegmentWriter>();
    assert_send::<Segments>();
    assert_send::<SegmentError>();
}

#[test]
fn names_round_trip_and_reject_noise() {
    let day = NaiveDate::from_ymd_opt(2026, 1, 2).expect("date");
    let n = SegmentName {
        stream: Stream::Feedback,
        day,
        number: 7,
        open: true,
    };
    assert_eq!(n.file_name(), "feedback_20260102_0007.jsonl.open");
    assert_eq!(
        SegmentName::parse(Stream::Feedback, &n.file_name()),
        Some(n)
    );
    assert_eq!(n.sealed().file_name(), "feedback_20260102_0007.jsonl");
    for bad in [
        "feedback_20260102_0007.jsonl.tmp",
        "feedback_20260102_007.jsonl",
        "feedback_20261302_0007.jsonl",
        "feedback_20260102_0000.jsonl",
        "feedback_export.jsonl",
        "examples_20260102_0007.jsonl",
        "feedbackx_20260102_0007.jsonl",
    ] {
        assert_eq!(SegmentName::parse(Stream::Feedback, bad), None, "{bad}");
    }
}

#[test]
fn no_file_until_a_flush_with_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let (mut w, rec) = open_writer(&dir, opts(1000, 3600, true));
    assert!(rec.segments.is_empty());
    assert!(names(&dir).is_empty(), "open() creates no file");
    assert_eq!(
        w.flush_at(at(2026, 1, 2, 3, 4, 5)).expect("flush"),
        FlushStats::default()
    );
    w.append(&line(1)).expect("append");
    assert_eq!(w.pending(), 1);
    assert!(names(&dir).is_empty(), "append() creates no file");
    assert_eq!(
        w.maybe_seal(at(2026, 1, 3, 0, 0, 0)).expect("maybe_seal"),
        None
    );
    assert_eq!(w.seal().expect("seal"), None);
    drop(w);
    assert!(names(&dir).is_empty(), "nothing flushed, nothing on disk");
}

#[test]
fn rejects_lines_that_would_break_framing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open_writer(tmp.path(), opts(1000, 3600, false));
    assert!(matches!(
        w.append(b"{\"a\":\n1}"),
        Err(SegmentError::InvalidLine(_))
    ));
    assert!(matches!(w.append(b""), Err(SegmentError::InvalidLine(_))));
    assert_eq!(w.pending(), 0);
}

#[test]
fn flushed_lines_are_on_disk_then_sealed_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut w, _) = open_writer(dir, opts(1 << 20, 3600, true));
    for n in 1..=3 {
        w.append(&line(n)).expect("append");
    }
    let now = at(2026, 1, 2, 3, 4, 5);
    let stats = w.flush_at(now).expect("flush");
    let open = dir.join("examples_20260102_0001.jsonl.open");
    assert_eq!(stats.lines, 3);
    assert_eq!(stats.bytes, read(&open).len() as u64);
    assert_eq!(stats.segment.as_deref(), Some(open.as_path()));
    assert_eq!(w.pending(), 0);
    assert_eq!(w.bytes_written_total(), stats.bytes);
    assert_eq!(read(&open), b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    assert_eq!(w.open_segment(), Some(open.as_path()));

    w.append(&line(4)).expect("append");
    w.flush_at(now).expect("flush");
    assert_eq!(names(dir), vec!["examples_20260102_0001.jsonl.open"]);
    let sealed = w.seal().expect("seal").expect("a segment was open");
    assert_eq!(sealed, dir.join("examples_20260102_0001.jsonl"));
    assert_eq!(names(dir), vec!["examples_20260102_0001.jsonl"]);
    assert_eq!(
        read(&sealed),
        b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n"
    );
    assert_eq!(w.open_segment(), None);

    // The next flush opens a new segment and leaves the sealed one alone.
    w.append(&line(5)).expect("append");
    w.flush_at(now).expect("flush");
    assert_eq!(
        names(dir),
        vec![
            "examples_20260102_0001.jsonl",
            "examples_20260102_0002.jsonl.open"
        ]
    );
    assert_eq!(
        read(&sealed),
        b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n"
    );
    assert_eq!(all_ns(dir, Stream::Examples), vec![1, 2, 3, 4, 5]);
}

#[test]
fn seals_at_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Each line is 8 bytes with its newline; 4 fit in 32.
    let (mut w, _) = open_writer(dir, opts(32, 3600, false));
    let now = at(2026, 1, 2, 3, 4, 5);
    for n in 1..=3 {
        w.append(&line(n)).expect("append");
        w.flush_at(now).expect("flush");
        assert_eq!(
            w.maybe_seal(now).expect("maybe_seal"),
            None,
            "24 bytes < 32"
        );
    }
    w.append(&line(4)).expect("append");
    w.flush_at(now).expect("flush");
    let sealed = w
        .maybe_seal(now)
        .expect("maybe_seal")
        .expect("32 bytes is full");
    assert_eq!(sealed, dir.join("examples_20260102_0001.jsonl"));
    assert_eq!(read(&sealed).len(), 32);
    assert_eq!(w.sealed_total(), 1);

    // A flush that would overflow a non-empty segment seals it first.
    for n in 5..=7 {
        w.append(&line(n)).expect("append");
    }
    w.flush_at(now).expect("flush"); // 24 bytes into 0002
    w.append(&line(8)).expect("append");
    w.append(&line(9)).expect("append");
    let stats = w.flush_at(now).expect("flush"); // 24 + 16 > 32
    assert_eq!(stats.sealed, vec![dir.join("examples_20260102_0002.jsonl")]);
    assert_eq!(w.sealed_total(), 2, "sealed by a flush counts too");
    assert_eq!(
        stats.segment,
        Some(dir.join("examples_20260102_0003.jsonl.open"))
    );
    assert_eq!(read(&dir.join("examples_20260102_0002.jsonl")).len(), 24);
    assert_eq!(all_ns(dir, Stream::Examples), (1..=9).collect::<Vec<_>>());
}

#[test]
fn seals_at_utc_day_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut w, _) = open_writer(dir, opts(1 << 20, 24 * 3600, true));
    w.append(&line(1)).expect("append");
    w.flush_at(at(2026, 1, 2, 23, 59, 50)).expect("flush");
    assert_eq!(
        w.maybe_seal(at(2026, 1, 2, 23, 59, 59)).expect("seal"),
        None
    );
    let sealed = w
        .maybe_seal(at(2026, 1, 3, 0, 0, 1))
        .expect("seal")
        .expect("day changed");
    assert_eq!(sealed, dir.join("examples_20260102_0001.jsonl"));
    w.append(&line(2)).expect("append");
    w.flush_at(at(2026, 1, 3, 0, 0, 2)).expect("flush");
    assert_eq!(
        names(dir),
        vec![
            "examples_20260102_0001.jsonl",
            "examples_20260103_0001.jsonl.open"
        ]
    );

    // A flush on a later day seals the old day's segment before writing, even without a
    // maybe_seal in between: data of day 4 never lands in a file named after day 3.
    w.append(&line(3)).expect("append");
    let stats = w.flush_at(at(2026, 1, 4, 0, 0, 0)).expect("flush");
    assert_eq!(stats.sealed, vec![dir.join("examples_20260103_0001.jsonl")]);
    assert_eq!(
        stats.segment,
        Some(dir.join("examples_20260104_0001.jsonl.open"))
    );
    assert_eq!(all_ns(dir, Stream::Examples), vec![1, 2, 3]);
}

#[test]
fn seals_at_rotate_interval() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut w, _) = open_writer(dir, opts(1 << 20, 60, false));
    let t0 = at(2026, 1, 2, 10, 0, 0);
    w.append(&line(1)).expect("append");
    w.flush_at(t0).expect("flush");
    w.append(&line(2)).expect("append");
    w.flush_at(t0 + chrono::Duration::seconds(30))
        .expect("flush");
    assert_eq!(
        w.maybe_seal(t0 + chrono::Duration::seconds(59))
            .expect("seal"),
        None,
        "age counts from the opening, not the last write"
    );
    let sealed = w
        .maybe_seal(t0 + chrono::Duration::seconds(60))
        .expect("seal")
        .expect("interval reached");
    assert_eq!(read(&sealed), b"{\"n\":1}\n{\"n\":2}\n");

    // Zero turns age rotation off.
    w.set_options(opts(1 << 20, 0, false));
    w.append(&line(3)).expect("append");
    w.flush_at(t0).expect("flush");
    assert_eq!(
        w.maybe_seal(t0 + chrono::Duration::hours(5)).expect("seal"),
        None
    );
}

#[test]
fn numbering_continues_after_reopen_and_never_overwrites() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let now = at(2026, 1, 2, 12, 0, 0);
    {
        let (mut w, _) = open_writer(dir, opts(1 << 20, 3600, true));
        w.append(&line(1)).expect("append");
        w.flush_at(now).expect("flush");
        w.seal().expect("seal");
        w.append(&line(2)).expect("append");
        w.flush_at(now).expect("flush");
        // Crash: dropped with 0002 still open.
    }
    let (mut w, rec) = open_writer(dir, opts(1 << 20, 3600, true));
    assert_eq!(rec.segments.len(), 1);
    assert!(rec.is_clean());
    assert_eq!(
        rec.segments[0].sealed_path,
        Some(dir.join("examples_20260102_0002.jsonl"))
    );
    let before_1 = read(&dir.join("examples_20260102_0001.jsonl"));
    let before_2 = read(&dir.join("examples_20260102_0002.jsonl"));
    w.append(&line(3)).expect("append");
    let stats = w.flush_at(now).expect("flush");
    assert_eq!(
        stats.segment,
        Some(dir.join("examples_20260102_0003.jsonl.open"))
    );
    w.seal().expect("seal");
    assert_eq!(read(&dir.join("examples_20260102_0001.jsonl")), before_1);
    assert_eq!(read(&dir.join("examples_20260102_0002.jsonl")), before_2);

    // A gap (or a hand-made file) with a higher number: continue above it.
    std::fs::write(dir.join("examples_20260102_0007.jsonl"), b"{\"n\":7}\n").expect("write");
    drop(w);
    let (mut w, _) = open_writer(dir, opts(1 << 20, 3600, true));
    w.append(&line(8)).expect("append");
    let stats = w.flush_at(now).expect("flush");
    assert_eq!(
        stats.segment,
        Some(dir.join("examples_20260102_0008.jsonl.open"))
    );
    assert_eq!(
        read(&dir.join("examples_20260102_0007.jsonl")),
        b"{\"n\":7}\n"
    );

    // Numbers restart per day and per stream.
    w.append(&line(9)).expect("append");
    let stats = w.flush_at(at(2026, 1, 3, 0, 0, 0)).expect("flush");
    assert_eq!(
        stats.segment,
        Some(dir.join("examples_20260103_0001.jsonl.open"))
    );
    let (mut f, _) = SegmentWriter::open(dir, Stream::Feedback, opts(1 << 20, 3600, true))
        .expect("open feedback");
    f.append(&line(1)).expect("append");
    let stats = f.flush_at(now).expect("flush");
    assert_eq!(
        stats.segment,
        Some(dir.join("feedback_20260102_0001.jsonl.open"))
    );
}

#[test]
fn recovered_open_of_an_earlier_day_keeps_its_name_and_today_continues() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("examples_20260101_0005.jsonl.open"),
        b"{\"n\":1}\n",
    )
    .expect("write");
    std::fs::write(dir.join("examples_20260102_0001.jsonl"), b"{\"n\":2}\n").expect("write");
    std::fs::write(dir.join("examples_20260102_0002.jsonl"), b"{\"n\":3}\n").expect("write");
    let (mut w, rec) = open_writer(dir, opts(1 << 20, 3600, true));
    assert_eq!(
        rec.segments[0].sealed_path,
        Some(dir.join("examples_20260101_0005.jsonl"))
    );
    w.append(&line(4)).expect("append");
    let stats = w.flush_at(at(2026, 1, 2, 8, 0, 0)).expect("flush");
    assert_eq!(
        stats.segment,
        Some(dir.join("examples_20260102_0003.jsonl.open"))
    );
    assert_eq!(all_ns(dir, Stream::Examples), vec![1, 2, 3, 4]);
}

#[test]
fn recovery_whose_sealed_name_is_taken_renumbers_instead_of_overwriting() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("examples_20260102_0001.jsonl.open"),
        b"{\"n\":2}\n",
    )
    .expect("write");
    std::fs::write(dir.join("examples_20260102_0001.jsonl"), b"{\"n\":1}\n").expect("write");
    let (_w, rec) = open_writer(dir, opts(1 << 20, 3600, true));
    assert_eq!(
        rec.segments[0].sealed_path,
        Some(dir.join("examples_20260102_0002.jsonl"))
    );
    assert_eq!(
        read(&dir.join("examples_20260102_0001.jsonl")),
        b"{\"n\":1}\n"
    );
    assert_eq!(
        read(&dir.join("examples_20260102_0002.jsonl")),
        b"{\"n\":2}\n"
    );
}

#[test]
fn crash_recovery_cuts_a_torn_tail_and_seals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let open = dir.join("examples_20260102_0003.jsonl.open");
    std::fs::write(&open, b"{\"n\":1}\n{\"n\":2}\n{\"n\":3,\"p").expect("write");
    let (_w, rec) = open_writer(dir, opts(1 << 20, 3600, true));
    assert_eq!(rec.stream, Stream::Examples);
    assert_eq!(rec.segments.len(), 1);
    let s = &rec.segments[0];
    assert_eq!(s.open_path, open);
    assert_eq!(s.kept_bytes, 16);
    let sealed = dir.join("examples_20260102_0003.jsonl");
    assert_eq!(s.sealed_path.as_deref(), Some(sealed.as_path()));
    assert_eq!(
        s.torn,
        vec![TornLine {
            path: open.clone(),
            offset: 16,
            len: 9,
            bytes: b"{\"n\":3,\"p".to_vec(),
            reason: TornReason::MissingNewline,
        }]
    );
    assert!(!rec.is_clean());
    assert_eq!(rec.torn_lines().count(), 1);
    assert_eq!(read(&sealed), b"{\"n\":1}\n{\"n\":2}\n");
    assert_eq!(names(dir), vec!["examples_20260102_0003.jsonl"]);
}

#[test]
fn crash_recovery_cuts_a_last_line_that_is_not_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // What a power loss can leave: the length grew, the data did not arrive.
    std::fs::write(
        dir.join("rejected_20260102_0001.jsonl.open"),
        b"{\"n\":1}\n\0\0\0\0\n\0\0",
    )
    .expect("write");
    let (_w, rec) =
        SegmentWriter::open(dir, Stream::Rejected, opts(1 << 20, 3600, false)).expect("open");
    let torn: Vec<_> = rec.torn_lines().map(|t| (t.offset, t.reason)).collect();
    assert_eq!(
        torn,
        vec![
            (8, TornReason::InvalidJson),
            (13, TornReason::MissingNewline)
        ]
    );
    assert_eq!(
        rec.torn_lines().next().map(|t| t.bytes.clone()),
        Some(vec![0; 4])
    );
    assert_eq!(
        read(&dir.join("rejected_20260102_0001.jsonl")),
        b"{\"n\":1}\n"
    );
}

#[test]
fn crash_recovery_removes_open_files_with_nothing_complete() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("examples_20260102_0001.jsonl.open"), b"").expect("write");
    std::fs::write(dir.join("feedback_20260102_0001.jsonl.open"), b"{\"half").expect("write");
    let (_s, recs) = Segments::open_all(dir, opts(1 << 20, 3600, true)).expect("open_all");
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].segments[0].sealed_path, None);
    assert!(recs[0].is_clean());
    assert_eq!(recs[1].segments[0].sealed_path, None);
    assert_eq!(recs[1].segments[0].torn[0].bytes, b"{\"half");
    assert!(
        names(dir).is_empty(),
        "no empty segment files: {:?}",
        names(dir)
    );
}

#[test]
fn recovery_scans_long_lines_across_chunks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let long = format!("{{\"n\":1,\"pad\":\"{}\"}}\n", "x".repeat(200_000));
    let mut content = long.clone().into_bytes();
    content.extend_from_slice("y".repeat(150_000).as_bytes());
    std::fs::write(dir.join("examples_20260102_0001.jsonl.open"), &content).expect("write");
    let (_w, rec) = open_writer(dir, opts(1 << 20, 3600, false));
    let t = rec.torn_lines().next().expect("torn");
    assert_eq!((t.offset, t.len), (long.len() as u64, 150_000));
    assert_eq!(
        read(&dir.join("examples_20260102_0001.jsonl")),
        long.as_bytes()
    );
}

#[test]
fn recovers_every_open_file_of_the_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("examples_20260101_0001.jsonl.open"),
        b"{\"n\":1}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("examples_20260102_0004.jsonl.open"),
        b"{\"n\":2}\n{\"n",
    )
    .expect("write");
    let (_w, rec) = open_writer(dir, opts(1 << 20, 3600, true));
    let sealed: Vec<_> = rec.segments.iter().map(|s| s.sealed_path.clone()).collect();
    assert_eq!(
        sealed,
        vec![
            Some(dir.join("examples_20260101_0001.jsonl")),
            Some(dir.join("examples_20260102_0004.jsonl")),
        ]
    );
    assert_eq!(rec.torn_lines().count(), 1);
    assert_eq!(all_ns(dir, Stream::Examples), vec![1, 2]);
    assert!(names(dir).iter().all(|n| !n.ends_with(".open")));
}

#[test]
fn a_clock_that_steps_back_does_not_seal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open_writer(tmp.path(), opts(1 << 20, 60, false));
    w.append(&line(1)).expect("append");
    w.flush_at(at(2026, 1, 2, 0, 0, 30)).expect("flush");
    assert_eq!(w.maybe_seal(at(2026, 1, 1, 23, 0, 0)).expect("seal"), None);
}

#[test]
fn close_flushes_then_seals_and_options_change_on_the_fly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut s, _) = Segments::open_all(dir, opts(1 << 20, 3600, true)).expect("open_all");
    s.rejected.append(&line(1)).expect("append");
    s.flush_all().expect("flush");
    s.rejected.append(&line(2)).expect("append");
    // SIGHUP: a smaller size limit applies to the open segment at the next check.
    s.set_options(opts(8, 3600, true));
    assert_eq!(s.rejected.options().max_file_bytes, 8);
    let now = crate::clock::now();
    let sealed = s.maybe_seal_all(now).expect("maybe_seal_all");
    assert_eq!(sealed.len(), 1);
    assert_eq!(
        s.rejected.pending(),
        1,
        "maybe_seal leaves pending lines pending"
    );
    let last = s.rejected.close().expect("close").expect("sealed");
    assert_eq!(read(&last), b"{\"n\":2}\n");
    assert_eq!(all_ns(dir, Stream::Rejected), vec![1, 2]);
    assert_eq!(s.bytes_written_total(), 16);
    assert!(names(dir).iter().all(|n| !n.ends_with(".open")));
}

/// A fault plan shared between the test and the writer's hook; each fault fires once.
#[derive(Default)]
struct Plan {
    /// Fail the next write after writing this many bytes, with this errno.
    write: Option<(usize, i32)>,
    /// Fail the next fsync with this errno.
    sync: Option<i32>,
}

struct Faults(Arc<Mutex<Plan>>);

impl FaultHook for Faults {
    fn on_write(&mut self, _len: usize) -> Option<(usize, io::Error)> {
        let mut plan = self.0.lock().ok()?;
        plan.write
            .take()
            .map(|(n, errno)| (n, io::Error::from_raw_os_error(errno)))
    }
    fn on_sync(&mut self) -> Option<io::Error> {
        let mut plan = self.0.lock().ok()?;
        plan.sync.take().map(io::Error::from_raw_os_error)
    }
}

#[test]
fn failed_flush_rolls_back_and_retry_writes_each_line_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let plan = Arc::new(Mutex::new(Plan::default()));
    let (mut w, _) = open_writer(dir, opts(1 << 20, 3600, true));
    w.set_fault_hook(Some(Box::new(Faults(plan.clone()))));
    let now = at(2026, 1, 2, 3, 4, 5);

    // Failure on the first flush of a segment: the created file is removed again.
    w.append(&line(1)).expect("append");
    plan.lock().expect("lock").write = Some((3, libc::ENOSPC));
    let err = w.flush_at(now).expect_err("injected ENOSPC");
    assert!(err.is_disk_full(), "{err}");
    assert_eq!(w.pending(), 1);
    assert!(names(dir).is_empty(), "no empty segment: {:?}", names(dir));
    w.flush_at(now).expect("retry");
    let open = dir.join("examples_20260102_0001.jsonl.open");
    assert_eq!(read(&open), b"{\"n\":1}\n");

    // Short write then ENOSPC in a segment with data: truncated back to the old length.
    for n in 2..=4 {
        w.append(&line(n)).expect("append");
    }
    plan.lock().expect("lock").write = Some((11, libc::ENOSPC));
    let err = w.flush_at(now).expect_err("injected ENOSPC");
    assert!(err.is_disk_full());
    assert_eq!(read(&open), b"{\"n\":1}\n", "truncated back");
    assert_eq!(w.pending(), 3);
    let written = w.bytes_written_total();

    // The data reached the file but fsync failed (EIO): also rolled back.
    plan.lock().expect("lock").sync = Some(libc::EIO);
    let err = w.flush_at(now).expect_err("injected EIO");
    assert!(!err.is_disk_full());
    assert_eq!(
        err.io_error().and_then(io::Error::raw_os_error),
        Some(libc::EIO)
    );
    assert_eq!(read(&open), b"{\"n\":1}\n", "truncated back");
    assert_eq!(w.pending(), 3);
    assert_eq!(w.bytes_written_total(), written);

    let stats = w.flush_at(now).expect("retry");
    assert_eq!(stats.lines, 3);
    assert_eq!(w.pending(), 0);
    assert_eq!(read(&open), b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");

    // A failed fsync at seal keeps the segment open; the retry seals it.
    plan.lock().expect("lock").sync = Some(libc::EIO);
    w.seal().expect_err("injected EIO at seal");
    assert_eq!(w.open_segment(), Some(open.as_path()));
    w.seal().expect("seal").expect("sealed");
    assert_eq!(all_ns(dir, Stream::Examples), vec![1, 2, 3, 4]);
}

#[test]
fn segments_flush_all_stops_at_first_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut s, _) = Segments::open_all(dir, opts(1 << 20, 3600, false)).expect("open_all");
    let plan = Arc::new(Mutex::new(Plan {
        write: Some((0, libc::EIO)),
        sync: None,
    }));
    s.feedback.set_fault_hook(Some(Box::new(Faults(plan))));
    for st in Stream::ALL {
        s.get_mut(st).append(&line(1)).expect("append");
    }
    let now = at(2026, 1, 2, 3, 4, 5);
    s.flush_all_at(now).expect_err("feedback fails");
    assert_eq!(s.examples.pending(), 0);
    assert_eq!(s.feedback.pending(), 1);
    assert_eq!(s.corrections.pending(), 1);
    assert_eq!(s.pending(), 3);
    let stats = s.flush_all_at(now).expect("retry");
    assert_eq!(stats.lines, 3);
    assert_eq!(s.seal_all().expect("seal_all").len(), 4);
    for st in Stream::ALL {
        assert_eq!(all_ns(dir, st), vec![1], "{st}");
    }
    assert_eq!(
        s.maybe_seal_all(now).expect("maybe_seal_all"),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn list_orders_by_day_then_number_with_open_last() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for n in [
        "examples_20260101_0010.jsonl",
        "examples_20260101_0002.jsonl",
        "examples_20260102_0001.jsonl.open",
        "examples_20251231_0003.jsonl",
        "examples_20260101_0011.jsonl.open",
        "examples_20260101_0001.jsonl",
        "feedback_20260101_0001.jsonl",
        "examples_20260101_0004.jsonl.tmp",
        "examples_export.jsonl",
        "training_export.jsonl",
    ] {
        std::fs::write(dir.join(n), b"").expect("write");
    }
    let got: Vec<String> = list(dir, Stream::Examples)
        .expect("list")
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        got,
        vec![
            "examples_20251231_0003.jsonl",
            "examples_20260101_0001.jsonl",
            "examples_20260101_0002.jsonl",
            "examples_20260101_0010.jsonl",
            "examples_20260101_0011.jsonl.open",
            "examples_20260102_0001.jsonl.open",
        ]
    );
    assert!(list(&dir.join("missing"), Stream::Examples)
        .expect("missing dir")
        .is_empty());
}

#[test]
fn read_records_streams_sealed_and_open_skipping_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("examples_20260101_0001.jsonl"),
        b"{\"n\":1}\nnot json\n\n{\"n\":2}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("examples_20260101_0002.jsonl.open"),
        b"{\"n\":3}\n{\"n\":4,\"torn",
    )
    .expect("write");
    let files = list(dir, Stream::Examples).expect("list");
    let got: Vec<(String, u64, Option<u64>)> = read_records::<serde_json::Value>(&files)
        .map(|r| {
            let (p, no, v) = r.expect("io");
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, no, v.ok().and_then(|v| v["n"].as_u64()))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("examples_20260101_0001.jsonl".to_string(), 1, Some(1)),
            ("examples_20260101_0001.jsonl".to_string(), 2, None),
            ("examples_20260101_0001.jsonl".to_string(), 4, Some(2)),
            ("examples_20260101_0002.jsonl.open".to_string(), 1, Some(3)),
        ]
    );
}

#[test]
fn read_records_follows_an_open_segment_sealed_after_listing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut w, _) = open_writer(dir, opts(1 << 20, 3600, false));
    w.append(&line(1)).expect("append");
    w.flush_at(at(2026, 1, 2, 3, 4, 5)).expect("flush");
    let files = list(dir, Stream::Examples).expect("list");
    w.seal().expect("seal");
    let got: Vec<u64> = read_records::<serde_json::Value>(&files)
        .map(|r| r.expect("io").2.expect("json")["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(got, vec![1]);
}

/// Unmounts the test tmpfs when the test ends, pass or fail.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn real_disk_full_on_tmpfs_rolls_back_then_retry_succeeds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("note: cannot mount a tmpfs here (not root?); skipping the real disk-full test");
        return;
    }
    let _unmount = Unmount(mnt.clone());
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![b'x'; 96 * 1024]).expect("ballast");

    let (mut w, _) = open_writer(&mnt, opts(0, 0, true));
    let pad = "p".repeat(1000);
    let mut next = 0u64;
    let mut flushed = Vec::new();
    let err = loop {
        let batch: Vec<u64> = (next..next + 50).collect();
        next += 50;
        for &n in &batch {
            w.append(format!("{{\"n\":{n},\"pad\":\"{pad}\"}}").as_bytes())
                .expect("append");
        }
        match w.flush() {
            Ok(_) => flushed.extend(batch),
            Err(e) => break e,
        }
        assert!(next < 1000, "256k tmpfs never filled up");
    };
    assert!(err.is_disk_full(), "expected ENOSPC, got {err}");
    assert!(!flushed.is_empty());
    assert_eq!(w.pending(), 50);
    // Rolled back: the file holds exactly the acknowledged lines.
    assert_eq!(all_ns(&mnt, Stream::Examples), flushed);

    std::fs::remove_file(&ballast).expect("free space");
    w.flush().expect("retry after freeing space");
    flushed.extend(next - 50..next);
    assert_eq!(w.pending(), 0);
    w.seal().expect("seal").expect("sealed");
    assert_eq!(all_ns(&mnt, Stream::Examples), flushed);
    drop(w);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Flush,
        MaybeSeal,
        Seal,
        Advance(i64),
        /// Drop without sealing, then reopen (recovery).
        Crash,
        /// Seal, drop, reopen.
        Restart,
        FailNextWrite(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..60).prop_map(Op::Append),
            4 => Just(Op::Flush),
            2 => Just(Op::MaybeSeal),
            1 => Just(Op::Seal),
            2 => prop_oneof![Just(1i64), Just(1800), Just(4000), Just(86_400)].prop_map(Op::Advance),
            1 => Just(Op::Crash),
            1 => Just(Op::Restart),
            1 => (0usize..40).prop_map(Op::FailNextWrite),
        ]
    }

    /// Sealed files never change; at most one `.open`; no empty files.
    fn check_dir(dir: &Path, sealed: &mut BTreeMap<String, Vec<u8>>) {
        let mut open = 0;
        for n in names(dir) {
            let content = read(&dir.join(&n));
            assert!(!content.is_empty(), "empty segment {n}");
            if n.ends_with(".open") {
                open += 1;
            } else if let Some(prev) = sealed.get(&n) {
                assert_eq!(prev, &content, "sealed file {n} changed");
            } else {
                sealed.insert(n, content);
            }
        }
        assert!(open <= 1, "more than one open segment");
        for n in sealed.keys() {
            assert!(dir.join(n).exists(), "sealed file {n} vanished");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn flushed_lines_come_back_exactly_once_in_order(
            ops in proptest::collection::vec(op(), 1..60),
            fsync in proptest::bool::weighted(0.2),
        ) {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path();
            let o = opts(200, 3600, fsync);
            let plan = Arc::new(Mutex::new(Plan::default()));
            let reopen = |plan: &Arc<Mutex<Plan>>| {
                let (mut w, rec) = open_writer(dir, o);
                w.set_fault_hook(Some(Box::new(Faults(plan.clone()))));
                (w, rec)
            };
            let (mut w, _) = reopen(&plan);
            let mut now = at(2026, 3, 1, 22, 0, 0);
            let mut next = 0u64;
            let mut pending: Vec<u64> = Vec::new();
            let mut flushed: Vec<u64> = Vec::new();
            let mut sealed = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Append(pad) => {
                        let l = format!("{{\"n\":{next},\"pad\":\"{}\"}}", "x".repeat(pad));
                        w.append(l.as_bytes()).expect("append");
                        pending.push(next);
                        next += 1;
                    }
                    Op::Flush => match w.flush_at(now) {
                        Ok(stats) => {
                            prop_assert_eq!(stats.lines, pending.len());
                            flushed.append(&mut pending);
                        }
                        Err(e) => prop_assert!(e.is_disk_full(), "{}", e),
                    },
                    Op::MaybeSeal => { w.maybe_seal(now).expect("maybe_seal"); }
                    Op::Seal => { w.seal().expect("seal"); }
                    Op::Advance(secs) => now += chrono::Duration::seconds(secs),
                    Op::Crash => {
                        drop(w);
                        pending.clear();
                        let (nw, rec) = reopen(&plan);
                        prop_assert!(rec.is_clean(), "{:?}", rec);
                        w = nw;
                    }
                    Op::Restart => {
                        w.seal().expect("seal");
                        drop(w);
                        pending.clear();
                        let (nw, rec) = reopen(&plan);
                        prop_assert!(rec.segments.is_empty());
                        w = nw;
                    }
                    Op::FailNextWrite(n) => {
                        plan.lock().expect("lock").write = Some((n, libc::ENOSPC));
                    }
                }
                prop_assert_eq!(w.pending(), pending.len());
                check_dir(dir, &mut sealed);
                prop_assert_eq!(all_ns(dir, Stream::Examples), flushed.clone());
            }
        }
    }
}

#[test]
fn a_flush_of_more_lines_than_one_writev_takes_writes_them_all_in_order() {
    // Linux takes at most 1,024 buffers per writev; 5,000 owned lines need several calls.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open_writer(dir.path(), opts(1 << 30, 3600, true));
    for n in 0..5_000 {
        if n % 2 == 0 {
            w.append_owned(line(n)).expect("append_owned");
        } else {
            w.append(&line(n)).expect("append");
        }
    }
    assert_eq!(w.pending(), 5_000);
    let stats = w.flush_at(at(2026, 11, 27, 8, 0, 0)).expect("flush");
    assert_eq!(stats.lines, 5_000);
    assert_eq!(w.pending_bytes(), 0);
    assert_eq!(
        all_ns(dir.path(), Stream::Examples),
        (0..5_000).collect::<Vec<_>>()
    );
    assert!(matches!(
        w.append_owned(b"{\"a\":\n1}".to_vec()),
        Err(SegmentError::InvalidLine(_))
    ));
}
