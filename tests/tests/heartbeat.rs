//! The heartbeat and what keeps it honest, end to end as root: signed beats and the last
//! gasp, and the daemon's own liveness (a stuck event reader, a SIGKILLed daemon).
use std::{process::Command, thread, time::Duration};

use watchdog_tests::*;

#[test]
fn signed_heartbeats_verify_forgeries_and_replays_are_rejected_and_the_last_gasp_says_why() {
    use std::os::unix::fs::PermissionsExt as _;
    use watchdog::heartbeat::{Heartbeat, Status, socket};
    let dir = TempDir::new("key");
    let key_path = dir.0.join("heartbeat.key");
    let key = b"0123456789abcdef0123456789abcdef";
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut node = Node::build("300ms", "50ms")
        .opts(|o| o.extra = vec!["--heartbeat-key".into(), key_path.display().to_string()])
        .start();
    let group = node.daemon.group;
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
    let (_, last) = node.rec.beats().last().cloned().unwrap();
    let iface = watchdog::heartbeat::iface::Interface::by_name("lo").unwrap();
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
    node.work.send("stall-vfork 1000");
    node.work.expect("STALL", Duration::from_secs(2));
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
    node.stop_cleanly();
}

#[test]
fn a_stuck_event_reader_stops_the_heartbeat() {
    // The test hook stops the ring-buffer reader 500 ms after start: nothing would see
    // an oops any more, so the node must fall silent (fail closed), and say why.
    let mut node = Node::build("2s", "20ms")
        .opts(|o| o.env = vec![("WATCHDOG_TEST_STALL_READER_MS", "500".into())])
        .start();
    let started = monotonic_ns();
    thread::sleep(Duration::from_millis(3500));
    let reason = node.assert_stopped();
    assert!(
        reason.contains("kernel event reader made no progress"),
        "{reason}"
    );
    // Stopped within the 2 s bound (and a beat) of the reader's last progress.
    let last = node.rec.last_arrival().unwrap();
    assert!(
        last < started + 2_800 * MS,
        "heartbeat went on {} ms after start",
        (last - started) / MS
    );
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_ne!(code, 0);
    assert!(err.contains("failing closed"), "{err}");
    node.stop_cleanly();
}

#[test]
fn a_daemon_killed_by_sigkill_leaves_no_heartbeat_and_no_probe_and_restarts() {
    let dir = TempDir::new("sigkill");
    let mut node = Node::build("2s", "20ms")
        .opts(|o| o.store = Some(dir.0.join("incidents.db")))
        .start();
    node.rec.wait_for(5, Duration::from_secs(2));
    node.daemon.signal(libc::SIGKILL);
    let killed = monotonic_ns();
    thread::sleep(Duration::from_millis(500));
    let last = node.rec.last_arrival().unwrap();
    assert!(
        last < killed + 30 * MS,
        "heartbeat {} ms after SIGKILL",
        (last - killed) / MS
    );
    // The links were file descriptors of the dead process: the kernel detached them.
    assert_probes_detached();
    // A restart (which reaps the killed daemon first) on the same socket path and store
    // starts cleanly.
    node.restart(|o| o.store = Some(dir.0.join("incidents.db")));
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "sending");
    node.stop_cleanly();
}

#[test]
fn a_verdict_holds_across_a_restart_of_the_daemon_until_resumed() {
    let dir = TempDir::new("latch");
    let store = dir.0.join("incidents.db");
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.store = Some(store.clone()))
        .start();
    node.work.send("stall-vfork 1500");
    node.work.expect("STALL", Duration::from_secs(2));
    // The latch is written before the stall's incident (one writer, in order): once
    // the incident is listed, the latch is kept.
    node.daemon
        .wait_incident(Duration::from_secs(2), |i| i["kind"] == "syscall-stall");
    // The daemon dies (a crash, an upgrade) while the heartbeat is latched off.
    node.daemon.signal(libc::SIGKILL);
    thread::sleep(Duration::from_millis(1600));
    // The stall is over, but no one resumed: the restarted daemon stays silent.
    let restarted = monotonic_ns();
    node.restart_silent(|o| o.store = Some(store.clone()));
    let reason = node.assert_stopped();
    assert!(
        reason.starts_with("stopped before the watchdog restarted and not resumed since: thread "),
        "{reason}"
    );
    assert!(reason.contains("vfork"), "{reason}");
    thread::sleep(Duration::from_millis(300));
    assert!(
        node.rec.last_arrival().unwrap() < restarted,
        "the restarted daemon sent a heartbeat"
    );
    // The operator resumes: it beats, and a later restart no longer holds it.
    let before = node.rec.beats().len();
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!((code, out.trim()), (0, "heartbeat resumed"), "{err}");
    node.rec.wait_for(before + 3, Duration::from_secs(2));
    node.daemon.signal(libc::SIGKILL);
    node.restart(|o| o.store = Some(store.clone()));
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "sending");
    node.stop_cleanly();
}
