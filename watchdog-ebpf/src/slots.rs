//! The in-flight records: thread tid owns slot `tid & WD_SLOT_MASK` of `SLOTS` while
//! it is free or its own; a thread whose slot is taken falls back to the `INFLIGHT`
//! hash.
use watchdog_common::{InFlight, NOT_IN_SYSCALL};

use crate::{
    bits::{atomic_add, clear_bit, has_slot},
    globals::slot_mask,
    maps::{INFLIGHT, INFLIGHT_LIVE, SLOTS, THREAD_BITS},
};

/// Count an INFLIGHT entry made (+1) or removed (-1): the daemon walks the hash only
/// when it holds something (an empty walk visits every bucket).
#[inline(always)]
fn count_overflow(delta: u64) {
    if let Some(n) = INFLIGHT_LIVE.get_ptr_mut(0) {
        atomic_add(n, delta);
    }
}

/// Thread `tid`'s in-flight record: its slot, or its INFLIGHT entry when the slot is
/// another thread's.
#[inline(always)]
pub fn record_of(tid: u32) -> Option<*mut InFlight> {
    if let Some(slot) = SLOTS.get_ptr_mut(tid & slot_mask())
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
    if let Some(slot) = SLOTS.get_ptr_mut(tid & slot_mask())
        && unsafe { (*slot).tid } == 0
    {
        unsafe { *slot = *rec };
        return Ok(());
    }
    // BPF_NOEXIST: a thread with an entry finds it (record_of) and never gets here.
    INFLIGHT.insert(tid, *rec, 1).map_err(|_| ())?;
    count_overflow(1);
    Ok(())
}

/// Thread `tid` is gone (it exited, or its id went to another thread by exec): its
/// record and its bit go.
#[inline(always)]
pub fn forget_thread(tid: u32) {
    if has_slot(tid) {
        drop_record(tid);
        clear_bit(&THREAD_BITS, tid);
    }
}

/// Free thread `tid`'s slot or entry.
#[inline(always)]
fn drop_record(tid: u32) {
    if let Some(slot) = SLOTS.get_ptr_mut(tid & slot_mask())
        && unsafe { (*slot).tid } == tid
    {
        unsafe {
            (*slot).nr = NOT_IN_SYSCALL;
            (*slot).tid = 0;
        }
        return;
    }
    if INFLIGHT.remove(tid).is_ok() {
        count_overflow(u64::MAX);
    }
}
