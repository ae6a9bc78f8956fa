//! What the daemon runs with: the configuration checked against this system (targets
//! exist, the interface is there, the rules and the heartbeat key load).
use crate::{
    config::{self, Config, cli::DaemonArgs},
    heartbeat::{self, iface::Interface},
    judging::{
        kmsg::{RuleSet, RulesError},
        targets::TargetTable,
    },
    kernel::procfs,
};

use super::DaemonError;

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
        if let Some(ns) = procfs::own_pid_namespace() {
            return Err(DaemonError::PidNamespace(ns));
        }
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

pub(super) fn load_rules(c: &Config) -> Result<RuleSet, RulesError> {
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
