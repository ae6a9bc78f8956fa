//! The two clocks read together: the hot path stamps records with `jiffies_64` (an
//! inlined load), and the daemon, which judges in CLOCK_MONOTONIC time, runs this
//! program on demand (BPF_PROG_TEST_RUN) to learn how the two relate. Never attached.
use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use watchdog_common::ClockSample;

use crate::maps::CLOCK;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn clock_sample(_ctx: RawTracePointContext) -> i32 {
    if let Some(out) = CLOCK.get_ptr_mut(0) {
        let jiffies = unsafe { bpf_jiffies64() };
        let ns = unsafe { bpf_ktime_get_ns() };
        unsafe { *out = ClockSample { jiffies, ns } };
    }
    0
}
