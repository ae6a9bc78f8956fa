//! The fleet, end to end as root, with the real servers (see `watchdog_tests::prometheus`):
//! the shipped Prometheus rules against what a running daemon and fleet monitor
//! export, Prometheus scraping two nodes and a monitor while one node stalls, incidents
//! pushed to Alertmanager and resolved by `wdctl resume`, and an Alertmanager down or
//! slow costing the heartbeat nothing.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use watchdog::heartbeat::packet::Heartbeat;
use watchdog_tests::{prometheus::*, *};

fn rules_dir() -> PathBuf {
    packaging()
}

/// A fleet monitor: `wdctl heartbeat listen --metrics` on the group, killed when dropped.
struct Monitor {
    child: Child,
    port: u16,
}

impl Monitor {
    fn start(group: SocketAddr, extra: &[&str]) -> Monitor {
        let port = free_port();
        let child = Command::new(bin("wdctl"))
            .args(["heartbeat", "listen", "--interface", "lo", "--metrics"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .arg(group.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("run wdctl");
        wait_until(Duration::from_secs(5), "the monitor's endpoint", || {
            get_text(port, "/metrics")
        });
        Monitor { child, port }
    }

    fn metrics(&self) -> String {
        get_text(self.port, "/metrics").unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metrics_opts(o: &mut DaemonOpts, node: &'static str, group: SocketAddr, port: u16) {
    o.node_id = node;
    o.group = Some(group);
    o.extra
        .extend(["--metrics".to_owned(), format!("127.0.0.1:{port}")]);
}

/// `name{k="v",...}` as written in a promtool test's `series:`: name and labels.
fn parse_series(s: &str) -> (String, BTreeMap<String, String>) {
    let (name, rest) = s.split_once('{').unwrap_or((s, "}"));
    let mut labels = BTreeMap::new();
    let mut chars = rest.trim_end_matches('}').chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name.to_owned(), labels)
}

/// Every sample of an exposition: (name, labels).
fn scraped(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let end = l.rfind(' ').unwrap_or(l.len());
            parse_series(&l[..end])
        })
        .collect()
}

/// Labels whose values are a fixed vocabulary: the rules match on them, so the test's
/// values must be ones the daemon really uses.
const VOCABULARY: [&str; 4] = ["status", "cause", "class", "severity"];

#[test]
fn the_rules_tests_series_are_what_a_daemon_and_a_monitor_export_and_promtool_passes() {
    let group = unique_group();
    let monitor = Monitor::start(group, &[]);
    let port = free_port();
    let mut node = Node::build("500ms", "100ms")
        .opts(|o| metrics_opts(o, "node-a", group, port))
        .start();
    // A stall (a verdict: syscall-budget) and a BUG line from the service (a kernel
    // report: bug, critical), and one heartbeat replayed to the group (refused).
    node.work.send("stall-vfork 800");
    node.work.expect("STALL", Duration::from_secs(2));
    node.work
        .send("kmsg watchdog-test: BUG: unable to handle page fault for address: 0000000000001000");
    node.work.expect("KMSG", Duration::from_secs(2));
    let (_, old) = node.rec.beats()[0].clone();
    let mut bytes = bytes::BytesMut::new();
    Heartbeat::encode(&old, None, &mut bytes);
    let replay = UdpSocket::bind("127.0.0.1:0").unwrap();
    replay.set_multicast_ttl_v4(0).unwrap();
    replay.send_to(&bytes, group).unwrap();
    let daemon = wait_until(Duration::from_secs(5), "the stall and the report", || {
        let t = get_text(port, "/metrics")?;
        (t.contains("watchdog_verdicts_total{cause=\"syscall-budget\"}")
            && t.contains("watchdog_kernel_reports_total{class=\"bug\""))
        .then_some(t)
    });
    let fleet = wait_until(
        Duration::from_secs(5),
        "node-a silent, the replay refused",
        || {
            let t = monitor.metrics();
            (t.contains("watchdog_fleet_node_status{node=\"node-a\",status=\"silent\"} 1")
                && t.contains("watchdog_fleet_rejected_datagrams_total{reason=\"replayed\"} 1"))
            .then_some(t)
        },
    );
    let exported: Vec<_> = scraped(&daemon)
        .into_iter()
        .chain(scraped(&fleet))
        .collect();

    let test_file = std::fs::read_to_string(rules_dir().join("watchdog.rules.test.yml")).unwrap();
    let mut checked = 0;
    for line in test_file.lines() {
        let Some(series) = line.trim().strip_prefix("- series: '") else {
            continue;
        };
        let (name, mut labels) = parse_series(series.trim_end_matches('\''));
        // Prometheus' own series, and the labels its scrape adds.
        if name == "up" {
            continue;
        }
        labels.remove("job");
        labels.remove("instance");
        let keys: BTreeSet<&String> = labels.keys().collect();
        let found = exported.iter().any(|(n, l)| {
            *n == name
                && l.keys().collect::<BTreeSet<_>>() == keys
                && VOCABULARY
                    .iter()
                    .all(|k| labels.get(*k).is_none_or(|v| l.get(*k) == Some(v)))
        });
        assert!(
            found,
            "the rules test uses {series}, which neither the daemon nor the monitor exports:\n{daemon}\n{fleet}"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} series checked");

    let out = Command::new("promtool")
        .args(["test", "rules", "watchdog.rules.test.yml"])
        .current_dir(rules_dir())
        .output()
        .expect("promtool (Debian's prometheus, from cargo xtask provision)");
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop_cleanly();
}

/// The Alertmanager alert of `node`'s incident of kind `kind`, if it holds one.
fn incident_alert(am: u16, node: &str, kind: &str) -> Option<serde_json::Value> {
    alertmanager_alerts(am)
        .into_iter()
        .find(|a| a["labels"]["node"] == node && a["labels"]["kind"] == kind)
}

#[test]
fn prometheus_and_alertmanager_see_one_node_of_two_stall_and_resume() {
    let am = alertmanager(free_port());
    let group = unique_group();
    let monitor = Monitor::start(group, &["--expect", "node-c"]);
    let (port_a, port_b) = (free_port(), free_port());
    let push = |o: &mut DaemonOpts| {
        o.extra.extend([
            "--alertmanager".to_owned(),
            format!("http://127.0.0.1:{}", am.port),
            "--alertmanager-resend".to_owned(),
            "1s".to_owned(),
        ])
    };
    let mut a = Node::build("500ms", "100ms")
        .opts(|o| {
            metrics_opts(o, "node-a", group, port_a);
            push(o)
        })
        .start();
    let mut b = Node::build("500ms", "100ms")
        .opts(|o| {
            metrics_opts(o, "node-b", group, port_b);
            push(o)
        })
        .start();
    let prom = prometheus(&[port_a, port_b], &[monitor.port], am.port);
    let sending = |port: u16| {
        query(
            prom.port,
            &format!("watchdog_heartbeat_sending{{instance=\"127.0.0.1:{port}\"}}"),
        )
        .first()
        .and_then(|s| s["value"][1].as_str().map(str::to_owned))
    };
    wait_until(
        Duration::from_secs(15),
        "both nodes scraped, sending",
        || {
            (sending(port_a).as_deref() == Some("1") && sending(port_b).as_deref() == Some("1"))
                .then_some(())
        },
    );

    // node-a's service sticks in vfork for 3 s.
    a.work.send("stall-vfork 3000");
    a.work.expect("STALL", Duration::from_secs(2));
    // The monitor: node-a stalled (its last gasps say why), then silent.
    let stalled = "watchdog_fleet_node_status{node=\"node-a\",status=\"stalled\"} 1";
    let silent = "watchdog_fleet_node_status{node=\"node-a\",status=\"silent\"} 1";
    // (Polled often: it says stalled for three of node-a's 100 ms intervals.)
    let start = std::time::Instant::now();
    while !monitor.metrics().contains(stalled) {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "node-a never stalled on the monitor"
        );
        thread::sleep(Duration::from_millis(20));
    }
    wait_until(
        Duration::from_secs(3),
        "node-a silent on the monitor",
        || {
            let m = monitor.metrics();
            (m.contains(silent)
                && m.contains("watchdog_fleet_node_stall_info{node=\"node-a\",reason=\"thread "))
            .then_some(())
        },
    );
    // Prometheus: node-a stopped, node-b not; the rules' alerts fire.
    wait_until(
        Duration::from_secs(10),
        "node-a not sending in Prometheus",
        || (sending(port_a).as_deref() == Some("0")).then_some(()),
    );
    let alerts = wait_until(Duration::from_secs(15), "the rules' alerts", || {
        let f = firing(prom.port);
        let has = |name: &str, label: &str, value: &str| {
            f.iter()
                .any(|a| a["labels"]["alertname"] == name && a["labels"][label] == value)
        };
        (has(
            "WatchdogHeartbeatStopped",
            "instance",
            &format!("127.0.0.1:{port_a}"),
        ) && has("WatchdogNodeSilent", "node", "node-a")
            && has("WatchdogServiceStalled", "cause", "syscall-budget")
            && has("WatchdogNodeSilent", "node", "node-c"))
        .then_some(f)
    });
    let stopped = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "WatchdogHeartbeatStopped")
        .unwrap();
    assert!(
        stopped["labels"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("vfork in uninterruptible sleep")),
        "{stopped:#}"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["labels"]["instance"] == format!("127.0.0.1:{port_b}")
                || a["labels"]["node"] == "node-b"),
        "node-b is healthy: {alerts:#?}"
    );
    assert_eq!(sending(port_b).as_deref(), Some("1"));

    // Alertmanager holds node-a's incident, with its labels.
    let alert = wait_until(
        Duration::from_secs(10),
        "the incident in Alertmanager",
        || incident_alert(am.port, "node-a", "syscall-stall"),
    );
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "WatchdogIncident", "{alert:#}");
    assert_eq!(labels["class"], "stall", "{alert:#}");
    assert_eq!(labels["severity"], "critical", "{alert:#}");
    assert_eq!(labels["comm"], "stuck", "{alert:#}");
    assert!(
        labels["cgroup"]
            .as_str()
            .is_some_and(|c| c.starts_with('/')),
        "{alert:#}"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("vfork")),
        "{alert:#}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    assert!(incident_alert(am.port, "node-b", "syscall-stall").is_none());

    // The vfork ends; the operator resumes: the alert is resolved.
    thread::sleep(Duration::from_millis(2500));
    let (code, _, err) = a.daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    wait_until(Duration::from_secs(10), "the incident resolved", || {
        incident_alert(am.port, "node-a", "syscall-stall")
            .is_none()
            .then_some(())
    });
    wait_until(Duration::from_secs(10), "node-a sending again", || {
        (sending(port_a).as_deref() == Some("1")).then_some(())
    });
    // Node a stops first (its programs detach; node b's stay until it stops).
    let status = a.daemon.stop();
    assert!(status.success(), "{}", a.daemon.log_text());
    b.stop_cleanly();
}

#[test]
fn an_alertmanager_down_or_slow_costs_the_heartbeat_nothing_and_gets_the_alert_once_back() {
    // One Alertmanager not started yet (connections refused), one that accepts and
    // never answers (slow: every push times out).
    let down = free_port();
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let metrics = free_port();
    let mut node = Node::build("2s", "50ms")
        .opts(|o| {
            o.extra.extend([
                "--alertmanager".to_owned(),
                format!("http://127.0.0.1:{down}"),
                "--alertmanager".to_owned(),
                format!("http://127.0.0.1:{slow_port}"),
                "--alertmanager-resend".to_owned(),
                "1s".to_owned(),
                "--metrics".to_owned(),
                format!("127.0.0.1:{metrics}"),
            ])
        })
        .start();
    let from = monotonic_ns();
    // An allocation failure reported in the service's name (the kernel's format, with
    // the test marker as the program): an incident that stops nothing.
    node.work.send(
        "kmsg watchdog-test: page allocation failure: order:0, mode:0x40cc0(GFP_KERNEL|__GFP_COMP), nodemask=(null),cpuset=/,mems_allowed=0",
    );
    node.work.expect("KMSG", Duration::from_secs(2));
    let failures = || {
        get_text(metrics, "/metrics")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("watchdog_alertmanager_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The slow one times out (5 s); the down one refuses, and is retried meanwhile.
    thread::sleep(Duration::from_secs(7));
    node.assert_beating_since(from);
    assert!(
        failures() >= 3,
        "failures counted: {}\n{}",
        failures(),
        node.daemon.log_text()
    );

    // The Alertmanager comes up: the alert arrives on a retry.
    let am = alertmanager(down);
    let alert = wait_until(
        Duration::from_secs(10),
        "the alert, once it is back",
        || incident_alert(am.port, "test-node", "kernel-report"),
    );
    assert_eq!(alert["labels"]["class"], "alloc_failure", "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    node.assert_beating_since(from);
    drop(slow);
    node.stop_cleanly();
}
