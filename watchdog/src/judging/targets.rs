//! Which processes are monitored, and by which policy: targets by pid, by program name
//! and by cgroup, as configured and as resolved on this system.
use std::{fmt, path::PathBuf};

use crate::kernel::procfs::{self, CgroupError, PidError};

/// What picks a target's processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// One process.
    Pid(u32),
    /// Every process running this program (its comm), now or later.
    Comm(String),
    /// Every process in this cgroup v2, now or later (absolute, or relative to the
    /// cgroup2 mount).
    Cgroup(PathBuf),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Pid(p) => write!(f, "pid {p}"),
            Selector::Comm(c) => write!(f, "comm {c}"),
            Selector::Cgroup(d) => write!(f, "cgroup {}", d.display()),
        }
    }
}

/// A target as configured: what picks its processes, and the index of the policy they
/// follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub selector: Selector,
    pub policy: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--pid {pid}: {source}")]
    Pid { pid: u32, source: PidError },
    #[error("--cgroup: {0}")]
    Cgroup(#[from] CgroupError),
}

/// A selector checked against this system: pids exist, cgroups resolved to their ids.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolved {
    Pid(u32),
    Comm(String),
    Cgroup { dir: PathBuf, id: u64 },
}

/// The targets, resolved, in the order configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetTable {
    entries: Vec<(Resolved, usize)>,
}

impl TargetTable {
    /// Check `specs` against the system: every pid is a live process, every cgroup a
    /// cgroup v2 directory.
    pub fn resolve(specs: &[TargetSpec]) -> Result<TargetTable, TargetError> {
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let r = match &spec.selector {
                Selector::Pid(pid) => {
                    procfs::check_process(*pid)
                        .map_err(|source| TargetError::Pid { pid: *pid, source })?;
                    Resolved::Pid(*pid)
                }
                Selector::Comm(c) => Resolved::Comm(c.clone()),
                Selector::Cgroup(path) => {
                    let (dir, id) = procfs::cgroup(path)?;
                    Resolved::Cgroup { dir, id }
                }
            };
            entries.push((r, spec.policy));
        }
        Ok(TargetTable { entries })
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().filter_map(|(r, _)| match r {
            Resolved::Pid(p) => Some(*p),
            _ => None,
        })
    }

    pub fn comms(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().filter_map(|(r, _)| match r {
            Resolved::Comm(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// cgroup directories and their ids.
    pub fn cgroups(&self) -> impl Iterator<Item = (&PathBuf, u64)> + '_ {
        self.entries.iter().filter_map(|(r, _)| match r {
            Resolved::Cgroup { dir, id } => Some((dir, *id)),
            _ => None,
        })
    }

    /// True when only names and cgroups are given: the service may not be running yet.
    pub fn has_pids(&self) -> bool {
        self.pids().next().is_some()
    }

    /// The policy that process `tgid` follows, if a target picks it: its pid first,
    /// then its program name, then its cgroup (the first target of each kind that
    /// matches, in the order configured).
    pub fn policy_for(
        &self,
        tgid: u32,
        comm: Option<&str>,
        cgroup_id: impl FnOnce() -> Option<u64>,
    ) -> Option<usize> {
        let find = |want: &dyn Fn(&Resolved) -> bool| {
            self.entries
                .iter()
                .find(|(r, _)| want(r))
                .map(|(_, policy)| *policy)
        };
        find(&|r| *r == Resolved::Pid(tgid))
            .or_else(|| comm.and_then(|c| find(&|r| matches!(r, Resolved::Comm(n) if n == c))))
            .or_else(|| {
                let id = cgroup_id()?;
                find(&|r| matches!(r, Resolved::Cgroup { id: i, .. } if *i == id))
            })
    }

    /// The processes the targets pick now (not `me`), each once, with its policy.
    pub fn running(&self, me: u32) -> Vec<(u32, usize)> {
        let mut found: Vec<u32> = self.pids().collect();
        found.extend(self.comms().flat_map(procfs::pids_with_comm));
        found.extend(
            self.cgroups()
                .flat_map(|(dir, _)| procfs::cgroup_procs(dir)),
        );
        found.retain(|p| *p != me);
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .filter_map(|pid| {
                let comm = procfs::comm(pid, pid);
                let policy = self.policy_for(pid, comm.as_deref(), || procfs::cgroup_id_of(pid))?;
                Some((pid, policy))
            })
            .collect()
    }

    /// The targets, as an operator reads them (`comm postgres`, `cgroup /sys/...`).
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(r, _)| match r {
                Resolved::Pid(p) => format!("pid {p}"),
                Resolved::Comm(c) => format!("comm {c}"),
                Resolved::Cgroup { dir, .. } => format!("cgroup {}", dir.display()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TargetTable {
        TargetTable {
            entries: vec![
                (Resolved::Comm("postgres".into()), 1),
                (Resolved::Pid(42), 2),
                (
                    Resolved::Cgroup {
                        dir: "/sys/fs/cgroup/db.service".into(),
                        id: 7,
                    },
                    3,
                ),
                (Resolved::Comm("redis".into()), 0),
            ],
        }
    }

    #[test]
    fn a_pid_is_picked_by_its_pid_first_then_its_name_then_its_cgroup() {
        let t = table();
        assert_eq!(t.policy_for(42, Some("postgres"), || Some(7)), Some(2));
        assert_eq!(t.policy_for(43, Some("postgres"), || Some(7)), Some(1));
        assert_eq!(t.policy_for(43, Some("bash"), || Some(7)), Some(3));
        assert_eq!(t.policy_for(43, Some("redis"), || None), Some(0));
        assert_eq!(t.policy_for(43, Some("bash"), || Some(8)), None);
        assert_eq!(t.policy_for(43, None, || None), None);
    }

    #[test]
    fn the_cgroup_is_looked_up_only_when_needed() {
        let t = table();
        assert_eq!(
            t.policy_for(42, None, || panic!("pid matched: no cgroup lookup")),
            Some(2)
        );
    }

    #[test]
    fn selectors_read_as_configured() {
        assert_eq!(Selector::Comm("db".into()).to_string(), "comm db");
        assert_eq!(Selector::Pid(1).to_string(), "pid 1");
        assert_eq!(
            table().describe(),
            [
                "comm postgres",
                "pid 42",
                "cgroup /sys/fs/cgroup/db.service",
                "comm redis"
            ]
        );
    }
}
