//! Listening to a heartbeat group: the reference decoder, used by `wdctl heartbeat listen`.
use std::{
    collections::HashMap,
    io::Write,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::packet::Heartbeat;

/// What a listener saw: a heartbeat, a datagram it could not read, or a node that fell
/// silent.
#[derive(Debug)]
pub enum Seen {
    Beat {
        from: SocketAddr,
        hb: Heartbeat,
        /// Time since the previous heartbeat of the same node and incarnation.
        gap: Option<Duration>,
    },
    Malformed {
        from: SocketAddr,
        error: super::DecodeError,
    },
    Silent {
        node_id: String,
        for_: Duration,
    },
}

struct NodeState {
    last: Instant,
    incarnation: u64,
    gap: Option<Duration>,
    silent_reported: bool,
}

/// Tracks nodes and tells when one falls silent: no beat for three of its own gaps
/// (and at least `min_silence`).
pub struct Listener {
    sock: UdpSocket,
    nodes: HashMap<String, NodeState>,
    min_silence: Duration,
}

impl Listener {
    pub fn new(sock: UdpSocket, min_silence: Duration) -> std::io::Result<Self> {
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Listener {
            sock,
            nodes: HashMap::new(),
            min_silence,
        })
    }

    /// Wait for the next thing worth reporting.
    pub fn next_seen(&mut self) -> std::io::Result<Seen> {
        let mut buf = [0u8; 2048];
        loop {
            if let Some(seen) = self.check_silence() {
                return Ok(seen);
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => return Ok(self.on_datagram(&buf[..n], from)),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) -> Seen {
        let hb = match Heartbeat::decode(bytes) {
            Ok(hb) => hb,
            Err(error) => return Seen::Malformed { from, error },
        };
        let now = Instant::now();
        let gap = match self.nodes.get_mut(&hb.node_id) {
            Some(st) if st.incarnation == hb.incarnation => {
                let gap = now - st.last;
                st.last = now;
                st.gap = Some(gap);
                st.silent_reported = false;
                Some(gap)
            }
            _ => {
                self.nodes.insert(
                    hb.node_id.clone(),
                    NodeState {
                        last: now,
                        incarnation: hb.incarnation,
                        gap: None,
                        silent_reported: false,
                    },
                );
                None
            }
        };
        Seen::Beat { from, hb, gap }
    }

    fn check_silence(&mut self) -> Option<Seen> {
        let now = Instant::now();
        for (node_id, st) in self.nodes.iter_mut() {
            let Some(gap) = st.gap else { continue };
            let limit = (gap * 3).max(self.min_silence);
            let quiet = now - st.last;
            if !st.silent_reported && quiet > limit {
                st.silent_reported = true;
                return Some(Seen::Silent {
                    node_id: node_id.clone(),
                    for_: quiet,
                });
            }
        }
        None
    }
}

/// Print what a listener sees, one line each, as text or JSON.
pub fn print_seen(out: &mut impl Write, seen: &Seen, json: bool) -> std::io::Result<()> {
    match (seen, json) {
        (Seen::Beat { from, hb, gap }, false) => writeln!(
            out,
            "beat   node={} seq={} status={} incarnation={} from={} gap_ms={}",
            hb.node_id,
            hb.seq,
            hb.status.as_str(),
            hb.incarnation,
            from,
            gap.map(|g| g.as_millis().to_string())
                .unwrap_or_else(|| "-".into())
        ),
        (Seen::Beat { from, hb, gap }, true) => writeln!(
            out,
            "{}",
            serde_json::json!({
                "event": "beat",
                "node_id": hb.node_id,
                "seq": hb.seq,
                "status": hb.status.as_str(),
                "incarnation": hb.incarnation,
                "sent_at_ms": hb.sent_at_ms,
                "from": from.to_string(),
                "gap_ms": gap.map(|g| g.as_millis() as u64),
                "verified": false,
            })
        ),
        (Seen::Malformed { from, error }, false) => {
            writeln!(out, "bad    from={from} error={error}")
        }
        (Seen::Malformed { from, error }, true) => writeln!(
            out,
            "{}",
            serde_json::json!({"event": "malformed", "from": from.to_string(), "error": error.to_string()})
        ),
        (Seen::Silent { node_id, for_ }, false) => writeln!(
            out,
            "SILENT node={node_id} no heartbeat for {} ms",
            for_.as_millis()
        ),
        (Seen::Silent { node_id, for_ }, true) => writeln!(
            out,
            "{}",
            serde_json::json!({"event": "silent", "node_id": node_id, "silent_ms": for_.as_millis() as u64})
        ),
    }
}
