//! The benchmark's floor: empty programs on the same hooks as `syscalls.rs`. Never
//! attached by the daemon; `cargo xtask bench` attaches them alone to measure what any
//! design built on sys_enter/sys_exit must pay before doing anything.
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    bits::has_slot,
    current::current_ids,
    maps::{CURRENT, THREAD_BITS},
};

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
// current-task cache alone (which the unmonitored path paid before the stack test, and
// the exact path still pays).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn cache_enter(ctx: RawTracePointContext) -> i32 {
    // Used, so that the lookup is not optimised away.
    i32::from(current_ids(ctx.arg(0)).1 == 0)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn cache_exit(ctx: RawTracePointContext) -> i32 {
    i32::from(current_ids(ctx.arg(0)).1 == 0)
}

// The shape of the unmonitored path on a kernel that inlines `bpf_get_current_task()`
// (patches posted for x86-64, not in this project's kernels, turn it into a per-CPU
// address move and a load, the sequence the verifier already emits for a PERCPU_ARRAY
// lookup): a per-CPU load, a load whose address depends on it (for `task->tgid`), and
// one bit test on the id it gives. For measuring only: the id is not the current task's.
#[inline(always)]
fn inlined_current_id() -> u32 {
    let Some(cur) = CURRENT.get_ptr(0) else {
        return 0;
    };
    let task = unsafe { (*cur).tid };
    match THREAD_BITS.get(task >> 6) {
        Some(w) => (*w as u32) ^ task,
        None => 0,
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn inlined_enter(_ctx: RawTracePointContext) -> i32 {
    i32::from(has_slot(inlined_current_id()))
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn inlined_exit(_ctx: RawTracePointContext) -> i32 {
    i32::from(has_slot(inlined_current_id()))
}

// The least a filter can do: one bit test keyed by the registers' address, on a plain
// global (no map lookup to inline, so no key on the stack and no bounds check beyond a
// mask). For measuring only.
#[unsafe(no_mangle)]
static mut BENCH_BITS: [u64; 512] = [0; 512];

#[inline(always)]
fn regs_global_bit(regs: u64) -> bool {
    let bit = (regs >> 14) as usize;
    let w = unsafe { core::ptr::read_volatile(&raw const BENCH_BITS[(bit >> 6) & 511]) };
    w & (1 << (bit & 63)) != 0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn least_enter(ctx: RawTracePointContext) -> i32 {
    i32::from(regs_global_bit(ctx.arg(0)))
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn least_exit(ctx: RawTracePointContext) -> i32 {
    i32::from(regs_global_bit(ctx.arg(0)))
}
