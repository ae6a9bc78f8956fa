//! The wdctl subcommands. The binary parses arguments and calls [`run`].
pub mod render;

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    config::cli::{
        HarvestArgs, HeartbeatCommand, KmsgArgs, KmsgCommand, ListenArgs, RulesCommand,
        RulesTestArgs, WdctlArgs, WdctlCommand,
    },
    control::{
        client, metrics,
        proto::{Reply, Request},
    },
    heartbeat::iface::Interface,
    heartbeat::{
        fleet::{Fleet, FleetSettings},
        listener, socket,
    },
    incidents::pstore,
    judging::kmsg::{RuleSet, corpus, prefix, report::assemble_log, rules::BUILTIN_NAME},
    terminal::{printable, printable_all},
};

/// Run a wdctl command, printing to `out`. Errors are for the caller to print.
pub fn run(args: WdctlArgs, out: &mut impl Write) -> anyhow::Result<()> {
    match args.command {
        WdctlCommand::Threads(f) => match client::call(&args.socket, &Request::Threads)? {
            Reply::Threads(rows) if f.json => {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?
            }
            Reply::Threads(rows) => write!(out, "{}", render::threads(&printable_all(&rows)))?,
            other => bail!("unexpected reply to threads: {other:?}"),
        },
        WdctlCommand::Status(f) => match client::call(&args.socket, &Request::Status)? {
            Reply::Status(s) if f.json => writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?,
            Reply::Status(s) => write!(out, "{}", render::status(&printable_all(&*s)))?,
            other => bail!("unexpected reply to status: {other:?}"),
        },
        WdctlCommand::Resume => match client::call(&args.socket, &Request::Resume)? {
            Reply::Resumed(msg) => writeln!(out, "{}", printable(&msg))?,
            other => bail!("unexpected reply to resume: {other:?}"),
        },
        WdctlCommand::Incidents(a) => {
            match client::call(&args.socket, &Request::Incidents { limit: a.limit })? {
                Reply::Incidents(list) if a.json => {
                    writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?
                }
                Reply::Incidents(list) => {
                    write!(out, "{}", render::incidents(&printable_all(&list)))?
                }
                other => bail!("unexpected reply to incidents: {other:?}"),
            }
        }
        WdctlCommand::Incident(a) => {
            match client::call(&args.socket, &Request::Incident { id: a.id })? {
                Reply::Incident(inc) if a.json => {
                    writeln!(out, "{}", serde_json::to_string_pretty(&inc)?)?
                }
                Reply::Incident(inc) => write!(out, "{}", render::incident(&printable_all(&*inc)))?,
                other => bail!("unexpected reply to incident: {other:?}"),
            }
        }
        WdctlCommand::Heartbeat(HeartbeatCommand::Listen(l)) => listen(l, out)?,
        WdctlCommand::Kmsg(KmsgCommand::Classify(a)) => classify(&a, out)?,
        WdctlCommand::Kmsg(KmsgCommand::Incidents(a)) => incidents(&a, out)?,
        WdctlCommand::Rules(RulesCommand::Test(a)) => rules_test(&a, out)?,
        WdctlCommand::Harvest(a) => harvest(&a, out)?,
    }
    Ok(())
}

fn listen(args: ListenArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let iface = Interface::by_name(&args.interface)
        .with_context(|| format!("--interface {}", args.interface))?;
    let sock = socket::listener(args.group, &iface)?;
    let key = args
        .key
        .as_deref()
        .map(crate::heartbeat::key::load)
        .transpose()
        .context("--key")?;
    let mut l = listener::Listener::new(sock, std::time::Duration::from_secs(1), key)?;
    let start = Instant::now();
    let fleet = Arc::new(Mutex::new(Fleet::new(
        FleetSettings {
            silent_after: args.silent_after,
            default_interval: args.node_interval,
            expected: args.expected.clone(),
        },
        start,
    )));
    if let Some(addr) = args.metrics {
        serve_fleet(addr, fleet.clone()).with_context(|| format!("--metrics {addr}"))?;
    }
    loop {
        if args.duration.is_some_and(|d| start.elapsed() >= d) {
            return Ok(());
        }
        if let Some(seen) = l.next_seen()? {
            fleet
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .on_seen(&seen, Instant::now());
            listener::print_seen(out, &seen, args.json)?;
            out.flush()?;
        }
    }
}

/// Serve the fleet's metrics from a thread of their own (the listener loop is plain
/// blocking I/O): bound before returning, so a taken port is an error at start.
fn serve_fleet(addr: std::net::SocketAddr, fleet: Arc<Mutex<Fleet>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(metrics::bind(addr))?;
    std::thread::Builder::new()
        .name("wd-fleet-metrics".into())
        .spawn(move || {
            runtime.block_on(metrics::serve(listener, move || {
                fleet
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .render(Instant::now())
            }))
        })?;
    Ok(())
}

fn harvest(args: &HarvestArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("{}: not a directory", args.dir.display());
    }
    let rules = load_rules(args.rules.as_deref())?;
    let (dumps, refused) = pstore::harvest_dir(&args.dir);
    let host = crate::daemon::settings::hostname();
    let incidents: Vec<_> = pstore::dedup(dumps)
        .iter()
        .map(|d| pstore::incident(d, &rules, &host))
        .collect();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&incidents)?)?;
    } else {
        for inc in &incidents {
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(inc.at_unix_ms),
            );
            writeln!(out, "{when}  {:<13} {}", inc.class, printable(&inc.summary))?;
            if let Some(pb) = &inc.previous_boot {
                for f in &pb.files {
                    writeln!(out, "    {}", printable(&f.display().to_string()))?;
                }
            }
        }
    }
    if !refused.is_empty() {
        for r in &refused {
            eprintln!(
                "refused {}: {}",
                printable(&r.path.display().to_string()),
                r.why
            );
        }
        bail!(
            "{} file(s) in {} are no crash dump",
            refused.len(),
            args.dir.display()
        );
    }
    Ok(())
}

fn load_rules(path: Option<&Path>) -> anyhow::Result<RuleSet> {
    Ok(match path {
        Some(p) => RuleSet::with_user_file(p)?,
        None => RuleSet::builtin(),
    })
}

fn read_input(file: Option<&Path>) -> anyhow::Result<String> {
    let bytes = match file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .context("reading standard input")?;
            v
        }
    };
    // Kernel logs may hold invalid UTF-8 (binary junk from a driver): keep the lines.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn classify(a: &KmsgArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let rules = load_rules(a.rules.as_deref())?;
    let text = read_input(a.file.as_deref())?;
    for line in text.lines() {
        let c = rules.classify(line);
        if a.unmatched {
            let level = prefix::strip(line).level;
            if !level.is_some_and(|l| c.is_unmatched_error(l)) {
                continue;
            }
        }
        if a.json {
            let v = serde_json::json!({
                "class": c.class,
                "rule": c.rule_id(),
                "severity": c.severity,
                "action": c.action,
                "line": line,
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "{:<13} {:<24} {}",
                c.class.as_str(),
                c.rule_id().unwrap_or("-"),
                printable(line)
            )?;
        }
    }
    Ok(())
}

fn incidents(a: &KmsgArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let rules = load_rules(a.rules.as_deref())?;
    let text = read_input(a.file.as_deref())?;
    let reports = assemble_log(&rules, &text);
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?;
    } else {
        write!(out, "{}", render::reports(&printable_all(&reports)))?;
    }
    Ok(())
}

/// The labelled lines of `paths` (files, or directories of `*.tsv`, sorted).
fn read_corpus(paths: &[PathBuf]) -> anyhow::Result<Vec<corpus::Labelled>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut tsv: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "tsv"))
                .collect();
            tsv.sort();
            files.extend(tsv);
        } else {
            files.push(p.clone());
        }
    }
    let mut all = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        all.extend(corpus::parse(&f.display().to_string(), &text).map_err(anyhow::Error::msg)?);
    }
    Ok(all)
}

fn corpus_test(
    rules: &RuleSet,
    a: &RulesTestArgs,
    out: &mut impl Write,
) -> anyhow::Result<Option<String>> {
    if a.corpus.is_empty() {
        return Ok(None);
    }
    let lines = read_corpus(&a.corpus)?;
    let score = corpus::score(rules, &lines);
    write!(out, "{score}")?;
    let shown: Vec<&corpus::Miss> = if a.misses {
        score.misses.iter().chain(&score.false_alarms).collect()
    } else {
        score.false_alarms.iter().collect()
    };
    for m in shown {
        writeln!(
            out,
            "{}: {} taken for {}{}: {}",
            m.want.at,
            m.want.class,
            m.got,
            m.rule
                .as_deref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default(),
            printable(&m.want.line)
        )?;
    }
    let recall = 100.0 * score.recall();
    let mut wrong = Vec::new();
    if !score.false_alarms.is_empty() {
        wrong.push(format!("{} benign lines alerted", score.false_alarms.len()));
    }
    if recall < a.min_recall {
        wrong.push(format!("recall {recall:.1}% is under {}%", a.min_recall));
    }
    Ok((!wrong.is_empty()).then(|| wrong.join("; ")))
}

fn rules_test(a: &RulesTestArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let rules = load_rules(a.rules.as_deref())?;
    if let Some(wrong) = corpus_test(&rules, a, out)? {
        bail!("corpus: {wrong}");
    }
    let examples = match &a.examples {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => None,
    };
    let failures = rules.test_bench(examples.as_ref().map(|(n, t)| (n.as_str(), t.as_str())));
    let n_examples: usize = rules.rules().iter().map(|r| r.examples.len()).sum();
    let from = match &a.rules {
        Some(p) => format!("{} and {BUILTIN_NAME}", p.display()),
        None => BUILTIN_NAME.to_owned(),
    };
    if failures.is_empty() {
        writeln!(
            out,
            "ok: {} rules, {n_examples} examples from {from}",
            rules.rules().len()
        )?;
        if let Some((name, text)) = &examples {
            let n = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
                .count();
            writeln!(out, "ok: all {n} lines of {name} are caught")?;
        }
        return Ok(());
    }
    for f in &failures {
        writeln!(out, "FAIL {}", f.0)?;
    }
    bail!("{} rule test failures", failures.len())
}
