//! The hot path's first test, which needs no task id: whether the task making the
//! syscall may be one we follow, from its kernel stack alone.
//!
//! sys_enter and sys_exit get the address of the task's saved user registers, which
//! sit at the top of its own kernel stack: which stack that is says which task it is,
//! with no helper call and no per-CPU lookup. `STACKS` counts, per bucket of stack
//! addresses (`watchdog_common::stack_bucket`), the covered threads whose stack is in
//! it; a syscall whose bucket counts zero is not a covered thread's, and the programs
//! stop there: one load and one test for nearly every syscall on the host. A nonzero
//! bucket (a covered thread, or another task sharing its bucket) goes on to the exact
//! path (`current`, then the bit arrays), so a shared bucket costs time, never a
//! wrong answer.
//!
//! The invariant that makes zero mean "not followed": every thread the exact path
//! would follow (each thread of a target, and any thread with an in-flight slot) is
//! covered, from before it first runs or from when its process becomes a target (a
//! syscall in between is missed as if the target had been added a moment later).
//! Cover is given
//! - at fork, to a child whose parent is covered or whose process is a target
//!   (`cover_forked`), before the child first runs;
//! - at exec, to a task that becomes a target there (`sched_process_exec`);
//! - when userspace adds a running process, to its threads, by the `cover_targets`
//!   task iterator, run after the target's bit is set (a thread forked meanwhile is
//!   covered at fork, as its process is already a target).
//! Cover is taken away only at the thread's exit (`sched_process_exit`), so a thread
//! stays covered as long as it lives, after its process stops being a target too.
//! `COVERED_BITS` says which tids are counted, so each thread counts once, and its
//! bucket is worked out again from its own registers at exit.
use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};
use watchdog_common::stack_bucket;

use crate::{
    bits::{atomic_add, bit, fetch_and, fetch_or},
    globals::task_flags,
    maps::{COVERED_BITS, STACKS},
};

/// `PF_EXITING`: set in do_exit before the exit tracepoint.
const PF_EXITING: u32 = 0x4;

/// Whether the task whose saved registers are at `regs` may be followed: false means
/// certainly not.
#[inline(always)]
pub fn may_be_followed(regs: u64) -> bool {
    match STACKS.get(stack_bucket(regs)) {
        Some(count) => *count != 0,
        None => true,
    }
}

/// The address of `task`'s saved user registers (`task_pt_regs`): the same address
/// sys_enter and sys_exit get for its syscalls.
#[inline(always)]
pub fn regs_of(task: *const u8) -> u64 {
    let regs: u64 = unsafe { bpf_task_pt_regs(task as *mut _) } as u64;
    // The verifier types the helper's result as a pointer, which takes no shift: its
    // value is copied out as plain bytes. The read is of this program's own stack, so
    // it does not fail.
    unsafe { bpf_probe_read_kernel(&regs as *const u64) }.unwrap_or(0)
}

/// Add `delta` to the count of the bucket of `regs`.
#[inline(always)]
fn count(regs: u64, delta: u64) {
    if let Some(c) = STACKS.get_ptr_mut(stack_bucket(regs)) {
        atomic_add(c, delta);
    }
}

/// Cover thread `tid`, whose registers are at `regs`, unless it is already; true if
/// this call counted it. A tid beyond the bit array (pid_max raised since load) is
/// counted without a bit, each time and for good: a count too high only sends more
/// syscalls down the exact path, a count too low would lose a thread.
#[inline(always)]
pub fn cover(tid: u32, regs: u64) -> bool {
    let Some(w) = COVERED_BITS.get_ptr_mut(tid >> 6) else {
        count(regs, 1);
        return false;
    };
    let bit = 1u64 << (tid & 63);
    if fetch_or(w, bit) & bit != 0 {
        return false;
    }
    count(regs, 1);
    true
}

/// Take thread `tid`'s cover away, if it had any; `regs` gives its registers' address
/// (asked only then: it costs helper calls, and every exit on the host comes here).
#[inline(always)]
pub fn uncover(tid: u32, regs: impl FnOnce() -> u64) {
    let Some(w) = COVERED_BITS.get_ptr_mut(tid >> 6) else {
        return;
    };
    let bit = 1u64 << (tid & 63);
    if fetch_and(w, !bit) & bit != 0 {
        count(regs(), 1u64.wrapping_neg());
    }
}

/// Whether thread `tid` is covered (with a bit: see `cover`).
#[inline(always)]
pub fn is_covered(tid: u32) -> bool {
    bit(&COVERED_BITS, tid).unwrap_or(false)
}

/// The registers of the task running this program.
#[inline(always)]
pub fn current_regs() -> u64 {
    regs_of(unsafe { bpf_get_current_task_btf() } as *const u8)
}

/// Cover `task` (thread `tid`) from a task iterator, which does not stop the task:
/// one that began to exit may already be past its exit's uncover, so after covering,
/// an exiting task is uncovered again. Whichever of the two takes the bit away undoes
/// the count once (atomic operations are ordered, and PF_EXITING is set before the
/// exit tracepoint runs).
#[inline(always)]
pub fn cover_running(task: *const u8, tid: u32) {
    if task_flags(task) & PF_EXITING != 0 {
        return;
    }
    let regs = regs_of(task);
    // The atomic operation in `cover` keeps the compiler from reusing the first read.
    if cover(tid, regs) && task_flags(task) & PF_EXITING != 0 {
        uncover(tid, || regs);
    }
}
