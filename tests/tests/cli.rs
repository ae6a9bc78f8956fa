//! The real binaries' command-line errors: no root needed.
use std::process::Command;

use watchdog_tests::bin;

fn run(name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_pid_is_refused_by_name() {
    let (code, err) = run(
        "watchdog",
        &[
            "--pid",
            "99999999",
            "--heartbeat",
            "239.255.88.1:20001",
            "--interface",
            "lo",
            "--socket",
            "/tmp/wd-cli-test.sock",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--pid 99999999: no such process"), "{err}");
}

#[test]
fn an_unknown_interface_is_refused_by_name() {
    let me = std::process::id().to_string();
    let (code, err) = run(
        "watchdog",
        &[
            "--pid",
            &me,
            "--heartbeat",
            "239.255.88.1:20001",
            "--interface",
            "nosuchif0",
            "--socket",
            "/tmp/wd-cli-test.sock",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--interface nosuchif0: no such network interface"),
        "{err}"
    );
}

#[test]
fn a_malformed_duration_is_refused_by_name() {
    let (code, err) = run(
        "watchdog",
        &[
            "--pid",
            "1",
            "--budget",
            "fast",
            "--heartbeat",
            "239.255.88.1:20001",
            "--interface",
            "lo",
        ],
    );
    assert_eq!(code, 2, "clap's usage error code");
    assert!(
        err.contains("--budget <DUR>") && err.contains("'fast'"),
        "{err}"
    );
}

#[test]
fn wdctl_without_a_daemon_says_where_it_looked() {
    let (code, err) = run("wdctl", &["--socket", "/nonexistent/wd.sock", "threads"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot connect to the watchdog daemon at /nonexistent/wd.sock"),
        "{err}"
    );
}
