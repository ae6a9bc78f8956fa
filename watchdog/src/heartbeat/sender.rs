//! Sends the heartbeat while the latch is open; once closed, it stays closed.
use std::{
    net::UdpSocket,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;

use super::{
    packet::{Heartbeat, Status},
    state_hook::{HeartbeatState, StateHook},
};

/// Whether the node may still say it is alive: open while the heartbeat is sent, closed
/// by the first verdict (or a part of the daemon that stopped making progress) and never
/// reopened by itself: peers have taken over by then, and a node that comes back on
/// its own causes split brain.
#[derive(Debug, Default)]
pub struct Latch {
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
    /// CLOCK_MONOTONIC ns of the last closing (0: never closed).
    closed_at_ns: AtomicU64,
    /// Told at every change, so that what follows the latch (the track file) follows it at
    /// once, not at the next beat.
    changed: Condvar,
}

impl Latch {
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Close the latch. Returns true if this call closed it (the first reason wins).
    pub fn close(&self, reason: &str) -> bool {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.closed_at_ns
            .store(crate::kernel::clock::monotonic_ns(), Ordering::Release);
        *slot = Some(reason.to_owned());
        self.changed.notify_all();
        true
    }

    /// Wait until the latch changes, at most `timeout`.
    pub fn wait_change(&self, timeout: Duration) {
        let slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.changed.wait_timeout(slot, timeout);
    }

    /// When it was closed (CLOCK_MONOTONIC ns), while it is closed.
    pub fn closed_at_ns(&self) -> Option<u64> {
        if self.is_open() {
            return None;
        }
        Some(self.closed_at_ns.load(Ordering::Acquire)).filter(|t| *t != 0)
    }

    /// Reopen the latch (an operator's `wdctl resume`, after checking nothing is stalled).
    pub fn open(&self) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
        self.closed.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The heartbeat's identity, key and counters.
pub struct Sender {
    sock: UdpSocket,
    node_id: String,
    incarnation: u64,
    /// Shared key of the HMAC tag; unsigned datagrams without one.
    key: Option<Vec<u8>>,
    sent: AtomicU64,
    send_errors: AtomicU64,
    /// Serializes sends, so sequence numbers go out in order (the ticker and a last
    /// gasp may send at once).
    sending: Mutex<()>,
}

/// This start's incarnation: the wall clock in unix ns, or one more than the last one
/// used (`last`, kept across restarts), whichever is larger, so that a node restarted
/// with its clock stepped back is not taken for a replay of itself.
pub fn incarnation(last: Option<u64>) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now.max(last.map_or(0, |l| l.saturating_add(1)))
}

/// Datagrams of a last gasp.
pub const LAST_GASP: usize = 3;

impl Sender {
    /// A sender of `incarnation` (see [`incarnation`]).
    pub fn new(sock: UdpSocket, node_id: String, key: Option<Vec<u8>>, incarnation: u64) -> Self {
        Sender {
            sock,
            node_id,
            incarnation,
            key,
            sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            sending: Mutex::new(()),
        }
    }

    /// Before falling silent after a verdict: a few `stalled` datagrams with the reason,
    /// so peers that speak the protocol fail over at once. (Peers that only count
    /// heartbeats see silence, as before.)
    pub fn last_gasp(&self, reason: &str) {
        let mut buf = BytesMut::with_capacity(400);
        for _ in 0..LAST_GASP {
            self.send_status(&mut buf, Status::Stalled, Some(reason));
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    fn send_one(&self, buf: &mut BytesMut) {
        self.send_status(buf, Status::Alive, None);
    }

    fn send_status(&self, buf: &mut BytesMut, status: Status, reason: Option<&str>) {
        let _order = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.sent.load(Ordering::Relaxed) + 1;
        let hb = Heartbeat {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation,
            seq,
            sent_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            status,
            reason: reason.map(str::to_owned),
        };
        buf.clear();
        hb.encode(self.key.as_deref(), buf);
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

/// Write a keepalived track_file: `1` when the heartbeat is stopped, `0` while it is sent
/// (with weight 0, keepalived goes to FAULT on non-zero). Written whole, then renamed, so
/// keepalived never reads half a file.
pub fn write_track_file(path: &std::path::Path, stopped: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, if stopped { "1\n" } else { "0\n" })?;
    std::fs::rename(&tmp, path)
}

fn track(path: Option<&std::path::Path>, stopped: bool) {
    if let Some(p) = path
        && let Err(e) = write_track_file(p, stopped)
    {
        tracing::warn!(path = %p.display(), error = %e, "cannot write the track file");
    }
}

/// The heartbeat's own thread: nothing else runs on it, so no other work of the daemon
/// (a slow store, a large reply, a reload) can delay a beat. Stopped by [`Beating::stop`].
pub struct Beating {
    stop: Arc<std::sync::atomic::AtomicBool>,
    latch: Arc<Latch>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Beating {
    /// No further datagram leaves: returns once the thread has ended.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake it from its wait for the next beat.
        self.latch.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What follows the latch besides the heartbeat itself: the keepalived track file, and
/// the state hook (told the state at start, and at every change).
#[derive(Default)]
pub struct Followers {
    pub track_file: Option<std::path::PathBuf>,
    pub state_hook: Option<StateHook>,
    /// Closes with the latch; its lease is renewed at every beat.
    pub service_gate: Option<Arc<super::service_gate::ServiceGate>>,
}

impl Followers {
    /// Bring them in line with the latch: `stopped`, with the latch's reason.
    fn tell(&self, latch: &Latch, stopped: bool) {
        if let Some(g) = &self.service_gate {
            g.follow();
        }
        track(self.track_file.as_deref(), stopped);
        if let Some(hook) = &self.state_hook {
            hook.tell(match stopped {
                true => HeartbeatState::Stopped(latch.reason().unwrap_or_default()),
                false => HeartbeatState::Sending,
            });
        }
    }
}

/// Send a heartbeat every `interval` while `latch` is open; stay silent while it is
/// closed. Before every send, the parts that decide verdicts must have made progress
/// lately (`liveness`); if one has not, the latch closes (fail closed). `followers` follow
/// the same state.
pub fn start(
    sender: Arc<Sender>,
    interval: Duration,
    latch: Arc<Latch>,
    liveness: Arc<crate::heartbeat::liveness::Liveness>,
    followers: Followers,
) -> std::io::Result<Beating> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let woken = latch.clone();
    let thread = std::thread::Builder::new()
        .name("wd-heartbeat".into())
        .spawn(move || beat(&sender, interval, &latch, &liveness, &followers, &stopping))?;
    Ok(Beating {
        stop,
        latch: woken,
        thread: Some(thread),
    })
}

fn beat(
    sender: &Sender,
    interval: Duration,
    latch: &Latch,
    liveness: &crate::heartbeat::liveness::Liveness,
    followers: &Followers,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut buf = BytesMut::with_capacity(128);
    let mut silent = !latch.is_open();
    followers.tell(latch, silent);
    let mut next = std::time::Instant::now();
    loop {
        // Until the next beat, follow the latch at once: a verdict reaches the track file
        // without waiting for the beat (a peer's keepalived hands over that much sooner).
        loop {
            let now = std::time::Instant::now();
            if now >= next || stop.load(Ordering::Acquire) {
                break;
            }
            latch.wait_change(next - now);
            follow(latch, sender, &mut silent, followers);
        }
        // On a fixed schedule; a beat that came late is not made up for with a burst.
        next = next.max(std::time::Instant::now()) + interval;
        if stop.load(Ordering::Acquire) {
            return;
        }
        if let Some(why) = liveness.blocker(crate::kernel::clock::monotonic_ns())
            && latch.close(&why)
        {
            tracing::error!(reason = %why, "stopping the heartbeat");
            sender.last_gasp(&why);
        }
        // The gate's lease lasts as long as this thread beats (sending or not): a dead
        // or frozen daemon's gates close by themselves.
        if let Some(g) = &followers.service_gate {
            g.renew();
        }
        // Checked right before each send: a verdict reached between two ticks means
        // no further datagram leaves this node.
        if follow(latch, sender, &mut silent, followers) {
            sender.send_one(&mut buf);
        }
    }
}

/// Bring what follows the latch (the track file, the log) in line with it. Returns
/// whether the latch is open.
fn follow(latch: &Latch, sender: &Sender, silent: &mut bool, followers: &Followers) -> bool {
    let open = latch.is_open();
    if open == *silent {
        *silent = !open;
        followers.tell(latch, *silent);
        if *silent {
            let reason = latch.reason().unwrap_or_default();
            tracing::warn!(reason = %reason, sent = sender.sent(), "heartbeat stopped");
        } else {
            tracing::warn!(sent = sender.sent(), "heartbeat resumed");
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_track_file_says_1_when_stopped() {
        let path = std::env::temp_dir().join(format!("wd-track-{}", std::process::id()));
        write_track_file(&path, true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        write_track_file(&path, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_incarnation_never_goes_back_across_restarts() {
        let now = incarnation(None);
        assert!(now > 1_700_000_000_000_000_000, "unix ns");
        // The last start's was ahead of the clock (the clock was stepped back since).
        let ahead = now + 3_600_000_000_000;
        assert_eq!(incarnation(Some(ahead)), ahead + 1);
        assert!(incarnation(Some(1)) >= now);
    }

    #[test]
    fn the_track_file_follows_the_latch_at_once_not_at_the_next_beat() {
        let dir = std::env::temp_dir().join(format!("wd-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let track = dir.join("track");
        // Loopback only; a beat every 10 s, so only a change can explain a quick write.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(sock.local_addr().unwrap()).unwrap();
        let sender = Arc::new(Sender::new(sock, "n".into(), None, 1));
        let latch = Arc::new(Latch::default());
        let now = crate::kernel::clock::monotonic_ns();
        let liveness = Arc::new(crate::heartbeat::liveness::Liveness::new(
            Duration::from_secs(3600),
            now,
        ));
        let beating = start(
            sender,
            Duration::from_secs(10),
            latch.clone(),
            liveness,
            Followers {
                track_file: Some(track.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        let read = || std::fs::read_to_string(&track).unwrap_or_default();
        let wait_for = |want: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while read() != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "track file {:?}",
                    read()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait_for("0\n");
        let closed = std::time::Instant::now();
        latch.close("stalled");
        wait_for("1\n");
        assert!(
            closed.elapsed() < Duration::from_millis(500),
            "{:?}",
            closed.elapsed()
        );
        latch.open();
        wait_for("0\n");
        let stopping = std::time::Instant::now();
        beating.stop();
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "stop waited for the beat"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn latch_closes_once_and_keeps_the_first_reason() {
        let latch = Latch::default();
        assert!(latch.is_open());
        assert!(latch.close("thread 12 stalled in vfork"));
        assert!(!latch.close("another"));
        assert!(!latch.is_open());
        assert_eq!(
            latch.reason().as_deref(),
            Some("thread 12 stalled in vfork")
        );
        latch.open();
        assert!(latch.is_open());
        assert_eq!(latch.reason(), None);
        assert!(latch.close("again"));
    }
}
