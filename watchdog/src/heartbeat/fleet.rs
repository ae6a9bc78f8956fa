//! The fleet as one heartbeat listener hears it: per node, when it last beat, whether it
//! says alive or stalled (and why) or has fallen silent, sequence gaps, restarts; and
//! the datagrams refused, by reason. `wdctl heartbeat listen --metrics` serves it to
//! Prometheus: one monitor per segment is how a fleet sees a node that died too hard to
//! report anything itself. Pure: fed what the listener saw and the time.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{
    listener::Seen,
    packet::{Heartbeat, Status},
};

/// What a node is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Alive,
    /// Its last heartbeat said stalled, with this reason.
    Stalled(String),
    /// Heard before (or expected) and not heard for `silent_after` of its intervals.
    Silent,
    /// Expected, not heard yet, and the monitor started less than `silent_after`
    /// intervals ago.
    Unknown,
}

impl NodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Alive => "alive",
            NodeStatus::Stalled(_) => "stalled",
            NodeStatus::Silent => "silent",
            NodeStatus::Unknown => "unknown",
        }
    }
}

#[derive(Debug)]
struct Node {
    /// None: expected, never heard.
    last: Option<Instant>,
    /// The node's own interval, as its beats show it (the last gap between two alive
    /// beats).
    interval: Option<Duration>,
    incarnation: u64,
    seq: u64,
    /// What its last heartbeat said.
    said: NodeStatus,
    /// The last stall reason it gave (kept once it falls silent).
    reason: Option<String>,
    beats: u64,
    sequence_gaps: u64,
    restarts: u64,
}

/// Settings of a fleet monitor.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// Missed intervals after which a node is silent.
    pub silent_after: u32,
    /// The interval assumed for a node until two of its beats tell its own (and for an
    /// expected node never heard).
    pub default_interval: Duration,
    /// Nodes that should be there: silent until heard.
    pub expected: Vec<String>,
}

/// Every node heard (or expected), and the refused datagrams.
#[derive(Debug)]
pub struct Fleet {
    settings: FleetSettings,
    started: Instant,
    nodes: BTreeMap<String, Node>,
    rejected: BTreeMap<&'static str, u64>,
    malformed: u64,
}

/// One node as the monitor reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub node: String,
    pub status: NodeStatus,
    /// Seconds since its last beat (since the monitor started, if never heard).
    pub last_beat_age: f64,
    pub reason: Option<String>,
    pub beats: u64,
    pub sequence_gaps: u64,
    pub restarts: u64,
}

impl Fleet {
    pub fn new(settings: FleetSettings, now: Instant) -> Self {
        let nodes = settings
            .expected
            .iter()
            .map(|n| (n.clone(), Node::expected()))
            .collect();
        Fleet {
            settings,
            started: now,
            nodes,
            rejected: BTreeMap::new(),
            malformed: 0,
        }
    }

    /// Take in what the listener saw at `now`.
    pub fn on_seen(&mut self, seen: &Seen, now: Instant) {
        match seen {
            Seen::Beat { hb, .. } => self.on_beat(hb, now),
            Seen::Rejected { why, .. } => *self.rejected.entry(why).or_default() += 1,
            Seen::Malformed { .. } => self.malformed += 1,
            // The fleet judges silence itself (in node intervals, see `view`).
            Seen::Silent { .. } => {}
        }
    }

    fn on_beat(&mut self, hb: &Heartbeat, now: Instant) {
        let node = self
            .nodes
            .entry(hb.node_id.clone())
            .or_insert_with(Node::expected);
        match node.last {
            Some(last) if node.incarnation == hb.incarnation => {
                // Its interval, from two regular beats (a last gasp is a burst of
                // stalled datagrams back to back, no interval).
                if node.said == NodeStatus::Alive && hb.status == Status::Alive {
                    node.interval = Some(now - last);
                }
                // The listener refused anything not newer: the seq only goes up.
                node.sequence_gaps += hb.seq.saturating_sub(node.seq + 1);
            }
            Some(_) => {
                node.restarts += 1;
                node.interval = None;
            }
            None => {}
        }
        node.last = Some(now);
        node.incarnation = hb.incarnation;
        node.seq = hb.seq;
        node.beats += 1;
        node.said = match hb.status {
            Status::Alive => NodeStatus::Alive,
            Status::Stalled => {
                let reason = hb.reason.clone().unwrap_or_default();
                node.reason = Some(reason.clone());
                NodeStatus::Stalled(reason)
            }
        };
        if node.said == NodeStatus::Alive {
            node.reason = None;
        }
    }

    /// Every node at `now`, by name.
    pub fn view(&self, now: Instant) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|(name, n)| {
                let since = n.last.unwrap_or(self.started);
                let quiet = now.saturating_duration_since(since);
                let interval = n.interval.unwrap_or(self.settings.default_interval);
                let silent = quiet > interval * self.settings.silent_after;
                NodeView {
                    node: name.clone(),
                    status: if silent {
                        NodeStatus::Silent
                    } else {
                        n.said.clone()
                    },
                    last_beat_age: quiet.as_secs_f64(),
                    reason: n.reason.clone(),
                    beats: n.beats,
                    sequence_gaps: n.sequence_gaps,
                    restarts: n.restarts,
                }
            })
            .collect()
    }

    /// The Prometheus text exposition of the fleet at `now`.
    pub fn render(&self, now: Instant) -> String {
        type Labels = Vec<(String, String)>;
        let status: Family<Labels, Gauge> = Family::default();
        let age: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
        let stall: Family<Labels, Gauge> = Family::default();
        let beats: Family<Labels, Counter> = Family::default();
        let gaps: Family<Labels, Counter> = Family::default();
        let restarts: Family<Labels, Counter> = Family::default();
        let rejected: Family<Labels, Counter> = Family::default();
        let malformed: Counter = Counter::default();
        let node_label = |n: &str| vec![("node".to_owned(), n.to_owned())];
        for v in self.view(now) {
            for s in ["alive", "stalled", "silent", "unknown"] {
                let mut l = node_label(&v.node);
                l.push(("status".into(), s.into()));
                status
                    .get_or_create(&l)
                    .set(i64::from(v.status.as_str() == s));
            }
            age.get_or_create(&node_label(&v.node)).set(v.last_beat_age);
            if let Some(reason) = &v.reason {
                let mut l = node_label(&v.node);
                l.push(("reason".into(), reason.clone()));
                stall.get_or_create(&l).set(1);
            }
            beats.get_or_create(&node_label(&v.node)).inc_by(v.beats);
            gaps.get_or_create(&node_label(&v.node))
                .inc_by(v.sequence_gaps);
            restarts
                .get_or_create(&node_label(&v.node))
                .inc_by(v.restarts);
        }
        for (why, n) in &self.rejected {
            rejected
                .get_or_create(&vec![("reason".to_owned(), (*why).to_owned())])
                .inc_by(*n);
        }
        malformed.inc_by(self.malformed);
        let mut r = Registry::with_prefix("watchdog_fleet");
        r.register(
            "node_status",
            "1 for what each node is now: alive, stalled (its heartbeat says so), silent (not heard for the configured number of its intervals) or unknown (expected, not heard yet, the monitor just started)",
            status,
        );
        r.register(
            "node_last_beat_age_seconds",
            "Seconds since each node's last heartbeat (since the monitor started, for an expected node never heard)",
            age,
        );
        r.register(
            "node_stall_info",
            "The reason a node's last stalled heartbeat gave (kept while it is silent after it)",
            stall,
        );
        r.register("node_beats", "Heartbeats heard from each node", beats);
        r.register(
            "node_sequence_gaps",
            "Heartbeats of a node missed within one incarnation (by sequence number)",
            gaps,
        );
        r.register(
            "node_restarts",
            "Times a node's incarnation changed (its watchdog restarted)",
            restarts,
        );
        r.register(
            "rejected_datagrams",
            "Well-formed datagrams refused, by reason (forged, unsigned, replayed, incarnation-went-back)",
            rejected,
        );
        r.register(
            "malformed_datagrams",
            "Datagrams that are no heartbeat",
            malformed,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}

impl Node {
    fn expected() -> Self {
        Node {
            last: None,
            interval: None,
            incarnation: 0,
            seq: 0,
            said: NodeStatus::Unknown,
            reason: None,
            beats: 0,
            sequence_gaps: 0,
            restarts: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(expected: &[&str]) -> FleetSettings {
        FleetSettings {
            silent_after: 3,
            default_interval: Duration::from_secs(1),
            expected: expected.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn beat(node: &str, incarnation: u64, seq: u64, status: Status) -> Seen {
        Seen::Beat {
            from: "127.0.0.1:1".parse().unwrap(),
            hb: Heartbeat {
                node_id: node.into(),
                incarnation,
                seq,
                sent_at_ms: 0,
                status,
                reason: (status == Status::Stalled).then(|| "thread 7 stuck".into()),
            },
            auth: super::super::packet::Auth::Unchecked,
            gap: None,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_node_is_alive_then_stalled_with_its_reason_then_silent() {
        let t0 = Instant::now();
        let mut f = Fleet::new(settings(&[]), t0);
        f.on_seen(&beat("a", 1, 1, Status::Alive), t0);
        f.on_seen(&beat("a", 1, 2, Status::Alive), t0 + 100 * MS);
        assert_eq!(f.view(t0 + 150 * MS)[0].status, NodeStatus::Alive);
        // The last gasp: three stalled datagrams back to back.
        for seq in 3..6 {
            f.on_seen(&beat("a", 1, seq, Status::Stalled), t0 + 200 * MS);
        }
        let v = &f.view(t0 + 250 * MS)[0];
        assert_eq!(v.status, NodeStatus::Stalled("thread 7 stuck".into()));
        // Three of its own 100 ms intervals without a beat: silent, the reason kept.
        let v = &f.view(t0 + 501 * MS)[0];
        assert_eq!(
            (&v.status, v.reason.as_deref()),
            (&NodeStatus::Silent, Some("thread 7 stuck"))
        );
        f.on_seen(&beat("a", 1, 6, Status::Alive), t0 + 600 * MS);
        let v = &f.view(t0 + 600 * MS)[0];
        assert_eq!((&v.status, v.reason.as_deref()), (&NodeStatus::Alive, None));
    }

    #[test]
    fn gaps_and_restarts_are_counted() {
        let t0 = Instant::now();
        let mut f = Fleet::new(settings(&[]), t0);
        f.on_seen(&beat("a", 1, 1, Status::Alive), t0);
        f.on_seen(&beat("a", 1, 4, Status::Alive), t0 + 100 * MS);
        f.on_seen(&beat("a", 2, 1, Status::Alive), t0 + 200 * MS);
        let v = &f.view(t0 + 200 * MS)[0];
        assert_eq!((v.beats, v.sequence_gaps, v.restarts), (3, 2, 1));
    }

    #[test]
    fn an_expected_node_never_heard_is_silent_and_an_unknown_one_is_not_listed() {
        let t0 = Instant::now();
        let f = Fleet::new(settings(&["b"]), t0);
        assert_eq!(
            f.view(t0 + 2 * Duration::from_secs(1))[0].status,
            NodeStatus::Unknown
        );
        let v = &f.view(t0 + Duration::from_millis(3001))[0];
        assert_eq!((v.node.as_str(), &v.status), ("b", &NodeStatus::Silent));
        assert_eq!(f.view(t0).len(), 1);
    }

    #[test]
    fn the_exposition_names_each_node_and_refusals_by_reason() {
        let t0 = Instant::now();
        let mut f = Fleet::new(settings(&[]), t0);
        f.on_seen(&beat("a", 1, 1, Status::Stalled), t0);
        f.on_seen(
            &Seen::Rejected {
                from: "127.0.0.1:1".parse().unwrap(),
                hb: match beat("a", 1, 1, Status::Alive) {
                    Seen::Beat { hb, .. } => hb,
                    _ => unreachable!(),
                },
                why: "forged",
                count: 1,
            },
            t0,
        );
        let text = f.render(t0);
        for want in [
            "watchdog_fleet_node_status{node=\"a\",status=\"stalled\"} 1",
            "watchdog_fleet_node_status{node=\"a\",status=\"alive\"} 0",
            "watchdog_fleet_node_stall_info{node=\"a\",reason=\"thread 7 stuck\"} 1",
            "watchdog_fleet_node_beats_total{node=\"a\"} 1",
            "watchdog_fleet_rejected_datagrams_total{reason=\"forged\"} 1",
            "watchdog_fleet_malformed_datagrams_total 0",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }
}
