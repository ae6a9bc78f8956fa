//! Evidence that survives, end to end as root: the incident outbox across a SIGKILL.
use std::{os::unix::fs::PermissionsExt as _, thread, time::Duration};

use watchdog_tests::{prometheus::wait_for as wait_until, *};

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
    assert_eq!(hook_lines(&log), [want.clone()], "exactly once");
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
