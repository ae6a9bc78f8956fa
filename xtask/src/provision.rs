//! Install what building and testing need, if it is missing. Every step checks first,
//! so on a provisioned machine this costs a few process spawns. Versions are those of
//! ../shared/TOOLCHAIN.md: nightly with rust-src for the eBPF crate, bpf-linker 0.13.0
//! built against Debian's LLVM 22 (the LLVM of that nightly).
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian packages: LLVM 22 to build bpf-linker; bpftool for the tests' detach check;
/// systemd for `systemd-analyze verify` of the unit file; python3 (its sqlite3) for a
/// test that locks the incident store as another process would; keepalived and Pacemaker
/// with corosync, which the failover tests run for real; systemd-nspawn and mmdebstrap,
/// to boot a real systemd for the shipped unit's test (see [`nspawn_tree`]); Prometheus
/// (with promtool) and Alertmanager, which the fleet tests run.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "systemd",
    "python3",
    "keepalived",
    "pacemaker",
    "corosync",
    "pacemaker-cli-utils",
    "systemd-container",
    "mmdebstrap",
    "gpg",
    "prometheus",
    "prometheus-alertmanager",
];

/// The Debian tree the unit's test boots with systemd-nspawn (tests/src/nspawn.rs):
/// minbase with systemd as init, dbus, and procps (the unit's ExecReload runs
/// /bin/kill), of the host's release. Built once, from the host's own apt sources; the
/// test boots it under an overlay, so it never changes.
const NSPAWN_TREE: &str = "target/nspawn-tree";

pub fn all() -> anyhow::Result<()> {
    rust_components()?;
    apt_packages()?;
    bpf_linker()?;
    tracefs()?;
    nspawn_tree()?;
    Ok(())
}

fn nspawn_tree() -> anyhow::Result<()> {
    let tree = Path::new(NSPAWN_TREE);
    // Written last: a tree without it is a build that did not finish.
    let done = tree.join(".watchdog-complete");
    if done.exists() || !is_root() {
        return Ok(());
    }
    if tree.exists() {
        std::fs::remove_dir_all(tree).context("removing an unfinished nspawn tree")?;
    }
    // The host's apt sources (deb822 on bookworm and later, else the one-line list),
    // passed as the mirror: mmdebstrap copies the file into the tree.
    let sources = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .context("no apt sources on this host to build the nspawn tree from")?;
    // The host's own release, so the tree's libc runs the host's binaries.
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_owned())
        .context("no VERSION_CODENAME in /etc/os-release to build the nspawn tree for")?;
    cmd(
        "mmdebstrap",
        &[
            "--quiet",
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,procps",
            &suite,
            NSPAWN_TREE,
            sources,
        ],
    )?;
    std::fs::write(&done, b"").context("marking the nspawn tree complete")?;
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn rust_components() -> anyhow::Result<()> {
    let toolchains = output("rustup", &["toolchain", "list"]).context("rustup is needed")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        cmd(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    let nightly = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !nightly.lines().any(|l| l.starts_with("rust-src")) {
        cmd(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    let stable = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for c in ["rustfmt", "clippy"] {
        if !stable.lines().any(|l| l.starts_with(c)) {
            cmd("rustup", &["component", "add", c])?;
        }
    }
    Ok(())
}

fn apt_installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.contains("install ok installed"))
}

/// What the benchmark needs beyond the build: bpftrace, the tool it compares against.
pub fn bench() -> anyhow::Result<()> {
    install(&["bpftrace"])
}

fn apt_packages() -> anyhow::Result<()> {
    install(APT_PACKAGES)
}

/// Install the Debian packages of `packages` that are missing.
fn install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}: run `cargo xtask provision` as root");
    }
    cmd("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    // SAFETY: single-threaded; apt-get reads it.
    unsafe { std::env::set_var("DEBIAN_FRONTEND", "noninteractive") };
    cmd("apt-get", &args)
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = output("bpf-linker", &["--version"]).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    // SAFETY: single-threaded; read by bpf-linker's build script.
    unsafe { std::env::set_var("LLVM_PREFIX", LLVM_PREFIX) };
    cmd(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
    )
}

fn tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() || !is_root() {
        // Not root: the daemon needs root anyway and mounts tracefs itself.
        return Ok(());
    }
    cmd("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
}
