//! The maps of the kernel side, declared with a bare `#[map]`: each map's name is its
//! identifier, the same string `watchdog_common::maps` gives userspace (a unit test of
//! the daemon checks the built object against that list).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use watchdog_common::{ClockSample, CurrentTask, InFlight, Target, counter};

/// Processes (tgid) whose threads are measured. Userspace adds and removes entries
/// at run time, so targets change without reloading the programs.
#[map]
pub static TARGETS: HashMap<u32, Target> = HashMap::with_max_entries(4096, 0);

/// In-flight syscall of each monitored thread, in a direct-mapped array: thread tid
/// owns slot `tid & WD_SLOT_MASK` while it is free or its own (see `slots`). The
/// lookup is a plain load, and the daemon reads the array from memory
/// (BPF_F_MMAPABLE) without a syscall per thread. Sized by the loader.
#[map]
pub static SLOTS: Array<InFlight> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// In-flight syscall of a monitored thread whose slot another thread owns (by tid). A
/// plain hash, not LRU: an LRU would evict exactly the entry of a thread that has been
/// stuck for a long time.
#[map]
pub static INFLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(65536, 0);

/// Entries in INFLIGHT now (the kernel side counts them with atomic adds).
#[map]
pub static INFLIGHT_LIVE: Array<u64> = Array::with_max_entries(1, 0);

/// Kernel messages, thread exits and task events, to userspace. 512 KiB holds half a
/// second of a 10,000 lines/s printk flood; the reader drains it within milliseconds
/// (BENCHMARKS.md).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 19, 0);

// The hot path's filters: one bit per id, in arrays that the verifier turns into plain
// loads (no helper call), sized by the loader to the kernel's pid_max (see `bits`).
// Each array has one writer side, so no update is lost: userspace's bits and the
// kernel's are kept apart.

/// tgid bits of the targets userspace added (pids given, found at start, forked
/// children). Written by userspace only.
#[map]
pub static TARGET_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// tgid bits of the targets the kernel side made at exec (by name or cgroup). Written
/// here only, with atomic adds: set at exec, cleared when the process is gone.
#[map]
pub static EXEC_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// tid bits of the threads that have an in-flight slot. Written here only: set by the
/// thread's first monitored syscall, cleared when it exits. Memory-mapped by the daemon
/// (BPF_F_MMAPABLE): its scan reads the slots of these threads only.
#[map]
pub static THREAD_BITS: Array<u64> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// Covered threads per bucket of kernel stacks: the hot path's first test (see
/// `stacks`). Written here only, with atomic adds.
#[map]
pub static STACKS: Array<u64> = Array::with_max_entries(watchdog_common::STACK_BUCKETS, 0);

/// tid bits of the threads counted in STACKS. Written here only, with atomic
/// operations: set when a thread is covered, cleared at its exit.
#[map]
pub static COVERED_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// Each CPU's last task to make a syscall on it (see `current`).
#[map]
pub static CURRENT: PerCpuArray<CurrentTask> = PerCpuArray::with_max_entries(1, 0);

/// Bumped by every task exit and exec: voids older `CURRENT` entries (see `current`).
#[map]
pub static TASK_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The last reading of `clock_sample`, which the daemon runs to relate jiffies to
/// CLOCK_MONOTONIC.
#[map]
pub static CLOCK: Array<ClockSample> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `watchdog_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Program names that make a process a target when it execs them.
#[map]
pub static COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(64, 0);

/// cgroup v2 ids inside which an exec makes a process a target.
#[map]
pub static CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

/// Count one event of `index` (a `watchdog_common::counter`) on this CPU.
#[inline(always)]
pub fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, and preemption is off in these programs.
        unsafe { *count += 1 };
    }
}
