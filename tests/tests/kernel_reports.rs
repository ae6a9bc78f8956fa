//! Kernel reports, end to end as root: lines on /dev/kmsg from a monitored thread, about
//! one, or from elsewhere; what stops the heartbeat, what only alerts, what is stored.
use std::{thread, time::Duration};

use watchdog_tests::*;

#[test]
fn a_kernel_bug_printed_by_a_monitored_thread_stops_the_heartbeat_at_once() {
    let mut node = Node::start("5s", "20ms");
    node.rec.wait_for(5, Duration::from_secs(2));

    node.work
        .send("kmsg watchdog-test: BUG: simulated kernel fault in a monitored thread");
    let line = node.work.expect("KMSG", Duration::from_secs(2));
    let (tid, wrote_at) = (field(&line, "tid"), field(&line, "at_ns"));
    thread::sleep(Duration::from_secs(1));

    let last = node.rec.last_arrival().unwrap();
    assert!(
        last >= wrote_at.saturating_sub(100 * MS),
        "heartbeat was not flowing before the write"
    );
    assert!(
        last <= wrote_at + 100 * MS,
        "heartbeat still sent {} ms after the BUG line",
        (last - wrote_at) / MS
    );
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let reason = status["stopped_reason"].as_str().unwrap();
    assert!(
        reason.contains("BUG:") && reason.contains(&format!("thread {tid}")),
        "{reason}"
    );
    let row = thread_row(&node.daemon.wdctl_json("threads"), tid);
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    assert_eq!(row["comm"], "reporter", "{row:#}");
    node.stop_cleanly();
}

#[test]
fn a_kernel_bug_printed_by_another_process_only_alerts() {
    let mut node = Node::start("5s", "20ms");

    let marker = format!(
        "watchdog-test: BUG: simulated kernel fault in an unmonitored process {}",
        std::process::id()
    );
    let wrote_at = monotonic_ns();
    std::fs::write("/dev/kmsg", format!("{marker}\n")).expect("write /dev/kmsg");
    thread::sleep(Duration::from_secs(1));

    assert_no_missed_beats(
        &node.rec,
        wrote_at.saturating_sub(200 * MS),
        monotonic_ns(),
        Duration::from_millis(20 + 150),
    );
    assert!(
        node.rec.last_arrival().unwrap() >= wrote_at + 900 * MS,
        "heartbeat stopped"
    );
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert_eq!(status["stalls"].as_array().unwrap().len(), 0, "{status:#}");

    // The alert goes out once the report is complete and stored.
    let alert = node.daemon.wait_log_line(Duration::from_secs(5), |l| {
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
    node.stop_cleanly();
}

#[test]
fn a_report_naming_a_monitored_thread_stalls_it_whoever_prints_it() {
    let mut node = Node::start("5s", "20ms");
    node.work.send("idle");
    let idle: Vec<String> = (0..6)
        .map(|_| node.work.expect("IDLE", Duration::from_secs(2)))
        .collect();
    let tid = field(
        idle.iter().find(|l| l.contains("kind=nanosleep")).unwrap(),
        "tid",
    );
    node.rec.wait_for(5, Duration::from_secs(2));

    // Printed by this (unmonitored) test process, as khungtaskd would, about the thread.
    let text =
        format!("watchdog-test: INFO: task idle-sleep:{tid} blocked for more than 120 seconds.");
    let wrote_at = monotonic_ns();
    std::fs::write("/dev/kmsg", format!("{text}\n")).unwrap();
    let inc = node
        .daemon
        .wait_incident(Duration::from_secs(5), |i| i["class"] == "hung_task");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(node.work.pid as u64), Some(tid)),
        "{inc:#}"
    );
    assert_eq!(inc["monitored"], true);
    assert_eq!(inc["stopped_heartbeat"], true);
    assert_eq!(
        inc["report"]["printer"]["pid"].as_u64(),
        Some(std::process::id() as u64)
    );
    let last = node.rec.last_arrival().unwrap();
    assert!(
        last <= wrote_at + 100 * MS,
        "heartbeat went on {} ms after the report",
        (last - wrote_at) / MS
    );
    let row = thread_row(&node.daemon.wdctl_json("threads"), tid);
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    node.stop_cleanly();
}

#[test]
fn kernel_reports_become_incidents_that_survive_a_restart() {
    let store_dir = TempDir::new("restart");
    let store = store_dir.0.join("incidents.db");
    let hook_out = store_dir.0.join("hook.out");
    let hook = store_dir.0.join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\nprintf '%s|%s|%s\\n' \"$1\" \"$2\" \"$3\" >> {0}\ncat >> {0}\necho >> {0}\n", hook_out.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut node = Node::build("5s", "20ms")
        .opts(|o| {
            o.store = Some(store.clone());
            o.hook = Some(hook.clone());
        })
        .start();

    let text = "watchdog-test: BUG: simulated kernel fault for the incident store";
    node.work.send(&format!("kmsg {text}"));
    let tid = field(&node.work.expect("KMSG", Duration::from_secs(2)), "tid");
    let inc = node.daemon.wait_incident(Duration::from_secs(5), |i| {
        i["kind"] == "kernel-report" && i["summary"].as_str().unwrap().contains(text)
    });
    assert_eq!(inc["class"], "bug", "{inc:#}");
    assert_eq!(
        (inc["pid"].as_u64(), inc["tid"].as_u64()),
        (Some(node.work.pid as u64), Some(tid)),
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
    let hook_text = node
        .daemon
        .wait_hook_output(&hook_out, Duration::from_secs(5), |t| {
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
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["exec_hook_failures"], 0, "{status:#}");
    node.stop_cleanly();

    // A new daemon on the same store still has it (monitoring a new workload), and
    // keeps the heartbeat stopped: no one resumed it after the verdict.
    node.work = Workload::spawn();
    node.restart_silent(|o| o.store = Some(store.clone()));
    let again = node.daemon.wdctl_json_args(&["incident", &id.to_string()]);
    assert_eq!(again["report"]["first_line"], text);
    assert_eq!(again["tid"].as_u64(), Some(tid));
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    assert!(
        status["stopped_reason"]
            .as_str()
            .unwrap()
            .starts_with("stopped before the watchdog restarted and not resumed since: "),
        "{status:#}"
    );
    node.stop_cleanly();
}

/// Write `lines` lines to /dev/kmsg as fast as the kernel takes them: each open file
/// may write 10 lines per 5 s (printk_devkmsg=ratelimit), so a file per 10 lines.
fn flood_kmsg(lines: usize) {
    use std::io::Write as _;
    for batch in 0..lines.div_ceil(10) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg");
        for i in 0..10 {
            let _ = writeln!(f, "watchdog-test: flood {}", batch * 10 + i);
        }
    }
}

#[test]
fn what_the_full_event_ring_dropped_is_found_again_in_the_log_and_in_proc() {
    let mut other = Workload::spawn();
    let other_pid = other.pid;
    let mut node = Node::build("5s", "20ms")
        .opts(|o| o.extra = vec!["--pid".into(), other_pid.to_string()])
        .start();
    // The daemon cannot read for half a second, and the ring (512 KiB, about 900
    // messages) overflows: then a monitored thread prints a BUG line and the other
    // monitored process is killed. Both events are dropped by the full ring.
    node.daemon.signal(libc::SIGSTOP);
    flood_kmsg(1500);
    node.work
        .send("kmsg watchdog-test: BUG: simulated kernel fault while the ring was full");
    node.work.expect("KMSG", Duration::from_secs(2));
    other.kill();
    thread::sleep(Duration::from_millis(500));
    node.daemon.signal(libc::SIGCONT);

    // The BUG line is read back from the kernel's log: it names no one, so it stops the
    // heartbeat (it may have been a monitored thread, and it was).
    let inc = node.daemon.wait_incident(Duration::from_secs(6), |i| {
        i["summary"]
            .as_str()
            .is_some_and(|s| s.contains("simulated kernel fault while the ring was full"))
    });
    assert!(
        inc["summary"]
            .as_str()
            .unwrap()
            .starts_with("read back from the kernel log (the event ring dropped it): "),
        "{inc:#}"
    );
    assert_eq!(inc["class"], "bug", "{inc:#}");
    assert_eq!(inc["stopped_heartbeat"], true, "{inc:#}");
    // The killed process is found gone in /proc, and no longer monitored.
    let gone = node.daemon.wait_log_line(Duration::from_secs(6), |l| {
        l.contains("monitored process is gone")
    });
    assert!(gone.contains(&format!("pid={other_pid}")), "{gone}");
    let (pids, status) = node.daemon.monitored_pids();
    assert!(status["lost_events"].as_u64().unwrap() > 0, "{status:#}");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    assert!(!pids.contains(&other_pid), "{status:#}");
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("process {other_pid} is gone")),
        "{err}"
    );
    node.stop_cleanly();
}
