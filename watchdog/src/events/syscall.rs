//! A thread's syscall as the judging sees it: the kernel side's in-flight record in the
//! daemon's units (CLOCK_MONOTONIC ns, task states in the TASK_REPORT encoding). The
//! before-attach look at /proc builds the same from what /proc shows.
use watchdog_common::{InFlight, NOT_IN_SYSCALL, sched};

use crate::kernel::jiffies::JiffyClock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRecord {
    /// Process the thread belongs to.
    pub tgid: u32,
    /// The thread.
    pub tid: u32,
    /// Syscall number in flight, or [`NOT_IN_SYSCALL`].
    pub nr: u32,
    /// When the in-flight syscall started (never earlier than it did: see
    /// `kernel::jiffies`).
    pub enter_ns: u64,
    /// Number of the last syscall that returned, or [`NOT_IN_SYSCALL`] if none yet.
    pub last_nr: u32,
    /// How long the last returned syscall took, to the kernel side's resolution.
    pub last_duration_ns: u64,
    /// Syscalls that returned since the thread was first seen.
    pub completed: u64,
    /// Time the in-flight syscall spent switched out asleep, up to the last switch-in.
    pub sleep_ns: u64,
    /// Time of the thread's last switch in or out.
    pub switch_ns: u64,
    /// State at the last switch-out (`watchdog_common::sched` report bits; 0 when
    /// preempted).
    pub sched_state: u32,
    /// Whether the thread is on a CPU.
    pub on_cpu: bool,
}

impl SyscallRecord {
    /// The kernel side's record, its jiffies placed on CLOCK_MONOTONIC by `clock`. Each
    /// instant becomes the end of its jiffy, so elapsed times are never overstated; a
    /// duration keeps the jiffies it crossed.
    pub fn from_kernel(rec: &InFlight, clock: &JiffyClock) -> SyscallRecord {
        SyscallRecord {
            tgid: rec.tgid,
            tid: rec.tid,
            nr: rec.nr,
            enter_ns: clock.end_ns(rec.enter_jiffies),
            last_nr: rec.last_nr,
            last_duration_ns: clock.span_ns(rec.last_jiffies),
            completed: rec.completed,
            sleep_ns: clock.span_ns(rec.sleep_jiffies),
            switch_ns: clock.end_ns(rec.switch_jiffies),
            sched_state: sched::report(rec.sched_state),
            on_cpu: rec.on_cpu != 0,
        }
    }
}

impl SyscallRecord {
    pub fn in_syscall(&self) -> bool {
        self.nr != NOT_IN_SYSCALL
    }
}

/// Records as the tests of the judging modules need them.
#[cfg(test)]
pub(crate) mod test_records {
    use super::*;

    /// Thread record of process `tgid` in syscall `nr` (or none) since `enter_ns`,
    /// switched out in `sched_state` at its start.
    pub fn in_flight(tgid: u32, nr: Option<u32>, enter_ns: u64, sched_state: u32) -> SyscallRecord {
        SyscallRecord {
            tgid,
            tid: 0,
            nr: nr.unwrap_or(NOT_IN_SYSCALL),
            enter_ns,
            last_nr: NOT_IN_SYSCALL,
            last_duration_ns: 0,
            completed: 0,
            sleep_ns: 0,
            switch_ns: enter_ns,
            sched_state,
            on_cpu: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use watchdog_common::ClockSample;

    use super::*;

    #[test]
    fn a_kernel_record_in_jiffies_becomes_one_in_monotonic_ns() {
        // HZ=250, jiffy 1000 began at 10 s.
        let samples: Vec<ClockSample> = (0..3_000u64)
            .map(|i| {
                let ns = 10_000_000_000 + i * 3_000;
                ClockSample {
                    jiffies: 1_000 + (ns - 10_000_000_000) / 4_000_000,
                    ns,
                }
            })
            .collect();
        let clock = JiffyClock::calibrate(&samples).unwrap();
        let rec = InFlight {
            tgid: 7,
            nr: 0,
            enter_jiffies: 1_010,
            last_nr: 1,
            tid: 8,
            last_jiffies: 2,
            completed: 5,
            sleep_jiffies: 3,
            switch_jiffies: 1_020,
            sched_state: 0x102, // TASK_KILLABLE
            on_cpu: 0,
        };
        let r = SyscallRecord::from_kernel(&rec, &clock);
        assert_eq!(
            (r.tgid, r.tid, r.nr, r.last_nr, r.completed),
            (7, 8, 0, 1, 5)
        );
        // The end of jiffy 1010: 10 s + 11 jiffies.
        assert_eq!(r.enter_ns, 10_044_000_000);
        assert_eq!(r.switch_ns, 10_084_000_000);
        assert_eq!((r.last_duration_ns, r.sleep_ns), (8_000_000, 12_000_000));
        assert_eq!(r.sched_state, sched::UNINTERRUPTIBLE);
        assert!(!r.on_cpu && r.in_syscall());
    }
}
