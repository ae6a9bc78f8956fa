//! The benchmark's floor: empty programs on the same hooks as `syscalls.rs`. Never
//! attached by the daemon; `cargo xtask bench` attaches them alone to measure what any
//! design built on sys_enter/sys_exit must pay before doing anything.
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
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
