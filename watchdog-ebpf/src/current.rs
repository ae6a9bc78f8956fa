//! Which task is current on this CPU, without a helper call: sched_switch writes each
//! CPU's `CURRENT` slot from `next` at every context switch, so between two switches
//! the slot names the task that runs. sys_enter and sys_exit read it with one per-CPU
//! load, which the verifier inlines.
//!
//! Why it is exact: `current` changes only in a context switch (the tracepoint fires
//! in `__schedule`, with interrupts off, before `next` runs), and a thread's ids change
//! only when a non-leader thread execs (it takes the leader's pid), where
//! sched_process_exec writes the slot again. A program that is preempted (syscall
//! tracepoints may run preemptible) is switched back in through sched_switch, which
//! rewrites the slot before it resumes. A CPU that has not switched since attach has a
//! zero slot and takes the helper path.
use watchdog_common::CurrentTask;

use crate::{globals::task_ids, maps::CURRENT};

/// The current thread's (tgid, tid).
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    if let Some(cur) = CURRENT.get_ptr(0) {
        let cur = unsafe { *cur };
        if cur.tgid != 0 {
            return (cur.tgid, cur.tid);
        }
    }
    helper_ids()
}

// Apart: the cold path of a CPU that has not switched since attach.
#[inline(never)]
fn helper_ids() -> (u32, u32) {
    task_ids(unsafe { aya_ebpf::helpers::bpf_get_current_task_btf() } as *const u8)
}

/// This CPU now runs thread `tid` of process `tgid`.
#[inline(always)]
pub fn set_current(tgid: u32, tid: u32) {
    if let Some(cur) = CURRENT.get_ptr_mut(0) {
        // Per-CPU, and written with interrupts off (sched_switch) or by the task itself.
        unsafe { *cur = CurrentTask { tgid, tid } };
    }
}
