//! The verdict on one thread's in-flight syscall. Pure: fed with what the kernel side
//! recorded and the budget, it says whether the thread is stalled, and why.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::syscall_table::{self, SyscallClass};

/// What a thread's verdict is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Stalled,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Stalled => "stalled",
        }
    }
}

/// What the first argument of a read-like syscall refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// Pipes, sockets, terminals, eventfd/timerfd/signalfd/inotify: reads wait for a
    /// writer that may legitimately be silent for ever.
    Stream,
    /// Regular files and block or character devices that answer at once (/dev/zero):
    /// a read should be quick.
    Other,
}

/// What an open fd refers to, as far as telling a wait from a stall needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdNode {
    /// A pipe or FIFO (named or not).
    Fifo,
    Socket,
    /// eventfd, timerfd, signalfd, inotify, ... (`anon_inode:` links).
    AnonInode,
    CharDevice {
        major: u32,
        minor: u32,
    },
    /// Regular files, directories, block devices.
    Other,
}

/// Major number of the kernel's memory devices (/dev/null, /dev/zero, /dev/kmsg, ...).
const MEM_MAJOR: u32 = 1;
/// Minor of /dev/kmsg among them: reading it waits for the next kernel message.
const KMSG_MINOR: u32 = 11;

/// Whether a read of this fd may legitimately wait for ever.
pub fn fd_kind(node: FdNode) -> FdKind {
    match node {
        FdNode::Fifo | FdNode::Socket | FdNode::AnonInode => FdKind::Stream,
        // /dev/zero, /dev/null, /dev/urandom answer at once; terminals, /dev/kmsg and
        // other character devices wait for input.
        FdNode::CharDevice { major, minor } if major == MEM_MAJOR => {
            if minor == KMSG_MINOR {
                FdKind::Stream
            } else {
                FdKind::Other
            }
        }
        FdNode::CharDevice { .. } => FdKind::Stream,
        FdNode::Other => FdKind::Other,
    }
}

/// A verdict with the reason a person can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub why: String,
}

/// Judge a thread that has been in syscall `nr` for `elapsed`.
///
/// `fd_kind` is asked only for read-like syscalls that overran the budget (it costs a
/// readlink in /proc), and may answer `None` when the fd is gone; then the read counts
/// as bounded, since a read that outlives its own fd is not idle.
pub fn judge(
    nr: u32,
    elapsed: Duration,
    budget: Duration,
    fd_kind: impl FnOnce() -> Option<FdKind>,
) -> Judgement {
    let name = syscall_table::name(nr).unwrap_or("unknown");
    if elapsed <= budget {
        return Judgement {
            verdict: Verdict::Ok,
            why: format!("{name} within budget"),
        };
    }
    match syscall_table::class(nr) {
        SyscallClass::Wait => Judgement {
            verdict: Verdict::Ok,
            why: format!("{name} waits without bound (idle, not stuck)"),
        },
        SyscallClass::WaitOnStreamFd if fd_kind() == Some(FdKind::Stream) => Judgement {
            verdict: Verdict::Ok,
            why: format!("{name} on a pipe, socket or terminal waits for a peer"),
        },
        _ => Judgement {
            verdict: Verdict::Stalled,
            why: format!(
                "{name} in flight for {} ms, over the {} ms budget",
                elapsed.as_millis(),
                budget.as_millis()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use syscalls::Sysno;

    use super::*;

    const BUDGET: Duration = Duration::from_millis(300);

    fn never_asked() -> Option<FdKind> {
        panic!("fd kind must not be looked up here")
    }

    #[test]
    fn within_budget_is_ok_without_looking_at_the_fd() {
        let j = judge(
            Sysno::read as u32,
            Duration::from_millis(299),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Ok);
    }

    #[test]
    fn bounded_syscall_over_budget_is_stalled_with_the_figures() {
        let j = judge(
            Sysno::fsync as u32,
            Duration::from_millis(301),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Stalled);
        assert_eq!(j.why, "fsync in flight for 301 ms, over the 300 ms budget");
    }

    #[test]
    fn wait_syscalls_are_never_stalled_however_long() {
        for nr in [
            Sysno::epoll_wait,
            Sysno::futex,
            Sysno::accept,
            Sysno::nanosleep,
        ] {
            let j = judge(nr as u32, Duration::from_secs(86_400), BUDGET, never_asked);
            assert_eq!(j.verdict, Verdict::Ok, "{nr:?}");
        }
    }

    #[test]
    fn read_depends_on_what_it_reads() {
        let long = Duration::from_secs(5);
        let pipe = judge(Sysno::read as u32, long, BUDGET, || Some(FdKind::Stream));
        assert_eq!(pipe.verdict, Verdict::Ok);
        let file = judge(Sysno::read as u32, long, BUDGET, || Some(FdKind::Other));
        assert_eq!(file.verdict, Verdict::Stalled);
        let gone = judge(Sysno::read as u32, long, BUDGET, || None);
        assert_eq!(gone.verdict, Verdict::Stalled);
    }

    #[test]
    fn fd_nodes_are_classified() {
        assert_eq!(fd_kind(FdNode::Fifo), FdKind::Stream);
        assert_eq!(fd_kind(FdNode::Socket), FdKind::Stream);
        assert_eq!(fd_kind(FdNode::AnonInode), FdKind::Stream);
        // /dev/pts/3 and /dev/tty1
        assert_eq!(
            fd_kind(FdNode::CharDevice {
                major: 136,
                minor: 3
            }),
            FdKind::Stream
        );
        assert_eq!(
            fd_kind(FdNode::CharDevice { major: 4, minor: 1 }),
            FdKind::Stream
        );
        // /dev/zero, /dev/urandom, /dev/kmsg
        assert_eq!(
            fd_kind(FdNode::CharDevice { major: 1, minor: 5 }),
            FdKind::Other
        );
        assert_eq!(
            fd_kind(FdNode::CharDevice { major: 1, minor: 9 }),
            FdKind::Other
        );
        assert_eq!(
            fd_kind(FdNode::CharDevice {
                major: 1,
                minor: 11
            }),
            FdKind::Stream
        );
        assert_eq!(fd_kind(FdNode::Other), FdKind::Other);
    }
}
