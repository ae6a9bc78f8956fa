//! systemd's service notification protocol (sd_notify): READY=1 once running, STATUS=
//! lines an operator sees in `systemctl status`, and WATCHDOG=1 keep-alives while the
//! daemon's own parts make progress, so systemd restarts a wedged daemon. A no-op when
//! NOTIFY_SOCKET is not set (not started by systemd with Type=notify).
use std::{os::unix::net::UnixDatagram, time::Duration};

/// The notification socket, if systemd gave one.
pub struct Notifier {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notifier {
    /// From NOTIFY_SOCKET; None when unset or unusable. An abstract socket is written
    /// `@name`.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let sock = UnixDatagram::unbound().ok()?;
        let path = std::path::PathBuf::from(path);
        Some(Notifier { sock, path })
    }

    /// Send one notification (`KEY=VALUE` lines).
    pub fn notify(&self, state: &str) {
        let sent = match self.path.to_str().and_then(|p| p.strip_prefix('@')) {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|a| self.sock.send_to_addr(state.as_bytes(), &a))
            }
            None => self.sock.send_to(state.as_bytes(), &self.path),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// How often to send WATCHDOG=1: half of WATCHDOG_USEC, if systemd asked for it (and
/// WATCHDOG_PID, when set, is us).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
