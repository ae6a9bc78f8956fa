//! sched:sched_process_exit: forget a monitored thread that exited, and say so.
//!
//! Fires once per thread, in the exiting thread's context. A thread that died inside a
//! syscall (an oops kills it through make_task_dead) never reaches sys_exit, so this is
//! where its in-flight slot is removed.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use watchdog_common::{EXIT_GROUP_DEAD, ExitEvent, RecordKind, counter, layout};

use crate::{
    bits::{clear_bit, is_target},
    current::forget_tasks,
    events::header,
    globals::field_offset,
    maps::{EVENTS, EXEC_BITS, bump},
    slots::forget_thread,
    stacks::{current_regs, uncover},
};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_sched_process_exit(&ctx).unwrap_or(0)
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<u32, i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Its stack, and so its registers' address, may go to a new task.
    forget_tasks();
    uncover(tid, current_regs);
    // Any thread with a slot, target or not any more (a reload may have let it go).
    forget_thread(tid);
    if !is_target(tgid) {
        return Ok(0);
    }
    // Whether the whole process is gone: the record's group_dead where the kernel has it
    // (5.x+), else the thread-group leader's exit as the best guess.
    let group_dead = match field_offset(layout::EXIT_GROUP_DEAD) {
        Some(off) => unsafe { ctx.read_at::<u8>(off) }.unwrap_or(0) != 0,
        None => tid == tgid,
    };
    if group_dead {
        clear_bit(&EXEC_BITS, tgid);
    }
    let event = ExitEvent {
        header: header(RecordKind::Exit),
        flags: if group_dead { EXIT_GROUP_DEAD } else { 0 },
        _pad0: 0,
    };
    if EVENTS.output::<ExitEvent>(&event, 0).is_err() {
        bump(counter::LOST_EVENTS);
    }
    Ok(0)
}
