//! The daemon's task loops. Each takes what happens (a ring record, a scan, the time),
//! asks the reactions what it means, and carries out the answer.
use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use aya::maps::{MapData, RingBuf};

use super::{
    TestHooks,
    shared::{ProcHost, Shared, lock},
};
use crate::{
    daemon::sdnotify::{self, Notifier},
    events::{self, Event},
    heartbeat::liveness::Part,
    judging::reactions::{Effect, REPORT_QUIET},
    kernel::{
        clock::monotonic_ns,
        kmsg::KmsgReader,
        pidns::{self, Localized},
        probes::{Counters, InFlightTable},
        ring,
    },
};

/// The event reader's longest wait for the ring buffer before it says it is alive: a
/// quarter of the liveness bound, and two wakeups a second on an idle node.
const READER_TICK: Duration = Duration::from_millis(500);

/// Read kernel events as they come, and react to each.
pub(super) async fn read_events(shared: Arc<Shared>, events: RingBuf<MapData>, hooks: TestHooks) {
    let alive = || {
        let now = monotonic_ns();
        if hooks.reader_stops_at.is_some_and(|at| now >= at) {
            tracing::warn!("test hook: the event reader stops");
            return false;
        }
        shared.liveness.beat(Part::EventReader, now);
        true
    };
    let on_record = |bytes: &[u8]| {
        let event = match events::decode(bytes).map(|ev| pidns::ids().localize(ev)) {
            Ok(Localized::Event(ev)) => ev,
            Ok(Localized::Drop) => return,
            Ok(Localized::ForeignTarget(kernel_tgid)) => {
                shared.drop_foreign_target(kernel_tgid);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable kernel event");
                return;
            }
        };
        let effects = match event {
            Event::KernelLine(line) => shared.reactions().on_kernel_line(&line, &ProcHost),
            Event::ThreadExit(exit) => shared.reactions().on_exit(exit, &ProcHost),
            Event::Task(ev) => shared.reactions().on_task_event(ev, &ProcHost),
        };
        shared.apply(effects);
    };
    match ring::read(events, READER_TICK, alive, on_record).await {
        // The test hook: hang as a wedged reader would.
        Ok(()) => std::future::pending::<()>().await,
        Err(e) => {
            // Without this reader, kernel reports go unseen: fail closed.
            shared
                .latch
                .close(&format!("event ring buffer failed: {e}"));
            tracing::error!(error = %e, "event ring buffer failed");
        }
    }
}

/// Scan the in-flight table: often enough to see every syscall well before its budget
/// runs out, and exactly at the earliest deadline, so a stall is found within a timer
/// tick of the budget running out, while the syscall is still in flight.
pub(super) async fn scan(shared: Arc<Shared>, mut inflight: InFlightTable) {
    let mut next_expiry = 0;
    loop {
        // Read each round: a reload may change the budget.
        let budget = shared.reactions().monitor().shortest_budget();
        let period = (budget / 4).clamp(Duration::from_millis(5), Duration::from_millis(500));
        let now = monotonic_ns();
        shared.liveness.beat(Part::Scanner, now);
        // Complete kernel reports that went quiet, on the scanner's wakeups (at least
        // every half second: a report is complete at most 1.5 s after its last line)
        // rather than on wakeups of their own.
        if now >= next_expiry {
            let effects = shared.reactions().expire_reports(now, &ProcHost);
            shared.apply(effects);
            next_expiry = now + (REPORT_QUIET / 2).as_nanos() as u64;
        }
        let entries = match inflight.read() {
            Ok(entries) => entries,
            Err(e) => {
                // Without the clock no time in the records means anything: no verdict
                // can be trusted, so the heartbeat stops until it comes back.
                shared
                    .latch
                    .close(&format!("the in-flight records cannot be timed: {e}"));
                tracing::error!(error = %e, "the in-flight records cannot be timed");
                tokio::time::sleep(period).await;
                continue;
            }
        };
        let scan = shared.reactions().on_scan(&entries, now, &ProcHost);
        shared.apply(scan.effects);
        let now = monotonic_ns();
        let next_periodic = now + period.as_nanos() as u64;
        let wake = scan
            .next_deadline
            .map_or(next_periodic, |d| d.min(next_periodic));
        tokio::time::sleep(Duration::from_nanos(wake.saturating_sub(now))).await;
    }
}

/// The opt-in policy: resume by itself once nothing has stood in the way of resuming
/// for the configured time.
pub(super) async fn auto_resume(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await;
        let after = lock(&shared.config).auto_resume_after;
        if after.is_none() {
            shared.reactions().auto_resume(0, None, false, None);
            // Not configured (a reload may turn it on): look again in a second, not ten
            // times a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let now = monotonic_ns();
        let daemon_blocker = shared.liveness.blocker(now);
        let resume = shared.reactions().auto_resume(
            now,
            after,
            shared.latch.is_open(),
            daemon_blocker.as_deref(),
        );
        if resume {
            shared.resume_heartbeat();
            tracing::warn!(
                after_ms = after.unwrap_or_default().as_millis() as u64,
                "heartbeat resumed automatically: healthy since"
            );
        }
    }
}

/// Every second: report kernel-side losses as they grow, and look for what a loss may
/// have taken: problem lines in the kernel's log that the ring never delivered, and
/// monitored processes gone without their exit event. Without the kernel's log, a loss
/// stops the heartbeat: what was lost cannot be known.
pub(super) async fn watch_losses(shared: Arc<Shared>, counters: Counters) {
    let mut kmsg = match KmsgReader::open_at_end() {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /dev/kmsg: a loss of kernel events will stop the heartbeat, since the lost lines cannot be read back");
            None
        }
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let now = monotonic_ns();
        let lost = counters.lost_events();
        let before = shared.lost_events.swap(lost, Ordering::Relaxed);
        let mut effects = Vec::new();
        if lost > before {
            tracing::warn!(
                lost_events = lost,
                new = lost - before,
                "kernel events lost: ring buffer full; looking for what they were"
            );
            shared.reactions().events_lost(now);
            if kmsg.is_none() {
                effects.push(Effect::StopHeartbeat {
                    reason: format!(
                        "{} kernel events were lost and /dev/kmsg cannot be read to find what they were",
                        lost - before
                    ),
                });
            }
        }
        if let Some(k) = kmsg.as_mut() {
            let lines = k.drain();
            let mut r = shared.reactions();
            r.on_kernel_log(lines.iter().map(|l| (l.level, l.text.as_str())), now);
            effects.extend(r.check_unseen(now, &ProcHost));
        }
        effects.extend(shared.reactions().sweep(now, &ProcHost));
        shared.apply(effects);
        // The gate's senders follow what is monitored (forks and exits reach it at
        // once; this catches processes found at exec, by name or cgroup).
        let monitored: Vec<u32> = shared.reactions().monitor().targets().collect();
        shared.service_gate.monitored(monitored);
        let untracked = counters.untracked_syscalls();
        let before = shared.untracked_syscalls.swap(untracked, Ordering::Relaxed);
        if untracked > before {
            tracing::warn!(
                untracked_syscalls = untracked,
                "syscalls not tracked: in-flight table full"
            );
        }
    }
}

/// Tell systemd we are ready, keep STATUS= current, and send WATCHDOG=1 only while the
/// event reader and scanner make progress (a wedged daemon is restarted by systemd).
pub(super) async fn notify_systemd(shared: Arc<Shared>, n: Arc<Notifier>) {
    let status = |s: &Shared| match s.latch.reason() {
        None => format!(
            "STATUS=heartbeat sending; {} processes monitored",
            s.reactions().monitor().targets().count()
        ),
        Some(r) => format!("STATUS=heartbeat STOPPED: {r}"),
    };
    let mut last = status(&shared);
    n.notify(&format!("READY=1\n{last}"));
    let keepalive = sdnotify::watchdog_interval();
    let tick = keepalive
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    loop {
        ticker.tick().await;
        let now = status(&shared);
        if now != last {
            n.notify(&now);
            last = now;
        }
        if keepalive.is_some() && shared.liveness.blocker(monotonic_ns()).is_none() {
            n.notify("WATCHDOG=1");
        }
    }
}
