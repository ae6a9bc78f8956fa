//! Targets by name and by cgroup: a process that execs a watched program, or execs
//! inside a watched cgroup, becomes a target here in the kernel, so its first syscall
//! is already measured; processes such targets fork are reported to userspace. Exec
//! also keeps the current-task slot right when it changes a thread's id. Fork and exec
//! give threads the cover of the hot path's first test (see `stacks`).
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use watchdog_common::{RecordKind, TARGET_FOLLOW_FORKS, Target, layout};

use crate::{
    bits::{is_target, set_bit},
    current::forget_tasks,
    events::send_task_event,
    globals::{field_offset, task_tgid, task_tid},
    maps::{CGROUPS, COMMS, EXEC_BITS, TARGETS},
    slots::forget_thread,
    stacks::{cover, current_regs, is_covered, regs_of, uncover},
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    // Runs in the exec'ing task, after the new program's comm is set.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // A non-leader thread that execs takes the leader's pid: the current-task cache
    // must forget its old ids, and its old id's record would wait for an exit that
    // never comes (the old leader's exit was its own), so it goes now; the execve in
    // flight ends under the new id.
    forget_tasks();
    if let Some(off) = field_offset(layout::EXEC_OLD_PID)
        && let Ok(old) = unsafe { ctx.read_at::<i32>(off) }
        && old as u32 != tid
    {
        forget_thread(old as u32);
        // Its cover moves with its id (its stack stays its own).
        if is_covered(old as u32) {
            let regs = current_regs();
            uncover(old as u32, || regs);
            cover(tid, regs);
        }
    }
    if TARGETS.get_ptr(tgid).is_some() {
        return 0;
    }
    // Each check in a function of its own: inlined together, LLVM ORs the two map
    // pointers, which the verifier rejects ("pointer |= pointer").
    if !(comm_watched() || cgroup_watched()) {
        return 0;
    }
    let target = Target {
        flags: TARGET_FOLLOW_FORKS,
    };
    if TARGETS.insert(tgid, target, 0).is_ok() {
        set_bit(&EXEC_BITS, tgid);
        // exec left it the only thread of its process.
        cover(tid, current_regs());
        send_task_event(RecordKind::NewTarget, tgid, 0, 0);
    }
    0
}

#[inline(never)]
fn comm_watched() -> bool {
    match bpf_get_current_comm() {
        Ok(comm) => COMMS.get_ptr(comm).is_some(),
        Err(_) => false,
    }
}

#[inline(never)]
fn cgroup_watched() -> bool {
    CGROUPS
        .get_ptr(unsafe { bpf_get_current_cgroup_id() })
        .is_some()
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    // Runs in the parent.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let follows = match TARGETS.get_ptr(tgid) {
        Some(t) => (unsafe { (*t).flags } & TARGET_FOLLOW_FORKS) != 0,
        None => false,
    };
    if !follows {
        return 0;
    }
    if let Some(off) = field_offset(layout::FORK_CHILD_PID)
        && let Ok(child) = unsafe { ctx.read_at::<i32>(off) }
    {
        send_task_event(RecordKind::Forked, child as u32, 0, 0);
    }
    0
}

/// Cover a new thread or process whose parent is covered, or whose process is a
/// target, before it first runs (see `stacks`): threads of targets, children of
/// targets that userspace makes targets once it hears of them, and threads a process
/// starts in the moments before userspace adds it.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn cover_forked(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *parent, struct task_struct *child)
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    if is_covered(task_tid(parent)) || is_target(task_tgid(child)) {
        cover(task_tid(child), regs_of(child));
    }
    0
}
