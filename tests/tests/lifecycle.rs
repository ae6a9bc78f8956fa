//! The monitored process's life, end to end as root: it exits, crashes, is OOM-killed, or
//! recovers from a stall; when the heartbeat stops, and how it comes back.
use std::{thread, time::Duration};

use watchdog_tests::*;

#[test]
fn a_monitored_process_that_exits_stops_the_heartbeat_and_says_how() {
    let mut node = Node::start("5s", "20ms");
    node.rec.wait_for(5, Duration::from_secs(2));
    let exit_at = monotonic_ns();
    node.work.send("exit 3");
    thread::sleep(Duration::from_millis(600));
    let last = node.rec.last_arrival().unwrap();
    assert!(
        last <= exit_at + 100 * MS,
        "heartbeat went on {} ms after the exit",
        (last - exit_at) / MS
    );
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let reason = status["stopped_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "monitored process {} (wd-workload) exited with status 3",
            node.work.pid
        )),
        "{reason}"
    );
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is gone: wd-workload exited with status 3"),
        "{err}"
    );
    node.stop_cleanly();
}

#[test]
fn a_monitored_process_killed_by_sigsegv_is_a_crash_incident() {
    let mut node = Node::start("5s", "50ms");
    let pid = node.work.pid;
    node.work.send("segv");
    let line = node.work.expect("SEGV", Duration::from_secs(2));
    let tid = field(&line, "tid");
    let crashed_at = field(&line, "at_ns");
    let inc = node
        .daemon
        .wait_incident(Duration::from_secs(5), |i| i["kind"] == "crash");
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
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let last = node.rec.last_arrival().unwrap();
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
    node.stop_cleanly();
}

#[test]
fn the_oom_killer_taking_a_monitored_process_is_recorded_three_ways() {
    let cgroup = MemoryCgroup::new(&format!("wd-test-oom-{}", std::process::id()), 32 << 20);
    let mut node = Node::build("5s", "50ms")
        .workload(|| {
            let work = Workload::spawn();
            cgroup.add(work.pid);
            work
        })
        .start();
    let pid = node.work.pid;
    node.work.send("alloc 256");
    node.work.expect("ALLOC", Duration::from_secs(2));

    // The kernel's text report, attributed by "Killed process N" to the monitored process.
    let report = node.daemon.wait_incident(Duration::from_secs(10), |i| {
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
    let victim = node
        .daemon
        .wait_incident(Duration::from_secs(5), |i| i["kind"] == "oom-victim");
    assert_eq!(victim["pid"].as_u64(), Some(pid as u64), "{victim:#}");
    // And the death itself, by the kernel's SIGKILL.
    let crash = node
        .daemon
        .wait_incident(Duration::from_secs(5), |i| i["kind"] == "crash");
    assert_eq!(crash["signal"]["signal"], "SIGKILL", "{crash:#}");
    assert_eq!(
        crash["signal"]["code_meaning"], "SI_KERNEL: sent by the kernel",
        "{crash:#}"
    );
    node.stop_cleanly();
}

#[test]
fn after_a_transient_stall_the_heartbeat_stays_stopped_until_resumed() {
    let mut node = Node::start("300ms", "20ms");
    node.work.send("stall-vfork 900");
    let tid = field(&node.work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(500));
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_ne!(code, 0, "resume must be refused while stalled");
    assert!(
        err.contains(&format!(
            "not resuming: thread {tid} of pid {} is stalled: vfork",
            node.work.pid
        )),
        "{err}"
    );

    node.work.expect("UNSTALLED", Duration::from_secs(3));
    thread::sleep(Duration::from_millis(200));
    let quiet_from = monotonic_ns();
    thread::sleep(Duration::from_millis(500));
    assert!(
        node.rec.last_arrival().unwrap() < quiet_from,
        "heartbeat came back by itself"
    );
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "stopped");

    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "heartbeat resumed");
    let resumed_at = monotonic_ns();
    thread::sleep(Duration::from_millis(300));
    assert!(
        node.rec.last_arrival().unwrap() > resumed_at,
        "no heartbeat after resume"
    );
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "sending");
    node.stop_cleanly();
}

#[test]
fn opt_in_auto_resume_after_recovery_and_the_stall_signal() {
    // Auto-resume: the heartbeat comes back once the thread has been healthy 500 ms.
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.extra = vec!["--auto-resume-after".into(), "500ms".into()])
        .start();
    node.work.send("stall-vfork 900");
    node.work.expect("STALL", Duration::from_secs(2));
    node.work.expect("UNSTALLED", Duration::from_secs(3));
    let recovered = monotonic_ns();
    thread::sleep(Duration::from_millis(300));
    assert!(
        node.rec.last_arrival().unwrap() < recovered,
        "resumed before 500 ms of health"
    );
    thread::sleep(Duration::from_millis(700));
    assert!(
        node.rec.last_arrival().unwrap() > recovered + 500 * MS,
        "did not resume by itself"
    );
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "sending");
    node.stop_cleanly();

    // The stall signal: SIGTERM here, so its effect is visible (the process dies of it).
    // A new workload: the first one's stall is over.
    node.work = Workload::spawn();
    node.restart(|o| o.extra = vec!["--stall-signal".into(), "SIGTERM".into()]);
    node.work.send("stall-vfork 3000");
    node.work.expect("STALL", Duration::from_secs(2));
    node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("signalled the stalled process") && l.contains("SIGTERM")
    });
    let gone = node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("monitored process is gone")
    });
    assert!(gone.contains("was killed by SIGTERM"), "{gone}");
    node.stop_cleanly();
}
