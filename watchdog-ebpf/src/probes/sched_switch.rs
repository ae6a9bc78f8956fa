//! sched_switch (a BTF tracepoint: the tasks are at hand as pointers, so their ids and
//! state are plain loads): how a monitored thread spends its syscall, on a CPU or
//! asleep, and in which state it went to sleep (S, D, stopped, traced).
//!
//! Fires on every context switch on the host; for unmonitored threads it costs two
//! bit tests, no helper call.
use aya_ebpf::{helpers::bpf_jiffies64, macros::btf_tracepoint, programs::BtfTracePointContext};
use watchdog_common::{NOT_IN_SYSCALL, sched};

use crate::{
    bits::has_slot,
    globals::{task_state, task_tid},
    slots::record_of,
};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    try_sched_switch(&ctx);
    0
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let next_tid = task_tid(next);
    let prev_tid = task_tid(prev);
    // Each side on its own: comparing both lookups at once lets LLVM OR the two map
    // pointers together, which the verifier rejects ("pointer |= pointer").
    if has_slot(prev_tid)
        && let Some(slot) = record_of(prev_tid)
    {
        // A preempted task is runnable whatever its state says (it may have been
        // preempted on its way to sleep): the sched_switch event reports it running.
        let state = if preempt & 1 != 0 {
            0
        } else {
            task_state(prev)
        };
        let now = unsafe { bpf_jiffies64() };
        // Written only here and by the thread itself, which is not running now.
        unsafe {
            (*slot).on_cpu = 0;
            (*slot).sched_state = state;
            (*slot).switch_jiffies = now;
        }
    }
    if has_slot(next_tid)
        && let Some(slot) = record_of(next_tid)
    {
        let now = unsafe { bpf_jiffies64() };
        unsafe {
            let slept = (*slot).on_cpu == 0 && (*slot).sched_state & sched::RAW_ASLEEP != 0;
            if slept && (*slot).nr != NOT_IN_SYSCALL && now > (*slot).switch_jiffies {
                (*slot).sleep_jiffies += now - (*slot).switch_jiffies;
            }
            (*slot).on_cpu = 1;
            (*slot).sched_state = 0;
            (*slot).switch_jiffies = now;
        }
    }
}
