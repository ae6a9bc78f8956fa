//! The read-only globals the loader sets before loading (constants to the verifier):
//! SLOTS' index mask, `task_struct` field offsets from the kernel's BTF, and tracepoint
//! field offsets from tracefs. Declared from `watchdog_common::with_loader_globals`, the
//! one list both sides expand, so their names cannot drift apart.
use aya_ebpf::Global;
use watchdog_common::layout;

macro_rules! declare_globals {
    (
        slot_mask: $mask:ident;
        task: $task_pid:ident => pid, $task_state:ident => __state, $task_tgid:ident => tgid,
            $task_flags:ident => flags;
        pid_view: $task_thread_pid:ident => task_struct.thread_pid,
            $pid_level:ident => pid.level, $pid_numbers:ident => pid.numbers, $upid_ns:ident => upid.ns;
        fields: $($(#[$doc:meta])* $field:ident => $global:ident,)*
    ) => {
        #[unsafe(no_mangle)]
        static $mask: Global<u32> = Global::new(0);

        /// SLOTS' index mask (entries - 1).
        #[inline(always)]
        pub fn slot_mask() -> u32 {
            $mask.load()
        }

        #[unsafe(no_mangle)]
        static $task_pid: Global<u32> = Global::new(0);
        #[unsafe(no_mangle)]
        static $task_state: Global<u32> = Global::new(0);
        #[unsafe(no_mangle)]
        static $task_tgid: Global<u32> = Global::new(0);
        #[unsafe(no_mangle)]
        static $task_flags: Global<u32> = Global::new(0);

        /// The u32 field of a task_struct at the offset global `field` holds: `task` is
        /// a BTF pointer, so this is a plain load.
        #[inline(always)]
        fn task_field(task: *const u8, field: &Global<u32>) -> u32 {
            unsafe { *(task.add(field.load() as usize) as *const u32) }
        }

        /// A task's thread id (`pid`).
        #[inline(always)]
        pub fn task_tid(task: *const u8) -> u32 {
            task_field(task, &$task_pid)
        }

        /// A task's raw `__state` (`state` before Linux 5.14; its low half on
        /// little-endian machines, which is where every state bit is).
        #[inline(always)]
        pub fn task_state(task: *const u8) -> u32 {
            task_field(task, &$task_state)
        }

        /// A task's process id (`tgid`).
        #[inline(always)]
        pub fn task_tgid(task: *const u8) -> u32 {
            task_field(task, &$task_tgid)
        }

        /// A task's `flags` (PF_*).
        #[inline(always)]
        pub fn task_flags(task: *const u8) -> u32 {
            task_field(task, &$task_flags)
        }

        #[unsafe(no_mangle)]
        static $task_thread_pid: Global<u32> = Global::new(0);
        #[unsafe(no_mangle)]
        static $pid_level: Global<u32> = Global::new(0);
        #[unsafe(no_mangle)]
        static $pid_numbers: Global<u32> = Global::new(0);
        #[unsafe(no_mangle)]
        static $upid_ns: Global<u32> = Global::new(0);

        /// Where the pid namespace iterator finds things: in `task_struct`, `tgid` and
        /// `thread_pid`; in `struct pid`, `level` and `numbers[]`; in `struct upid`,
        /// `ns` (`nr` is at 0).
        pub struct PidOffsets {
            pub tgid: usize,
            pub thread_pid: usize,
            pub level: usize,
            pub numbers: usize,
            pub upid_ns: usize,
        }

        #[inline(always)]
        pub fn pid_offsets() -> PidOffsets {
            PidOffsets {
                tgid: $task_tgid.load() as usize,
                thread_pid: $task_thread_pid.load() as usize,
                level: $pid_level.load() as usize,
                numbers: $pid_numbers.load() as usize,
                upid_ns: $upid_ns.load() as usize,
            }
        }

        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            static $global: Global<u32> = Global::new(0);
        )*

        /// Offset of a tracepoint field (a `layout` index), or None if this kernel
        /// lacks it.
        #[inline(always)]
        pub fn field_offset(index: u32) -> Option<usize> {
            let off = match index {
                $(layout::$field => $global.load(),)*
                _ => 0,
            };
            (off != 0).then_some(off as usize)
        }
    };
}

watchdog_common::with_loader_globals!(declare_globals);
