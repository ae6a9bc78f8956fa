//! Writes man pages (`watchdog.8`, `wdctl.8`) and shell completions (bash, zsh, fish) for
//! both binaries into DIR, from their clap definitions, so they never drift from --help.
use std::{path::PathBuf, process::ExitCode};

use clap::CommandFactory;
use clap_complete::Shell;
use watchdog::config::cli::{DaemonArgs, WdctlArgs};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: watchdog-gen-docs DIR");
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchdog-gen-docs: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("man8"))?;
    std::fs::create_dir_all(dir.join("completions"))?;
    for cmd in [DaemonArgs::command(), WdctlArgs::command()] {
        let name = cmd.get_name().to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .section("8")
            .render(&mut page)?;
        std::fs::write(dir.join("man8").join(format!("{name}.8")), page)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut cmd.clone(), &name, dir.join("completions"))?;
        }
    }
    Ok(())
}
