//! Which task is current, without a helper call on the hot path: each CPU keeps the
//! ids of the last task that made a syscall on it (`CURRENT`), keyed by that task's
//! saved user registers. sys_enter and sys_exit get the registers' address as their
//! first argument, and it is the same on every syscall of a task (its `pt_regs` sit
//! at the top of its own kernel stack) and differs between any two live tasks (each
//! has its own stack). A hit is one per-CPU load (inlined by the verifier) and two
//! compares; a miss (another task made the last syscall on this CPU) costs the
//! helper call the cache saves, once.
//!
//! Why not have sched_switch write each CPU's current task from `next`: `current`
//! then has to change only in traced switches, and on the kernels of this project's
//! machines it does not (the sched_switch event stream has gaps: a CPU's next switch
//! names a different `prev` than the last one's `next`; ftrace shows the same).
//! Registers are asked of the task itself, so no switch can be missed.
//!
//! Why it is exact: an entry is written only by the task whose registers key it, while
//! it is current, with programs that run with preemption off. Another task can have
//! the same registers' address only after the first one's stack is freed, after it
//! exited; and a task's ids change only when a non-leader thread execs. Both bump
//! `TASK_EPOCH`, and an entry counts only under the epoch it was written in.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use watchdog_common::CurrentTask;

use crate::{
    bits::atomic_add,
    maps::{CURRENT, TASK_EPOCH},
};

/// The current thread's (tgid, tid); `regs` is the syscall tracepoint's `pt_regs`.
#[inline(always)]
pub fn current_ids(regs: u64) -> (u32, u32) {
    // Read before the helper: an exit between the two leaves the entry under an old
    // epoch, which only costs a miss.
    let epoch = match TASK_EPOCH.get(0) {
        Some(e) => *e,
        None => return helper_ids(),
    };
    let Some(cur) = CURRENT.get_ptr_mut(0) else {
        return helper_ids();
    };
    unsafe {
        if (*cur).regs == regs && (*cur).epoch == epoch {
            return ((*cur).tgid, (*cur).tid);
        }
    }
    let (tgid, tid) = helper_ids();
    // Per-CPU, and no other program on this CPU runs until this one ends.
    unsafe {
        *cur = CurrentTask {
            regs,
            epoch,
            tgid,
            tid,
        }
    };
    (tgid, tid)
}

#[inline(always)]
fn helper_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// A task exited (its stack may go to a new task) or changed ids (exec): every CPU's
/// entry from before now is void.
#[inline(always)]
pub fn forget_tasks() {
    if let Some(e) = TASK_EPOCH.get_ptr_mut(0) {
        atomic_add(e, 1);
    }
}
