//! The programs, one file per hook; each program is a thin wrapper around a `try_*`
//! function.
mod clock;
mod cover_targets;
mod floor;
mod pid_view;
mod printk;
mod process_exit;
mod sched_switch;
mod syscalls;
mod targets;
mod task_signals;

/// `struct bpf_iter__task`, the context of an `iter/task` program: the iterator's meta
/// (whose first field is the seq_file to write to) and the task, NULL once after the
/// last.
#[repr(C)]
struct TaskIterContext {
    meta: *const *mut aya_ebpf::bindings::seq_file,
    task: *const u8,
}
