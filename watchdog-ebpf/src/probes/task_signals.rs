//! Structured kernel signals about tasks, beside the printk text: the hung-task
//! detector's finding (even after hung_task_warnings is used up), the OOM killer's
//! victim, and fatal signals generated for monitored threads.
//!
//! Record layouts differ across kernels, so field offsets are read-only globals that
//! userspace sets, from tracefs format files, before loading.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watchdog_common::{RecordKind, layout, signal};

use crate::{bits::is_monitored_thread, events::send_task_event, globals::field_offset};

fn read_i32(ctx: &TracePointContext, index: u32) -> Result<i32, i32> {
    let off = field_offset(index).ok_or(0)?;
    unsafe { ctx.read_at::<i32>(off) }
}

#[tracepoint(category = "sched", name = "sched_process_hang")]
pub fn sched_process_hang(ctx: TracePointContext) -> u32 {
    // Rare (one per hung task per scan): every one goes up; userspace attributes it.
    if let Ok(pid) = read_i32(&ctx, layout::HANG_PID) {
        send_task_event(RecordKind::Hang, pid as u32, 0, 0);
    }
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    if let Ok(pid) = read_i32(&ctx, layout::OOM_PID) {
        send_task_event(RecordKind::OomVictim, pid as u32, 0, 0);
    }
    0
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    try_signal_generate(&ctx).unwrap_or(0)
}

fn try_signal_generate(ctx: &TracePointContext) -> Result<u32, i32> {
    let sig = read_i32(ctx, layout::SIG_SIG)?;
    // Signals are frequent host-wide (SIGCHLD, SIGALRM...): only fatal-by-default ones
    // to monitored threads go up.
    if !signal::is_fatal(sig) {
        return Ok(0);
    }
    let target = read_i32(ctx, layout::SIG_PID)? as u32;
    if !is_monitored_thread(target) {
        return Ok(0);
    }
    let code = read_i32(ctx, layout::SIG_CODE).unwrap_or(0);
    send_task_event(RecordKind::Signal, target, sig, code);
    Ok(0)
}
