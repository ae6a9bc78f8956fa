//! Listening to a heartbeat group: the reference decoder, used by `wdctl heartbeat listen`.
use crate::terminal::printable;
use std::{
    collections::HashMap,
    io::Write,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::packet::{Auth, Heartbeat};

/// What a listener saw: a heartbeat, a datagram it could not read, or a node that fell
/// silent.
#[derive(Debug)]
pub enum Seen {
    Beat {
        from: SocketAddr,
        hb: Heartbeat,
        auth: Auth,
        /// Time since the previous heartbeat of the same node and incarnation.
        gap: Option<Duration>,
    },
    /// A well-formed datagram the listener does not believe: unsigned or forged when a
    /// key was given, or replayed (not newer than the last one of its node).
    Rejected {
        from: SocketAddr,
        hb: Heartbeat,
        why: &'static str,
        /// Rejections so far, of this kind.
        count: u64,
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
    seq: u64,
    gap: Option<Duration>,
    silent_reported: bool,
}

/// Tracks nodes and tells when one falls silent: no beat for three of its own gaps
/// (and at least `min_silence`).
pub struct Listener {
    sock: UdpSocket,
    nodes: HashMap<String, NodeState>,
    min_silence: Duration,
    key: Option<Vec<u8>>,
    /// Rejected datagrams, by reason.
    rejected: HashMap<&'static str, u64>,
}

impl Listener {
    /// With `key`, only datagrams with a right tag are believed.
    pub fn new(
        sock: UdpSocket,
        min_silence: Duration,
        key: Option<Vec<u8>>,
    ) -> std::io::Result<Self> {
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Listener {
            sock,
            nodes: HashMap::new(),
            min_silence,
            key,
            rejected: HashMap::new(),
        })
    }

    /// Rejected datagrams so far, by reason (`forged`, `unsigned`, `replayed`).
    pub fn rejected(&self, why: &str) -> u64 {
        self.rejected.get(why).copied().unwrap_or(0)
    }

    fn reject(&mut self, from: SocketAddr, hb: Heartbeat, why: &'static str) -> Seen {
        let count = self.rejected.entry(why).or_default();
        *count += 1;
        Seen::Rejected {
            from,
            hb,
            why,
            count: *count,
        }
    }

    /// The next thing worth reporting, or None after a short wait (50 ms) without one,
    /// so that the caller can stop on time.
    pub fn next_seen(&mut self) -> std::io::Result<Option<Seen>> {
        let mut buf = [0u8; 2048];
        if let Some(seen) = self.check_silence() {
            return Ok(Some(seen));
        }
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Ok(Some(self.on_datagram(&buf[..n], from))),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Judge one datagram: decode, check its tag, reject replays.
    pub fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) -> Seen {
        let (hb, auth) = match Heartbeat::decode_with(bytes, self.key.as_deref()) {
            Ok(v) => v,
            Err(error) => return Seen::Malformed { from, error },
        };
        if self.key.is_some() {
            match auth {
                Auth::Verified => {}
                Auth::Forged => return self.reject(from, hb, "forged"),
                Auth::Unsigned | Auth::Unchecked => return self.reject(from, hb, "unsigned"),
            }
        }
        // Not newer than the last datagram of its node: a replay (or a duplicate). An
        // earlier incarnation is never taken back (docs/heartbeat.md, "Incarnations").
        if let Some(st) = self.nodes.get(&hb.node_id) {
            if hb.incarnation < st.incarnation {
                return self.reject(from, hb, "incarnation-went-back");
            }
            if (hb.incarnation, hb.seq) <= (st.incarnation, st.seq) {
                return self.reject(from, hb, "replayed");
            }
        }
        let now = Instant::now();
        let gap = match self.nodes.get_mut(&hb.node_id) {
            Some(st) if st.incarnation == hb.incarnation => {
                let gap = now - st.last;
                st.last = now;
                st.seq = hb.seq;
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
                        seq: hb.seq,
                        gap: None,
                        silent_reported: false,
                    },
                );
                None
            }
        };
        Seen::Beat {
            from,
            hb,
            auth,
            gap,
        }
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
        (
            Seen::Beat {
                from,
                hb,
                auth,
                gap,
            },
            false,
        ) => writeln!(
            out,
            "beat   node={} seq={} status={} auth={} incarnation={} from={} gap_ms={}{}",
            printable(&hb.node_id),
            hb.seq,
            hb.status.as_str(),
            auth.as_str(),
            hb.incarnation,
            from,
            gap.map(|g| g.as_millis().to_string())
                .unwrap_or_else(|| "-".into()),
            hb.reason
                .as_deref()
                .map(|r| format!(" reason={r:?}"))
                .unwrap_or_default()
        ),
        (
            Seen::Beat {
                from,
                hb,
                auth,
                gap,
            },
            true,
        ) => writeln!(
            out,
            "{}",
            serde_json::json!({
                "event": "beat",
                "node_id": hb.node_id,
                "seq": hb.seq,
                "status": hb.status.as_str(),
                "reason": hb.reason,
                "incarnation": hb.incarnation,
                "sent_at_ms": hb.sent_at_ms,
                "from": from.to_string(),
                "gap_ms": gap.map(|g| g.as_millis() as u64),
                "verified": *auth == Auth::Verified,
                "auth": auth.as_str(),
            })
        ),
        (
            Seen::Rejected {
                from,
                hb,
                why,
                count,
            },
            false,
        ) => writeln!(
            out,
            "REJECT node={} seq={} from={from} why={why} ({count} {why} so far)",
            printable(&hb.node_id),
            hb.seq
        ),
        (
            Seen::Rejected {
                from,
                hb,
                why,
                count,
            },
            true,
        ) => writeln!(
            out,
            "{}",
            serde_json::json!({
                "event": "rejected",
                "node_id": hb.node_id,
                "seq": hb.seq,
                "status": hb.status.as_str(),
                "verified": false,
                "why": why,
                "count": count,
                "from": from.to_string(),
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
            "SILENT node={} no heartbeat for {} ms",
            printable(node_id),
            for_.as_millis()
        ),
        (Seen::Silent { node_id, for_ }, true) => writeln!(
            out,
            "{}",
            serde_json::json!({"event": "silent", "node_id": node_id, "silent_ms": for_.as_millis() as u64})
        ),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::heartbeat::Status;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn datagram(seq: u64, key: Option<&[u8]>) -> Vec<u8> {
        let hb = Heartbeat {
            node_id: "db-1".into(),
            incarnation: 7,
            seq,
            sent_at_ms: 0,
            status: Status::Alive,
            reason: None,
        };
        let mut b = BytesMut::new();
        hb.encode(key, &mut b);
        b.to_vec()
    }

    fn listener(key: Option<&[u8]>) -> Listener {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Listener::new(sock, Duration::from_secs(1), key.map(<[u8]>::to_vec)).unwrap()
    }

    fn why(seen: &Seen) -> Option<&'static str> {
        match seen {
            Seen::Rejected { why, .. } => Some(why),
            _ => None,
        }
    }

    #[test]
    fn with_a_key_only_right_tags_on_new_sequences_are_believed() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut l = listener(Some(KEY));
        let first = l.on_datagram(&datagram(1, Some(KEY)), from);
        assert!(
            matches!(
                first,
                Seen::Beat {
                    auth: Auth::Verified,
                    ..
                }
            ),
            "{first:?}"
        );
        let other_key = b"ffffffffffffffffffffffffffffffff";
        assert_eq!(
            why(&l.on_datagram(&datagram(2, Some(other_key)), from)),
            Some("forged")
        );
        assert_eq!(
            why(&l.on_datagram(&datagram(2, None), from)),
            Some("unsigned")
        );
        assert_eq!(
            why(&l.on_datagram(&datagram(1, Some(KEY)), from)),
            Some("replayed")
        );
        assert_eq!(why(&l.on_datagram(&datagram(2, Some(KEY)), from)), None);
        assert_eq!(
            (
                l.rejected("forged"),
                l.rejected("unsigned"),
                l.rejected("replayed")
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn without_a_key_replays_are_still_caught() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut l = listener(None);
        assert!(matches!(
            l.on_datagram(&datagram(5, Some(KEY)), from),
            Seen::Beat {
                auth: Auth::Unchecked,
                ..
            }
        ));
        assert_eq!(
            why(&l.on_datagram(&datagram(5, None), from)),
            Some("replayed")
        );
    }

    #[test]
    fn an_incarnation_that_goes_back_is_never_taken_and_is_named() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut l = listener(Some(KEY));
        let at = |incarnation: u64, seq: u64| {
            let hb = Heartbeat {
                node_id: "db-1".into(),
                incarnation,
                seq,
                sent_at_ms: 0,
                status: Status::Alive,
                reason: None,
            };
            let mut b = BytesMut::new();
            hb.encode(Some(KEY), &mut b);
            b.to_vec()
        };
        assert_eq!(why(&l.on_datagram(&at(100, 5), from)), None);
        // Restarted with a clock stepped back (and its store lost), or an old datagram
        // replayed: the same to a receiver, and never believed.
        assert_eq!(
            why(&l.on_datagram(&at(90, 1), from)),
            Some("incarnation-went-back")
        );
        assert_eq!(why(&l.on_datagram(&at(100, 5), from)), Some("replayed"));
        assert_eq!(why(&l.on_datagram(&at(101, 1), from)), None, "a restart");
    }

    #[test]
    fn a_node_id_off_the_wire_cannot_forge_a_line_of_the_text_output() {
        let forged = "x\nbeat   node=db-1 seq=9 status=alive auth=verified\u{1b}[2J";
        let hb = Heartbeat {
            node_id: forged.into(),
            incarnation: 7,
            seq: 1,
            sent_at_ms: 0,
            status: Status::Alive,
            reason: Some("evil\nreason".into()),
        };
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut out = Vec::new();
        for seen in [
            Seen::Beat {
                from,
                hb: hb.clone(),
                auth: Auth::Unchecked,
                gap: None,
            },
            Seen::Rejected {
                from,
                hb: hb.clone(),
                why: "forged",
                count: 1,
            },
            Seen::Silent {
                node_id: forged.into(),
                for_: Duration::from_secs(3),
            },
        ] {
            print_seen(&mut out, &seen, false).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("node=x\\nbeat   node=db-1"), "{text}");
    }
}
