//! wdctl: the operator's window into the watchdog daemon. Thin: parse, run, report.
use std::process::ExitCode;

use clap::Parser;
use watchdog::config::cli::WdctlArgs;

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Some(hint) = watchdog::config::cli::util_linux_wdctl_call(&raw) {
        eprintln!("wdctl: {hint}");
        return ExitCode::from(2);
    }
    let args = WdctlArgs::parse();
    let mut out = std::io::stdout().lock();
    match watchdog::wdctl::run(args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (wdctl ... | head) is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wdctl: error: {}", watchdog::config::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
