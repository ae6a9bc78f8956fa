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

/// The common start of a test: a workload, a heartbeat recorder on a fresh group, and
/// the daemon monitoring the workload with `budget` and heartbeat `interval`.
fn start_monitoring(budget: &'static str, interval: &'static str) -> (Workload, Recorder, Daemon) {
    let work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let daemon = Daemon::start(DaemonOpts::new(work.pid, budget, interval), group, &rec);
    (work, rec, daemon)
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
    let (mut work, rec, mut daemon) = start_monitoring("300ms", "20ms");
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

    let alert = daemon.wait_log_line(Duration::from_secs(2), |l| {
        l.contains("ERROR") && l.contains("thread stalled")
    });
    for part in [
        format!("tid={tid}"),
        format!("pid={}", work.pid),
        "syscall=\"vfork\"".into(),
        "budget_ms=300".into(),
        "comm=\"stuck\"".into(),
    ] {
        assert!(alert.contains(&part), "alert lacks {part}: {alert}");
    }

    // The stall is an incident, with what /proc showed at verdict time.
    let inc = daemon.wait_incident(Duration::from_secs(2), |i| i["kind"] == "syscall-stall");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(work.pid as u64), Some(tid)),
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
    stop_cleanly(&mut daemon);
}

#[test]
fn threads_idle_in_wait_syscalls_never_stop_the_heartbeat() {
    require_root();
    let (mut work, rec, mut daemon) = start_monitoring("300ms", "50ms");

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
    let (mut work, rec, mut daemon) = start_monitoring("5s", "20ms");
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
    let opts = DaemonOpts::new(work.pid, "5s", "20ms");
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

    // The alert goes out once the report is complete and stored.
    let alert = daemon.wait_log_line(Duration::from_secs(5), |l| {
        l.contains("kernel problem reported") && l.contains(&marker)
    });
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
    let (mut work, _rec, mut daemon) = start_monitoring("300ms", "50ms");
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

#[test]
fn kernel_reports_become_incidents_that_survive_a_restart() {
    require_root();
    let mut work = Workload::spawn();
    let store_dir = TempDir::new("restart");
    let store = store_dir.0.join("incidents.db");
    let hook_out = store_dir.0.join("hook.out");
    let hook = store_dir.0.join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\nprintf '%s|%s|%s\\n' \"$1\" \"$2\" \"$3\" >> {0}\ncat >> {0}\necho >> {0}\n", hook_out.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "5s", "20ms");
    opts.store = Some(store.clone());
    opts.hook = Some(hook.clone());
    let mut daemon = Daemon::start(opts, group, &rec);

    let text = "watchdog-test: BUG: simulated kernel fault for the incident store";
    work.send(&format!("kmsg {text}"));
    let tid = field(&work.expect("KMSG", Duration::from_secs(2)), "tid");
    let inc = daemon.wait_incident(Duration::from_secs(5), |i| {
        i["kind"] == "kernel-report" && i["summary"].as_str().unwrap().contains(text)
    });
    assert_eq!(inc["class"], "bug", "{inc:#}");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(work.pid as u64), Some(tid)),
        "{inc:#}"
    );
    assert_eq!(inc["comm"], "reporter");
    assert_eq!(
        (
            inc["monitored"].as_bool(),
            inc["stopped_heartbeat"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(inc["report"]["first_line"], text);
    assert_eq!(inc["report"]["rule"], "bug-generic");
    assert_eq!(inc["report"]["printer"]["tid"].as_u64(), Some(tid));
    let id = inc["id"].as_i64().unwrap();

    // The exec hook ran with class, host and summary, and the incident on stdin.
    let hook_text = daemon.wait_hook_output(&hook_out, Duration::from_secs(5), |t| {
        t.contains(text) && t.lines().count() >= 2
    });
    let mut lines = hook_text.lines();
    let args = lines.next().unwrap();
    assert!(
        args.starts_with("bug|test-node|bug: watchdog-test: BUG: simulated"),
        "{args}"
    );
    let body: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(body["id"].as_i64(), Some(id));
    assert_eq!(body["kind"], "kernel-report");
    let status = daemon.wdctl_json("status");
    assert_eq!(status["exec_hook_failures"], 0, "{status:#}");
    stop_cleanly(&mut daemon);

    // A new daemon on the same store still has it.
    let work2 = Workload::spawn();
    let mut opts = DaemonOpts::new(work2.pid, "5s", "20ms");
    opts.store = Some(store.clone());
    let mut daemon = Daemon::start(opts, group, &rec);
    let again = daemon.wdctl_json_args(&["incident", &id.to_string()]);
    assert_eq!(again["report"]["first_line"], text);
    assert_eq!(again["tid"].as_u64(), Some(tid));
    stop_cleanly(&mut daemon);
}

#[test]
fn a_report_naming_a_monitored_thread_stalls_it_whoever_prints_it() {
    require_root();
    let (mut work, rec, mut daemon) = start_monitoring("5s", "20ms");
    work.send("idle");
    let idle: Vec<String> = (0..6)
        .map(|_| work.expect("IDLE", Duration::from_secs(2)))
        .collect();
    let tid = field(
        idle.iter().find(|l| l.contains("kind=nanosleep")).unwrap(),
        "tid",
    );
    rec.wait_for(5, Duration::from_secs(2));

    // Printed by this (unmonitored) test process, as khungtaskd would, about the thread.
    let text =
        format!("watchdog-test: INFO: task idle-sleep:{tid} blocked for more than 120 seconds.");
    let wrote_at = monotonic_ns();
    std::fs::write("/dev/kmsg", format!("{text}\n")).unwrap();
    let inc = daemon.wait_incident(Duration::from_secs(5), |i| i["class"] == "hung_task");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(work.pid as u64), Some(tid)),
        "{inc:#}"
    );
    assert_eq!(inc["monitored"], true);
    assert_eq!(inc["stopped_heartbeat"], true);
    assert_eq!(
        inc["report"]["printer"]["pid"].as_u64(),
        Some(std::process::id() as u64)
    );
    let last = rec.last_arrival().unwrap();
    assert!(
        last <= wrote_at + 100 * MS,
        "heartbeat went on {} ms after the report",
        (last - wrote_at) / MS
    );
    let row = thread_row(&daemon.wdctl_json("threads"), tid);
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    stop_cleanly(&mut daemon);
}

#[test]
fn a_monitored_process_killed_by_sigsegv_is_a_crash_incident() {
    require_root();
    let mut work = Workload::spawn();
    let pid = work.pid;
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut daemon = Daemon::start(DaemonOpts::new(pid, "5s", "50ms"), group, &rec);
    work.send("segv");
    let line = work.expect("SEGV", Duration::from_secs(2));
    let tid = field(&line, "tid");
    let crashed_at = field(&line, "at_ns");
    let inc = daemon.wait_incident(Duration::from_secs(5), |i| i["kind"] == "crash");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(pid as u64), Some(tid)),
        "{inc:#}"
    );
    let sig = &inc["signal"];
    assert_eq!(sig["signal"], "SIGSEGV", "{inc:#}");
    assert_eq!(
        sig["code_meaning"], "SEGV_MAPERR: address not mapped",
        "{inc:#}"
    );
    assert_eq!(
        sig["sender_pid"].as_u64(),
        Some(pid as u64),
        "the kernel raised it in the faulting task"
    );
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let last = rec.last_arrival().unwrap();
    assert!(
        last <= crashed_at + 100 * MS,
        "heartbeat went on {} ms after the crash",
        (last - crashed_at) / MS
    );
    assert!(
        status["stopped_reason"]
            .as_str()
            .unwrap()
            .contains("was killed by SIGSEGV"),
        "{status:#}"
    );
    let fault = sig["fault_line"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault line: {inc:#}"));
    assert!(fault.contains("segfault at 0 "), "{fault}");
    stop_cleanly(&mut daemon);
}

#[test]
fn the_oom_killer_taking_a_monitored_process_is_recorded_three_ways() {
    require_root();
    let mut work = Workload::spawn();
    let pid = work.pid;
    let cgroup = MemoryCgroup::new(&format!("wd-test-oom-{}", std::process::id()), 32 << 20);
    cgroup.add(pid);
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut daemon = Daemon::start(DaemonOpts::new(pid, "5s", "50ms"), group, &rec);
    work.send("alloc 256");
    work.expect("ALLOC", Duration::from_secs(2));

    // The kernel's text report, attributed by "Killed process N" to the monitored process.
    let report = daemon.wait_incident(Duration::from_secs(10), |i| {
        i["kind"] == "kernel-report" && i["class"] == "oom"
    });
    assert_eq!(report["pid"].as_u64(), Some(pid as u64), "{report:#}");
    assert_eq!(report["monitored"], true, "{report:#}");
    assert_eq!(
        report["stopped_heartbeat"], false,
        "an OOM kill alerts by default: {report:#}"
    );
    let r = &report["report"];
    assert!(
        r["first_line"]
            .as_str()
            .unwrap()
            .contains("invoked oom-killer"),
        "{r:#}"
    );
    assert!(
        r["lines"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains(&format!("Killed process {pid} ")),
        "{r:#}"
    );
    // The structured signal from oom/mark_victim.
    let victim = daemon.wait_incident(Duration::from_secs(5), |i| i["kind"] == "oom-victim");
    assert_eq!(victim["pid"].as_u64(), Some(pid as u64), "{victim:#}");
    // And the death itself, by the kernel's SIGKILL.
    let crash = daemon.wait_incident(Duration::from_secs(5), |i| i["kind"] == "crash");
    assert_eq!(crash["signal"]["signal"], "SIGKILL", "{crash:#}");
    assert_eq!(
        crash["signal"]["code_meaning"], "SI_KERNEL: sent by the kernel",
        "{crash:#}"
    );
    stop_cleanly(&mut daemon);
}

#[test]
fn a_syscall_spinning_on_a_cpu_is_stalled_as_running_in_kernel() {
    require_root();
    let (mut work, _rec, mut daemon) = start_monitoring("100ms", "20ms");
    work.send("spin-read");
    let line = work.expect("SPIN", Duration::from_secs(2));
    let (tid, began) = (field(&line, "tid"), field(&line, "at_ns"));
    let deadline = Instant::now() + Duration::from_secs(3);
    let stall = loop {
        let status = daemon.wdctl_json("status");
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
    let row = thread_row(&daemon.wdctl_json("threads"), tid);
    assert_eq!(row["syscall"], "read", "{row:#}");
    assert_eq!(row["state"], "running-in-kernel", "{row:#}");
    assert!(row["on_cpu_ms"].as_u64().unwrap() > 100, "{row:#}");
    stop_cleanly(&mut daemon);
}

#[test]
fn idle_waits_for_six_seconds_at_a_100ms_budget_are_all_waiting() {
    require_root();
    let (mut work, rec, mut daemon) = start_monitoring("100ms", "50ms");
    work.send("idle");
    let tids: Vec<u64> = (0..6)
        .map(|_| field(&work.expect("IDLE", Duration::from_secs(2)), "tid"))
        .collect();
    let start = monotonic_ns();
    thread::sleep(Duration::from_secs(6));
    assert_no_missed_beats(&rec, start, monotonic_ns(), Duration::from_millis(50 + 150));
    let rows = daemon.wdctl_json("threads");
    for tid in tids {
        let row = thread_row(&rows, tid);
        assert_eq!(row["state"], "waiting", "{row:#}");
        assert_eq!(row["verdict"], "ok", "{row:#}");
        assert!(row["off_cpu_ms"].as_u64().unwrap() > 5_000, "{row:#}");
    }
    let status = daemon.wdctl_json("status");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");
    stop_cleanly(&mut daemon);
}

#[test]
fn stopped_and_traced_threads_are_not_stalled() {
    require_root();
    let (mut work, _rec, mut daemon) = start_monitoring("100ms", "50ms");
    work.send("idle");
    // All six lines (their order depends on thread start-up), then the sleeper's tid.
    let idle: Vec<String> = (0..6)
        .map(|_| work.expect("IDLE", Duration::from_secs(2)))
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
    let row = thread_row(&daemon.wdctl_json("threads"), sleeper);
    assert_eq!(row["state"], "stopped", "{row:#}");
    assert_eq!(row["verdict"], "ok", "{row:#}");
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, sleeper as i32, 0, 0) };

    // The whole process stopped by SIGSTOP.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(work.pid as i32, libc::SIGSTOP) };
    thread::sleep(Duration::from_millis(1000));
    let rows = daemon.wdctl_json("threads");
    let stopped = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "stopped")
        .count();
    assert!(stopped >= 6, "threads not shown stopped: {rows:#}");
    let status = daemon.wdctl_json("status");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");
    assert_eq!(status["heartbeat"], "sending");
    // SAFETY: as above.
    unsafe { libc::kill(work.pid as i32, libc::SIGCONT) };
    stop_cleanly(&mut daemon);
}

#[test]
fn after_a_transient_stall_the_heartbeat_stays_stopped_until_resumed() {
    require_root();
    let (mut work, rec, mut daemon) = start_monitoring("300ms", "20ms");
    work.send("stall-vfork 900");
    let tid = field(&work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(500));
    let (code, _, err) = daemon.wdctl(&["resume"]);
    assert_ne!(code, 0, "resume must be refused while stalled");
    assert!(
        err.contains(&format!(
            "not resuming: thread {tid} of pid {} is stalled: vfork",
            work.pid
        )),
        "{err}"
    );

    work.expect("UNSTALLED", Duration::from_secs(3));
    thread::sleep(Duration::from_millis(200));
    let quiet_from = monotonic_ns();
    thread::sleep(Duration::from_millis(500));
    assert!(
        rec.last_arrival().unwrap() < quiet_from,
        "heartbeat came back by itself"
    );
    assert_eq!(daemon.wdctl_json("status")["heartbeat"], "stopped");

    let (code, out, err) = daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "heartbeat resumed");
    let resumed_at = monotonic_ns();
    thread::sleep(Duration::from_millis(300));
    assert!(
        rec.last_arrival().unwrap() > resumed_at,
        "no heartbeat after resume"
    );
    assert_eq!(daemon.wdctl_json("status")["heartbeat"], "sending");
    stop_cleanly(&mut daemon);
}

#[test]
fn a_monitored_process_that_exits_stops_the_heartbeat_and_says_how() {
    require_root();
    let (mut work, rec, mut daemon) = start_monitoring("5s", "20ms");
    rec.wait_for(5, Duration::from_secs(2));
    let exit_at = monotonic_ns();
    work.send("exit 3");
    thread::sleep(Duration::from_millis(600));
    let last = rec.last_arrival().unwrap();
    assert!(
        last <= exit_at + 100 * MS,
        "heartbeat went on {} ms after the exit",
        (last - exit_at) / MS
    );
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let reason = status["stopped_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "monitored process {} (wd-workload) exited with status 3",
            work.pid
        )),
        "{reason}"
    );
    let (code, _, err) = daemon.wdctl(&["resume"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is gone: wd-workload exited with status 3"),
        "{err}"
    );
    stop_cleanly(&mut daemon);
}

#[test]
fn sighup_reloads_the_budget_live_and_a_bad_config_changes_nothing() {
    require_root();
    let mut work = Workload::spawn();
    let dir = TempDir::new("config");
    let config = dir.0.join("watchdog.toml");
    let write = |budget: &str| {
        std::fs::write(
            &config,
            format!("pids = [{}]\nbudget = {budget}\n", work.pid),
        )
        .unwrap()
    };
    write("\"5s\"");
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "unused", "20ms");
    opts.config = Some(config.clone());
    let mut daemon = Daemon::start(opts, group, &rec);
    assert_eq!(daemon.wdctl_json("status")["budget_ms"], 5000);
    let start = monotonic_ns();

    // A config that fails to load leaves the running one in place, and says why.
    write("\"soon\"");
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_log_line(Duration::from_secs(3), |l| l.contains("reload failed"));
    assert!(
        line.contains(&format!(
            "{}:2:10: invalid duration 'soon'",
            config.display()
        )),
        "{line}"
    );
    assert_eq!(daemon.wdctl_json("status")["budget_ms"], 5000);

    write("\"300ms\"");
    daemon.signal(libc::SIGHUP);
    daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("configuration reloaded")
    });
    assert_eq!(daemon.wdctl_json("status")["budget_ms"], 300);
    // The heartbeat went on through both reloads.
    assert_no_missed_beats(&rec, start, monotonic_ns(), Duration::from_millis(20 + 150));

    // And the new budget judges: a 1.5 s stall is a verdict now (it was not at 5 s).
    work.send("stall-vfork 1500");
    let tid = field(&work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(600));
    let status = daemon.wdctl_json("status");
    assert_eq!(status["stalls"][0]["tid"].as_u64(), Some(tid), "{status:#}");
    assert_eq!(status["stalls"][0]["budget_ms"], 300);
    stop_cleanly(&mut daemon);
}

/// Spawn the workload after a delay, on another thread, noting when.
fn spawn_later(
    make: impl FnOnce() -> Workload + Send + 'static,
) -> thread::JoinHandle<(u64, Workload)> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(800));
        let at = monotonic_ns();
        (at, make())
    })
}

fn assert_monitored_from_its_first_syscalls(daemon: &Daemon, work: &mut Workload) {
    let status = daemon.wdctl_json("status");
    assert!(
        status["monitored_pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(work.pid)),
        "{status:#}"
    );
    work.send("stall-vfork 1000");
    let tid = field(&work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(500));
    let row = thread_row(&daemon.wdctl_json("threads"), tid);
    assert_eq!(
        (row["syscall"].as_str(), row["verdict"].as_str()),
        (Some("vfork"), Some("stalled")),
        "{row:#}"
    );
}

#[test]
fn a_comm_target_given_before_the_process_starts_is_monitored_when_it_does() {
    require_root();
    let group = unique_group();
    let rec = Recorder::start(group);
    let later = spawn_later(Workload::spawn);
    let mut opts = DaemonOpts::new(0, "300ms", "20ms");
    opts.targets = Some(vec!["--comm".into(), "wd-workload".into()]);
    // No service yet, so no heartbeat: start() returns at the first beat, once it runs.
    let mut daemon = Daemon::start(opts, group, &rec);
    let (spawned_at, mut work) = later.join().unwrap();
    assert!(
        rec.beats()[0].0 > spawned_at,
        "heartbeat sent before the service was running"
    );
    assert_monitored_from_its_first_syscalls(&daemon, &mut work);

    // The service dies; the heartbeat is stopped; a new one starts and is monitored again,
    // and resuming is allowed once it is healthy.
    drop(work);
    thread::sleep(Duration::from_millis(300));
    let work2 = Workload::spawn();
    thread::sleep(Duration::from_millis(300));
    let status = daemon.wdctl_json("status");
    assert!(
        status["monitored_pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(work2.pid)),
        "{status:#}"
    );
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let (code, out, err) = daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "heartbeat resumed");
    stop_cleanly(&mut daemon);
}

#[test]
fn a_cgroup_target_monitors_processes_that_start_in_it() {
    require_root();
    let cg = Cgroup2::new(&format!("wd-test-cg-{}", std::process::id()));
    let group = unique_group();
    let rec = Recorder::start(group);
    let dir = cg.dir.clone();
    let later = spawn_later(move || Workload::spawn_in_cgroup(&dir));
    let mut opts = DaemonOpts::new(0, "300ms", "20ms");
    opts.targets = Some(vec!["--cgroup".into(), cg.dir.display().to_string()]);
    let mut daemon = Daemon::start(opts, group, &rec);
    let (spawned_at, mut work) = later.join().unwrap();
    assert!(
        rec.beats()[0].0 > spawned_at,
        "heartbeat sent before the service was running"
    );
    assert_monitored_from_its_first_syscalls(&daemon, &mut work);
    stop_cleanly(&mut daemon);
    drop(work);
}

#[test]
fn a_syscall_budget_of_its_own_and_the_keepalived_track_file() {
    require_root();
    let mut work = Workload::spawn();
    let dir = TempDir::new("track");
    let track = dir.0.join("watchdog.track");
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "5s", "20ms");
    opts.extra = vec![
        "--syscall-budget".into(),
        "vfork=300ms".into(),
        "--track-file".into(),
        track.display().to_string(),
    ];
    let mut daemon = Daemon::start(opts, group, &rec);
    assert_eq!(
        std::fs::read_to_string(&track).unwrap(),
        "0\n",
        "sending: keepalived sees 0"
    );

    // vfork has 300 ms though the default is 5 s.
    work.send("stall-vfork 1500");
    let line = work.expect("STALL", Duration::from_secs(2));
    let (tid, began) = (field(&line, "tid"), field(&line, "at_ns"));
    thread::sleep(Duration::from_millis(700));
    let status = daemon.wdctl_json("status");
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
    stop_cleanly(&mut daemon);
}

#[test]
fn opt_in_auto_resume_after_recovery_and_the_stall_signal() {
    require_root();
    // Auto-resume: the heartbeat comes back once the thread has been healthy 500 ms.
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "20ms");
    opts.extra = vec!["--auto-resume-after".into(), "500ms".into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    work.send("stall-vfork 900");
    work.expect("STALL", Duration::from_secs(2));
    work.expect("UNSTALLED", Duration::from_secs(3));
    let recovered = monotonic_ns();
    thread::sleep(Duration::from_millis(300));
    assert!(
        rec.last_arrival().unwrap() < recovered,
        "resumed before 500 ms of health"
    );
    thread::sleep(Duration::from_millis(700));
    assert!(
        rec.last_arrival().unwrap() > recovered + 500 * MS,
        "did not resume by itself"
    );
    assert_eq!(daemon.wdctl_json("status")["heartbeat"], "sending");
    stop_cleanly(&mut daemon);
    drop(work);

    // The stall signal: SIGTERM here, so its effect is visible (the process dies of it).
    let mut work = Workload::spawn();
    let mut opts = DaemonOpts::new(work.pid, "300ms", "20ms");
    opts.extra = vec!["--stall-signal".into(), "SIGTERM".into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    work.send("stall-vfork 3000");
    work.expect("STALL", Duration::from_secs(2));
    daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("signalled the stalled process") && l.contains("SIGTERM")
    });
    let gone = daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("monitored process is gone")
    });
    assert!(gone.contains("was killed by SIGTERM"), "{gone}");
    stop_cleanly(&mut daemon);
}

#[test]
fn each_target_has_its_own_policy_and_targets_reload_live() {
    require_root();
    let mut patient = Workload::spawn();
    let mut strict = Workload::spawn();
    let dir = TempDir::new("targets");
    let config = dir.0.join("watchdog.toml");
    std::fs::write(
        &config,
        format!(
            "pids = [{}]\nbudget = \"300ms\"\n\n[[target]]\npid = {}\nbudget = \"5s\"\n",
            strict.pid, patient.pid
        ),
    )
    .unwrap();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(0, "unused", "20ms");
    opts.config = Some(config.clone());
    let mut daemon = Daemon::start(opts, group, &rec);
    let start = monotonic_ns();

    // Each thread is shown with its own target's budget, and judged by it: a 1 s
    // stall is nothing for the target with 5 s.
    patient.send("stall-vfork 1000");
    let tid = field(&patient.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(500));
    let rows = daemon.wdctl_json("threads");
    let row = thread_row(&rows, tid);
    assert_eq!(
        (
            row["syscall"].as_str(),
            row["budget_ms"].as_u64(),
            row["verdict"].as_str()
        ),
        (Some("vfork"), Some(5000), Some("ok")),
        "{row:#}"
    );
    let strict_row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"].as_u64() == Some(strict.pid as u64))
        .expect("the strict target's threads are listed");
    assert_eq!(strict_row["budget_ms"], 300, "{strict_row:#}");
    patient.expect("UNSTALLED", Duration::from_secs(2));
    let status = daemon.wdctl_json("status");
    assert_eq!(
        (
            status["heartbeat"].as_str(),
            status["stalls"].as_array().map(Vec::len)
        ),
        (Some("sending"), Some(0)),
        "{status:#}"
    );

    // Reload with other targets: the strict process is let go (no verdict), the patient
    // one now follows the node-wide 300 ms, and the heartbeat goes on throughout.
    std::fs::write(
        &config,
        format!("pids = [{}]\nbudget = \"300ms\"\n", patient.pid),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("configuration reloaded")
    });
    let status = daemon.wdctl_json("status");
    assert_eq!(
        status["monitored_pids"],
        serde_json::json!([patient.pid]),
        "{status:#}"
    );
    strict.send("stall-vfork 1000");
    strict.expect("STALL", Duration::from_secs(2));
    thread::sleep(Duration::from_millis(700));
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert_no_missed_beats(&rec, start, monotonic_ns(), Duration::from_millis(20 + 150));

    patient.send("stall-vfork 1000");
    let tid = field(&patient.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(600));
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    assert_eq!(
        (
            status["stalls"][0]["tid"].as_u64(),
            status["stalls"][0]["budget_ms"].as_u64()
        ),
        (Some(tid), Some(300)),
        "{status:#}"
    );
    stop_cleanly(&mut daemon);
}

#[test]
fn threads_beyond_the_slot_array_are_measured_in_the_overflow_table() {
    require_root();
    // One slot: every monitored thread but one lives in the INFLIGHT hash instead.
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "20ms");
    opts.env = vec![("WATCHDOG_INFLIGHT_SLOTS", "1".into())];
    let mut daemon = Daemon::start(opts, group, &rec);
    work.send("idle");
    for _ in 0..6 {
        work.expect("IDLE", Duration::from_secs(2));
    }
    work.send("stall-vfork 1000");
    let tid = field(&work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(600));
    let rows = daemon.wdctl_json("threads");
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
    stop_cleanly(&mut daemon);
}

#[test]
fn a_stuck_event_reader_stops_the_heartbeat() {
    require_root();
    // The test hook stops the ring-buffer reader 500 ms after start: nothing would see
    // an oops any more, so the node must fall silent (fail closed), and say why.
    let work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "2s", "20ms");
    opts.env = vec![("WATCHDOG_TEST_STALL_READER_MS", "500".into())];
    let mut daemon = Daemon::start(opts, group, &rec);
    let started = monotonic_ns();
    thread::sleep(Duration::from_millis(3500));
    let status = daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let reason = status["stopped_reason"].as_str().unwrap();
    assert!(
        reason.contains("kernel event reader made no progress"),
        "{reason}"
    );
    // Stopped within the 2 s bound (and a beat) of the reader's last progress.
    let last = rec.last_arrival().unwrap();
    assert!(
        last < started + 2_800 * MS,
        "heartbeat went on {} ms after start",
        (last - started) / MS
    );
    let (code, _, err) = daemon.wdctl(&["resume"]);
    assert_ne!(code, 0);
    assert!(err.contains("failing closed"), "{err}");
    stop_cleanly(&mut daemon);
}

#[test]
fn a_daemon_killed_by_sigkill_leaves_no_heartbeat_and_no_probe_and_restarts() {
    require_root();
    let work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let dir = TempDir::new("sigkill");
    let mut opts = DaemonOpts::new(work.pid, "2s", "20ms");
    opts.store = Some(dir.0.join("incidents.db"));
    let daemon = Daemon::start(opts, group, &rec);
    rec.wait_for(5, Duration::from_secs(2));
    daemon.signal(libc::SIGKILL);
    let killed = monotonic_ns();
    thread::sleep(Duration::from_millis(500));
    let last = rec.last_arrival().unwrap();
    assert!(
        last < killed + 30 * MS,
        "heartbeat {} ms after SIGKILL",
        (last - killed) / MS
    );
    // The links were file descriptors of the dead process: the kernel detached them.
    assert_probes_detached();
    drop(daemon);
    // A restart on the same socket path and store starts cleanly.
    let mut opts = DaemonOpts::new(work.pid, "2s", "20ms");
    opts.store = Some(dir.0.join("incidents.db"));
    let mut daemon = Daemon::start(opts, group, &rec);
    assert_eq!(daemon.wdctl_json("status")["heartbeat"], "sending");
    stop_cleanly(&mut daemon);
}

/// Run wdctl ARGS against `daemon` as uid 65534 with primary group `gid`.
fn wdctl_as(daemon: &Daemon, gid: u32, args: &[&str]) -> (i32, String, String) {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = daemon.wdctl_command(args);
    cmd.uid(65534).gid(gid);
    run_for_output(cmd)
}

#[test]
fn the_socket_group_may_read_only_root_may_resume_and_others_may_not_connect() {
    use std::os::unix::fs::MetadataExt as _;
    require_root();
    let work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "2s", "20ms");
    opts.extra = vec!["--socket-group".into(), "4242".into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 4242));

    // A member of the group reads.
    let (code, out, err) = wdctl_as(&daemon, 4242, &["threads", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["pid"].as_u64(), Some(work.pid as u64), "{out}");
    // ...but does not change anything.
    let (code, _, err) = wdctl_as(&daemon, 4242, &["resume"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("permission denied: resume changes the daemon, and only root may do that"),
        "{err}"
    );
    daemon.wait_log_line(Duration::from_secs(2), |l| {
        l.contains("control request denied") && l.contains("uid=65534") && l.contains("resume")
    });
    // Someone outside the group cannot even connect.
    let (code, _, err) = wdctl_as(&daemon, 65534, &["status"]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    // Root still can.
    let (code, _, err) = daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    stop_cleanly(&mut daemon);
}

#[test]
fn garbage_truncated_and_huge_control_requests_get_errors_and_the_daemon_stays_up() {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    require_root();
    let work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut daemon = Daemon::start(DaemonOpts::new(work.pid, "2s", "20ms"), group, &rec);
    let ask = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&daemon.socket).unwrap();
        // The daemon may answer (and close) before a huge request is all written.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let huge = vec![b'a'; 1 << 20];
    for (what, bytes) in [
        ("garbage", &b"hello there\n"[..]),
        ("truncated", &b"{\"threads\""[..]),
        ("binary", &[0xff, 0x00, 0xfe, b'\n'][..]),
        ("huge", &huge[..]),
    ] {
        let reply = ask(bytes);
        let v: serde_json::Value = serde_json::from_str(reply.trim())
            .unwrap_or_else(|e| panic!("{what}: no JSON reply ({e}): {reply:?}"));
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    assert_eq!(daemon.wdctl_json("status")["heartbeat"], "sending");
    stop_cleanly(&mut daemon);
}

#[test]
fn signed_heartbeats_verify_forgeries_and_replays_are_rejected_and_the_last_gasp_says_why() {
    use std::os::unix::fs::PermissionsExt as _;
    use watchdog::heartbeat::{Heartbeat, Status, socket};
    require_root();
    let dir = TempDir::new("key");
    let key_path = dir.0.join("heartbeat.key");
    let key = b"0123456789abcdef0123456789abcdef";
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "50ms");
    opts.extra = vec!["--heartbeat-key".into(), key_path.display().to_string()];
    let mut daemon = Daemon::start(opts, group, &rec);
    let listen = Command::new(bin("wdctl"))
        .args([
            "heartbeat",
            "listen",
            &group.to_string(),
            "--interface",
            "lo",
            "--json",
        ])
        .args(["--for", "3s", "--key"])
        .arg(&key_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    // A forged datagram (another key) and a replayed one (the right key, an old seq).
    let (_, last) = rec.beats().last().cloned().unwrap();
    let iface = watchdog::iface::Interface::by_name("lo").unwrap();
    let out = socket::sender(group, &iface, 1).unwrap();
    let send = |seq: u64, k: &[u8]| {
        let hb = Heartbeat {
            seq,
            reason: None,
            status: Status::Alive,
            ..last.clone()
        };
        let mut b = bytes::BytesMut::new();
        hb.encode(Some(k), &mut b);
        out.send(&b).unwrap();
    };
    send(last.seq + 1000, b"ffffffffffffffffffffffffffffffff");
    send(1, key);
    thread::sleep(Duration::from_millis(200));
    // A stall: the last gasp carries the reason.
    work.send("stall-vfork 1000");
    work.expect("STALL", Duration::from_secs(2));
    let text = String::from_utf8(listen.wait_with_output().unwrap().stdout).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let beats: Vec<_> = events.iter().filter(|e| e["event"] == "beat").collect();
    assert!(beats.len() >= 5, "{text}");
    assert!(beats.iter().all(|b| b["verified"] == true), "{text}");
    let rejected = |why: &str| {
        events
            .iter()
            .filter(|e| e["event"] == "rejected" && e["why"] == why)
            .count()
    };
    assert_eq!((rejected("forged"), rejected("replayed")), (1, 1), "{text}");
    let gasps: Vec<_> = beats.iter().filter(|b| b["status"] == "stalled").collect();
    assert_eq!(gasps.len(), 3, "{text}");
    assert!(
        gasps[0]["reason"].as_str().unwrap().contains("vfork"),
        "{text}"
    );
    stop_cleanly(&mut daemon);
}

#[test]
fn under_systemd_it_notifies_ready_status_and_keepalives_and_logs_json() {
    use std::os::unix::net::UnixDatagram;
    require_root();
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "20ms");
    opts.env = vec![
        ("NOTIFY_SOCKET", path.display().to_string()),
        ("WATCHDOG_USEC", "400000".into()),
    ];
    opts.extra = vec!["--log-format".into(), "json".into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    let read_for = |d: Duration| {
        let end = Instant::now() + d;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while Instant::now() < end {
            if let Ok(n) = notify.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    };
    let got = read_for(Duration::from_millis(1200));
    assert!(
        got[0].starts_with("READY=1\nSTATUS=heartbeat sending; 1 processes monitored"),
        "{got:?}"
    );
    let keepalives = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(keepalives >= 3, "WATCHDOG=1 every 200 ms: {got:?}");
    work.send("stall-vfork 1000");
    work.expect("STALL", Duration::from_secs(2));
    let got = read_for(Duration::from_millis(1500));
    assert!(
        got.iter()
            .any(|m| m.starts_with("STATUS=heartbeat STOPPED: thread") && m.contains("vfork")),
        "{got:?}"
    );
    stop_cleanly(&mut daemon);
    let got = read_for(Duration::from_millis(300));
    assert!(got.contains(&"STOPPING=1".to_owned()), "{got:?}");
    // --log-format json: every log line is one JSON object.
    let log = daemon.log_text();
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

#[test]
fn the_metrics_endpoint_parses_as_prometheus_text_follows_the_heartbeat_and_counts_probe_time() {
    use std::io::{Read as _, Write as _};
    require_root();
    let port = 30_000 + (std::process::id() % 20_000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "20ms");
    opts.extra = vec!["--metrics".into(), addr.clone(), "--probe-stats".into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    let scrape = || -> prometheus_parse::Scrape {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("not Prometheus text ({e}): {body}"))
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let before = scrape();
    assert_eq!(
        value(&before, "watchdog_heartbeat_sending", None),
        Some(1.0)
    );
    assert!(value(&before, "watchdog_heartbeats_sent", None).unwrap() >= 1.0);
    work.send("stall-vfork 1000");
    work.expect("STALL", Duration::from_secs(2));
    thread::sleep(Duration::from_millis(600));
    let after = scrape();
    assert_eq!(value(&after, "watchdog_heartbeat_sending", None), Some(0.0));
    assert_eq!(
        value(
            &after,
            "watchdog_verdicts_total",
            Some(("cause", "syscall-budget"))
        ),
        Some(1.0)
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "watchdog_syscall_duration_seconds_count"
                && s.labels.get("target") == Some("wd-workload")),
        "syscall durations by target"
    );
    // --probe-stats: the kernel counted our probes' runs and time.
    let runs = value(&after, "watchdog_probe_runs", Some(("probe", "sys_enter")));
    let secs = value(
        &after,
        "watchdog_probe_run_seconds",
        Some(("probe", "sys_enter")),
    );
    assert!(
        runs.is_some_and(|r| r > 0.0) && secs.is_some_and(|s| s > 0.0),
        "sys_enter runs {runs:?}, run time {secs:?}"
    );
    stop_cleanly(&mut daemon);
}

#[test]
fn mlock_and_a_realtime_priority_take_hold_but_not_in_exec_hooks() {
    require_root();
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    // The hook records its own scheduling fields: an operator's script must not run
    // SCHED_FIFO (a busy loop in it would starve the host).
    let dir = TempDir::new("rt-hook");
    let hook_out = dir.0.join("hook.stat");
    let hook = dir.0.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh
cat /proc/$$/stat > {0}.tmp && mv {0}.tmp {0}
",
            hook_out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut opts = DaemonOpts::new(work.pid, "2s", "20ms");
    opts.hook = Some(hook);
    opts.extra = vec!["--mlock".into(), "--rt-priority".into(), "5".into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    let pid = daemon.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(locked_kb > 1024, "VmLck {locked_kb} kB");
    // Every thread: SCHED_FIFO (policy 1) at priority 5 (/proc/PID/task/TID/stat
    // fields 40 and 41).
    for tid in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(tid.unwrap().path().join("stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        assert_eq!((fields[37], fields[38]), ("5", "1"), "{stat}");
    }
    assert_eq!(daemon.wdctl_json("status")["heartbeat"], "sending");

    // A kernel report runs the hook: at priority 0, SCHED_OTHER (policy 0).
    work.send("kmsg watchdog-test: BUG: simulated fault to run the exec hook");
    // (The hook renames its file into place: it is whole once it exists.)
    let stat = daemon.wait_hook_output(&hook_out, Duration::from_secs(5), |t| !t.is_empty());
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!((fields[37], fields[38]), ("0", "0"), "hook ran with {stat}");
    stop_cleanly(&mut daemon);
}

/// The capabilities the shipped systemd unit grants (`CapabilityBoundingSet=`).
fn unit_capabilities() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/watchdog.service");
    let unit = std::fs::read_to_string(path).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace().map(str::to_owned).collect()
}

/// Bit `n` of /proc/PID/status's CapEff, by capability name.
fn capability_bit(name: &str) -> u32 {
    match name {
        "CAP_KILL" => 5,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_NICE" => 23,
        "CAP_IPC_LOCK" => 14,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("unit grants {other}: add its bit here"),
    }
}

#[test]
fn the_service_units_capabilities_are_enough_for_every_feature() {
    require_root();
    let caps = unit_capabilities();
    // What systemd does for a root service with CapabilityBoundingSet=, done with
    // util-linux's setpriv: the daemon keeps only these.
    let bounding: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    // Another user's process: reading its fds and stacks and signalling it need the
    // capabilities, not just uid 0.
    let mut work = Workload::spawn_as_user(65534);
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "20ms");
    opts.wrapper = ["setpriv", "--inh-caps=-all", "--no-new-privs"]
        .map(String::from)
        .to_vec();
    opts.wrapper
        .push(format!("--bounding-set=-all,{}", bounding.join(",")));
    opts.wrapper.push("--".into());
    opts.extra = [
        "--mlock",
        "--rt-priority",
        "5",
        "--probe-stats",
        "--stall-signal",
        "SIGTERM",
    ]
    .map(String::from)
    .to_vec();
    let mut daemon = Daemon::start(opts, group, &rec);

    // It really runs with only those: CapEff is exactly the unit's set.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let want = caps.iter().fold(0u64, |m, c| m | 1 << capability_bit(c));
    assert_eq!(eff, want, "CapEff {eff:#x}, unit grants {caps:?}");

    // Every feature works: the stall is judged, with its kernel stack, and signalled.
    work.send("stall-vfork 3000");
    let tid = field(&work.expect("STALL", Duration::from_secs(2)), "tid");
    let inc = daemon.wait_incident(Duration::from_secs(3), |i| i["kind"] == "syscall-stall");
    assert_eq!(inc["tid"].as_u64(), Some(tid), "{inc:#}");
    // Read before the stall signal woke it; another user's wchan, args and stack.
    let st = &inc["stall"];
    assert_eq!(st["state"], "D", "{inc:#}");
    assert!(st["wchan"].is_string(), "no wchan: {inc:#}");
    assert_eq!(st["args"].as_array().unwrap().len(), 6, "{inc:#}");
    assert!(
        !st["kernel_stack"].as_array().unwrap().is_empty(),
        "no kernel stack: {inc:#}"
    );
    let gone = daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("monitored process is gone")
    });
    assert!(gone.contains("was killed by SIGTERM"), "{gone}");
    let log = daemon.log_text();
    for refusal in ["could not", "ermission denied", "not permitted"] {
        assert!(
            !log.contains(refusal),
            "under the unit's capabilities the log says {refusal:?}:\n{log}"
        );
    }
    stop_cleanly(&mut daemon);
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    // systemd's own checker: unknown keys, bad values, a missing ExecStart binary.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/watchdog.service");
    let unit = std::fs::read_to_string(path).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/watchdog "),
        "{unit}"
    );
    let dir = TempDir::new("unit");
    let copy = dir.0.join("watchdog.service");
    let here = bin("watchdog").display().to_string();
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/watchdog ",
            &format!("ExecStart={here} "),
        ),
    )
    .unwrap();
    let (code, out, err) = run_for_output({
        let mut c = Command::new("systemd-analyze");
        c.arg("verify").arg(&copy);
        c
    });
    assert_eq!(
        (code, out.trim(), err.trim()),
        (0, "", ""),
        "systemd-analyze verify {}",
        copy.display()
    );
}
