//! Builds the eBPF object (watchdog-ebpf, for bpfel-unknown-none with nightly and
//! bpf-linker) into OUT_DIR, where `src/kernel/probes.rs` embeds it. `cargo xtask` provisions the
//! toolchain; a plain `cargo build` works once it is there.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "watchdog-ebpf")
        .ok_or_else(|| anyhow!("watchdog-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("watchdog-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
