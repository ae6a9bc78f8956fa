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
