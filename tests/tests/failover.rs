//! Failover with a real keepalived pair, end to end as root: the virtual address leaves
//! the node when the watchdog judges its service stuck, comes back when an operator
//! resumes, leaves when the watchdog itself dies, and stays while the service only idles.
use std::{
    thread,
    time::{Duration, Instant},
};

use watchdog_tests::{keepalived::*, *};

/// The watchdog's options on node A: its track file and its store in `dir` (kept
/// across restarts).
fn on_node_a(dir: &TempDir) -> impl Fn(&mut DaemonOpts) + '_ {
    move |o: &mut DaemonOpts| {
        let track = dir.0.join("keepalived.track");
        o.extra = vec!["--track-file".into(), track.display().to_string()];
        o.store = Some(dir.0.join("incidents.db"));
    }
}

/// A monitored service with the watchdog's track file, and a keepalived pair whose node
/// A is master once it sees the watchdog alive.
fn ha_node(budget: &'static str, advert_int: &str) -> (Node, KeepalivedPair, TempDir) {
    let dir = TempDir::new("failover");
    let track = dir.0.join("keepalived.track");
    let node = Node::build(budget, "20ms").opts(on_node_a(&dir)).start();
    let pair = KeepalivedPair::start(&track, &node.daemon.socket, advert_int);
    pair.wait_master(HaNode::A, Duration::from_secs(10));
    (node, pair, dir)
}

#[test]
fn a_stuck_service_hands_the_virtual_address_over_and_resume_takes_it_back() {
    let (mut node, pair, _dir) = ha_node("300ms", "0.1");
    // Idle (waits only) for 2 s: the address stays.
    node.work.send("idle");
    let idle_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < idle_until {
        assert_eq!(pair.master(), Some(HaNode::A), "{}", pair.logs());
        thread::sleep(Duration::from_millis(50));
    }
    // A thread sticks in uninterruptible sleep: within the budget, a scan and
    // keepalived's own hand-over (a priority-0 advert, then B's skew of 61 ms).
    node.work.send("stall-vfork 1500");
    let stalled = Instant::now();
    node.work.expect("STALL", Duration::from_secs(2));
    let on_b = pair.wait_master(HaNode::B, Duration::from_secs(3));
    let took = on_b - stalled;
    eprintln!("stall began -> the address on B: {took:?}");
    assert!(
        took < Duration::from_millis(300 + 150 + 250),
        "the address reached B {took:?} after the stall began"
    );
    assert_eq!(std::fs::read_to_string(&pair.track_file).unwrap(), "1\n");
    // The stall ends; the node stays out until an operator resumes, then A takes the
    // address back (preempt: 3 adverts and a skew, about 0.36 s).
    node.work.expect("UNSTALLED", Duration::from_secs(3));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(pair.master(), Some(HaNode::B), "came back by itself");
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!((code, out.trim()), (0, "heartbeat resumed"), "{err}");
    let resumed = Instant::now();
    let back = pair.wait_master(HaNode::A, Duration::from_secs(3));
    assert!(
        back - resumed < Duration::from_millis(1500),
        "{:?}",
        back - resumed
    );
    node.stop_cleanly();
}

#[test]
fn a_dead_watchdog_hands_the_virtual_address_over_whatever_the_service_does() {
    let (mut node, pair, dir) = ha_node("300ms", "0.1");
    let track = dir.0.join("keepalived.track");
    // Killed while the service is healthy: the track file still says 0, but the node is
    // unsupervised; the script that asks the watchdog fails within its interval.
    node.daemon.signal(libc::SIGKILL);
    let killed = Instant::now();
    let on_b = pair.wait_master(HaNode::B, Duration::from_secs(5));
    assert!(
        on_b - killed < Duration::from_millis(2500),
        "{:?}",
        on_b - killed
    );
    assert_eq!(std::fs::read_to_string(&track).unwrap(), "0\n");
    // A restarted watchdog takes the node back.
    node.restart(on_node_a(&dir));
    pair.wait_master(HaNode::A, Duration::from_secs(5));
    // Killed while the service is stuck: the address stays with B, and a restarted
    // watchdog keeps it there (the verdict's latch) until an operator resumes.
    node.work.send("stall-vfork 1500");
    node.work.expect("STALL", Duration::from_secs(2));
    pair.wait_master(HaNode::B, Duration::from_secs(3));
    node.daemon
        .wait_incident(Duration::from_secs(2), |i| i["kind"] == "syscall-stall");
    node.daemon.signal(libc::SIGKILL);
    node.work.expect("UNSTALLED", Duration::from_secs(3));
    node.restart_silent(on_node_a(&dir));
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(pair.master(), Some(HaNode::B), "{}", pair.logs());
    let (code, _, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    pair.wait_master(HaNode::A, Duration::from_secs(3));
    node.stop_cleanly();
}

/// The shipped state hook for Pacemaker.
fn node_health_hook() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/pacemaker/watchdog-node-health"
    )
    .into()
}

#[test]
fn pacemaker_stops_the_resource_on_a_stall_and_starts_it_on_resume() {
    use watchdog_tests::pacemaker::Pacemaker;
    let cluster = Pacemaker::start();
    let dir = TempDir::new("pacemaker-node");
    let opts = |o: &mut DaemonOpts| {
        o.extra = vec!["--state-hook".into(), node_health_hook()];
        o.store = Some(dir.0.join("incidents.db"));
    };
    let mut node = Node::build("300ms", "20ms").opts(opts).start();
    // Told `sending` at start: green.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster.health().contains("value=\"green\"") {
        assert!(Instant::now() < deadline, "{}", cluster.health());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(cluster.resource_running());
    // A stall: the node turns red and the resource stops.
    node.work.send("stall-vfork 1500");
    let began = Instant::now();
    node.work.expect("STALL", Duration::from_secs(2));
    let stopped = cluster.wait_resource(false, Duration::from_secs(10));
    eprintln!("stall began -> resource stopped: {:?}", stopped - began);
    assert!(
        cluster.health().contains("value=\"red\""),
        "{}",
        cluster.health()
    );
    // A restarted cluster forgets the attribute; a restarted watchdog says it again.
    node.work.expect("UNSTALLED", Duration::from_secs(3));
    cluster.forget_health();
    cluster.wait_resource(true, Duration::from_secs(10));
    node.daemon.signal(libc::SIGKILL);
    node.restart_silent(opts);
    cluster.wait_resource(false, Duration::from_secs(10));
    // Resumed: green, and the resource runs again.
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!((code, out.trim()), (0, "heartbeat resumed"), "{err}");
    cluster.wait_resource(true, Duration::from_secs(10));
    assert!(
        cluster.health().contains("value=\"green\""),
        "{}",
        cluster.health()
    );
    node.stop_cleanly();
    drop(cluster);
}
