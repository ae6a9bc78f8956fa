//! Builds the eBPF object (watchdog-ebpf, for bpfel-unknown-none with nightly and
//! bpf-linker) into OUT_DIR, where `src/kernel/probes.rs` embeds it. `cargo xtask` provisions the
//! toolchain; a plain `cargo build` works once it is there.
//!
//! The same build as `aya_build::build_ebpf`, but quiet: aya-build passes every line
//! the inner cargo prints (its `Compiling ...` progress too) up as a cargo warning, so a
//! fresh build showed some forty warnings that were none. Here the inner build's
//! progress goes to `OUT_DIR/ebpf-build.log`; its compiler diagnostics (warnings and
//! errors) still become cargo warnings, and a failed build prints its whole log.
use std::{
    env,
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Artifact, CompilerMessage, Message};

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
    // The eBPF crate's binaries are not build dependencies cargo tracks: rebuild when
    // any of its files changes.
    println!("cargo:rerun-if-changed={root_dir}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("little") => "bpfel-unknown-none",
        Ok("big") => "bpfeb-unknown-none",
        other => bail!("unsupported target endianness {other:?}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64".to_owned()
    } else {
        arch
    };
    // Nightly, through rustup (as aya-build does): build-std for the BPF target.
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        ebpf.name.as_str(),
    ])
    .args([
        "--bins",
        "--message-format=json",
        "--release",
        "--target",
        target,
    ])
    .args(["-Z", "build-std=core"])
    .arg("--target-dir")
    .arg(out_dir.join("aya-build/target").join(ebpf.name.as_str()));
    let mut rustflags = OsString::new();
    for (i, flag) in [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            rustflags.push("\x1f");
        }
        rustflags.push(flag);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer build's compiler is not the nightly one.
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(key);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `rustup run nightly cargo build` for the eBPF object (`cargo xtask` installs rustup's nightly and bpf-linker)")?;
    // Progress and the inner cargo's own errors, kept for the log.
    let mut stderr = child.stderr.take().context("no stderr")?;
    let progress = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut binaries = Vec::new();
    let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
    for message in Message::parse_stream(stdout) {
        match message.context("the eBPF build's JSON messages")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(exe),
                target,
                ..
            }) => binaries.push((target.name, exe.into_std_path_buf())),
            // A real diagnostic: shown, as the outer build's own would be.
            Message::CompilerMessage(CompilerMessage { message, .. }) => {
                for line in message.rendered.unwrap_or_default().lines() {
                    println!("cargo:warning={line}");
                }
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the eBPF build")?;
    let log = progress.join().unwrap_or_default();
    let log_path = out_dir.join("ebpf-build.log");
    fs::write(&log_path, &log).with_context(|| format!("writing {}", log_path.display()))?;
    if !status.success() {
        // Cargo shows a failed build script's stderr: the whole story.
        for line in BufReader::new(log.as_bytes()).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
        bail!(
            "the eBPF build failed ({status}); its log is above and in {}",
            log_path.display()
        );
    }
    for (name, binary) in binaries {
        let dst = out_dir.join(&name);
        fs::copy(&binary, &dst)
            .with_context(|| format!("copying {} to {}", binary.display(), dst.display()))?;
    }
    Ok(())
}
