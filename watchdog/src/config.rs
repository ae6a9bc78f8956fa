//! The configuration: a TOML file merged under the command line. Pure.
//!
//! Every command-line option has a place in the file (see `watchdog.example.toml`);
//! the command line wins; defaults apply last. Unknown keys are errors, and every error
//! names the file, line and column.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de::Error as _};

use crate::cli::{self, DaemonArgs};

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

/// Line and column (1-based) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// A TOML file that does not parse, or has a key or value it must not: where, and what.
/// Shared by the config file and rules files.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TomlError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parse TOML text from `file` into `T`.
pub fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str, file: &str) -> Result<T, TomlError> {
    toml::from_str::<T>(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        TomlError {
            file: file.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    cli::parse_duration(&s)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("invalid duration '{s}': {e}")))
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
    pub track_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    pub auto_resume_after: Option<Duration>,
    #[serde(default, deserialize_with = "signal")]
    pub stall_signal: Option<i32>,
    pub socket: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub exec_hook: HookSection,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    #[serde(default, deserialize_with = "group")]
    pub group: Option<SocketAddr>,
    pub interface: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    pub ttl: Option<u32>,
    #[serde(default, deserialize_with = "node_id")]
    pub node_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: Option<PathBuf>,
    pub max: Option<u64>,
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
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub budget: Duration,
    pub syscall_budgets: Vec<(String, Duration)>,
    pub track_file: Option<PathBuf>,
    pub auto_resume_after: Option<Duration>,
    pub stall_signal: Option<i32>,
    pub group: SocketAddr,
    pub interface: String,
    pub interval: Duration,
    pub ttl: u32,
    pub node_id: Option<String>,
    pub socket: PathBuf,
    pub rules: Option<PathBuf>,
    pub store: PathBuf,
    pub store_max: u64,
    pub exec_hook: Option<PathBuf>,
    pub exec_hook_timeout: Duration,
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
    if let Some(pid) = fc.pids.iter().find(|p| **p == 0) {
        return Err(ConfigError::Io {
            file: file.to_owned(),
            message: format!("pids: {pid} is not a process id"),
        });
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
    // Targets on the command line replace the file's, all kinds together.
    let cli_targets = !(args.pids.is_empty() && args.comms.is_empty() && args.cgroups.is_empty());
    let (pids, comms, cgroups) = if cli_targets {
        (args.pids.clone(), args.comms.clone(), args.cgroups.clone())
    } else {
        (file.pids, file.comms, file.cgroups)
    };
    if pids.is_empty() && comms.is_empty() && cgroups.is_empty() {
        return Err(ConfigError::Missing(format!(
            "no process to monitor: give --pid, --comm or --cgroup, or {}",
            where_("pids, comms or cgroups")
        )));
    }
    if let Some(long) = comms.iter().find(|c| c.is_empty() || c.len() > 15) {
        return Err(ConfigError::Missing(format!(
            "comm {long:?}: a program name is 1 to 15 bytes (the kernel keeps no more)"
        )));
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
    Ok(Config {
        file: path,
        pids,
        comms,
        cgroups,
        budget: args.budget.or(file.budget).unwrap_or(DEFAULT_BUDGET),
        // Per-syscall budgets: the file's, with the command line's on top.
        syscall_budgets: {
            let mut all = file.budgets;
            for (name, d) in &args.syscall_budgets {
                all.retain(|(n, _)| n != name);
                all.push((name.clone(), *d));
            }
            all
        },
        track_file: args.track_file.clone().or(file.track_file),
        auto_resume_after: args.auto_resume_after.or(file.auto_resume_after),
        stall_signal: args.stall_signal.or(file.stall_signal),
        group,
        interface,
        interval: args
            .interval
            .or(file.heartbeat.interval)
            .unwrap_or(DEFAULT_INTERVAL),
        ttl: args.ttl.or(file.heartbeat.ttl).unwrap_or(DEFAULT_TTL),
        node_id: args.node_id.clone().or(file.heartbeat.node_id),
        socket: args
            .socket
            .clone()
            .or(file.socket)
            .unwrap_or_else(|| cli::DEFAULT_SOCKET.into()),
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
        exec_hook: args.exec_hook.clone().or(file.exec_hook.program),
        exec_hook_timeout: args
            .exec_hook_timeout
            .or(file.exec_hook.timeout)
            .unwrap_or(DEFAULT_HOOK_TIMEOUT),
    })
}

/// Read the config file (`--config`, else the default path if it exists) and merge.
pub fn load(args: &DaemonArgs) -> Result<Config, ConfigError> {
    let (path, must_exist) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
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
    if (&old.pids, &old.comms, &old.cgroups) != (&new.pids, &new.comms, &new.cgroups) {
        v.push("targets");
    }
    if (
        old.group,
        &old.interface,
        old.interval,
        old.ttl,
        &old.node_id,
    ) != (
        new.group,
        &new.interface,
        new.interval,
        new.ttl,
        &new.node_id,
    ) {
        v.push("heartbeat");
    }
    if (&old.track_file, old.auto_resume_after, old.stall_signal)
        != (&new.track_file, new.auto_resume_after, new.stall_signal)
    {
        v.push("actions");
    }
    if old.socket != new.socket {
        v.push("socket");
    }
    if (&old.store, old.store_max) != (&new.store, new.store_max) {
        v.push("store");
    }
    if (&old.exec_hook, old.exec_hook_timeout) != (&new.exec_hook, new.exec_hook_timeout) {
        v.push("exec_hook");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../watchdog.example.toml");

    fn err(text: &str) -> String {
        parse(text, "w.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_example_file_parses_to_the_documented_defaults() {
        let fc = parse(EXAMPLE, "watchdog.example.toml").unwrap();
        let c = merge(&DaemonArgs::default(), fc, None).unwrap();
        assert_eq!(c.pids, vec![4242]);
        assert_eq!(c.budget, DEFAULT_BUDGET);
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert_eq!(c.socket, PathBuf::from(cli::DEFAULT_SOCKET));
        assert_eq!(c.store, PathBuf::from(cli::DEFAULT_STORE));
        assert_eq!(c.store_max, DEFAULT_STORE_MAX);
        assert_eq!(c.exec_hook_timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(c.group.to_string(), "239.255.42.1:7999");
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
            (c.budget, c.interface.as_str(), c.pids),
            (Duration::from_millis(300), "lo", vec![1])
        );
    }

    #[test]
    fn every_error_names_file_line_and_column() {
        assert_eq!(
            err("budget = \"2s\"\ncolour = \"blue\"\n"),
            "w.toml:2:1: unknown field `colour`, expected one of `pids`, `comms`, `cgroups`, `budget`, `budgets`, `track_file`, `auto_resume_after`, `stall_signal`, `socket`, `rules`, `heartbeat`, `store`, `exec_hook`"
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
            "w.toml:2:1: unknown field `intervall`, expected one of `group`, `interface`, `interval`, `ttl`, `node_id`"
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
            "no process to monitor: give --pid, --comm or --cgroup, or pids, comms or cgroups in w.toml"
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
        b.budget = Duration::from_millis(300);
        assert!(restart_needed(&a, &b).is_empty());
        b.interval = Duration::from_millis(100);
        b.pids = vec![1];
        assert_eq!(restart_needed(&a, &b), vec!["targets", "heartbeat"]);
    }
}
