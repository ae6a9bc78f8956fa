//! What the daemon's tasks share, and the one place that carries out the reactions'
//! effects: the latch and the last gasp, the incident sink, signals, the kernel side's
//! target maps, the metrics.
use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
    mpsc,
};

use crate::{
    config::{Config, cli::DaemonArgs},
    control::metrics::Metrics,
    heartbeat::{
        liveness::Liveness,
        sender::{Latch, Sender},
        service_gate::ServiceGate,
    },
    incidents::{
        Incident,
        alert::{Alert, Sink, SinkStats},
        alertmanager::AlertmanagerStats,
        signal_name,
        store::Store,
    },
    judging::{
        reactions::{Count, Effect, Host, Reactions},
        targets::ProcIdentity,
        verdict::FdKind,
    },
    kernel::{probes::Probes, procfs},
};

/// `/proc`, as the reactions ask it.
pub(super) struct ProcHost;

impl Host for ProcHost {
    fn named_by_kernel(&self, tid: u32) -> Option<u32> {
        crate::kernel::pidns::ids().named(tid)
    }
    fn tgid_of(&self, tid: u32) -> Option<u32> {
        procfs::tgid_of(tid)
    }
    fn comm(&self, tgid: u32, tid: u32) -> Option<String> {
        procfs::comm(tgid, tid)
    }
    fn exit_status(&self, tgid: u32) -> Option<String> {
        procfs::exit_status(tgid)
    }
    fn cgroup_id(&self, pid: u32) -> Option<u64> {
        procfs::cgroup_id_of(pid)
    }
    fn fd_kind(&self, tgid: u32, fd: u64) -> Option<FdKind> {
        procfs::fd_kind(tgid, fd)
    }
    fn threads(&self, tgid: u32) -> Vec<u32> {
        procfs::threads(tgid)
    }
    fn syscall_now(&self, tgid: u32, tid: u32) -> Option<(u32, u64)> {
        procfs::syscall_now(tgid, tid)
    }
    fn state(&self, tgid: u32, tid: u32) -> Option<char> {
        procfs::state(tgid, tid)?.chars().next()
    }
    fn run_stats(&self, tgid: u32, tid: u32) -> Option<(u64, u64)> {
        procfs::run_stats(tgid, tid)
    }
    fn alive(&self, pid: u32) -> bool {
        procfs::process_alive(pid)
    }
    fn identity(&self, pid: u32) -> Option<ProcIdentity> {
        procfs::identity(pid)
    }
}

/// State shared by the daemon's tasks.
pub(super) struct Shared {
    /// Every decision, and the state it needs; one lock.
    pub reactions: Mutex<Reactions>,
    /// The command line, which a reload merges the file under again.
    pub args: DaemonArgs,
    pub config: Mutex<Config>,
    /// Taken (and so detached) at shutdown.
    pub probes: Mutex<Option<Probes>>,
    pub latch: Arc<Latch>,
    /// Holds the service's own heartbeat back while the latch is closed.
    pub service_gate: Arc<ServiceGate>,
    /// Progress of the event reader and the scanner, checked before every heartbeat.
    pub liveness: Arc<Liveness>,
    pub sender: Arc<Sender>,
    pub node_id: String,
    pub lost_events: AtomicU64,
    pub untracked_syscalls: AtomicU64,
    pub metrics: Metrics,
    pub store: Arc<Mutex<Store>>,
    pub sink: Mutex<mpsc::Sender<Sink>>,
    pub sink_stats: Arc<SinkStats>,
    pub alertmanager_stats: Arc<AlertmanagerStats>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the verdicts down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn reactions(&self) -> MutexGuard<'_, Reactions> {
        lock(&self.reactions)
    }

    /// Carry out the reactions' effects, in order. Called without the reactions' lock.
    pub fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::StopHeartbeat { reason } => {
                    if self.latch.close(&reason) {
                        // The service's heartbeat first: the fewest packets slip out.
                        self.service_gate.follow();
                        tracing::warn!(reason = %reason, "stopping the heartbeat");
                        self.sender.last_gasp(&reason);
                        // A verdict holds until an operator resumes, restarts included.
                        self.to_sink(Sink::Latch(Some(reason)));
                    }
                }
                Effect::StartHeartbeat => {
                    self.latch.open();
                    self.service_gate.follow();
                }
                Effect::Record {
                    mut incident,
                    run_hook,
                    inspect,
                } => {
                    if inspect {
                        inspect_stalled_thread(&mut incident);
                    }
                    if incident.stopped_heartbeat {
                        incident.gates_closed = self.service_gate.closed();
                    }
                    self.to_sink(Sink::Alert(Box::new(Alert {
                        incident: *incident,
                        run_hook,
                    })));
                }
                Effect::Signal { pid, signal } => send_stall_signal(pid, signal),
                Effect::Follow { pid } => {
                    self.service_gate.add_monitored(pid);
                    if let Some(Err(e)) = lock(&self.probes)
                        .as_mut()
                        .map(|p| p.add_following_target(pid))
                    {
                        tracing::warn!(pid, error = %e, "could not monitor a forked process");
                        self.reactions().not_followed(pid);
                    }
                }
                Effect::Unfollow { pid } => {
                    self.service_gate.remove_monitored(pid);
                    if let Some(Err(e)) = lock(&self.probes).as_mut().map(|p| p.remove_target(pid))
                    {
                        tracing::warn!(pid, error = %e, "could not stop measuring a gone process");
                    }
                }
                Effect::Count(Count::Verdict(cause)) => self.metrics.verdict(&cause),
                Effect::Count(Count::KernelReport { class, severity }) => {
                    self.metrics.kernel_report(&class, severity.as_str())
                }
                Effect::Count(Count::SyscallSeconds { program, seconds }) => {
                    self.metrics.syscall(&program, seconds)
                }
            }
        }
    }

    /// Hand a store write to the alert thread.
    fn to_sink(&self, message: Sink) {
        if lock(&self.sink).send(message).is_err() {
            tracing::error!("alert thread is gone: incident or latch dropped");
        }
    }

    /// Send the heartbeat again (an operator's resume, or the auto-resume), and forget
    /// the latch.
    /// The kernel side made a target, at exec, of a process outside the daemon's pid
    /// namespace (a program of a watched name elsewhere on the host): not the service.
    pub fn drop_foreign_target(&self, kernel_tgid: u32) {
        tracing::info!(
            kernel_pid = kernel_tgid,
            "a program of a watched name outside the watchdog's pid namespace: not monitored"
        );
        if let Some(Err(e)) = lock(&self.probes)
            .as_mut()
            .map(|p| p.remove_kernel_target(kernel_tgid))
        {
            tracing::warn!(kernel_pid = kernel_tgid, error = %e, "could not stop measuring it");
        }
    }

    pub fn resume_heartbeat(&self) {
        self.latch.open();
        self.service_gate.follow();
        self.to_sink(Sink::Latch(None));
    }

    pub fn kernel_lines(&self) -> u64 {
        self.reactions().kernel_lines()
    }

    pub fn lost_events(&self) -> u64 {
        self.lost_events.load(Ordering::Relaxed)
    }

    pub fn untracked_syscalls(&self) -> u64 {
        self.untracked_syscalls.load(Ordering::Relaxed)
    }
}

/// What `/proc` shows of a stalled thread now: its state, wait channel, syscall
/// arguments and kernel stack, into the stall incident.
fn inspect_stalled_thread(incident: &mut Incident) {
    let (Some(pid), Some(tid), Some(details)) = (incident.pid, incident.tid, &mut incident.stall)
    else {
        return;
    };
    details.state = procfs::state(pid, tid);
    details.wchan = procfs::wchan(pid, tid);
    details.args = procfs::syscall_args(pid, tid);
    details.kernel_stack = procfs::kernel_stack(pid, tid);
}

fn send_stall_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we monitor and a valid signal number.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    let name = signal_name(sig);
    if rc == 0 {
        tracing::warn!(pid, signal = %name, "signalled the stalled process");
    } else {
        let error = std::io::Error::last_os_error();
        tracing::warn!(pid, signal = %name, error = %error, "could not signal the stalled process");
    }
}
