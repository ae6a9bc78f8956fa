//! A real keepalived pair for the failover tests: two network namespaces the test makes
//! ([`NetnsPair`]: 192.0.2.1 and 192.0.2.2 on a veth pair between them, IPv6 off,
//! unicast VRRPv3, so no packet leaves the pair), node A master with the watchdog's track file and a
//! `vrrp_script` that asks the watchdog whether it lives, node B backup. The same
//! configuration as `packaging/keepalived/keepalived.conf`, with the test's paths.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    TempDir, bin,
    netns::{NetnsPair, Side},
};

/// The virtual address the pair hands over.
pub const VIP: &str = "192.0.2.100";

/// Node A or node B of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaNode {
    A,
    B,
}

pub struct KeepalivedPair {
    dir: TempDir,
    net: NetnsPair,
    keepalived: Vec<Child>,
    /// The track file node A reads; the watchdog writes it.
    pub track_file: PathBuf,
}

/// The shipped configuration of node A, with this test's paths.
pub fn node_a_config(track_file: &Path, socket: &Path, advert_int: &str) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/keepalived/keepalived.conf"
    ))
    .expect("the shipped keepalived.conf");
    shipped
        .replace(
            "/run/watchdog/keepalived.track",
            &track_file.display().to_string(),
        )
        .replace(
            "/usr/local/bin/wdctl status",
            &format!(
                "{} --socket {} status",
                bin("wdctl").display(),
                socket.display()
            ),
        )
        .replace("advert_int 0.1", &format!("advert_int {advert_int}"))
        .replace("interface eth0", "interface vA")
        .replace("dev eth0", "dev vA")
}

fn node_b_config(advert_int: &str) -> String {
    format!(
        "global_defs {{\n    vrrp_version 3\n    router_id wdB\n    vrrp_garp_master_delay 0\n    vrrp_garp_master_repeat 1\n}}\n\
         vrrp_instance VI_WD {{\n    state BACKUP\n    interface vB\n    virtual_router_id 51\n    priority 100\n    advert_int {advert_int}\n\
         \x20   unicast_src_ip 192.0.2.2\n    unicast_peer {{\n        192.0.2.1\n    }}\n    virtual_ipaddress {{\n        {VIP}/24 dev vB\n    }}\n}}\n"
    )
}

impl KeepalivedPair {
    /// Make the namespaces and start keepalived in each: A tracks the watchdog whose
    /// control socket is `socket` (and its track file `track_file`).
    pub fn start(track_file: &Path, socket: &Path, advert_int: &str) -> KeepalivedPair {
        crate::require_root();
        let dir = TempDir::new("keepalived");
        let net = NetnsPair::new("k", false);
        let configs = [
            node_a_config(track_file, socket, advert_int),
            node_b_config(advert_int),
        ];
        for (i, config) in configs.into_iter().enumerate() {
            std::fs::write(dir.0.join(format!("keepalived-{i}.conf")), config).unwrap();
        }
        let mut pair = KeepalivedPair {
            dir,
            net,
            keepalived: Vec::new(),
            track_file: track_file.to_owned(),
        };
        pair.keepalived = vec![pair.spawn(0), pair.spawn(1)];
        pair
    }

    /// keepalived of node `i` (0: A, 1: B), in its namespace, logging to a file.
    fn spawn(&self, i: usize) -> Child {
        let file = self.dir.0.join(format!("keepalived-{i}.conf"));
        let pid = |what: &str| self.dir.0.join(format!("{what}-{i}.pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join(format!("keepalived-{i}.log")))
            .unwrap();
        // Own pid files: with the defaults the second instance would think the first
        // is itself and exit 0 (../shared/research/ha-managers-here.md).
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.net.name(if i == 0 { Side::A } else { Side::B }),
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-G",
                "-f",
            ])
            .arg(&file)
            .arg("-p")
            .arg(pid("keepalived"))
            .arg("-r")
            .arg(pid("vrrp"))
            .arg("-c")
            .arg(pid("checkers"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("keepalived (installed by cargo xtask test)")
    }

    /// Stop node A's keepalived with SIGTERM: its own clean hand-over, a priority-0
    /// advert. (It takes about a second more to exit; [`KeepalivedPair::start_node_a`]
    /// waits for that.)
    pub fn stop_node_a(&mut self) {
        // SAFETY: signalling our own child (`ip netns exec` execs keepalived).
        unsafe { libc::kill(self.keepalived[0].id() as i32, libc::SIGTERM) };
    }

    /// Start node A's keepalived again, once the stopped one has exited.
    pub fn start_node_a(&mut self) {
        let _ = self.keepalived[0].wait();
        self.keepalived[0] = self.spawn(0);
    }

    fn namespace(&self, node: HaNode) -> &str {
        self.net.name(match node {
            HaNode::A => Side::A,
            HaNode::B => Side::B,
        })
    }

    /// Whether `node` holds the virtual address now.
    pub fn has_vip(&self, node: HaNode) -> bool {
        let out = Command::new("ip")
            .args(["-n", self.namespace(node), "-br", "addr", "show"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/"))
    }

    /// Which node holds the virtual address alone, if one does.
    pub fn master(&self) -> Option<HaNode> {
        match (self.has_vip(HaNode::A), self.has_vip(HaNode::B)) {
            (true, false) => Some(HaNode::A),
            (false, true) => Some(HaNode::B),
            _ => None,
        }
    }

    /// Wait until `node` alone holds the virtual address; returns when it did.
    pub fn wait_master(&self, node: HaNode, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if self.master() == Some(node) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{node:?} did not take the virtual address within {within:?}:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Both keepalived logs.
    pub fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                std::fs::read_to_string(self.dir.0.join(format!("keepalived-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for KeepalivedPair {
    fn drop(&mut self) {
        for child in &mut self.keepalived {
            // SAFETY: signalling our own child (`ip netns exec` execs keepalived).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in &mut self.keepalived {
            let _ = child.wait();
        }
    }
}
