//! Targets and reload, end to end as root: what is monitored (threads created later,
//! processes found by name or cgroup once they start), each target's own policy, and
//! configuration reloaded live on SIGHUP.
use std::{collections::BTreeSet, process::Command, thread, time::Duration};

use watchdog_tests::*;

/// The node's workload is monitored: listed, and its stall judged, as from its first
/// syscalls (it was started after the daemon).
fn assert_monitored_from_its_first_syscalls(node: &mut Node) {
    let (pids, status) = node.daemon.monitored_pids();
    assert!(pids.contains(&node.work.pid), "{status:#}");
    node.work.send("stall-vfork 1000");
    let tid = field(&node.work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(500));
    let row = thread_row(&node.daemon.wdctl_json("threads"), tid);
    assert_eq!(
        (row["syscall"].as_str(), row["verdict"].as_str()),
        (Some("vfork"), Some("stalled")),
        "{row:#}"
    );
}

#[test]
fn threads_created_after_start_are_monitored() {
    let mut node = Node::start("300ms", "50ms");
    node.work.send("idle");
    let mut tids = BTreeSet::new();
    for _ in 0..6 {
        tids.insert(field(
            &node.work.expect("IDLE", Duration::from_secs(2)),
            "tid",
        ));
    }
    thread::sleep(Duration::from_millis(200));
    let rows = node.daemon.wdctl_json("threads");
    let listed: BTreeSet<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tid"].as_u64().unwrap())
        .collect();
    assert!(
        tids.is_subset(&listed),
        "new threads {tids:?} not all in {listed:?}"
    );
    assert!(
        listed.contains(&(node.work.pid as u64)),
        "main thread missing"
    );
    node.stop_cleanly();
}

#[test]
fn a_comm_target_given_before_the_process_starts_is_monitored_when_it_does() {
    // No service yet, so no heartbeat: start() returns at the first beat, once it runs.
    let mut node = Node::build("300ms", "20ms")
        .workload_after_daemon(Workload::spawn)
        .opts(|o| o.targets = Some(vec!["--comm".into(), "wd-workload".into()]))
        .start();
    assert!(
        node.rec.beats()[0].0 > node.work.spawned_at,
        "heartbeat sent before the service was running"
    );
    assert_monitored_from_its_first_syscalls(&mut node);

    // The service dies; the heartbeat is stopped; a new one starts and is monitored again,
    // and resuming is allowed once it is healthy.
    node.work.kill();
    thread::sleep(Duration::from_millis(300));
    node.work = Workload::spawn();
    thread::sleep(Duration::from_millis(300));
    let (pids, status) = node.daemon.monitored_pids();
    assert!(pids.contains(&node.work.pid), "{status:#}");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let (code, out, err) = node.daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "heartbeat resumed");
    node.stop_cleanly();
}

#[test]
fn a_cgroup_target_monitors_processes_that_start_in_it() {
    let cg = Cgroup2::new(&format!("wd-test-cg-{}", std::process::id()));
    let dir = cg.dir.clone();
    let mut node = Node::build("300ms", "20ms")
        .workload_after_daemon(move || Workload::spawn_in_cgroup(&dir))
        .opts(|o| o.targets = Some(vec!["--cgroup".into(), cg.dir.display().to_string()]))
        .start();
    assert!(
        node.rec.beats()[0].0 > node.work.spawned_at,
        "heartbeat sent before the service was running"
    );
    assert_monitored_from_its_first_syscalls(&mut node);
    node.stop_cleanly();
}

#[test]
fn sighup_reloads_the_budget_live_and_a_bad_config_changes_nothing() {
    let dir = TempDir::new("config");
    let config = dir.0.join("watchdog.toml");
    let write = |pid: u32, budget: &str| {
        std::fs::write(&config, format!("pids = [{pid}]\nbudget = {budget}\n")).unwrap()
    };
    let mut node = Node::build("unused", "20ms")
        .opts(|o| {
            write(o.pid, "\"5s\"");
            o.config = Some(config.clone());
        })
        .start();
    let pid = node.work.pid;
    assert_eq!(node.daemon.wdctl_json("status")["budget_ms"], 5000);
    let start = monotonic_ns();

    // A config that fails to load leaves the running one in place, and says why.
    write(pid, "\"soon\"");
    node.daemon.signal(libc::SIGHUP);
    let line = node
        .daemon
        .wait_log_line(Duration::from_secs(3), |l| l.contains("reload failed"));
    assert!(
        line.contains(&format!(
            "{}:2:10: invalid duration 'soon'",
            config.display()
        )),
        "{line}"
    );
    assert_eq!(node.daemon.wdctl_json("status")["budget_ms"], 5000);

    write(pid, "\"300ms\"");
    node.daemon.signal(libc::SIGHUP);
    node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("configuration reloaded")
    });
    assert_eq!(node.daemon.wdctl_json("status")["budget_ms"], 300);
    // The heartbeat went on through both reloads.
    assert_no_missed_beats(
        &node.rec,
        start,
        monotonic_ns(),
        Duration::from_millis(20 + 150),
    );

    // And the new budget judges: a 1.5 s stall is a verdict now (it was not at 5 s).
    node.work.send("stall-vfork 1500");
    let tid = field(&node.work.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(600));
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["stalls"][0]["tid"].as_u64(), Some(tid), "{status:#}");
    assert_eq!(status["stalls"][0]["budget_ms"], 300);
    node.stop_cleanly();
}

#[test]
fn a_reload_that_would_hurt_the_daemon_is_refused_and_it_lives_on() {
    let dir = TempDir::new("hostile-reload");
    let config = dir.0.join("watchdog.toml");
    let rules = dir.0.join("rules.toml");
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| {
            std::fs::write(&config, format!("pids = [{}]\n", o.pid)).unwrap();
            o.config = Some(config.clone());
        })
        .start();
    let pid = node.work.pid;
    let start = monotonic_ns();

    // Rules that compile one by one but not together.
    let text: String = (0..64)
        .map(|i| {
            format!(
                "[[rule]]\nid = \"r{i}\"\nclass = \"bug\"\nregex = '(?:(?:[a-c]{{20}}){{20}}){{20}}x{i}'\nexamples = [{{ line = \"x\", source = \"t\" }}]\n"
            )
        })
        .collect();
    std::fs::write(&rules, text).unwrap();
    std::fs::write(
        &config,
        format!("pids = [{pid}]\nrules = \"{}\"\n", rules.display()),
    )
    .unwrap();
    node.daemon.signal(libc::SIGHUP);
    let line = node.daemon.wait_log_line(Duration::from_secs(10), |l| {
        l.contains("reload failed") && l.contains("too large")
    });
    assert!(
        line.contains("rules.toml: the rules compiled together are too large"),
        "{line}"
    );

    // A config path that is a FIFO with no writer: refused, the signal loop not wedged.
    std::fs::remove_file(&config).unwrap();
    let c = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    node.daemon.signal(libc::SIGHUP);
    let line = node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("reload failed") && l.contains("not a regular file")
    });
    assert!(line.contains("watchdog.toml: not a regular file"), "{line}");

    // Still judging, still beating, and SIGTERM is heard at once.
    node.assert_beating_since(start);
    let stopping = std::time::Instant::now();
    node.stop_cleanly();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
}

#[test]
fn each_target_has_its_own_policy_and_targets_reload_live() {
    let mut patient = Workload::spawn();
    let dir = TempDir::new("targets");
    let config = dir.0.join("watchdog.toml");
    // The node's workload is the strict target; the config names both.
    let mut node = Node::build("unused", "20ms")
        .opts(|o| {
            std::fs::write(
                &config,
                format!(
                    "pids = [{}]\nbudget = \"300ms\"\n\n[[target]]\npid = {}\nbudget = \"5s\"\n",
                    o.pid, patient.pid
                ),
            )
            .unwrap();
            o.config = Some(config.clone());
        })
        .start();
    let strict = &mut node.work;
    let start = monotonic_ns();

    // Each thread is shown with its own target's budget, and judged by it: a 1 s
    // stall is nothing for the target with 5 s.
    patient.send("stall-vfork 1000");
    let tid = field(&patient.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(500));
    let rows = node.daemon.wdctl_json("threads");
    let row = thread_row(&rows, tid);
    assert_eq!(
        (
            row["syscall"].as_str(),
            row["budget_ms"].as_u64(),
            row["verdict"].as_str()
        ),
        (Some("vfork"), Some(5000), Some("ok")),
        "{row:#}"
    );
    let strict_row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"].as_u64() == Some(strict.pid as u64))
        .expect("the strict target's threads are listed");
    assert_eq!(strict_row["budget_ms"], 300, "{strict_row:#}");
    patient.expect("UNSTALLED", Duration::from_secs(2));
    let status = node.daemon.wdctl_json("status");
    assert_eq!(
        (
            status["heartbeat"].as_str(),
            status["stalls"].as_array().map(Vec::len)
        ),
        (Some("sending"), Some(0)),
        "{status:#}"
    );

    // Reload with other targets: the strict process is let go (no verdict), the patient
    // one now follows the node-wide 300 ms, and the heartbeat goes on throughout.
    std::fs::write(
        &config,
        format!("pids = [{}]\nbudget = \"300ms\"\n", patient.pid),
    )
    .unwrap();
    node.daemon.signal(libc::SIGHUP);
    node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("configuration reloaded")
    });
    let status = node.daemon.wdctl_json("status");
    assert_eq!(
        status["monitored_pids"],
        serde_json::json!([patient.pid]),
        "{status:#}"
    );
    strict.send("stall-vfork 1000");
    strict.expect("STALL", Duration::from_secs(2));
    thread::sleep(Duration::from_millis(700));
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert_no_missed_beats(
        &node.rec,
        start,
        monotonic_ns(),
        Duration::from_millis(20 + 150),
    );

    patient.send("stall-vfork 1000");
    let tid = field(&patient.expect("STALL", Duration::from_secs(2)), "tid");
    thread::sleep(Duration::from_millis(600));
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    assert_eq!(
        (
            status["stalls"][0]["tid"].as_u64(),
            status["stalls"][0]["budget_ms"].as_u64()
        ),
        (Some(tid), Some(300)),
        "{status:#}"
    );
    node.stop_cleanly();
}

#[test]
fn a_daemon_in_a_pid_namespace_of_its_own_judges_that_namespaces_service() {
    require_root();
    // A container without the host's pids: the daemon is its pid 1 and the service its
    // pid 2, while the kernel side sees the host's ids for both. The daemon must take
    // `--pid 2` as the container's 2, and name the stuck thread by the container's tid.
    let dir = TempDir::new("pidns");
    let socket = dir.0.join("wd.sock");
    let script = format!(
        // (An asynchronous list's stdin is /dev/null: the pipe goes through fd 3.)
        "exec 3<&0; {work} <&3 & exec {daemon} --pid $! --budget 500ms --interval 50ms \
         --heartbeat 239.255.88.2:20002 --interface lo --ttl 1 --socket {socket} \
         --store {store} < /dev/null 3<&-",
        work = bin("wd-workload").display(),
        daemon = bin("watchdog").display(),
        socket = socket.display(),
        store = dir.0.join("incidents.db").display(),
    );
    let mut child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
        ])
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let mut commands = child.stdin.take().unwrap();
    let mut said = std::io::BufReader::new(child.stdout.take().unwrap());
    let wdctl = |args: &[&str]| {
        let out = Command::new(bin("wdctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .arg("--json")
            .output()
            .expect("run wdctl");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    };
    let mut status = None;
    for _ in 0..100 {
        status = wdctl(&["status"]);
        if status.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let status = status.expect("the daemon in the pid namespace answers");
    assert_eq!(
        status["monitored_pids"],
        serde_json::json!([2]),
        "{status:#}"
    );
    assert_eq!(status["heartbeat"], "sending", "{status:#}");

    use std::io::{BufRead as _, Write as _};
    writeln!(commands, "stall-vfork 3000").unwrap();
    let mut line = String::new();
    while !line.starts_with("STALL") {
        line.clear();
        assert_ne!(said.read_line(&mut line).unwrap(), 0, "the workload ended");
    }
    let tid = field(line.trim(), "tid");
    thread::sleep(Duration::from_millis(1000));
    let status = wdctl(&["status"]).expect("status");
    assert_eq!(status["heartbeat"], "stopped", "{status:#}");
    let reason = status["stopped_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with(&format!("thread {tid} (stuck) of pid 2: vfork")),
        "{status:#}"
    );
    let threads = wdctl(&["threads"]).expect("threads");
    let row = thread_row(&threads, tid);
    assert_eq!(row["verdict"], "stalled", "{row:#}");
    // SIGTERM to the daemon (unshare's child, pid 1 there; unshare itself ignores
    // SIGTERM) ends the namespace, the workload with it.
    let daemon: i32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    let exit = child.wait().unwrap();
    assert!(exit.success(), "the daemon's exit: {exit}");
}

#[test]
fn thousands_of_short_lived_children_leave_no_dead_pid_monitored() {
    // A service found by name follows what it forks; children that end before the
    // daemon hears of them must not stay monitored (a later process given the pid
    // would be judged as the service's).
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.targets = Some(vec!["--comm".into(), "wd-workload".into()]))
        .start();
    node.work.send("forks 3000");
    node.work.expect("FORKS", Duration::from_secs(60));
    // The sweep finds a gone child within two of its one-second rounds.
    thread::sleep(Duration::from_millis(2500));
    let (pids, status) = node.daemon.monitored_pids();
    assert_eq!(pids, [node.work.pid], "{status:#}");
    assert_eq!(
        status["heartbeat"], "sending",
        "a child's end is no verdict: {status:#}"
    );
    node.stop_cleanly();
}

#[test]
fn another_users_program_of_the_watched_name_is_not_the_service() {
    let dir = TempDir::new("identity");
    let config = dir.0.join("watchdog.toml");
    std::fs::write(
        &config,
        "[[target]]\ncomm = \"wd-workload\"\nuser = \"root\"\n",
    )
    .unwrap();
    let mut node = Node::build("300ms", "20ms")
        .opts(|o| o.config = Some(config.clone()))
        .start();
    let service = node.work.pid;
    // Any local user can run a program of that name: here uid 65534 runs ours.
    let mut impostor = Workload::spawn_as_user(65534);
    let impostor_pid = impostor.pid;
    node.daemon.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("not the service") && l.contains(&format!("pid={impostor_pid}"))
    });
    let (pids, status) = node.daemon.monitored_pids();
    assert_eq!(pids, [service], "{status:#}");
    // Its death is no verdict; its stall neither.
    impostor.kill();
    thread::sleep(Duration::from_millis(2500));
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["heartbeat"], "sending", "{status:#}");
    assert!(
        status["stalls"].as_array().unwrap().is_empty(),
        "{status:#}"
    );
    node.stop_cleanly();
}
