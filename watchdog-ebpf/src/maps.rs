//! Maps shared by the programs. Names must match `watchdog_common::maps`.
use aya_ebpf::{
    Global,
    helpers::bpf_get_current_task_btf,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use watchdog_common::{InFlight, NOT_IN_SYSCALL, Target, counter, layout};

/// Processes (tgid) whose threads are measured. Userspace adds and removes entries
/// at run time, so targets change without reloading the programs.
#[map(name = "TARGETS")]
pub static TARGETS: HashMap<u32, Target> = HashMap::with_max_entries(4096, 0);

/// In-flight syscall of each monitored thread, in a direct-mapped array: thread tid
/// owns slot `tid & WD_SLOT_MASK` while it is free or its own. The lookup is a plain
/// load, and the daemon reads the array from memory (BPF_F_MMAPABLE) without a syscall
/// per thread. Sized by the loader.
#[map(name = "SLOTS")]
pub static SLOTS: Array<InFlight> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);

#[unsafe(no_mangle)]
static WD_SLOT_MASK: Global<u32> = Global::new(0);

/// In-flight syscall of a monitored thread whose slot another thread owns (by tid). A
/// plain hash, not LRU: an LRU would evict exactly the entry of a thread that has been
/// stuck for a long time.
#[map(name = "INFLIGHT")]
pub static INFLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(65536, 0);

/// Kernel messages and thread exits, to userspace. 512 KiB holds half a second of a
/// 10,000 lines/s printk flood; the reader drains it within milliseconds (BENCHMARKS.md).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 19, 0);

// The hot path's filters: one bit per id, in arrays that the verifier turns into plain
// loads (no helper call), sized by the loader to the kernel's pid_max. An id beyond
// them falls back to the hash maps. Each array has one writer side, so no update is
// lost: userspace's bits and the kernel's are kept apart.

/// tgid bits of the targets userspace added (pids given, found at start, forked
/// children). Written by userspace only.
#[map(name = "TARGET_BITS")]
pub static TARGET_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// tgid bits of the targets the kernel side made at exec (by name or cgroup). Written
/// here only, with atomic adds: set at exec, cleared when the process is gone.
#[map(name = "EXEC_BITS")]
pub static EXEC_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// tid bits of the threads that have an in-flight slot. Written here only: set by the
/// thread's first monitored syscall, cleared when it exits.
#[map(name = "THREAD_BITS")]
pub static THREAD_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// Whether `id`'s bit is set in `bits`; None when `id` is beyond the array.
#[inline(always)]
fn bit(bits: &Array<u64>, id: u32) -> Option<bool> {
    bits.get(id >> 6).map(|w| *w & (1u64 << (id & 63)) != 0)
}

/// `*w += v` as one atomic instruction (BPF_ATOMIC add, no fetch: every kernel with BPF
/// atomics has it). core's atomics offer no read-modify-write on this target.
#[inline(always)]
fn atomic_add(w: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!("lock *(u64 *)({w} + 0) += {v}", w = in(reg) w, v = in(reg) v);
    }
}

/// Set `id`'s bit in a kernel-written array. Callers are serialized per id (the
/// thread or process itself), so the bit is known clear before the add; the add is
/// atomic against other ids' bits in the same word.
#[inline(always)]
pub fn set_bit(bits: &Array<u64>, id: u32) {
    if let Some(w) = bits.get_ptr_mut(id >> 6) {
        let m = 1u64 << (id & 63);
        if unsafe { *w } & m == 0 {
            atomic_add(w, m);
        }
    }
}

/// Clear `id`'s bit in a kernel-written array (same rules as [`set_bit`]).
#[inline(always)]
pub fn clear_bit(bits: &Array<u64>, id: u32) {
    if let Some(w) = bits.get_ptr_mut(id >> 6) {
        let m = 1u64 << (id & 63);
        if unsafe { *w } & m != 0 {
            atomic_add(w, m.wrapping_neg());
        }
    }
}

/// Offsets of `pid` and `tgid` in the running kernel's `task_struct` (from its BTF),
/// set by the loader: the syscall probes read the ids straight from the task, without
/// a helper call.
#[unsafe(no_mangle)]
static WD_TASK_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static WD_TASK_TGID: Global<u32> = Global::new(0);

/// The current thread's (tgid, tid), read from its task_struct.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    unsafe {
        let tgid = *(task.add(WD_TASK_TGID.load() as usize) as *const u32);
        let tid = *(task.add(WD_TASK_PID.load() as usize) as *const u32);
        (tgid, tid)
    }
}

/// Thread `tid`'s in-flight record: its slot, or its INFLIGHT entry when the slot is
/// another thread's.
#[inline(always)]
pub fn record_of(tid: u32) -> Option<*mut InFlight> {
    if let Some(slot) = SLOTS.get_ptr_mut(tid & WD_SLOT_MASK.load())
        && unsafe { (*slot).tid } == tid
    {
        return Some(slot);
    }
    overflow_record(tid)
}

// Apart, so LLVM does not merge the two map pointers (which the verifier rejects).
#[inline(never)]
fn overflow_record(tid: u32) -> Option<*mut InFlight> {
    INFLIGHT.get_ptr_mut(tid)
}

/// A new record for thread `tid`: its slot if free, else an INFLIGHT entry. Two threads
/// claiming one free slot at the same instant both write it; the one that lost finds the
/// slot not its own at its next syscall and moves to INFLIGHT then.
#[inline(always)]
pub fn new_record(tid: u32, rec: &InFlight) -> Result<(), ()> {
    if let Some(slot) = SLOTS.get_ptr_mut(tid & WD_SLOT_MASK.load())
        && unsafe { (*slot).tid } == 0
    {
        unsafe { *slot = *rec };
        return Ok(());
    }
    INFLIGHT.insert(tid, *rec, 0).map_err(|_| ())
}

/// Thread `tid` exited: free its slot or entry.
#[inline(always)]
pub fn drop_record(tid: u32) {
    if let Some(slot) = SLOTS.get_ptr_mut(tid & WD_SLOT_MASK.load())
        && unsafe { (*slot).tid } == tid
    {
        unsafe {
            (*slot).nr = NOT_IN_SYSCALL;
            (*slot).tid = 0;
        }
        return;
    }
    let _ = INFLIGHT.remove(tid);
}

/// Whether thread `tid` has an in-flight slot (a monitored thread that made a syscall).
#[inline(always)]
pub fn has_slot(tid: u32) -> bool {
    match bit(&THREAD_BITS, tid) {
        Some(set) => set,
        None => record_of(tid).is_some(),
    }
}

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
    has_slot(tid) || is_target(tid)
}

/// Whether `tgid` is a monitored process: the one check every syscall on the host pays,
/// so two plain loads (the hash only for an id beyond the bit arrays).
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match (bit(&TARGET_BITS, tgid), bit(&EXEC_BITS, tgid)) {
        (Some(user), Some(exec)) => user || exec,
        _ => TARGETS.get_ptr(tgid).is_some(),
    }
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, and preemption is off in these programs.
        unsafe { *count += 1 };
    }
}
