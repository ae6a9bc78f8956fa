//! Real Prometheus and Alertmanager servers for the fleet tests (Debian's `prometheus`
//! and `prometheus-alertmanager`, provisioned by `cargo xtask provision`), each on a
//! free 127.0.0.1 port with its data in a scratch directory, killed when dropped.
//! Alertmanager runs without clustering (no gossip port), Prometheus scrapes and
//! evaluates every second.
use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{TempDir, wait_until};

/// A port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET http://127.0.0.1:PORT/PATH` as JSON, or None if the server does not answer.
pub fn get_json(port: u16, path: &str) -> Option<Value> {
    let body = get_text(port, path)?;
    serde_json::from_str(&body).ok()
}

/// `GET http://127.0.0.1:PORT/PATH` as text, or None if the server does not answer.
pub fn get_text(port: u16, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

/// A server process; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &str, args: &[String], port: u16, dir: TempDir) -> Server {
    let log = std::fs::File::create(dir.0.join("server.log")).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (installed by `cargo xtask provision`, as root)")
        });
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    wait_until(Duration::from_secs(20), &format!("{program} ready"), || {
        get_text(port, "/-/ready").map(|_| ())
    });
    server
}

/// The shipped files (packaging/prometheus), which the tests run.
pub fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

/// Start an Alertmanager on `port`.
pub fn alertmanager(port: u16) -> Server {
    let dir = TempDir::new("alertmanager");
    let config = packaging().join("alertmanager.yml");
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.0.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        // No cluster: nothing gossips, nothing listens beyond the API port.
        "--cluster.listen-address=".to_owned(),
    ];
    spawn("prometheus-alertmanager", &args, port, dir)
}

/// Start a Prometheus on a free port with the shipped prometheus.yml, its three target
/// lists (Alertmanagers, nodes as job "watchdog", monitors as job "watchdog-fleet") set
/// to `alertmanager`, `nodes` and `monitors` on 127.0.0.1, scraping and evaluating every
/// second, and the shipped rules.
pub fn prometheus(nodes: &[u16], monitors: &[u16], alertmanager: u16) -> Server {
    let port = free_port();
    let dir = TempDir::new("prometheus");
    let shipped = std::fs::read_to_string(packaging().join("prometheus.yml")).unwrap();
    let mut lists = [vec![alertmanager], nodes.to_vec(), monitors.to_vec()].into_iter();
    let config: String = shipped
        .lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            if l.trim_start().starts_with("- targets:") {
                let ports = lists.next().expect("three target lists in prometheus.yml");
                let targets: Vec<String> =
                    ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
                format!("{indent}- targets: [{}]\n", targets.join(", "))
            } else if l.trim_start().starts_with("scrape_interval:") {
                format!("{indent}scrape_interval: 1s\n")
            } else if l.trim_start().starts_with("evaluation_interval:") {
                format!("{indent}evaluation_interval: 1s\n")
            } else if l.trim() == "- watchdog.rules.yml" {
                format!(
                    "{indent}- {}\n",
                    packaging().join("watchdog.rules.yml").display()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(
        lists.next().is_none(),
        "prometheus.yml has three target lists"
    );
    let path = dir.0.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let args = vec![
        format!("--config.file={}", path.display()),
        format!("--storage.tsdb.path={}", dir.0.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    spawn("prometheus", &args, port, dir)
}

/// An instant query's result vector from Prometheus on `port`.
pub fn query(port: u16, expr: &str) -> Vec<Value> {
    let enc: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    get_json(port, &format!("/api/v1/query?query={enc}"))
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// Prometheus' alerts (`/api/v1/alerts`) that are firing.
pub fn firing(port: u16) -> Vec<Value> {
    get_json(port, "/api/v1/alerts")
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["state"] == "firing")
        .collect()
}

/// The alerts an Alertmanager holds now (`/api/v2/alerts`: active ones, resolved ones
/// left out).
pub fn alertmanager_alerts(port: u16) -> Vec<Value> {
    get_json(port, "/api/v2/alerts")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}
