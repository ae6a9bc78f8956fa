//! Recognising kernel problem reports in printk lines.
//!
//! A basic pattern set for now; the full rule engine (classes, incidents, user rules)
//! replaces it. Patterns are substrings, because lines arrive with or without prefixes.

/// Lines that mean the printing task hit a kernel fault: if a monitored thread prints
/// one, that thread is dead or wedged in the kernel.
const FATAL: &[&str] = &[
    "BUG:",
    "Oops:",
    "general protection fault",
    "Kernel panic - not syncing",
    "kernel BUG at",
];

/// Lines worth an alert whoever printed them, but not a verdict by themselves.
const NOTABLE: &[&str] = &[
    "soft lockup",
    "hard LOCKUP",
    "blocked for more than",
    "detected stalls on CPU",
    "self-detected stall on CPU",
    "WARNING: CPU:",
    "Out of memory",
    "EXT4-fs error",
    "I/O error",
    "Machine check",
    "[Hardware Error]",
];

/// How serious a kernel line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// A fault in the printing task's own kernel path (oops, BUG, panic).
    Fatal,
    /// A kernel problem worth telling an operator about.
    Notable,
}

/// A kernel line recognised as a problem report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// The pattern that matched: the reason shown to the operator.
    pub pattern: &'static str,
}

/// Recognise a kernel problem line, or `None` for an ordinary message.
pub fn problem(line: &str) -> Option<Problem> {
    // "DEBUG:" contains "BUG:": a debug line is not a bug (abrt blacklists it too).
    let fatal = FATAL.iter().find(|p| {
        line.match_indices(**p)
            .any(|(at, _)| !(**p == "BUG:" && line[..at].ends_with("DE")))
    });
    if let Some(pattern) = fatal {
        return Some(Problem {
            severity: Severity::Fatal,
            pattern,
        });
    }
    NOTABLE
        .iter()
        .find(|p| line.contains(**p))
        .map(|pattern| Problem {
            severity: Severity::Notable,
            pattern,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oops_and_bug_lines_are_fatal() {
        for line in [
            "BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "BUG: unable to handle page fault for address: ffffc90000a3f000",
            "Oops: 0000 [#1] PREEMPT SMP NOPTI",
            "general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP PTI",
            "Kernel panic - not syncing: Fatal exception",
            "kernel BUG at mm/slub.c:4131!",
            "watchdog-test: BUG: simulated fault",
        ] {
            let p = problem(line).unwrap_or_else(|| panic!("not recognised: {line}"));
            assert_eq!(p.severity, Severity::Fatal, "{line}");
        }
    }

    #[test]
    fn notable_lines_alert_without_verdict() {
        let p = problem("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:1:123]");
        // Printed by the watchdog kthread about another task: "BUG:" makes it fatal for
        // the printer only, and the printer is never a monitored service thread.
        assert_eq!(p.map(|p| p.pattern), Some("BUG:"));
        let p = problem("INFO: task java:4242 blocked for more than 120 seconds.").unwrap();
        assert_eq!(p.severity, Severity::Notable);
        let p = problem("EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2").unwrap();
        assert_eq!(p.severity, Severity::Notable);
    }

    #[test]
    fn ordinary_lines_are_not_problems() {
        for line in [
            "NMI watchdog: Enabled. Permanently consumes one hw-PMU counter.",
            "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex",
            "DEBUG: nothing to see",
            "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        ] {
            assert_eq!(problem(line), None, "{line}");
        }
    }
}
