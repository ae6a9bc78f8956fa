//! Stalls, end to end as root: threads stuck in the kernel are judged by their budget,
//! threads idle, stopped or traced are not, and the heartbeat stops only for the former.
use std::{
    thread,
    time::{Duration, Instant},
};

use watchdog_tests::*;

#[test]
fn a_thread_stuck_in_uninterruptible_sleep_stops_the_heartbeat() {
    let mut node = Node::start("300ms", "20ms");
    node.rec.wait_for(5, Duration::from_secs(2));

    node.work.send("stall-vfork 3000");
    let line = node.work.expect("STALL", Duration::from_secs(2));
    let (tid, stall_at) = (field(&line, "tid"), field(&line, "at_ns"));

    // The thread really is in uninterruptible sleep (D), not a stand-in.
    thread::sleep(Duration::from_millis(100));
    let state =
        std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", node.work.pid)).unwrap();
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
    let row = thread_row(&node.daemon.wdctl_json("threads"), tid);
    assert_eq!(row["syscall"], "vfork", "{row:#}");
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    assert_eq!(row["comm"], "stuck", "{row:#}");
    assert_eq!(row["budget_ms"], 300, "{row:#}");
    assert!(row["elapsed_ms"].as_u64().unwrap() >= 300, "{row:#}");

    thread::sleep(Duration::from_millis(400));
    let last = node.rec.last_arrival().unwrap();
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

    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let stalls = status["stalls"].as_array().unwrap();
    assert_eq!(
        stalls.len(),
        1,
        "only the stuck thread is stalled: {status:#}"
    );
    assert_eq!(stalls[0]["tid"], tid);
    assert_eq!(stalls[0]["syscall"], "vfork");

    let alert = node.daemon.wait_log_line(Duration::from_secs(2), |l| {
        l.contains("ERROR") && l.contains("thread stalled")
    });
    for part in [
        format!("tid={tid}"),
        format!("pid={}", node.work.pid),
        "syscall=\"vfork\"".into(),
        "budget_ms=300".into(),
        "comm=\"stuck\"".into(),
    ] {
        assert!(alert.contains(&part), "alert lacks {part}: {alert}");
    }

    // The stall is an incident, with what /proc showed at verdict time.
    let inc = node
        .daemon
        .wait_incident(Duration::from_secs(2), |i| i["kind"] == "syscall-stall");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(node.work.pid as u64), Some(tid)),
        "{inc:#}"
    );
    assert_eq!(inc["stopped_heartbeat"], true);
    let st = &inc["stall"];
    assert_eq!(st["syscall"], "vfork", "{inc:#}");
    assert_eq!(st["state"], "D", "{inc:#}");
    assert!(
        !st["wchan"].as_str().unwrap_or("").is_empty(),
        "no wchan: {inc:#}"
    );
    assert_eq!(st["args"].as_array().unwrap().len(), 6, "{inc:#}");
    let stack: Vec<&str> = st["kernel_stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        stack.iter().any(|f| f.contains("vfork")),
        "kernel stack without vfork: {stack:?}"
    );
    node.stop_cleanly();
}

#[test]
fn threads_idle_in_wait_syscalls_never_stop_the_heartbeat() {
    let mut node = Node::start("300ms", "50ms");

    // Started after the daemon, so every wait is seen entering its syscall.
    node.work.send("idle");
    let mut idle = Vec::new();
    for _ in 0..6 {
        let line = node.work.expect("IDLE", Duration::from_secs(2));
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

    assert_no_missed_beats(&node.rec, start, end, Duration::from_millis(50 + 150));
    let rows = node.daemon.wdctl_json("threads");
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
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");
    assert_eq!(status["lost_events"], 0);
    node.stop_cleanly();
}

#[test]
fn a_syscall_spinning_on_a_cpu_is_stalled_as_running_in_kernel() {
    let mut node = Node::start("100ms", "20ms");
    node.work.send("spin-read");
    let line = node.work.expect("SPIN", Duration::from_secs(2));
    let (tid, began) = (field(&line, "tid"), field(&line, "at_ns"));
    let deadline = Instant::now() + Duration::from_secs(3);
    let stall = loop {
        let status = node.daemon.wdctl_json("status");
        if let Some(s) = status["stalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["tid"] == tid)
        {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no stall: {status:#}");
        thread::sleep(Duration::from_millis(10));
    };
    let after = stall["at_ns"].as_u64().unwrap().saturating_sub(began);
    assert!(
        after <= 120 * MS,
        "found {} ms after the read began (budget 100 ms + 20 ms)",
        after / MS
    );
    assert_eq!(stall["syscall"], "read");
    assert!(
        stall["reason"]
            .as_str()
            .unwrap()
            .contains("running in the kernel"),
        "{stall:#}"
    );
    // The read takes seconds (2 GiB, faulting its pages in): still in flight here.
    let row = thread_row(&node.daemon.wdctl_json("threads"), tid);
    assert_eq!(row["syscall"], "read", "{row:#}");
    assert_eq!(row["state"], "running-in-kernel", "{row:#}");
    assert!(row["on_cpu_ms"].as_u64().unwrap() > 100, "{row:#}");
    node.stop_cleanly();
}

#[test]
fn idle_waits_for_six_seconds_at_a_100ms_budget_are_all_waiting() {
    let mut node = Node::start("100ms", "50ms");
    node.work.send("idle");
    let tids: Vec<u64> = (0..6)
        .map(|_| field(&node.work.expect("IDLE", Duration::from_secs(2)), "tid"))
        .collect();
    let start = monotonic_ns();
    thread::sleep(Duration::from_secs(6));
    assert_no_missed_beats(
        &node.rec,
        start,
        monotonic_ns(),
        Duration::from_millis(50 + 150),
    );
    let rows = node.daemon.wdctl_json("threads");
    for tid in tids {
        let row = thread_row(&rows, tid);
        assert_eq!(row["state"], "waiting", "{row:#}");
        assert_eq!(row["verdict"], "ok", "{row:#}");
        assert!(row["off_cpu_ms"].as_u64().unwrap() > 5_000, "{row:#}");
    }
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");
    node.stop_cleanly();
}

#[test]
fn stopped_and_traced_threads_are_not_stalled() {
    let mut node = Node::start("100ms", "50ms");
    node.work.send("idle");
    // All six lines (their order depends on thread start-up), then the sleeper's tid.
    let idle: Vec<String> = (0..6)
        .map(|_| node.work.expect("IDLE", Duration::from_secs(2)))
        .collect();
    let sleeper = field(
        idle.iter().find(|l| l.contains("kind=nanosleep")).unwrap(),
        "tid",
    );
    thread::sleep(Duration::from_millis(200));

    // A tracer stops one thread mid-wait.
    // SAFETY: ptrace on a thread of our own child, as root.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, sleeper as i32, 0, 0),
            0,
            "seize"
        );
        assert_eq!(
            libc::ptrace(libc::PTRACE_INTERRUPT, sleeper as i32, 0, 0),
            0,
            "interrupt"
        );
        let mut st = 0;
        assert_eq!(
            libc::waitpid(sleeper as i32, &mut st, libc::__WALL),
            sleeper as i32
        );
    }
    thread::sleep(Duration::from_millis(800));
    let row = thread_row(&node.daemon.wdctl_json("threads"), sleeper);
    assert_eq!(row["state"], "stopped", "{row:#}");
    assert_eq!(row["verdict"], "ok", "{row:#}");
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, sleeper as i32, 0, 0) };

    // The whole process stopped by SIGSTOP.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(node.work.pid as i32, libc::SIGSTOP) };
    thread::sleep(Duration::from_millis(1000));
    let rows = node.daemon.wdctl_json("threads");
    let stopped = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "stopped")
        .count();
    assert!(stopped >= 6, "threads not shown stopped: {rows:#}");
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");
    assert_eq!(status["heartbeat"], "sending");
    // SAFETY: as above.
    unsafe { libc::kill(node.work.pid as i32, libc::SIGCONT) };
    node.stop_cleanly();
}

#[test]
fn threads_beyond_the_slot_array_are_measured_in_the_overflow_table() {
    // One slot: every monitored thread but one lives in the INFLIGHT hash instead.
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.env = vec![("WATCHDOG_INFLIGHT_SLOTS", "1".into())])
        .start();
    node.work.send("idle");
    for _ in 0..6 {
        node.work.expect("IDLE", Duration::from_secs(2));
    }
    node.work.send("stall-vfork 1000");
    let tid = field(&node.work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(600));
    let rows = node.daemon.wdctl_json("threads");
    let row = thread_row(&rows, tid);
    assert_eq!(
        (row["syscall"].as_str(), row["verdict"].as_str()),
        (Some("vfork"), Some("stalled")),
        "{row:#}"
    );
    let waiting = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "waiting")
        .count();
    assert!(waiting >= 6, "idle threads measured too: {rows:#}");
    node.stop_cleanly();
}

#[test]
fn a_syscall_budget_of_its_own_and_the_keepalived_track_file() {
    let dir = TempDir::new("track");
    let track = dir.0.join("watchdog.track");
    let mut node = Node::build("5s", "20ms")
        .opts(|o| {
            o.extra = vec![
                "--syscall-budget".into(),
                "vfork=300ms".into(),
                "--track-file".into(),
                track.display().to_string(),
            ]
        })
        .start();
    assert_eq!(
        std::fs::read_to_string(&track).unwrap(),
        "0\n",
        "sending: keepalived sees 0"
    );

    // vfork has 300 ms though the default is 5 s.
    node.work.send("stall-vfork 1500");
    let line = node.work.expect("STALL", Duration::from_secs(2));
    let (tid, began) = (field(&line, "tid"), field(&line, "at_ns"));
    thread::sleep(Duration::from_millis(700));
    let status = node.daemon.wdctl_json("status");
    let stall = &status["stalls"][0];
    assert_eq!(
        (stall["tid"].as_u64(), stall["budget_ms"].as_u64()),
        (Some(tid), Some(300)),
        "{status:#}"
    );
    assert!(
        stall["at_ns"].as_u64().unwrap() - began < 400 * MS,
        "{status:#}"
    );
    assert_eq!(
        std::fs::read_to_string(&track).unwrap(),
        "1\n",
        "stopped: keepalived sees 1 and goes to FAULT"
    );
    node.stop_cleanly();
}

#[test]
fn a_syscall_stuck_before_the_daemon_started_is_judged_from_its_start() {
    // The workload is stuck in vfork (its child sleeps) before the probes attach: no
    // entry event will ever come for that syscall.
    let stuck_at = std::cell::Cell::new(0);
    let mut node = Node::build("300ms", "20ms")
        .workload(|| {
            let mut work = Workload::spawn();
            work.send("stall-vfork 4000");
            stuck_at.set(field(&work.expect("STALL", Duration::from_secs(2)), "tid"));
            thread::sleep(Duration::from_millis(200));
            work
        })
        .start();
    let tid = stuck_at.get();
    let started = monotonic_ns();
    let line = node.daemon.wait_log_line(Duration::from_secs(2), |l| {
        l.contains("stopping the heartbeat")
    });
    assert!(
        line.contains("vfork") && line.contains("in flight since before the watchdog started"),
        "{line}"
    );
    // Judged within the budget and a scan period of the daemon's start.
    thread::sleep(Duration::from_millis(200));
    let last = node.rec.last_arrival().unwrap();
    assert!(
        last <= started + 300 * MS + 150 * MS,
        "heartbeat still sent {} ms after the daemon started",
        (last - started) / MS
    );
    let row = thread_row(&node.daemon.wdctl_json("threads"), tid);
    assert_eq!(row["syscall"], "vfork", "{row:#}");
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("thread {tid} of pid {} is stalled", node.work.pid)),
        "{err}"
    );
    node.stop_cleanly();
}

#[test]
fn a_service_frozen_past_the_stopped_budget_is_stalled_and_resumable_after() {
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.extra = vec!["--stopped-budget".into(), "1s".into()])
        .start();
    node.work.send("idle");
    node.work.expect("IDLE", Duration::from_secs(2));
    thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(node.work.pid as i32, libc::SIGSTOP) };
    let stopped = monotonic_ns();
    let line = node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("stopping the heartbeat")
    });
    assert!(line.contains("over the 1000 ms stopped budget"), "{line}");
    thread::sleep(Duration::from_millis(200));
    let last = node.rec.last_arrival().unwrap();
    assert!(
        last <= stopped + 1000 * MS + 150 * MS,
        "heartbeat still sent {} ms after the stop",
        (last - stopped) / MS
    );
    let status = node.daemon.wdctl_json("status");
    let stalls = status["stalls"].as_array().unwrap();
    assert_eq!(
        stalls.len(),
        1,
        "one verdict for the whole process: {status:#}"
    );
    assert_eq!(stalls[0]["cause"], "stopped", "{status:#}");
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_ne!(code, 0, "resumed while frozen");
    assert!(err.contains("stopped (by a signal or a tracer)"), "{err}");
    // SAFETY: as above.
    unsafe { libc::kill(node.work.pid as i32, libc::SIGCONT) };
    thread::sleep(Duration::from_millis(300));
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!((code, out.trim()), (0, "heartbeat resumed"), "{err}");
    node.stop_cleanly();
}
