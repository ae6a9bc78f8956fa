//! sched:sched_switch: how a monitored thread spends its syscall, on a CPU or asleep,
//! and in which state it went to sleep (S, D, stopped, traced).
//!
//! Fires on every context switch on the host; for threads without an in-flight slot
//! (unmonitored) it costs two bit tests and nothing else.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use watchdog_common::{NOT_IN_SYSCALL, layout, sched};

use crate::{bits::has_slot, globals::field_offset, slots::record_of};

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    try_sched_switch(&ctx).unwrap_or(0)
}

fn read<T>(ctx: &TracePointContext, index: u32) -> Result<T, i32> {
    let off = field_offset(index).ok_or(0)?;
    unsafe { ctx.read_at::<T>(off) }
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<u32, i32> {
    // Each side on its own: comparing both lookups at once lets LLVM OR the two map
    // pointers together, which the verifier rejects ("pointer |= pointer").
    let prev = read::<i32>(ctx, layout::SWITCH_PREV_PID)? as u32;
    if has_slot(prev)
        && let Some(slot) = record_of(prev)
    {
        let state = read::<i64>(ctx, layout::SWITCH_PREV_STATE).unwrap_or(0) as u32;
        let now = unsafe { bpf_ktime_get_ns() };
        // Written only here and by the thread itself, which is not running now.
        unsafe {
            (*slot).on_cpu = 0;
            (*slot).sched_state = state;
            (*slot).switch_ns = now;
        }
    }
    let next = read::<i32>(ctx, layout::SWITCH_NEXT_PID)? as u32;
    if has_slot(next)
        && let Some(slot) = record_of(next)
    {
        let now = unsafe { bpf_ktime_get_ns() };
        unsafe {
            let slept = (*slot).on_cpu == 0 && (*slot).sched_state & sched::SLEEP_MASK != 0;
            if slept && (*slot).nr != NOT_IN_SYSCALL && now > (*slot).switch_ns {
                (*slot).sleep_ns += now - (*slot).switch_ns;
            }
            (*slot).on_cpu = 1;
            (*slot).sched_state = 0;
            (*slot).switch_ns = now;
        }
    }
    Ok(0)
}
