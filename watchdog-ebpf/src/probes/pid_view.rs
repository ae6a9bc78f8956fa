//! pid_view: a task iterator, run by a daemon that lives in a pid namespace of its own
//! (a container, a systemd-nspawn machine). The kernel side speaks the initial
//! namespace's ids, while such a daemon takes `--pid` and reads `/proc` in its own; for
//! each task, this reports both. Read on demand, never on a hot path: helper calls are
//! fine here.
//!
//! The kernel walks the reader's namespace (bpf_iter_task iterates the pids of the
//! namespace that opened the iterator), so every task is visible to the daemon; its
//! local id is the `struct pid` number at the reader's level, which is checked to be in
//! the reader's namespace before it is reported.
use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_seq_write},
};
use watchdog_common::{MAX_PID_NS_LEVEL, PidPair};

use super::TaskIterContext;
use crate::globals::{PidOffsets, pid_offsets, task_tid};

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn pid_view(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const TaskIterContext;
    let (meta, task) = unsafe { ((*ctx).meta, (*ctx).task) };
    if task.is_null() {
        return 0;
    }
    let off = pid_offsets();
    let reader = unsafe { bpf_get_current_task() } as *const u8;
    let Some((level, ns)) = own_level(reader, &off) else {
        return 0;
    };
    let local_tid = match number_at(task, level, &off) {
        Some((nr, task_ns)) if task_ns == ns => nr,
        _ => 0,
    };
    let Ok(global_tgid) = (unsafe { bpf_probe_read_kernel(task.add(off.tgid) as *const u32) })
    else {
        return 0;
    };
    let pair = PidPair {
        global_tid: task_tid(task),
        global_tgid,
        local_tid,
    };
    let seq = unsafe { *meta };
    unsafe {
        bpf_seq_write(
            seq,
            &pair as *const PidPair as *const c_void,
            size_of::<PidPair>() as u32,
        );
    }
    0
}

/// A task's `struct pid`, and that pid's level (how deep its namespace is).
#[inline(always)]
fn pid_of(task: *const u8, off: &PidOffsets) -> Option<(*const u8, u32)> {
    let pid =
        unsafe { bpf_probe_read_kernel(task.add(off.thread_pid) as *const *const u8) }.ok()?;
    if pid.is_null() {
        return None;
    }
    let level = unsafe { bpf_probe_read_kernel(pid.add(off.level) as *const u32) }.ok()?;
    (level < MAX_PID_NS_LEVEL).then_some((pid, level))
}

/// `pid->numbers[level]`: the number and namespace at `level`. `struct upid` is
/// `{ int nr; struct pid_namespace *ns; }`: `ns` is its last field, a pointer.
#[inline(always)]
fn upid_at(pid: *const u8, level: u32, off: &PidOffsets) -> Option<(u32, u64)> {
    let upid_size = off.upid_ns + size_of::<u64>();
    let upid = unsafe { pid.add(off.numbers + level as usize * upid_size) };
    let nr = unsafe { bpf_probe_read_kernel(upid as *const u32) }.ok()?;
    let ns = unsafe { bpf_probe_read_kernel(upid.add(off.upid_ns) as *const u64) }.ok()?;
    Some((nr, ns))
}

/// The reader's level and namespace (its deepest: the one it sees `/proc` in).
#[inline(always)]
fn own_level(reader: *const u8, off: &PidOffsets) -> Option<(u32, u64)> {
    let (pid, level) = pid_of(reader, off)?;
    let (_, ns) = upid_at(pid, level, off)?;
    Some((level, ns))
}

/// A task's number and namespace at `level`, if its namespace is that deep.
#[inline(always)]
fn number_at(task: *const u8, level: u32, off: &PidOffsets) -> Option<(u32, u64)> {
    let (pid, deepest) = pid_of(task, off)?;
    if level > deepest {
        return None;
    }
    upid_at(pid, level, off)
}
