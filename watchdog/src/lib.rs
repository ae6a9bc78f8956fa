//! watchdog: an eBPF kernel stall watchdog that gates an HA heartbeat on the health of a
//! service's threads.
//!
//! The modules follow the pipeline, one folder per stage:
//! [`kernel`] (probes, BTF, tracefs, /proc) → [`events`] (ring records as Rust enums) →
//! [`judging`] (verdicts, kernel reports, the daemon's reactions; pure) → [`incidents`]
//! (record, store, alerts) → [`heartbeat`] and [`control`] (what the node says, and the
//! operator's window). [`config`] settles the command line and the file into one
//! configuration; [`daemon`] wires the stages into tasks; [`wdctl`] is the operator's
//! command.
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod heartbeat;
pub mod incidents;
pub mod input_file;
pub mod judging;
pub mod kernel;
pub mod program;
pub mod terminal;
pub mod wdctl;
