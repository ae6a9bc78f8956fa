//! cover_targets: a task iterator the daemon runs after it adds a running process as a
//! target, to cover the threads that process already has (see `stacks`). Threads it
//! forks from then on are covered at fork. On demand, never on a hot path.
use core::ffi::c_void;

use crate::{
    bits::is_target,
    globals::{task_tgid, task_tid},
    stacks::cover_running,
};

/// `struct bpf_iter__task`: the iterator's meta and the task, NULL once after the last.
#[repr(C)]
struct TaskIterContext {
    meta: *const c_void,
    task: *const u8,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn cover_targets(ctx: *mut c_void) -> i32 {
    let task = unsafe { (*(ctx as *const TaskIterContext)).task };
    if task.is_null() || !is_target(task_tgid(task)) {
        return 0;
    }
    cover_running(task, task_tid(task));
    0
}
