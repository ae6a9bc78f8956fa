//! The control socket and who may use it, end to end as root: the socket group reads,
//! only root changes anything, others cannot connect, and bad requests get errors.
use std::{thread, time::Duration};

use watchdog_tests::*;

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
    let mut node = Node::build("2s", "20ms")
        .opts(|o| o.extra = vec!["--socket-group".into(), "4242".into()])
        .start();
    let meta = std::fs::metadata(&node.daemon.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 4242));

    // A member of the group reads.
    let (code, out, err) = wdctl_as(&node.daemon, 4242, &["threads", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["pid"].as_u64(), Some(node.work.pid as u64), "{out}");
    // ...but does not change anything.
    let (code, _, err) = wdctl_as(&node.daemon, 4242, &["resume"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("permission denied: resume changes the daemon, and only root may do that"),
        "{err}"
    );
    node.daemon.wait_log_line(Duration::from_secs(2), |l| {
        l.contains("control request denied") && l.contains("uid=65534") && l.contains("resume")
    });
    // Someone outside the group cannot even connect.
    let (code, _, err) = wdctl_as(&node.daemon, 65534, &["status"]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    // Root still can.
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    node.stop_cleanly();
}

#[test]
fn garbage_truncated_and_huge_control_requests_get_errors_and_the_daemon_stays_up() {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    let mut node = Node::start("2s", "20ms");
    let ask = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&node.daemon.socket).unwrap();
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
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "sending");
    node.stop_cleanly();
}

/// Resident size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn clients_that_never_read_large_replies_cost_neither_beats_nor_memory() {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;
    let mut node = Node::start("2s", "20ms");
    // A service of 3,000 threads: a `threads` reply of about a megabyte.
    node.work.send("threads 3000");
    node.work.expect("THREADS", Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    let pid = node.daemon.pid();
    let rss_before = rss_kib(pid);
    let start = monotonic_ns();
    // 200 clients ask for it and never read a byte.
    let clients: Vec<UnixStream> = (0..200)
        .filter_map(|_| {
            let mut s = UnixStream::connect(&node.daemon.socket).ok()?;
            s.write_all(b"{\"cmd\":\"threads\"}\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(
        clients.len() >= 150,
        "only {} clients connected",
        clients.len()
    );
    thread::sleep(Duration::from_secs(3));
    let rss_during = rss_kib(pid);
    // The heartbeat went on as if nothing happened, and the daemon still answers.
    node.assert_beating_since(start);
    assert!(
        rss_during < rss_before + 64 * 1024,
        "resident size grew from {rss_before} KiB to {rss_during} KiB"
    );
    drop(clients);
    node.stop_cleanly();
}

#[test]
fn a_store_locked_by_another_process_holds_up_neither_the_heartbeat_nor_the_daemon() {
    let dir = TempDir::new("locked-store");
    let store = dir.0.join("incidents.db");
    let mut node = Node::build("2s", "20ms")
        .opts(|o| o.store = Some(store.clone()))
        .start();
    // Another process takes the store's write lock for 4 s (an operator's sqlite3, a
    // backup). The daemon's own queries wait on it.
    let locker = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, time\nc = sqlite3.connect({:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('LOCKED', flush=True)\ntime.sleep(4)\n",
            store.display().to_string()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut locker = locker;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "LOCKED");
    let start = monotonic_ns();
    let askers: Vec<_> = (0..3)
        .map(|_| {
            let cmd = node.daemon.wdctl_command(&["incidents"]);
            thread::spawn(move || run_for_output(cmd))
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    // Beats on time, and the daemon's own liveness never failed.
    node.assert_beating_since(start);
    for a in askers {
        let _ = a.join();
    }
    let _ = locker.wait();
    node.stop_cleanly();
}
