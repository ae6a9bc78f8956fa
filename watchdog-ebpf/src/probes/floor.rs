//! The benchmark's floor: empty programs on the same hooks as `syscalls.rs`. Never
//! attached by the daemon; `cargo xtask bench` attaches them alone to measure what any
//! design built on sys_enter/sys_exit must pay before doing anything.
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use watchdog_common::CurrentTask;

use crate::{bits::has_slot, current::current_ids, maps::CURRENT};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

// The same, as BTF tracepoints (the kind the syscall probes are): tells the cost of the
// program kind apart from the cost of what the probes do.
#[btf_tracepoint(function = "sys_enter")]
pub fn floor_btf_enter(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_btf_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

// The floor of sched_switch, for the kernel's per-program statistics: the hook and the
// statistics' own clock reads, with nothing done.
#[btf_tracepoint(function = "sched_switch")]
pub fn floor_switch(_ctx: BtfTracePointContext) -> i32 {
    0
}

// The unmonitored path, part by part, for the kernel's per-program statistics: the
// current-task cache alone (the part before the filter's bit tests).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn cache_enter(ctx: RawTracePointContext) -> i32 {
    // Used, so that the lookup is not optimised away.
    i32::from(current_ids(ctx.arg(0)).1 == 0)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn cache_exit(ctx: RawTracePointContext) -> i32 {
    i32::from(current_ids(ctx.arg(0)).1 == 0)
}

// The shape of the lever for the unmonitored path (see BENCHMARKS.md): the cache keyed
// by registers alone, without the global epoch's lookup, and one bit test. Not exact
// as it stands (nothing voids an entry when its task exits): for measuring only.
#[inline(always)]
fn lean_tid(regs: u64) -> u32 {
    let Some(cur) = CURRENT.get_ptr_mut(0) else {
        return 0;
    };
    unsafe {
        if (*cur).regs == regs {
            return (*cur).tid;
        }
        let pid_tgid = bpf_get_current_pid_tgid();
        *cur = CurrentTask {
            regs,
            epoch: 0,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
        };
        pid_tgid as u32
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn lean_enter(ctx: RawTracePointContext) -> i32 {
    i32::from(has_slot(lean_tid(ctx.arg(0))))
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn lean_exit(ctx: RawTracePointContext) -> i32 {
    i32::from(has_slot(lean_tid(ctx.arg(0))))
}
