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

/// Who a process picked by its program name must be to be the service: a name is no
/// identity, since any user may run a program of any name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Its real user: a name, or a uid.
    pub user: Option<String>,
    /// Its executable file (the same file: device and inode).
    pub exe: Option<PathBuf>,
}

impl Identity {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.exe.is_none()
    }
}

/// A target as configured: what picks its processes, who they must be (for a name),
/// and the index of the policy they follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub selector: Selector,
    pub policy: usize,
    pub identity: Identity,
}

/// What /proc shows of a process's identity: its real uid, and the device and inode of
/// its executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcIdentity {
    pub uid: u32,
    pub exe: (u64, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--pid {pid}: {source}")]
    Pid { pid: u32, source: PidError },
    #[error("--cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("target comm {comm}: user {user}: no such user")]
    NoSuchUser { comm: String, user: String },
    #[error("target comm {comm}: exe {path}: {source}")]
    Exe {
        comm: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A selector checked against this system: pids exist, cgroups resolved to their ids.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolved {
    Pid(u32),
    Comm {
        name: String,
        uid: Option<u32>,
        exe: Option<(u64, u64)>,
    },
    Cgroup {
        dir: PathBuf,
        id: u64,
    },
}

#[cfg(test)]
impl Resolved {
    /// A name target without `user` or `exe`.
    fn comm(name: &str) -> Resolved {
        Resolved::Comm {
            name: name.to_owned(),
            uid: None,
            exe: None,
        }
    }
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
                Selector::Comm(c) => resolve_comm(c, &spec.identity)?,
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
            Resolved::Comm { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    /// Name targets that any user's program of that name matches.
    pub fn comms_without_identity(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().filter_map(|(r, _)| match r {
            Resolved::Comm {
                name,
                uid: None,
                exe: None,
            } => Some(name.as_str()),
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
    /// `identity` tells who the process is (asked only for a name target that says).
    pub fn policy_for(
        &self,
        tgid: u32,
        comm: Option<&str>,
        cgroup_id: impl FnOnce() -> Option<u64>,
        identity: impl Fn() -> Option<ProcIdentity>,
    ) -> Option<usize> {
        let find = |want: &dyn Fn(&Resolved) -> bool| {
            self.entries
                .iter()
                .find(|(r, _)| want(r))
                .map(|(_, policy)| *policy)
        };
        let is_the_service = |uid: &Option<u32>, exe: &Option<(u64, u64)>| {
            if uid.is_none() && exe.is_none() {
                return true;
            }
            identity().is_some_and(|who| {
                uid.is_none_or(|u| u == who.uid) && exe.is_none_or(|e| e == who.exe)
            })
        };
        find(&|r| *r == Resolved::Pid(tgid))
            .or_else(|| {
                comm.and_then(|c| {
                    find(&|r| matches!(r, Resolved::Comm { name, uid, exe } if name == c && is_the_service(uid, exe)))
                })
            })
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
                let policy = self.policy_for(
                    pid,
                    comm.as_deref(),
                    || procfs::cgroup_id_of(pid),
                    || procfs::identity(pid),
                )?;
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
                Resolved::Comm { name, uid, exe } => {
                    let mut d = format!("comm {name}");
                    if let Some(u) = uid {
                        d.push_str(&format!(" (uid {u})"));
                    }
                    if exe.is_some() {
                        d.push_str(" (its executable)");
                    }
                    d
                }
                Resolved::Cgroup { dir, .. } => format!("cgroup {}", dir.display()),
            })
            .collect()
    }
}

/// A name target checked against the system: its user exists, its executable is a file.
fn resolve_comm(name: &str, identity: &Identity) -> Result<Resolved, TargetError> {
    let uid = identity
        .user
        .as_deref()
        .map(|user| {
            procfs::uid_of_user(user).ok_or_else(|| TargetError::NoSuchUser {
                comm: name.to_owned(),
                user: user.to_owned(),
            })
        })
        .transpose()?;
    let exe = identity
        .exe
        .as_deref()
        .map(|path| {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(path)
                .map(|m| (m.dev(), m.ino()))
                .map_err(|source| TargetError::Exe {
                    comm: name.to_owned(),
                    path: path.to_owned(),
                    source,
                })
        })
        .transpose()?;
    Ok(Resolved::Comm {
        name: name.to_owned(),
        uid,
        exe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_identity() -> Option<ProcIdentity> {
        panic!("no target asks who the process is")
    }

    #[test]
    fn a_name_with_a_user_or_an_executable_picks_only_that_users_or_that_file() {
        let t = TargetTable {
            entries: vec![(
                Resolved::Comm {
                    name: "postgres".into(),
                    uid: Some(70),
                    exe: Some((8, 1234)),
                },
                1,
            )],
        };
        let who = |uid, exe| move || Some(ProcIdentity { uid, exe });
        assert_eq!(
            t.policy_for(5, Some("postgres"), || None, who(70, (8, 1234))),
            Some(1)
        );
        assert_eq!(
            t.policy_for(5, Some("postgres"), || None, who(1000, (8, 1234))),
            None,
            "another user"
        );
        assert_eq!(
            t.policy_for(5, Some("postgres"), || None, who(70, (8, 99))),
            None,
            "another program of that name"
        );
        assert_eq!(
            t.policy_for(5, Some("postgres"), || None, || None),
            None,
            "gone: not the service"
        );
        assert!(t.comms_without_identity().next().is_none());
        assert_eq!(t.describe(), ["comm postgres (uid 70) (its executable)"]);
    }

    fn table() -> TargetTable {
        TargetTable {
            entries: vec![
                (Resolved::comm("postgres"), 1),
                (Resolved::Pid(42), 2),
                (
                    Resolved::Cgroup {
                        dir: "/sys/fs/cgroup/db.service".into(),
                        id: 7,
                    },
                    3,
                ),
                (Resolved::comm("redis"), 0),
            ],
        }
    }

    #[test]
    fn a_pid_is_picked_by_its_pid_first_then_its_name_then_its_cgroup() {
        let t = table();
        assert_eq!(
            t.policy_for(42, Some("postgres"), || Some(7), no_identity),
            Some(2)
        );
        assert_eq!(
            t.policy_for(43, Some("postgres"), || Some(7), no_identity),
            Some(1)
        );
        assert_eq!(
            t.policy_for(43, Some("bash"), || Some(7), no_identity),
            Some(3)
        );
        assert_eq!(
            t.policy_for(43, Some("redis"), || None, no_identity),
            Some(0)
        );
        assert_eq!(
            t.policy_for(43, Some("bash"), || Some(8), no_identity),
            None
        );
        assert_eq!(t.policy_for(43, None, || None, no_identity), None);
    }

    #[test]
    fn the_cgroup_is_looked_up_only_when_needed() {
        let t = table();
        assert_eq!(
            t.policy_for(
                42,
                None,
                || panic!("pid matched: no cgroup lookup"),
                no_identity
            ),
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
