//! Records shared by the kernel side (`watchdog-ebpf`) and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding, so both sides agree on the layout
//! byte for byte; the `const` asserts below fail the build if a field moves.
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod gate;

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
    /// One u64: the entries INFLIGHT holds now.
    pub const INFLIGHT_LIVE: &str = "INFLIGHT_LIVE";
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
    /// u64 counts, [`super::STACK_BUCKETS`] of them: how many covered threads have a
    /// kernel stack in each bucket (see [`super::stack_bucket`]).
    pub const STACKS: &str = "STACKS";
    /// u64 words, one bit per tid: threads counted in STACKS (kernel side).
    pub const COVERED_BITS: &str = "COVERED_BITS";
    /// Per-CPU [`super::CurrentTask`]: the last task to make a syscall on each CPU.
    pub const CURRENT: &str = "CURRENT";
    /// One u64, bumped by every task exit and exec: [`super::CurrentTask`] entries
    /// written before are void.
    pub const TASK_EPOCH: &str = "TASK_EPOCH";
    /// One [`super::ClockSample`], written by the `clock_sample` program.
    pub const CLOCK: &str = "CLOCK";
    /// The bit arrays, which the loader sizes to the kernel's pid_max.
    pub const BIT_ARRAYS: [&str; 4] = [TARGET_BITS, EXEC_BITS, THREAD_BITS, COVERED_BITS];
    /// Every map of the kernel side. It declares each one with a bare `#[map]` under
    /// the same identifier (the map's name is the identifier), and a unit test of the
    /// daemon checks the built object against this list.
    pub const ALL: [&str; 16] = [
        TARGETS,
        INFLIGHT,
        EVENTS,
        COUNTERS,
        COMMS,
        CGROUPS,
        TARGET_BITS,
        EXEC_BITS,
        THREAD_BITS,
        SLOTS,
        CURRENT,
        TASK_EPOCH,
        INFLIGHT_LIVE,
        CLOCK,
        STACKS,
        COVERED_BITS,
    ];
}

/// Buckets of the kernel stacks of covered threads (a power of two; 1 MiB of counts).
pub const STACK_BUCKETS: u32 = 1 << 17;

/// The bucket of the kernel stack whose saved user registers sit at `regs`: the
/// stack's address above 16 KiB. Every 64-bit architecture's kernel stacks are at
/// least 16 KiB and aligned to their size, so two live tasks' registers are in
/// different 16 KiB blocks; which block a task's are in never changes.
#[inline(always)]
pub fn stack_bucket(regs: u64) -> u32 {
    (regs >> 14) as u32 & (STACK_BUCKETS - 1)
}

/// Entries of SLOTS unless the loader is told otherwise (a power of two).
pub const DEFAULT_SLOTS: u32 = 16384;

/// The read-only globals of the kernel side that the loader sets before loading (so
/// the programs read constants): one list, expanded by both sides with a macro of
/// their own, so the names cannot drift apart. Each entry: the global, then what it
/// holds: `slot_mask` (SLOTS' index mask, entries - 1), `task(FIELD)` (the offset of
/// `task_struct.FIELD`, from the kernel's BTF), `pid_view` (offsets of `STRUCT.FIELD`,
/// from the kernel's BTF, for the pid namespace iterator) or `field(INDEX)` (the offset of a
/// tracepoint field, from tracefs; see [`layout`]).
#[macro_export]
macro_rules! with_loader_globals {
    ($m:ident) => {
        $m! {
            slot_mask: WD_SLOT_MASK;
            task: WD_TASK_PID => pid, WD_TASK_STATE => __state, WD_TASK_TGID => tgid,
                WD_TASK_FLAGS => flags;
            pid_view:
                WD_TASK_THREAD_PID => task_struct.thread_pid,
                WD_PID_LEVEL => pid.level,
                WD_PID_NUMBERS => pid.numbers,
                WD_UPID_NS => upid.ns;
            fields:
                /// sched_process_exit: `bool group_dead` (absent on older kernels).
                EXIT_GROUP_DEAD => WD_EXIT_GROUP_DEAD,
                /// sched_process_hang: `pid_t pid`.
                HANG_PID => WD_HANG_PID,
                /// oom/mark_victim: `int pid`.
                OOM_PID => WD_OOM_PID,
                /// signal/signal_generate: `int sig`.
                SIG_SIG => WD_SIG_SIG,
                /// signal/signal_generate: `int code`.
                SIG_CODE => WD_SIG_CODE,
                /// signal/signal_generate: `pid_t pid` (the target).
                SIG_PID => WD_SIG_PID,
                /// sched/sched_process_exec: `pid_t old_pid` (the thread's id before
                /// exec: a non-leader thread's exec takes the leader's).
                EXEC_OLD_PID => WD_EXEC_OLD_PID,
                /// sched/sched_process_fork: `pid_t child_pid`.
                FORK_CHILD_PID => WD_FORK_CHILD_PID,
        }
    };
}

macro_rules! loader_global_names {
    (
        slot_mask: $mask:ident;
        task: $($task:ident => $task_field:ident),*;
        pid_view: $($view:ident => $view_struct:ident . $view_field:ident),*;
        fields: $($(#[$doc:meta])* $field:ident => $global:ident,)*
    ) => {
        /// The global holding SLOTS' index mask (entries - 1).
        pub const SLOT_MASK_GLOBAL: &str = stringify!($mask);

        /// Globals holding `task_struct` field offsets: (global, field).
        pub const TASK_FIELD_GLOBALS: [(&str, &str); [$(stringify!($task)),*].len()] =
            [$((stringify!($task), stringify!($task_field))),*];

        /// Globals holding the offsets the `pid_view` iterator reads (a task's ids and
        /// its `struct pid`'s per-namespace numbers): (global, struct, field). Only a
        /// daemon in a pid namespace of its own loads that program.
        pub const PID_VIEW_GLOBALS: [(&str, &str, &str); [$(stringify!($view)),*].len()] =
            [$((stringify!($view), stringify!($view_struct), stringify!($view_field))),*];

        /// Field offsets of tracepoint records on the running kernel: userspace reads
        /// them from tracefs and sets them as read-only globals before loading, so the
        /// programs read a constant, not a map, on paths as hot as every context switch.
        /// Indices name the fields; [`GLOBALS`] names the globals. An offset of 0 means
        /// the field is absent on this kernel (offset 0 is the common header, never a
        /// field we read).
        pub mod layout {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
            #[repr(u32)]
            enum Index {
                $($field,)*
                COUNT,
            }
            $($(#[$doc])* pub const $field: u32 = Index::$field as u32;)*
            pub const COUNT: u32 = Index::COUNT as u32;
            /// The kernel side's global of each index, in index order.
            pub const GLOBALS: [&str; COUNT as usize] = [$(stringify!($global)),*];
        }
    };
}

with_loader_globals!(loader_global_names);

/// `Target::flags`: the target was found by name or cgroup, so processes it forks are
/// targets too.
pub const TARGET_FOLLOW_FORKS: u32 = 1;

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring-buffer records that could not be reserved (ring full): events lost.
    pub const LOST_EVENTS: u32 = 0;
    /// sys_enter of a monitored thread that found the INFLIGHT map full.
    pub const INFLIGHT_FULL: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// Signals, by number and name: one table for the kernel side (which fatal signals go
/// up), the command line (`--stall-signal`) and the incidents (names in reports). The
/// numbers are the asm-generic ones, which every architecture we build for uses.
pub mod signal {
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGQUIT: i32 = 3;
    pub const SIGILL: i32 = 4;
    pub const SIGTRAP: i32 = 5;
    pub const SIGABRT: i32 = 6;
    pub const SIGBUS: i32 = 7;
    pub const SIGFPE: i32 = 8;
    pub const SIGKILL: i32 = 9;
    pub const SIGUSR1: i32 = 10;
    pub const SIGSEGV: i32 = 11;
    pub const SIGUSR2: i32 = 12;
    pub const SIGPIPE: i32 = 13;
    pub const SIGALRM: i32 = 14;
    pub const SIGTERM: i32 = 15;
    pub const SIGCHLD: i32 = 17;
    pub const SIGCONT: i32 = 18;
    pub const SIGSTOP: i32 = 19;
    pub const SIGSYS: i32 = 31;
    /// The highest real-time signal number.
    pub const MAX: i32 = 64;

    /// Every named signal, with its name without the `SIG` prefix.
    pub const NAMES: [(&str, i32); 19] = [
        ("HUP", SIGHUP),
        ("INT", SIGINT),
        ("QUIT", SIGQUIT),
        ("ILL", SIGILL),
        ("TRAP", SIGTRAP),
        ("ABRT", SIGABRT),
        ("BUS", SIGBUS),
        ("FPE", SIGFPE),
        ("KILL", SIGKILL),
        ("USR1", SIGUSR1),
        ("SEGV", SIGSEGV),
        ("USR2", SIGUSR2),
        ("PIPE", SIGPIPE),
        ("ALRM", SIGALRM),
        ("TERM", SIGTERM),
        ("CHLD", SIGCHLD),
        ("CONT", SIGCONT),
        ("STOP", SIGSTOP),
        ("SYS", SIGSYS),
    ];

    /// Whether `sig`'s default action kills the process because of a fault or an abort
    /// (a crash), or it is SIGKILL: the signals whose generation explains a death that
    /// follows. The kernel side sends only these up.
    #[inline(always)]
    pub const fn is_fatal(sig: i32) -> bool {
        matches!(sig, SIGILL | SIGABRT | SIGBUS | SIGFPE | SIGKILL | SIGSEGV)
    }

    /// The name of `sig` without the `SIG` prefix, if it has one.
    pub fn name(sig: i32) -> Option<&'static str> {
        NAMES.iter().find(|(_, n)| *n == sig).map(|(name, _)| *name)
    }

    /// The number of a signal named with or without the `SIG` prefix.
    pub fn by_name(name: &str) -> Option<i32> {
        let name = name.strip_prefix("SIG").unwrap_or(name);
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, sig)| *sig)
    }
}

/// Value of the TARGETS map: why a process is monitored. Reserved for per-target
/// settings; the kernel only tests for presence today.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub flags: u32,
}

/// The syscall a monitored thread is in, or was last in. Written only by that thread's
/// own sys_enter/sys_exit and by sched_switch, read by the daemon's scanner.
///
/// Times are the kernel's `jiffies_64` (read by `bpf_jiffies64()`, which the verifier
/// inlines into a load: no helper call on the hot path). The daemon turns them into
/// CLOCK_MONOTONIC time with its calibration of the two clocks (`kernel::jiffies`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Process the thread belongs to.
    pub tgid: u32,
    /// Syscall number in flight, or [`NOT_IN_SYSCALL`].
    pub nr: u32,
    /// Jiffy in which the in-flight syscall started.
    pub enter_jiffies: u64,
    /// Number of the last syscall that returned, or [`NOT_IN_SYSCALL`] if none yet.
    pub last_nr: u32,
    /// The thread this record belongs to; in the SLOTS array, 0 marks a free slot.
    pub tid: u32,
    /// Jiffy boundaries the last returned syscall crossed (0: it returned within the
    /// jiffy it started in).
    pub last_jiffies: u64,
    /// Syscalls that returned since the thread was first seen.
    pub completed: u64,
    /// Jiffies the in-flight syscall spent switched out asleep (not preempted), up to
    /// the last switch-in: what is left of its elapsed time ran (or was runnable).
    pub sleep_jiffies: u64,
    /// Jiffy of the thread's last switch in or out.
    pub switch_jiffies: u64,
    /// The thread's raw `task_struct.__state` at its last switch-out, 0 when it was
    /// preempted (see [`sched`]).
    pub sched_state: u32,
    /// 1 while the thread is on a CPU.
    pub on_cpu: u32,
}

/// One CPU's last task to make a syscall on it, keyed by the address of its saved
/// user registers (unique to a live task): read by sys_enter and sys_exit instead of a
/// helper call while the key matches (see `watchdog-ebpf/src/current.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CurrentTask {
    /// The task's `pt_regs` address; 0 in an entry never written.
    pub regs: u64,
    /// `TASK_EPOCH` when written: an exit or exec since voids the entry.
    pub epoch: u64,
    pub tgid: u32,
    pub tid: u32,
}

/// One reading of the kernel's two clocks, taken together by the `clock_sample`
/// program (run on demand by the daemon, never attached).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    /// `jiffies_64`.
    pub jiffies: u64,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns), read just after.
    pub ns: u64,
}

/// One task as the `pid_view` iterator reports it to a daemon in a pid namespace of
/// its own: its ids as the kernel side sees them (the initial namespace's) and as the
/// daemon does. The iterator walks the reader's namespace, so every task it reports is
/// visible there; `local_tid` is 0 only if the kernel's structures said otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidPair {
    pub global_tid: u32,
    pub global_tgid: u32,
    pub local_tid: u32,
}

/// The deepest pid namespace level the kernel allows (`MAX_PID_NS_LEVEL`).
pub const MAX_PID_NS_LEVEL: u32 = 32;

/// Task states: what sched_switch stores (the raw `task_struct.__state` of a thread
/// that went to sleep), and the TASK_REPORT encoding the rest of the daemon speaks,
/// which is what the sched_switch trace event and `ps` show.
pub mod sched {
    pub const INTERRUPTIBLE: u32 = 0x01;
    pub const UNINTERRUPTIBLE: u32 = 0x02;
    pub const STOPPED: u32 = 0x04;
    pub const TRACED: u32 = 0x08;
    /// Report bits that mean the task went to sleep (or stopped); none of them set
    /// means it was preempted while runnable.
    pub const SLEEP_MASK: u32 = 0xff;
    /// The report bit of an idle wait (`TASK_REPORT_IDLE`, `I` in ps).
    pub const REPORT_IDLE: u32 = 0x80;

    /// `TASK_REPORT`: the raw state bits a report keeps (S, D, stopped, traced, dead,
    /// zombie, parked), the same since Linux 4.14.
    const RAW_REPORT: u32 = 0x7f;
    /// `TASK_IDLE` (`TASK_UNINTERRUPTIBLE | TASK_NOLOAD`), reported as idle.
    const RAW_IDLE: u32 = 0x402;
    /// `TASK_RTLOCK_WAIT` (5.15+) and `TASK_FROZEN` (6.1+): reported as D.
    const RAW_AS_UNINTERRUPTIBLE: u32 = 0x1000 | 0x8000;
    /// Raw bits of a thread that went to sleep, as the kernel side tests them.
    pub const RAW_ASLEEP: u32 = RAW_REPORT | RAW_AS_UNINTERRUPTIBLE;

    /// The kernel's `__task_state_index`, as a report bit: a raw `__state` the way
    /// the sched_switch event prints it.
    pub const fn report(raw: u32) -> u32 {
        let mut state = raw & RAW_REPORT;
        if raw & RAW_IDLE == RAW_IDLE {
            state = REPORT_IDLE;
        }
        if raw & RAW_AS_UNINTERRUPTIBLE != 0 {
            state = UNINTERRUPTIBLE;
        }
        if state == 0 {
            0
        } else {
            1 << (31 - state.leading_zeros())
        }
    }
}

/// Kinds of ring-buffer record: the header's `kind` of every record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A kernel message ([`PrintkEvent`]).
    Printk = 1,
    /// A thread of a monitored process exited ([`ExitEvent`]).
    Exit = 2,
    /// The kernel's hung-task detector found a task blocked in D state ([`TaskRecord`]).
    Hang = 3,
    /// The OOM killer chose a victim ([`TaskRecord`]).
    OomVictim = 4,
    /// A fatal-by-default signal was generated for a thread of a monitored process
    /// ([`TaskRecord`]).
    Signal = 5,
    /// A process exec'd with a watched comm or in a watched cgroup: now a target
    /// (`TaskRecord::target` = its tgid; the kernel side added it already).
    NewTarget = 6,
    /// A target that follows forks forked `TaskRecord::target` (a thread or a process:
    /// userspace tells).
    Forked = 7,
}

impl RecordKind {
    /// The kind a header's `kind` names, if any (the field is a plain u32 in the
    /// record: bytes from the kernel are not trusted to hold a valid enum).
    pub const fn from_u32(kind: u32) -> Option<RecordKind> {
        Some(match kind {
            1 => RecordKind::Printk,
            2 => RecordKind::Exit,
            3 => RecordKind::Hang,
            4 => RecordKind::OomVictim,
            5 => RecordKind::Signal,
            6 => RecordKind::NewTarget,
            7 => RecordKind::Forked,
            _ => return None,
        })
    }
}

/// A kernel event about a task: a hang, an OOM victim, a fatal signal, a new target, a
/// fork. The header's task is the one in whose context it fired (khungtaskd, the
/// allocating task, the sender, the parent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRecord {
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
    /// A [`RecordKind`], as a number.
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
    assert!(size_of::<InFlight>() == 64);
    assert!(offset_of!(InFlight, enter_jiffies) == 8);
    assert!(offset_of!(InFlight, last_jiffies) == 24);
    assert!(offset_of!(InFlight, sleep_jiffies) == 40);
    assert!(size_of::<CurrentTask>() == 24);
    assert!(size_of::<ClockSample>() == 16);
    assert!(size_of::<PidPair>() == 12);
    assert!(size_of::<EventHeader>() == 40);
    assert!(offset_of!(EventHeader, comm) == 24);
    assert!(offset_of!(PrintkEvent, len) == 40);
    assert!(offset_of!(PrintkEvent, msg) == 48);
    assert!(size_of::<PrintkEvent>() == 48 + MSG_MAX);
    assert!(size_of::<ExitEvent>() == 48);
    assert!(size_of::<TaskRecord>() == 56);
};

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, repr(C), every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for Target {}
    unsafe impl aya::Pod for InFlight {}
    unsafe impl aya::Pod for CurrentTask {}
    unsafe impl aya::Pod for ClockSample {}
    unsafe impl aya::Pod for crate::gate::GateRule {}
    unsafe impl aya::Pod for crate::gate::GateState {}
    unsafe impl aya::Pod for crate::gate::SockTag {}
}

#[cfg(test)]
mod tests {
    use super::sched;

    #[test]
    fn raw_task_states_report_as_the_sched_switch_event_prints_them() {
        // (raw __state, report bit): values from include/linux/sched.h (6.x).
        for (raw, report) in [
            (0x0000, 0),                      // TASK_RUNNING: preempted or yielded
            (0x0001, sched::INTERRUPTIBLE),   // TASK_INTERRUPTIBLE
            (0x0002, sched::UNINTERRUPTIBLE), // TASK_UNINTERRUPTIBLE
            (0x0102, sched::UNINTERRUPTIBLE), // TASK_KILLABLE
            (0x0104, sched::STOPPED),         // TASK_STOPPED
            (0x0108, sched::TRACED),          // TASK_TRACED before 5.19
            (0x0008, sched::TRACED),          // TASK_TRACED since 5.19
            (0x0402, sched::REPORT_IDLE),     // TASK_IDLE
            (0x1000, sched::UNINTERRUPTIBLE), // TASK_RTLOCK_WAIT
            (0x8000, sched::UNINTERRUPTIBLE), // TASK_FROZEN
            (0x2001, sched::INTERRUPTIBLE),   // TASK_FREEZABLE | TASK_INTERRUPTIBLE
            (0x0200, 0),                      // TASK_WAKING: runnable
        ] {
            assert_eq!(sched::report(raw), report, "raw state {raw:#x}");
        }
    }
}
