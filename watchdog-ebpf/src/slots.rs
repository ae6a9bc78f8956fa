//! The in-flight records: thread tid owns slot `tid & WD_SLOT_MASK` of `SLOTS` while
//! it is free or its own; a thread whose slot is taken falls back to the `INFLIGHT`
//! hash.
use watchdog_common::{InFlight, NOT_IN_SYSCALL};

use crate::{
    globals::slot_mask,
    maps::{INFLIGHT, SLOTS},
};

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
    INFLIGHT.insert(tid, *rec, 0).map_err(|_| ())
}

/// Thread `tid` exited: free its slot or entry.
#[inline(always)]
pub fn drop_record(tid: u32) {
    if let Some(slot) = SLOTS.get_ptr_mut(tid & slot_mask())
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
