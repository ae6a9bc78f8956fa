//! What the daemon runs with: the configuration checked against this system (targets
//! exist, the interface is there, the rules and the heartbeat key load).
use crate::{
    config::{self, Config, cli::DaemonArgs},
    heartbeat::{
        self,
        gate_spec::{GateSender, GateSpec},
        iface::Interface,
        service_gate::ResolvedGate,
    },
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
    /// The service heartbeat gates, checked against the system.
    pub gates: Vec<ResolvedGate>,
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
        let gates = resolve_gates(&c.gates)?;
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
            gates,
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

/// Each gate with its kernel rule: a `cgroup:` sender must be a cgroup v2 directory.
pub(super) fn resolve_gates(gates: &[GateSpec]) -> Result<Vec<ResolvedGate>, DaemonError> {
    gates
        .iter()
        .map(|spec| {
            let cgroup = match &spec.sender {
                GateSender::Cgroup(path) => {
                    let (dir, id) = procfs::cgroup(path)
                        .map_err(|e| DaemonError::Gate(format!("gate {spec}: {e}")))?;
                    let root = procfs::cgroup2_mount().unwrap_or_default();
                    let depth = dir
                        .strip_prefix(&root)
                        .map(|rel| rel.components().count())
                        .unwrap_or(0);
                    Some((id, depth.min(u8::MAX as usize) as u8))
                }
                _ => None,
            };
            Ok(ResolvedGate {
                rule: spec.rule(cgroup),
                spec: spec.clone(),
            })
        })
        .collect()
}

/// The host name, cut to what fits a heartbeat node id.
pub fn hostname() -> String {
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
