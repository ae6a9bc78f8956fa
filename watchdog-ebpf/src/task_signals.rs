//! Structured kernel signals about tasks, beside the printk text: the hung-task
//! detector's finding (even after hung_task_warnings is used up), the OOM killer's
//! victim, and fatal signals generated for monitored threads.
//!
//! Record layouts differ across kernels, so field offsets are read-only globals that
//! userspace sets, from tracefs format files, before loading.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use watchdog_common::{EventHeader, TaskSignal, counter, kind, layout};

use crate::maps::{EVENTS, bump, field_offset, is_monitored_thread, is_target, record_of};

/// Signals whose default action kills the process (and dumps core for most).
const SIGILL: i32 = 4;
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;

/// The process of thread `tid`, if it is a monitored one's.
fn monitored_tgid(tid: u32) -> u32 {
    if let Some(slot) = record_of(tid) {
        return unsafe { (*slot).tgid };
    }
    if is_target(tid) { tid } else { 0 }
}

pub fn emit(kind: u32, target: u32, sig: i32, code: i32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = TaskSignal {
        header: EventHeader {
            kind,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            _pad0: 0,
            ts_ns: unsafe { bpf_ktime_get_ns() },
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        },
        target,
        sig,
        code,
        target_tgid: monitored_tgid(target),
    };
    if EVENTS.output::<TaskSignal>(&ev, 0).is_err() {
        bump(counter::LOST_EVENTS);
    }
}

fn read_i32(ctx: &TracePointContext, index: u32) -> Result<i32, i32> {
    let off = field_offset(index).ok_or(0)?;
    unsafe { ctx.read_at::<i32>(off) }
}

#[tracepoint(category = "sched", name = "sched_process_hang")]
pub fn sched_process_hang(ctx: TracePointContext) -> u32 {
    // Rare (one per hung task per scan): every one goes up; userspace attributes it.
    if let Ok(pid) = read_i32(&ctx, layout::HANG_PID) {
        emit(kind::HANG, pid as u32, 0, 0);
    }
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    if let Ok(pid) = read_i32(&ctx, layout::OOM_PID) {
        emit(kind::OOM_VICTIM, pid as u32, 0, 0);
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
    if !matches!(sig, SIGILL | SIGABRT | SIGBUS | SIGFPE | SIGKILL | SIGSEGV) {
        return Ok(0);
    }
    let target = read_i32(ctx, layout::SIG_PID)? as u32;
    if !is_monitored_thread(target) {
        return Ok(0);
    }
    let code = read_i32(ctx, layout::SIG_CODE).unwrap_or(0);
    emit(kind::SIGNAL, target, sig, code);
    Ok(0)
}
