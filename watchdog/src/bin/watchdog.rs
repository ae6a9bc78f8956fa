//! The watchdog daemon. Thin: parse arguments, set up logging, run the library.
use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use watchdog::{
    config::cli::{DaemonArgs, LogFormat},
    daemon,
};

fn main() -> ExitCode {
    // One malloc arena: the daemon's few threads allocate little, and an arena per
    // thread would keep pages resident for nothing (BENCHMARKS.md, footprint).
    // SAFETY: mallopt before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let args = DaemonArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WATCHDOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd, stderr goes to the journal, which stamps each line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (args.log_format, journal) {
        (LogFormat::Json, _) => logs.json().init(),
        (LogFormat::Text, true) => logs.with_ansi(false).without_time().init(),
        (LogFormat::Text, false) => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let result = daemon::Settings::load(&args)
        .map_err(anyhow::Error::from)
        .and_then(|settings| {
            // Before the runtime's threads exist, so that they all inherit it.
            watchdog::daemon::realtime::apply(settings.config.mlock, settings.config.rt_priority)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(daemon::run(settings, &args))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr is the log (journald takes it): one line says it all.
            eprintln!(
                "watchdog: error: {}",
                watchdog::config::cli::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}
