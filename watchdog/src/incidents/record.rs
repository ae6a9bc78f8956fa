//! Incidents: what happened, to whom, with the evidence, as stored and alerted.
use serde::{Deserialize, Serialize};

use watchdog_common::signal;

use crate::judging::kmsg::report::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A kernel report assembled from printk lines.
    KernelReport,
    /// A monitored thread overran its syscall budget.
    SyscallStall,
    /// A monitored process died of a fatal signal.
    Crash,
    /// The kernel's hung-task detector found a monitored thread (sched_process_hang).
    HungTask,
    /// The OOM killer chose a monitored process (oom/mark_victim).
    OomVictim,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KernelReport => "kernel-report",
            Kind::SyscallStall => "syscall-stall",
            Kind::Crash => "crash",
            Kind::HungTask => "hung-task",
            Kind::OomVictim => "oom-victim",
        }
    }
}

/// A thread stuck in a syscall, as /proc showed it at verdict time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallDetails {
    pub syscall: Option<String>,
    pub elapsed_ms: Option<u64>,
    pub budget_ms: u64,
    pub reason: String,
    /// Scheduler state letter from /proc (D, S, R, T, ...).
    pub state: Option<String>,
    /// Kernel function the thread sleeps in.
    pub wchan: Option<String>,
    /// The six syscall arguments, from /proc/PID/task/TID/syscall.
    pub args: Vec<String>,
    /// Kernel stack, from /proc/PID/task/TID/stack (root only).
    pub kernel_stack: Vec<String>,
}

/// A fatal signal that ended a monitored process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalDetails {
    pub signal: String,
    pub signo: i32,
    pub code: i32,
    /// Meaning of the si_code (`SEGV_MAPERR: address not mapped`, `SI_USER: kill()`).
    pub code_meaning: String,
    /// The thread the signal was for.
    pub target_tid: u32,
    pub sender_pid: u32,
    pub sender_comm: String,
    /// The kernel's own line about the fault (`svc[12]: segfault at 0 ip ...`), if any.
    pub fault_line: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Assigned by the store.
    pub id: Option<i64>,
    pub at_unix_ms: u64,
    pub kind: Kind,
    /// Kernel class (`bug`, `hung_task`, ...), or `stall` / `crash`.
    pub class: String,
    pub summary: String,
    pub host: String,
    /// Whether it concerns a monitored process.
    pub monitored: bool,
    /// Whether it stopped the heartbeat.
    pub stopped_heartbeat: bool,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub report: Option<Report>,
    pub stall: Option<StallDetails>,
    pub signal: Option<SignalDetails>,
    /// The service heartbeat gates this incident closed (with the heartbeat it stopped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates_closed: Vec<String>,
    /// Found in pstore at start: a crash of an earlier boot (see `incidents::pstore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_boot: Option<super::pstore::PreviousBoot>,
}

/// One row of `wdctl incidents`.
impl Incident {
    /// An incident of `host` at `at_unix_ms`, about no task yet, that stopped nothing;
    /// the caller fills in the rest.
    pub fn new(kind: Kind, class: &str, summary: String, host: &str, at_unix_ms: u64) -> Self {
        Incident {
            id: None,
            at_unix_ms,
            kind,
            class: class.to_owned(),
            summary,
            host: host.to_owned(),
            monitored: false,
            stopped_heartbeat: false,
            pid: None,
            tid: None,
            comm: None,
            report: None,
            stall: None,
            signal: None,
            gates_closed: Vec::new(),
            previous_boot: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSummary {
    pub id: i64,
    pub at_unix_ms: u64,
    pub kind: Kind,
    pub class: String,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub monitored: bool,
    pub stopped_heartbeat: bool,
    pub summary: String,
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Name of a signal number (`SIGSEGV`), or `signal N` for one without a name.
pub fn signal_name(sig: i32) -> String {
    match signal::name(sig) {
        Some(name) => format!("SIG{name}"),
        None => format!("signal {sig}"),
    }
}

/// Meaning of an si_code for signal `sig` (include/uapi/asm-generic/siginfo.h).
pub fn signal_code_meaning(sig: i32, code: i32) -> String {
    let generic = match code {
        0 => Some("SI_USER: sent by kill()"),
        0x80 => Some("SI_KERNEL: sent by the kernel"),
        -1 => Some("SI_QUEUE: sent by sigqueue()"),
        -6 => Some("SI_TKILL: sent by tkill()/tgkill()"),
        _ => None,
    };
    if let Some(g) = generic {
        return g.into();
    }
    let specific = match (sig, code) {
        (11, 1) => "SEGV_MAPERR: address not mapped",
        (11, 2) => "SEGV_ACCERR: invalid permissions for mapped object",
        (7, 1) => "BUS_ADRALN: invalid address alignment",
        (7, 2) => "BUS_ADRERR: non-existent physical address",
        (7, 3) => "BUS_OBJERR: object-specific hardware error",
        (7, 4) => "BUS_MCEERR_AR: hardware memory error consumed",
        (8, 1) => "FPE_INTDIV: integer divide by zero",
        (8, 2) => "FPE_INTOVF: integer overflow",
        (4, 1) => "ILL_ILLOPC: illegal opcode",
        _ => "",
    };
    if specific.is_empty() {
        format!("code {code}")
    } else {
        specific.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_codes_are_explained() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(40), "signal 40");
        assert_eq!(
            signal_code_meaning(11, 1),
            "SEGV_MAPERR: address not mapped"
        );
        assert_eq!(signal_code_meaning(9, 0), "SI_USER: sent by kill()");
        assert_eq!(
            signal_code_meaning(6, -6),
            "SI_TKILL: sent by tkill()/tgkill()"
        );
        assert_eq!(signal_code_meaning(11, 99), "code 99");
    }

    #[test]
    fn the_shared_signal_table_matches_the_c_library() {
        for (name, sig) in signal::NAMES {
            let expected = match name {
                "HUP" => libc::SIGHUP,
                "INT" => libc::SIGINT,
                "QUIT" => libc::SIGQUIT,
                "ILL" => libc::SIGILL,
                "TRAP" => libc::SIGTRAP,
                "ABRT" => libc::SIGABRT,
                "BUS" => libc::SIGBUS,
                "FPE" => libc::SIGFPE,
                "KILL" => libc::SIGKILL,
                "USR1" => libc::SIGUSR1,
                "SEGV" => libc::SIGSEGV,
                "USR2" => libc::SIGUSR2,
                "PIPE" => libc::SIGPIPE,
                "ALRM" => libc::SIGALRM,
                "TERM" => libc::SIGTERM,
                "CHLD" => libc::SIGCHLD,
                "CONT" => libc::SIGCONT,
                "STOP" => libc::SIGSTOP,
                "SYS" => libc::SIGSYS,
                other => panic!("{other} is not checked against libc"),
            };
            assert_eq!(sig, expected, "SIG{name}");
        }
        assert_eq!(signal::MAX, libc::SIGRTMAX());
    }
}
