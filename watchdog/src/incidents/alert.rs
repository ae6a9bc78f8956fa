//! Alert sinks. Every incident is stored first, then logged, then handed to the
//! Alertmanager sender (a thread of its own) and the exec hook, on a thread of its own:
//! nothing here can hold up the heartbeat.
use std::{
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

/// Hooks running at once, at most; more are refused (and counted) rather than queued
/// behind a hook that hangs.
const MAX_HOOKS_RUNNING: u64 = 4;

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
}

/// Start the sink thread; send incidents and latches to the returned sender.
pub fn start(
    store: Arc<Mutex<Store>>,
    hook: Option<ExecHook>,
    alertmanager: Option<mpsc::Sender<Notice>>,
    stats: Arc<SinkStats>,
) -> mpsc::Sender<Sink> {
    let (tx, rx) = mpsc::channel::<Sink>();
    let running = Arc::new(AtomicU64::new(0));
    thread::Builder::new()
        .name("wd-alerts".into())
        .spawn(move || {
            for message in rx {
                let Alert {
                    incident: mut inc,
                    run_hook: hook_wanted,
                } = match message {
                    Sink::Alert(alert) => *alert,
                    Sink::Latch(latch) => {
                        let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                        let done = match &latch {
                            Some(reason) => store.set_latch(reason, super::now_unix_ms()),
                            None => store.clear_latch(),
                        };
                        if let Err(e) = done {
                            tracing::error!(error = %e, "the heartbeat's latch is not kept: a restarted daemon may send it");
                        }
                        if let (None, Some(am)) = (&latch, &alertmanager) {
                            let _ = am.send(Notice::Resumed);
                        }
                        continue;
                    }
                };
                match store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(&mut inc)
                {
                    Ok(_) => stats.stored.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        // Still alert: losing the record must not lose the alert.
                        tracing::error!(error = %e, "incident not stored");
                        stats.store_errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
                log(&inc);
                if let Some(am) = &alertmanager {
                    let cgroup = inc.pid.and_then(procfs::cgroup_path);
                    let _ = am.send(Notice::Incident {
                        incident: Box::new(inc.clone()),
                        cgroup,
                    });
                }
                if let Some(h) = hook.as_ref().filter(|_| hook_wanted) {
                    run_hook(h, &inc, &stats, &running);
                }
            }
        })
        .expect("spawn alert thread");
    tx
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

fn run_hook(hook: &ExecHook, inc: &Incident, stats: &Arc<SinkStats>, running: &Arc<AtomicU64>) {
    stats.hook_runs.fetch_add(1, Ordering::Relaxed);
    if running.fetch_add(1, Ordering::AcqRel) >= MAX_HOOKS_RUNNING {
        running.fetch_sub(1, Ordering::AcqRel);
        stats.hook_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(program = %hook.program.display(), incident = inc.id, "exec hook not run: {MAX_HOOKS_RUNNING} still running");
        return;
    }
    let hook = hook.clone();
    let body = serde_json::to_vec(inc).expect("incidents serialize");
    let args = [inc.class.clone(), inc.host.clone(), inc.summary.clone()];
    let id = inc.id;
    let (stats, running) = (stats.clone(), running.clone());
    thread::spawn(move || {
        let result = exec(&hook, &args, &body, id);
        running.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = result {
            stats.hook_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(program = %hook.program.display(), incident = id, error = %e, "exec hook failed");
        }
    });
}

/// Run the hook for incident `id`: `PROGRAM CLASS HOST SUMMARY`, the incident as JSON on
/// stdin, `WATCHDOG_INCIDENT_ID` in the environment.
fn exec(hook: &ExecHook, args: &[String; 3], body: &[u8], id: Option<i64>) -> Result<(), String> {
    let id = id.map(|i| i.to_string()).unwrap_or_default();
    crate::program::run(
        &hook.program,
        args,
        body,
        &[("WATCHDOG_INCIDENT_ID", id)],
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
    fn a_hook_that_succeeds() {
        assert_eq!(
            exec(&hook("/bin/true", 5000), &args(), b"{}", Some(1)),
            Ok(())
        );
    }

    #[test]
    fn a_missing_hook_is_named() {
        let e = exec(&hook("/nonexistent/hook", 5000), &args(), b"{}", Some(1)).unwrap_err();
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
