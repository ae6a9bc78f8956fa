//! Alert sinks. Every incident is stored first, with a row per destination in the
//! store's outbox (in the same transaction), then logged, then delivered from the
//! outbox: to the Alertmanager sender (a thread of its own) and to the exec hook (a
//! thread per run), each delivery recorded when it ends, a failed one retried with
//! backoff, and what a crash interrupted delivered after the restart. All on a thread
//! of its own: nothing here can hold up the heartbeat.
use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use crate::{
    incidents::alertmanager::Notice,
    incidents::store::Store,
    incidents::{Incident, Kind},
    kernel::procfs,
};

/// The exec hook: `PROGRAM CLASS HOST SUMMARY`, the incident as JSON on stdin,
/// nagios-style; killed after `timeout`.
#[derive(Clone, Debug)]
pub struct ExecHook {
    pub program: PathBuf,
    pub timeout: Duration,
}

/// Counters the daemon reports.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub stored: AtomicU64,
    pub store_errors: AtomicU64,
    pub hook_runs: AtomicU64,
    pub hook_failures: AtomicU64,
}

/// Hooks running at once, at most; the others wait in the outbox rather than queue
/// behind a hook that hangs.
const MAX_HOOKS_RUNNING: u64 = 4;

/// Outbox destinations (the `destination` of its rows).
pub const HOOK: &str = "exec-hook";
pub const ALERTMANAGER: &str = "alertmanager";

/// How often the outbox is looked at for deliveries that are due (retries, and what a
/// restart found undelivered).
const OUTBOX_TICK: Duration = Duration::from_secs(1);

/// A failed delivery is tried again after 1 s (its first failure), doubling each time,
/// at most 5 minutes.
fn retry_after(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.min(16))).min(Duration::from_secs(300))
}

/// An incident to record, and whether it runs the exec hook (its target may have opted
/// out).
pub struct Alert {
    pub incident: Incident,
    pub run_hook: bool,
}

/// What the sink thread does: the writes to the store, in order, off the daemon's
/// other threads.
pub enum Sink {
    /// Store an incident, then alert.
    Alert(Box<Alert>),
    /// The heartbeat was stopped by a verdict (Some, with the reason) or resumed (None):
    /// kept in the store, so a restarted daemon keeps it stopped.
    Latch(Option<String>),
    /// A delivery of incident `id` to `destination` ended: done, or failed (why).
    Delivered {
        id: i64,
        destination: &'static str,
        result: Result<(), String>,
    },
}

/// Who the incidents are from: with the incident id, what lets a receiver drop a
/// duplicate (a delivery that a crash interrupted is made again after the restart).
#[derive(Clone, Debug)]
pub struct Origin {
    pub node: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

impl Origin {
    pub fn key(&self, id: i64) -> String {
        format!("{}/{}/{id}", self.node, self.boot_id)
    }
}

/// Where incidents go once stored.
pub struct Destinations {
    pub hook: Option<ExecHook>,
    pub alertmanager: Option<mpsc::Sender<Notice>>,
    pub origin: Origin,
    /// Test hook: hold each stored incident this long before delivering it.
    pub hold: Option<Duration>,
    /// Where a stop's reason is written for the next boot (`/dev/pmsg0`).
    pub pmsg: PathBuf,
}

impl Destinations {
    /// The outbox rows an incident gets: the hook's, if there is a hook and the
    /// incident runs it; Alertmanager's, if there is one.
    pub fn names(&self, run_hook: bool) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.hook.is_some() && run_hook {
            names.push(HOOK);
        }
        if self.alertmanager.is_some() {
            names.push(ALERTMANAGER);
        }
        names
    }
}

/// Start the sink thread on `channel` (made by the caller, so that a destination can
/// report deliveries to it); send incidents and latches to its sender.
pub fn start(
    store: Arc<Mutex<Store>>,
    to: Destinations,
    stats: Arc<SinkStats>,
    channel: (mpsc::Sender<Sink>, mpsc::Receiver<Sink>),
) -> mpsc::Sender<Sink> {
    let (tx, rx) = channel;
    let back = tx.clone();
    thread::Builder::new()
        .name("wd-alerts".into())
        .spawn(move || {
            let mut outbox = Outbox {
                store,
                to,
                stats,
                back,
                running: Arc::new(AtomicU64::new(0)),
                in_flight: HashSet::new(),
            };
            loop {
                match rx.recv_timeout(OUTBOX_TICK) {
                    Ok(Sink::Alert(alert)) => outbox.take(*alert),
                    Ok(Sink::Latch(latch)) => outbox.latch(latch),
                    Ok(Sink::Delivered {
                        id,
                        destination,
                        result,
                    }) => outbox.delivered(id, destination, result),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                outbox.deliver_due();
            }
        })
        .expect("spawn alert thread");
    tx
}

/// The sink thread's state: the store, where deliveries go, and what is being
/// delivered now.
struct Outbox {
    store: Arc<Mutex<Store>>,
    to: Destinations,
    stats: Arc<SinkStats>,
    /// The sink's own channel: deliveries report back through it.
    back: mpsc::Sender<Sink>,
    running: Arc<AtomicU64>,
    /// (incident, destination) handed out and not yet reported back.
    in_flight: HashSet<(i64, &'static str)>,
}

impl Outbox {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store an incident with its deliveries, log it; delivery follows from the outbox.
    fn take(&mut self, alert: Alert) {
        let Alert {
            incident: mut inc,
            run_hook,
        } = alert;
        let destinations = self.to.names(run_hook);
        let stored = self.store().insert_for(&mut inc, &destinations);
        match stored {
            Ok(_) => {
                self.stats.stored.fetch_add(1, Ordering::Relaxed);
                log(&inc);
                if let Some(hold) = self.to.hold {
                    tracing::warn!(
                        hold_ms = hold.as_millis() as u64,
                        "test hook: holding the incident before delivery"
                    );
                    thread::sleep(hold);
                }
            }
            Err(e) => {
                // Still alert, once and now: losing the record must not lose the alert.
                tracing::error!(error = %e, "incident not stored: delivered without the outbox");
                self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                log(&inc);
                if destinations.contains(&ALERTMANAGER) {
                    self.send_to_alertmanager(inc.clone());
                }
                if let Some(hook) = self.to.hook.clone().filter(|_| run_hook) {
                    self.run_hook(&hook, &inc);
                }
            }
        }
    }

    fn latch(&mut self, latch: Option<String>) {
        // First, for the next boot: a node whose heartbeat stops may be reset next (a
        // peer's fencing, a hardware watchdog).
        if let Some(reason) = &latch {
            super::pstore::write_pmsg(&self.to.pmsg, reason);
        }
        let done = match &latch {
            Some(reason) => self.store().set_latch(reason, super::now_unix_ms()),
            None => self.store().clear_latch(),
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "the heartbeat's latch is not kept: a restarted daemon may send it");
        }
        if let (None, Some(am)) = (&latch, &self.to.alertmanager) {
            let _ = am.send(Notice::Resumed);
        }
    }

    fn delivered(&mut self, id: i64, destination: &'static str, result: Result<(), String>) {
        self.in_flight.remove(&(id, destination));
        let mut store = self.store();
        let done = match &result {
            Ok(()) => store.delivered(id, destination),
            Err(e) => {
                let wait = retry_after(store.attempts(id, destination).unwrap_or(0));
                tracing::warn!(incident = id, destination, error = %e, retry_in_ms = wait.as_millis() as u64, "delivery failed: retried");
                store.failed(
                    id,
                    destination,
                    e,
                    super::now_unix_ms() + wait.as_millis() as u64,
                )
            }
        };
        if let Err(e) = done {
            tracing::error!(incident = id, destination, error = %e, "the outbox could not record a delivery");
        }
    }

    /// Hand out every delivery that is due and not under way.
    fn deliver_due(&mut self) {
        let now = super::now_unix_ms();
        for destination in [HOOK, ALERTMANAGER] {
            let due = match self.store().due(destination, now) {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox");
                    continue;
                }
            };
            for (id, _) in due {
                if self.in_flight.contains(&(id, destination)) {
                    continue;
                }
                if destination == HOOK && self.running.load(Ordering::Acquire) >= MAX_HOOKS_RUNNING
                {
                    break;
                }
                let Ok(Some(inc)) = self.store().get(id) else {
                    continue;
                };
                self.in_flight.insert((id, destination));
                match destination {
                    HOOK => match self.to.hook.clone() {
                        Some(hook) => self.run_hook(&hook, &inc),
                        None => self.report(id, HOOK, Err("no exec hook configured now".into())),
                    },
                    _ => self.send_to_alertmanager(inc),
                }
            }
        }
    }

    fn report(&self, id: i64, destination: &'static str, result: Result<(), String>) {
        let _ = self.back.send(Sink::Delivered {
            id,
            destination,
            result,
        });
    }

    fn send_to_alertmanager(&mut self, inc: Incident) {
        let Some(am) = &self.to.alertmanager else {
            return;
        };
        let cgroup = inc.pid.and_then(procfs::cgroup_path);
        let key = inc.id.map(|id| self.to.origin.key(id));
        let _ = am.send(Notice::Incident {
            incident: Box::new(inc),
            cgroup,
            key,
        });
    }

    fn run_hook(&self, hook: &ExecHook, inc: &Incident) {
        self.stats.hook_runs.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::AcqRel);
        let hook = hook.clone();
        let body = serde_json::to_vec(inc).expect("incidents serialize");
        let args = [inc.class.clone(), inc.host.clone(), inc.summary.clone()];
        let id = inc.id;
        let key = id.map(|i| self.to.origin.key(i)).unwrap_or_default();
        let (stats, running, back) = (self.stats.clone(), self.running.clone(), self.back.clone());
        thread::spawn(move || {
            let result = exec(&hook, &args, &body, id, &key);
            running.fetch_sub(1, Ordering::AcqRel);
            if let Err(e) = &result {
                stats.hook_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(program = %hook.program.display(), incident = id, error = %e, "exec hook failed");
            }
            if let Some(id) = id {
                let _ = back.send(Sink::Delivered {
                    id,
                    destination: HOOK,
                    result,
                });
            }
        });
    }
}

fn log(inc: &Incident) {
    let id = inc.id.unwrap_or(-1);
    match (&inc.kind, &inc.stall) {
        (Kind::SyscallStall, Some(st)) => tracing::error!(
            incident = id,
            pid = inc.pid,
            tid = inc.tid,
            comm = inc.comm.as_deref().unwrap_or(""),
            syscall = st.syscall.as_deref().unwrap_or("-"),
            elapsed_ms = st.elapsed_ms,
            budget_ms = st.budget_ms,
            state = st.state.as_deref().unwrap_or("?"),
            wchan = st.wchan.as_deref().unwrap_or("?"),
            reason = %st.reason,
            "thread stalled"
        ),
        (Kind::KernelReport, _) => {
            let r = inc.report.as_ref();
            tracing::error!(
                incident = id,
                class = %inc.class,
                rule = r.and_then(|r| r.rule.as_deref()).unwrap_or("-"),
                pid = inc.pid,
                tid = inc.tid,
                comm = inc.comm.as_deref().unwrap_or(""),
                monitored = inc.monitored,
                stopped_heartbeat = inc.stopped_heartbeat,
                lines = r.map_or(0, |r| r.lines.len()),
                line = r.map_or("", |r| r.first_line.as_str()),
                "kernel problem reported"
            )
        }
        _ => tracing::error!(
            incident = id,
            kind = inc.kind.as_str(),
            class = %inc.class,
            pid = inc.pid,
            tid = inc.tid,
            comm = inc.comm.as_deref().unwrap_or(""),
            monitored = inc.monitored,
            stopped_heartbeat = inc.stopped_heartbeat,
            summary = %inc.summary,
            "incident"
        ),
    }
}

/// Run the hook for incident `id`: `PROGRAM CLASS HOST SUMMARY`, the incident as JSON on
/// stdin, `WATCHDOG_INCIDENT_ID` and `WATCHDOG_INCIDENT_KEY` (node/boot id/incident id:
/// the same key again is the same incident delivered again) in the environment.
fn exec(
    hook: &ExecHook,
    args: &[String; 3],
    body: &[u8],
    id: Option<i64>,
    key: &str,
) -> Result<(), String> {
    let id = id.map(|i| i.to_string()).unwrap_or_default();
    crate::program::run(
        &hook.program,
        args,
        body,
        &[
            ("WATCHDOG_INCIDENT_ID", id),
            ("WATCHDOG_INCIDENT_KEY", key.to_owned()),
        ],
        hook.timeout,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn hook(program: &str, timeout_ms: u64) -> ExecHook {
        ExecHook {
            program: program.into(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn args() -> [String; 3] {
        ["bug".into(), "node".into(), "summary".into()]
    }

    #[test]
    fn a_failed_delivery_waits_longer_each_time_up_to_five_minutes() {
        let waits: Vec<u64> = (0..12).map(|a| retry_after(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn a_hook_that_succeeds() {
        assert_eq!(
            exec(&hook("/bin/true", 5000), &args(), b"{}", Some(1), "n/b/1"),
            Ok(())
        );
    }

    #[test]
    fn a_missing_hook_is_named() {
        let e = exec(
            &hook("/nonexistent/hook", 5000),
            &args(),
            b"{}",
            Some(1),
            "n/b/1",
        )
        .unwrap_err();
        assert!(
            e.starts_with("cannot run it: No such file or directory"),
            "{e}"
        );
    }

    #[test]
    fn a_failing_hook_reports_its_status_and_stderr() {
        let e = exec(
            &hook("/bin/sh", 5000),
            &["-c".into(), "echo broken >&2; exit 3".into(), "x".into()],
            b"",
            None,
            "",
        )
        .unwrap_err();
        assert_eq!(e, "exited with exit status: 3: broken");
    }

    #[test]
    fn a_hanging_hook_is_killed_at_its_timeout() {
        let started = Instant::now();
        let e = exec(
            &hook("/bin/sh", 200),
            &["-c".into(), "sleep 30".into(), "x".into()],
            b"",
            None,
            "",
        )
        .unwrap_err();
        assert_eq!(e, "killed after the 200ms timeout, with its process group");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Whether process `pid` is gone (or a zombie nobody reaped yet).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z'),
        }
    }

    #[test]
    fn a_hook_whose_children_hold_its_output_is_killed_at_its_timeout_with_them() {
        let dir = std::env::temp_dir().join(format!("wd-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("child.pid");
        // A child in the background keeps stderr open; the hook never reads its stdin
        // (a body larger than a pipe holds) and sleeps past its timeout.
        let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
        let body = vec![b'x'; 1 << 20];
        let started = Instant::now();
        let e = exec(
            &hook("/bin/sh", 300),
            &["-c".into(), script, "x".into()],
            &body,
            None,
            "",
        )
        .unwrap_err();
        assert!(e.starts_with("killed after the 300ms timeout"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let child: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !gone(child) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(child), "the hook's child {child} outlived the timeout");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_hook_whose_child_keeps_stderr_open_is_not_waited_for() {
        let started = Instant::now();
        let e = exec(
            &hook("/bin/sh", 500),
            &[
                "-c".into(),
                "echo broken >&2; sleep 30 & exit 3".into(),
                "x".into(),
            ],
            b"",
            None,
            "",
        )
        .unwrap_err();
        assert_eq!(e, "exited with exit status: 3: broken");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
