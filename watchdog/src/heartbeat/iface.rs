//! Network interfaces by name: index and IPv4 address, for multicast.
use std::{ffi::CString, net::Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error("no such network interface: {0}")]
    NotFound(String),
    #[error("interface {0} has no IPv4 address (needed for IPv4 multicast)")]
    NoIpv4(String),
    #[error("listing interfaces: {0}")]
    Io(#[from] std::io::Error),
}

/// An interface that multicast goes out on or is received from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

impl Interface {
    pub fn by_name(name: &str) -> Result<Self, IfaceError> {
        let c = CString::new(name).map_err(|_| IfaceError::NotFound(name.to_owned()))?;
        // SAFETY: valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(IfaceError::NotFound(name.to_owned()));
        }
        Ok(Interface {
            name: name.to_owned(),
            index,
        })
    }

    /// The interface's first IPv4 address.
    pub fn ipv4(&self) -> Result<Ipv4Addr, IfaceError> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `head` with a list we free below.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut found = None;
        let mut cur = head;
        while !cur.is_null() {
            // SAFETY: cur walks the list getifaddrs returned.
            let ifa = unsafe { &*cur };
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            // SAFETY: ifa_addr is non-null and points at a sockaddr.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if name.to_bytes() == self.name.as_bytes() && family == libc::AF_INET {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
        }
        // SAFETY: head came from getifaddrs.
        unsafe { libc::freeifaddrs(head) };
        found.ok_or_else(|| IfaceError::NoIpv4(self.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_its_address() {
        let lo = Interface::by_name("lo").unwrap();
        assert!(lo.index > 0);
        assert_eq!(lo.ipv4().unwrap(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn unknown_interface_is_named_in_the_error() {
        let err = Interface::by_name("nosuchif0").unwrap_err();
        assert_eq!(err.to_string(), "no such network interface: nosuchif0");
    }
}
