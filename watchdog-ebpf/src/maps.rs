//! Maps shared by the programs. Names must match `watchdog_common::maps`.
use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use watchdog_common::{InFlight, Target, counter, layout};

/// Processes (tgid) whose threads are measured. Userspace adds and removes entries
/// at run time, so targets change without reloading the programs.
#[map(name = "TARGETS")]
pub static TARGETS: HashMap<u32, Target> = HashMap::with_max_entries(4096, 0);

/// In-flight syscall of each monitored thread (by tid). A plain hash, not LRU: an LRU
/// would evict exactly the entry of a thread that has been stuck for a long time.
#[map(name = "INFLIGHT")]
pub static INFLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(65536, 0);

/// Kernel messages and thread exits, to userspace.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU counters, indexed by `watchdog_common::counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Program names that make a process a target when it execs them.
#[map(name = "COMMS")]
pub static COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(64, 0);

/// cgroup v2 ids inside which an exec makes a process a target.
#[map(name = "CGROUPS")]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

// Tracepoint field offsets of the running kernel, set by the loader (names in
// `watchdog_common::layout::GLOBALS`; 0 = absent).
#[unsafe(no_mangle)]
static WD_EXIT_GROUP_DEAD: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_HANG_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_OOM_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_SIG_SIG: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_SIG_CODE: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_SIG_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_SWITCH_PREV_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_SWITCH_PREV_STATE: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_SWITCH_NEXT_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_FORK_CHILD_PID: Global<u32> = Global::new(0);

/// Offset of a tracepoint field (a `layout` index), or None if this kernel lacks it.
#[inline(always)]
pub fn field_offset(index: u32) -> Option<usize> {
    let off = match index {
        layout::EXIT_GROUP_DEAD => WD_EXIT_GROUP_DEAD.load(),
        layout::HANG_PID => WD_HANG_PID.load(),
        layout::OOM_PID => WD_OOM_PID.load(),
        layout::SIG_SIG => WD_SIG_SIG.load(),
        layout::SIG_CODE => WD_SIG_CODE.load(),
        layout::SIG_PID => WD_SIG_PID.load(),
        layout::SWITCH_PREV_PID => WD_SWITCH_PREV_PID.load(),
        layout::SWITCH_PREV_STATE => WD_SWITCH_PREV_STATE.load(),
        layout::SWITCH_NEXT_PID => WD_SWITCH_NEXT_PID.load(),
        layout::FORK_CHILD_PID => WD_FORK_CHILD_PID.load(),
        _ => 0,
    };
    (off != 0).then_some(off as usize)
}

/// Whether thread `tid` belongs to a monitored process: its in-flight slot says so, or
/// it is a monitored process's main thread.
#[inline(always)]
pub fn is_monitored_thread(tid: u32) -> bool {
    INFLIGHT.get_ptr(tid).is_some() || is_target(tid)
}

/// Whether `tgid` is a monitored process: the one check every syscall on the host pays.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    TARGETS.get_ptr(tgid).is_some()
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, and preemption is off in these programs.
        unsafe { *count += 1 };
    }
}
