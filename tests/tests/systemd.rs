//! The shipped unit under a real systemd, end to end as root: systemd 252 as PID 1 of a
//! systemd-nspawn machine (see `watchdog_tests::nspawn`), the daemon installed the way
//! the README says (binaries in /usr/local/bin, `packaging/watchdog.service` as it is,
//! settings in /etc/watchdog/watchdog.toml), watching a service of that machine. The
//! machine has a pid namespace of its own, so this is also the daemon in a container:
//! the service's pids are the machine's, the kernel side's are the host's.
use std::time::Duration;

use watchdog_tests::{nspawn::Machine, *};

const UNIT: &str = include_str!("../../packaging/watchdog.service");

/// The node's settings: the service by its program name, a heartbeat on the machine's
/// loopback.
const CONFIG: &str = r#"
comms = ["wd-workload"]
budget = "1s"

[heartbeat]
node_id = "nspawn-node"
group = "239.255.42.9:7999"
interface = "lo"
interval = "100ms"
ttl = 1
"#;

/// The service: the test workload as a unit of its own, reading commands appended to
/// a file.
const SERVICE: &str = "touch /run/svc.cmd && systemd-run --unit=wd-svc --quiet /bin/sh -c \
    'tail -n +1 -f /run/svc.cmd | /usr/local/bin/wd-workload > /run/svc.out 2>&1'";

/// Beats heard on the machine's loopback in `secs` seconds, from `wdctl heartbeat listen`.
fn beats(m: &Machine, secs: u32) -> Vec<serde_json::Value> {
    let out = m.ok(&format!(
        "wdctl heartbeat listen --json --for {secs}s --interface lo 239.255.42.9:7999"
    ));
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "beat" && v["node_id"] == "nspawn-node")
        .collect()
}

#[test]
fn the_shipped_unit_under_a_real_systemd_notifies_reloads_restarts_and_stays_stopped() {
    let bins = bin("watchdog").parent().unwrap().to_owned();
    let m = Machine::boot("wd-systemd", &bins);
    m.ok("install -m755 /opt/wd/watchdog /opt/wd/wdctl /opt/wd/wd-workload /usr/local/bin/");
    m.write("/etc/systemd/system/watchdog.service", UNIT);
    m.write("/etc/watchdog/watchdog.toml", CONFIG);
    m.ok("systemctl daemon-reload");
    m.ok(SERVICE);
    let service_pid: u32 = m.wait_for(Duration::from_secs(5), "service process", |m| {
        m.sh("pgrep -x wd-workload").1.trim().parse().ok()
    });

    // Type=notify: `systemctl start` returns once READY=1 came; STATUS= is what the
    // daemon says of itself.
    m.ok("systemctl start watchdog");
    assert_eq!(m.property("watchdog", "ActiveState"), "active");
    assert_eq!(m.property("watchdog", "SubState"), "running");
    assert_eq!(
        m.property("watchdog", "StatusText"),
        "heartbeat sending; 1 processes monitored"
    );
    // The service as the machine numbers it (the kernel side's pid is the host's).
    let status = m.ok("wdctl status");
    assert!(
        status.contains(&format!("in pids {service_pid}\n")),
        "{status}"
    );
    let heard = beats(&m, 1);
    assert!(heard.len() >= 5, "beats on the machine's lo: {heard:?}");
    assert!(heard.iter().all(|b| b["status"] == "alive"), "{heard:?}");

    // A program of the watched name on the host, outside the machine: the kernel side
    // sees it exec, but it is no process of the machine's, so no target; its stall
    // stops nothing.
    let mut stranger = Workload::spawn();
    stranger.send("stall-vfork 2000");
    stranger.expect("STALL", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        m.property("watchdog", "StatusText"),
        "heartbeat sending; 1 processes monitored"
    );
    let log = m.ok("journalctl -u watchdog --no-pager -o cat");
    assert!(
        log.contains("outside the watchdog's pid namespace: not monitored"),
        "{log}"
    );
    stranger.kill();

    // `systemctl reload`: SIGHUP, the same process, settings read again.
    let main_pid = m.property("watchdog", "MainPID");
    m.ok("systemctl reload watchdog");
    let log = m.ok("journalctl -u watchdog --no-pager -o cat");
    assert!(log.contains("configuration reloaded"), "{log}");
    assert_eq!(m.property("watchdog", "MainPID"), main_pid);
    assert_eq!(m.property("watchdog", "ActiveState"), "active");

    // The service's thread hangs in the kernel (vfork, uninterruptible, for 10 min):
    // the heartbeat stops, and systemd shows why.
    m.ok("echo 'stall-vfork 600000' >> /run/svc.cmd");
    let why = m.wait_for(Duration::from_secs(5), "stopped heartbeat", |m| {
        let s = m.property("watchdog", "StatusText");
        s.starts_with("heartbeat STOPPED").then_some(s)
    });
    assert!(why.contains("vfork in uninterruptible sleep"), "{why}");
    assert!(why.contains(&format!("of pid {service_pid}")), "{why}");

    // kill -9 of the daemon: Restart=on-failure brings it back, and the restarted
    // daemon's heartbeat stays stopped while the service is still stuck.
    m.ok("systemctl kill -s KILL watchdog");
    m.wait_for(Duration::from_secs(10), "restart after SIGKILL", |m| {
        (m.property("watchdog", "NRestarts") == "1"
            && m.property("watchdog", "ActiveState") == "active"
            && m.property("watchdog", "MainPID") != main_pid)
            .then_some(())
    });
    let status = m.property("watchdog", "StatusText");
    assert!(status.starts_with("heartbeat STOPPED"), "{status}");
    assert!(status.contains("vfork"), "{status}");
    let heard = beats(&m, 2);
    assert!(
        heard.iter().all(|b| b["status"] != "alive"),
        "the restarted daemon beat 'alive' with the service stuck: {heard:?}"
    );
    let status = m.ok("wdctl status");
    assert!(status.contains("heartbeats sent:    0"), "{status}");
    assert!(status.contains("heartbeat:          STOPPED"), "{status}");

    // A wedged event reader (the test hook stops it 500 ms after start): no more
    // WATCHDOG=1, so systemd's watchdog (WatchdogSec=10s, as shipped) kills the daemon
    // and restarts it.
    m.write(
        "/etc/systemd/system/watchdog.service.d/test-hook.conf",
        "[Service]\nEnvironment=WATCHDOG_TEST_STALL_READER_MS=500\n",
    );
    m.ok("systemctl daemon-reload && systemctl restart watchdog");
    let restarts: u32 = m.property("watchdog", "NRestarts").parse().unwrap();
    m.wait_for(Duration::from_secs(20), "systemd's watchdog kill", |m| {
        let log = m.ok("journalctl -u watchdog --no-pager -o cat");
        log.contains("watchdog.service: Watchdog timeout (limit 10s)!")
            .then_some(())
    });
    m.wait_for(
        Duration::from_secs(10),
        "restart after the watchdog kill",
        |m| {
            let now: u32 = m.property("watchdog", "NRestarts").parse().unwrap();
            (now > restarts && m.property("watchdog", "ActiveState") == "active").then_some(())
        },
    );
    let log = m.ok("journalctl -u watchdog --no-pager -o cat");
    assert!(log.contains("Failed with result 'watchdog'"), "{log}");
}
