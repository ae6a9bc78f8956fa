//! Evidence that survives, end to end as root: the incident outbox across a SIGKILL.
use std::{os::unix::fs::PermissionsExt as _, thread, time::Duration};

use watchdog_tests::*;

/// A hook that appends `ID KEY` to `log`.
fn recording_hook(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = dir.0.join("hook.log");
    let hook = dir.0.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$WATCHDOG_INCIDENT_ID $WATCHDOG_INCIDENT_KEY\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    (hook, log)
}

fn hook_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_incident_stored_but_undelivered_at_a_sigkill_is_delivered_once_after_the_restart() {
    let dir = TempDir::new("outbox");
    let store = dir.0.join("incidents.db");
    let (hook, log) = recording_hook(&dir);
    let (s, h) = (store.clone(), hook.clone());
    // The test hook holds each stored incident 10 s before its delivery: the window
    // the SIGKILL falls in.
    let mut node = Node::build("500ms", "50ms")
        .opts(move |o| {
            o.store = Some(s);
            o.hook = Some(h);
            o.env = vec![("WATCHDOG_TEST_HOLD_DELIVERY_MS", "10000".into())];
        })
        .start();
    node.work.send("stall-vfork 1000");
    node.work.expect("STALL", Duration::from_secs(2));
    let id = wait_until(Duration::from_secs(5), "the incident stored", || {
        let list = node.daemon.wdctl_json_args(&["incidents"]);
        list.as_array()?.first()?["id"].as_i64()
    });
    let status = node.daemon.wdctl_json("status");
    assert_eq!(
        status["outbox"],
        serde_json::json!([{"destination": "exec-hook", "pending": 1, "failed": 0}]),
        "{status:#}"
    );
    assert!(hook_lines(&log).is_empty(), "delivered before the kill");

    // SIGKILL between store and delivery, then a restart without the hold.
    let (s, h) = (store.clone(), hook.clone());
    node.restart_silent(move |o| {
        o.store = Some(s);
        o.hook = Some(h);
    });
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let want = format!("{id} test-node/{}/{id}", boot_id.trim());
    wait_until(
        Duration::from_secs(5),
        "the hook run after the restart",
        || (!hook_lines(&log).is_empty()).then_some(()),
    );
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        hook_lines(&log),
        std::slice::from_ref(&want),
        "exactly once"
    );
    let status = node.daemon.wdctl_json("status");
    assert_eq!(status["outbox"][0]["pending"], 0, "{status:#}");

    // Delivered is delivered: another restart runs nothing again.
    let (s, h) = (store.clone(), hook.clone());
    node.restart_silent(move |o| {
        o.store = Some(s);
        o.hook = Some(h);
    });
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(hook_lines(&log), [want], "once, across restarts");
    let status = node.daemon.stop();
    assert!(status.success());
}

/// The fixtures (real formats, see watchdog/tests/fixtures/pstore/FORMATS.md).
fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../watchdog/tests/fixtures/pstore")
}

/// A pstore mount as the kernel would show one after a bad night: a ramoops panic and
/// its console log, a compressed ramoops record, an EFI dump in three parts, an ERST
/// record, and three files that are no dump.
fn fill_pstore(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for sub in [
        "sysfs-ramoops",
        "sysfs-compressed",
        "sysfs-efi-multipart",
        "sysfs-erst",
        "garbage",
    ] {
        for e in std::fs::read_dir(fixtures().join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
}

fn previous_boot_incidents(node: &Node) -> Vec<serde_json::Value> {
    node.daemon
        .wdctl_json_args(&["incidents", "--limit", "100"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("previous boot ("))
        })
        .cloned()
        .collect()
}

#[test]
fn the_previous_boots_crashes_become_incidents_once_and_their_records_are_freed() {
    let dir = TempDir::new("pstore");
    let (pstore, archive) = (dir.0.join("pstore"), dir.0.join("archive"));
    fill_pstore(&pstore);
    // systemd-pstore's archive of the same EFI crash: the same dump, not a second one.
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status();
        assert!(status.unwrap().success());
    };
    copy(&fixtures().join("systemd-archive"), &archive);
    let store = dir.0.join("incidents.db");
    let (hook, log) = recording_hook(&dir);
    let opts = {
        let (store, hook, pstore, archive) =
            (store.clone(), hook.clone(), pstore.clone(), archive.clone());
        move |o: &mut DaemonOpts| {
            o.store = Some(store);
            o.hook = Some(hook);
            o.extra = vec![
                "--pstore".into(),
                pstore.display().to_string(),
                "--pstore".into(),
                archive.display().to_string(),
                "--pstore-unlink".into(),
            ];
        }
    };
    let mut node = Node::build("2s", "50ms").opts(opts.clone()).start();
    let found = previous_boot_incidents(&node);
    let mut summaries: Vec<&str> = found
        .iter()
        .map(|i| i["summary"].as_str().unwrap())
        .collect();
    summaries.sort();
    assert_eq!(summaries.len(), 4, "{summaries:#?}");
    for (backend, class) in [
        ("efi", "soft_lockup"),
        ("erst", "hung_task"),
        ("ramoops", "bug"),
    ] {
        assert!(
            found.iter().any(|i| i["summary"]
                .as_str()
                .unwrap()
                .starts_with(&format!("previous boot ({backend}, "))
                && i["class"] == class),
            "no {backend} {class} in {summaries:#?}"
        );
    }
    // Garbage refused, by name and reason, and no incident of it.
    let log_text = node.daemon.log_text();
    for name in ["dmesg-ramoops-2", "dmesg-efi-123", "dmesg-ramoops-3.enc.z"] {
        assert!(
            log_text
                .lines()
                .any(|l| l.contains("not a crash dump") && l.contains(name)),
            "{name} not refused:\n{log_text}"
        );
    }
    // The alert path carries them: the hook ran once for each.
    wait_until(Duration::from_secs(5), "the hook for each", || {
        (hook_lines(&log).len() == 4).then_some(())
    });
    // And the outbox has recorded each as delivered (a kill before that would have the
    // next start deliver it again: the key lets a receiver tell).
    wait_until(Duration::from_secs(5), "the deliveries recorded", || {
        let status = node.daemon.wdctl_json("status");
        (status["outbox"][0]["pending"] == 0).then_some(())
    });
    // Freed: the harvested records are gone from pstore; what is no dump stays, and
    // systemd's archive is not touched.
    let mut left: Vec<String> = std::fs::read_dir(&pstore)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "console-ramoops-0",
            "dmesg-efi-123",
            "dmesg-ramoops-2",
            "dmesg-ramoops-3.enc.z"
        ]
    );
    assert!(archive.join("1718967154/001/dmesg.txt").exists());

    // A restart that finds the same records again (not freed, this time): nothing new.
    fill_pstore(&pstore);
    node.restart_silent(opts);
    thread::sleep(Duration::from_millis(1500));
    let again = previous_boot_incidents(&node);
    assert_eq!(again.len(), 4, "{again:#?}\n{}", node.daemon.log_text());
    assert_eq!(hook_lines(&log).len(), 4);
    let status = node.daemon.stop();
    assert!(status.success());
}

#[test]
fn a_stop_is_written_to_pmsg_and_the_next_boots_harvest_shows_why() {
    let dir = TempDir::new("pmsg");
    let pstore = dir.0.join("pstore");
    std::fs::create_dir_all(&pstore).unwrap();
    // The pmsg device as ramoops shows its record after the reset.
    let device = pstore.join("pmsg-ramoops-0");
    std::fs::write(&device, "").unwrap();
    let store = dir.0.join("incidents.db");
    let opts = {
        let (store, pstore) = (store.clone(), pstore.clone());
        move |o: &mut DaemonOpts| {
            o.store = Some(store);
            o.extra = vec!["--pstore".into(), pstore.display().to_string()];
        }
    };
    let (o, d) = (opts.clone(), device.clone());
    let mut node = Node::build("500ms", "50ms")
        .opts(move |opts| {
            o(opts);
            opts.env = vec![("WATCHDOG_TEST_PMSG", d.display().to_string())];
        })
        .start();
    node.work.send("stall-vfork 1000");
    node.work.expect("STALL", Duration::from_secs(2));
    let line = wait_until(Duration::from_secs(5), "the stop's reason in pmsg", || {
        std::fs::read_to_string(&device)
            .ok()
            .filter(|t| !t.is_empty())
    });
    assert!(
        line.starts_with("watchdog: heartbeat stopped: thread ") && line.contains("vfork"),
        "{line:?}"
    );
    // "The next boot": a daemon that finds the record.
    node.restart_silent(opts);
    let found = wait_until(Duration::from_secs(5), "the harvested stop", || {
        previous_boot_incidents(&node).into_iter().next()
    });
    assert_eq!(found["class"], "heartbeat-stopped", "{found:#}");
    assert!(
        found["summary"].as_str().unwrap().starts_with(
            "previous boot (ramoops pmsg): the watchdog stopped the heartbeat: thread "
        ),
        "{found:#}"
    );
    let status = node.daemon.stop();
    assert!(status.success());
}

#[test]
fn an_alert_no_alertmanager_took_before_a_sigkill_is_pushed_by_the_restarted_daemon() {
    let dir = TempDir::new("outbox-am");
    let store = dir.0.join("incidents.db");
    let am_port = watchdog_tests::prometheus::free_port();
    let opts = {
        let store = store.clone();
        move |o: &mut DaemonOpts| {
            o.store = Some(store);
            o.extra = vec![
                "--alertmanager".into(),
                format!("http://127.0.0.1:{am_port}"),
                "--alertmanager-resend".into(),
                "1s".into(),
            ];
        }
    };
    let mut node = Node::build("2s", "50ms").opts(opts.clone()).start();
    // An incident while no Alertmanager answers: pending, its push failing.
    node.work.send(
        "kmsg watchdog-test: page allocation failure: order:0, mode:0x40cc0(GFP_KERNEL|__GFP_COMP), nodemask=(null),cpuset=/,mems_allowed=0",
    );
    node.work.expect("KMSG", Duration::from_secs(2));
    let id = wait_until(Duration::from_secs(5), "the incident stored", || {
        let list = node.daemon.wdctl_json_args(&["incidents"]);
        list.as_array()?.first()?["id"].as_i64()
    });
    let status = node.daemon.wdctl_json("status");
    assert_eq!(
        status["outbox"][0]["destination"], "alertmanager",
        "{status:#}"
    );
    assert_eq!(status["outbox"][0]["pending"], 1, "{status:#}");

    // SIGKILL; the Alertmanager comes up; the restarted daemon pushes what is pending.
    node.restart_silent(opts);
    let am = watchdog_tests::prometheus::alertmanager(am_port);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let key = format!("test-node/{}/{id}", boot_id.trim());
    let alert = wait_until(Duration::from_secs(10), "the alert from the outbox", || {
        watchdog_tests::prometheus::alertmanager_alerts(am.port)
            .into_iter()
            .find(|a| a["labels"]["incident"] == key.as_str())
    });
    assert_eq!(alert["labels"]["class"], "alloc_failure", "{alert:#}");
    wait_until(Duration::from_secs(5), "the push recorded", || {
        let status = node.daemon.wdctl_json("status");
        (status["outbox"][0]["pending"] == 0).then_some(())
    });
    let status = node.daemon.stop();
    assert!(status.success());
}
