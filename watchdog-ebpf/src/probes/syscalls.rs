//! raw_syscalls sys_enter/sys_exit: keep the in-flight syscall of each monitored thread.
//!
//! Every syscall on the host runs these, so the path of an unmonitored thread has no
//! helper call and no hash lookup: BTF tracepoints (raw, without copying the six
//! arguments), the ids read straight from the task, and bit arrays for the filter.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use watchdog_common::{InFlight, NOT_IN_SYSCALL, counter};

use crate::{
    bits::{has_slot, is_target, set_bit},
    globals::current_ids,
    maps::{THREAD_BITS, bump},
    slots::{new_record, record_of},
};

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    try_sys_enter(&ctx).unwrap_or(0)
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    try_sys_exit(&ctx).unwrap_or(0)
}

fn try_sys_enter(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let (tgid, tid) = current_ids();
    if !is_target(tgid) {
        return Ok(0);
    }
    // TP_PROTO(struct pt_regs *regs, long id)
    let nr: i64 = ctx.arg(1);
    let now = unsafe { bpf_ktime_get_ns() };
    let arg0 = first_arg(ctx);
    if has_slot(tid)
        && let Some(slot) = record_of(tid)
    {
        // Written only by this thread; the scanner tolerates a torn read (it re-checks
        // enter_ns before it acts).
        unsafe {
            (*slot).nr = nr as u32;
            (*slot).enter_ns = now;
            (*slot).arg0 = arg0;
            (*slot).sleep_ns = 0;
            (*slot).switch_ns = now;
            (*slot).sched_state = 0;
            (*slot).on_cpu = 1;
        }
        return Ok(0);
    }
    let entry = InFlight {
        tgid,
        nr: nr as u32,
        enter_ns: now,
        arg0,
        last_nr: NOT_IN_SYSCALL,
        tid,
        last_duration_ns: 0,
        completed: 0,
        sleep_ns: 0,
        switch_ns: now,
        sched_state: 0,
        on_cpu: 1,
    };
    if new_record(tid, &entry).is_err() {
        bump(counter::INFLIGHT_FULL);
    } else {
        set_bit(&THREAD_BITS, tid);
    }
    Ok(0)
}

fn try_sys_exit(_ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let (_, tid) = current_ids();
    // Only monitored threads have a slot: the bit says so without a lookup.
    if !has_slot(tid) {
        return Ok(0);
    }
    let Some(slot) = record_of(tid) else {
        return Ok(0);
    };
    let now = unsafe { bpf_ktime_get_ns() };
    unsafe {
        let nr = (*slot).nr;
        if nr != NOT_IN_SYSCALL {
            (*slot).last_nr = nr;
            (*slot).last_duration_ns = now.saturating_sub((*slot).enter_ns);
            (*slot).completed += 1;
            (*slot).nr = NOT_IN_SYSCALL;
        }
    }
    Ok(0)
}

/// First syscall argument, read from the saved user registers (a BTF pointer: a
/// direct load, no helper call).
#[inline(always)]
fn first_arg(ctx: &BtfTracePointContext) -> u64 {
    let regs: *const aya_ebpf::bindings::pt_regs = ctx.arg(0);
    if regs.is_null() {
        return 0;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    return unsafe { (*regs).rdi } as u64;
    // arm64 keeps the original x0 apart, since x0 is overwritten by the return value.
    #[cfg(bpf_target_arch = "aarch64")]
    return unsafe { (*regs).orig_x0 } as u64;
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    0
}
