//! The service heartbeat gate, end to end as root: a service whose own heartbeat thread
//! keeps telling its peers "alive" while its main thread is stuck in the kernel is
//! silenced by the kernel, with no change to the service; other senders, and the
//! service while it is healthy, lose nothing; a dead daemon's gate closes after its
//! grace, and a restarted daemon takes it over without a gap.
use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use watchdog_tests::{
    netns::{ADDR_A, ADDR_B, Heard, NetnsPair, Side, tcp_peer, udp_peer},
    *,
};

/// How long after the verdict a datagram already on its way may still arrive.
const SETTLE: u64 = 100 * MS;

/// The status's gates: (name, dropped).
fn gates(status: &serde_json::Value) -> Vec<(String, u64)> {
    status["gates"]
        .as_array()
        .unwrap_or_else(|| panic!("no gates in {status:#}"))
        .iter()
        .map(|g| {
            (
                g["gate"].as_str().unwrap().to_owned(),
                g["dropped"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Stall the node's workload for `ms` and wait for the verdict; returns when the
/// heartbeat stopped (CLOCK_MONOTONIC ns).
fn stall_until_verdict(node: &mut Node, ms: u64) -> u64 {
    node.work.send(&format!("stall-vfork {ms}"));
    node.work.expect("STALL", Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = node.daemon.wdctl_json("status");
        if status["heartbeat"] == "stopped" {
            return monotonic_ns();
        }
        assert!(Instant::now() < deadline, "no verdict: {status:#}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stall the node's workload for `ms`, wait for the verdict, then for the gates to take
/// hold: returns when the heartbeat stopped, and a time after which the gates are
/// closed (CLOCK_MONOTONIC ns).
fn stall_until_closed(node: &mut Node, ms: u64) -> (u64, u64) {
    let stopped = stall_until_verdict(node, ms);
    thread::sleep(Duration::from_nanos(SETTLE));
    (stopped, monotonic_ns())
}

/// Every destination (`via`) keeps hearing `pid` after `since`, within two seconds.
fn assert_still_heard(heard: &Heard, pid: u32, vias: &[String], since: u64) {
    for via in vias {
        heard.wait_for(pid, via, since, Duration::from_secs(2));
    }
}

/// No beat of `pid` came through any of `vias` after `since`.
fn assert_silent(heard: &Heard, pid: u32, vias: &[String], since: u64) {
    for via in vias {
        let n = heard.count_since(pid, via, since);
        assert_eq!(
            n, 0,
            "{n} beats of {pid} reached {via} through a closed gate"
        );
    }
}

#[test]
fn a_stalled_service_heartbeat_is_held_back_on_the_veth_and_on_loopback_and_no_one_elses() {
    require_root();
    let net = NetnsPair::new("g", true);
    let pins = GatePins::new("veth");
    // The peer: unicast IPv4 and IPv6 over the veth, IPv4 multicast on it (TTL 1),
    // and loopback IPv4 and IPv6 inside namespace A.
    let remote: Vec<SocketAddr> = vec![
        "192.0.2.2:7101".parse().unwrap(),
        "[2001:db8::2]:7102".parse().unwrap(),
    ];
    let group = (
        "239.255.71.3".parse().unwrap(),
        7103,
        ADDR_B.parse().unwrap(),
    );
    let peer_b = udp_peer(
        |f| drop(net.spawn_in(Side::B, f)),
        remote.clone(),
        Some(group),
    );
    let local: Vec<SocketAddr> = vec![
        "127.0.0.1:7104".parse().unwrap(),
        "[::1]:7105".parse().unwrap(),
    ];
    let peer_a = udp_peer(|f| drop(net.spawn_in(Side::A, f)), local.clone(), None);
    let beat = format!(
        "udp-beat 20 192.0.2.2:7101 [2001:db8::2]:7102 239.255.71.3:7103%{ADDR_A} 127.0.0.1:7104 [::1]:7105"
    );
    let ns_a = net.name(Side::A).to_owned();
    let pin_args = pins.args();
    let mut node = Node::build("300ms", "100ms")
        .workload(|| Workload::spawn_in_netns(&ns_a))
        .opts(|o| {
            o.extra.extend(pin_args);
            for gate in [
                "udp:7101,to=192.0.2.0/24",
                "udp:7102,to=2001:db8::/64",
                "udp:7103",
                "udp:7104,to=127.0.0.1",
                "udp:7105,to=::1",
            ] {
                o.extra.extend(["--gate".into(), gate.into()]);
            }
        })
        .start();
    // Someone else on the same node, sending to the same ports: never touched.
    let mut other = Workload::spawn_in_netns(net.name(Side::A));
    node.work.send(&beat);
    node.work.expect("BEAT", Duration::from_secs(2));
    other.send(&beat);
    other.expect("BEAT", Duration::from_secs(2));
    let (svc, oth) = (node.work.pid, other.pid);
    let b_vias: Vec<String> = remote
        .iter()
        .map(ToString::to_string)
        .chain(["239.255.71.3:7103".to_owned()])
        .collect();
    let a_vias: Vec<String> = local.iter().map(ToString::to_string).collect();
    let started = monotonic_ns();
    // The first IPv6 datagrams over a new veth may wait a second for neighbour
    // discovery: a readiness wait, not a measure.
    for (peer, vias) in [(&peer_b, &b_vias), (&peer_a, &a_vias)] {
        for via in vias {
            peer.wait_for(svc, via, started, Duration::from_secs(10));
        }
    }
    let started = monotonic_ns();
    assert!(pins.pinned(), "gate not pinned under {}", pins.0.display());

    // Healthy (its threads idle and beat): the gates drop nothing.
    node.work.send("idle");
    thread::sleep(Duration::from_millis(800));
    let healthy_until = monotonic_ns();
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["gated_packets"], 0, "{status:#}");
    assert_eq!(gates(&status).len(), 5, "{status:#}");
    assert!(status["gates_closed"].as_array().unwrap().is_empty());
    for via in &b_vias {
        let n = peer_b.count_since(svc, via, started);
        assert!(n >= 30, "only {n} beats through {via} in 800 ms at 20 ms");
    }

    // The main thread sticks in the kernel: the verdict closes the gates.
    let (stopped, closed) = stall_until_closed(&mut node, 4000);
    thread::sleep(Duration::from_secs(1));
    assert_silent(&peer_b, svc, &b_vias, closed);
    assert_silent(&peer_a, svc, &a_vias, closed);
    // The other sender's beats still arrive, through every gate.
    assert_still_heard(&peer_b, oth, &b_vias, closed);
    assert_still_heard(&peer_a, oth, &a_vias, closed);
    // The service was heard right up to the verdict (its thread kept beating).
    for via in b_vias.iter().chain(&a_vias) {
        let peer = if a_vias.contains(via) {
            &peer_a
        } else {
            &peer_b
        };
        let heard = peer.from(svc, via);
        let last = heard.iter().max().copied().unwrap_or(0);
        assert!(
            last > healthy_until && last <= stopped + SETTLE,
            "last beat through {via} at {} ms from the verdict",
            (last as i64 - stopped as i64) / MS as i64
        );
    }

    let status = node.daemon.wdctl_json("status");
    let counted = gates(&status);
    assert!(
        counted.iter().all(|(_, dropped)| *dropped >= 20),
        "every gate dropped the service's beats: {status:#}"
    );
    assert_eq!(
        status["gated_packets"].as_u64().unwrap(),
        counted.iter().map(|(_, d)| d).sum::<u64>()
    );
    assert_eq!(status["gates_closed"].as_array().unwrap().len(), 5);
    let incident = node
        .daemon
        .wait_incident(Duration::from_secs(2), |i| i["class"] == "stall");
    let named = incident["gates_closed"].as_array().unwrap();
    assert!(
        named.iter().any(|g| g == "udp:7101,to=192.0.2.0/24"),
        "the incident names the gates it closed: {incident:#}"
    );
    let (_, text, _) = node.daemon.wdctl(&["status"]);
    assert!(text.contains("gates:              CLOSED"), "{text}");

    // The stall ends; `wdctl resume` opens the gates with the heartbeat.
    node.work.expect("UNSTALLED", Duration::from_secs(6));
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!((code, out.trim()), (0, "heartbeat resumed"), "{err}");
    let resumed = monotonic_ns();
    assert_still_heard(&peer_b, svc, &b_vias, resumed);
    assert_still_heard(&peer_a, svc, &a_vias, resumed);

    // A clean stop with the heartbeat sent takes the gate away.
    node.stop_cleanly();
    assert!(!pins.pinned(), "gate left pinned after a clean stop");
    drop(other);
}

#[test]
fn a_dead_daemon_closes_the_gate_after_its_grace_and_a_restarted_one_takes_it_over() {
    require_root();
    let pins = GatePins::new("dead");
    let store = TempDir::new("gate-store");
    let addr: SocketAddr = "127.0.0.1:7111".parse().unwrap();
    let peer = udp_peer(|f| drop(thread::spawn(f)), vec![addr], None);
    let via = addr.to_string();
    let opts = |o: &mut DaemonOpts| {
        o.store = Some(store.0.join("incidents.db"));
        o.extra.extend(pins.args());
        o.extra
            .extend(["--gate", "udp:7111,to=127.0.0.1", "--gate-grace", "500ms"].map(String::from));
    };
    let mut node = Node::build("300ms", "100ms").opts(opts).start();
    node.work.send("udp-beat 20 127.0.0.1:7111");
    node.work.expect("BEAT", Duration::from_secs(2));
    let svc = node.work.pid;
    peer.wait_for(svc, &via, monotonic_ns(), Duration::from_secs(1));

    // SIGKILL while healthy: the service is unsupervised, so after the grace (500 ms) its
    // heartbeat falls silent, as ours did at once.
    node.daemon.signal(libc::SIGKILL);
    let killed = monotonic_ns();
    thread::sleep(Duration::from_millis(300));
    assert!(
        peer.count_since(svc, &via, killed) > 0,
        "the gate closed before its grace"
    );
    thread::sleep(Duration::from_millis(300));
    let lapsed = monotonic_ns();
    thread::sleep(Duration::from_millis(700));
    assert_silent(&peer, svc, std::slice::from_ref(&via), lapsed);
    assert!(pins.pinned(), "a dead daemon's gate must stay attached");

    // A restarted daemon takes the gate over: the service is heard again.
    node.restart(opts);
    let back = monotonic_ns();
    peer.wait_for(svc, &via, back, Duration::from_secs(2));

    // Stalled, then the daemon dies and another takes over: not one beat gets out.
    let (_, closed) = stall_until_closed(&mut node, 6000);
    node.daemon.signal(libc::SIGKILL);
    thread::sleep(Duration::from_millis(800));
    node.restart_silent(opts);
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    assert_eq!(
        status["gates_closed"].as_array().unwrap().len(),
        1,
        "{status:#}"
    );
    thread::sleep(Duration::from_millis(500));
    assert_silent(&peer, svc, std::slice::from_ref(&via), closed);
    assert!(
        node.daemon
            .log_text()
            .contains("took over the service heartbeat gate"),
        "{}",
        node.daemon.log_text()
    );

    // A clean stop while the heartbeat is stopped leaves the gate closed.
    let status = node.daemon.stop();
    assert!(status.success());
    thread::sleep(Duration::from_millis(700));
    assert_silent(&peer, svc, std::slice::from_ref(&via), closed);
    assert!(pins.pinned());

    // And the next daemon, resumed once the stall is over, opens it.
    node.work.expect("UNSTALLED", Duration::from_secs(8));
    node.restart_silent(opts);
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!((code, out.trim()), (0, "heartbeat resumed"), "{err}");
    peer.wait_for(svc, &via, monotonic_ns(), Duration::from_secs(2));
    node.stop_cleanly();
    assert!(!pins.pinned());
}

#[test]
fn a_tcp_heartbeat_and_one_sent_by_another_process_are_held_back() {
    require_root();
    let pins = GatePins::new("tcp");
    let tcp: SocketAddr = "127.0.0.1:7121".parse().unwrap();
    let udp: SocketAddr = "127.0.0.1:7122".parse().unwrap();
    let late: SocketAddr = "127.0.0.1:7123".parse().unwrap();
    let tcp_heard = tcp_peer(|f| drop(thread::spawn(f)), tcp);
    let udp_heard = udp_peer(|f| drop(thread::spawn(f)), vec![udp, late], None);
    // The service's heartbeat is sent by a helper process of its own.
    let mut helper = Workload::spawn();
    let helper_pid = helper.pid;
    let pin_args = pins.args();
    let mut node = Node::build("300ms", "100ms")
        .opts(|o| {
            o.extra.extend(pin_args);
            o.extra
                .extend(["--gate".into(), format!("tcp:{}", tcp.port())]);
            o.extra.extend([
                "--gate".into(),
                format!("udp:{}@pid:{helper_pid}", udp.port()),
            ]);
            o.extra
                .extend(["--gate".into(), format!("udp:{}", late.port())]);
        })
        .start();
    node.work.send(&format!("tcp-beat 20 {tcp}"));
    node.work.expect("TCPBEAT", Duration::from_secs(2));
    helper.send(&format!("udp-beat 20 {udp}"));
    helper.expect("BEAT", Duration::from_secs(2));
    let (svc, tvia, uvia) = (node.work.pid, tcp.to_string(), udp.to_string());
    let t0 = monotonic_ns();
    tcp_heard.wait_for(svc, &tvia, t0, Duration::from_secs(2));
    udp_heard.wait_for(helper_pid, &uvia, t0, Duration::from_secs(2));

    let (_, closed) = stall_until_closed(&mut node, 3000);
    thread::sleep(Duration::from_secs(1));
    assert_silent(&tcp_heard, svc, std::slice::from_ref(&tvia), closed);
    assert_silent(&udp_heard, helper_pid, std::slice::from_ref(&uvia), closed);
    // A socket the stalled service creates now is its own from the start: not even its
    // first datagram gets out (it is tagged when created, not after its first send).
    node.work.send(&format!("udp-beat 20 {late}"));
    node.work.expect("BEAT", Duration::from_secs(2));
    thread::sleep(Duration::from_millis(500));
    let lvia = late.to_string();
    assert_silent(&udp_heard, svc, std::slice::from_ref(&lvia), 0);
    let status = node.daemon.wdctl_json("status");
    for (gate, dropped) in gates(&status) {
        assert!(dropped > 0, "{gate} dropped nothing: {status:#}");
    }

    node.work.expect("UNSTALLED", Duration::from_secs(4));
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    // TCP retransmits what was held back; new lines follow.
    let resumed = monotonic_ns();
    tcp_heard.wait_for(svc, &tvia, resumed, Duration::from_secs(15));
    udp_heard.wait_for(helper_pid, &uvia, resumed, Duration::from_secs(2));
    udp_heard.wait_for(svc, &lvia, resumed, Duration::from_secs(2));
    node.stop_cleanly();
}

#[test]
fn a_reload_changes_the_gates_live_and_one_without_gates_takes_the_gate_away() {
    require_root();
    let pins = GatePins::new("reload");
    let dir = TempDir::new("gate-config");
    let config = dir.0.join("watchdog.toml");
    let write = |pid: u32, gate: Option<u16>| {
        let gate = gate
            .map(|port| format!("[[gate]]\nmatch = \"udp:{port}\"\nto = \"127.0.0.1\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!("pids = [{pid}]\nbudget = \"300ms\"\n{gate}"),
        )
        .unwrap()
    };
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:7131".parse().unwrap(),
        "127.0.0.1:7132".parse().unwrap(),
    );
    let (va, vb) = (a.to_string(), b.to_string());
    let heard = udp_peer(|f| drop(thread::spawn(f)), vec![a, b], None);
    let pin_args = pins.args();
    let mut node = Node::build("unused", "100ms")
        .opts(|o| {
            write(o.pid, Some(a.port()));
            o.config = Some(config.clone());
            o.extra.extend(pin_args);
        })
        .start();
    node.work.send(&format!("udp-beat 20 {a} {b}"));
    node.work.expect("BEAT", Duration::from_secs(2));
    let svc = node.work.pid;
    assert_eq!(gates(&node.daemon.wdctl_json("status")).len(), 1);

    // The gate moves from one port to the other.
    write(svc, Some(b.port()));
    node.daemon.signal(libc::SIGHUP);
    node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("configuration reloaded")
    });
    let status = node.daemon.wdctl_json("status");
    assert_eq!(
        gates(&status),
        vec![("udp:7132,to=127.0.0.1".to_owned(), 0)],
        "{status:#}"
    );
    let (_, closed) = stall_until_closed(&mut node, 2500);
    thread::sleep(Duration::from_secs(1));
    assert_silent(&heard, svc, std::slice::from_ref(&vb), closed);
    assert_still_heard(&heard, svc, std::slice::from_ref(&va), closed);

    // No gate any more: the gate goes away, even with the heartbeat stopped.
    write(svc, None);
    node.daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(3);
    while pins.pinned() {
        assert!(
            Instant::now() < deadline,
            "gate still pinned after the reload"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_still_heard(&heard, svc, &[vb], monotonic_ns());
    assert_eq!(node.daemon.wdctl_json("status")["heartbeat"], "stopped");
    node.stop_cleanly();
}
