//! watchdog: an eBPF kernel stall watchdog that gates an HA heartbeat on the health of a
//! service's threads.
//!
//! Pure modules (no kernel, no root, unit-tested): [`syscall_table`], [`verdict`],
//! [`kmsg`], [`heartbeat::packet`], [`events`], [`monitor`], [`cli`], [`control::proto`].
//! Modules that touch the system: [`ebpf`] (the only one that touches aya), [`procfs`],
//! [`iface`], [`heartbeat::sender`], [`heartbeat::listener`], [`control`], [`daemon`].
pub mod alert;
pub mod btf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod ebpf;
pub mod events;
pub mod heartbeat;
pub mod iface;
pub mod incidents;
pub mod kmsg;
pub mod liveness;
pub mod metrics;
pub mod monitor;
pub mod policy;
pub mod procfs;
pub mod realtime;
pub mod render;
pub mod sdnotify;
pub mod store;
pub mod syscall_table;
pub mod targets;
pub mod tracefs;
pub mod verdict;
pub mod wdctl;
