//! Answers to the control socket (wdctl) and the metrics endpoint, from the shared state.
use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
};

use super::shared::{Shared, lock};
use crate::{
    control::{
        metrics::Snapshot,
        proto::{HeartbeatState, Reply, Request, Response, StatusReport},
        server::Handler,
    },
    judging::monitor::ThreadRow,
    kernel::{clock::monotonic_ns, probes::Probes, procfs},
};

pub(super) fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |req| match req {
        Request::Threads => Response::Ok(Reply::Threads(thread_rows(&shared))),
        Request::Status => Response::Ok(Reply::Status(Box::new(status(&shared)))),
        Request::Incidents { limit } => match lock(&shared.store).list(limit) {
            Ok(list) => Response::Ok(Reply::Incidents(list)),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::Resume => resume(&shared),
        Request::Incident { id } => match lock(&shared.store).get(id) {
            Ok(Some(inc)) => Response::Ok(Reply::Incident(Box::new(inc))),
            Ok(None) => Response::Error(format!("no incident {id} (see wdctl incidents)")),
            Err(e) => Response::Error(e.to_string()),
        },
    })
}

/// The operator's resume: refused, with the reasons, while anything stands in the way.
fn resume(shared: &Shared) -> Response {
    let mut blockers = shared.reactions().resume_blockers();
    blockers.extend(shared.liveness.blocker(monotonic_ns()));
    if !blockers.is_empty() {
        tracing::warn!(reasons = %blockers.join("; "), "resume refused");
        return Response::Error(format!("not resuming: {}", blockers.join("; ")));
    }
    if shared.latch.is_open() {
        return Response::Ok(Reply::Resumed("the heartbeat is already being sent".into()));
    }
    shared.resume_heartbeat();
    tracing::warn!("heartbeat resumed by the operator");
    Response::Ok(Reply::Resumed("heartbeat resumed".into()))
}

fn thread_rows(shared: &Shared) -> Vec<ThreadRow> {
    let targets: Vec<u32> = shared.reactions().monitor().targets().collect();
    // /proc is read outside the lock, so the scanner is never held up by a listing.
    let listing: BTreeMap<u32, Vec<u32>> = targets
        .into_iter()
        .map(|t| (t, procfs::threads(t)))
        .collect();
    shared.reactions().monitor().rows(
        monotonic_ns(),
        &listing,
        procfs::comm,
        procfs::current_syscall,
    )
}

/// The monitored processes, and how many threads they have now.
fn monitored(shared: &Shared) -> (Vec<u32>, usize) {
    let pids: Vec<u32> = shared.reactions().monitor().targets().collect();
    // /proc is read outside the lock, so the scanner is never held up by a reader.
    let threads = pids.iter().map(|&p| procfs::threads(p).len()).sum();
    (pids, threads)
}

/// The outbox's counts (none if the store cannot say now: a status never waits on it
/// for long).
fn outbox(shared: &Shared) -> Vec<crate::incidents::store::OutboxCounts> {
    lock(&shared.store).outbox_counts().unwrap_or_default()
}

fn status(shared: &Shared) -> StatusReport {
    let (pids, threads) = monitored(shared);
    let stats = &shared.sink_stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let gates = shared.service_gate.report();
    let gates_closed = shared.service_gate.closed();
    let r = shared.reactions();
    let m = r.monitor();
    StatusReport {
        gated_packets: gates.iter().map(|g| g.dropped).sum(),
        unmatched_error_lines: r.unmatched_errors(),
        gates,
        gates_closed,
        node_id: shared.node_id.clone(),
        heartbeat: if shared.latch.is_open() {
            HeartbeatState::Sending
        } else {
            HeartbeatState::Stopped
        },
        stopped_reason: shared.latch.reason(),
        stopped_at_ns: shared.latch.closed_at_ns(),
        heartbeats_sent: shared.sender.sent(),
        heartbeat_send_errors: shared.sender.send_errors(),
        monitored_pids: pids,
        monitored_threads: threads,
        budget_ms: m.default_policy().budgets.default.as_millis() as u64,
        kernel_lines: r.kernel_lines(),
        lost_events: shared.lost_events(),
        untracked_syscalls: shared.untracked_syscalls(),
        stalls: m.stalls().to_vec(),
        incidents_stored: load(&stats.stored),
        incident_store_errors: load(&stats.store_errors),
        exec_hook_runs: load(&stats.hook_runs),
        exec_hook_failures: load(&stats.hook_failures),
        outbox: outbox(shared),
    }
}

/// What the metrics endpoint reports as current.
pub(super) fn metrics_snapshot(s: &Shared) -> Snapshot {
    let (_, threads) = monitored(s);
    Snapshot {
        heartbeat_sending: s.latch.is_open(),
        stopped_reason: s.latch.reason(),
        outbox: outbox(s)
            .into_iter()
            .map(|o| (o.destination, o.pending, o.failed))
            .collect(),
        alertmanager_sent: s.alertmanager_stats.sent.load(Ordering::Relaxed),
        alertmanager_failures: s.alertmanager_stats.failures.load(Ordering::Relaxed),
        heartbeats_sent: s.sender.sent(),
        monitored_threads: threads as i64,
        lost_events: s.lost_events(),
        untracked_syscalls: s.untracked_syscalls(),
        kernel_lines: s.kernel_lines(),
        unmatched_error_lines: s.reactions().unmatched_errors(),
        gates: s
            .service_gate
            .report()
            .into_iter()
            .map(|g| (g.gate, g.dropped))
            .collect(),
        probes: lock(&s.probes)
            .as_ref()
            .map(Probes::run_stats)
            .unwrap_or_default(),
    }
}
