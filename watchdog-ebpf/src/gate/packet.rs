//! What the egress program needs of a packet: protocol, destination address and port.
//! cgroup_skb data starts at the network header.
use aya_ebpf::bindings::__sk_buff;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// IPv6 extension headers walked to find the transport header (hop-by-hop, routing,
/// destination options; the fragment header is handled on its own).
const IPV6_EXT_HEADERS: usize = 4;

pub struct Packet {
    pub proto: u8,
    /// IPv4 mapped into IPv6.
    pub dst: [u8; 16],
    /// Destination port, or 0 when the packet has none (not UDP/TCP/SCTP/UDP-Lite, or
    /// a fragment after the first).
    pub port: u16,
}

/// `T` at `off` from the network header, if it is in the linear part: the headers of
/// a locally built packet always are (an skb's transport header is never paged), so a
/// packet whose headers are not is not one of a gated socket's heartbeats.
#[inline(always)]
unsafe fn load<T: Copy>(skb: *mut __sk_buff, off: usize) -> Option<T> {
    let data = unsafe { (*skb).data } as usize;
    let end = unsafe { (*skb).data_end } as usize;
    if data + off + size_of::<T>() > end {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned((data + off) as *const T) })
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

#[inline(always)]
pub unsafe fn parse(skb: *mut __sk_buff) -> Option<Packet> {
    // Whole headers at once: a bounds check of one byte is folded by LLVM into a form
    // the verifier does not take as proof.
    let protocol = u16::from_be(unsafe { (*skb).protocol } as u16);
    let mut dst = [0u8; 16];
    let (proto, l4, first_fragment) = match protocol {
        ETH_P_IP => {
            let ip: [u8; 20] = unsafe { load(skb, 0) }?;
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            dst[10] = 0xff;
            dst[11] = 0xff;
            dst[12..].copy_from_slice(&ip[16..20]);
            (ip[9], ihl, frag == 0)
        }
        ETH_P_IPV6 => {
            let ip: [u8; 40] = unsafe { load(skb, 0) }?;
            dst.copy_from_slice(&ip[24..40]);
            let mut next = ip[6];
            let mut off = 40usize;
            let mut first = true;
            for _ in 0..IPV6_EXT_HEADERS {
                match next {
                    0 | 43 | 60 => {
                        let hdr: [u8; 8] = unsafe { load(skb, off) }?;
                        next = hdr[0];
                        off += (hdr[1] as usize + 1) * 8;
                    }
                    44 => {
                        let hdr: [u8; 8] = unsafe { load(skb, off) }?;
                        next = hdr[0];
                        first = u16::from_be_bytes([hdr[2], hdr[3]]) & 0xfff8 == 0;
                        off += 8;
                    }
                    _ => break,
                }
            }
            (next, off, first)
        }
        _ => return None,
    };
    let port = if first_fragment && has_ports(proto) {
        let ports: [u8; 4] = unsafe { load(skb, l4) }?;
        u16::from_be_bytes([ports[2], ports[3]])
    } else {
        0
    };
    Some(Packet { proto, dst, port })
}
