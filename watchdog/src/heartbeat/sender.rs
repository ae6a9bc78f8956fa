//! Sends the heartbeat while the gate is open; once closed, it stays closed.
use std::{
    net::UdpSocket,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;

use super::packet::{Heartbeat, Status};

/// Whether the node may still say it is alive. Closed on the first verdict and never
/// reopened by itself: peers have taken over by then, and a node that comes back on
/// its own causes split brain.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Gate {
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Close the gate. Returns true if this call closed it (the first reason wins).
    pub fn close(&self, reason: &str) -> bool {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        *slot = Some(reason.to_owned());
        true
    }

    /// Reopen the gate (an operator's `wdctl resume`, after checking nothing is stalled).
    pub fn open(&self) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
        self.closed.store(false, Ordering::Release);
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The heartbeat's identity and counters.
pub struct Sender {
    sock: UdpSocket,
    node_id: String,
    incarnation: u64,
    sent: AtomicU64,
    send_errors: AtomicU64,
}

impl Sender {
    pub fn new(sock: UdpSocket, node_id: String) -> Self {
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Sender {
            sock,
            node_id,
            incarnation,
            sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    fn send_one(&self, buf: &mut BytesMut) {
        let seq = self.sent.load(Ordering::Relaxed) + 1;
        let hb = Heartbeat {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation,
            seq,
            sent_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            status: Status::Alive,
        };
        buf.clear();
        hb.encode(buf);
        match self.sock.send(buf) {
            Ok(_) => {
                self.sent.store(seq, Ordering::Relaxed);
            }
            Err(e) => {
                // A failed send is a missed beat, which peers see; say why, keep going.
                self.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, seq, "heartbeat send failed");
            }
        }
    }
}

/// Send a heartbeat every `interval` while `gate` is open; stay silent while it is
/// closed.
pub async fn run(sender: Arc<Sender>, interval: Duration, gate: Arc<Gate>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = BytesMut::with_capacity(128);
    let mut silent = false;
    loop {
        ticker.tick().await;
        // Checked right before each send: a verdict reached between two ticks means
        // no further datagram leaves this node.
        let open = gate.is_open();
        if open == silent {
            silent = !open;
            if silent {
                let reason = gate.reason().unwrap_or_default();
                tracing::warn!(reason = %reason, sent = sender.sent(), "heartbeat stopped");
            } else {
                tracing::warn!(sent = sender.sent(), "heartbeat resumed");
            }
        }
        if open {
            sender.send_one(&mut buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_closes_once_and_keeps_the_first_reason() {
        let gate = Gate::default();
        assert!(gate.is_open());
        assert!(gate.close("thread 12 stalled in vfork"));
        assert!(!gate.close("another"));
        assert!(!gate.is_open());
        assert_eq!(gate.reason().as_deref(), Some("thread 12 stalled in vfork"));
        gate.open();
        assert!(gate.is_open());
        assert_eq!(gate.reason(), None);
        assert!(gate.close("again"));
    }
}
