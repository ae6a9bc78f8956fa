//! The benchmark's floor: empty programs on the same hooks as `syscalls.rs`. Never
//! attached by the daemon; `cargo xtask bench` attaches them alone to measure what any
//! design built on sys_enter/sys_exit must pay before doing anything.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_exit(_ctx: RawTracePointContext) -> i32 {
    0
}
