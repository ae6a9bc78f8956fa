//! Records from the kernel side, decoded into Rust values: the ring buffer's events,
//! and the threads' in-flight syscalls (`syscall`). Pure.
pub mod syscall;

use std::mem::size_of;
pub use syscall::SyscallRecord;

use watchdog_common::{
    EXIT_GROUP_DEAD, EventHeader, ExitEvent, MSG_MAX, PRINTK_TRUNCATED, PrintkEvent, RecordKind,
    TaskRecord,
};

/// A kernel message and the task in whose context it was printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLine {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub ts_ns: u64,
    /// The message, without trailing newline. Invalid UTF-8 is replaced, not dropped.
    pub text: String,
    pub truncated: bool,
}

/// A thread of a monitored process exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadExit {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub ts_ns: u64,
    pub group_dead: bool,
}

/// What a structured kernel signal says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEventKind {
    /// sched_process_hang: the hung-task detector found `target` blocked.
    Hang,
    /// oom/mark_victim: the OOM killer chose process `target`.
    OomVictim,
    /// signal_generate: fatal-by-default signal `sig` for thread `target`.
    Signal { sig: i32, code: i32 },
    /// Process `target` exec'd a watched program or in a watched cgroup: a new target.
    NewTarget,
    /// A target that follows forks created task `target` (a thread or a process).
    Forked,
}

/// A structured kernel signal about task `target`, raised in the context of `by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEvent {
    pub kind: TaskEventKind,
    pub target: u32,
    /// The monitored process `target` belongs to, if the kernel side knew it.
    pub target_tgid: Option<u32>,
    /// The task in whose context it fired (khungtaskd, the allocator, the sender).
    pub by_tgid: u32,
    pub by_tid: u32,
    pub by_comm: String,
    pub ts_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    KernelLine(KernelLine),
    ThreadExit(ThreadExit),
    Task(TaskEvent),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("ring record of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("ring record kind {kind} has {actual} bytes, expected {expected}")]
    BadSize {
        kind: u32,
        expected: usize,
        actual: usize,
    },
    #[error("unknown ring record kind {0}")]
    UnknownKind(u32),
}

/// `comm` as a string: up to the first NUL.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, EventError> {
    if bytes.len() < size_of::<T>() {
        return Err(EventError::BadSize {
            kind,
            expected: size_of::<T>(),
            actual: bytes.len(),
        });
    }
    // SAFETY: length checked; T is a repr(C) plain-old-data record valid for any bits.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
    let header: EventHeader = read(bytes, 0).map_err(|_| EventError::TooShort(bytes.len()))?;
    let Some(kind) = RecordKind::from_u32(header.kind) else {
        return Err(EventError::UnknownKind(header.kind));
    };
    match kind {
        RecordKind::Printk => {
            let ev: PrintkEvent = read(bytes, header.kind)?;
            let len = (ev.len as usize).min(MSG_MAX);
            let text = String::from_utf8_lossy(&ev.msg[..len]);
            Ok(Event::KernelLine(KernelLine {
                tgid: header.tgid,
                tid: header.tid,
                comm: comm_str(&header.comm),
                ts_ns: header.ts_ns,
                text: text.trim_end_matches(['\n', '\0']).to_owned(),
                truncated: ev.flags & PRINTK_TRUNCATED != 0,
            }))
        }
        RecordKind::Exit => {
            let ev: ExitEvent = read(bytes, header.kind)?;
            Ok(Event::ThreadExit(ThreadExit {
                tgid: header.tgid,
                tid: header.tid,
                comm: comm_str(&header.comm),
                ts_ns: header.ts_ns,
                group_dead: ev.flags & EXIT_GROUP_DEAD != 0,
            }))
        }
        RecordKind::Hang
        | RecordKind::OomVictim
        | RecordKind::Signal
        | RecordKind::NewTarget
        | RecordKind::Forked => {
            let ev: TaskRecord = read(bytes, header.kind)?;
            let kind = match kind {
                RecordKind::Hang => TaskEventKind::Hang,
                RecordKind::OomVictim => TaskEventKind::OomVictim,
                RecordKind::NewTarget => TaskEventKind::NewTarget,
                RecordKind::Forked => TaskEventKind::Forked,
                _ => TaskEventKind::Signal {
                    sig: ev.sig,
                    code: ev.code,
                },
            };
            Ok(Event::Task(TaskEvent {
                kind,
                target: ev.target,
                target_tgid: (ev.target_tgid != 0).then_some(ev.target_tgid),
                by_tgid: header.tgid,
                by_tid: header.tid,
                by_comm: comm_str(&header.comm),
                ts_ns: header.ts_ns,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: RecordKind) -> EventHeader {
        header_of(kind as u32)
    }

    fn header_of(kind: u32) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"worker");
        EventHeader {
            kind,
            tgid: 100,
            tid: 101,
            _pad0: 0,
            ts_ns: 5_000,
            comm,
        }
    }

    #[test]
    fn printk_record_decodes_with_task_and_text() {
        let mut msg = [0u8; MSG_MAX];
        let text = b"watchdog-test: BUG: oh no\n";
        msg[..text.len()].copy_from_slice(text);
        let ev = PrintkEvent {
            header: header(RecordKind::Printk),
            len: text.len() as u32,
            flags: 0,
            msg,
        };
        let Event::KernelLine(line) = decode(&as_bytes(&ev)).unwrap() else {
            panic!("not a kernel line")
        };
        assert_eq!(
            (line.tgid, line.tid, line.comm.as_str()),
            (100, 101, "worker")
        );
        assert_eq!(line.text, "watchdog-test: BUG: oh no");
        assert!(!line.truncated);
    }

    #[test]
    fn length_beyond_buffer_is_clamped_not_trusted() {
        let ev = PrintkEvent {
            header: header(RecordKind::Printk),
            len: 9999,
            flags: PRINTK_TRUNCATED,
            msg: [b'x'; MSG_MAX],
        };
        let Event::KernelLine(line) = decode(&as_bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(line.text.len(), MSG_MAX);
        assert!(line.truncated);
    }

    #[test]
    fn exit_record_decodes() {
        let ev = ExitEvent {
            header: header(RecordKind::Exit),
            flags: EXIT_GROUP_DEAD,
            _pad0: 0,
        };
        let Event::ThreadExit(exit) = decode(&as_bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!((exit.tgid, exit.tid, exit.group_dead), (100, 101, true));
    }

    #[test]
    fn task_records_decode() {
        let ev = TaskRecord {
            header: header(RecordKind::Signal),
            target: 4242,
            sig: 11,
            code: 1,
            target_tgid: 100,
        };
        let Event::Task(t) = decode(&as_bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(t.kind, TaskEventKind::Signal { sig: 11, code: 1 });
        assert_eq!(t.target_tgid, Some(100));
        assert_eq!(
            (t.target, t.by_tid, t.by_comm.as_str()),
            (4242, 101, "worker")
        );
        let ev = TaskRecord {
            header: header(RecordKind::Hang),
            ..ev
        };
        let Event::Task(t) = decode(&as_bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(t.kind, TaskEventKind::Hang);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[0u8; 10]), Err(EventError::TooShort(10)));
        let bytes = as_bytes(&header(RecordKind::Printk));
        assert!(matches!(
            decode(&bytes),
            Err(EventError::BadSize { kind: 1, .. })
        ));
        assert_eq!(
            decode(&as_bytes(&header_of(77))),
            Err(EventError::UnknownKind(77))
        );
    }
}
