//! Syscall names and classes.
//!
//! Names come from the `syscalls` crate, whose tables are generated from the kernel's
//! own syscall tables for the architecture we are built for (the same numbering the
//! eBPF side reports), so nothing here is typed by hand except the wait class below.

use std::sync::LazyLock;

use syscalls::Sysno;

/// Name of syscall `nr` on this architecture, if it is one.
pub fn name(nr: u32) -> Option<&'static str> {
    Sysno::new(nr as usize).map(|s| s.name())
}

/// The number of syscall `name` on this architecture.
pub fn number(name: &str) -> Option<u32> {
    name.parse::<Sysno>().ok().map(|s| s as u32)
}

/// How long a syscall may legitimately take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallClass {
    /// Waits for an event that may never come (epoll_wait, accept, futex, ...): idle,
    /// not stuck, however long it takes.
    Wait,
    /// Waits only when its first argument is a pipe, socket or similar stream (read on
    /// a socket waits for a peer; read on a file should be quick).
    WaitOnStreamFd,
    /// Should complete in bounded time: subject to the budget.
    Bounded,
}

/// Syscalls that legitimately wait without bound. Documented in the README; a thread
/// in one of these is never stalled by the budget alone.
pub const WAIT_SYSCALLS: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "futex",
    "futex_waitv",
    "futex_wait",
    "nanosleep",
    "clock_nanosleep",
    "accept",
    "accept4",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "wait4",
    "waitid",
    "pause",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "io_getevents",
    "io_pgetevents",
    "io_uring_enter",
    "msgrcv",
    "mq_timedreceive",
    "semtimedop",
    // A sleep interrupted by a signal (SIGSTOP/SIGCONT, a tracer's stop) goes on in
    // restart_syscall: nanosleep, clock_nanosleep, poll and futex waits with a timeout.
    "restart_syscall",
];

/// Syscalls that wait only on a stream fd (their first argument).
pub const STREAM_FD_SYSCALLS: &[&str] = &["read", "readv"];

/// The class of syscall `nr`. Unknown numbers are bounded: an unknown syscall that
/// hangs is exactly what we are here to notice.
pub fn class(nr: u32) -> SyscallClass {
    // By number, from a table made once: the scanner asks for every thread it judges.
    static BY_NUMBER: LazyLock<Vec<SyscallClass>> = LazyLock::new(|| {
        (0..CLASS_TABLE_LEN)
            .map(|nr| match name(nr) {
                Some(n) if WAIT_SYSCALLS.contains(&n) => SyscallClass::Wait,
                Some(n) if STREAM_FD_SYSCALLS.contains(&n) => SyscallClass::WaitOnStreamFd,
                _ => SyscallClass::Bounded,
            })
            .collect()
    });
    BY_NUMBER
        .get(nr as usize)
        .copied()
        .unwrap_or(SyscallClass::Bounded)
}

/// Syscall numbers the class table covers: the tables of the architectures we build
/// for end below it (x86_64's and arm64's near 470; a test checks).
const CLASS_TABLE_LEN: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_architecture_table() {
        assert_eq!(name(Sysno::read as u32), Some("read"));
        assert_eq!(name(Sysno::futex as u32), Some("futex"));
        assert_eq!(name(100_000), None);
    }

    #[test]
    fn classes_come_from_the_lists_by_name() {
        assert_eq!(class(Sysno::epoll_wait as u32), SyscallClass::Wait);
        assert_eq!(class(Sysno::read as u32), SyscallClass::WaitOnStreamFd);
        assert_eq!(class(Sysno::fsync as u32), SyscallClass::Bounded);
        assert_eq!(class(u32::MAX), SyscallClass::Bounded);
        assert!((CLASS_TABLE_LEN..4 * CLASS_TABLE_LEN).all(|nr| name(nr).is_none()));
        for nr in 0..CLASS_TABLE_LEN {
            if let Some(n) = name(nr) {
                assert_eq!(
                    class(nr) == SyscallClass::Wait,
                    WAIT_SYSCALLS.contains(&n),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn names_resolve_to_numbers() {
        assert_eq!(number("fsync"), Some(Sysno::fsync as u32));
        assert_eq!(number("fsnyc"), None);
    }

    #[test]
    fn waits_and_bounded_syscalls_are_told_apart() {
        assert_eq!(class(Sysno::epoll_pwait as u32), SyscallClass::Wait);
        assert_eq!(class(Sysno::futex as u32), SyscallClass::Wait);
        assert_eq!(class(Sysno::accept4 as u32), SyscallClass::Wait);
        assert_eq!(class(Sysno::clock_nanosleep as u32), SyscallClass::Wait);
        assert_eq!(class(Sysno::restart_syscall as u32), SyscallClass::Wait);
        assert_eq!(class(Sysno::read as u32), SyscallClass::WaitOnStreamFd);
        assert_eq!(class(Sysno::write as u32), SyscallClass::Bounded);
        assert_eq!(class(Sysno::fsync as u32), SyscallClass::Bounded);
        assert_eq!(class(100_000), SyscallClass::Bounded);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vfork_is_bounded() {
        assert_eq!(class(Sysno::vfork as u32), SyscallClass::Bounded);
        assert_eq!(name(58), Some("vfork"));
    }

    #[test]
    fn every_listed_wait_syscall_is_spelled_as_the_kernel_spells_it() {
        // A typo in the list would silently make a wait syscall bounded. Names that do
        // not exist on this architecture (poll, select on arm64) are allowed to be absent,
        // but those present must resolve.
        let known: Vec<&str> = (0..1024).filter_map(name).collect();
        for n in [
            "epoll_pwait",
            "ppoll",
            "pselect6",
            "futex",
            "accept4",
            "recvmsg",
            "waitid",
        ] {
            assert!(known.contains(&n), "{n} is not a syscall name");
            assert!(WAIT_SYSCALLS.contains(&n));
        }
    }
}
