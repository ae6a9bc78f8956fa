//! The fixture every end-to-end test stands on, and the assertions several files share.
use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::{Daemon, DaemonOpts, Recorder, Workload, require_root, unique_group};

/// Poll `check` every 100 ms until it gives Some, for at most `limit` (then fail,
/// naming `what` was awaited).
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "no {what} within {limit:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// One millisecond in the nanoseconds of `monotonic_ns`.
pub const MS: u64 = 1_000_000;

/// A monitored node: the workload, a heartbeat recorder on a fresh group, and the daemon
/// monitoring the workload. `Node::start` for the usual one, `Node::build` to change it.
/// Call `stop_cleanly` at the end: dropping a node only kills what it started.
pub struct Node {
    // Declared in drop order, the order of a test's locals before the fixture: the daemon
    // first (killed, if a failed test left it running), the recorder, the workload last.
    pub daemon: Daemon,
    pub rec: Recorder,
    pub work: Workload,
    /// What `restart` starts the next daemon with.
    budget: &'static str,
    interval: &'static str,
}

/// How a `Node` gets its workload.
enum Spawn<'a> {
    /// Before the daemon, which is then given its pid.
    BeforeDaemon(Box<dyn FnOnce() -> Workload + 'a>),
    /// 800 ms after the daemon is started (with pid 0): for a target given before its
    /// process exists. The daemon is up once the first heartbeat comes, which is once
    /// the workload runs.
    AfterDaemon(Box<dyn FnOnce() -> Workload + Send + 'static>),
}

/// A `Node` not yet started: `Node::build(...).workload(...).opts(...).start()`.
pub struct NodeBuilder<'a> {
    budget: &'static str,
    interval: &'static str,
    spawn: Spawn<'a>,
    opts: Box<dyn FnOnce(&mut DaemonOpts) + 'a>,
}

impl Node {
    /// Root checked, a plain workload, and the daemon monitoring it with `budget` and
    /// heartbeat `interval`; returns once the first heartbeat arrived.
    pub fn start(budget: &'static str, interval: &'static str) -> Node {
        Node::build(budget, interval).start()
    }

    /// Root checked here, before the test prepares anything else; the rest is done by
    /// `NodeBuilder::start`.
    pub fn build<'a>(budget: &'static str, interval: &'static str) -> NodeBuilder<'a> {
        require_root();
        NodeBuilder {
            budget,
            interval,
            spawn: Spawn::BeforeDaemon(Box::new(Workload::spawn)),
            opts: Box::new(|_| {}),
        }
    }

    /// Start another daemon on the same group and recorder, monitoring `self.work` with
    /// the same budget and interval, changed by `opts`. The previous daemon has been
    /// stopped or killed by the test; it is reaped first, as its socket path is reused.
    pub fn restart(&mut self, opts: impl FnOnce(&mut DaemonOpts)) {
        let o = self.reap_for_restart(opts);
        self.daemon = Daemon::start(o, self.daemon.group, &self.rec);
    }

    /// As `restart`, for a daemon that must not send a heartbeat: returns once its
    /// control socket answers.
    pub fn restart_silent(&mut self, opts: impl FnOnce(&mut DaemonOpts)) {
        let o = self.reap_for_restart(opts);
        self.daemon = Daemon::start_silent(o, self.daemon.group);
    }

    /// Reap the previous daemon; the next one's options, changed by `opts`.
    fn reap_for_restart(&mut self, opts: impl FnOnce(&mut DaemonOpts)) -> DaemonOpts {
        self.daemon.kill();
        let mut o = DaemonOpts::new(self.work.pid, self.budget, self.interval);
        opts(&mut o);
        o
    }

    /// The heartbeat is stopped (the daemon's log says why if not); the reason.
    pub fn assert_stopped(&self) -> String {
        let status = self.daemon.wdctl_json("status");
        assert_eq!(
            status["heartbeat"],
            "stopped",
            "{status:#}\n{}",
            self.daemon.log_text()
        );
        status["stopped_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Since `from_ns`, every heartbeat came, none later than the interval plus 150 ms
    /// after the one before, and the daemon still says it is sending.
    pub fn assert_beating_since(&self, from_ns: u64) {
        let interval = watchdog::config::cli::parse_duration(self.interval).expect("interval");
        assert_no_missed_beats(
            &self.rec,
            from_ns,
            crate::monotonic_ns(),
            interval + Duration::from_millis(150),
        );
        assert_eq!(self.daemon.wdctl_json("status")["heartbeat"], "sending");
    }

    /// SIGTERM; the daemon exits 0, removes its control socket, and leaves no program of
    /// ours loaded. The daemon stays readable (`log_text`) afterwards.
    pub fn stop_cleanly(&mut self) {
        let status = self.daemon.stop();
        assert!(
            status.success(),
            "watchdog exited with {status} on SIGTERM:\n{}",
            self.daemon.log_text()
        );
        assert!(!self.daemon.socket.exists(), "control socket left behind");
        assert_probes_detached();
    }
}

impl<'a> NodeBuilder<'a> {
    /// Make the workload with `spawn` (e.g. as another user, or put in a cgroup) instead
    /// of `Workload::spawn`.
    pub fn workload(mut self, spawn: impl FnOnce() -> Workload + 'a) -> Self {
        self.spawn = Spawn::BeforeDaemon(Box::new(spawn));
        self
    }

    /// Make the workload with `spawn` 800 ms after the daemon was started, with pid 0:
    /// its targets (set with `opts`) must find it by themselves.
    pub fn workload_after_daemon(
        mut self,
        spawn: impl FnOnce() -> Workload + Send + 'static,
    ) -> Self {
        self.spawn = Spawn::AfterDaemon(Box::new(spawn));
        self
    }

    /// Change the daemon's options; they come with the workload's pid, the budget and
    /// the interval already set.
    pub fn opts(mut self, opts: impl FnOnce(&mut DaemonOpts) + 'a) -> Self {
        self.opts = Box::new(opts);
        self
    }

    /// Spawn the workload, start the recorder and the daemon; returns once the daemon's
    /// first heartbeat arrived.
    pub fn start(self) -> Node {
        let (early, later) = match self.spawn {
            Spawn::BeforeDaemon(spawn) => (Some(spawn()), None),
            Spawn::AfterDaemon(spawn) => (None, Some(spawn)),
        };
        let pid = early.as_ref().map_or(0, |w| w.pid);
        let mut opts = DaemonOpts::new(pid, self.budget, self.interval);
        (self.opts)(&mut opts);
        let group = opts.group.unwrap_or_else(unique_group);
        let rec = Recorder::start(group);
        let later = later.map(|spawn| {
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(800));
                spawn()
            })
        });
        let daemon = Daemon::start(opts, group, &rec);
        let work = match (early, later) {
            (Some(work), _) => work,
            (None, Some(later)) => later.join().expect("spawning the workload"),
            (None, None) => unreachable!("one of the two spawns"),
        };
        Node {
            daemon,
            rec,
            work,
            budget: self.budget,
            interval: self.interval,
        }
    }
}

/// Every heartbeat sequence number from the first to the last was received, and no two
/// consecutive arrivals were more than `max_gap` apart.
pub fn assert_no_missed_beats(rec: &Recorder, from_ns: u64, to_ns: u64, max_gap: Duration) {
    let beats: Vec<_> = rec
        .beats()
        .into_iter()
        .filter(|(at, _)| (from_ns..=to_ns).contains(at))
        .collect();
    assert!(
        beats.len() >= 2,
        "too few heartbeats in the window: {}",
        beats.len()
    );
    for pair in beats.windows(2) {
        let ((a_at, a), (b_at, b)) = (&pair[0], &pair[1]);
        assert_eq!(
            b.seq,
            a.seq + 1,
            "heartbeat seq {} followed by {}",
            a.seq,
            b.seq
        );
        let gap = Duration::from_nanos(b_at - a_at);
        assert!(
            gap <= max_gap,
            "heartbeat gap of {gap:?} after seq {} (max {max_gap:?})",
            a.seq
        );
    }
}

/// No program of ours is left attached once the daemon has exited.
pub fn assert_probes_detached() {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let out = Command::new("bpftool")
            .args(["prog", "list"])
            .output()
            .expect("bpftool (installed by cargo xtask test)");
        let text = String::from_utf8_lossy(&out.stdout);
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains(" name printk_console ")
                    || l.contains(" name sys_enter ")
                    || l.contains(" name gate_egress ")
            })
            .collect();
        if ours.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "programs still attached after exit: {ours:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
