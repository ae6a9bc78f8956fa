//! Keeping the daemon responsive under host pressure (the classic keepalived split-brain
//! complaint: a healthy node that misses beats because it was paged out or starved):
//! locked memory and a real-time scheduling class, both opt-in.

#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("--mlock: mlockall failed: {0} (needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK)")]
    Mlock(std::io::Error),
    #[error("--rt-priority {0}: sched_setscheduler(SCHED_FIFO) failed: {1} (needs CAP_SYS_NICE)")]
    Priority(u32, std::io::Error),
}

/// Lock all memory, current and future, if `mlock`; run at SCHED_FIFO `priority` if
/// given. Called before any other thread exists, so every thread inherits it. (Not
/// SCHED_RESET_ON_FORK: that would reset new threads too; exec hooks drop back to
/// normal scheduling with [`normal_priority`] instead.)
pub fn apply(mlock: bool, priority: Option<u32>) -> Result<(), RealtimeError> {
    if mlock {
        // SAFETY: mlockall has no memory-safety preconditions.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            return Err(RealtimeError::Mlock(std::io::Error::last_os_error()));
        }
    }
    if let Some(p) = priority {
        set_scheduler(libc::SCHED_FIFO, p as i32).map_err(|e| RealtimeError::Priority(p, e))?;
    }
    Ok(())
}

/// Back to normal scheduling (SCHED_OTHER), for a child about to exec.
pub fn normal_priority() -> std::io::Result<()> {
    set_scheduler(libc::SCHED_OTHER, 0)
}

/// sched_setscheduler(2) for the calling thread's process.
fn set_scheduler(policy: i32, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: a valid sched_param; pid 0 is the caller.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
