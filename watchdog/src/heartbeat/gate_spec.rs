//! What a service heartbeat gate holds back: `--gate MATCH[@SENDER]`, or a `[[gate]]`
//! table. Pure: parsing, the canonical text (the gate's name in status and metrics),
//! and the rule the kernel side matches.
//!
//! ```text
//! MATCH   udp:PORT | tcp:PORT | proto:N      (N a number or icmp, icmpv6, vrrp, ...)
//!         each optionally narrowed to a destination: ,to=ADDR or ,to=ADDR/LEN
//! SENDER  monitored (the default: the monitored processes, their threads and the
//!         children they fork) | comm:NAME | cgroup:PATH | pid:N
//! ```
//! PORT is the destination port (the peer's), as a heartbeat is addressed.
use std::{fmt, net::IpAddr, path::PathBuf, str::FromStr};

use watchdog_common::gate::{GateRule, SENDER_CGROUP, SENDER_MONITORED, SENDER_TAGGED};

/// Who sends the packets a gate holds back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GateSender {
    /// The monitored processes (all their threads; the children they fork are
    /// monitored too).
    Monitored,
    /// Every process of this program name.
    Comm(String),
    /// Every process in this cgroup v2 or one below it.
    Cgroup(PathBuf),
    /// This process.
    Pid(u32),
}

/// One gate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GateSpec {
    /// IP protocol number.
    pub proto: u8,
    /// Destination port (UDP, TCP); None: every packet of the protocol.
    pub port: Option<u16>,
    /// Destination network.
    pub to: Option<(IpAddr, u8)>,
    pub sender: GateSender,
}

/// Protocol names an operator may write for `proto:` (IANA numbers).
const PROTOCOLS: [(&str, u8); 9] = [
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("icmpv6", 58),
    ("vrrp", 112),
    ("sctp", 132),
];

fn protocol_name(n: u8) -> Option<&'static str> {
    PROTOCOLS
        .iter()
        .find(|(_, p)| *p == n)
        .map(|(name, _)| *name)
}

impl FromStr for GateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = |m: String| format!("gate '{s}': {m}");
        let (matcher, sender) = match s.split_once('@') {
            Some((m, snd)) => (m, parse_sender(snd).map_err(err)?),
            None => (s, GateSender::Monitored),
        };
        let mut parts = matcher.split(',');
        let head = parts.next().unwrap_or_default();
        let (kind, value) = head.split_once(':').ok_or_else(|| {
            err("expected udp:PORT, tcp:PORT or proto:N (then ,to=ADDR[/LEN] and @SENDER, both optional)".into())
        })?;
        let (proto, port) = match kind {
            "udp" | "tcp" => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err(format!("port '{value}' is not a port (1-65535)")))?;
                (if kind == "udp" { 17 } else { 6 }, Some(port))
            }
            "proto" => {
                let n = value
                    .parse::<u8>()
                    .ok()
                    .or_else(|| PROTOCOLS.iter().find(|(n, _)| *n == value).map(|(_, p)| *p))
                    .ok_or_else(|| {
                        err(format!(
                            "protocol '{value}' is neither a number (0-255) nor one of {}",
                            PROTOCOLS.map(|(n, _)| n).join(", ")
                        ))
                    })?;
                (n, None)
            }
            other => {
                return Err(err(format!(
                    "'{other}:' is not a match: write udp:PORT, tcp:PORT or proto:N"
                )));
            }
        };
        let mut to = None;
        for part in parts {
            let addr = part.strip_prefix("to=").ok_or_else(|| {
                err(format!(
                    "'{part}': after the match, only to=ADDR[/LEN] may follow"
                ))
            })?;
            if to.is_some() {
                return Err(err("to= is given twice".into()));
            }
            to = Some(parse_network(addr).map_err(err)?);
        }
        Ok(GateSpec {
            proto,
            port,
            to,
            sender,
        })
    }
}

fn parse_sender(s: &str) -> Result<GateSender, String> {
    if s == "monitored" {
        return Ok(GateSender::Monitored);
    }
    let (kind, value) = s
        .split_once(':')
        .ok_or_else(|| format!("sender '{s}': write monitored, comm:NAME, cgroup:PATH or pid:N"))?;
    match kind {
        "comm" => {
            crate::config::check_comm(value).map_err(|e| format!("sender {e}"))?;
            Ok(GateSender::Comm(value.into()))
        }
        "cgroup" if !value.is_empty() => Ok(GateSender::Cgroup(value.into())),
        "pid" => value
            .parse::<u32>()
            .ok()
            .filter(|p| *p != 0)
            .map(GateSender::Pid)
            .ok_or_else(|| format!("sender pid '{value}' is not a process id")),
        _ => Err(format!(
            "sender '{s}': write monitored, comm:NAME, cgroup:PATH or pid:N"
        )),
    }
}

/// `ADDR` or `ADDR/LEN`, IPv4 or IPv6 (in brackets or not); host bits are cleared.
fn parse_network(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.rsplit_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("to={s}: '{addr}' is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("to={s}: prefix length '{l}' is not 0-{max}"))?,
    };
    Ok((mask(ip, len), len))
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for GateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.proto, self.port) {
            (17, Some(p)) => write!(f, "udp:{p}")?,
            (6, Some(p)) => write!(f, "tcp:{p}")?,
            (n, _) => match protocol_name(n) {
                Some(name) => write!(f, "proto:{name}")?,
                None => write!(f, "proto:{n}")?,
            },
        }
        if let Some((addr, len)) = self.to {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len == max {
                write!(f, ",to={addr}")?;
            } else {
                write!(f, ",to={addr}/{len}")?;
            }
        }
        match &self.sender {
            GateSender::Monitored => Ok(()),
            GateSender::Comm(c) => write!(f, "@comm:{c}"),
            GateSender::Cgroup(p) => write!(f, "@cgroup:{}", p.display()),
            GateSender::Pid(p) => write!(f, "@pid:{p}"),
        }
    }
}

impl GateSpec {
    /// The rule the kernel side matches; `cgroup` is the sender cgroup's (id, depth
    /// below the root), for a `cgroup:` sender.
    pub fn rule(&self, cgroup: Option<(u64, u8)>) -> GateRule {
        let (addr, prefix) = match self.to {
            None => ([0u8; 16], 0),
            Some((IpAddr::V4(a), len)) => (a.to_ipv6_mapped().octets(), 96 + len),
            Some((IpAddr::V6(a), len)) => (a.octets(), len),
        };
        let (sender, (cgroup_id, cgroup_level)) = match self.sender {
            GateSender::Monitored => (SENDER_MONITORED, (0, 0)),
            GateSender::Comm(_) | GateSender::Pid(_) => (SENDER_TAGGED, (0, 0)),
            GateSender::Cgroup(_) => (SENDER_CGROUP, cgroup.unwrap_or_default()),
        };
        GateRule {
            addr,
            cgroup_id,
            port: self.port.unwrap_or(0),
            proto: self.proto,
            prefix,
            sender,
            cgroup_level,
            _pad: [0; 2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> GateSpec {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn specs_parse_and_print_canonically() {
        for (given, canonical) in [
            ("udp:5405", "udp:5405"),
            ("tcp:8080@comm:hbd", "tcp:8080@comm:hbd"),
            ("udp:694,to=192.0.2.7", "udp:694,to=192.0.2.7"),
            ("udp:694,to=192.0.2.7/24", "udp:694,to=192.0.2.0/24"),
            ("udp:7,to=[ff02::1]@pid:42", "udp:7,to=ff02::1"),
            ("proto:112", "proto:vrrp"),
            (
                "proto:icmpv6,to=2001:db8::/32",
                "proto:icmpv6,to=2001:db8::/32",
            ),
            ("proto:253@cgroup:/svc/hb", "proto:253@cgroup:/svc/hb"),
            ("udp:9@monitored", "udp:9"),
        ] {
            let s = spec(given);
            let printed = s.to_string();
            if given.contains("@pid:42") {
                assert_eq!(printed, format!("{canonical}@pid:42"));
            } else {
                assert_eq!(printed, canonical, "{given}");
            }
            assert_eq!(spec(&printed), s, "{printed} parses back");
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (given, says) in [
            ("udp", "expected udp:PORT"),
            ("udp:0", "port '0' is not a port"),
            ("udp:70000", "port '70000'"),
            ("icmp:1", "'icmp:' is not a match"),
            ("proto:bogus", "protocol 'bogus' is neither"),
            ("udp:1,from=1.2.3.4", "only to=ADDR"),
            ("udp:1,to=1.2.3.4,to=1.2.3.5", "twice"),
            ("udp:1,to=1.2.3.4/33", "prefix length '33' is not 0-32"),
            ("udp:1,to=host.example", "not an IPv4 or IPv6 address"),
            ("udp:1@comm:", "1 to 15 bytes"),
            ("udp:1@comm:a-very-long-program", "1 to 15 bytes"),
            ("udp:1@pid:0", "not a process id"),
            ("udp:1@user:root", "write monitored, comm:NAME"),
        ] {
            let e = given.parse::<GateSpec>().unwrap_err();
            assert!(e.starts_with(&format!("gate '{given}': ")), "{e}");
            assert!(e.contains(says), "{given}: {e}");
        }
    }

    #[test]
    fn rules_carry_the_match_and_the_sender() {
        let r = spec("udp:5405,to=198.51.100.0/24@comm:hbd").rule(None);
        assert_eq!(
            (r.proto, r.port, r.prefix, r.sender),
            (17, 5405, 120, SENDER_TAGGED)
        );
        assert_eq!(&r.addr[10..], &[0xff, 0xff, 198, 51, 100, 0]);
        let mut dst = r.addr;
        dst[15] = 9;
        assert!(r.matches(17, &dst, 5405));
        let r = spec("proto:vrrp@cgroup:/a/b").rule(Some((77, 2)));
        assert_eq!((r.proto, r.port, r.prefix), (112, 0, 0));
        assert_eq!(
            (r.sender, r.cgroup_id, r.cgroup_level),
            (SENDER_CGROUP, 77, 2)
        );
        let r = spec("tcp:22,to=::1").rule(None);
        assert_eq!((r.proto, r.prefix, r.sender), (6, 128, SENDER_MONITORED));
        assert!(r.matches(6, &std::net::Ipv6Addr::LOCALHOST.octets(), 22));
        assert!(!r.matches(
            6,
            &std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(),
            22
        ));
    }
}
