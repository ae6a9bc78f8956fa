//! wdctl: the operator's window into the watchdog daemon. Thin: parse, call, print.
use std::{io::Write, process::ExitCode, time::Instant};

use anyhow::Context as _;
use clap::Parser;
use watchdog::{
    cli::{HeartbeatCommand, ListenArgs, WdctlArgs, WdctlCommand},
    control::{
        client,
        proto::{Reply, Request},
    },
    heartbeat::{listener, socket},
    iface::Interface,
    render,
};

fn main() -> ExitCode {
    let args = WdctlArgs::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wdctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: WdctlArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match args.command {
        WdctlCommand::Threads(f) => match client::call(&args.socket, &Request::Threads)? {
            Reply::Threads(rows) if f.json => {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?
            }
            Reply::Threads(rows) => write!(out, "{}", render::threads(&rows))?,
            other => anyhow::bail!("unexpected reply to threads: {other:?}"),
        },
        WdctlCommand::Status(f) => match client::call(&args.socket, &Request::Status)? {
            Reply::Status(s) if f.json => writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?,
            Reply::Status(s) => write!(out, "{}", render::status(&s))?,
            other => anyhow::bail!("unexpected reply to status: {other:?}"),
        },
        WdctlCommand::Heartbeat(HeartbeatCommand::Listen(l)) => listen(l, &mut out)?,
    }
    Ok(())
}

fn listen(args: ListenArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let iface = Interface::by_name(&args.interface)
        .with_context(|| format!("--interface {}", args.interface))?;
    let sock = socket::listener(args.group, &iface)?;
    let mut l = listener::Listener::new(sock, std::time::Duration::from_secs(1))?;
    let start = Instant::now();
    loop {
        if args.duration.is_some_and(|d| start.elapsed() >= d) {
            return Ok(());
        }
        let seen = l.next_seen()?;
        listener::print_seen(out, &seen, args.json)?;
        out.flush()?;
    }
}
