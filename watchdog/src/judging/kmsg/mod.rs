//! Reading kernel messages: strip the prefixes lines carry in the wild, classify each line
//! by rules (built-in and the operator's), and assemble multi-line reports into incidents.
//! Pure: no kernel needed; the daemon and `wdctl kmsg` share it.
pub mod class;
pub mod corpus;
pub mod prefix;
pub mod report;
pub mod rules;

pub use class::{Action, Class, Severity};
pub use rules::{Classification, RuleSet, RulesError};
