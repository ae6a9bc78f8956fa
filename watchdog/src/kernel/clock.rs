//! The one clock the kernel side and the daemon share.
//!
//! `bpf_ktime_get_ns()` is CLOCK_MONOTONIC, so every comparison with a time recorded by
//! the eBPF programs must use CLOCK_MONOTONIC here too (not `Instant`, whose epoch is
//! opaque).

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
