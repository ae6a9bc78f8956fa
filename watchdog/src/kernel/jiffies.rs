//! From the hot path's clock to the daemon's: the eBPF programs stamp records with
//! `jiffies_64` (`bpf_jiffies64()`, which the verifier inlines into a load, where a
//! `bpf_ktime_get_ns()` call costs ~50 ns on every syscall), and the daemon judges in
//! CLOCK_MONOTONIC nanoseconds. Pure: samples in, times out.
//!
//! How the two relate: the kernel counts a jiffy each `TICK_NSEC` of CLOCK_MONOTONIC
//! (`tick_do_update_jiffies64` advances `jiffies_64` by whole periods from a fixed
//! phase), so jiffy `j` is the interval `[B + j·T, B + (j+1)·T)` for one unknown phase
//! `B` and the period `T` of the kernel's HZ. A sample (jiffies `j` read at time `t`)
//! bounds the phase from above, `B + j·T ≤ t`. The smallest bound `U` of the calibration's
//! samples stands for `B`, and a stamp becomes the *end* of its jiffy as `U` places it:
//! never earlier than the moment stamped, so an elapsed time is never overstated and no
//! verdict comes early; it may come up to one jiffy (plus the calibration's slack,
//! microseconds) late. Later samples only check `U`, never move it: the daemon knows a
//! stuck syscall by its start time, which must not change between scans.
//! A stamp taken while `jiffies` lagged (its update was late) reads early by the lag.
use watchdog_common::ClockSample;

/// Values of CONFIG_HZ that Linux configurations use (the Kconfig choices and the
/// architectures' own).
const KNOWN_HZ: [u64; 15] = [
    24, 32, 48, 64, 100, 128, 200, 250, 256, 300, 500, 512, 1000, 1024, 1200,
];

/// The kernel's `TICK_NSEC` for `hz`.
const fn tick_nsec(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalibrationError {
    #[error("the samples cross fewer than two jiffy boundaries one jiffy apart")]
    TooFewBoundaries,
    #[error("a jiffy lasts between {0} and {1} ns, which matches no kernel HZ")]
    UnknownHz(u64, u64),
    #[error("a jiffy lasts between {0} and {1} ns, which matches more than one kernel HZ")]
    AmbiguousHz(u64, u64),
    #[error("a sample read jiffy {jiffies} at {ns} ns, {early_ns} ns before that jiffy can start")]
    Drift {
        jiffies: u64,
        ns: u64,
        early_ns: u64,
    },
    #[error(
        "a sample read jiffy {jiffies} at {ns} ns, {late_ns} ns after that jiffy should have begun: jiffies fell behind"
    )]
    Lag { jiffies: u64, ns: u64, late_ns: u64 },
}

/// The relation of jiffies to CLOCK_MONOTONIC on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JiffyClock {
    hz: u64,
    tick_ns: u64,
    /// A jiffy the samples saw, and the latest time it can have started (`U`).
    ref_jiffies: u64,
    ref_start_ns: u64,
}

impl JiffyClock {
    /// From samples taken back to back (a few µs apart) across at least two jiffy
    /// boundaries: each boundary is seen between two samples, and two of them tell the
    /// period, which must be one HZ's.
    pub fn calibrate(samples: &[ClockSample]) -> Result<JiffyClock, CalibrationError> {
        // Boundaries as (jiffy that began, no earlier than, no later than).
        let edges: Vec<(u64, u64, u64)> = samples
            .windows(2)
            .filter(|w| w[1].jiffies == w[0].jiffies.wrapping_add(1))
            .map(|w| (w[1].jiffies, w[0].ns, w[1].ns))
            .collect();
        let (Some(first), Some(last)) = (edges.first(), edges.last()) else {
            return Err(CalibrationError::TooFewBoundaries);
        };
        let n = last.0.wrapping_sub(first.0);
        if n == 0 || n > i64::MAX as u64 {
            return Err(CalibrationError::TooFewBoundaries);
        }
        // The period lies strictly between these.
        let shortest = last.1.saturating_sub(first.2) / n;
        let longest = last.2.saturating_sub(first.1).div_ceil(n);
        let mut fits = KNOWN_HZ
            .iter()
            .copied()
            .filter(|&hz| (shortest..=longest).contains(&tick_nsec(hz)));
        let hz = match (fits.next(), fits.next()) {
            (Some(hz), None) => hz,
            (None, _) => return Err(CalibrationError::UnknownHz(shortest, longest)),
            (Some(_), Some(_)) => return Err(CalibrationError::AmbiguousHz(shortest, longest)),
        };
        let mut clock = JiffyClock {
            hz,
            tick_ns: tick_nsec(hz),
            ref_jiffies: samples[0].jiffies,
            ref_start_ns: samples[0].ns,
        };
        // The smallest bound of all: the closest to the true phase, never below it.
        let phase = samples.iter().map(|s| clock.phase_bound(*s)).min();
        clock.ref_start_ns = phase.unwrap_or(0).max(0) as u64;
        Ok(clock)
    }

    /// Check a later sample against the calibration, which it never moves: a record's
    /// time must not change between two scans (a stuck syscall is known by its start).
    /// A sample that puts a jiffy's start more than a jiffy before what the calibration
    /// allowed means the calibration was wrong or the clock stepped; one more than two
    /// jiffies after means `jiffies` fell behind CLOCK_MONOTONIC, which would make stamps
    /// read early. Either way the caller calibrates again.
    pub fn check(&self, s: ClockSample) -> Result<(), CalibrationError> {
        let bound = self.phase_bound(s);
        let current = self.ref_start_ns as i128;
        let tick = self.tick_ns as i128;
        if bound < current - tick {
            return Err(CalibrationError::Drift {
                jiffies: s.jiffies,
                ns: s.ns,
                early_ns: (current - bound) as u64,
            });
        }
        if bound > current + 2 * tick {
            return Err(CalibrationError::Lag {
                jiffies: s.jiffies,
                ns: s.ns,
                late_ns: (bound - current) as u64,
            });
        }
        Ok(())
    }

    /// The latest time the reference jiffy can have started, by sample `s`.
    fn phase_bound(&self, s: ClockSample) -> i128 {
        s.ns as i128 - self.jiffies_since_ref(s.jiffies) * self.tick_ns as i128
    }

    /// Jiffies from the reference to `j` (jiffies_64 starts near 2^64 and wraps five
    /// minutes after boot; differences are small either way).
    fn jiffies_since_ref(&self, j: u64) -> i128 {
        j.wrapping_sub(self.ref_jiffies) as i64 as i128
    }

    /// The kernel's HZ.
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// One jiffy, in ns: the resolution of every time the kernel side records.
    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// CLOCK_MONOTONIC time at which jiffy `j` ends: no earlier than any moment
    /// stamped `j`.
    pub fn end_ns(&self, j: u64) -> u64 {
        let end =
            self.ref_start_ns as i128 + (self.jiffies_since_ref(j) + 1) * self.tick_ns as i128;
        end.clamp(0, u64::MAX as i128) as u64
    }

    /// A count of jiffies, in ns.
    pub fn span_ns(&self, jiffies: u64) -> u64 {
        jiffies.saturating_mul(self.tick_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Samples every `gap` ns from `from` to `to` of a kernel at `hz` whose jiffy 0
    /// (counting from `start_j`) began at `phase` ns.
    fn sampled(
        hz: u64,
        phase: u64,
        start_j: u64,
        from: u64,
        to: u64,
        gap: u64,
    ) -> Vec<ClockSample> {
        let tick = tick_nsec(hz);
        (from..to)
            .step_by(gap as usize)
            .map(|ns| ClockSample {
                jiffies: start_j.wrapping_add((ns - phase) / tick),
                ns,
            })
            .collect()
    }

    #[test]
    fn finds_the_hz_and_the_phase_from_samples_across_two_ticks() {
        for hz in [100, 250, 300, 1000] {
            let phase = 1_234_567;
            let samples = sampled(
                hz,
                phase,
                5_000,
                10 * MS,
                10 * MS + 3 * tick_nsec(hz),
                3_000,
            );
            let clock = JiffyClock::calibrate(&samples).unwrap();
            assert_eq!(clock.hz(), hz);
            // Jiffy 5_000 + k ends at phase + (k+1)·T, within the sampling gap.
            let k = (20 * MS - phase) / tick_nsec(hz);
            let end = clock.end_ns(5_000 + k);
            let truth = phase + (k + 1) * tick_nsec(hz);
            assert!(
                end >= truth && end < truth + 3_000,
                "hz {hz}: {end} vs {truth}"
            );
        }
    }

    #[test]
    fn a_stamp_becomes_the_end_of_its_jiffy_so_elapsed_time_is_never_overstated() {
        let samples = sampled(250, 700_000, 42, 50 * MS, 70 * MS, 2_500);
        let clock = JiffyClock::calibrate(&samples).unwrap();
        for ns in (60 * MS..61 * MS).step_by(100_000) {
            let j = 42 + (ns - 700_000) / (4 * MS);
            let stamped = clock.end_ns(j);
            assert!(stamped >= ns, "stamp of {ns} placed at {stamped}");
            assert!(stamped <= ns + 4 * MS + 2_500);
        }
        assert_eq!(clock.span_ns(3), 12 * MS);
        assert_eq!(clock.tick_ns(), 4 * MS);
    }

    #[test]
    fn jiffies_wrapping_past_zero_keep_their_order() {
        // jiffies_64 starts at -300·HZ: it wraps to 0 five minutes after boot.
        let start = u64::MAX - 1;
        let samples = sampled(1000, 0, start, 0, 4 * MS, 1_000);
        let clock = JiffyClock::calibrate(&samples).unwrap();
        assert_eq!(clock.end_ns(start.wrapping_add(10)), 11 * MS);
        assert!(clock.end_ns(start.wrapping_add(11)) > clock.end_ns(start.wrapping_add(10)));
    }

    #[test]
    fn later_samples_never_move_the_clock_and_a_wrong_one_is_drift_or_lag() {
        // Sampled 20 µs after each boundary at best: the phase is known within 20 µs.
        let early = sampled(250, 1_000_000, 0, 1_020_000, 10 * MS, 50_000);
        let clock = JiffyClock::calibrate(&early).unwrap();
        let before = clock.end_ns(100);
        assert_eq!(before, 1_020_000 + 101 * 4 * MS);
        // A tighter sample is fine, and changes nothing: times stay put between scans.
        let tight = ClockSample {
            jiffies: 100,
            ns: 1_000_000 + 400 * MS + 10,
        };
        assert_eq!(clock.check(tight), Ok(()));
        assert_eq!(clock.end_ns(100), before);
        // Jiffy 200 seen a whole jiffy before it can begin: not this kernel's clock.
        let err = clock
            .check(ClockSample {
                jiffies: 200,
                ns: 1_000_000 + 790 * MS,
            })
            .unwrap_err();
        assert!(
            matches!(err, CalibrationError::Drift { jiffies: 200, .. }),
            "{err}"
        );
        // Jiffy 200 still read three jiffies after its end: jiffies fell behind.
        let err = clock
            .check(ClockSample {
                jiffies: 200,
                ns: 1_000_000 + 813 * MS,
            })
            .unwrap_err();
        assert!(
            matches!(err, CalibrationError::Lag { jiffies: 200, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_samples_that_do_not_tell_the_period() {
        let flat = sampled(250, 0, 7, 0, 3 * MS, 10_000);
        assert_eq!(
            JiffyClock::calibrate(&flat),
            Err(CalibrationError::TooFewBoundaries)
        );
        // Two boundaries, each seen between two samples (jiffy, ns before, ns after).
        let edges = |a: (u64, u64, u64), b: (u64, u64, u64)| {
            [(a.0 - 1, a.1), (a.0, a.2), (b.0 - 1, b.1), (b.0, b.2)]
                .map(|(jiffies, ns)| ClockSample { jiffies, ns })
        };
        // Boundaries 3.7 ms apart: no HZ has that tick.
        let odd = edges((2, 0, 1_000), (3, 3_700_000, 3_701_000));
        let err = JiffyClock::calibrate(&odd).unwrap_err();
        assert!(matches!(err, CalibrationError::UnknownHz(..)), "{err}");
        assert!(err.to_string().contains("matches no kernel HZ"), "{err}");
        // Samples so sparse that 250 and 256 both fit.
        let sparse = edges((2, 0, 200_000), (3, 3_850_000, 4_100_000));
        assert!(matches!(
            JiffyClock::calibrate(&sparse),
            Err(CalibrationError::AmbiguousHz(..))
        ));
    }
}
