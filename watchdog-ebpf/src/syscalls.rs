//! raw_syscalls sys_enter/sys_exit: keep the in-flight syscall of each monitored thread.
//!
//! Raw tracepoints rather than the classic ones: they skip copying the six arguments,
//! which every syscall on the host would otherwise pay for.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use watchdog_common::{InFlight, NOT_IN_SYSCALL, counter};

use crate::maps::{INFLIGHT, bump, is_target};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    try_sys_enter(&ctx).unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    try_sys_exit(&ctx).unwrap_or(0)
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let tid = pid_tgid as u32;
    // TP_PROTO(struct pt_regs *regs, long id)
    let nr: i64 = ctx.arg(1);
    let now = unsafe { bpf_ktime_get_ns() };
    let arg0 = first_arg(ctx);
    if let Some(slot) = INFLIGHT.get_ptr_mut(tid) {
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
        _pad0: 0,
        last_duration_ns: 0,
        completed: 0,
        sleep_ns: 0,
        switch_ns: now,
        sched_state: 0,
        on_cpu: 1,
    };
    if INFLIGHT.insert(tid, entry, 0).is_err() {
        bump(counter::INFLIGHT_FULL);
    }
    Ok(0)
}

fn try_sys_exit(_ctx: &RawTracePointContext) -> Result<i32, i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // Only monitored threads have a slot, so this one lookup is also the filter.
    let Some(slot) = INFLIGHT.get_ptr_mut(tid) else {
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

/// First syscall argument, read from the saved user registers.
#[inline(always)]
fn first_arg(ctx: &RawTracePointContext) -> u64 {
    let regs: *const aya_ebpf::bindings::pt_regs = ctx.arg(0);
    if regs.is_null() {
        return 0;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    let field = unsafe { core::ptr::addr_of!((*regs).rdi) };
    // arm64 keeps the original x0 apart, since x0 is overwritten by the return value.
    #[cfg(bpf_target_arch = "aarch64")]
    let field = unsafe { core::ptr::addr_of!((*regs).orig_x0) };
    #[cfg(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64"))]
    {
        let _ = ctx.as_ptr();
        unsafe {
            aya_ebpf::helpers::bpf_probe_read_kernel(field)
                .map(|v| v as u64)
                .unwrap_or(0)
        }
    }
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    {
        let _ = (ctx.as_ptr(), regs);
        0
    }
}
