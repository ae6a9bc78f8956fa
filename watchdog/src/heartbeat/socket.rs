//! Multicast sockets (socket2): one to send the heartbeat, one to listen to a group.
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::heartbeat::iface::{IfaceError, Interface};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(transparent)]
    Iface(#[from] IfaceError),
    #[error("{what} for {group} on {iface}: {source}")]
    Io {
        what: &'static str,
        group: SocketAddr,
        iface: String,
        source: std::io::Error,
    },
}

fn io_err(
    what: &'static str,
    group: SocketAddr,
    iface: &Interface,
) -> impl FnOnce(std::io::Error) -> SocketError {
    let iface = iface.name.clone();
    move |source| SocketError::Io {
        what,
        group,
        iface,
        source,
    }
}

/// A socket that sends to `group` out of `iface` with the given TTL (hop limit), and
/// loops its datagrams back to local listeners (so peers on this host hear it too).
pub fn sender(group: SocketAddr, iface: &Interface, ttl: u32) -> Result<UdpSocket, SocketError> {
    let domain = Domain::for_address(group);
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(io_err(
        "creating socket",
        group,
        iface,
    ))?;
    match group {
        SocketAddr::V4(_) => {
            let addr = iface.ipv4()?;
            sock.set_multicast_if_v4(&addr).map_err(io_err(
                "setting IP_MULTICAST_IF",
                group,
                iface,
            ))?;
            sock.set_multicast_ttl_v4(ttl).map_err(io_err(
                "setting IP_MULTICAST_TTL",
                group,
                iface,
            ))?;
            sock.set_multicast_loop_v4(true).map_err(io_err(
                "setting IP_MULTICAST_LOOP",
                group,
                iface,
            ))?;
        }
        SocketAddr::V6(_) => {
            sock.set_multicast_if_v6(iface.index).map_err(io_err(
                "setting IPV6_MULTICAST_IF",
                group,
                iface,
            ))?;
            sock.set_multicast_hops_v6(ttl).map_err(io_err(
                "setting IPV6_MULTICAST_HOPS",
                group,
                iface,
            ))?;
            sock.set_multicast_loop_v6(true).map_err(io_err(
                "setting IPV6_MULTICAST_LOOP",
                group,
                iface,
            ))?;
        }
    }
    sock.connect(&group.into())
        .map_err(io_err("connecting", group, iface))?;
    Ok(sock.into())
}

/// A socket bound to the group's port that has joined `group` on `iface`.
pub fn listener(group: SocketAddr, iface: &Interface) -> Result<UdpSocket, SocketError> {
    let domain = Domain::for_address(group);
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(io_err(
        "creating socket",
        group,
        iface,
    ))?;
    // Several listeners (wdctl, a test, a peer) may share the port on one host.
    sock.set_reuse_address(true)
        .map_err(io_err("setting SO_REUSEADDR", group, iface))?;
    sock.set_reuse_port(true)
        .map_err(io_err("setting SO_REUSEPORT", group, iface))?;
    match group {
        SocketAddr::V4(g) => {
            let addr = iface.ipv4()?;
            // Bind to the group address, so only this group's datagrams arrive.
            sock.bind(&SocketAddr::V4(SocketAddrV4::new(*g.ip(), g.port())).into())
                .map_err(io_err("binding", group, iface))?;
            sock.join_multicast_v4(g.ip(), &addr)
                .map_err(io_err("joining group", group, iface))?;
        }
        SocketAddr::V6(g) => {
            sock.set_only_v6(true)
                .map_err(io_err("setting IPV6_V6ONLY", group, iface))?;
            sock.bind(
                &SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, g.port(), 0, 0)).into(),
            )
            .map_err(io_err("binding", group, iface))?;
            sock.join_multicast_v6(g.ip(), iface.index).map_err(io_err(
                "joining group",
                group,
                iface,
            ))?;
        }
    }
    Ok(sock.into())
}
