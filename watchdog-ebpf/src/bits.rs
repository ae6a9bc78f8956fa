//! The hot path's filters: one bit per id in arrays (`TARGET_BITS`, `EXEC_BITS`,
//! `THREAD_BITS`), which the verifier turns into plain loads. An id beyond the arrays
//! falls back to the hash maps.
use aya_ebpf::maps::Array;

use crate::{
    maps::{EXEC_BITS, TARGET_BITS, TARGETS, THREAD_BITS},
    slots::record_of,
};

/// Whether `id`'s bit is set in `bits`; None when `id` is beyond the array.
#[inline(always)]
pub fn bit(bits: &Array<u64>, id: u32) -> Option<bool> {
    bits.get(id >> 6).map(|w| *w & (1u64 << (id & 63)) != 0)
}

/// `*w += v` as one atomic instruction (BPF_ATOMIC add, no fetch: every kernel with BPF
/// atomics has it). core's atomics offer no read-modify-write on this target.
#[inline(always)]
pub fn atomic_add(w: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!("lock *(u64 *)({w} + 0) += {v}", w = in(reg) w, v = in(reg) v);
    }
}

/// `*w |= v`, returning the old value (BPF_ATOMIC or with BPF_FETCH).
#[inline(always)]
pub fn fetch_or(w: *mut u64, v: u64) -> u64 {
    let mut v = v;
    unsafe {
        core::arch::asm!("{v} = atomic_fetch_or((u64 *)({w} + 0), {v})", w = in(reg) w, v = inout(reg) v);
    }
    v
}

/// `*w &= v`, returning the old value (BPF_ATOMIC and with BPF_FETCH).
#[inline(always)]
pub fn fetch_and(w: *mut u64, v: u64) -> u64 {
    let mut v = v;
    unsafe {
        core::arch::asm!("{v} = atomic_fetch_and((u64 *)({w} + 0), {v})", w = in(reg) w, v = inout(reg) v);
    }
    v
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

/// Whether thread `tid` has an in-flight slot (a monitored thread that made a syscall).
#[inline(always)]
pub fn has_slot(tid: u32) -> bool {
    match bit(&THREAD_BITS, tid) {
        Some(set) => set,
        None => record_of(tid).is_some(),
    }
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
