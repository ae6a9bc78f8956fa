//! Command lines of `watchdog` and `wdctl` (clap). Pure: parsing and validation only.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use watchdog_common::signal;

use crate::{heartbeat::packet::validate_node_id, judging::policy::BudgetClass};

/// Where the daemon serves wdctl unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/watchdog/watchdog.sock";

/// An error and its causes on one line, each cause once: some errors already quote
/// their cause in their own message, and it must not be printed twice.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for part in e.chain().map(|c| c.to_string()) {
        if out.contains(&part) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&part);
    }
    out
}

/// The longest duration taken anywhere: a year. Budgets, timeouts and intervals are
/// compared in nanoseconds in a u64 (585 years), and nothing here is meant to last a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The shortest heartbeat interval: 100 datagrams a second is more than any peer needs,
/// and a shorter one only burns the CPU and the network.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A duration such as `300ms`, `5s` or `1m`; zero, and more than a year, are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as 300ms, 5s or 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > MAX_DURATION {
        return Err("must be at most a year (365d)".into());
    }
    Ok(d)
}

/// A service heartbeat gate, `MATCH[@SENDER]`.
pub fn parse_gate(s: &str) -> Result<crate::heartbeat::gate_spec::GateSpec, String> {
    s.parse()
}

/// The heartbeat interval: a duration of at least [`MIN_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(d)
}

/// A multicast `GROUP:PORT`: `239.255.42.1:7999` or `[ff02::42]:7999`.
pub fn parse_group(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| "expected GROUP:PORT, e.g. 239.255.42.1:7999 or [ff02::42]:7999".to_owned())?;
    if !addr.ip().is_multicast() {
        return Err(format!("{} is not a multicast address", addr.ip()));
    }
    if addr.port() == 0 {
        return Err("port must not be 0".into());
    }
    Ok(addr)
}

/// A signal by name (`SIGQUIT`, `QUIT`) or number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=signal::MAX).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is not a signal number"))
        };
    }
    signal::by_name(s)
        .ok_or_else(|| format!("unknown signal {s} (e.g. SIGQUIT, SIGABRT, SIGTERM, or a number)"))
}

/// `NAME=DUR`: a syscall of this architecture and its budget.
pub fn parse_syscall_budget(s: &str) -> Result<(String, Duration), String> {
    let (name, dur) = s
        .split_once('=')
        .ok_or("expected NAME=DUR, e.g. fsync=10s")?;
    if crate::judging::syscall_table::number(name).is_none() {
        return Err(format!("{name} is not a syscall on this architecture"));
    }
    Ok((name.to_owned(), parse_duration(dur)?))
}

/// `CLASS=DUR`: a budget for a class of syscalls (`wait`, `bounded`).
pub fn parse_class_budget(s: &str) -> Result<(BudgetClass, Duration), String> {
    let (name, dur) = s
        .split_once('=')
        .ok_or("expected CLASS=DUR, e.g. wait=30s")?;
    let class = BudgetClass::parse(name).ok_or_else(|| {
        format!(
            "{name} is not a syscall class (one of: {})",
            BudgetClass::NAMES
        )
    })?;
    Ok((class, parse_duration(dur)?))
}

/// A group by name (from the group database) or number.
pub fn parse_group_id(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(s).map_err(|_| "a group name has no NUL byte".to_owned())?;
    // SAFETY: a valid C string; the result is read at once, before any other call.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(format!("no group {s:?}"));
    }
    // SAFETY: non-null group entry.
    Ok(unsafe { (*entry).gr_gid })
}

pub fn parse_node_id(s: &str) -> Result<String, String> {
    validate_node_id(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

pub fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err("expected a process id (a positive integer)".into()),
        Ok(pid) => Ok(pid),
    }
}

/// The watchdog daemon: measures every syscall of the monitored processes in the kernel,
/// and sends the node's heartbeat only while all their threads are healthy.
///
/// Every option can also be set in the config file; the command line wins.
#[derive(Clone, Debug, Default, Parser)]
#[command(name = "watchdog", version)]
pub struct DaemonArgs {
    /// Config file (TOML). Default: /etc/watchdog/watchdog.toml, if it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Process to monitor (every thread, including threads created later). Repeatable.
    #[arg(long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<u32>,
    /// Monitor every process running this program (its comm, at most 15 bytes), including
    /// ones that start later. Repeatable.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Monitor every process in this cgroup v2 (absolute, or relative to the cgroup2
    /// mount, e.g. system.slice/db.service), including ones that start later. Repeatable.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Longest a syscall may run before its thread is stalled [default: 2s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub budget: Option<Duration>,
    /// Budget of one syscall, over --budget: `fsync=10s`. Repeatable.
    #[arg(long = "syscall-budget", value_name = "NAME=DUR", value_parser = parse_syscall_budget)]
    pub syscall_budgets: Vec<(String, Duration)>,
    /// Budget of a class of syscalls, over --budget and under --syscall-budget:
    /// `wait=30s` (how long a wait may spin or sleep uninterruptibly), `bounded=5s`.
    /// Repeatable.
    #[arg(long = "class-budget", value_name = "CLASS=DUR", value_parser = parse_class_budget)]
    pub class_budgets: Vec<(BudgetClass, Duration)>,
    /// keepalived track_file: 0 while the heartbeat is sent, 1 when it is stopped
    /// (keepalived, with weight 0, goes to FAULT).
    #[arg(long, value_name = "PATH")]
    pub track_file: Option<PathBuf>,
    /// Resume the heartbeat by itself once nothing has stood in the way for this long
    /// (default: never; an operator runs `wdctl resume`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub auto_resume_after: Option<Duration>,
    /// Signal sent to a process when one of its threads is stalled (SIGQUIT asks many
    /// runtimes for a thread dump or core), once per process. Default: none.
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub stall_signal: Option<i32>,
    /// Longest a monitored thread may stay stopped, by a signal (SIGSTOP) or a tracer,
    /// before it is stalled [default: 5s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub stopped_budget: Option<Duration>,
    /// Hold back the service's own heartbeat packets while ours is stopped by a verdict:
    /// MATCH[@SENDER], e.g. `udp:5405`, `tcp:8080,to=192.0.2.0/24`, `proto:vrrp@comm:hbd`
    /// (repeatable; see the README's "Service heartbeat gate").
    #[arg(long = "gate", value_name = "MATCH[@SENDER]", value_parser = parse_gate)]
    pub gates: Vec<crate::heartbeat::gate_spec::GateSpec>,
    /// How long a dead daemon's gates stay open before they close by themselves, as its
    /// own heartbeat falls silent [default: 3 heartbeat intervals].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub gate_grace: Option<Duration>,
    /// Where the gate is pinned (on bpffs), so it outlives the daemon
    /// [default: /sys/fs/bpf/watchdog-gate].
    #[arg(long, value_name = "PATH")]
    pub gate_pin_dir: Option<PathBuf>,
    /// Multicast group and port the heartbeat is sent to.
    #[arg(long, value_name = "GROUP:PORT", value_parser = parse_group)]
    pub heartbeat: Option<SocketAddr>,
    /// Network interface the heartbeat goes out on.
    #[arg(long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Sign every heartbeat with HMAC-SHA256 and this shared key (a file only its
    /// owner may read, at least 16 bytes). Default: unsigned (said at start).
    #[arg(long, value_name = "PATH")]
    pub heartbeat_key: Option<PathBuf>,
    /// Time between two heartbeats, at least 10ms [default: 1s].
    #[arg(long, value_name = "DUR", value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// Control socket for wdctl, created with mode 0600 [default: /run/watchdog/watchdog.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Group (name or number) whose members may read through the control socket
    /// (threads, status, incidents); only root may change things (resume). The socket
    /// is then mode 0660. Default: root only.
    #[arg(long, value_name = "GROUP", value_parser = parse_group_id)]
    pub socket_group: Option<u32>,
    /// This node's name in the heartbeat (1 to 64 bytes) [default: the host name].
    #[arg(long, value_name = "ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Multicast TTL (IPv6 hop limit) of the heartbeat [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=255))]
    pub ttl: Option<u32>,
    /// Operator rules for kernel messages (TOML), tried before the built-in ones.
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    /// Incident database (SQLite), kept across restarts [default: /var/lib/watchdog/incidents.db].
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Most incidents kept; the oldest go first [default: 10000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub store_max: Option<u64>,
    /// Program run for each incident: PROGRAM CLASS HOST SUMMARY, the incident as JSON
    /// on stdin.
    #[arg(long, value_name = "PROGRAM")]
    pub exec_hook: Option<PathBuf>,
    /// Program run when the heartbeat stops (`PROGRAM stopped REASON`) and when it is
    /// sent again (`PROGRAM sending`), and for the state at start: for an HA manager
    /// that does not listen to the heartbeat (Pacemaker's node health). Never holds up
    /// the heartbeat; a failed run is retried.
    #[arg(long, value_name = "PROGRAM")]
    pub state_hook: Option<PathBuf>,
    /// Lock the daemon's memory (mlockall), so that memory pressure cannot page out
    /// what sends the heartbeat or judges threads. Costs resident memory: every page of
    /// the binary and the thread stacks stays in RAM (about 30 MiB).
    #[arg(long)]
    pub mlock: bool,
    /// Run the daemon's threads at this SCHED_FIFO priority (1-99), so CPU load cannot
    /// delay a heartbeat or a verdict; its exec hooks run at normal priority.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=99))]
    pub rt_priority: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (default: off).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Have the kernel count our probes' run time while the daemon runs (BPF_ENABLE_STATS),
    /// for the probe_run_* metrics. Costs every BPF program on the host two clock reads
    /// per run, so it is off by default.
    #[arg(long)]
    pub probe_stats: bool,
    /// Log lines as text (default) or one JSON object each, for log collectors.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long the exec hook may run before it is killed [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub exec_hook_timeout: Option<Duration>,
    /// Push every incident to this Alertmanager (`http://HOST:PORT`, API v2) as an
    /// alert. Repeatable: each member of an Alertmanager cluster gets every alert.
    #[arg(long = "alertmanager", value_name = "URL", value_parser = parse_alertmanager_url)]
    pub alertmanagers: Vec<String>,
    /// How often an alert that holds (the heartbeat stopped) is sent again; it says it
    /// ends four of these later, so a node that dies does not leave it firing forever
    /// [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub alertmanager_resend: Option<Duration>,
    /// Where to look at start for crash dumps of earlier boots, each made an incident
    /// once: a pstore mount or a systemd-pstore archive. Repeatable [default:
    /// /sys/fs/pstore and /var/lib/systemd/pstore].
    #[arg(long = "pstore", value_name = "DIR")]
    pub pstore_dirs: Vec<PathBuf>,
    /// Delete a pstore record once its incident is stored, to free the backend's room
    /// (a full EFI store can keep the next crash from being saved). Records in a
    /// systemd-pstore archive are left as they are.
    #[arg(long)]
    pub pstore_unlink: bool,
}

/// An Alertmanager's base URL: `http://HOST[:PORT][/PATH]`, without a trailing slash.
pub fn parse_alertmanager_url(s: &str) -> Result<String, String> {
    let rest = if let Some(rest) = s.strip_prefix("http://") {
        rest
    } else if s.starts_with("https://") {
        return Err(format!(
            "{s}: https is not supported (this build has no TLS): reach the Alertmanager over http, or through a local TLS proxy"
        ));
    } else {
        return Err(format!("{s}: an Alertmanager URL starts with http://"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(format!("{s}: no host:port after http://"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where incidents are kept unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/watchdog/incidents.db";

/// util-linux ships a `wdctl` for hardware watchdog devices. Its calls (no subcommand, a
/// device path, or one of its options) are told apart from ours, so that someone with
/// that habit gets a pointer rather than a puzzle. Returns the message to print.
pub fn util_linux_wdctl_call(args: &[String]) -> Option<String> {
    const THEIRS: &[&str] = &[
        "-f",
        "--flags",
        "-F",
        "--noflags",
        "-I",
        "--noident",
        "-n",
        "--noheadings",
        "-o",
        "--output",
        "-O",
        "--oneline",
        "-r",
        "--raw",
        "-s",
        "--settimeout",
        "-T",
        "--notimeouts",
        "-x",
        "--flags-only",
        "-p",
        "--setpretimeout",
        "-g",
        "--setpregovernor",
        "-d",
        "--device",
    ];
    const OURS: &[&str] = &[
        "threads",
        "status",
        "resume",
        "incidents",
        "incident",
        "heartbeat",
        "kmsg",
        "rules",
        "help",
        "-h",
        "--help",
        "-V",
        "--version",
    ];
    // Our global --socket may come first; what follows decides.
    let mut rest = args.iter().map(String::as_str);
    let mut first = rest.next();
    while let Some(a) = first {
        match a {
            "--socket" => {
                rest.next();
                first = rest.next();
            }
            _ if a.starts_with("--socket=") => first = rest.next(),
            _ => break,
        }
    }
    if first.is_some_and(|f| OURS.contains(&f)) {
        return None;
    }
    let device = args.iter().any(|a| a.starts_with("/dev/"));
    let theirs = args.iter().any(|a| {
        let flag = a.split('=').next().unwrap_or(a);
        THEIRS.contains(&flag)
    });
    if !(first.is_none() || device || theirs) {
        return None;
    }
    Some(
        "this wdctl is the kernel stall watchdog's (threads, status, resume, incidents, \
         heartbeat, kmsg, rules; see wdctl --help).\n\
         For hardware watchdog devices (/dev/watchdog*), use util-linux's wdctl: \
         /usr/bin/wdctl, or `util-linux` from your distribution."
            .into(),
    )
}

/// wdctl: the operator's window into the watchdog daemon.
#[derive(Debug, Parser)]
#[command(name = "wdctl", version)]
pub struct WdctlArgs {
    /// The daemon's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: WdctlCommand,
}

#[derive(Debug, Subcommand)]
pub enum WdctlCommand {
    /// Each monitored thread: its current syscall, time in it, budget and verdict.
    Threads(JsonFlag),
    /// Heartbeat state, counts, and the stall reasons so far.
    Status(JsonFlag),
    /// Send the heartbeat again after a verdict, if nothing is stalled now (refused, with
    /// the reasons, otherwise).
    Resume,
    /// Incidents the daemon recorded, newest first.
    Incidents(IncidentsArgs),
    /// One incident, whole.
    Incident(IncidentArgs),
    /// Heartbeat tools.
    #[command(subcommand)]
    Heartbeat(HeartbeatCommand),
    /// Read kernel logs offline (no daemon, no root): classify lines, assemble incidents.
    #[command(subcommand)]
    Kmsg(KmsgCommand),
    /// Check classification rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Crash dumps of an earlier boot in a directory (a pstore mount, a systemd-pstore
    /// archive, or a copy of either), offline: the incident each one makes, and the
    /// files that are no dump (exit status 1 if any).
    Harvest(HarvestArgs),
}

#[derive(Debug, Args)]
pub struct HarvestArgs {
    /// The directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// JSON output: an array of incidents.
    #[arg(long)]
    pub json: bool,
    /// Rules file to classify with, besides the built-in rules.
    #[arg(long, value_name = "RULES")]
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// How many, at most.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct IncidentArgs {
    /// The incident's id (from `wdctl incidents`).
    #[arg(value_name = "ID")]
    pub id: i64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KmsgCommand {
    /// One result per input line: class, rule, line.
    Classify(KmsgArgs),
    /// Group the lines of each kernel report into an incident.
    Incidents(KmsgArgs),
}

#[derive(Debug, Args)]
pub struct KmsgArgs {
    /// A log (dmesg, journalctl -k, /dev/kmsg dump, syslog); standard input without it.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Operator rules to use before the built-in ones.
    #[arg(long, value_name = "RULES_FILE")]
    pub rules: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// classify: only the lines no rule knows that are at level err or worse (where the
    /// line says its level: a /dev/kmsg record, `<N>`, `dmesg -x`): the rules that
    /// may be missing.
    #[arg(long)]
    pub unmatched: bool,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// The rule test bench: every rule's examples are decided by that rule, and every
    /// line of --examples is caught. Exits non-zero with a report otherwise.
    Test(RulesTestArgs),
}

#[derive(Debug, Args)]
pub struct RulesTestArgs {
    /// Operator rules file to check along with the built-in rules.
    #[arg(value_name = "RULES_FILE")]
    pub rules: Option<PathBuf>,
    /// A file of kernel lines that must all be caught (one per line; # comments).
    #[arg(long, value_name = "FILE")]
    pub examples: Option<PathBuf>,
    /// A labelled corpus (`class<TAB>source<TAB>line` files, or directories of `*.tsv`):
    /// print the recall per class, and fail if a benign line is alerted or the recall
    /// of problem lines is under --min-recall (repeatable).
    #[arg(long, value_name = "PATH")]
    pub corpus: Vec<PathBuf>,
    /// Least recall of problem lines, in percent, that --corpus accepts.
    #[arg(long, value_name = "PERCENT", default_value_t = 98.0)]
    pub min_recall: f64,
    /// With --corpus: print every line the rules got wrong.
    #[arg(long)]
    pub misses: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum HeartbeatCommand {
    /// Join a heartbeat group and print every heartbeat, and nodes that fall silent.
    Listen(ListenArgs),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Multicast group and port to join.
    #[arg(value_name = "GROUP:PORT", value_parser = parse_group)]
    pub group: SocketAddr,
    /// Interface to join the group on.
    #[arg(long, value_name = "IFACE")]
    pub interface: String,
    /// The nodes' shared key (as given to the daemon's --heartbeat-key): each datagram's
    /// tag is checked, and unsigned, forged or replayed ones are rejected and counted.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (default: run until interrupted).
    #[arg(long = "for", value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Serve the fleet as heard (each node's status, last beat age, sequence gaps,
    /// restarts; refused datagrams) to Prometheus at http://ADDR:PORT/metrics: a fleet
    /// heartbeat monitor.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// A node is silent after this many of its heartbeat intervals without one.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub silent_after: u32,
    /// The nodes' heartbeat interval, until two beats of a node tell its own, and for
    /// expected nodes never heard.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_interval)]
    pub node_interval: Duration,
    /// A node that should be in the group (repeatable): silent until it is heard.
    #[arg(long = "expect", value_name = "NODE_ID", value_parser = parse_node_id)]
    pub expected: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(args: &[&str]) -> Result<DaemonArgs, String> {
        let mut full = vec!["watchdog"];
        full.extend_from_slice(args);
        DaemonArgs::try_parse_from(full).map_err(|e| e.to_string())
    }

    const GOOD: &[&str] = &[
        "--pid",
        "1",
        "--heartbeat",
        "239.255.42.1:7999",
        "--interface",
        "lo",
    ];

    #[test]
    fn minimal_command_line() {
        let a = daemon(GOOD).unwrap();
        assert_eq!(a.pids, vec![1]);
        assert_eq!(a.budget, None, "defaults are applied after the config file");
    }

    #[test]
    fn full_command_line() {
        let a = daemon(&[
            "--pid",
            "10",
            "--pid",
            "20",
            "--budget",
            "300ms",
            "--heartbeat",
            "[ff02::42]:9000",
            "--interface",
            "eth0",
            "--interval",
            "50ms",
            "--socket",
            "/tmp/x.sock",
            "--node-id",
            "db-1",
        ])
        .unwrap();
        assert_eq!(a.pids, vec![10, 20]);
        assert_eq!(a.budget, Some(Duration::from_millis(300)));
        assert_eq!(a.interval, Some(Duration::from_millis(50)));
        assert_eq!(a.node_id.as_deref(), Some("db-1"));
    }

    fn error_of(args: &[&str]) -> String {
        daemon(args).expect_err("must be refused")
    }

    /// The error for GOOD with `key` set to `value`.
    fn error_with(key: &str, value: &str) -> String {
        let mut args: Vec<String> = GOOD.iter().map(|s| s.to_string()).collect();
        match args.iter().position(|a| a == key) {
            Some(i) => args[i + 1] = value.to_owned(),
            None => args.extend([key.to_owned(), value.to_owned()]),
        }
        error_of(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        let cases = [
            ("--budget", "soon", "--budget <DUR>", "'soon'"),
            ("--budget", "0s", "--budget <DUR>", "greater than zero"),
            ("--interval", "5x", "--interval <DUR>", "300ms, 5s or 1m"),
            (
                "--heartbeat",
                "10.0.0.1:7999",
                "--heartbeat <GROUP:PORT>",
                "not a multicast address",
            ),
            (
                "--heartbeat",
                "239.1.1.1",
                "--heartbeat <GROUP:PORT>",
                "expected GROUP:PORT",
            ),
            (
                "--heartbeat",
                "239.1.1.1:0",
                "--heartbeat <GROUP:PORT>",
                "port must not be 0",
            ),
            ("--pid", "abc", "--pid <PID>", "process id"),
            ("--pid", "0", "--pid <PID>", "process id"),
            (
                "--node-id",
                &"x".repeat(65),
                "--node-id <ID>",
                "1 to 64 bytes",
            ),
            ("--ttl", "300", "--ttl <N>", "300"),
            (
                "--syscall-budget",
                "fsnyc=1s",
                "--syscall-budget <NAME=DUR>",
                "fsnyc is not a syscall",
            ),
            (
                "--syscall-budget",
                "fsync",
                "--syscall-budget <NAME=DUR>",
                "expected NAME=DUR",
            ),
        ];
        for (key, value, names, says) in cases {
            let e = error_with(key, value);
            assert!(e.contains(names) && e.contains(says), "{key} {value}: {e}");
        }
    }

    #[test]
    fn durations_have_a_range_and_the_interval_a_floor() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("18446744074s"),
            Err("must be at most a year (365d)".into())
        );
        assert_eq!(
            parse_duration("0s"),
            Err("must be greater than zero".into())
        );
        assert_eq!(parse_interval("10ms"), Ok(MIN_INTERVAL));
        assert_eq!(parse_interval("1ns"), Err("must be at least 10ms".into()));
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGQUIT"), Ok(libc::SIGQUIT));
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("6"), Ok(6));
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(io).context("cannot open /x: No such file or directory");
        assert_eq!(error_chain(&e), "cannot open /x: No such file or directory");
        let e = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(error_chain(&e), "outer: root cause");
    }

    #[test]
    fn wdctl_command_lines() {
        let a = WdctlArgs::try_parse_from(["wdctl", "--socket", "/tmp/s", "threads", "--json"])
            .unwrap();
        assert!(matches!(
            a.command,
            WdctlCommand::Threads(JsonFlag { json: true })
        ));
        let a = WdctlArgs::try_parse_from(["wdctl", "status"]).unwrap();
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
        let a = WdctlArgs::try_parse_from([
            "wdctl",
            "heartbeat",
            "listen",
            "239.1.2.3:99",
            "--interface",
            "lo",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            WdctlCommand::Heartbeat(HeartbeatCommand::Listen(_))
        ));
    }
}
