//! Running as a service, end to end as root: systemd notification and JSON logs, the
//! metrics endpoint, mlock and a realtime priority, and the shipped unit's capabilities
//! (enough for every feature; `systemd-analyze verify` is in packaging.rs, without root).
use std::{
    thread,
    time::{Duration, Instant},
};

use watchdog_tests::*;

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
        "CAP_SYSLOG" => 34,
        other => panic!("unit grants {other}: add its bit here"),
    }
}

#[test]
fn under_systemd_it_notifies_ready_status_and_keepalives_and_logs_json() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| {
            o.env = vec![
                ("NOTIFY_SOCKET", path.display().to_string()),
                ("WATCHDOG_USEC", "400000".into()),
            ];
            o.extra = vec!["--log-format".into(), "json".into()];
        })
        .start();
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
    node.work.send("stall-vfork 1000");
    node.work.expect("STALL", Duration::from_secs(2));
    let got = read_for(Duration::from_millis(1500));
    assert!(
        got.iter()
            .any(|m| m.starts_with("STATUS=heartbeat STOPPED: thread") && m.contains("vfork")),
        "{got:?}"
    );
    node.stop_cleanly();
    let got = read_for(Duration::from_millis(300));
    assert!(got.contains(&"STOPPING=1".to_owned()), "{got:?}");
    // --log-format json: every log line is one JSON object.
    let log = node.daemon.log_text();
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
    let port = 30_000 + (std::process::id() % 20_000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.extra = vec!["--metrics".into(), addr.clone(), "--probe-stats".into()])
        .start();
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
    node.work.send("stall-vfork 1000");
    node.work.expect("STALL", Duration::from_secs(2));
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
    node.stop_cleanly();
}

#[test]
fn mlock_and_a_realtime_priority_take_hold_but_not_in_exec_hooks() {
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
    let mut node = Node::build("2s", "20ms")
        .opts(|o| {
            o.hook = Some(hook);
            o.extra = vec!["--mlock".into(), "--rt-priority".into(), "5".into()];
        })
        .start();
    let pid = node.daemon.pid();
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
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "sending");

    // A kernel report runs the hook: at priority 0, SCHED_OTHER (policy 0).
    node.work
        .send("kmsg watchdog-test: BUG: simulated fault to run the exec hook");
    // (The hook renames its file into place: it is whole once it exists.)
    let stat = node
        .daemon
        .wait_hook_output(&hook_out, Duration::from_secs(5), |t| !t.is_empty());
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!((fields[37], fields[38]), ("0", "0"), "hook ran with {stat}");
    node.stop_cleanly();
}

#[test]
fn the_service_units_capabilities_are_enough_for_every_feature() {
    let caps = unit_capabilities();
    // What systemd does for a root service with CapabilityBoundingSet=, done with
    // util-linux's setpriv: the daemon keeps only these.
    let bounding: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    // Another user's process: reading its fds and stacks and signalling it need the
    // capabilities, not just uid 0.
    let mut node = Node::build("300ms", "20ms")
        .workload(|| Workload::spawn_as_user(65534))
        .opts(|o| {
            o.wrapper = ["setpriv", "--inh-caps=-all", "--no-new-privs"]
                .map(String::from)
                .to_vec();
            o.wrapper
                .push(format!("--bounding-set=-all,{}", bounding.join(",")));
            o.wrapper.push("--".into());
            o.extra = [
                "--mlock",
                "--rt-priority",
                "5",
                "--probe-stats",
                "--stall-signal",
                "SIGTERM",
            ]
            .map(String::from)
            .to_vec();
        })
        .start();

    // It really runs with only those: CapEff is exactly the unit's set.
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.daemon.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let want = caps.iter().fold(0u64, |m, c| m | 1 << capability_bit(c));
    assert_eq!(eff, want, "CapEff {eff:#x}, unit grants {caps:?}");

    // Every feature works: the stall is judged, with its kernel stack, and signalled.
    node.work.send("stall-vfork 3000");
    let tid = field(&node.work.expect("STALL", Duration::from_secs(2)), "tid");
    let inc = node
        .daemon
        .wait_incident(Duration::from_secs(3), |i| i["kind"] == "syscall-stall");
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
    let gone = node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("monitored process is gone")
    });
    assert!(gone.contains("was killed by SIGTERM"), "{gone}");
    let log = node.daemon.log_text();
    for refusal in ["could not", "ermission denied", "not permitted"] {
        assert!(
            !log.contains(refusal),
            "under the unit's capabilities the log says {refusal:?}:\n{log}"
        );
    }
    node.stop_cleanly();
}
