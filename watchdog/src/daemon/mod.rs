//! The daemon: wires the stages together. The probes' ring feeds the reactions
//! (`judging::reactions`), whose effects reach the heartbeat's latch, the incident sink
//! and the kernel side; the scanner, the report expirer and the auto-resume feed them
//! the time; the control socket and the metrics endpoint read the shared state. No
//! decision is made here.
pub mod realtime;
mod reload;
mod requests;
pub mod sdnotify;
pub(crate) mod settings;
mod shared;
mod tasks;

use std::{
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};

pub use settings::Settings;

use crate::{
    config::{ConfigError, cli::DaemonArgs},
    control::{access::Access, metrics, server},
    heartbeat::{
        self,
        liveness::Liveness,
        sender::{Followers, Latch},
        service_gate::ServiceGate,
        state_hook::StateHook,
    },
    incidents::{
        alert::{self, ExecHook, SinkStats},
        alertmanager::{self, AlertmanagerStats},
        pstore,
        store::{Store, StoreError},
    },
    judging::{
        kmsg::RulesError, policy::DEFAULT_POLICY, reactions::Reactions, targets::TargetError,
    },
    kernel::{
        clock::monotonic_ns,
        probes::{self, Probes},
        procfs,
    },
};
use shared::{ProcHost, Shared, lock};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Targets(#[from] TargetError),
    #[error("--interface {name}: {source}")]
    Interface {
        name: String,
        source: crate::heartbeat::iface::IfaceError,
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
    Ebpf(#[from] probes::EbpfError),
    #[error("{0}")]
    Gate(String),
    #[error("the service heartbeat gate: {0}")]
    GateKernel(#[from] crate::kernel::gate::GateError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where ramoops keeps userspace lines across a reset.
const PMSG_DEVICE: &str = "/dev/pmsg0";

/// How long one push to an Alertmanager may take before it counts as failed.
const ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(5);

/// The event reader and the scanner must each make progress within this long, or the
/// heartbeat stops (the reader wakes at least every 250 ms, the scanner at least every
/// 500 ms).
const LIVENESS_BOUND: Duration = Duration::from_secs(2);

/// Crash dumps of earlier boots (pstore, systemd-pstore's archive) become incidents,
/// each once; the outbox delivers them like any other. A pstore record is deleted once
/// stored, if so configured.
fn harvest_previous_boots(store: &mut Store, settings: &Settings, destinations: &[&str]) {
    let c = &settings.config;
    let mut found = Vec::new();
    for dir in &c.pstore_dirs {
        let (dumps, refused) = pstore::harvest_dir(dir);
        for r in refused {
            tracing::warn!(file = %r.path.display(), why = %r.why, "not a crash dump: left as it is, no incident");
        }
        found.extend(dumps.into_iter().map(|d| (dir.clone(), d)));
    }
    for (dir, dump) in found {
        let mut inc = pstore::incident(&dump, &settings.rules, &settings.node_id);
        match store.insert_harvested(&mut inc, destinations, &dump.origin.key) {
            Ok(Some(id)) => {
                tracing::error!(incident = id, backend = %dump.origin.backend, summary = %inc.summary, "a crash of an earlier boot");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "a crash of an earlier boot could not be stored: its record is kept");
                continue;
            }
        }
        // Stored (now or before): its room in the backend can go. Only records of the
        // pstore mount itself, never an archive's.
        if c.pstore_unlink && dir.as_path() != std::path::Path::new(pstore::SYSTEMD_ARCHIVE) {
            for file in dump
                .origin
                .files
                .iter()
                .filter(|f| f.parent() == Some(dir.as_path()))
            {
                if let Err(e) = std::fs::remove_file(file) {
                    tracing::warn!(file = %file.display(), error = %e, "could not free a pstore record");
                }
            }
        }
    }
}

/// Hooks the end-to-end tests use to put the daemon in states a real fault would,
/// read from the environment once at start.
#[derive(Clone, Debug, Default)]
struct TestHooks {
    /// `WATCHDOG_TEST_STALL_READER_MS`: the event reader stops this long after start,
    /// as a wedged one would (the heartbeat must then stop).
    reader_stops_at: Option<u64>,
    /// `WATCHDOG_TEST_HOLD_DELIVERY_MS`: each incident waits this long between being
    /// stored and being delivered (a window for a crash between the two).
    hold_delivery: Option<Duration>,
    /// `WATCHDOG_TEST_PMSG`: the file a stop's reason is written to, for `/dev/pmsg0`.
    pmsg: Option<std::path::PathBuf>,
}

impl TestHooks {
    fn from_env() -> Self {
        let ms = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        TestHooks {
            reader_stops_at: ms("WATCHDOG_TEST_STALL_READER_MS")
                .map(|ms| monotonic_ns() + ms * 1_000_000),
            hold_delivery: ms("WATCHDOG_TEST_HOLD_DELIVERY_MS").map(Duration::from_millis),
            pmsg: std::env::var_os("WATCHDOG_TEST_PMSG").map(Into::into),
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
    mut store: Store,
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
    let initial = reload::start_targets(&mut probes, &settings.targets)?;
    // A verdict before a restart holds until an operator resumes.
    let latched = store.latch()?;
    // Never smaller than the last start's, whatever the clock says now.
    let incarnation = store.next_incarnation(heartbeat::sender::incarnation)?;
    let store = Arc::new(Mutex::new(store));
    let sink_stats = Arc::new(SinkStats::default());
    let alertmanager_stats = Arc::new(AlertmanagerStats::default());
    let hooks = TestHooks::from_env();
    let (sink_tx, sink_rx) = std::sync::mpsc::channel();
    let alertmanager = (!settings.config.alertmanagers.is_empty()).then(|| {
        // Once an Alertmanager took an incident, the outbox hears of it.
        let report = Mutex::new(sink_tx.clone());
        alertmanager::start(
            settings.config.alertmanagers.clone(),
            settings.node_id.clone(),
            settings.config.alertmanager_resend,
            ALERTMANAGER_TIMEOUT,
            alertmanager_stats.clone(),
            Box::new(move |id| {
                let _ = lock(&report).send(alert::Sink::Delivered {
                    id,
                    destination: alert::ALERTMANAGER,
                    result: Ok(()),
                });
            }),
        )
    });
    if let (Some(am), Some((reason, at_unix_ms))) = (&alertmanager, &latched) {
        let _ = am.send(alertmanager::Notice::LatchedBeforeStart {
            reason: reason.clone(),
            at_unix_ms: *at_unix_ms,
        });
    }
    let destinations = alert::Destinations {
        hook: settings.config.exec_hook.clone().map(|program| ExecHook {
            program,
            timeout: settings.config.exec_hook_timeout,
        }),
        alertmanager,
        origin: alert::Origin {
            node: settings.node_id.clone(),
            boot_id: procfs::boot_id(),
        },
        hold: hooks.hold_delivery,
        pmsg: hooks.pmsg.clone().unwrap_or_else(|| PMSG_DEVICE.into()),
    };
    // Stored before the sink starts: its outbox delivers them with the rest.
    harvest_previous_boots(&mut lock(&store), settings, &destinations.names(true));
    let sink = alert::start(
        store.clone(),
        destinations,
        sink_stats.clone(),
        (sink_tx, sink_rx),
    );
    // Program names of the processes monitored from the start (for how they end).
    let initial_named: Vec<(u32, usize, Option<String>)> = initial
        .iter()
        .map(|&(pid, policy)| (pid, policy, procfs::comm(pid, pid)))
        .collect();
    let mut reactions = Reactions::new(
        settings.node_id.clone(),
        settings.config.policies.clone(),
        settings.targets.clone(),
        Arc::new(settings.rules.clone()),
        &initial_named,
    );
    if latched.is_some() {
        reactions.latched_before_restart();
    }
    // Syscalls already in flight when the probes attached are judged too.
    let running: Vec<u32> = initial.iter().map(|(pid, _)| *pid).collect();
    reactions.adopt_running(&running, monotonic_ns(), &ProcHost);
    let latch = Arc::new(Latch::default());
    let shared = Arc::new(Shared {
        reactions: Mutex::new(reactions),
        probes: Mutex::new(Some(probes)),
        args: args.clone(),
        config: Mutex::new(settings.config.clone()),
        service_gate: Arc::new(ServiceGate::new(
            settings.config.gate_pin_dir.clone(),
            latch.clone(),
        )),
        latch,
        liveness: Arc::new(Liveness::new(LIVENESS_BOUND, monotonic_ns())),
        sender: Arc::new(heartbeat::sender::Sender::new(
            sock,
            settings.node_id.clone(),
            settings.heartbeat_key.clone(),
            incarnation,
        )),
        node_id: settings.node_id.clone(),
        lost_events: AtomicU64::new(0),
        untracked_syscalls: AtomicU64::new(0),
        metrics: metrics::Metrics::default(),
        store,
        sink: Mutex::new(sink),
        sink_stats,
        alertmanager_stats,
    });
    if let Some((reason, at_unix_ms)) = &latched {
        let reason =
            format!("stopped before the watchdog restarted and not resumed since: {reason}");
        tracing::warn!(reason = %reason, at_unix_ms, "the heartbeat stays stopped until `wdctl resume`");
        shared.latch.close(&reason);
    } else if initial.is_empty() {
        shared
            .latch
            .close(&reload::waiting_reason(&settings.targets));
    }
    // With the latch as it starts (closed if a verdict holds from before): a gate an
    // earlier daemon left closed stays closed through the takeover.
    shared.service_gate.monitored(running.iter().copied());
    shared
        .service_gate
        .configure(settings.gates.clone(), settings.config.gate_grace)?;
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
        gates = ?settings.config.gates.iter().map(ToString::to_string).collect::<Vec<_>>(),
        signed = settings.heartbeat_key.is_some(),
        "watchdog running"
    );
    for comm in settings.targets.comms_without_identity() {
        tracing::warn!(
            comm,
            "a target by program name alone: any user's program of that name is taken for the service, and its death for the service's; give the [[target]] a `user` or an `exe`"
        );
    }
    if settings.heartbeat_key.is_none() {
        tracing::warn!(
            "the heartbeat is not authenticated (no --heartbeat-key): anyone on the network can forge or replay it"
        );
    }

    let state_hook = settings
        .config
        .state_hook
        .clone()
        .map(|program| StateHook::start(program, settings.config.exec_hook_timeout))
        .transpose()?;
    let beating = heartbeat::sender::start(
        shared.sender.clone(),
        settings.config.interval,
        shared.latch.clone(),
        shared.liveness.clone(),
        Followers {
            track_file: settings.config.track_file.clone(),
            state_hook,
            service_gate: Some(shared.service_gate.clone()),
        },
    )?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let tasks = [
        tokio::spawn(tasks::read_events(shared.clone(), channels.events, hooks)),
        tokio::spawn(tasks::scan(shared.clone(), channels.inflight)),
        tokio::spawn(tasks::watch_losses(shared.clone(), channels.counters)),
        tokio::spawn(tasks::auto_resume(shared.clone())),
        tokio::spawn(server::serve(
            listener,
            requests::handler(shared.clone()),
            Access {
                read_group: settings.config.socket_group,
            },
        )),
    ];
    let metrics_task = match settings.config.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|e| DaemonError::Metrics(addr, e))?;
            tracing::info!(%addr, "serving metrics at /metrics");
            let s = shared.clone();
            Some(tokio::spawn(metrics::serve(listener, move || {
                s.metrics.render(&requests::metrics_snapshot(&s))
            })))
        }
        None => None,
    };
    let mut sighup = signal(SignalKind::hangup())?;
    let notifier = sdnotify::Notifier::from_env().map(Arc::new);
    let notify_task = notifier
        .clone()
        .map(|n| tokio::spawn(tasks::notify_systemd(shared.clone(), n)));
    let signal = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                if let Some(n) = &notifier {
                    n.notify("RELOADING=1");
                }
                // Off the runtime's workers: compiling a large rules file takes a
                // while, and the heartbeat and the event reader run on them.
                let s = shared.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || reload::reload(&s)).await {
                    tracing::error!(error = %e, "reload failed: keeping the running configuration");
                }
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
    // No beat after the daemon was told to stop.
    beating.stop();
    // Gone with the daemon, unless the heartbeat is stopped: then it holds the stalled
    // service's heartbeat back until the next daemon takes it over.
    shared.service_gate.shutdown();
    tracing::info!(signal, "stopping: detaching probes");
    for t in &tasks {
        t.abort();
    }
    // Detach now, while tasks aborting may still hold `shared`.
    drop(lock(&shared.probes).take());
    // Reports still being assembled are recorded as they are.
    let open = shared.reactions().finish_reports(&ProcHost);
    shared.apply(open);
    Ok(())
}
