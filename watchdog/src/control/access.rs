//! Who may do what on the control socket, decided from the peer's credentials
//! (SO_PEERCRED), not only from the socket file's mode: root may do everything; members
//! of the configured group may read (threads, status, incidents); nobody else may do
//! anything. Pure: the group membership lookup is passed in.
use super::proto::Request;

/// The peer of a control connection, as the kernel vouches for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Who may use the socket besides root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Members of this group may read.
    pub read_group: Option<u32>,
}

impl Request {
    /// Whether answering it changes nothing.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Threads
            | Request::Status
            | Request::Incidents { .. }
            | Request::Incident { .. } => true,
            Request::Resume => false,
        }
    }

    /// Its name, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Threads => "threads",
            Request::Status => "status",
            Request::Incidents { .. } => "incidents",
            Request::Incident { .. } => "incident",
            Request::Resume => "resume",
        }
    }
}

/// Whether `peer` may make `req`; the refusal says why. `in_group(peer, gid)` tells a
/// supplementary group membership.
pub fn authorize(
    access: Access,
    peer: Peer,
    req: &Request,
    in_group: impl FnOnce(Peer, u32) -> bool,
) -> Result<(), String> {
    if peer.uid == 0 {
        return Ok(());
    }
    let member = access
        .read_group
        .is_some_and(|g| peer.gid == g || in_group(peer, g));
    match (member, req.is_read_only()) {
        (true, true) => Ok(()),
        (true, false) => Err(format!(
            "permission denied: {} changes the daemon, and only root may do that",
            req.name()
        )),
        (false, _) => Err(format!(
            "permission denied: uid {} is neither root nor in the socket's group",
            peer.uid
        )),
    }
}

/// Whether process `pid` has group `gid` among its supplementary groups
/// (/proc/PID/status `Groups:`).
pub fn proc_in_group(peer: Peer, gid: u32) -> bool {
    let Some(pid) = peer.pid else { return false };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: Access = Access {
        read_group: Some(4242),
    };

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
        }
    }

    fn never(_: Peer, _: u32) -> bool {
        false
    }

    #[test]
    fn root_may_do_everything() {
        assert_eq!(
            authorize(Access::default(), peer(0, 0), &Request::Resume, never),
            Ok(())
        );
    }

    #[test]
    fn group_members_may_read_but_not_change() {
        assert_eq!(
            authorize(GROUP, peer(1000, 4242), &Request::Threads, never),
            Ok(())
        );
        assert_eq!(
            authorize(GROUP, peer(1000, 1000), &Request::Status, |_, g| g == 4242),
            Ok(()),
            "a supplementary group counts"
        );
        assert_eq!(
            authorize(GROUP, peer(1000, 4242), &Request::Resume, never),
            Err("permission denied: resume changes the daemon, and only root may do that".into())
        );
    }

    #[test]
    fn others_may_do_nothing() {
        let refused =
            Err("permission denied: uid 1000 is neither root nor in the socket's group".into());
        assert_eq!(
            authorize(GROUP, peer(1000, 1000), &Request::Threads, never),
            refused
        );
        assert_eq!(
            authorize(
                Access::default(),
                peer(1000, 4242),
                &Request::Threads,
                never
            ),
            refused
        );
    }
}
