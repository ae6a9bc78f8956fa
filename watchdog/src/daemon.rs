//! The daemon: wires probes, monitor, heartbeat and control socket together.
use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use watchdog_common::InFlight;

use crate::{
    cli::DaemonArgs,
    clock::monotonic_ns,
    control::{
        proto::{HeartbeatState, Reply, Request, Response, StatusReport},
        server::{self, Handler},
    },
    ebpf::{self, Counters, Probes},
    events::{self, Event},
    heartbeat::{self, sender::Gate},
    iface::Interface,
    kmsg::RuleSet,
    monitor::{LineVerdict, Monitor, Stall},
    procfs,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("--pid {pid}: {source}")]
    Pid { pid: u32, source: procfs::PidError },
    #[error("--interface {name}: {source}")]
    Interface {
        name: String,
        source: crate::iface::IfaceError,
    },
    #[error("--heartbeat: {0}")]
    Heartbeat(#[from] heartbeat::socket::SocketError),
    #[error("--socket: {0}")]
    Control(#[from] server::ServerError),
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the daemon runs with, validated.
pub struct Settings {
    pub pids: Vec<u32>,
    pub budget: Duration,
    pub group: SocketAddr,
    pub interface: Interface,
    pub interval: Duration,
    pub socket: PathBuf,
    pub node_id: String,
    pub ttl: u32,
}

impl Settings {
    /// Check the command line against the system: pids exist, the interface exists.
    pub fn from_args(args: DaemonArgs) -> Result<Self, DaemonError> {
        let mut pids = args.pids;
        pids.sort_unstable();
        pids.dedup();
        for &pid in &pids {
            procfs::check_process(pid).map_err(|source| DaemonError::Pid { pid, source })?;
        }
        let interface =
            Interface::by_name(&args.interface).map_err(|source| DaemonError::Interface {
                name: args.interface.clone(),
                source,
            })?;
        Ok(Settings {
            pids,
            budget: args.budget,
            group: args.heartbeat,
            interface,
            interval: args.interval,
            socket: args.socket,
            node_id: args.node_id.unwrap_or_else(hostname),
            ttl: args.ttl,
        })
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

/// State shared by the daemon's tasks.
struct Shared {
    monitor: Mutex<Monitor>,
    rules: RuleSet,
    gate: Arc<Gate>,
    sender: Arc<heartbeat::sender::Sender>,
    node_id: String,
    lost_events: AtomicU64,
    untracked_syscalls: AtomicU64,
}

impl Shared {
    fn monitor(&self) -> MutexGuard<'_, Monitor> {
        // A panic elsewhere must not take the verdicts down with it.
        self.monitor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Act on a stall verdict: stop the heartbeat first, then alert.
    fn on_stall(&self, stall: &Stall) {
        let reason = format!(
            "thread {} ({}) of pid {}: {}",
            stall.tid, stall.comm, stall.pid, stall.reason
        );
        if self.gate.close(&reason) {
            tracing::warn!(reason = %reason, "stopping the heartbeat");
        }
        tracing::error!(
            pid = stall.pid,
            tid = stall.tid,
            comm = %stall.comm,
            syscall = stall.syscall.as_deref().unwrap_or("-"),
            elapsed_ms = stall.elapsed_ms,
            budget_ms = stall.budget_ms,
            reason = %stall.reason,
            "thread stalled"
        );
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let sock = heartbeat::socket::sender(settings.group, &settings.interface, settings.ttl)?;
    sock.set_nonblocking(true)?;
    let listener = server::bind(&settings.socket)?;
    let result = run_bound(&settings, sock, listener).await;
    let _ = std::fs::remove_file(&settings.socket);
    result
}

async fn run_bound(
    settings: &Settings,
    sock: std::net::UdpSocket,
    listener: tokio::net::UnixListener,
) -> Result<(), DaemonError> {
    let (mut probes, channels) = Probes::load()?;
    for &pid in &settings.pids {
        probes.add_target(pid)?;
    }
    let shared = Arc::new(Shared {
        monitor: Mutex::new(Monitor::new(settings.budget, settings.pids.iter().copied())),
        rules: RuleSet::builtin(),
        gate: Arc::new(Gate::default()),
        sender: Arc::new(heartbeat::sender::Sender::new(
            sock,
            settings.node_id.clone(),
        )),
        node_id: settings.node_id.clone(),
        lost_events: AtomicU64::new(0),
        untracked_syscalls: AtomicU64::new(0),
    });
    tracing::info!(
        pids = ?settings.pids,
        budget_ms = settings.budget.as_millis() as u64,
        heartbeat = %settings.group,
        interface = %settings.interface.name,
        interval_ms = settings.interval.as_millis() as u64,
        node_id = %settings.node_id,
        socket = %settings.socket.display(),
        "watchdog running"
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let tasks = [
        tokio::spawn(read_events(shared.clone(), channels.events)),
        tokio::spawn(scan(shared.clone(), channels.inflight)),
        tokio::spawn(watch_counters(shared.clone(), channels.counters)),
        tokio::spawn(heartbeat::sender::run(
            shared.sender.clone(),
            settings.interval,
            shared.gate.clone(),
        )),
        tokio::spawn(server::serve(listener, handler(shared.clone()))),
    ];
    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(signal, "stopping: detaching probes");
    for t in &tasks {
        t.abort();
    }
    drop(probes);
    Ok(())
}

/// Read kernel events as they come: printk lines and thread exits.
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
    loop {
        let mut guard = match fd.readable_mut().await {
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
                Ok(ev) => on_event(&shared, ev),
                Err(e) => tracing::warn!(error = %e, "undecodable kernel event"),
            }
        }
        guard.clear_ready();
    }
}

fn on_event(shared: &Shared, ev: Event) {
    match ev {
        Event::KernelLine(line) => {
            let verdict = shared
                .monitor()
                .on_kernel_line(&shared.rules, &line, procfs::tgid_of);
            match verdict {
                LineVerdict::Ordinary => {
                    tracing::trace!(pid = line.tgid, tid = line.tid, text = %line.text, "kernel line");
                }
                LineVerdict::Alert {
                    class,
                    rule,
                    monitored,
                    subject,
                } => tracing::error!(
                    pid = line.tgid,
                    tid = line.tid,
                    comm = %line.comm,
                    class = class.as_str(),
                    rule = rule.as_deref().unwrap_or("-"),
                    subject = subject.map(|s| s.pid),
                    monitored,
                    line = %line.text,
                    "kernel problem reported"
                ),
                LineVerdict::Stall(stall) => shared.on_stall(&stall),
            }
        }
        Event::ThreadExit(exit) => {
            shared.monitor().forget(exit.tid);
            tracing::debug!(pid = exit.tgid, tid = exit.tid, comm = %exit.comm, "monitored thread exited");
        }
    }
}

/// Scan the in-flight table: often enough to see every syscall well before its budget
/// runs out, and exactly at the earliest deadline, so a stall is found within a timer
/// tick of the budget running out, while the syscall is still in flight.
async fn scan(shared: Arc<Shared>, inflight: BpfHashMap<MapData, u32, InFlight>) {
    let budget = shared.monitor().budget();
    let period = (budget / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
    loop {
        let now = monotonic_ns();
        let entries: Vec<(u32, InFlight)> = inflight.iter().filter_map(Result::ok).collect();
        let mut stalls = Vec::new();
        let deadline = {
            let mut m = shared.monitor();
            let mut seen = HashSet::with_capacity(entries.len());
            for (tid, rec) in &entries {
                if !m.is_target(rec.tgid) {
                    continue;
                }
                seen.insert(*tid);
                if let Some(stall) = m.observe(*tid, rec, now, procfs::fd_kind, procfs::comm) {
                    stalls.push(stall);
                }
            }
            m.retain_threads(|tid| seen.contains(&tid));
            m.next_deadline()
        };
        for stall in &stalls {
            shared.on_stall(stall);
        }
        let now = monotonic_ns();
        let next_periodic = now + period.as_nanos() as u64;
        let wake = deadline.map_or(next_periodic, |d| d.min(next_periodic));
        tokio::time::sleep(Duration::from_nanos(wake.saturating_sub(now))).await;
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

fn status(shared: &Shared) -> StatusReport {
    let m = shared.monitor();
    let pids: Vec<u32> = m.targets().collect();
    let threads = pids.iter().map(|&p| procfs::threads(p).len()).sum();
    StatusReport {
        node_id: shared.node_id.clone(),
        heartbeat: if shared.gate.is_open() {
            HeartbeatState::Sending
        } else {
            HeartbeatState::Stopped
        },
        stopped_reason: shared.gate.reason(),
        heartbeats_sent: shared.sender.sent(),
        heartbeat_send_errors: shared.sender.send_errors(),
        monitored_pids: pids,
        monitored_threads: threads,
        budget_ms: m.budget().as_millis() as u64,
        lost_events: shared.lost_events.load(Ordering::Relaxed),
        untracked_syscalls: shared.untracked_syscalls.load(Ordering::Relaxed),
        stalls: m.stalls().to_vec(),
    }
}
