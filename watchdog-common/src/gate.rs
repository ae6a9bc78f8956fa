//! The service heartbeat gate, as both sides see it: the rules the egress program
//! matches, its state, the tag a socket carries, and the one match function the kernel
//! side runs and the daemon's unit tests check.
//!
//! The gate lives in its own eBPF object (pinned, so it outlives a dead daemon): see
//! `watchdog/src/kernel/gate.rs`.

/// Most gates at once. Each is a bit of a socket's tag, and the egress program walks
/// them in a bounded loop.
pub const MAX_GATES: usize = 16;

/// Version of the pinned maps' layout: a daemon with another version does not reuse
/// them (it attaches its own programs first, then removes the old ones).
pub const PIN_VERSION: u32 = 1;

/// Map names of the gate object (at most 15 bytes).
pub mod maps {
    /// Array of [`super::GateRule`], [`super::MAX_GATES`] entries.
    pub const RULES: &str = "GATE_RULES";
    /// Array of one [`super::GateState`].
    pub const STATE: &str = "GATE_STATE";
    /// Per-CPU u64 per gate: packets dropped.
    pub const DROPS: &str = "GATE_DROPS";
    /// tgid -> u64 sender mask: [`super::TAG_MONITORED`] for monitored processes, and
    /// the bit of each gate whose sender is `pid:N`.
    pub const SENDERS: &str = "GATE_SENDERS";
    /// u64 words, one bit per tgid: the keys of SENDERS (a plain load on every send;
    /// sized by the loader to pid_max).
    pub const SENDER_BITS: &str = "GATE_SNDR_BITS";
    /// comm ([u8; 16], NUL-padded) -> u64 mask of the gates whose sender is `comm:NAME`.
    pub const COMMS: &str = "GATE_COMMS";
    /// Socket-local storage of [`super::SockTag`].
    pub const TAGS: &str = "GATE_TAGS";
    /// Every map of the gate object.
    pub const ALL: [&str; 7] = [RULES, STATE, DROPS, SENDERS, SENDER_BITS, COMMS, TAGS];
}

/// The gate object's programs.
pub mod programs {
    /// cgroup_skb/egress on the cgroup v2 root: drops the gated packets.
    pub const EGRESS: &str = "gate_egress";
    /// tp_btf/sock_send_length: tags a socket with its sender after every send.
    pub const TAG_SEND: &str = "gate_tag_send";
    /// tp_btf/inet_sock_set_state: tags a TCP socket with the task that connects it
    /// (its SYN and first data then carry the tag).
    pub const TAG_CONNECT: &str = "gate_tag_connect";
    /// cgroup/sock_create on the cgroup v2 root: tags an inet socket with its creator
    /// (a socket the service made stays its own in another's hands).
    pub const TAG_CREATE: &str = "gate_tag_create";
    /// The tagging programs and their BTF tracepoints.
    pub const TAGGERS: [(&str, &str); 2] = [
        (TAG_SEND, "sock_send_length"),
        (TAG_CONNECT, "inet_sock_set_state"),
    ];
}

/// A sender is the monitored processes: a socket tagged [`TAG_MONITORED`].
pub const SENDER_MONITORED: u8 = 0;
/// A sender is `pid:N` or `comm:NAME`: a socket tagged with the gate's own bit.
pub const SENDER_TAGGED: u8 = 1;
/// A sender is `cgroup:PATH`: a socket of that cgroup or one below it.
pub const SENDER_CGROUP: u8 = 2;

/// The bit of a socket's tag that says a monitored process sent on it or created it.
pub const TAG_MONITORED: u64 = 1 << 63;

/// One gate: which packets (protocol, destination port and address) of which sender.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateRule {
    /// Destination address, IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
    /// [`SENDER_CGROUP`]: the cgroup's v2 id.
    pub cgroup_id: u64,
    /// Destination port, host order; 0: any (and packets without ports).
    pub port: u16,
    /// IP protocol number (17 UDP, 6 TCP, ...).
    pub proto: u8,
    /// Leading bits of `addr` a destination must share (IPv4: 96 + prefix); 0: any.
    pub prefix: u8,
    /// [`SENDER_MONITORED`], [`SENDER_TAGGED`] or [`SENDER_CGROUP`].
    pub sender: u8,
    /// [`SENDER_CGROUP`]: the cgroup's depth below the root (the root is 0).
    pub cgroup_level: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<GateRule>() == 32);

impl GateRule {
    /// Whether a packet to `dst` (IPv4 mapped into IPv6) port `port` (0 if it has none:
    /// not UDP or TCP, or a later fragment) of protocol `proto` is one of this gate's.
    #[inline(always)]
    pub fn matches(&self, proto: u8, dst: &[u8; 16], port: u16) -> bool {
        if proto != self.proto || (self.port != 0 && self.port != port) {
            return false;
        }
        prefix_matches(&self.addr, dst, self.prefix)
    }
}

/// Whether `a` and `b` share their leading `bits` bits.
#[inline(always)]
pub fn prefix_matches(a: &[u8; 16], b: &[u8; 16], bits: u8) -> bool {
    let bits = bits as usize;
    let mut i = 0;
    while i < 16 {
        let from = i * 8;
        if bits <= from {
            return true;
        }
        let mask: u8 = if bits >= from + 8 {
            0xff
        } else {
            0xff << (8 - (bits - from))
        };
        if (a[i] ^ b[i]) & mask != 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// What the egress program needs besides the rules. Written by the daemon only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateState {
    /// Rules in use (the first `count` of GATE_RULES); 0: every packet passes.
    pub count: u32,
    /// 1 while the daemon's heartbeat is stopped by a verdict (the latch).
    pub closed: u32,
    /// CLOCK_MONOTONIC ns (compared with the kernel's coarse clock, a tick behind at
    /// most) after which the gates close by themselves: the daemon pushes
    /// it forward at every beat, so a dead daemon's gates close after the grace period.
    pub lease_until_ns: u64,
    /// Non-zero if some gate's sender is `comm:NAME` (the taggers then read the comm).
    pub comm_senders: u32,
    pub _pad: u32,
}

impl GateState {
    /// Whether matching packets of gated senders are dropped at `now_ns`.
    #[inline(always)]
    pub fn is_closed(&self, now_ns: u64) -> bool {
        self.closed != 0 || now_ns > self.lease_until_ns
    }
}

/// What a socket carries: the sender mask (the gate bits of `pid:`/`comm:` senders, and
/// [`TAG_MONITORED`]) of the gated task that created it, or last sent on it or connected it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTag {
    pub mask: u64,
}

/// Whether gate `index` with `rule` holds back a packet of a socket tagged `tag`
/// (`in_cgroup`: whether the socket is in the rule's cgroup, for [`SENDER_CGROUP`]).
#[inline(always)]
pub fn sender_gated(rule: &GateRule, index: usize, tag: u64, in_cgroup: bool) -> bool {
    match rule.sender {
        SENDER_MONITORED => tag & TAG_MONITORED != 0,
        SENDER_TAGGED => tag & (1u64 << index) != 0,
        SENDER_CGROUP => in_cgroup,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[10] = 0xff;
        out[11] = 0xff;
        out[12..].copy_from_slice(&a);
        out
    }

    #[test]
    fn a_rule_matches_protocol_port_and_prefix() {
        let rule = GateRule {
            addr: v4([192, 0, 2, 0]),
            prefix: 96 + 24,
            port: 5405,
            proto: 17,
            ..Default::default()
        };
        assert!(rule.matches(17, &v4([192, 0, 2, 7]), 5405));
        assert!(!rule.matches(17, &v4([192, 0, 3, 7]), 5405));
        assert!(!rule.matches(17, &v4([192, 0, 2, 7]), 5406));
        assert!(!rule.matches(6, &v4([192, 0, 2, 7]), 5405));
        let any = GateRule {
            proto: 17,
            ..Default::default()
        };
        assert!(any.matches(
            17,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            9
        ));
        assert!(any.matches(17, &v4([127, 0, 0, 1]), 0));
    }

    #[test]
    fn prefixes_cut_inside_a_byte() {
        let a = v4([198, 51, 100, 0]);
        assert!(prefix_matches(&a, &v4([198, 51, 100, 127]), 96 + 25));
        assert!(!prefix_matches(&a, &v4([198, 51, 100, 128]), 96 + 25));
        assert!(prefix_matches(&a, &v4([198, 51, 101, 1]), 96 + 23));
        assert!(!prefix_matches(&a, &v4([198, 51, 101, 1]), 96 + 24));
        assert!(prefix_matches(&a, &v4([1, 2, 3, 4]), 0));
        assert!(prefix_matches(&a, &a, 128));
    }

    #[test]
    fn senders_are_told_apart_by_tag_and_cgroup() {
        let mut rule = GateRule::default();
        assert!(sender_gated(&rule, 3, TAG_MONITORED, false));
        assert!(!sender_gated(&rule, 3, 1 << 3, false));
        rule.sender = SENDER_TAGGED;
        assert!(sender_gated(&rule, 3, 1 << 3, false));
        assert!(!sender_gated(&rule, 3, TAG_MONITORED | 1 << 2, false));
        rule.sender = SENDER_CGROUP;
        assert!(sender_gated(&rule, 3, 0, true));
        assert!(!sender_gated(&rule, 3, u64::MAX, false));
    }

    #[test]
    fn a_lapsed_lease_closes_the_gates() {
        let mut s = GateState {
            count: 1,
            lease_until_ns: 1_000,
            ..Default::default()
        };
        assert!(!s.is_closed(1_000));
        assert!(s.is_closed(1_001));
        s.closed = 1;
        assert!(s.is_closed(0));
    }
}
