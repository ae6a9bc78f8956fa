//! The daemon: wires probes, monitor, heartbeat, incidents and control socket together.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, LazyLock, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use regex::Regex;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use watchdog_common::InFlight;

use crate::{
    alert::{self, Alert, ExecHook, SinkStats},
    cli::DaemonArgs,
    clock::monotonic_ns,
    config::{self, Config, ConfigError},
    control::{
        proto::{HeartbeatState, Reply, Request, Response, StatusReport},
        server::{self, Handler},
    },
    ebpf::{self, Counters, Probes},
    events::{self, Event, KernelLine, TaskEvent, TaskSignalKind, ThreadExit},
    heartbeat::{self, sender::Gate},
    iface::Interface,
    incidents::{self, Incident, Kind, SignalDetails, StallDetails},
    kmsg::{
        Action, RuleSet, RulesError,
        incident::{Assembler, Line, Printer, Report},
    },
    liveness::{Liveness, Part},
    monitor::{LineVerdict, Monitor, Stall},
    policy::DEFAULT_POLICY,
    procfs,
    store::{Store, StoreError},
    targets::{TargetError, TargetTable},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Targets(#[from] TargetError),
    #[error("--interface {name}: {source}")]
    Interface {
        name: String,
        source: crate::iface::IfaceError,
    },
    #[error("--rules: {0}")]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--store: {0}")]
    Store(#[from] StoreError),
    #[error("--heartbeat: {0}")]
    Heartbeat(#[from] heartbeat::socket::SocketError),
    #[error("--metrics {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
    #[error("--heartbeat-key: {0}")]
    Key(#[from] heartbeat::key::KeyError),
    #[error("--socket: {0}")]
    Control(#[from] server::ServerError),
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the daemon runs with, validated.
pub struct Settings {
    /// The targets, checked against the system.
    pub targets: TargetTable,
    pub interface: Interface,
    /// The node id, or the host name.
    pub node_id: String,
    /// The heartbeat's HMAC key, if it is signed.
    pub heartbeat_key: Option<Vec<u8>>,
    pub rules: RuleSet,
    /// Everything else, as configured (and what a reload compares against).
    pub config: Config,
}

impl Settings {
    /// Check the configuration against the system: pids and interface exist, the rules
    /// file is valid.
    pub fn from_config(c: Config) -> Result<Self, DaemonError> {
        let targets = TargetTable::resolve(&c.targets)?;
        let interface =
            Interface::by_name(&c.interface).map_err(|source| DaemonError::Interface {
                name: c.interface.clone(),
                source,
            })?;
        let rules = load_rules(&c)?;
        let heartbeat_key = c
            .heartbeat_key
            .as_deref()
            .map(heartbeat::key::load)
            .transpose()?;
        Ok(Settings {
            targets,
            heartbeat_key,
            interface,
            node_id: c.node_id.clone().unwrap_or_else(hostname),
            rules,
            config: c,
        })
    }

    /// Read the config file and the command line, and check them.
    pub fn load(args: &DaemonArgs) -> Result<Self, DaemonError> {
        Self::from_config(config::load(args)?)
    }
}

fn load_rules(c: &Config) -> Result<RuleSet, RulesError> {
    match &c.rules {
        Some(path) => RuleSet::with_user_file(path),
        None => Ok(RuleSet::builtin()),
    }
}

/// The host name, cut to what fits a heartbeat node id.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buffer and its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let mut name = if rc == 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() {
        name = "node".into();
    }
    while name.len() > heartbeat::packet::NODE_ID_MAX {
        name.pop();
    }
    name
}

/// The event reader and the scanner must each make progress within this long, or the
/// heartbeat stops (the reader wakes at least every READER_TICK, the scanner at least
/// every 500 ms).
const LIVENESS_BOUND: Duration = Duration::from_secs(2);
/// The event reader's longest wait for the ring buffer before it says it is alive.
const READER_TICK: Duration = Duration::from_millis(250);

/// A kernel report is complete after this long without a further line from its printer.
const REPORT_QUIET: Duration = Duration::from_secs(1);
/// A fatal signal this recent explains a monitored process's death.
const CRASH_WINDOW_NS: u64 = 5_000_000_000;

/// The kernel's line about a user fault: `svc[1234]: segfault at 0 ip ... error 6 in ...`,
/// `traps: svc[1234] general protection fault ip:...`, `svc[1234]: trap divide error ...`.
static FAULT_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^traps: )?\S+\[\d+\]:? (?:segfault at|general protection fault|trap |potentially unexpected fatal signal)").unwrap()
});

/// State shared by the daemon's tasks.
struct Shared {
    monitor: Mutex<Monitor>,
    /// The command line, which a reload merges the file under again.
    args: DaemonArgs,
    config: Mutex<Config>,
    /// What the config's targets pick on this system (replaced by a reload).
    targets: Mutex<TargetTable>,
    /// Taken (and so detached) at shutdown.
    probes: Mutex<Option<Probes>>,
    /// Swapped whole on reload.
    rules: Mutex<Arc<RuleSet>>,
    assembler: Mutex<Assembler>,
    gate: Arc<Gate>,
    /// Progress of the event reader and the scanner, checked before every heartbeat.
    liveness: Arc<Liveness>,
    sender: Arc<heartbeat::sender::Sender>,
    node_id: String,
    lost_events: AtomicU64,
    untracked_syscalls: AtomicU64,
    /// Kernel messages read from the ring buffer.
    kernel_lines: AtomicU64,
    metrics: crate::metrics::Metrics,
    store: Arc<Mutex<Store>>,
    sink: Mutex<mpsc::Sender<Alert>>,
    sink_stats: Arc<SinkStats>,
    /// Last fatal-by-default signal for each monitored process, and when.
    recent_signals: Mutex<HashMap<u32, (SignalDetails, u64)>>,
    /// True until the first process of a --comm/--cgroup target appears, when none ran
    /// at start: the heartbeat waits for the service.
    awaiting_first: std::sync::atomic::AtomicBool,
    /// Processes already sent the stall signal.
    signalled: Mutex<HashSet<u32>>,
    /// Last kernel fault line printed by each monitored process.
    fault_lines: Mutex<HashMap<u32, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the verdicts down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn monitor(&self) -> MutexGuard<'_, Monitor> {
        lock(&self.monitor)
    }

    /// Record an incident; it runs the exec hook unless its process's target opted out.
    fn record(&self, inc: Incident) {
        let run_hook = inc
            .pid
            .is_none_or(|pid| self.monitor().policy(pid).exec_hook);
        self.record_with(inc, run_hook);
    }

    fn record_with(&self, incident: Incident, run_hook: bool) {
        let alert = Alert { incident, run_hook };
        if lock(&self.sink).send(alert).is_err() {
            tracing::error!("alert thread is gone: incident dropped");
        }
    }

    fn incident(
        &self,
        kind: Kind,
        class: &str,
        summary: String,
        monitored: bool,
        stopped: bool,
    ) -> Incident {
        Incident {
            id: None,
            at_unix_ms: incidents::now_unix_ms(),
            kind,
            class: class.to_owned(),
            summary,
            host: self.node_id.clone(),
            monitored,
            stopped_heartbeat: stopped,
            pid: None,
            tid: None,
            comm: None,
            report: None,
            stall: None,
            signal: None,
        }
    }

    /// A verdict: stop the heartbeat first, everything else after.
    fn stop_heartbeat(&self, stall: &Stall) {
        self.close_gate(stall);
        self.signal_stalled(stall);
    }

    /// Stop the heartbeat (and send the last gasp) for `stall`.
    fn close_gate(&self, stall: &Stall) {
        let reason = format!(
            "thread {} ({}) of pid {}: {}",
            stall.tid, stall.comm, stall.pid, stall.reason
        );
        self.metrics.verdict(&stall.cause);
        if self.gate.close(&reason) {
            tracing::warn!(reason = %reason, "stopping the heartbeat");
            self.sender.last_gasp(&reason);
        }
    }

    /// The opt-in stall signal, once per process, never to one that is gone.
    fn signal_stalled(&self, stall: &Stall) {
        let Some(sig) = self.monitor().policy(stall.pid).stall_signal else {
            return;
        };
        if stall.cause == "exited" || !lock(&self.signalled).insert(stall.pid) {
            return;
        }
        // SAFETY: kill(2) with a pid we monitor and a valid signal number.
        let rc = unsafe { libc::kill(stall.pid as i32, sig) };
        let name = incidents::signal_name(sig);
        if rc == 0 {
            tracing::warn!(pid = stall.pid, signal = %name, "signalled the stalled process");
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(pid = stall.pid, signal = %name, error = %error, "could not signal the stalled process");
        }
    }

    /// A syscall overran its budget: stop the heartbeat, read what /proc shows, then
    /// send the stall signal and record.
    fn on_budget_stall(&self, stall: &Stall) {
        self.close_gate(stall);
        let (pid, tid) = (stall.pid, stall.tid);
        let details = StallDetails {
            syscall: stall.syscall.clone(),
            elapsed_ms: stall.elapsed_ms,
            budget_ms: stall.budget_ms,
            reason: stall.reason.clone(),
            state: procfs::state(pid, tid),
            wchan: procfs::wchan(pid, tid),
            args: procfs::syscall_args(pid, tid),
            kernel_stack: procfs::kernel_stack(pid, tid),
        };
        // Only now: the signal wakes a killable sleep, and the incident must show the
        // stall, not the thread dying of the signal.
        self.signal_stalled(stall);
        let summary = format!(
            "thread {tid} ({}) of pid {pid}: {}",
            stall.comm, stall.reason
        );
        let mut inc = self.incident(Kind::SyscallStall, "stall", summary, true, true);
        inc.pid = Some(pid);
        inc.tid = Some(tid);
        inc.comm = Some(stall.comm.clone());
        inc.stall = Some(details);
        self.record(inc);
    }

    /// A kernel report is complete: record it, with whom it is about.
    fn on_report(&self, report: Report) {
        let subject = report.subject();
        let tgid = subject
            .as_ref()
            .and_then(|s| match (&s.how[..], &report.printer) {
                ("printer", Some(p)) => Some(p.pid),
                _ => self.tgid_of(s.pid),
            });
        let monitored = tgid.is_some_and(|t| self.monitor().is_target(t));
        let stopped = monitored && report.action == Action::StopHeartbeat;
        let mut inc = self.incident(
            Kind::KernelReport,
            report.class.as_str(),
            report.summary(),
            monitored,
            stopped,
        );
        inc.pid = tgid;
        inc.tid = subject.as_ref().map(|s| s.pid);
        inc.comm = subject.and_then(|s| s.comm);
        inc.report = Some(report);
        self.record(inc);
    }

    fn on_kernel_line(&self, line: KernelLine) {
        self.kernel_lines.fetch_add(1, Ordering::Relaxed);
        let rules = lock(&self.rules).clone();
        let verdict = self
            .monitor()
            .on_kernel_line(&rules, &line, procfs::tgid_of);
        match &verdict {
            LineVerdict::Stall(stall) => {
                self.metrics.kernel_report(&stall.cause);
                self.stop_heartbeat(stall);
            }
            LineVerdict::Alert { class, .. } => self.metrics.kernel_report(class.as_str()),
            LineVerdict::Ordinary => {}
        }
        if self.monitor().is_target(line.tgid) && FAULT_LINE.is_match(&line.text) {
            lock(&self.fault_lines).insert(line.tgid, line.text.clone());
        }
        let reports = lock(&self.assembler).push(
            &rules,
            Line {
                text: &line.text,
                time: Some(line.ts_ns as f64 / 1e9),
                stream: u64::from(line.tid),
                printer: Some(Printer {
                    pid: line.tgid,
                    tid: line.tid,
                    comm: line.comm.clone(),
                }),
            },
        );
        for r in reports {
            self.on_report(r);
        }
    }

    fn tgid_of(&self, tid: u32) -> Option<u32> {
        self.monitor()
            .known_tgid(tid)
            .or_else(|| procfs::tgid_of(tid))
    }

    fn on_task_event(&self, ev: TaskEvent) {
        match ev.kind {
            TaskSignalKind::Hang => {
                let Some(tgid) = ev
                    .target_tgid
                    .or_else(|| self.tgid_of(ev.target))
                    .filter(|t| self.monitor().is_target(*t))
                else {
                    return;
                };
                let comm = procfs::comm(tgid, ev.target);
                let reason = "kernel hung-task detector: blocked in uninterruptible sleep past hung_task_timeout_secs".to_owned();
                let stall = self.monitor().kernel_stall(
                    ev.target,
                    tgid,
                    comm.clone(),
                    "hung_task",
                    reason.clone(),
                    ev.ts_ns,
                );
                if let Some(stall) = stall {
                    self.stop_heartbeat(&stall);
                    let summary = format!(
                        "thread {} ({}) of pid {tgid}: {reason}",
                        ev.target,
                        comm.as_deref().unwrap_or("?")
                    );
                    let mut inc = self.incident(Kind::HungTask, "hung_task", summary, true, true);
                    inc.pid = Some(tgid);
                    inc.tid = Some(ev.target);
                    inc.comm = comm;
                    self.record(inc);
                }
            }
            TaskSignalKind::NewTarget => {
                // The kernel side made it a target at exec, before its first syscall.
                let policy = lock(&self.targets)
                    .policy_for(ev.target, Some(&ev.by_comm), || {
                        procfs::cgroup_id_of(ev.target)
                    })
                    .unwrap_or(DEFAULT_POLICY);
                self.new_target(
                    ev.target,
                    &ev.by_comm,
                    policy,
                    "exec'd a watched program or in a watched cgroup",
                );
            }
            TaskSignalKind::Forked => {
                // Threads of a target are measured already; a new process is measured
                // too, as a child: its exit is not the service's.
                if procfs::tgid_of(ev.target) != Some(ev.target)
                    || self.monitor().is_target(ev.target)
                {
                    return;
                }
                if let Some(Err(e)) = lock(&self.probes)
                    .as_mut()
                    .map(|p| p.add_following_target(ev.target))
                {
                    tracing::warn!(pid = ev.target, error = %e, "could not monitor a forked process");
                    return;
                }
                self.monitor().add_child(ev.target, ev.by_tgid);
                tracing::debug!(
                    pid = ev.target,
                    parent = ev.by_tgid,
                    "monitoring a forked child"
                );
            }
            TaskSignalKind::OomVictim => {
                if !self.monitor().is_target(ev.target) {
                    return;
                }
                let comm = procfs::comm(ev.target, ev.target);
                let summary = format!(
                    "the OOM killer chose monitored process {} ({})",
                    ev.target,
                    comm.as_deref().unwrap_or("?")
                );
                let mut inc = self.incident(Kind::OomVictim, "oom", summary, true, false);
                inc.pid = Some(ev.target);
                inc.comm = comm;
                self.record(inc);
            }
            TaskSignalKind::Signal { sig, code } => {
                let Some(tgid) = ev.target_tgid.or_else(|| self.tgid_of(ev.target)) else {
                    return;
                };
                let details = SignalDetails {
                    signal: incidents::signal_name(sig),
                    signo: sig,
                    code,
                    code_meaning: incidents::signal_code_meaning(sig, code),
                    target_tid: ev.target,
                    sender_pid: ev.by_tgid,
                    sender_comm: ev.by_comm,
                    fault_line: None,
                };
                // Handled signals are common (a JVM takes SIGSEGV for null checks), so a
                // signal alone is no crash: it explains a death that follows it.
                lock(&self.recent_signals).insert(tgid, (details, ev.ts_ns));
            }
        }
    }

    fn new_target(&self, tgid: u32, comm: &str, policy: usize, how: &str) {
        if !self.monitor().add_target(tgid, comm, policy) {
            return;
        }
        tracing::info!(pid = tgid, comm, how, "monitoring a new process");
        if self.awaiting_first.swap(false, Ordering::AcqRel) {
            self.gate.open();
            tracing::info!(pid = tgid, "the service is up: sending the heartbeat");
        }
    }

    fn on_exit(&self, exit: ThreadExit) {
        self.monitor().forget(exit.tid);
        if !exit.group_dead || !self.monitor().is_target(exit.tgid) {
            return;
        }
        let signal = lock(&self.recent_signals)
            .remove(&exit.tgid)
            .filter(|(_, at)| exit.ts_ns.saturating_sub(*at) <= CRASH_WINDOW_NS);
        let fault = lock(&self.fault_lines).remove(&exit.tgid);
        // How it ended: the zombie's wait status while it is there, else the fatal
        // signal we saw, else we cannot tell.
        let how = procfs::exit_status(exit.tgid).unwrap_or_else(|| match &signal {
            Some((s, _)) => format!("was killed by {} ({})", s.signal, s.code_meaning),
            None => "exited (status unknown: already reaped)".into(),
        });
        // Bound first, so the monitor's guard is dropped before any other lock is
        // taken (reload takes config then monitor: holding them the other way round here
        // could deadlock). The policy is read before the process stops being a target.
        let run_hook = self.monitor().policy(exit.tgid).exec_hook;
        let gone = self
            .monitor()
            .process_gone(exit.tgid, &exit.comm, &how, exit.ts_ns);
        if let Some(Err(e)) = lock(&self.probes)
            .as_mut()
            .map(|p| p.remove_target(exit.tgid))
        {
            tracing::warn!(pid = exit.tgid, error = %e, "could not stop measuring a gone process");
        }
        let Some(stall) = gone else {
            // A child a target forked has ended: that is no verdict.
            tracing::debug!(pid = exit.tgid, how = %how, "monitored child process ended");
            return;
        };
        self.stop_heartbeat(&stall);
        tracing::warn!(pid = exit.tgid, comm = %exit.comm, how = %how, "monitored process is gone");
        if let Some((mut details, _)) = signal {
            details.fault_line = fault;
            let summary = format!(
                "pid {} ({}) died of {} ({}) from pid {} ({})",
                exit.tgid,
                exit.comm,
                details.signal,
                details.code_meaning,
                details.sender_pid,
                details.sender_comm
            );
            let mut inc = self.incident(Kind::Crash, "crash", summary, true, false);
            inc.pid = Some(exit.tgid);
            inc.tid = Some(details.target_tid);
            inc.comm = Some(exit.comm);
            inc.signal = Some(details);
            self.record_with(inc, run_hook);
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings, args: &DaemonArgs) -> Result<(), DaemonError> {
    let store = Store::open(&settings.config.store, settings.config.store_max)?;
    let sock = heartbeat::socket::sender(
        settings.config.group,
        &settings.interface,
        settings.config.ttl,
    )?;
    sock.set_nonblocking(true)?;
    let listener = server::bind(&settings.config.socket, settings.config.socket_group)?;
    let result = run_bound(&settings, args, sock, listener, store).await;
    let _ = std::fs::remove_file(&settings.config.socket);
    result
}

async fn run_bound(
    settings: &Settings,
    args: &DaemonArgs,
    sock: std::net::UdpSocket,
    listener: tokio::net::UnixListener,
    store: Store,
) -> Result<(), DaemonError> {
    let (mut probes, channels) = Probes::load()?;
    // Held for the daemon's lifetime: the statistics are on while it is open.
    let _run_stats = match settings.config.probe_stats {
        true => Some(Probes::enable_run_stats()?),
        false => None,
    };
    // Loading parsed the kernel's BTF (megabytes, now freed): give the heap back, so
    // the daemon's resident size is what it keeps, not what loading needed.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let initial = start_targets(&mut probes, &settings.targets)?;
    let store = Arc::new(Mutex::new(store));
    let sink_stats = Arc::new(SinkStats::default());
    let sink = alert::start(
        store.clone(),
        settings.config.exec_hook.clone().map(|program| ExecHook {
            program,
            timeout: settings.config.exec_hook_timeout,
        }),
        sink_stats.clone(),
    );
    let shared = Arc::new(Shared {
        monitor: Mutex::new(Monitor::new(
            settings.config.policies.clone(),
            initial.iter().copied(),
        )),
        targets: Mutex::new(settings.targets.clone()),
        probes: Mutex::new(Some(probes)),
        rules: Mutex::new(Arc::new(settings.rules.clone())),
        args: args.clone(),
        config: Mutex::new(settings.config.clone()),
        assembler: Mutex::new(Assembler::new(REPORT_QUIET.as_secs_f64())),
        gate: Arc::new(Gate::default()),
        liveness: Arc::new(Liveness::new(LIVENESS_BOUND, monotonic_ns())),
        sender: Arc::new(heartbeat::sender::Sender::new(
            sock,
            settings.node_id.clone(),
            settings.heartbeat_key.clone(),
        )),
        node_id: settings.node_id.clone(),
        lost_events: AtomicU64::new(0),
        untracked_syscalls: AtomicU64::new(0),
        kernel_lines: AtomicU64::new(0),
        metrics: crate::metrics::Metrics::default(),
        store,
        sink: Mutex::new(sink),
        sink_stats,
        recent_signals: Mutex::new(HashMap::new()),
        fault_lines: Mutex::new(HashMap::new()),
        signalled: Mutex::new(HashSet::new()),
        awaiting_first: std::sync::atomic::AtomicBool::new(initial.is_empty()),
    });
    // Program names of the processes monitored from the start (for how they end).
    for &(pid, policy) in &initial {
        if let Some(name) = procfs::comm(pid, pid) {
            shared.monitor().add_target(pid, &name, policy);
        }
    }
    if initial.is_empty() {
        shared.gate.close(&waiting_reason(&settings.targets));
    }
    tracing::info!(
        pids = ?initial.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        targets = ?settings.targets.describe(),
        budget_ms = settings.config.policies[DEFAULT_POLICY].budgets.default.as_millis() as u64,
        heartbeat = %settings.config.group,
        interface = %settings.interface.name,
        interval_ms = settings.config.interval.as_millis() as u64,
        node_id = %settings.node_id,
        socket = %settings.config.socket.display(),
        store = %settings.config.store.display(),
        rules = settings.rules.rules().len(),
        signed = settings.heartbeat_key.is_some(),
        "watchdog running"
    );
    if settings.heartbeat_key.is_none() {
        tracing::warn!(
            "the heartbeat is not authenticated (no --heartbeat-key): anyone on the network can forge or replay it"
        );
    }

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let tasks = [
        tokio::spawn(read_events(shared.clone(), channels.events)),
        tokio::spawn(scan(shared.clone(), channels.inflight)),
        tokio::spawn(watch_counters(shared.clone(), channels.counters)),
        tokio::spawn(expire_reports(shared.clone())),
        tokio::spawn(auto_resume(shared.clone())),
        tokio::spawn(heartbeat::sender::run(
            shared.sender.clone(),
            settings.config.interval,
            shared.gate.clone(),
            shared.liveness.clone(),
            settings.config.track_file.clone(),
        )),
        tokio::spawn(server::serve(
            listener,
            handler(shared.clone()),
            crate::control::access::Access {
                read_group: settings.config.socket_group,
            },
        )),
    ];
    let metrics_task = match settings.config.metrics {
        Some(addr) => {
            let listener = crate::metrics::bind(addr)
                .await
                .map_err(|e| DaemonError::Metrics(addr, e))?;
            tracing::info!(%addr, "serving metrics at /metrics");
            let s = shared.clone();
            Some(tokio::spawn(crate::metrics::serve(listener, move || {
                s.metrics.render(&metrics_snapshot(&s))
            })))
        }
        None => None,
    };
    let mut sighup = signal(SignalKind::hangup())?;
    let notifier = crate::sdnotify::Notifier::from_env().map(Arc::new);
    let notify_task = notifier
        .clone()
        .map(|n| tokio::spawn(notify_systemd(shared.clone(), n)));
    let signal = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                if let Some(n) = &notifier {
                    n.notify("RELOADING=1");
                }
                reload(&shared);
                if let Some(n) = &notifier {
                    n.notify("READY=1");
                }
            }
        }
    };
    if let Some(n) = &notifier {
        n.notify("STOPPING=1");
    }
    for t in [notify_task, metrics_task].into_iter().flatten() {
        t.abort();
    }
    tracing::info!(signal, "stopping: detaching probes");
    for t in &tasks {
        t.abort();
    }
    // Detach now, while tasks aborting may still hold `shared`.
    drop(lock(&shared.probes).take());
    // Reports still being assembled are recorded as they are.
    let open = lock(&shared.assembler).finish();
    for r in open {
        shared.on_report(r);
    }
    Ok(())
}

/// Tell the kernel side about the targets, then find the processes they pick now
/// (names and cgroups go to the kernel first, so none that starts in between is
/// missed; one found twice is harmless). Returns them with their policies.
fn start_targets(
    probes: &mut Probes,
    targets: &TargetTable,
) -> Result<Vec<(u32, usize)>, ebpf::EbpfError> {
    for comm in targets.comms() {
        probes.add_comm(comm)?;
    }
    for (_, id) in targets.cgroups() {
        probes.add_cgroup(id)?;
    }
    let running = targets.running(std::process::id());
    for &(pid, _) in &running {
        // A pid given by number is that process alone; processes found by name or
        // cgroup bring what they fork.
        if targets.pids().any(|p| p == pid) {
            probes.add_target(pid)?;
        } else {
            probes.add_following_target(pid)?;
        }
    }
    Ok(running)
}

/// Why the heartbeat waits when no target process runs yet.
fn waiting_reason(targets: &TargetTable) -> String {
    format!(
        "waiting for a monitored process to start ({})",
        targets.describe().join(", ")
    )
}

/// SIGHUP: read the config again. Policies (budgets, actions), rules and targets change
/// live, without touching the heartbeat or what is in flight; a config that fails to
/// load leaves the running one, and says why.
fn reload(shared: &Shared) {
    let checked = config::load(&shared.args)
        .map_err(DaemonError::from)
        .and_then(|c| {
            let targets = TargetTable::resolve(&c.targets)?;
            let rules = load_rules(&c)?;
            Ok((c, targets, rules))
        });
    let (new, targets, rules) = match checked {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "reload failed: keeping the running configuration");
            return;
        }
    };
    let mut current = lock(&shared.config);
    let later = config::restart_needed(&current, &new);
    if !later.is_empty() {
        tracing::warn!(settings = %later.join(", "), "changed in the config: they take effect on restart");
    }
    if current.targets != new.targets
        && let Err(e) = retarget(shared, &targets)
    {
        tracing::error!(error = %e, "reload failed: keeping the running configuration");
        return;
    }
    shared.monitor().set_policies(new.policies.clone());
    *lock(&shared.rules) = Arc::new(rules);
    tracing::info!(
        budget_ms = new.policies[DEFAULT_POLICY].budgets.default.as_millis() as u64,
        targets = ?targets.describe(),
        rules = lock(&shared.rules).rules().len(),
        "configuration reloaded"
    );
    *current = new;
}

/// Replace the targets: the kernel's names and cgroups first, then every monitored
/// process is picked again (or dropped, without a verdict), then processes the new
/// targets pick are added.
fn retarget(shared: &Shared, new: &TargetTable) -> Result<(), ebpf::EbpfError> {
    let mut probes_guard = lock(&shared.probes);
    let Some(probes) = probes_guard.as_mut() else {
        return Ok(());
    };
    let old = lock(&shared.targets).clone();
    for comm in old.comms().filter(|c| !new.comms().any(|n| n == *c)) {
        probes.remove_comm(comm)?;
    }
    for (_, id) in old
        .cgroups()
        .filter(|(_, id)| !new.cgroups().any(|(_, n)| n == *id))
    {
        probes.remove_cgroup(id)?;
    }
    let running = start_targets(probes, new)?;
    *lock(&shared.targets) = new.clone();
    let new_pids: Vec<u32> = new.pids().collect();
    let new_comms: Vec<String> = new.comms().map(str::to_owned).collect();
    let has_cgroups = new.cgroups().next().is_some();
    let dropped = shared.monitor().retarget(
        |tgid| {
            let comm = procfs::comm(tgid, tgid);
            new.policy_for(tgid, comm.as_deref(), || procfs::cgroup_id_of(tgid))
        },
        // A dead service blocks resuming while a target would pick it again (a cgroup
        // cannot be asked about a dead process: it keeps blocking).
        |pid, name| new_pids.contains(&pid) || new_comms.iter().any(|c| c == name) || has_cgroups,
    );
    for tgid in &dropped {
        probes.remove_target(*tgid)?;
        tracing::info!(
            pid = tgid,
            "no longer monitored: not in the reloaded targets"
        );
    }
    drop(probes_guard);
    for (pid, policy) in running {
        let comm = procfs::comm(pid, pid).unwrap_or_default();
        shared.new_target(pid, &comm, policy, "picked by the reloaded targets");
    }
    // Nothing left to monitor while the heartbeat is sent: wait for the service, as at
    // a start. (A heartbeat stopped by a verdict stays stopped.)
    if shared.monitor().targets().next().is_none() && shared.gate.is_open() {
        shared.awaiting_first.store(true, Ordering::Release);
        shared.gate.close(&waiting_reason(new));
    }
    Ok(())
}

/// Read kernel events as they come.
async fn read_events(shared: Arc<Shared>, events: RingBuf<MapData>) {
    // SAFETY: the RingBuf owns its map fd, and the AsyncFd owns the RingBuf, so the fd
    // is neither closed nor replaced while registered.
    let registered = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            // Without this reader, kernel reports go unseen: fail closed.
            shared
                .gate
                .close(&format!("cannot poll the event ring buffer: {e}"));
            tracing::error!(error = %e, "cannot poll the event ring buffer");
            return;
        }
    };
    // Test hook: stop reading after this many ms, as a stuck reader would
    // (tests/tests/e2e.rs checks that the heartbeat then stops).
    let stall_at = std::env::var("WATCHDOG_TEST_STALL_READER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| monotonic_ns() + ms * 1_000_000);
    loop {
        let now = monotonic_ns();
        if stall_at.is_some_and(|at| now >= at) {
            tracing::warn!("test hook: the event reader stops");
            std::future::pending::<()>().await;
        }
        shared.liveness.beat(Part::EventReader, now);
        let ready = match tokio::time::timeout(READER_TICK, fd.readable_mut()).await {
            // Nothing to read: idle, and alive.
            Err(_) => continue,
            Ok(r) => r,
        };
        let mut guard = match ready {
            Ok(g) => g,
            Err(e) => {
                shared.gate.close(&format!("event ring buffer failed: {e}"));
                tracing::error!(error = %e, "event ring buffer failed");
                return;
            }
        };
        // Edge-triggered: drain everything before clearing readiness.
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(Event::KernelLine(line)) => shared.on_kernel_line(line),
                Ok(Event::ThreadExit(exit)) => shared.on_exit(exit),
                Ok(Event::Task(ev)) => shared.on_task_event(ev),
                Err(e) => tracing::warn!(error = %e, "undecodable kernel event"),
            }
        }
        guard.clear_ready();
    }
}

/// The opt-in policy: resume by itself once nothing has stood in the way of resuming
/// for the configured time.
async fn auto_resume(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut clear_since: Option<std::time::Instant> = None;
    loop {
        ticker.tick().await;
        let after = lock(&shared.config).auto_resume_after;
        let Some(after) = after else {
            clear_since = None;
            // Not configured (a reload may turn it on): look again in a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let waiting_for_service = shared.awaiting_first.load(Ordering::Acquire);
        let unhealthy = !shared.monitor().blockers().is_empty()
            || shared.liveness.blocker(monotonic_ns()).is_some();
        if shared.gate.is_open() || waiting_for_service || unhealthy {
            clear_since = None;
            continue;
        }
        let since = *clear_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= after {
            shared.gate.open();
            clear_since = None;
            tracing::warn!(
                after_ms = after.as_millis() as u64,
                "heartbeat resumed automatically: healthy since"
            );
        }
    }
}

/// Complete kernel reports that went quiet.
async fn expire_reports(shared: Arc<Shared>) {
    // Half the quiet time: a report is complete at most 1.5 s after its last line.
    let mut ticker = tokio::time::interval(REPORT_QUIET / 2);
    loop {
        ticker.tick().await;
        let done = lock(&shared.assembler).expire(monotonic_ns() as f64 / 1e9);
        for r in done {
            shared.on_report(r);
        }
    }
}

/// Scan the in-flight table: often enough to see every syscall well before its budget
/// runs out, and exactly at the earliest deadline, so a stall is found within a timer
/// tick of the budget running out, while the syscall is still in flight.
async fn scan(shared: Arc<Shared>, inflight: ebpf::InFlightTable) {
    loop {
        // Read each round: a reload may change the budget.
        let budget = shared.monitor().shortest_budget();
        let period = (budget / 4).clamp(Duration::from_millis(5), Duration::from_millis(500));
        let now = monotonic_ns();
        shared.liveness.beat(Part::Scanner, now);
        let entries: Vec<(u32, InFlight)> = inflight.read();
        let mut stalls = Vec::new();
        let deadline = {
            let mut m = shared.monitor();
            let mut seen = HashSet::with_capacity(entries.len());
            for (tid, rec) in &entries {
                if !m.is_target(rec.tgid) {
                    continue;
                }
                seen.insert(*tid);
                // Each thread's last completed syscall, once, for the histogram.
                if m.completed_since_observed(*tid, rec)
                    && let Some(name) = m.program(rec.tgid)
                {
                    shared
                        .metrics
                        .syscall(name, rec.last_duration_ns as f64 / 1e9);
                }
                if let Some(stall) = m.observe(*tid, rec, now, procfs::fd_kind, procfs::comm) {
                    stalls.push(stall);
                }
            }
            m.retain_threads(|tid| seen.contains(&tid));
            m.next_deadline(now)
        };
        for stall in &stalls {
            shared.on_budget_stall(stall);
        }
        let now = monotonic_ns();
        let next_periodic = now + period.as_nanos() as u64;
        let wake = deadline.map_or(next_periodic, |d| d.min(next_periodic));
        tokio::time::sleep(Duration::from_nanos(wake.saturating_sub(now))).await;
    }
}

/// Tell systemd we are ready, keep STATUS= current, and send WATCHDOG=1 only while the
/// event reader and scanner make progress (a wedged daemon is restarted by systemd).
async fn notify_systemd(shared: Arc<Shared>, n: Arc<crate::sdnotify::Notifier>) {
    let status = |s: &Shared| match s.gate.reason() {
        None => format!(
            "STATUS=heartbeat sending; {} processes monitored",
            s.monitor().targets().count()
        ),
        Some(r) => format!("STATUS=heartbeat STOPPED: {r}"),
    };
    let mut last = status(&shared);
    n.notify(&format!("READY=1\n{last}"));
    let keepalive = crate::sdnotify::watchdog_interval();
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

/// What the metrics endpoint reports as current.
fn metrics_snapshot(s: &Shared) -> crate::metrics::Snapshot {
    let (_, threads) = monitored(s);
    crate::metrics::Snapshot {
        heartbeat_sending: s.gate.is_open(),
        heartbeats_sent: s.sender.sent(),
        monitored_threads: threads as i64,
        lost_events: s.lost_events.load(Ordering::Relaxed),
        untracked_syscalls: s.untracked_syscalls.load(Ordering::Relaxed),
        kernel_lines: s.kernel_lines.load(Ordering::Relaxed),
        probes: lock(&s.probes)
            .as_ref()
            .map(Probes::run_stats)
            .unwrap_or_default(),
    }
}

/// Report kernel-side losses as they grow.
async fn watch_counters(shared: Arc<Shared>, counters: Counters) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let lost = counters.lost_events();
        let before = shared.lost_events.swap(lost, Ordering::Relaxed);
        if lost > before {
            tracing::warn!(
                lost_events = lost,
                new = lost - before,
                "kernel events lost: ring buffer full"
            );
        }
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

fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |req| match req {
        Request::Threads => Response::Ok(Reply::Threads(thread_rows(&shared))),
        Request::Status => Response::Ok(Reply::Status(Box::new(status(&shared)))),
        Request::Incidents { limit } => match lock(&shared.store).list(limit) {
            Ok(list) => Response::Ok(Reply::Incidents(list)),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::Resume => {
            let mut blockers = shared.monitor().blockers();
            blockers.extend(shared.liveness.blocker(monotonic_ns()));
            if !blockers.is_empty() {
                tracing::warn!(reasons = %blockers.join("; "), "resume refused");
                return Response::Error(format!("not resuming: {}", blockers.join("; ")));
            }
            if shared.gate.is_open() {
                return Response::Ok(Reply::Resumed("the heartbeat is already being sent".into()));
            }
            shared.gate.open();
            tracing::warn!("heartbeat resumed by the operator");
            Response::Ok(Reply::Resumed("heartbeat resumed".into()))
        }
        Request::Incident { id } => match lock(&shared.store).get(id) {
            Ok(Some(inc)) => Response::Ok(Reply::Incident(Box::new(inc))),
            Ok(None) => Response::Error(format!("no incident {id} (see wdctl incidents)")),
            Err(e) => Response::Error(e.to_string()),
        },
    })
}

fn thread_rows(shared: &Shared) -> Vec<crate::monitor::ThreadRow> {
    let targets: Vec<u32> = shared.monitor().targets().collect();
    // /proc is read outside the lock, so the scanner is never held up by a listing.
    let listing: BTreeMap<u32, Vec<u32>> = targets
        .into_iter()
        .map(|t| (t, procfs::threads(t)))
        .collect();
    shared.monitor().rows(
        monotonic_ns(),
        &listing,
        procfs::comm,
        procfs::current_syscall,
    )
}

/// The monitored processes, and how many threads they have now.
fn monitored(shared: &Shared) -> (Vec<u32>, usize) {
    let pids: Vec<u32> = shared.monitor().targets().collect();
    // /proc is read outside the lock, so the scanner is never held up by a reader.
    let threads = pids.iter().map(|&p| procfs::threads(p).len()).sum();
    (pids, threads)
}

fn status(shared: &Shared) -> StatusReport {
    let (pids, threads) = monitored(shared);
    let m = shared.monitor();
    let stats = &shared.sink_stats;
    StatusReport {
        node_id: shared.node_id.clone(),
        heartbeat: if shared.gate.is_open() {
            HeartbeatState::Sending
        } else {
            HeartbeatState::Stopped
        },
        stopped_reason: shared.gate.reason(),
        stopped_at_ns: shared.gate.closed_at_ns(),
        heartbeats_sent: shared.sender.sent(),
        heartbeat_send_errors: shared.sender.send_errors(),
        monitored_pids: pids,
        monitored_threads: threads,
        budget_ms: m.default_policy().budgets.default.as_millis() as u64,
        kernel_lines: shared.kernel_lines.load(Ordering::Relaxed),
        lost_events: shared.lost_events.load(Ordering::Relaxed),
        untracked_syscalls: shared.untracked_syscalls.load(Ordering::Relaxed),
        stalls: m.stalls().to_vec(),
        incidents_stored: stats.stored.load(Ordering::Relaxed),
        incident_store_errors: stats.store_errors.load(Ordering::Relaxed),
        exec_hook_runs: stats.hook_runs.load(Ordering::Relaxed),
        exec_hook_failures: stats.hook_failures.load(Ordering::Relaxed),
    }
}
