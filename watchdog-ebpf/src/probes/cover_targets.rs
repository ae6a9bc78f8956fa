//! cover_targets: a task iterator the daemon runs after it adds a running process as a
//! target, to cover the threads that process already has (see `stacks`). Threads it
//! forks from then on are covered at fork. On demand, never on a hot path.
use core::ffi::c_void;

use super::TaskIterContext;
use crate::{
    bits::is_target,
    globals::{task_tgid, task_tid},
    stacks::cover_running,
};

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
