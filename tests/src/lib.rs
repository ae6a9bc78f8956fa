//! Harness for the end-to-end tests: the real daemon, the real wdctl, a real workload
//! process, and a heartbeat listener on `lo`. Waits use deadlines, never blind sleeps.
mod fixture;
pub mod keepalived;
pub mod netns;
pub mod nspawn;
pub mod pacemaker;
pub mod prometheus;

pub use fixture::*;
use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use watchdog::heartbeat::{Heartbeat, iface::Interface, socket};
pub use watchdog::kernel::clock::monotonic_ns;

/// Where the watchdog and wdctl binaries are: `WATCHDOG_BIN_DIR` (set by `cargo xtask
/// test`), or the workspace's release build.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("WATCHDOG_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo xtask test does), or set WATCHDOG_BIN_DIR",
        path.display()
    );
    path
}

/// The end-to-end tests load eBPF programs: they need root. Fail loudly rather than skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests load eBPF programs and need root; run them with `cargo xtask test` as root"
    );
}

/// A fresh multicast group and port for one test, so tests never hear each other.
pub fn unique_group() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = 20_000 + (std::process::id() % 20_000) as u16 + n;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(239, 255, 88, 1 + (n % 200) as u8),
        port,
    ))
}

/// The tids of process `pid`'s threads now, from /proc (none if it is gone).
pub fn task_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Field `key=value` of a line like `STALL tid=12 at_ns=345`.
pub fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The workload process (tests/src/bin/wd-workload.rs), driven over stdin.
pub struct Workload {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    pub pid: u32,
    /// CLOCK_MONOTONIC just before the process was started: nothing of it ran earlier.
    pub spawned_at: u64,
}

impl Workload {
    pub fn spawn() -> Self {
        Self::spawn_command(Command::new(bin("wd-workload")))
    }

    /// Started as user `uid` (group `uid` too), not root.
    pub fn spawn_as_user(uid: u32) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(bin("wd-workload"));
        cmd.uid(uid).gid(uid);
        Self::spawn_command(cmd)
    }

    /// Started inside network namespace `ns` (`ip netns exec` execs the workload, so the
    /// pid is the workload's).
    pub fn spawn_in_netns(ns: &str) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bin("wd-workload"));
        Self::spawn_command(cmd)
    }

    /// Started inside cgroup `dir`: a shell joins it, then execs the workload.
    pub fn spawn_in_cgroup(dir: &std::path::Path) -> Self {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec {}",
            dir.display(),
            bin("wd-workload").display()
        ));
        Self::spawn_command(cmd)
    }

    fn spawn_command(mut cmd: Command) -> Self {
        let spawned_at = monotonic_ns();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn wd-workload");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Workload {
            child,
            stdin,
            lines,
            pid: 0,
            spawned_at,
        };
        let ready = w.expect("READY", Duration::from_secs(5));
        w.pid = field(&ready, "pid") as u32;
        w
    }

    pub fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to workload");
        self.stdin.flush().unwrap();
    }

    /// The next line starting with `prefix`; other lines are skipped, ERROR lines fail.
    pub fn expect(&mut self, prefix: &str, within: Duration) -> String {
        self.lines_until(prefix, within)
            .pop()
            .expect("lines_until ends with the line it waited for")
    }

    /// Every line up to and including the next one starting with `prefix` (ERROR lines
    /// fail).
    pub fn lines_until(&mut self, prefix: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("workload said no {prefix} line within {within:?}"));
            assert!(!line.starts_with("ERROR"), "workload: {line}");
            let done = line.starts_with(prefix);
            out.push(line);
            if done {
                return out;
            }
        }
    }

    /// Kill the process and reap it (again on drop, harmlessly).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Records every heartbeat received on `lo`, with its CLOCK_MONOTONIC arrival time.
pub struct Recorder {
    beats: Arc<Mutex<Vec<(u64, Heartbeat)>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub fn start(group: SocketAddr) -> Self {
        let lo = Interface::by_name("lo").unwrap();
        let sock = socket::listener(group, &lo).expect("join heartbeat group on lo");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let beats = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (beats.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let at = monotonic_ns();
                    let hb =
                        Heartbeat::decode(&buf[..n]).expect("daemon sent a malformed heartbeat");
                    b.lock().unwrap().push((at, hb));
                }
            }
        });
        Recorder { beats, stop }
    }

    pub fn beats(&self) -> Vec<(u64, Heartbeat)> {
        self.beats.lock().unwrap().clone()
    }

    /// Wait until at least `n` heartbeats arrived.
    pub fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.beats.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} heartbeats within {within:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Arrival time of the last heartbeat.
    pub fn last_arrival(&self) -> Option<u64> {
        self.beats.lock().unwrap().last().map(|(at, _)| *at)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A running watchdog daemon.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub group: SocketAddr,
    /// Holds the incident store when the test did not give one.
    _scratch: Option<TempDir>,
}

pub struct DaemonOpts {
    pub pid: u32,
    pub budget: &'static str,
    pub interval: &'static str,
    /// Incident store to use (kept by the caller across restarts); a fresh one if None.
    pub store: Option<PathBuf>,
    /// `--exec-hook` program.
    pub hook: Option<PathBuf>,
    /// `--config` file: then pid and budget come from it, not the command line.
    pub config: Option<PathBuf>,
    /// Target options to use instead of `--pid` (`--comm NAME`, `--cgroup PATH`).
    pub targets: Option<Vec<String>>,
    /// More options.
    pub extra: Vec<String>,
    /// Environment variables for the daemon.
    pub env: Vec<(&'static str, String)>,
    /// A command (with its arguments) that runs the daemon, e.g. setpriv.
    pub wrapper: Vec<String>,
    /// `--node-id`.
    pub node_id: &'static str,
    /// The heartbeat group, if not a fresh one of its own (nodes of one segment).
    pub group: Option<SocketAddr>,
}

impl DaemonOpts {
    pub fn new(pid: u32, budget: &'static str, interval: &'static str) -> Self {
        DaemonOpts {
            pid,
            budget,
            interval,
            store: None,
            hook: None,
            config: None,
            targets: None,
            extra: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
            node_id: "test-node",
            group: None,
        }
    }
}

/// A scratch directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wd-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

/// A directory on bpffs for one test's service heartbeat gate (`--gate-pin-dir`); what
/// is pinned there is removed when dropped, so a test never leaves a gate attached.
pub struct GatePins(pub PathBuf);

impl GatePins {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        GatePins(PathBuf::from(format!(
            "/sys/fs/bpf/wd-test-{name}-{}-{n}",
            std::process::id()
        )))
    }

    /// Whether a gate is pinned there.
    pub fn pinned(&self) -> bool {
        self.0.join("links").exists()
    }

    /// `--gate-pin-dir` and this directory.
    pub fn args(&self) -> [String; 2] {
        ["--gate-pin-dir".into(), self.0.display().to_string()]
    }
}

impl Drop for GatePins {
    fn drop(&mut self) {
        watchdog::kernel::gate::remove_pins(&self.0);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Daemon {
    /// Start the daemon on `lo` and wait until its first heartbeat reaches `rec`.
    pub fn start(opts: DaemonOpts, group: SocketAddr, rec: &Recorder) -> Self {
        let before = rec.beats().len();
        let mut d = Daemon::spawn(opts, group);
        let deadline = Instant::now() + Duration::from_secs(15);
        // Beats from an earlier daemon on the same group do not count.
        while rec.beats().len() <= before {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "watchdog exited with {status} before its first heartbeat:\n{}",
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no heartbeat within 15 s:\n{}",
                d.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Start the daemon for a test where it must not send a heartbeat: returns once its
    /// control socket answers.
    pub fn start_silent(opts: DaemonOpts, group: SocketAddr) -> Self {
        let mut d = Daemon::spawn(opts, group);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !d.log_text().contains("watchdog running") || !d.socket.exists() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("watchdog exited with {status}:\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "not running within 15 s:\n{}",
                d.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn spawn(opts: DaemonOpts, group: SocketAddr) -> Self {
        // Nodes of one segment share the group: their node ids tell them apart.
        let tag = format!("{}-{}-{}", std::process::id(), group.port(), opts.node_id);
        let dir = std::env::temp_dir();
        let socket = dir.join(format!("wd-test-{tag}.sock"));
        // Numbered: a daemon restarted on the same group must not write the log that its
        // predecessor's Drop removes.
        static STARTS: AtomicU16 = AtomicU16::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("wd-test-{tag}-{n}.log"));
        let scratch = opts.store.is_none().then(|| TempDir::new("store"));
        let store = opts
            .store
            .clone()
            .unwrap_or_else(|| scratch.as_ref().unwrap().0.join("incidents.db"));
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("watchdog"));
                c
            }
            None => Command::new(bin("watchdog")),
        };
        if let Some(hook) = &opts.hook {
            cmd.arg("--exec-hook").arg(hook);
        }
        cmd.args(&opts.extra);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        match (&opts.config, &opts.targets) {
            (Some(config), _) => cmd.arg("--config").arg(config),
            (None, Some(targets)) => cmd.args(targets).args(["--budget", opts.budget]),
            (None, None) => cmd.args(["--pid", &opts.pid.to_string(), "--budget", opts.budget]),
        };
        let child = cmd
            .arg("--store")
            .arg(&store)
            .args(["--interval", opts.interval])
            .args([
                "--heartbeat",
                &group.to_string(),
                "--interface",
                "lo",
                "--ttl",
                "1",
            ])
            .args(["--node-id", opts.node_id, "--socket"])
            .arg(&socket)
            .env("WATCHDOG_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn watchdog");
        Daemon {
            child: Some(child),
            socket,
            log,
            group,
            _scratch: scratch,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run wdctl against this daemon with `--json` and parse what it prints.
    pub fn wdctl_json(&self, cmd: &str) -> serde_json::Value {
        self.wdctl_json_args(&[cmd])
    }

    /// Run `wdctl ARGS... --json` against this daemon and parse what it prints.
    pub fn wdctl_json_args(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .wdctl_command(args)
            .arg("--json")
            .output()
            .expect("run wdctl");
        assert!(
            out.status.success(),
            "wdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "wdctl {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `wdctl --socket SOCKET ARGS...` against this daemon, not yet run.
    pub fn wdctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("wdctl"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }

    /// The processes the daemon monitors now (`wdctl status`), and the whole status.
    pub fn monitored_pids(&self) -> (Vec<u32>, serde_json::Value) {
        let status = self.wdctl_json("status");
        let pids = status["monitored_pids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_u64())
            .map(|p| p as u32)
            .collect();
        (pids, status)
    }

    /// Run `wdctl ARGS...` against this daemon: (exit code, stdout, stderr).
    pub fn wdctl(&self, args: &[&str]) -> (i32, String, String) {
        run_for_output(self.wdctl_command(args))
    }

    /// Wait until `wdctl incidents` lists one that `pred` accepts; return it whole.
    pub fn wait_incident(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let list = self.wdctl_json("incidents");
            if let Some(found) = list.as_array().unwrap().iter().find(|i| pred(i)) {
                let id = found["id"].as_i64().unwrap().to_string();
                return self.wdctl_json_args(&["incident", &id]);
            }
            assert!(
                Instant::now() < deadline,
                "no such incident within {within:?}: {list:#}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the exec hook (a script of the test's) has written `path` so that
    /// `done` holds for its text; return the text.
    pub fn wait_hook_output(
        &self,
        path: &std::path::Path,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "exec hook did not write {} within {within:?}: {text:?}\n{}",
                path.display(),
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the log has a line for which `pred` holds; return it.
    pub fn wait_log_line(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log_text().lines().find(|l| pred(l)) {
                return l.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no such log line within {within:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Send the daemon a signal.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, sig) };
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("watchdog did not exit within 10 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the daemon if it still runs, and reap it (a SIGKILLed one too).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The row of `wdctl threads --json` for thread `tid`.
pub fn thread_row(rows: &serde_json::Value, tid: u64) -> serde_json::Value {
    rows.as_array()
        .expect("threads --json is an array")
        .iter()
        .find(|r| r["tid"] == tid)
        .unwrap_or_else(|| panic!("tid {tid} not in wdctl threads: {rows:#}"))
        .clone()
}

/// A memory cgroup the test creates (v2 if the host has a v2 memory controller, else
/// v1), with a hard limit; removed when dropped.
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    pub fn new(name: &str, limit_bytes: u64) -> Self {
        // Tests create it before their fixture: say why it fails, as the fixture would.
        require_root();
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (dir, limit_file) = if std::fs::read_to_string(v2).is_ok_and(|c| c.contains("memory")) {
            (PathBuf::from("/sys/fs/cgroup").join(name), "memory.max")
        } else {
            (
                PathBuf::from("/sys/fs/cgroup/memory").join(name),
                "memory.limit_in_bytes",
            )
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating memory cgroup {}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), limit_bytes.to_string()).unwrap();
        // No swap to escape to (v1 memsw may be absent; v2 swap.max may be absent).
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        MemoryCgroup { dir }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A cgroup v2 directory the test creates under the cgroup2 mount; removed when dropped.
pub struct Cgroup2 {
    pub dir: PathBuf,
}

impl Cgroup2 {
    pub fn new(name: &str) -> Self {
        // Tests create it before their fixture: say why it fails, as the fixture would.
        require_root();
        let mount = watchdog::kernel::procfs::cgroup2_mount().expect("a cgroup2 mount");
        let dir = mount.join(name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        Cgroup2 { dir }
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `argv[0]` with the rest of `argv` as its arguments.
pub fn command(argv: &[&str]) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// Run `cmd` to completion and fail the test unless it exits 0; its stdout and stderr.
pub fn must_succeed(cmd: Command) -> String {
    let what = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let (code, out, err) = run_for_output(cmd);
    assert_eq!(code, 0, "{what}: {out}{err}");
    out + &err
}

/// Run `cmd` to completion: (exit code, stdout, stderr), lossily decoded.
pub fn run_for_output(mut cmd: Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    code_and_text(out)
}

/// Run `cmd` with `input` on its stdin: (exit code, stdout, stderr).
pub fn run_with_input(mut cmd: Command, input: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    code_and_text(child.wait_with_output().unwrap())
}

fn code_and_text(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
