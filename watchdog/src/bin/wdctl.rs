//! wdctl: the operator's window into the watchdog daemon. Thin: parse, run, report.
use std::process::ExitCode;

use clap::Parser;
use watchdog::cli::WdctlArgs;

fn main() -> ExitCode {
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
            eprintln!("wdctl: error: {}", watchdog::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
