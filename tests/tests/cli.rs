//! The real binaries' command-line errors: no root needed.
use std::process::Command;

use watchdog_tests::bin;

/// Run a binary with no input: (exit code, stderr).
fn run(name: &str, args: &[&str]) -> (i32, String) {
    let (code, _, err) = run_stdin(name, args, "");
    (code, err)
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

/// `watchdog --pid 1 ARGS --heartbeat ... --interface lo`: (exit code, stderr).
fn daemon_with(args: &[&str]) -> (i32, String) {
    let mut all = vec!["--pid", "1"];
    all.extend_from_slice(args);
    all.extend(["--heartbeat", "239.255.88.1:20001", "--interface", "lo"]);
    run("watchdog", &all)
}

#[test]
fn durations_have_a_range_and_the_interval_a_floor() {
    // 18446744074 s is just past u64 nanoseconds: it used to wrap to a tiny budget.
    let (code, err) = daemon_with(&["--budget", "18446744074s"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'18446744074s' for '--budget <DUR>': must be at most a year"),
        "{err}"
    );
    let (code, err) = daemon_with(&["--interval", "1ns"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'1ns' for '--interval <DUR>': must be at least 10ms"),
        "{err}"
    );
    // The same in the config file, with where.
    let dir = std::env::temp_dir().join(format!("wd-cli-interval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.toml");
    std::fs::write(&file, "[heartbeat]\ninterval = \"1ns\"\n").unwrap();
    let (code, err) = daemon_with(&["--config", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_ne!(code, 0);
    assert!(
        err.contains("w.toml:2:12: invalid interval '1ns': must be at least 10ms"),
        "{err}"
    );
}

#[test]
fn the_watchdog_refuses_to_monitor_itself() {
    // sh execs the daemon, so `$$` is the daemon's own pid.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} --pid $$ --heartbeat 239.255.88.1:20001 --interface lo --socket /tmp/wd-cli-self.sock",
            bin("watchdog").display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(": that is the watchdog itself, which cannot judge its own stalls"),
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

fn run_stdin(name: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    watchdog_tests::run_with_input(cmd, stdin)
}

const CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../watchdog/tests/corpus");

#[test]
fn the_builtin_rules_pass_their_test_bench() {
    let (code, out, err) = run_stdin("wdctl", &["rules", "test"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("ok: ") && out.contains("rules") && out.contains("<built-in rules>"),
        "{out}"
    );
}

#[test]
fn every_problem_line_of_the_corpus_is_caught() {
    // The corpus's problem lines (not the benign ones), as an --examples file.
    let corpus = std::fs::read_to_string(format!("{CORPUS_DIR}/lines.tsv")).unwrap();
    let lines: String = corpus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("none\t"))
        .filter_map(|l| l.splitn(3, '\t').nth(2))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = std::env::temp_dir().join(format!("wd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = dir.join("problems.txt");
    std::fs::write(&examples, &lines).unwrap();
    let (code, out, err) = run_stdin(
        "wdctl",
        &["rules", "test", "--examples", examples.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("ok: all {} lines of", lines.lines().count())),
        "{out}"
    );

    // A rules file whose rule shadows a built-in, and a line nothing catches.
    let rules = dir.join("greedy.toml");
    std::fs::write(&rules, "[[rule]]\nid = \"greedy\"\nclass = \"warning\"\nregex = 'BUG'\nexamples = [{ line = \"BUG x\", source = \"t\" }]\n").unwrap();
    std::fs::write(&examples, "all is well\n").unwrap();
    let (code, out, err) = run_stdin(
        "wdctl",
        &[
            "rules",
            "test",
            rules.to_str().unwrap(),
            "--examples",
            examples.to_str().unwrap(),
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(out.contains("FAIL <built-in rules>: rule x86-null-deref (bug): example is decided by rule greedy (warning)"), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL {}:1: not caught (no rule matches): all is well",
            examples.display()
        )),
        "{out}"
    );
    assert!(err.contains("rule test failures"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_malformed_rules_file_is_refused_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("wd-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("bad.toml");
    std::fs::write(&rules, "[[rule]]\nid = \"x\"\nclass = \"catastrophe\"\n").unwrap();
    let (code, _, err) = run_stdin(
        "wdctl",
        &["kmsg", "classify", "--rules", rules.to_str().unwrap()],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{}:3:9: unknown variant `catastrophe`",
            rules.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kmsg_classify_gives_one_json_object_per_line() {
    let input = "[  1.0] BUG: kernel NULL pointer dereference, address: 0000000000000008\n6,1,2,-;e1000e: eth0 NIC Link is Up\n";
    let (code, out, err) = run_stdin("wdctl", &["kmsg", "classify", "--json"], input);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["class"].as_str(), rows[0]["rule"].as_str()),
        (Some("bug"), Some("x86-null-deref"))
    );
    assert_eq!(
        rows[0]["line"],
        "[  1.0] BUG: kernel NULL pointer dereference, address: 0000000000000008"
    );
    assert_eq!(
        (
            rows[1]["class"].as_str(),
            rows[1]["rule"].as_str(),
            rows[1]["action"].as_str()
        ),
        (Some("none"), None, Some("none")),
        "a line that is no problem has no action"
    );
}

#[test]
fn kmsg_classify_unmatched_shows_the_err_lines_no_rule_knows() {
    let input = "3,1,100,-;mydriver: firmware fell over\n6,2,200,-;mydriver: link up\n\
                 2,3,300,-;BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
                 <3>otherdriver: lost its queue\nkern  :err   : [   1.000000] thirddriver: gone\n\
                 3,4,400,-;EXT4-fs error: 3 callbacks suppressed\nno level: anything\n";
    let (code, out, err) = run_stdin("wdctl", &["kmsg", "classify", "--unmatched"], input);
    assert_eq!(code, 0, "{err}");
    // Columns: class (13), rule (24), then the line as given.
    let shown: Vec<&str> = out.lines().map(|l| &l[13 + 1 + 24 + 1..]).collect();
    assert_eq!(
        shown,
        [
            "3,1,100,-;mydriver: firmware fell over",
            "<3>otherdriver: lost its queue",
            "kern  :err   : [   1.000000] thirddriver: gone"
        ],
        "{out}"
    );
}

#[test]
fn the_real_world_corpora_pass_the_rule_test_bench_with_the_recall_per_class() {
    let (code, out, err) = run_stdin(
        "wdctl",
        &[
            "rules",
            "test",
            "--corpus",
            &format!("{CORPUS_DIR}/real"),
            "--corpus",
            &format!("{CORPUS_DIR}/heldout"),
            "--corpus",
            &format!("{CORPUS_DIR}/lines.tsv"),
        ],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    for class in ["oops", "hard_lockup", "fs_io", "alloc_failure", "none"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(class) && l.ends_with('%')),
            "{out}"
        );
    }
    assert!(out.contains("benign lines alerted: 0"), "{out}");
    // A corpus the rules do badly on fails, and says why.
    let dir = std::env::temp_dir().join(format!("wd-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.tsv");
    std::fs::write(
        &bad,
        "panic\ttest\tnothing any rule knows\nnone\ttest\tKernel panic - not syncing: x\n",
    )
    .unwrap();
    let (code, out, err) = run_stdin(
        "wdctl",
        &["rules", "test", "--corpus", bad.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("1 benign lines alerted; recall 0.0% is under 98%"),
        "{err}"
    );
    assert!(
        out.contains("bad.tsv:2: none taken for panic by panic"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kmsg_incidents_from_a_file() {
    let file = format!("{CORPUS_DIR}/soft-lockup-4.19.log");
    let (code, out, err) = run_stdin("wdctl", &["kmsg", "incidents", &file, "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let i = &v.as_array().unwrap()[0];
    assert_eq!(i["class"], "soft_lockup");
    assert_eq!(
        (i["pid"].as_u64(), i["comm"].as_str(), i["cpu"].as_u64()),
        (Some(4242), Some("java"), Some(3))
    );
    assert_eq!(i["tainted"], "G W L");
    assert_eq!(
        i["first_line"],
        "watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [java:4242]"
    );
    assert_eq!(i["call_trace"][0], "_raw_spin_lock");
    let (code, out, _) = run_stdin("wdctl", &["kmsg", "incidents", &file], "");
    assert_eq!(code, 0);
    assert!(
        out.starts_with("#1 soft_lockup (soft-lockup) pid 4242 comm java cpu 3 tainted [G W L]"),
        "{out}"
    );
}

#[test]
fn a_malformed_config_file_is_refused_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("wd-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("watchdog.toml");
    std::fs::write(&config, "pids = [1]\n[heartbeat]\nintervall = \"1s\"\n").unwrap();
    let (code, err) = run("watchdog", &["--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{}:3:1: unknown field `intervall`, expected one of `group`, `interface`, `interval`, `ttl`, `node_id`", config.display())),
        "{err}"
    );
    std::fs::write(&config, "pids = [1]\n").unwrap();
    let (code, err) = run("watchdog", &["--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "no heartbeat group: give --heartbeat GROUP:PORT, or [heartbeat] group in {}",
            config.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn util_linux_wdctl_habits_get_a_pointer_to_it() {
    for args in [
        &[][..],
        &["/dev/watchdog0"][..],
        &["--flags", "KEEPALIVEPING"][..],
        &["-s", "30"][..],
    ] {
        let (code, err) = run("wdctl", args);
        assert_eq!(code, 2, "{args:?}");
        assert!(
            err.contains("For hardware watchdog devices (/dev/watchdog*), use util-linux's wdctl"),
            "{args:?}: {err}"
        );
    }
    // Our own calls are not mistaken for theirs.
    let (code, err) = run("wdctl", &["kmsg", "classify", "/dev/null"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn man_pages_and_completions_come_from_the_command_lines() {
    let dir = std::env::temp_dir().join(format!("wd-gen-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, err) = run("watchdog-gen-docs", &[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(dir.join("man8/watchdog.8")).unwrap();
    assert!(page.contains(".TH watchdog 8"), "{page}");
    assert!(
        page.contains("heartbeat\\-key"),
        "every flag is in the page"
    );
    let wdctl = std::fs::read_to_string(dir.join("man8/wdctl.8")).unwrap();
    assert!(wdctl.contains("resume"), "{wdctl}");
    for f in ["wdctl.bash", "_wdctl", "wdctl.fish", "watchdog.bash"] {
        let text = std::fs::read_to_string(dir.join("completions").join(f)).unwrap();
        assert!(
            text.contains("threads") || text.contains("heartbeat"),
            "{f}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kernel_text_with_terminal_escapes_is_shown_escaped() {
    // A line of kernel text can carry anything a module or a writer to /dev/kmsg put in
    // it: shown to a person, it must not clear the screen or retitle the terminal.
    let log = "[  1.000000] BUG: unable to handle page fault \u{1b}[2J\u{1b}]0;pwned\u{7}\n\
               [  1.000001] CPU: 0 PID: 42 Comm: evil\u{1b}[31m Not tainted 6.1.0 #1\n";
    for command in ["classify", "incidents"] {
        let (code, out, err) = run_stdin("wdctl", &["kmsg", command], log);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
        assert!(out.contains("\\u{1b}[2J"), "kmsg {command}: {out}");
    }
}
