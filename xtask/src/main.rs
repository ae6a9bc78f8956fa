//! `cargo xtask`: orchestration only. Provisions what a fresh machine lacks, builds,
//! runs the daemon (or a demo), and runs every test.
mod demo;
mod install;
mod provision;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

  run [-- ARGS]   provision, build, run the watchdog daemon with ARGS in the foreground;
                  with no ARGS, a demo: a service is monitored, one of its threads is
                  stalled in the kernel, and the heartbeat stops
  test            provision, build, then every test: format, lints, unit tests, and the
                  end-to-end tests against the real kernel (as root)
  bench [--quick] [SECTION...]
                  provision (and bpftrace), build, run the benchmarks as root (results:
                  BENCHMARKS.md); sections: syscalls, detection, oops, footprint, flood,
                  failover, gate (default: all); --quick: one short round of each, to check
                  the bench
  install [--root DIR]
                  provision, build, then install (as root) the binaries in /usr/local/bin,
                  the systemd unit, /etc/watchdog/watchdog.toml (kept if present), man
                  pages and shell completions; --root installs under DIR instead of /
  provision       only install what is missing (nightly rust-src, llvm-22-dev, bpf-linker,
                  bpftool, tracefs)
";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace")?;
    match args.first().map(String::as_str) {
        Some("run") => {
            provision::all()?;
            build()?;
            let rest: Vec<String> = match args.get(1).map(String::as_str) {
                Some("--") => args[2..].to_vec(),
                Some(_) => args[1..].to_vec(),
                None => Vec::new(),
            };
            if rest.is_empty() {
                demo::run(&release_dir())
            } else {
                let status = Command::new(release_dir().join("watchdog"))
                    .args(&rest)
                    .status()?;
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        Some("test") => {
            provision::all()?;
            test()
        }
        Some("provision") => provision::all(),
        Some("install") => {
            let root = match args.get(1).map(String::as_str) {
                Some("--root") => PathBuf::from(args.get(2).context("--root needs a DIR")?),
                Some(other) => bail!("unknown install option {other:?}\n\n{USAGE}"),
                None => PathBuf::from("/"),
            };
            provision::all()?;
            build()?;
            let docs = release_dir().join("docs");
            let gen_docs = release_dir().join("watchdog-gen-docs");
            cmd(
                gen_docs.to_str().expect("UTF-8 path"),
                &[docs.to_str().expect("UTF-8 path")],
            )?;
            install::run(
                &install::plan(&release_dir(), &docs, &workspace_root()),
                &root,
            )?;
            println!(
                "next: systemctl daemon-reload; edit /etc/watchdog/watchdog.toml; systemctl enable --now watchdog"
            );
            Ok(())
        }
        Some("bench") => {
            provision::all()?;
            provision::bench()?;
            cmd(
                "cargo",
                &["bench", "--locked", "-p", "watchdog", "--bench", "classify"],
            )?;
            // The kernel path: probes, daemon, heartbeat, printk, as root.
            build()?;
            // SAFETY: geteuid has no preconditions.
            if unsafe { geteuid() } != 0 {
                bail!(
                    "the kernel-path benchmark loads eBPF programs: run `cargo xtask bench` as root"
                );
            }
            // SAFETY: single-threaded at this point; read by the benchmark's harness.
            unsafe { std::env::set_var("WATCHDOG_BIN_DIR", release_dir()) };
            let bench = release_dir().join("wd-bench");
            let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
            cmd(bench.to_str().expect("UTF-8 path"), &rest)
        }
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("release")
}

/// Run a command, failing with the command line if it fails.
pub(crate) fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    // The eBPF programs are built inside `watchdog`'s build script (nightly, bpf-linker):
    // a fresh build spends a minute or two there, and shows only its diagnostics.
    eprintln!(
        "xtask: building (the eBPF programs too, in watchdog's build script; their build log: target/release/build/watchdog-*/out/ebpf-build.log)"
    );
    cmd("cargo", &["build", "--release", "--locked"])
}

/// Totals of libtest's `test result:` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Add a line like `test result: ok. 41 passed; 0 failed; 0 ignored; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// `cargo test ARGS`, echoing its output and adding up its results.
fn cargo_test(args: &[&str], tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    eprintln!("xtask: $ cargo test {}", args.join(" "));
    let mut child = Command::new("cargo")
        .arg("test")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        println!(
            "tests: {} passed, {} failed",
            tally.passed,
            tally.failed.max(1)
        );
        bail!("`cargo test {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn test() -> anyhow::Result<()> {
    cmd("cargo", &["fmt", "--all", "--", "--check"])?;
    cmd(
        "cargo",
        &[
            "clippy",
            "--release",
            "--locked",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    build()?;
    // The kernel-report rules on the real-world corpora, with the recall per class in
    // the log (the CLI tests hold them to it too).
    let corpus = workspace_root().join("watchdog/tests/corpus");
    let corpus_args: Vec<String> = ["real", "heldout", "lines.tsv"]
        .iter()
        .flat_map(|c| ["--corpus".to_owned(), corpus.join(c).display().to_string()])
        .collect();
    let mut rules_test = vec!["rules", "test"];
    rules_test.extend(corpus_args.iter().map(String::as_str));
    cmd(
        &release_dir().join("wdctl").display().to_string(),
        &rules_test,
    )?;
    // SAFETY: single-threaded at this point; the variable is read by the test binaries.
    unsafe { std::env::set_var("WATCHDOG_BIN_DIR", release_dir()) };
    let mut tally = Tally::default();
    // Pure logic first: fast, no root.
    cargo_test(
        &[
            "--release",
            "--locked",
            "--workspace",
            "--exclude",
            "watchdog-ebpf",
            "--exclude",
            "watchdog-tests",
        ],
        &mut tally,
    )?;
    // The real binaries' command lines: no root either.
    let mut no_root = vec!["--release", "--locked", "-p", "watchdog-tests"];
    for name in NO_ROOT_TEST_FILES {
        no_root.extend(["--test", name]);
    }
    cargo_test(&no_root, &mut tally)?;
    // End to end against the real kernel, one at a time: they measure time.
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        bail!("the end-to-end tests load eBPF programs: run `cargo xtask test` as root");
    }
    let end_to_end = end_to_end_test_files()?;
    let mut as_root = vec!["--release", "--locked", "-p", "watchdog-tests"];
    for name in &end_to_end {
        as_root.extend(["--test", name.as_str()]);
    }
    as_root.extend(["--", "--test-threads=1"]);
    cargo_test(&as_root, &mut tally)?;
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

/// The files in tests/tests that need no root; every other one is end to end, as root.
const NO_ROOT_TEST_FILES: &[&str] = &["cli", "packaging"];

/// The end-to-end test files (tests/tests/*.rs but those of `NO_ROOT_TEST_FILES`), by
/// name: the directory is the one list, so a new feature's file runs without more ado.
fn end_to_end_test_files() -> anyhow::Result<Vec<String>> {
    let dir = workspace_root().join("tests/tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
            && !NO_ROOT_TEST_FILES.contains(&name)
        {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        bail!("no end-to-end test files in {}", dir.display());
    }
    names.sort();
    Ok(names)
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_adds_up_libtest_results() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 41 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 5 tests");
        assert_eq!((t.passed, t.failed), (44, 2));
    }
}
