//! Whether the daemon's own parts that decide verdicts are alive. Each part beats when
//! it makes progress; the heartbeat sender asks before every send and, if a part is
//! stale, stops the heartbeat: a watchdog that can no longer see must not say "alive".
//! Pure: times are passed in.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// The parts watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Reads kernel messages, exits and signals from the ring buffer.
    EventReader,
    /// Reads the in-flight syscalls and judges them.
    Scanner,
}

impl Part {
    const ALL: [Part; 2] = [Part::EventReader, Part::Scanner];

    pub fn name(self) -> &'static str {
        match self {
            Part::EventReader => "kernel event reader",
            Part::Scanner => "in-flight scanner",
        }
    }
}

/// The last progress of each part (CLOCK_MONOTONIC ns).
#[derive(Debug)]
pub struct Liveness {
    last: [AtomicU64; 2],
    bound_ns: u64,
}

impl Liveness {
    /// Parts count as stale after `bound` without progress; all start alive at `now_ns`.
    pub fn new(bound: Duration, now_ns: u64) -> Self {
        Liveness {
            last: [AtomicU64::new(now_ns), AtomicU64::new(now_ns)],
            bound_ns: bound.as_nanos() as u64,
        }
    }

    /// `part` made progress at `now_ns`.
    pub fn beat(&self, part: Part, now_ns: u64) {
        self.last[part as usize].store(now_ns, Ordering::Release);
    }

    /// The first part without progress for longer than the bound, and for how long (ms).
    pub fn stale(&self, now_ns: u64) -> Option<(Part, u64)> {
        Part::ALL.into_iter().find_map(|p| {
            let quiet = now_ns.saturating_sub(self.last[p as usize].load(Ordering::Acquire));
            (quiet > self.bound_ns).then_some((p, quiet / 1_000_000))
        })
    }

    /// Why the heartbeat must not be sent, if a part is stale.
    pub fn blocker(&self, now_ns: u64) -> Option<String> {
        self.stale(now_ns).map(|(part, ms)| {
            format!(
                "the watchdog's {} made no progress for {ms} ms (failing closed)",
                part.name()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_part_without_progress_beyond_the_bound_is_stale() {
        let l = Liveness::new(Duration::from_secs(2), 0);
        assert_eq!(l.stale(2_000 * MS), None, "at the bound: still alive");
        l.beat(Part::EventReader, 1_500 * MS);
        assert_eq!(l.stale(2_500 * MS), Some((Part::Scanner, 2_500)));
        l.beat(Part::Scanner, 2_400 * MS);
        assert_eq!(l.stale(2_500 * MS), None);
        assert_eq!(
            l.blocker(3_600 * MS).as_deref(),
            Some(
                "the watchdog's kernel event reader made no progress for 2100 ms (failing closed)"
            )
        );
    }
}
