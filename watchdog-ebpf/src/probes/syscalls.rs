//! raw_syscalls sys_enter/sys_exit: keep the in-flight syscall of each monitored thread.
//!
//! Every syscall on the host runs these, so nearly all stop after one load: the count
//! of covered threads in the bucket of the task's kernel stack (`stacks`), zero for a
//! task we do not follow. Past it, they make no helper call while a CPU runs one task:
//! raw tracepoints (cheaper than BTF ones here, and the syscall number is a plain
//! argument), the current task from a per-CPU entry keyed by its registers
//! (`current`), bit arrays for the filter, and `bpf_jiffies64()` for the clock, which
//! the verifier inlines into a load of `jiffies`. The first argument of the syscall is not kept: the daemon reads
//! it from /proc when a verdict needs it (a long read: on which fd).
use aya_ebpf::{helpers::bpf_jiffies64, macros::raw_tracepoint, programs::RawTracePointContext};
use watchdog_common::{InFlight, NOT_IN_SYSCALL, counter};

use crate::{
    bits::{has_slot, is_target, set_bit},
    current::current_ids,
    maps::{THREAD_BITS, bump},
    slots::{new_record, record_of},
    stacks::may_be_followed,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    try_sys_enter(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    try_sys_exit(&ctx);
    0
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) {
    // TP_PROTO(struct pt_regs *regs, long id)
    let regs = ctx.arg(0);
    if !may_be_followed(regs) {
        return;
    }
    let (tgid, tid) = current_ids(regs);
    if !is_target(tgid) {
        return;
    }
    let nr: i64 = ctx.arg(1);
    let now = unsafe { bpf_jiffies64() };
    if has_slot(tid)
        && let Some(slot) = record_of(tid)
    {
        // Written only by this thread; the scanner tolerates a torn read (it re-checks
        // enter_jiffies before it acts).
        unsafe {
            (*slot).nr = nr as u32;
            (*slot).enter_jiffies = now;
            (*slot).sleep_jiffies = 0;
            (*slot).switch_jiffies = now;
            (*slot).sched_state = 0;
            (*slot).on_cpu = 1;
        }
        return;
    }
    let entry = InFlight {
        tgid,
        nr: nr as u32,
        enter_jiffies: now,
        last_nr: NOT_IN_SYSCALL,
        tid,
        last_jiffies: 0,
        completed: 0,
        sleep_jiffies: 0,
        switch_jiffies: now,
        sched_state: 0,
        on_cpu: 1,
    };
    if new_record(tid, &entry).is_err() {
        bump(counter::INFLIGHT_FULL);
    } else {
        set_bit(&THREAD_BITS, tid);
    }
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs = ctx.arg(0);
    if !may_be_followed(regs) {
        return;
    }
    let (_, tid) = current_ids(regs);
    // Only monitored threads have a slot: the bit says so without a lookup.
    if !has_slot(tid) {
        return;
    }
    let Some(slot) = record_of(tid) else {
        return;
    };
    let now = unsafe { bpf_jiffies64() };
    unsafe {
        let nr = (*slot).nr;
        if nr != NOT_IN_SYSCALL {
            (*slot).last_nr = nr;
            (*slot).last_jiffies = now.wrapping_sub((*slot).enter_jiffies);
            (*slot).completed += 1;
            (*slot).nr = NOT_IN_SYSCALL;
        }
    }
}
