//! The configuration: a TOML file merged under the command line. Pure.
//!
//! Every command-line option has a place in the file (see `watchdog.example.toml`);
//! the command line wins; defaults apply last. Unknown keys are errors, and every error
//! names the file, line and column.
pub mod cli;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de::Error as _};

use crate::{
    config::cli::DaemonArgs,
    heartbeat::gate_spec::GateSpec,
    input_file::{TomlError, line_col, parse_toml},
    judging::policy::{BudgetClass, Budgets, DEFAULT_POLICY, DEFAULT_STOPPED_BUDGET, Policy},
    judging::syscall_table,
    judging::targets::{Identity, Selector, TargetSpec},
};

/// The largest config file read: far beyond any real one, and bounded so a wrong path
/// (a log, a device) cannot make the daemon read without end.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/watchdog/watchdog.toml";
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_TTL: u32 = 1;
pub const DEFAULT_STORE_MAX: u64 = 10_000;
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Syntax(#[from] TomlError),
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{0}")]
    Missing(String),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_duration(&s)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("invalid duration '{s}': {e}")))
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_interval(&s)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("invalid interval '{s}': {e}")))
}

fn syscall_budgets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Duration)>, D::Error> {
    let table = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    table
        .into_iter()
        .map(|(name, dur)| {
            cli::parse_syscall_budget(&format!("{name}={dur}"))
                .map_err(|e| D::Error::custom(format!("budgets.{name}: {e}")))
        })
        .collect()
}

fn class_budgets<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<BudgetClass, Duration>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(d)?;
    table
        .into_iter()
        .map(|(name, dur)| {
            cli::parse_class_budget(&format!("{name}={dur}"))
                .map_err(|e| D::Error::custom(format!("class_budgets.{name}: {e}")))
        })
        .collect()
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_signal(&s).map(Some).map_err(D::Error::custom)
}

fn group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_group(&s)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("invalid group '{s}': {e}")))
}

fn group_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_group_id(&s)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("socket_group: {e}")))
}

fn node_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_node_id(&s)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("invalid node_id: {e}")))
}

/// The file, as written.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub comms: Vec<String>,
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    pub budget: Option<Duration>,
    /// Budgets of particular syscalls: `fsync = "10s"`.
    #[serde(default, deserialize_with = "syscall_budgets")]
    pub budgets: Vec<(String, Duration)>,
    /// Budgets of classes of syscalls: `wait = "30s"`, `bounded = "5s"`.
    #[serde(default, deserialize_with = "class_budgets")]
    pub class_budgets: BTreeMap<BudgetClass, Duration>,
    pub track_file: Option<PathBuf>,
    /// Program run when the heartbeat stops and when it resumes.
    pub state_hook: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    pub auto_resume_after: Option<Duration>,
    #[serde(default, deserialize_with = "signal")]
    pub stall_signal: Option<i32>,
    #[serde(default, deserialize_with = "duration")]
    pub stopped_budget: Option<Duration>,
    pub socket: Option<PathBuf>,
    /// Prometheus metrics endpoint, `ADDR:PORT` (off when not set).
    pub metrics: Option<SocketAddr>,
    /// Count probe run time (BPF_ENABLE_STATS) while running.
    pub probe_stats: Option<bool>,
    /// Lock the daemon's memory.
    pub mlock: Option<bool>,
    /// SCHED_FIFO priority of the daemon's threads.
    pub rt_priority: Option<u32>,
    /// Group whose members may read through the control socket (name or number).
    #[serde(default, deserialize_with = "group_id")]
    pub socket_group: Option<u32>,
    pub rules: Option<PathBuf>,
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub exec_hook: HookSection,
    #[serde(default)]
    pub alertmanager: AlertmanagerSection,
    #[serde(default)]
    pub pstore: PstoreSection,
    /// `[[target]]`: targets with settings of their own.
    #[serde(default)]
    pub target: Vec<toml::Spanned<TargetSection>>,
    /// `[[gate]]`: the service's own heartbeat packets to hold back.
    #[serde(default)]
    pub gate: Vec<toml::Spanned<GateSection>>,
    #[serde(default, deserialize_with = "duration")]
    pub gate_grace: Option<Duration>,
    pub gate_pin_dir: Option<PathBuf>,
}

/// A `[[gate]]`: what `--gate MATCH[@SENDER]` says, in three keys.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateSection {
    /// `udp:PORT`, `tcp:PORT` or `proto:N`.
    #[serde(rename = "match")]
    pub matches: String,
    /// Destination `ADDR` or `ADDR/LEN`.
    pub to: Option<String>,
    /// `monitored` (default), `comm:NAME`, `cgroup:PATH` or `pid:N`.
    pub sender: Option<String>,
}

impl GateSection {
    fn spec(&self) -> Result<GateSpec, String> {
        let mut text = self.matches.clone();
        if let Some(to) = &self.to {
            text.push_str(",to=");
            text.push_str(to);
        }
        if let Some(sender) = &self.sender {
            text.push('@');
            text.push_str(sender);
        }
        text.parse()
    }
}

/// A `[[target]]`: one of pid, comm or cgroup, and what it sets over the node-wide
/// settings (the rest it inherits).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    pub budget: Option<Duration>,
    #[serde(default, deserialize_with = "syscall_budgets")]
    pub budgets: Vec<(String, Duration)>,
    #[serde(default, deserialize_with = "class_budgets")]
    pub class_budgets: BTreeMap<BudgetClass, Duration>,
    #[serde(default, deserialize_with = "signal")]
    pub stall_signal: Option<i32>,
    #[serde(default, deserialize_with = "duration")]
    pub stopped_budget: Option<Duration>,
    /// A `comm` target's processes must run as this user (a name or a uid).
    pub user: Option<String>,
    /// A `comm` target's processes must run this executable (the same file).
    pub exe: Option<PathBuf>,
    /// Whether this target's incidents run the exec hook [default: as configured
    /// node-wide, i.e. yes when `[exec_hook] program` is set].
    pub exec_hook: Option<bool>,
}

impl TargetSection {
    /// Its selector, if exactly one of pid, comm and cgroup is given.
    fn selector(&self) -> Result<Selector, String> {
        match (&self.pid, &self.comm, &self.cgroup) {
            (Some(0), None, None) => Err("pid: 0 is not a process id".into()),
            (Some(p), None, None) => Ok(Selector::Pid(*p)),
            (None, Some(c), None) => {
                check_comm(c)?;
                Ok(Selector::Comm(c.clone()))
            }
            (None, None, Some(d)) => Ok(Selector::Cgroup(d.clone())),
            _ => Err("a [[target]] takes exactly one of pid, comm or cgroup".into()),
        }
    }
}

/// A program name as the kernel keeps it (targets and gate senders).
pub(crate) fn check_comm(c: &str) -> Result<(), String> {
    if c.is_empty() || c.len() > 15 {
        return Err(format!(
            "comm {c:?}: a program name is 1 to 15 bytes (the kernel keeps no more)"
        ));
    }
    Ok(())
}

/// Syscall budgets by number (the names were checked when parsed).
fn by_number(named: &[(String, Duration)]) -> BTreeMap<u32, Duration> {
    named
        .iter()
        .filter_map(|(name, d)| syscall_table::number(name).map(|nr| (nr, *d)))
        .collect()
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    #[serde(default, deserialize_with = "group")]
    pub group: Option<SocketAddr>,
    pub interface: Option<String>,
    #[serde(default, deserialize_with = "interval")]
    pub interval: Option<Duration>,
    pub ttl: Option<u32>,
    #[serde(default, deserialize_with = "node_id")]
    pub node_id: Option<String>,
    /// Shared key file for the HMAC tag.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: Option<PathBuf>,
    pub max: Option<u64>,
}

/// `[pstore]`: crash dumps of earlier boots.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PstoreSection {
    pub dirs: Option<Vec<PathBuf>>,
    pub unlink: Option<bool>,
}

/// `[alertmanager]`: where incidents are pushed as alerts.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSection {
    #[serde(default, deserialize_with = "alertmanager_urls")]
    pub urls: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    pub resend: Option<Duration>,
}

fn alertmanager_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|u| cli::parse_alertmanager_url(u).map_err(D::Error::custom))
        .collect()
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HookSection {
    pub program: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

/// What the daemon runs with: file and command line merged, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from, if any (SIGHUP reads it again).
    pub file: Option<PathBuf>,
    /// What to monitor, in the order configured (`pids`, `comms`, `cgroups`, then each
    /// `[[target]]`), each with the index of its policy in `policies`.
    pub targets: Vec<TargetSpec>,
    /// Policies: `DEFAULT_POLICY` is the node-wide one, then one per `[[target]]`.
    pub policies: Vec<Policy>,
    pub track_file: Option<PathBuf>,
    pub auto_resume_after: Option<Duration>,
    pub group: SocketAddr,
    pub interface: String,
    pub interval: Duration,
    pub ttl: u32,
    pub node_id: Option<String>,
    pub heartbeat_key: Option<PathBuf>,
    pub socket: PathBuf,
    pub socket_group: Option<u32>,
    pub metrics: Option<SocketAddr>,
    pub probe_stats: bool,
    pub mlock: bool,
    pub rt_priority: Option<u32>,
    pub rules: Option<PathBuf>,
    pub store: PathBuf,
    pub store_max: u64,
    pub exec_hook: Option<PathBuf>,
    pub exec_hook_timeout: Duration,
    pub state_hook: Option<PathBuf>,
    /// Alertmanagers every incident is pushed to (base URLs).
    pub alertmanagers: Vec<String>,
    /// How often a holding alert is sent again.
    pub alertmanager_resend: Duration,
    /// Where crash dumps of earlier boots are looked for at start.
    pub pstore_dirs: Vec<PathBuf>,
    /// Delete a pstore record once its incident is stored.
    pub pstore_unlink: bool,
    /// The service heartbeat gates, in the order configured.
    pub gates: Vec<GateSpec>,
    /// How long a dead daemon's gates stay open.
    pub gate_grace: Duration,
    pub gate_pin_dir: PathBuf,
}

/// Parse a config file's text (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<FileConfig, ConfigError> {
    let fc: FileConfig = parse_toml(text, file)?;
    if let Some(ttl) = fc.heartbeat.ttl.filter(|t| *t > 255) {
        return Err(ConfigError::Io {
            file: file.to_owned(),
            message: format!("heartbeat.ttl {ttl} is out of range 0..=255"),
        });
    }
    if let Some(p) = fc.rt_priority.filter(|p| !(1..=99).contains(p)) {
        return Err(ConfigError::Io {
            file: file.to_owned(),
            message: format!("rt_priority {p} is out of range 1..=99"),
        });
    }
    if let Some(pid) = fc.pids.iter().find(|p| **p == 0) {
        return Err(ConfigError::Io {
            file: file.to_owned(),
            message: format!("pids: {pid} is not a process id"),
        });
    }
    // Each [[target]] picks its processes one way, and no two pick the same way.
    let mut seen: Vec<Selector> = Vec::new();
    for t in &fc.target {
        let at = |message: String| {
            let (line, column) = line_col(text, t.span().start);
            TomlError {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };
        let selector = t.get_ref().selector().map_err(at)?;
        if seen.contains(&selector) {
            return Err(at(format!("{selector} is already a [[target]]")).into());
        }
        seen.push(selector);
    }
    for g in &fc.gate {
        let (line, column) = line_col(text, g.span().start);
        g.get_ref().spec().map_err(|message| TomlError {
            file: file.to_owned(),
            line,
            column,
            message: format!("[[gate]]: {message}"),
        })?;
    }
    Ok(fc)
}

/// Merge `file` under `args`, apply defaults, and check what must be given.
pub fn merge(
    args: &DaemonArgs,
    file: FileConfig,
    path: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let where_ = |key: &str| match &path {
        Some(p) => format!("{key} in {}", p.display()),
        None => format!("{key} in a config file"),
    };
    // The node-wide policy: the command line over the file's top level.
    let node = Policy {
        budgets: Budgets {
            default: args.budget.or(file.budget).unwrap_or(DEFAULT_BUDGET),
            classes: {
                let mut c = file.class_budgets;
                c.extend(args.class_budgets.iter().copied());
                c
            },
            syscalls: {
                let mut s = by_number(&file.budgets);
                s.extend(by_number(&args.syscall_budgets));
                s
            },
        },
        stall_signal: args.stall_signal.or(file.stall_signal),
        exec_hook: true,
        stopped_budget: args
            .stopped_budget
            .or(file.stopped_budget)
            .unwrap_or(DEFAULT_STOPPED_BUDGET),
    };
    let exec_hook = args.exec_hook.clone().or(file.exec_hook.program);
    let mut policies = vec![node];
    // Targets on the command line replace the file's, all kinds together ([[target]]s
    // too: the command line says what to monitor now).
    let cli_targets = !(args.pids.is_empty() && args.comms.is_empty() && args.cgroups.is_empty());
    let mut targets: Vec<TargetSpec>;
    if cli_targets {
        targets = shorthand_targets(&args.pids, &args.comms, &args.cgroups);
    } else {
        targets = shorthand_targets(&file.pids, &file.comms, &file.cgroups);
        for t in file.target {
            let t = t.into_inner();
            // Checked by `parse`.
            let selector = t.selector().map_err(ConfigError::Missing)?;
            if t.exec_hook == Some(true) && exec_hook.is_none() {
                return Err(ConfigError::Missing(format!(
                    "[[target]] {selector}: exec_hook = true, but no exec hook program: give --exec-hook, or {}",
                    where_("[exec_hook] program")
                )));
            }
            let node = &policies[DEFAULT_POLICY];
            let own = Budgets {
                default: Duration::ZERO,
                classes: t.class_budgets,
                syscalls: by_number(&t.budgets),
            };
            policies.push(Policy {
                budgets: node.budgets.overlay(t.budget, &own),
                stall_signal: t.stall_signal.or(node.stall_signal),
                exec_hook: t.exec_hook.unwrap_or(node.exec_hook),
                stopped_budget: t.stopped_budget.unwrap_or(node.stopped_budget),
            });
            let identity = Identity {
                user: t.user.clone(),
                exe: t.exe.clone(),
            };
            if !identity.is_empty() && !matches!(selector, Selector::Comm(_)) {
                return Err(ConfigError::Missing(format!(
                    "{}: `user` and `exe` narrow a target by program name (`comm`), not one by pid or cgroup",
                    where_("[[target]]")
                )));
            }
            targets.push(TargetSpec {
                selector,
                policy: policies.len() - 1,
                identity,
            });
        }
    }
    if targets.is_empty() {
        return Err(ConfigError::Missing(format!(
            "no process to monitor: give --pid, --comm or --cgroup, or {}",
            where_("pids, comms, cgroups or [[target]]")
        )));
    }
    for (i, t) in targets.iter().enumerate() {
        if let Selector::Comm(c) = &t.selector {
            check_comm(c).map_err(ConfigError::Missing)?;
        }
        // The first would always win, and the second's settings never apply.
        if targets[..i].iter().any(|e| e.selector == t.selector) {
            return Err(ConfigError::Missing(format!(
                "{} is given twice as a target (once is enough: the first would always win)",
                t.selector
            )));
        }
    }
    let group = args.heartbeat.or(file.heartbeat.group).ok_or_else(|| {
        ConfigError::Missing(format!(
            "no heartbeat group: give --heartbeat GROUP:PORT, or {}",
            where_("[heartbeat] group")
        ))
    })?;
    let interface = args
        .interface
        .clone()
        .or(file.heartbeat.interface)
        .ok_or_else(|| {
            ConfigError::Missing(format!(
                "no heartbeat interface: give --interface, or {}",
                where_("[heartbeat] interface")
            ))
        })?;
    let interval = args
        .interval
        .or(file.heartbeat.interval)
        .unwrap_or(DEFAULT_INTERVAL);
    // Gates on the command line replace the file's (as targets do).
    let gates: Vec<GateSpec> = if args.gates.is_empty() {
        file.gate
            .iter()
            // Checked by `parse`.
            .map(|g| g.get_ref().spec().map_err(ConfigError::Missing))
            .collect::<Result<_, _>>()?
    } else {
        args.gates.clone()
    };
    check_gates(&gates)?;
    let gate_grace = args
        .gate_grace
        .or(file.gate_grace)
        .unwrap_or(interval * GATE_GRACE_INTERVALS);
    if gate_grace < interval * 2 {
        return Err(ConfigError::Missing(format!(
            "gate grace {gate_grace:?} is shorter than two heartbeat intervals ({interval:?} each): the gates would close between two beats"
        )));
    }
    Ok(Config {
        file: path,
        targets,
        policies,
        track_file: args.track_file.clone().or(file.track_file),
        auto_resume_after: args.auto_resume_after.or(file.auto_resume_after),
        group,
        interface,
        interval,
        ttl: args.ttl.or(file.heartbeat.ttl).unwrap_or(DEFAULT_TTL),
        node_id: args.node_id.clone().or(file.heartbeat.node_id),
        heartbeat_key: args.heartbeat_key.clone().or(file.heartbeat.key),
        socket: args
            .socket
            .clone()
            .or(file.socket)
            .unwrap_or_else(|| cli::DEFAULT_SOCKET.into()),
        socket_group: args.socket_group.or(file.socket_group),
        metrics: args.metrics.or(file.metrics),
        probe_stats: args.probe_stats || file.probe_stats.unwrap_or(false),
        mlock: args.mlock || file.mlock.unwrap_or(false),
        rt_priority: args.rt_priority.or(file.rt_priority),
        rules: args.rules.clone().or(file.rules),
        store: args
            .store
            .clone()
            .or(file.store.path)
            .unwrap_or_else(|| cli::DEFAULT_STORE.into()),
        store_max: args
            .store_max
            .or(file.store.max)
            .unwrap_or(DEFAULT_STORE_MAX),
        exec_hook,
        exec_hook_timeout: args
            .exec_hook_timeout
            .or(file.exec_hook.timeout)
            .unwrap_or(DEFAULT_HOOK_TIMEOUT),
        state_hook: args.state_hook.clone().or(file.state_hook),
        alertmanagers: if args.alertmanagers.is_empty() {
            file.alertmanager.urls
        } else {
            args.alertmanagers.clone()
        },
        alertmanager_resend: args
            .alertmanager_resend
            .or(file.alertmanager.resend)
            .unwrap_or(DEFAULT_ALERTMANAGER_RESEND),
        pstore_dirs: if args.pstore_dirs.is_empty() {
            file.pstore.dirs.unwrap_or_else(|| {
                [
                    crate::incidents::pstore::SYSFS,
                    crate::incidents::pstore::SYSTEMD_ARCHIVE,
                ]
                .map(PathBuf::from)
                .to_vec()
            })
        } else {
            args.pstore_dirs.clone()
        },
        pstore_unlink: args.pstore_unlink || file.pstore.unlink.unwrap_or(false),
        gates,
        gate_grace,
        gate_pin_dir: args
            .gate_pin_dir
            .clone()
            .or(file.gate_pin_dir)
            .unwrap_or_else(|| crate::kernel::gate::DEFAULT_PIN_DIR.into()),
    })
}

/// A dead daemon's gates close after this many of its heartbeat intervals (unless
/// configured): as long as its own heartbeat's peers wait, give or take.
pub const GATE_GRACE_INTERVALS: u32 = 3;

/// A holding alert is sent again this often (as Prometheus resends its own).
pub const DEFAULT_ALERTMANAGER_RESEND: Duration = Duration::from_secs(60);

fn check_gates(gates: &[GateSpec]) -> Result<(), ConfigError> {
    let max = watchdog_common::gate::MAX_GATES;
    if gates.len() > max {
        return Err(ConfigError::Missing(format!(
            "{} gates are configured; at most {max} are supported",
            gates.len()
        )));
    }
    for (i, g) in gates.iter().enumerate() {
        if gates[..i].contains(g) {
            return Err(ConfigError::Missing(format!("gate {g} is given twice")));
        }
    }
    Ok(())
}

/// Targets from the shorthand lists (`--pid`/`--comm`/`--cgroup`, or `pids`/`comms`/
/// `cgroups` in the file): each with the node-wide policy.
fn shorthand_targets(pids: &[u32], comms: &[String], cgroups: &[PathBuf]) -> Vec<TargetSpec> {
    let pids = pids.iter().map(|p| Selector::Pid(*p));
    let comms = comms.iter().map(|c| Selector::Comm(c.clone()));
    let cgroups = cgroups.iter().map(|d| Selector::Cgroup(d.clone()));
    pids.chain(comms)
        .chain(cgroups)
        .map(|selector| TargetSpec {
            selector,
            policy: DEFAULT_POLICY,
            identity: Identity::default(),
        })
        .collect()
}

/// Read the config file (`--config`, else the default path if it exists) and merge.
pub fn load(args: &DaemonArgs) -> Result<Config, ConfigError> {
    let (path, must_exist) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match crate::input_file::read_regular_text(&path, MAX_CONFIG_BYTES) {
        Ok(text) => {
            let file = parse(&text, &path.display().to_string())?;
            merge(args, file, Some(path))
        }
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => {
            merge(args, FileConfig::default(), None)
        }
        Err(e) => Err(ConfigError::Io {
            file: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// The settings that a reload changed but that only take effect on restart.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if (
        old.group,
        &old.interface,
        old.interval,
        old.ttl,
        &old.node_id,
        &old.heartbeat_key,
    ) != (
        new.group,
        &new.interface,
        new.interval,
        new.ttl,
        &new.node_id,
        &new.heartbeat_key,
    ) {
        v.push("heartbeat");
    }
    if old.track_file != new.track_file {
        v.push("track_file");
    }
    if (&old.socket, old.socket_group, old.metrics) != (&new.socket, new.socket_group, new.metrics)
    {
        v.push("socket");
    }
    if old.probe_stats != new.probe_stats {
        v.push("probe_stats");
    }
    if (old.mlock, old.rt_priority) != (new.mlock, new.rt_priority) {
        v.push("realtime");
    }
    if (&old.store, old.store_max) != (&new.store, new.store_max) {
        v.push("store");
    }
    if (&old.exec_hook, old.exec_hook_timeout) != (&new.exec_hook, new.exec_hook_timeout) {
        v.push("exec_hook");
    }
    if old.state_hook != new.state_hook {
        v.push("state_hook");
    }
    if old.gate_pin_dir != new.gate_pin_dir {
        v.push("gate_pin_dir");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../watchdog.example.toml");

    fn err(text: &str) -> String {
        parse(text, "w.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_example_file_parses_to_the_documented_defaults() {
        let fc = parse(EXAMPLE, "watchdog.example.toml").unwrap();
        let c = merge(&DaemonArgs::default(), fc, None).unwrap();
        assert_eq!(
            c.targets,
            [TargetSpec {
                selector: Selector::Pid(4242),
                policy: DEFAULT_POLICY,
                identity: Identity::default(),
            }]
        );
        assert_eq!(c.policies, [Policy::uniform(DEFAULT_BUDGET)]);
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert_eq!(c.socket, PathBuf::from(cli::DEFAULT_SOCKET));
        assert_eq!(c.store, PathBuf::from(cli::DEFAULT_STORE));
        assert_eq!(c.store_max, DEFAULT_STORE_MAX);
        assert_eq!(c.exec_hook_timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(c.group.to_string(), "239.255.42.1:7999");
    }

    #[test]
    fn every_commented_out_key_of_the_example_file_is_valid() {
        // `# key = value` and `# [table]` lines are settings shown commented out.
        let setting = regex::Regex::new(r"^# (\[\[?[a-z_.]+\]\]?$|[a-z_]+ = )").unwrap();
        let all: String = EXAMPLE
            .lines()
            .map(|l| if setting.is_match(l) { &l[2..] } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        let fc = parse(&all, "uncommented").unwrap();
        assert_eq!(fc.target.len(), 1);
        assert_eq!(fc.gate.len(), 1);
        assert_eq!(fc.comms, ["postgres"]);
        let c = merge(&DaemonArgs::default(), fc, None).unwrap();
        assert_eq!(c.policies.len(), 2);
        assert!(!c.policies[1].exec_hook);
        assert_eq!(
            c.gates.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["udp:5405,to=192.0.2.0/24@comm:hbd"]
        );
        assert_eq!(c.gate_grace, Duration::from_secs(3));
    }

    const GATES: &str = "pids = [1]\n[heartbeat]\ngroup = \"239.1.1.1:9\"\ninterface = \"lo\"\ninterval = \"100ms\"\n\
        [[gate]]\nmatch = \"udp:694\"\n[[gate]]\nmatch = \"tcp:22\"\nto = \"::1\"\nsender = \"pid:7\"\n";

    #[test]
    fn gates_come_from_tables_or_the_command_line_and_grace_from_the_interval() {
        let c = merge(
            &DaemonArgs::default(),
            parse(GATES, "w.toml").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(
            c.gates.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["udp:694", "tcp:22,to=::1@pid:7"]
        );
        assert_eq!(c.gate_grace, Duration::from_millis(300));
        assert_eq!(
            c.gate_pin_dir,
            PathBuf::from(crate::kernel::gate::DEFAULT_PIN_DIR)
        );
        let args = DaemonArgs {
            gates: vec!["proto:vrrp".parse().unwrap()],
            gate_grace: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let c = merge(&args, parse(GATES, "w.toml").unwrap(), None).unwrap();
        assert_eq!(
            c.gates.len(),
            1,
            "the command line's gates replace the file's"
        );
        assert_eq!(c.gate_grace, Duration::from_secs(1));
    }

    #[test]
    fn bad_gates_are_named_where_they_are() {
        assert_eq!(
            err("[[gate]]\nmatch = \"udp:1\"\n[[gate]]\nmatch = \"udp:x\"\n"),
            "w.toml:3:1: [[gate]]: gate 'udp:x': port 'x' is not a port (1-65535)"
        );
        assert_eq!(
            err("[[gate]]\nmatch = \"udp:1\"\nto = \"1.2.3.4/40\"\n"),
            "w.toml:1:1: [[gate]]: gate 'udp:1,to=1.2.3.4/40': to=1.2.3.4/40: prefix length '40' is not 0-32"
        );
        assert!(err("[[gate]]\nport = 1\n").starts_with("w.toml:2:1: unknown field `port`"));
        let twice = GATES.to_owned() + "[[gate]]\nmatch = \"udp:694\"\n";
        let e = merge(
            &DaemonArgs::default(),
            parse(&twice, "w.toml").unwrap(),
            None,
        );
        assert_eq!(e.unwrap_err().to_string(), "gate udp:694 is given twice");
        let short = DaemonArgs {
            gate_grace: Some(Duration::from_millis(150)),
            ..Default::default()
        };
        let e = merge(&short, parse(GATES, "w.toml").unwrap(), None);
        assert!(
            e.unwrap_err()
                .to_string()
                .starts_with("gate grace 150ms is shorter than two heartbeat intervals"),
        );
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let fc = parse("pids = [1]\nbudget = \"5s\"\n[heartbeat]\ngroup = \"239.1.1.1:9\"\ninterface = \"eth0\"\n", "w.toml").unwrap();
        let args = DaemonArgs {
            budget: Some(Duration::from_millis(300)),
            interface: Some("lo".into()),
            ..Default::default()
        };
        let c = merge(&args, fc, None).unwrap();
        assert_eq!(
            (c.policies[0].budgets.default, c.interface.as_str()),
            (Duration::from_millis(300), "lo")
        );
        assert_eq!(c.targets[0].selector, Selector::Pid(1));
    }

    #[test]
    fn every_error_names_file_line_and_column() {
        assert_eq!(
            err("budget = \"2s\"\ncolour = \"blue\"\n"),
            "w.toml:2:1: unknown field `colour`, expected one of `pids`, `comms`, `cgroups`, `budget`, `budgets`, `class_budgets`, `track_file`, `state_hook`, `auto_resume_after`, `stall_signal`, `stopped_budget`, `socket`, `metrics`, `probe_stats`, `mlock`, `rt_priority`, `socket_group`, `rules`, `heartbeat`, `store`, `exec_hook`, `alertmanager`, `pstore`, `target`, `gate`, `gate_grace`, `gate_pin_dir`"
        );
        assert_eq!(
            err("budget = \"soon\"\n"),
            "w.toml:1:10: invalid duration 'soon': expected number at 0 (expected a duration such as 300ms, 5s or 1m)"
        );
        assert_eq!(
            err("budget = 5\n"),
            "w.toml:1:10: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err("pids = \"1\"\n"),
            "w.toml:1:8: invalid type: string \"1\", expected a sequence"
        );
        assert_eq!(
            err("[heartbeat]\ngroup = \"10.0.0.1:7999\"\n"),
            "w.toml:2:9: invalid group '10.0.0.1:7999': 10.0.0.1 is not a multicast address"
        );
        assert_eq!(
            err("[heartbeat]\nintervall = \"1s\"\n"),
            "w.toml:2:1: unknown field `intervall`, expected one of `group`, `interface`, `interval`, `ttl`, `node_id`, `key`"
        );
        assert_eq!(
            err("[store]\nmax = -1\n"),
            "w.toml:2:7: invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            err("pids = [1\n"),
            "w.toml:1:10: unclosed array, expected `]`"
        );
        assert_eq!(err("pids = [0]\n"), "w.toml: pids: 0 is not a process id");
        assert_eq!(
            err("[budgets]\nfsnyc = \"1s\"\n"),
            "w.toml:1:1: budgets.fsnyc: fsnyc is not a syscall on this architecture"
        );
        assert_eq!(
            err("[heartbeat]\nttl = 300\n"),
            "w.toml: heartbeat.ttl 300 is out of range 0..=255"
        );
        assert_eq!(
            err("rt_priority = 100\n"),
            "w.toml: rt_priority 100 is out of range 1..=99"
        );
    }

    const TARGETS: &str = r#"
pids = [1]
budget = "2s"
stall_signal = "SIGQUIT"
[budgets]
fsync = "10s"
[class_budgets]
wait = "1m"
[exec_hook]
program = "/bin/true"
[heartbeat]
group = "239.1.1.1:9"
interface = "lo"

[[target]]
comm = "postgres"
budget = "5s"
stall_signal = "SIGABRT"
exec_hook = false
[target.budgets]
fdatasync = "30s"

[[target]]
cgroup = "system.slice/db.service"
[target.class_budgets]
bounded = "500ms"
"#;

    #[test]
    fn a_target_sets_its_own_policy_and_inherits_the_rest() {
        use syscalls::Sysno;
        let c = merge(
            &DaemonArgs::default(),
            parse(TARGETS, "w.toml").unwrap(),
            None,
        )
        .unwrap();
        let sel: Vec<(String, usize)> = c
            .targets
            .iter()
            .map(|t| (t.selector.to_string(), t.policy))
            .collect();
        assert_eq!(
            sel,
            [
                ("pid 1".into(), 0),
                ("comm postgres".into(), 1),
                ("cgroup system.slice/db.service".into(), 2)
            ]
        );
        let [node, pg, db] = &c.policies[..] else {
            panic!("three policies: {:?}", c.policies)
        };
        let s = Duration::from_secs;
        let of = |p: &Policy, n: Sysno| p.budgets.of(n as u32);
        assert_eq!(
            (
                of(node, Sysno::mkdir),
                of(node, Sysno::fsync),
                of(node, Sysno::poll)
            ),
            (s(2), s(10), s(60))
        );
        assert_eq!(
            (
                of(pg, Sysno::mkdir),
                of(pg, Sysno::fsync),
                of(pg, Sysno::fdatasync),
                of(pg, Sysno::poll)
            ),
            (s(5), s(10), s(30), s(60)),
            "its own budget and fdatasync; the node's fsync and wait class"
        );
        assert_eq!(
            (pg.stall_signal, pg.exec_hook),
            (Some(libc::SIGABRT), false)
        );
        assert_eq!(
            (
                of(db, Sysno::mkdir),
                of(db, Sysno::fsync),
                of(db, Sysno::poll)
            ),
            (Duration::from_millis(500), s(10), s(60)),
        );
        assert_eq!((db.stall_signal, db.exec_hook), (Some(libc::SIGQUIT), true));
    }

    #[test]
    fn a_target_given_twice_is_refused() {
        let fc = parse(
            "comms = [\"db\"]\n[[target]]\ncomm = \"db\"\n[heartbeat]\ngroup = \"239.1.1.1:9\"\ninterface = \"lo\"\n",
            "w.toml",
        )
        .unwrap();
        assert_eq!(
            merge(&DaemonArgs::default(), fc, Some("w.toml".into()))
                .unwrap_err()
                .to_string(),
            "comm db is given twice as a target (once is enough: the first would always win)"
        );
    }

    #[test]
    fn command_line_targets_replace_every_target_of_the_file() {
        let args = DaemonArgs {
            comms: vec!["redis".into()],
            ..Default::default()
        };
        let c = merge(&args, parse(TARGETS, "w.toml").unwrap(), None).unwrap();
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.targets[0].selector, Selector::Comm("redis".into()));
    }

    #[test]
    fn bad_targets_are_named_where_they_are() {
        assert_eq!(
            err("[[target]]\nbudget = \"1s\"\n"),
            "w.toml:1:1: a [[target]] takes exactly one of pid, comm or cgroup"
        );
        assert_eq!(
            err("[[target]]\ncomm = \"a\"\n\n[[target]]\npid = 3\ncomm = \"b\"\n"),
            "w.toml:4:1: a [[target]] takes exactly one of pid, comm or cgroup"
        );
        assert_eq!(
            err("[[target]]\ncomm = \"a\"\n[[target]]\ncomm = \"a\"\n"),
            "w.toml:3:1: comm a is already a [[target]]"
        );
        assert_eq!(
            err("[[target]]\npid = 0\n"),
            "w.toml:1:1: pid: 0 is not a process id"
        );
        assert_eq!(
            err("[[target]]\ncomm = \"a\"\nbudgt = \"1s\"\n"),
            "w.toml:3:1: unknown field `budgt`, expected one of `pid`, `comm`, `cgroup`, `budget`, `budgets`, `class_budgets`, `stall_signal`, `stopped_budget`, `user`, `exe`, `exec_hook`"
        );
        assert_eq!(
            err("[class_budgets]\nio = \"1s\"\n"),
            "w.toml:1:1: class_budgets.io: io is not a syscall class (one of: wait, bounded)"
        );
        let m = merge(
            &DaemonArgs::default(),
            parse("[[target]]\ncomm = \"a\"\nexec_hook = true\n[heartbeat]\ngroup = \"239.1.1.1:9\"\ninterface = \"lo\"\n", "w.toml").unwrap(),
            Some("w.toml".into()),
        );
        assert_eq!(
            m.unwrap_err().to_string(),
            "[[target]] comm a: exec_hook = true, but no exec hook program: give --exec-hook, or [exec_hook] program in w.toml"
        );
    }

    #[test]
    fn a_comm_longer_than_the_kernel_keeps_is_refused() {
        let args = DaemonArgs {
            comms: vec!["a-very-long-program".into()],
            ..Default::default()
        };
        assert_eq!(
            merge(&args, FileConfig::default(), None)
                .unwrap_err()
                .to_string(),
            "comm \"a-very-long-program\": a program name is 1 to 15 bytes (the kernel keeps no more)"
        );
    }

    #[test]
    fn what_must_be_given_is_named() {
        let m = |text: &str| {
            merge(
                &DaemonArgs::default(),
                parse(text, "w.toml").unwrap(),
                Some("w.toml".into()),
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            m(""),
            "no process to monitor: give --pid, --comm or --cgroup, or pids, comms, cgroups or [[target]] in w.toml"
        );
        assert_eq!(
            m("pids = [1]"),
            "no heartbeat group: give --heartbeat GROUP:PORT, or [heartbeat] group in w.toml"
        );
        assert_eq!(
            m("pids = [1]\n[heartbeat]\ngroup = \"239.1.1.1:9\""),
            "no heartbeat interface: give --interface, or [heartbeat] interface in w.toml"
        );
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error() {
        let args = DaemonArgs {
            config: Some("/nonexistent/w.toml".into()),
            ..Default::default()
        };
        assert_eq!(
            load(&args).unwrap_err().to_string(),
            "/nonexistent/w.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn reload_tells_what_needs_a_restart() {
        let base = parse(EXAMPLE, "x").unwrap();
        let a = merge(&DaemonArgs::default(), base, None).unwrap();
        let mut b = a.clone();
        b.policies[0].budgets.default = Duration::from_millis(300);
        b.targets.clear();
        b.auto_resume_after = Some(Duration::from_secs(1));
        assert!(
            restart_needed(&a, &b).is_empty(),
            "targets and policies are live"
        );
        b.interval = Duration::from_millis(100);
        b.track_file = Some("/run/t".into());
        assert_eq!(restart_needed(&a, &b), vec!["heartbeat", "track_file"]);
    }
}
