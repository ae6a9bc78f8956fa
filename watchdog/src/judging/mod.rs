//! Stage 3, judging: what the events mean. The thread table and its verdicts, budgets
//! and targets, kernel reports, and the daemon's reactions that turn all of them into
//! what to do. Pure: no kernel, no root; every decision is unit-tested here.
pub mod kmsg;
pub mod monitor;
pub mod policy;
pub mod reactions;
pub mod syscall_table;
pub mod targets;
pub mod verdict;

/// Kernel records as the tests of the judging modules need them.
#[cfg(test)]
pub(crate) mod test_records {
    use watchdog_common::{InFlight, NOT_IN_SYSCALL};

    /// Thread record of process `tgid` in syscall `nr` (or none) since `enter_ns`,
    /// switched out in `sched_state` at its start.
    pub fn in_flight(tgid: u32, nr: Option<u32>, enter_ns: u64, sched_state: u32) -> InFlight {
        InFlight {
            tgid,
            nr: nr.unwrap_or(NOT_IN_SYSCALL),
            enter_ns,
            arg0: 3,
            last_nr: NOT_IN_SYSCALL,
            tid: 0,
            last_duration_ns: 0,
            completed: 0,
            sleep_ns: 0,
            switch_ns: enter_ns,
            sched_state,
            on_cpu: 0,
        }
    }
}
