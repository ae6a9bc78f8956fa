//! Per-target policy: how a target's syscalls are budgeted and what happens beyond the
//! heartbeat when one of its threads is stalled. Pure.
//!
//! A budget is looked up most specific first: the syscall's own, then its class's, then
//! the target's default. Targets without settings of their own share the node-wide
//! policy; a `[[target]]` in the config file inherits whatever it does not set.
use std::{collections::BTreeMap, time::Duration};

use crate::judging::syscall_table::{self, SyscallClass};

/// The verdict classes of syscalls, for budgets by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BudgetClass {
    /// Syscalls that may wait without bound (epoll_wait, accept, futex, ...): their
    /// budget bounds only spinning or uninterruptible sleep, never an idle wait.
    Wait,
    /// Everything else (read/write count here: on a file they are bounded, and the
    /// budget is chosen before the fd is looked at).
    Bounded,
}

impl BudgetClass {
    pub const NAMES: &str = "wait, bounded";

    pub fn parse(name: &str) -> Option<BudgetClass> {
        match name {
            "wait" => Some(BudgetClass::Wait),
            "bounded" => Some(BudgetClass::Bounded),
            _ => None,
        }
    }

    pub fn of(nr: u32) -> BudgetClass {
        match syscall_table::class(nr) {
            SyscallClass::Wait => BudgetClass::Wait,
            _ => BudgetClass::Bounded,
        }
    }
}

/// How long syscalls may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budgets {
    pub default: Duration,
    pub classes: BTreeMap<BudgetClass, Duration>,
    /// By syscall number.
    pub syscalls: BTreeMap<u32, Duration>,
}

impl Budgets {
    pub fn uniform(default: Duration) -> Budgets {
        Budgets {
            default,
            classes: BTreeMap::new(),
            syscalls: BTreeMap::new(),
        }
    }

    /// The budget of syscall `nr`: its own, else its class's, else the default.
    pub fn of(&self, nr: u32) -> Duration {
        self.syscalls
            .get(&nr)
            .or_else(|| self.classes.get(&BudgetClass::of(nr)))
            .copied()
            .unwrap_or(self.default)
    }

    /// The shortest budget any syscall can have (how often to look).
    pub fn shortest(&self) -> Duration {
        self.syscalls
            .values()
            .chain(self.classes.values())
            .copied()
            .fold(self.default, Duration::min)
    }

    /// `over` on top of these: its entries win, the rest stay.
    pub fn overlay(&self, default: Option<Duration>, over: &Budgets) -> Budgets {
        let mut b = self.clone();
        if let Some(d) = default {
            b.default = d;
        }
        b.classes.extend(over.classes.iter().map(|(k, v)| (*k, *v)));
        b.syscalls
            .extend(over.syscalls.iter().map(|(k, v)| (*k, *v)));
        b
    }
}

/// What a target is judged by, and the actions it opted into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub budgets: Budgets,
    /// Sent to the process once when one of its threads is stalled.
    pub stall_signal: Option<i32>,
    /// Whether its incidents run the exec hook (when one is configured).
    pub exec_hook: bool,
    /// Longest a thread may stay stopped (by a signal or a tracer) before it is stalled:
    /// a debugger's short stop is fine, a frozen service serves nobody.
    pub stopped_budget: Duration,
}

/// The stopped budget unless configured: longer than a tracer's stop to take a stack or
/// a core, far shorter than any HA manager's patience.
pub const DEFAULT_STOPPED_BUDGET: Duration = Duration::from_secs(5);

impl Policy {
    pub fn uniform(budget: Duration) -> Policy {
        Policy {
            budgets: Budgets::uniform(budget),
            stall_signal: None,
            exec_hook: true,
            stopped_budget: DEFAULT_STOPPED_BUDGET,
        }
    }
}

/// Index of the node-wide policy in a policy list.
pub const DEFAULT_POLICY: usize = 0;

#[cfg(test)]
mod tests {
    use syscalls::Sysno;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_most_specific_budget_wins() {
        let b = Budgets {
            default: S(2),
            classes: BTreeMap::from([(BudgetClass::Wait, S(30))]),
            syscalls: BTreeMap::from([(Sysno::fsync as u32, S(10))]),
        };
        assert_eq!(b.of(Sysno::fsync as u32), S(10), "its own");
        assert_eq!(b.of(Sysno::epoll_wait as u32), S(30), "its class's");
        assert_eq!(b.of(Sysno::futex as u32), S(30), "its class's");
        assert_eq!(b.of(Sysno::mkdir as u32), S(2), "the default");
        assert_eq!(
            b.of(Sysno::read as u32),
            S(2),
            "read is budgeted as bounded"
        );
        assert_eq!(b.shortest(), S(2));
    }

    #[test]
    fn an_overlay_keeps_what_it_does_not_set() {
        let node = Budgets {
            default: S(2),
            classes: BTreeMap::from([(BudgetClass::Wait, S(30))]),
            syscalls: BTreeMap::from([(Sysno::fsync as u32, S(10))]),
        };
        let mine = Budgets {
            default: S(0),
            classes: BTreeMap::new(),
            syscalls: BTreeMap::from([(Sysno::fsync as u32, S(60))]),
        };
        let b = node.overlay(Some(S(5)), &mine);
        assert_eq!(b.default, S(5));
        assert_eq!(b.of(Sysno::fsync as u32), S(60));
        assert_eq!(b.of(Sysno::poll as u32), S(30));
        assert_eq!(
            node.overlay(None, &Budgets::uniform(S(0))),
            node,
            "nothing set: the node's"
        );
    }

    #[test]
    fn class_names_parse() {
        assert_eq!(BudgetClass::parse("wait"), Some(BudgetClass::Wait));
        assert_eq!(BudgetClass::parse("bounded"), Some(BudgetClass::Bounded));
        assert_eq!(BudgetClass::parse("io"), None);
    }
}
