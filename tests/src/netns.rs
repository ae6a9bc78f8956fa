//! Two network namespaces the test makes, A and B, joined by a veth pair (vA, vB):
//! 192.0.2.1 and 192.0.2.2, and with IPv6 2001:db8::1 and 2001:db8::2, so nothing a
//! test sends there leaves the pair. And a peer that listens inside one of them.
use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{command, monotonic_ns, must_succeed};

pub const ADDR_A: &str = "192.0.2.1";
pub const ADDR_B: &str = "192.0.2.2";
pub const ADDR6_A: &str = "2001:db8::1";
pub const ADDR6_B: &str = "2001:db8::2";

/// Namespace A or B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

pub struct NetnsPair {
    names: [String; 2],
}

fn run(args: &[&str]) {
    must_succeed(command(args));
}

impl NetnsPair {
    /// Namespaces `wd{pid}{name}a` and `...b`, with IPv6 on the veth if `ipv6`.
    pub fn new(name: &str, ipv6: bool) -> NetnsPair {
        crate::require_root();
        let tag = std::process::id() % 100_000;
        let names = [format!("wd{tag}{name}a"), format!("wd{tag}{name}b")];
        for ns in &names {
            // Left by a test that was killed, if any.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            run(&["ip", "netns", "add", ns]);
            let v6 = if ipv6 { "0" } else { "1" };
            // No duplicate address detection: the addresses are usable at once (a
            // tentative link-local address held IPv6 back for a second).
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.all.disable_ipv6={v6}"),
                &format!("net.ipv6.conf.default.disable_ipv6={v6}"),
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let [a, b] = &names;
        run(&[
            "ip", "link", "add", "vA", "netns", a, "type", "veth", "peer", "name", "vB", "netns", b,
        ]);
        for (ns, dev, v4, v6) in [(a, "vA", ADDR_A, ADDR6_A), (b, "vB", ADDR_B, ADDR6_B)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            if ipv6 {
                run(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
            }
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        NetnsPair { names }
    }

    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.names[0],
            Side::B => &self.names[1],
        }
    }

    /// Run `f` on a thread of this process that has entered namespace `side`.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        side: Side,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name(side));
        thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on an fd we own; it moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Datagrams and lines `beat PID SEQ` a peer heard: (CLOCK_MONOTONIC ns, sender pid,
/// where it came in).
#[derive(Clone, Default)]
pub struct Heard(Arc<Mutex<Vec<(u64, u32, String)>>>);

impl Heard {
    fn push(&self, text: &str, via: &str) {
        let mut w = text.split_whitespace();
        if let (Some("beat"), Some(pid)) = (w.next(), w.next().and_then(|p| p.parse().ok())) {
            self.0
                .lock()
                .unwrap()
                .push((monotonic_ns(), pid, via.to_owned()));
        }
    }

    /// When `pid`'s beats came in through `via` (a listening address).
    pub fn from(&self, pid: u32, via: &str) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, v)| *p == pid && v == via)
            .map(|(t, _, _)| *t)
            .collect()
    }

    /// (pid, via, beats) of everything heard.
    pub fn summary(&self) -> Vec<(u32, String, usize)> {
        let mut out: std::collections::BTreeMap<(u32, String), usize> = Default::default();
        for (_, pid, via) in self.0.lock().unwrap().iter() {
            *out.entry((*pid, via.clone())).or_default() += 1;
        }
        out.into_iter().map(|((p, v), n)| (p, v, n)).collect()
    }

    /// How many of `pid`'s beats came in through `via` after `since`.
    pub fn count_since(&self, pid: u32, via: &str, since: u64) -> usize {
        self.from(pid, via).iter().filter(|t| **t > since).count()
    }

    /// Wait until `pid`'s beats come in through `via` after `since`.
    pub fn wait_for(&self, pid: u32, via: &str, since: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count_since(pid, via, since) == 0 {
            assert!(
                Instant::now() < deadline,
                "no beat of {pid} through {via} within {within:?} (heard: {:?})",
                self.summary()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Listen for UDP beats on each of `addrs` (and join `group` on `ifaddr`, if given),
/// from a thread that `spawn` puts where the peer is (a namespace, or here).
pub fn udp_peer(
    spawn: impl FnOnce(Box<dyn FnOnce() + Send>),
    addrs: Vec<SocketAddr>,
    group: Option<(Ipv4Addr, u16, Ipv4Addr)>,
) -> Heard {
    let heard = Heard::default();
    let h = heard.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    spawn(Box::new(move || {
        let mut socks: Vec<(UdpSocket, String)> = addrs
            .iter()
            .map(|a| {
                (
                    UdpSocket::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}")),
                    a.to_string(),
                )
            })
            .collect();
        if let Some((g, port, ifaddr)) = group {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
            s.join_multicast_v4(&g, &ifaddr).unwrap();
            socks.push((s, format!("{g}:{port}")));
        }
        for (s, via) in socks {
            let h = h.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 256];
                // Until the test process ends (the namespace goes when its sockets do).
                loop {
                    if let Ok(n) = s.recv(&mut buf) {
                        h.push(&String::from_utf8_lossy(&buf[..n]), &via);
                    }
                }
            });
        }
        let _ = ready_tx.send(());
    }));
    ready
        .recv_timeout(Duration::from_secs(5))
        .expect("peer listening");
    heard
}

/// Accept TCP connections on `addr` and take each line `beat PID SEQ` as a beat.
pub fn tcp_peer(spawn: impl FnOnce(Box<dyn FnOnce() + Send>), addr: SocketAddr) -> Heard {
    let heard = Heard::default();
    let h = heard.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    spawn(Box::new(move || {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let _ = ready_tx.send(());
        for conn in listener.incoming().flatten() {
            let h = h.clone();
            let via = addr.to_string();
            thread::spawn(move || {
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    h.push(&line, &via);
                }
            });
        }
    }));
    ready
        .recv_timeout(Duration::from_secs(5))
        .expect("peer listening");
    heard
}
