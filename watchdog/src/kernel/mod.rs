//! Stage 1, the kernel: load and attach the eBPF probes and hold their maps, and read
//! what the running kernel says of itself (BTF field offsets, tracepoint layouts,
//! `/proc`, CLOCK_MONOTONIC). The only stage that touches aya.
pub mod btf;
pub mod clock;
pub mod gate;
pub mod jiffies;
pub mod kmsg;
pub mod mount;
pub mod pidns;
pub mod probes;
pub mod procfs;
pub mod ring;
pub mod task_iter;
pub mod tracefs;
