//! End-to-end, as root, against the real kernel: the real eBPF programs, real threads
//! stuck in real states, real /dev/kmsg lines, the real heartbeat on `lo`.
//! `cargo xtask test` runs these one at a time (they measure time).
use std::{
    collections::BTreeSet,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use watchdog_tests::*;

const MS: u64 = 1_000_000;

/// Every heartbeat sequence number from the first to the last was received, and no two
/// consecutive arrivals were more than `max_gap` apart.
fn assert_no_missed_beats(rec: &Recorder, from_ns: u64, to_ns: u64, max_gap: Duration) {
    let beats: Vec<_> = rec
        .beats()
        .into_iter()
        .filter(|(at, _)| (from_ns..=to_ns).contains(at))
        .collect();
    assert!(
        beats.len() >= 2,
        "too few heartbeats in the window: {}",
        beats.len()
    );
    for pair in beats.windows(2) {
        let ((a_at, a), (b_at, b)) = (&pair[0], &pair[1]);
        assert_eq!(
            b.seq,
            a.seq + 1,
            "heartbeat seq {} followed by {}",
            a.seq,
            b.seq
        );
        let gap = Duration::from_nanos(b_at - a_at);
        assert!(
            gap <= max_gap,
            "heartbeat gap of {gap:?} after seq {} (max {max_gap:?})",
            a.seq
        );
    }
}

/// No program of ours is left attached once the daemon has exited.
fn assert_probes_detached() {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let out = Command::new("bpftool")
            .args(["prog", "list"])
            .output()
            .expect("bpftool (installed by cargo xtask test)");
        let text = String::from_utf8_lossy(&out.stdout);
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" name printk_console ") || l.contains(" name sys_enter "))
            .collect();
        if ours.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "programs still attached after exit: {ours:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn stop_cleanly(daemon: &mut Daemon) {
    let status = daemon.stop();
    assert!(
        status.success(),
        "watchdog exited with {status} on SIGTERM:\n{}",
        daemon.log_text()
    );
    assert!(!daemon.socket.exists(), "control socket left behind");
    assert_probes_detached();
}

#[test]
fn a_thread_stuck_in_uninterruptible_sleep_stops_the_heartbeat() {
    require_root();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let opts = DaemonOpts {
        pid: work.pid,
        budget: "300ms",
        interval: "20ms",
    };
    let mut daemon = Daemon::start(opts, group, &rec);
    rec.wait_for(5, Duration::from_secs(2));

    work.send("stall-vfork 3000");
    let line = work.expect("STALL", Duration::from_secs(2));
    let (tid, stall_at) = (field(&line, "tid"), field(&line, "at_ns"));

    // The thread really is in uninterruptible sleep (D), not a stand-in.
    thread::sleep(Duration::from_millis(100));
    let state = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", work.pid)).unwrap();
    let state = state
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        state, "D",
        "stuck thread should be in uninterruptible sleep"
    );

    // Look at wdctl while the child still holds the parent (3 s).
    let until = stall_at + 900 * MS;
    thread::sleep(Duration::from_nanos(until.saturating_sub(monotonic_ns())));
    let row = thread_row(&daemon.wdctl_json("threads"), tid);
    assert_eq!(row["syscall"], "vfork", "{row:#}");
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    assert_eq!(row["comm"], "stuck", "{row:#}");
    assert_eq!(row["budget_ms"], 300, "{row:#}");
    assert!(row["elapsed_ms"].as_u64().unwrap() >= 300, "{row:#}");

    thread::sleep(Duration::from_millis(400));
    let last = rec.last_arrival().unwrap();
    assert!(
        last >= stall_at.saturating_sub(100 * MS),
        "heartbeat was not flowing up to the stall (last beat {} ms before it)",
        (stall_at - last) / MS
    );
    assert!(
        last <= stall_at + 300 * MS + 100 * MS,
        "heartbeat still sent {} ms after the stall began (budget 300 ms + 100 ms)",
        (last - stall_at) / MS
    );

    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let stalls = status["stalls"].as_array().unwrap();
    assert_eq!(
        stalls.len(),
        1,
        "only the stuck thread is stalled: {status:#}"
    );
    assert_eq!(stalls[0]["tid"], tid);
    assert_eq!(stalls[0]["syscall"], "vfork");

    let log = daemon.log_text();
    let alert = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("thread stalled"))
        .unwrap_or_else(|| panic!("no stall alert in the log:\n{log}"));
    for part in [
        format!("tid={tid}"),
        format!("pid={}", work.pid),
        "syscall=\"vfork\"".into(),
        "budget_ms=300".into(),
        "comm=stuck".into(),
    ] {
        assert!(alert.contains(&part), "alert lacks {part}: {alert}");
    }
    stop_cleanly(&mut daemon);
}

#[test]
fn threads_idle_in_wait_syscalls_never_stop_the_heartbeat() {
    require_root();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let opts = DaemonOpts {
        pid: work.pid,
        budget: "300ms",
        interval: "50ms",
    };
    let mut daemon = Daemon::start(opts, group, &rec);

    // Started after the daemon, so every wait is seen entering its syscall.
    work.send("idle");
    let mut idle = Vec::new();
    for _ in 0..6 {
        let line = work.expect("IDLE", Duration::from_secs(2));
        let kind = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kind="))
            .unwrap()
            .to_owned();
        idle.push((kind, field(&line, "tid")));
    }
    let start = monotonic_ns();
    thread::sleep(Duration::from_secs(3));
    let end = monotonic_ns();

    assert_no_missed_beats(&rec, start, end, Duration::from_millis(50 + 150));
    let rows = daemon.wdctl_json("threads");
    for (kind, tid) in &idle {
        let row = thread_row(&rows, *tid);
        let expected: &[&str] = match kind.as_str() {
            "epoll" => &["epoll_wait", "epoll_pwait"],
            "nanosleep" => &["nanosleep", "clock_nanosleep"],
            "condvar" => &["futex"],
            "accept" => &["accept", "accept4"],
            "pipe-read" => &["read"],
            "poll" => &["poll", "ppoll"],
            other => panic!("unknown idle kind {other}"),
        };
        let syscall = row["syscall"].as_str().unwrap_or("none");
        assert!(
            expected.contains(&syscall),
            "{kind}: in {syscall}, expected one of {expected:?}"
        );
        // Judged past its budget, and found healthy.
        assert!(row["elapsed_ms"].as_u64().unwrap() > 300, "{kind}: {row:#}");
        assert_eq!(row["verdict"], "ok", "{kind}: {row:#}");
    }
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");
    assert_eq!(status["lost_events"], 0);
    stop_cleanly(&mut daemon);
}

#[test]
fn a_kernel_bug_printed_by_a_monitored_thread_stops_the_heartbeat_at_once() {
    require_root();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let opts = DaemonOpts {
        pid: work.pid,
        budget: "5s",
        interval: "20ms",
    };
    let mut daemon = Daemon::start(opts, group, &rec);
    rec.wait_for(5, Duration::from_secs(2));

    work.send("kmsg watchdog-test: BUG: simulated kernel fault in a monitored thread");
    let line = work.expect("KMSG", Duration::from_secs(2));
    let (tid, wrote_at) = (field(&line, "tid"), field(&line, "at_ns"));
    thread::sleep(Duration::from_secs(1));

    let last = rec.last_arrival().unwrap();
    assert!(
        last >= wrote_at.saturating_sub(100 * MS),
        "heartbeat was not flowing before the write"
    );
    assert!(
        last <= wrote_at + 100 * MS,
        "heartbeat still sent {} ms after the BUG line",
        (last - wrote_at) / MS
    );
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let reason = status["stopped_reason"].as_str().unwrap();
    assert!(
        reason.contains("BUG:") && reason.contains(&format!("thread {tid}")),
        "{reason}"
    );
    let row = thread_row(&daemon.wdctl_json("threads"), tid);
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    assert_eq!(row["comm"], "reporter", "{row:#}");
    stop_cleanly(&mut daemon);
}

#[test]
fn a_kernel_bug_printed_by_another_process_only_alerts() {
    require_root();
    let work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let opts = DaemonOpts {
        pid: work.pid,
        budget: "5s",
        interval: "20ms",
    };
    let mut daemon = Daemon::start(opts, group, &rec);

    let marker = format!(
        "watchdog-test: BUG: simulated kernel fault in an unmonitored process {}",
        std::process::id()
    );
    let wrote_at = monotonic_ns();
    std::fs::write("/dev/kmsg", format!("{marker}\n")).expect("write /dev/kmsg");
    thread::sleep(Duration::from_secs(1));

    assert_no_missed_beats(
        &rec,
        wrote_at.saturating_sub(200 * MS),
        monotonic_ns(),
        Duration::from_millis(20 + 150),
    );
    assert!(
        rec.last_arrival().unwrap() >= wrote_at + 900 * MS,
        "heartbeat stopped"
    );
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");

    let log = daemon.log_text();
    let alert = log
        .lines()
        .find(|l| l.contains("kernel problem reported") && l.contains(&marker))
        .unwrap_or_else(|| panic!("no alert for the line in the log:\n{log}"));
    assert!(
        alert.contains("ERROR") && alert.contains("monitored=false"),
        "{alert}"
    );
    assert!(
        alert.contains(&format!("pid={}", std::process::id())),
        "{alert}"
    );
    stop_cleanly(&mut daemon);
}

#[test]
fn threads_created_after_start_are_monitored() {
    require_root();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let opts = DaemonOpts {
        pid: work.pid,
        budget: "300ms",
        interval: "50ms",
    };
    let mut daemon = Daemon::start(opts, group, &rec);
    work.send("idle");
    let mut tids = BTreeSet::new();
    for _ in 0..6 {
        tids.insert(field(&work.expect("IDLE", Duration::from_secs(2)), "tid"));
    }
    thread::sleep(Duration::from_millis(200));
    let rows = daemon.wdctl_json("threads");
    let listed: BTreeSet<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tid"].as_u64().unwrap())
        .collect();
    assert!(
        tids.is_subset(&listed),
        "new threads {tids:?} not all in {listed:?}"
    );
    assert!(listed.contains(&(work.pid as u64)), "main thread missing");
    stop_cleanly(&mut daemon);
}
