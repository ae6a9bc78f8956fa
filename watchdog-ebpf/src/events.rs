//! Records to userspace through the `EVENTS` ring: the one header every record starts
//! with, and the task event that several probes send.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use watchdog_common::{EventHeader, RecordKind, TaskRecord, counter};

use crate::{
    bits::is_target,
    maps::{EVENTS, bump},
    slots::record_of,
};

/// The header of a record of `kind` raised now by the current task.
#[inline(always)]
pub fn header(kind: RecordKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad0: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// The process of thread `tid`, if it is a monitored one's (0 if not).
fn monitored_tgid(tid: u32) -> u32 {
    if let Some(slot) = record_of(tid) {
        return unsafe { (*slot).tgid };
    }
    if is_target(tid) { tid } else { 0 }
}

/// Send a task event about `target` (a lost one is counted).
pub fn send_task_event(kind: RecordKind, target: u32, sig: i32, code: i32) {
    let ev = TaskRecord {
        header: header(kind),
        target,
        sig,
        code,
        target_tgid: monitored_tgid(target),
    };
    if EVENTS.output::<TaskRecord>(&ev, 0).is_err() {
        bump(counter::LOST_EVENTS);
    }
}
