//! The verdict on one thread's in-flight syscall. Pure: fed with what the kernel side
//! recorded and the budget, it says whether the thread is stalled, and why.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judging::syscall_table::{self, SyscallClass};

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

/// What a thread is doing, from the scheduler's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// In a syscall, on a CPU or runnable (preempted): the kernel is working for it.
    RunningInKernel,
    /// In a syscall, asleep in uninterruptible sleep (D, killable included).
    Uninterruptible,
    /// In a syscall, asleep interruptibly (S): waiting for an event.
    Waiting,
    /// Stopped by a signal or by a tracer (T, t).
    Stopped,
    /// Not in a syscall: running its own code.
    User,
}

impl RunState {
    /// The state a switch-out left a thread in (`prev_state` of sched_switch).
    pub fn from_switch(on_cpu: bool, state: u32) -> RunState {
        use watchdog_common::sched;
        if on_cpu || state & sched::SLEEP_MASK == 0 {
            RunState::RunningInKernel
        } else if state & (sched::STOPPED | sched::TRACED) != 0 {
            RunState::Stopped
        } else if state & sched::UNINTERRUPTIBLE != 0 {
            RunState::Uninterruptible
        } else {
            RunState::Waiting
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::RunningInKernel => "running-in-kernel",
            RunState::Uninterruptible => "uninterruptible",
            RunState::Waiting => "waiting",
            RunState::Stopped => "stopped",
            RunState::User => "user",
        }
    }
}

/// How the in-flight syscall has spent its time so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallTime {
    /// Since the syscall began.
    pub elapsed_ns: u64,
    /// On a CPU or runnable.
    pub on_cpu_ns: u64,
    /// Asleep.
    pub off_cpu_ns: u64,
    /// Since the thread last switched in or out.
    pub in_state_ns: u64,
    pub state: RunState,
}

impl SyscallTime {
    /// From the kernel's record at time `now_ns`.
    pub fn of(rec: &crate::events::SyscallRecord, now_ns: u64) -> SyscallTime {
        let on_cpu = rec.on_cpu;
        let state = RunState::from_switch(on_cpu, rec.sched_state);
        let elapsed_ns = now_ns.saturating_sub(rec.enter_ns);
        let in_state_ns = now_ns.saturating_sub(rec.switch_ns.max(rec.enter_ns));
        let asleep_now = matches!(
            state,
            RunState::Uninterruptible | RunState::Waiting | RunState::Stopped
        );
        let off_cpu_ns = (rec.sleep_ns + if asleep_now { in_state_ns } else { 0 }).min(elapsed_ns);
        SyscallTime {
            elapsed_ns,
            on_cpu_ns: elapsed_ns - off_cpu_ns,
            off_cpu_ns,
            in_state_ns,
            state,
        }
    }
}

/// Why a verdict is what it is. Plain data, so judging a thousand idle threads at
/// every scan formats nothing; the text is made when someone reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Stopped {
        name: &'static str,
    },
    WithinBudget {
        name: &'static str,
    },
    Spinning {
        name: &'static str,
        on_cpu_ms: u64,
        budget_ms: u64,
    },
    Uninterruptible {
        name: &'static str,
        for_ms: u64,
        budget_ms: u64,
    },
    IdleWait {
        name: &'static str,
    },
    StreamWait {
        name: &'static str,
    },
    Overran {
        name: &'static str,
        elapsed_ms: u64,
        budget_ms: u64,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Reason::Stopped { name } => {
                write!(f, "{name}: stopped by a signal or tracer, not stalled")
            }
            Reason::WithinBudget { name } => write!(f, "{name} within budget"),
            Reason::Spinning {
                name,
                on_cpu_ms,
                budget_ms,
            } => write!(
                f,
                "{name} running in the kernel for {on_cpu_ms} ms of CPU, over the {budget_ms} ms budget"
            ),
            Reason::Uninterruptible {
                name,
                for_ms,
                budget_ms,
            } => write!(
                f,
                "{name} in uninterruptible sleep for {for_ms} ms, over the {budget_ms} ms budget"
            ),
            Reason::IdleWait { name } => write!(f, "{name} waits without bound (idle, not stuck)"),
            Reason::StreamWait { name } => {
                write!(f, "{name} on a pipe, socket or terminal waits for a peer")
            }
            Reason::Overran {
                name,
                elapsed_ms,
                budget_ms,
            } => write!(
                f,
                "{name} in flight for {elapsed_ms} ms, over the {budget_ms} ms budget"
            ),
        }
    }
}

/// A verdict and its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: Reason,
}

impl Judgement {
    /// The reason, as a person reads it.
    pub fn why(&self) -> String {
        self.reason.to_string()
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// Judge a thread in syscall `nr` that has spent its time as `t`.
///
/// Stalled when the syscall has run past the budget AND the thread is stuck: on a CPU
/// in the kernel for longer than the budget (spinning), or in uninterruptible sleep
/// since before the budget ran out, or in a syscall of the bounded class whatever its
/// state. Never stalled while stopped by a signal or tracer, nor while waiting
/// interruptibly in a wait syscall, however long.
///
/// `fd_kind` is asked only for a read-like syscall that overran the budget (it costs a
/// readlink in /proc), and may answer `None` when the fd is gone; then the read counts
/// as bounded, since a read that outlives its own fd is not idle.
pub fn judge(
    nr: u32,
    t: &SyscallTime,
    budget: Duration,
    fd_kind: impl FnOnce() -> Option<FdKind>,
) -> Judgement {
    let name = syscall_table::name(nr).unwrap_or("unknown");
    let budget_ns = budget.as_nanos() as u64;
    let budget_ms = budget.as_millis() as u64;
    let ok = |reason| Judgement {
        verdict: Verdict::Ok,
        reason,
    };
    let stalled = |reason| Judgement {
        verdict: Verdict::Stalled,
        reason,
    };
    if t.state == RunState::Stopped {
        return ok(Reason::Stopped { name });
    }
    if t.elapsed_ns <= budget_ns {
        return ok(Reason::WithinBudget { name });
    }
    if t.on_cpu_ns > budget_ns {
        return stalled(Reason::Spinning {
            name,
            on_cpu_ms: ms(t.on_cpu_ns),
            budget_ms,
        });
    }
    // Asleep in D since before the budget ran out: the whole time beyond budget.
    if t.state == RunState::Uninterruptible && t.elapsed_ns - t.in_state_ns <= budget_ns {
        return stalled(Reason::Uninterruptible {
            name,
            for_ms: ms(t.in_state_ns),
            budget_ms,
        });
    }
    match syscall_table::class(nr) {
        SyscallClass::Wait => ok(Reason::IdleWait { name }),
        SyscallClass::WaitOnStreamFd if fd_kind() == Some(FdKind::Stream) => {
            ok(Reason::StreamWait { name })
        }
        _ => stalled(Reason::Overran {
            name,
            elapsed_ms: ms(t.elapsed_ns),
            budget_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use syscalls::Sysno;

    use super::*;

    const BUDGET: Duration = Duration::from_millis(300);
    const MS: u64 = 1_000_000;

    fn never_asked() -> Option<FdKind> {
        panic!("fd kind must not be looked up here")
    }

    /// A syscall `elapsed` ms old that slept `off` ms of it, now in `state` for `in_state` ms.
    fn t(elapsed: u64, off: u64, state: RunState, in_state: u64) -> SyscallTime {
        SyscallTime {
            elapsed_ns: elapsed * MS,
            on_cpu_ns: (elapsed - off) * MS,
            off_cpu_ns: off * MS,
            in_state_ns: in_state * MS,
            state,
        }
    }

    #[test]
    fn within_budget_is_ok_without_looking_at_the_fd() {
        let j = judge(
            Sysno::read as u32,
            &t(299, 0, RunState::RunningInKernel, 1),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Ok);
    }

    #[test]
    fn bounded_syscall_over_budget_is_stalled_with_the_figures() {
        let j = judge(
            Sysno::fsync as u32,
            &t(301, 250, RunState::Waiting, 250),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Stalled);
        assert_eq!(
            j.why(),
            "fsync in flight for 301 ms, over the 300 ms budget"
        );
    }

    #[test]
    fn wait_syscalls_asleep_interruptibly_are_never_stalled() {
        for nr in [
            Sysno::epoll_wait,
            Sysno::futex,
            Sysno::accept,
            Sysno::nanosleep,
        ] {
            let j = judge(
                nr as u32,
                &t(86_400_000, 86_399_999, RunState::Waiting, 86_399_000),
                BUDGET,
                never_asked,
            );
            assert_eq!(j.verdict, Verdict::Ok, "{nr:?}");
        }
        // Woken after a long wait, and now running briefly: still fine.
        let j = judge(
            Sysno::epoll_wait as u32,
            &t(60_000, 59_999, RunState::RunningInKernel, 1),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Ok);
    }

    #[test]
    fn a_syscall_spinning_on_cpu_is_stalled_even_in_the_wait_class() {
        let j = judge(
            Sysno::epoll_wait as u32,
            &t(400, 50, RunState::RunningInKernel, 350),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Stalled);
        assert_eq!(
            j.why(),
            "epoll_wait running in the kernel for 350 ms of CPU, over the 300 ms budget"
        );
    }

    #[test]
    fn uninterruptible_sleep_past_the_budget_is_stalled_even_in_the_wait_class() {
        // In D since 10 ms into the syscall: the whole time beyond the budget.
        let j = judge(
            Sysno::futex as u32,
            &t(500, 490, RunState::Uninterruptible, 490),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Stalled);
        assert!(
            j.why()
                .starts_with("futex in uninterruptible sleep for 490 ms"),
            "{}",
            j.why()
        );
        // In D only for the last 50 ms of a long interruptible wait: not yet.
        let j = judge(
            Sysno::futex as u32,
            &t(5_000, 4_990, RunState::Uninterruptible, 50),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Ok);
    }

    #[test]
    fn stopped_threads_are_never_stalled() {
        let j = judge(
            Sysno::fsync as u32,
            &t(10_000, 9_000, RunState::Stopped, 9_000),
            BUDGET,
            never_asked,
        );
        assert_eq!(j.verdict, Verdict::Ok);
        assert_eq!(j.why(), "fsync: stopped by a signal or tracer, not stalled");
    }

    #[test]
    fn read_depends_on_what_it_reads() {
        let long = t(5_000, 4_999, RunState::Waiting, 4_999);
        let pipe = judge(Sysno::read as u32, &long, BUDGET, || Some(FdKind::Stream));
        assert_eq!(pipe.verdict, Verdict::Ok);
        let file = judge(Sysno::read as u32, &long, BUDGET, || Some(FdKind::Other));
        assert_eq!(file.verdict, Verdict::Stalled);
        let gone = judge(Sysno::read as u32, &long, BUDGET, || None);
        assert_eq!(gone.verdict, Verdict::Stalled);
    }

    #[test]
    fn switch_states_map_to_run_states() {
        assert_eq!(RunState::from_switch(true, 0), RunState::RunningInKernel);
        assert_eq!(
            RunState::from_switch(false, 0x100),
            RunState::RunningInKernel,
            "preempted"
        );
        assert_eq!(RunState::from_switch(false, 0x01), RunState::Waiting);
        assert_eq!(
            RunState::from_switch(false, 0x02),
            RunState::Uninterruptible
        );
        assert_eq!(RunState::from_switch(false, 0x04), RunState::Stopped);
        assert_eq!(RunState::from_switch(false, 0x08), RunState::Stopped);
    }

    #[test]
    fn syscall_time_splits_on_and_off_cpu() {
        let rec = crate::events::SyscallRecord {
            tgid: 1,
            nr: 0,
            enter_ns: 1_000 * MS,
            last_nr: watchdog_common::NOT_IN_SYSCALL,
            tid: 0,
            last_duration_ns: 0,
            completed: 0,
            sleep_ns: 100 * MS,
            switch_ns: 1_300 * MS,
            sched_state: 0x02,
            on_cpu: false,
        };
        let t = SyscallTime::of(&rec, 1_500 * MS);
        assert_eq!(t.state, RunState::Uninterruptible);
        assert_eq!((t.elapsed_ns, t.in_state_ns), (500 * MS, 200 * MS));
        assert_eq!((t.off_cpu_ns, t.on_cpu_ns), (300 * MS, 200 * MS));
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
