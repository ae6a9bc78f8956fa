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

#[cfg(test)]
pub(crate) use crate::events::syscall::test_records;
