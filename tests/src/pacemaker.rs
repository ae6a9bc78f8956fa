//! A real single-node Pacemaker for the failover tests: corosync on 127.0.0.1 (one node,
//! no other address), Pacemaker with node health `migrate-on-red`, and an
//! `ocf:pacemaker:Dummy` resource. Started without systemd, as
//! ../shared/research/ha-managers-here.md found works here; the CIB is seeded offline,
//! so the cluster comes up in seconds, already configured.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{TempDir, must_succeed, run_for_output};

/// The resource the tests watch move.
pub const RESOURCE: &str = "wd-dummy";
/// Where the Dummy agent keeps its state while it runs.
const DUMMY_STATE: &str = "/run/Dummy-wd-dummy.state";
const CIB_DIR: &str = "/var/lib/pacemaker/cib";

const COROSYNC_CONF: &str = "totem {
    version: 2
    cluster_name: wdtest
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        name: node1
        nodeid: 1
        ring0_addr: 127.0.0.1
    }
}
quorum {
    provider: corosync_votequorum
    expected_votes: 1
    two_node: 0
}
logging {
    to_stderr: yes
    to_syslog: no
    timestamp: on
}
";

pub struct Pacemaker {
    dir: TempDir,
    corosync: Child,
    pacemakerd: Child,
}

fn pacemaker_command(program: &str, args: &[&str], envs: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).envs(envs.iter().copied());
    cmd
}

/// Whether `program ARGS` succeeds, and what it printed.
fn run(program: &str, args: &[&str], envs: &[(&str, &Path)]) -> (bool, String) {
    let (code, out, err) = run_for_output(pacemaker_command(program, args, envs));
    (code == 0, out + &err)
}

fn must(program: &str, args: &[&str], envs: &[(&str, &Path)]) {
    must_succeed(pacemaker_command(program, args, envs));
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

impl Pacemaker {
    /// Seed the CIB (stonith off, node health migrate-on-red, a short dc-deadtime, the
    /// Dummy resource), start corosync and Pacemaker, and wait until the resource runs.
    pub fn start() -> Pacemaker {
        crate::require_root();
        let dir = TempDir::new("pacemaker");
        let conf = dir.0.join("corosync.conf");
        std::fs::write(&conf, COROSYNC_CONF).unwrap();
        must("corosync", &["-t", "-c", conf.to_str().unwrap()], &[]);
        let cib = dir.0.join("cib.xml");
        let out = Command::new("cibadmin")
            .arg("--empty")
            .output()
            .expect("cibadmin");
        std::fs::write(&cib, out.stdout).unwrap();
        let offline = [("CIB_file", cib.as_path())];
        for (name, value) in [
            ("stonith-enabled", "false"),
            ("node-health-strategy", "migrate-on-red"),
            ("dc-deadtime", "2s"),
        ] {
            must(
                "crm_attribute",
                &["--type", "crm_config", "--name", name, "--update", value],
                &offline,
            );
        }
        must(
            "cibadmin",
            &[
                "--create",
                "-o",
                "resources",
                "--xml-text",
                "<primitive id=\"wd-dummy\" class=\"ocf\" provider=\"pacemaker\" type=\"Dummy\">\
                 <operations><op id=\"wd-dummy-monitor-10s\" name=\"monitor\" interval=\"10s\"/></operations></primitive>",
            ],
            &offline,
        );
        // The cluster's CIB starts as this one (a left-over of an earlier run is gone).
        for entry in std::fs::read_dir(CIB_DIR).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        must(
            "install",
            &[
                "-o",
                "hacluster",
                "-g",
                "haclient",
                "-m",
                "600",
                cib.to_str().unwrap(),
                &format!("{CIB_DIR}/cib.xml"),
            ],
            &[],
        );
        let log = |name: &str| std::fs::File::create(dir.0.join(name)).unwrap();
        let corosync = Command::new("corosync")
            .args(["-f", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log("corosync.log"))
            .stderr(log("corosync.err"))
            .spawn()
            .expect("corosync");
        wait("corosync quorate", Duration::from_secs(15), || {
            run("corosync-quorumtool", &["-s"], &[]).0
        });
        let pacemakerd = Command::new("/usr/sbin/pacemakerd")
            .env("PCMK_logfile", dir.0.join("pacemaker.log"))
            .env("PCMK_logfacility", "none")
            .stdin(Stdio::null())
            .stdout(log("pacemakerd.out"))
            .stderr(log("pacemakerd.err"))
            .spawn()
            .expect("pacemakerd");
        let pcmk = Pacemaker {
            dir,
            corosync,
            pacemakerd,
        };
        pcmk.wait_resource(true, Duration::from_secs(60));
        pcmk
    }

    /// Whether the resource runs now (its agent's state file is there).
    pub fn resource_running(&self) -> bool {
        Path::new(DUMMY_STATE).exists()
    }

    /// Wait until the resource runs (or, with `false`, is stopped).
    pub fn wait_resource(&self, running: bool, within: Duration) -> Instant {
        wait(
            &format!("{RESOURCE} {}", if running { "running" } else { "stopped" }),
            within,
            || self.resource_running() == running,
        );
        Instant::now()
    }

    /// The node's health attribute, as Pacemaker has it.
    pub fn health(&self) -> String {
        run("attrd_updater", &["-n", "#health-watchdog", "-Q"], &[]).1
    }

    /// Set the node's health by hand (`red`, `green`).
    pub fn set_health(&self, value: &str) {
        must(
            "attrd_updater",
            &["-n", "#health-watchdog", "-U", value],
            &[],
        );
    }

    /// Forget the node's health, as a cluster restart does (transient attribute).
    pub fn forget_health(&self) {
        must("attrd_updater", &["-n", "#health-watchdog", "-D"], &[]);
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("pacemaker.log")).unwrap_or_default()
    }
}

impl Drop for Pacemaker {
    fn drop(&mut self) {
        // Pacemaker first (it stops the resources), then corosync.
        let _ = run("pacemakerd", &["--shutdown"], &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.pacemakerd.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.pacemakerd.kill();
        let _ = self.pacemakerd.wait();
        let _ = run("corosync-cfgtool", &["-H", "--force"], &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.corosync.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.corosync.kill();
        let _ = self.corosync.wait();
    }
}
