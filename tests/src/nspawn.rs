//! A real systemd for the tests: systemd 252 booted as PID 1 of a systemd-nspawn
//! machine, on a host whose own PID 1 is not systemd. The machine has a pid namespace
//! of its own, a private network (only `lo`), and an overlay over a Debian tree that
//! `cargo xtask provision` builds once (so every write disappears with the machine).
//!
//! The boot and shutdown recipes are ../shared/research/systemd-nspawn-here.md's:
//! `--register=no --keep-unit` (no host bus), nspawn's scratch on a private tmpfs, its
//! own cgroup, `bpf` and `perf_event_open` let through nspawn's seccomp filter, and
//! `cgroup.kill` for a machine that outlives a killed nspawn.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::TempDir;

/// Boot `tree` as machine `$1`, state in `$3`; nspawn's extra arguments follow. Prints
/// the machine's leader (its PID 1, in the host's namespace) once systemd is up.
const UP: &str = r#"
set -eu
name=$1 tree=$2 st=$3; shift 3
: > "$st/console.log"
setsid unshare -m --propagation private sh -c '
  set -e
  mkdir -p /run/systemd/nspawn
  mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
  for h in systemd unified; do
    if [ -d /sys/fs/cgroup/$h ]; then
      mkdir -p /sys/fs/cgroup/$h/nspawn-'"$name"'
      echo $$ > /sys/fs/cgroup/$h/nspawn-'"$name"'/cgroup.procs
    fi
  done
  echo $$ > '"$st"'/nspawn.pid
  exec "$@"' sh \
  systemd-nspawn --quiet -D "$tree" -b -M "$name" --register=no --keep-unit \
    --private-network --console=read-only "$@" \
  > "$st/console.log" 2>&1 < /dev/null &
i=0
while :; do
  i=$((i+1)); [ $i -gt 300 ] && { echo "timeout waiting for the machine" >&2; cat "$st/console.log" >&2; exit 1; }
  if [ -s "$st/nspawn.pid" ]; then
    np=$(cat "$st/nspawn.pid")
    kill -0 "$np" 2>/dev/null || { echo "nspawn exited:" >&2; cat "$st/console.log" >&2; exit 1; }
    leader=$(pgrep -P "$np" | head -n1 || true)
    if [ -n "$leader" ] && [ "$(cat /proc/$leader/comm 2>/dev/null)" = systemd ]; then
      s=$(nsenter -t "$leader" -a systemctl is-system-running --wait 2>/dev/null || true)
      case $s in running|degraded) break;; esac
    fi
  fi
  sleep 0.1
done
echo "$leader"
"#;

/// Shut machine `$1` (state in `$2`) down: SIGTERM to nspawn halts it; what is left
/// after 15 s is killed through its cgroup; then its cgroups go.
const DOWN: &str = r#"
name=$1 st=$2
np=$(cat "$st/nspawn.pid" 2>/dev/null || true)
[ -n "$np" ] && kill -TERM "$np" 2>/dev/null
i=0
while [ -n "$np" ] && kill -0 "$np" 2>/dev/null && [ $i -lt 150 ]; do i=$((i+1)); sleep 0.1; done
for cg in /sys/fs/cgroup/unified/nspawn-$name /sys/fs/cgroup/nspawn-$name; do
  if [ -d "$cg" ] && [ -n "$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ]; then
    echo "nspawn: forcing $name down via cgroup.kill" >&2
    echo 1 > "$cg/cgroup.kill"
    i=0
    while [ -n "$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && [ $i -lt 50 ]; do i=$((i+1)); sleep 0.1; done
  fi
done
for d in /sys/fs/cgroup/systemd/nspawn-$name /sys/fs/cgroup/unified/nspawn-$name /sys/fs/cgroup/nspawn-$name; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \;
done
true
"#;

/// Where `cargo xtask provision` builds the machine's Debian tree.
pub fn tree() -> PathBuf {
    std::env::var_os("WATCHDOG_NSPAWN_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nspawn-tree"))
}

/// A booted machine; dropping it shuts it down.
pub struct Machine {
    name: String,
    state: TempDir,
    leader: u32,
}

/// A command's exit code, stdout and stderr.
pub type Output = (i32, String, String);

impl Machine {
    /// Boot machine `name` with the directory `bind_ro` visible read-only at `/opt/wd`.
    pub fn boot(name: &str, bind_ro: &Path) -> Machine {
        let tree = tree();
        assert!(
            tree.join("usr/lib/systemd/systemd").exists(),
            "no machine tree at {}: run `cargo xtask provision` (as root) to build it",
            tree.display()
        );
        let state = TempDir::new(&format!("nspawn-{name}"));
        let out = Command::new("sh")
            .args(["-c", UP, "sh", name])
            .arg(&tree)
            .arg(&state.0)
            .args([
                "--volatile=overlay",
                "--capability=all",
                "--system-call-filter=bpf perf_event_open",
            ])
            .arg(format!("--bind-ro={}:/opt/wd", bind_ro.display()))
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let leader = stdout.trim().parse().unwrap_or_else(|_| {
            panic!(
                "machine {name} did not boot: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Machine {
            name: name.to_owned(),
            state,
            leader,
        }
    }

    /// Run `script` with `sh -c` inside the machine (all its namespaces; as a host
    /// process would, outside its cgroup and seccomp filter: for systemctl and files).
    pub fn sh(&self, script: &str) -> Output {
        self.sh_with_input(script, "")
    }

    /// [`Machine::sh`] with `input` on stdin.
    pub fn sh_with_input(&self, script: &str, input: &str) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-a", "sh", "-c", script]);
        crate::run_with_input(cmd, input)
    }

    /// [`Machine::sh`], which must succeed: its stdout.
    pub fn ok(&self, script: &str) -> String {
        let (code, out, err) = self.sh(script);
        assert_eq!(
            code, 0,
            "in machine {}: `{script}` failed: {out}{err}",
            self.name
        );
        out
    }

    /// Write `contents` to `path` in the machine.
    pub fn write(&self, path: &str, contents: &str) {
        let (code, out, err) = self.sh_with_input(
            &format!("mkdir -p \"$(dirname {path})\" && cat > {path}"),
            contents,
        );
        assert_eq!(code, 0, "writing {path}: {out}{err}");
    }

    /// A unit's property, as systemd has it.
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&format!("systemctl show -P {name} {unit}"))
            .trim()
            .to_owned()
    }

    /// Poll `check` every 100 ms until it gives Some, for at most `limit`.
    pub fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Machine) -> Option<T>,
    ) -> T {
        crate::wait_until(limit, &format!("{what} in machine {}", self.name), || {
            check(self)
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", DOWN, "sh", &self.name])
            .arg(&self.state.0)
            .status();
    }
}
