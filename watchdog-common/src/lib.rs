//! Records shared by the kernel side (`watchdog-ebpf`) and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding, so both sides agree on the layout
//! byte for byte; the `const` asserts below fail the build if a field moves.
#![cfg_attr(target_arch = "bpf", no_std)]

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Bytes of printk text carried per message. Kernel lines are at most ~1 KiB
/// (`PRINTKRB_RECORD_MAX`), but every report line we classify fits well within this;
/// longer lines are cut and flagged with [`PRINTK_TRUNCATED`].
pub const MSG_MAX: usize = 512;

/// `InFlight::nr` when the thread is not inside a syscall.
pub const NOT_IN_SYSCALL: u32 = u32::MAX;

/// Map names (at most 15 bytes: the kernel truncates longer ones).
pub mod maps {
    /// tgid -> [`super::Target`]: processes whose threads are measured.
    pub const TARGETS: &str = "TARGETS";
    /// tid -> [`super::InFlight`]: the current syscall of each monitored thread.
    pub const INFLIGHT: &str = "INFLIGHT";
    /// Ring buffer of [`super::PrintkEvent`] and [`super::ExitEvent`] records.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU u64 counters, indexed by [`super::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// comm ([u8; 16], NUL-padded) -> 1: a process that execs a program of that name
    /// becomes a target.
    pub const COMMS: &str = "COMMS";
    /// cgroup v2 id -> 1: a process that execs inside that cgroup becomes a target.
    pub const CGROUPS: &str = "CGROUPS";
    /// u64 words, one bit per tgid: targets userspace added (userspace writes it).
    pub const TARGET_BITS: &str = "TARGET_BITS";
    /// u64 words, one bit per tgid: targets made at exec (the kernel side writes it).
    pub const EXEC_BITS: &str = "EXEC_BITS";
    /// u64 words, one bit per tid: threads with an in-flight slot (kernel side).
    pub const THREAD_BITS: &str = "THREAD_BITS";
    /// [`super::InFlight`] records in a direct-mapped array (thread tid in slot
    /// `tid & mask`), memory-mapped by the daemon; INFLIGHT takes a thread whose slot is
    /// another's.
    pub const SLOTS: &str = "SLOTS";
    /// The bit arrays, which the loader sizes to the kernel's pid_max.
    pub const BIT_ARRAYS: [&str; 3] = [TARGET_BITS, EXEC_BITS, THREAD_BITS];
}

/// Globals of the kernel side holding `task_struct` field offsets, set by the loader
/// from the kernel's BTF: (global, field).
/// Entries of SLOTS unless the loader is told otherwise (a power of two).
pub const DEFAULT_SLOTS: u32 = 4096;

/// Global of the kernel side holding SLOTS' index mask (entries - 1), set by the loader.
pub const SLOT_MASK_GLOBAL: &str = "WD_SLOT_MASK";

pub const TASK_FIELD_GLOBALS: [(&str, &str); 2] =
    [("WD_TASK_PID", "pid"), ("WD_TASK_TGID", "tgid")];

/// `Target::flags`: the target was found by name or cgroup, so processes it forks are
/// targets too.
pub const TARGET_FOLLOW_FORKS: u32 = 1;

/// Field offsets of tracepoint records on the running kernel: userspace reads them from
/// tracefs and sets them as read-only globals before loading, so the programs read a
/// constant, not a map, on paths as hot as every context switch. Indices name the
/// fields; [`layout::GLOBALS`] names the globals. An offset of 0 means the field is
/// absent on this kernel (offset 0 is the common header, never a field we read).
pub mod layout {
    /// sched_process_exit: `bool group_dead` (5.x+? absent on older kernels).
    pub const EXIT_GROUP_DEAD: u32 = 0;
    /// sched_process_hang: `pid_t pid`.
    pub const HANG_PID: u32 = 1;
    /// oom/mark_victim: `int pid`.
    pub const OOM_PID: u32 = 2;
    /// signal/signal_generate: `int sig`, `int code`, `pid_t pid` (the target).
    pub const SIG_SIG: u32 = 3;
    pub const SIG_CODE: u32 = 4;
    pub const SIG_PID: u32 = 5;
    /// sched/sched_switch: `pid_t prev_pid`, `long prev_state`, `pid_t next_pid`.
    pub const SWITCH_PREV_PID: u32 = 6;
    pub const SWITCH_PREV_STATE: u32 = 7;
    pub const SWITCH_NEXT_PID: u32 = 8;
    /// sched/sched_process_fork: `pid_t child_pid`.
    pub const FORK_CHILD_PID: u32 = 9;
    pub const COUNT: u32 = 10;
    /// The kernel side's global of each index, in index order.
    pub const GLOBALS: [&str; COUNT as usize] = [
        "WD_EXIT_GROUP_DEAD",
        "WD_HANG_PID",
        "WD_OOM_PID",
        "WD_SIG_SIG",
        "WD_SIG_CODE",
        "WD_SIG_PID",
        "WD_SWITCH_PREV_PID",
        "WD_SWITCH_PREV_STATE",
        "WD_SWITCH_NEXT_PID",
        "WD_FORK_CHILD_PID",
    ];
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring-buffer records that could not be reserved (ring full): events lost.
    pub const LOST_EVENTS: u32 = 0;
    /// sys_enter of a monitored thread that found the INFLIGHT map full.
    pub const INFLIGHT_FULL: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// Value of the TARGETS map: why a process is monitored. Reserved for per-target
/// settings; the kernel only tests for presence today.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub flags: u32,
}

/// The syscall a monitored thread is in, or was last in. Written only by that thread's
/// own sys_enter/sys_exit, read by the daemon's scanner.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Process the thread belongs to.
    pub tgid: u32,
    /// Syscall number in flight, or [`NOT_IN_SYSCALL`].
    pub nr: u32,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) time the in-flight syscall started.
    pub enter_ns: u64,
    /// First syscall argument (an fd for read/recv: tells a pipe read from a file read).
    pub arg0: u64,
    /// Number of the last syscall that returned, or [`NOT_IN_SYSCALL`] if none yet.
    pub last_nr: u32,
    /// The thread this record belongs to; in the SLOTS array, 0 marks a free slot.
    pub tid: u32,
    /// How long the last returned syscall took.
    pub last_duration_ns: u64,
    /// Syscalls that returned since the thread was first seen.
    pub completed: u64,
    /// Time the in-flight syscall spent switched out asleep (not preempted), up to the
    /// last switch-in: what is left of its elapsed time ran (or was runnable) on a CPU.
    pub sleep_ns: u64,
    /// Time of the thread's last switch in or out (CLOCK_MONOTONIC).
    pub switch_ns: u64,
    /// `prev_state` of sched_switch at the last switch-out (see [`sched`]).
    pub sched_state: u32,
    /// 1 while the thread is on a CPU.
    pub on_cpu: u32,
}

/// `prev_state` bits of sched_switch (the kernel's TASK_REPORT encoding).
pub mod sched {
    pub const INTERRUPTIBLE: u32 = 0x01;
    pub const UNINTERRUPTIBLE: u32 = 0x02;
    pub const STOPPED: u32 = 0x04;
    pub const TRACED: u32 = 0x08;
    /// Bits that mean the task went to sleep (or stopped); none of them set means it
    /// was preempted while runnable.
    pub const SLEEP_MASK: u32 = 0xff;
}

/// Kinds of ring-buffer record; the first u32 of every record.
pub mod kind {
    pub const PRINTK: u32 = 1;
    pub const EXIT: u32 = 2;
    /// The kernel's hung-task detector found a task blocked in D state.
    pub const HANG: u32 = 3;
    /// The OOM killer chose a victim.
    pub const OOM_VICTIM: u32 = 4;
    /// A fatal-by-default signal was generated for a thread of a monitored process.
    pub const SIGNAL: u32 = 5;
    /// A process exec'd with a watched comm or in a watched cgroup: now a target
    /// (`TaskSignal::target` = its tgid; the kernel side added it already).
    pub const NEW_TARGET: u32 = 6;
    /// A target that follows forks forked `TaskSignal::target` (a thread or a process:
    /// userspace tells).
    pub const FORKED: u32 = 7;
}

/// A kernel signal about a task (hang, OOM victim, fatal signal). The header's task is
/// the one in whose context it fired (khungtaskd, the allocating task, the sender).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSignal {
    pub header: EventHeader,
    /// The task it is about (a thread id; the OOM victim's is a process id).
    pub target: u32,
    /// Signal number (SIGNAL only).
    pub sig: i32,
    /// si_code (SIGNAL only): SEGV_MAPERR, SI_USER, ...
    pub code: i32,
    /// The process `target` belongs to, as the kernel side knew it (0 if it did not):
    /// by the time userspace reads the event, a dying thread may be gone from /proc.
    pub target_tgid: u32,
}

/// Common head of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Process (thread group) of the task in whose context the event fired.
    pub tgid: u32,
    /// Thread id of that task.
    pub tid: u32,
    pub _pad0: u32,
    /// CLOCK_MONOTONIC time of the event.
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// `PrintkEvent::flags`: the message was longer than [`MSG_MAX`] and was cut.
pub const PRINTK_TRUNCATED: u32 = 1;

/// One kernel message as printed, with the task that printed it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PrintkEvent {
    pub header: EventHeader,
    /// Bytes of `msg` that are text (no NUL).
    pub len: u32,
    pub flags: u32,
    pub msg: [u8; MSG_MAX],
}

/// `ExitEvent::flags`: the whole process is gone (the last thread exited).
pub const EXIT_GROUP_DEAD: u32 = 1;

/// A thread of a monitored process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub flags: u32,
    pub _pad0: u32,
}

// Layout guards: these records cross the kernel/user boundary.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Target>() == 4);
    assert!(size_of::<InFlight>() == 72);
    assert!(offset_of!(InFlight, sleep_ns) == 48);
    assert!(offset_of!(InFlight, enter_ns) == 8);
    assert!(offset_of!(InFlight, last_duration_ns) == 32);
    assert!(size_of::<EventHeader>() == 40);
    assert!(offset_of!(EventHeader, comm) == 24);
    assert!(offset_of!(PrintkEvent, len) == 40);
    assert!(offset_of!(PrintkEvent, msg) == 48);
    assert!(size_of::<PrintkEvent>() == 48 + MSG_MAX);
    assert!(size_of::<ExitEvent>() == 48);
    assert!(size_of::<TaskSignal>() == 56);
};

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, repr(C), every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for Target {}
    unsafe impl aya::Pod for InFlight {}
}
