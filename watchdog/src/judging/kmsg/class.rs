//! What a kernel line is, how bad, and what to do about it.
use serde::{Deserialize, Serialize};

/// The class of a kernel message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Oops/trap headers: `Oops:`, `general protection fault`, `invalid opcode`, ...
    Oops,
    /// BUG lines and fault descriptions: `BUG: kernel NULL pointer dereference`, ...
    Bug,
    Panic,
    SoftLockup,
    HardLockup,
    HungTask,
    RcuStall,
    Warning,
    Oom,
    /// MCE, EDAC, CMCI, APEI `[Hardware Error]`, SError.
    Hardware,
    /// Filesystem errors and block I/O errors, swap read/write errors included.
    FsIo,
    AllocFailure,
    None,
}

impl Class {
    pub const ALL: [Class; 13] = [
        Class::Oops,
        Class::Bug,
        Class::Panic,
        Class::SoftLockup,
        Class::HardLockup,
        Class::HungTask,
        Class::RcuStall,
        Class::Warning,
        Class::Oom,
        Class::Hardware,
        Class::FsIo,
        Class::AllocFailure,
        Class::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Oops => "oops",
            Class::Bug => "bug",
            Class::Panic => "panic",
            Class::SoftLockup => "soft_lockup",
            Class::HardLockup => "hard_lockup",
            Class::HungTask => "hung_task",
            Class::RcuStall => "rcu_stall",
            Class::Warning => "warning",
            Class::Oom => "oom",
            Class::Hardware => "hardware",
            Class::FsIo => "fs_io",
            Class::AllocFailure => "alloc_failure",
            Class::None => "none",
        }
    }

    /// Default severity of a class.
    pub fn default_severity(self) -> Severity {
        match self {
            Class::Oops
            | Class::Bug
            | Class::Panic
            | Class::SoftLockup
            | Class::HardLockup
            | Class::HungTask => Severity::Critical,
            Class::RcuStall | Class::Oom | Class::Hardware | Class::FsIo => Severity::Error,
            Class::Warning | Class::AllocFailure => Severity::Warning,
            Class::None => Severity::Info,
        }
    }

    /// Default action when a report of this class names a monitored thread: the task
    /// is dead or wedged in the kernel for oops/bug/panic/hung task/soft lockup.
    pub fn default_action(self) -> Action {
        match self {
            Class::Oops | Class::Bug | Class::Panic | Class::HungTask | Class::SoftLockup => {
                Action::StopHeartbeat
            }
            Class::None => Action::None,
            _ => Action::Alert,
        }
    }

    /// Whether the printing task is the task the report is about, when the report is
    /// printed in process context: the faulting task prints its own oops, BUG, warning
    /// or allocation failure; hung-task, lockup, RCU and OOM reports are printed by
    /// someone else about another task.
    pub fn printed_by_subject(self) -> bool {
        matches!(
            self,
            Class::Oops
                | Class::Bug
                | Class::Panic
                | Class::Warning
                | Class::AllocFailure
                | Class::FsIo
        )
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// What a report does when it names a monitored thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing: not a problem line.
    None,
    /// Record and alert.
    Alert,
    /// The thread is stalled: stop the heartbeat, record, alert.
    StopHeartbeat,
}
