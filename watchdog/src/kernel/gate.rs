//! Loading, attaching and pinning the service heartbeat gate (watchdog-ebpf's `gate`
//! object): an egress program on the cgroup v2 root and two BTF tracepoint programs that
//! tag sockets with their sender.
//!
//! Everything is pinned under one bpffs directory, so the gate outlives the daemon: a
//! dead daemon must not reopen the gate of a stalled service (its lease lapses and the
//! gates close), and a restarted daemon takes over the same maps and attaches its own
//! programs before it removes the old ones, so no packet slips through in between.
//!
//! ```text
//! DIR/v1/GATE_*        the maps (v1: watchdog_common::gate::PIN_VERSION)
//! DIR/links/gate_*     the programs' links
//! ```
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        links::{FdLink, PinnedLink},
    },
};
use watchdog_common::gate::{GateRule, GateState, MAX_GATES, PIN_VERSION, maps, programs};

use crate::kernel::procfs;

/// The gate object built by build.rs from watchdog-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gate"));

/// Where the gate is pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/watchdog-gate";

/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("gate pin directory {0}: {1}")]
    PinDir(String, String),
    #[error("loading the gate's eBPF object (needs root, kernel 5.11+ with BTF): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("gate program {name}: {message}")]
    Program { name: &'static str, message: String },
    #[error("gate map {name}: {message}")]
    Map { name: &'static str, message: String },
    #[error("the gate needs cgroup v2 mounted (no cgroup2 in /proc/mounts)")]
    NoCgroup2,
    #[error("reading the kernel's BTF for the gate: {0}")]
    Btf(String),
}

fn program_error(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> GateError {
    move |e| GateError::Program {
        name,
        message: e.to_string(),
    }
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> GateError {
    move |e| GateError::Map {
        name,
        message: e.to_string(),
    }
}

/// Program `name` of the object, as its type.
fn program<'e, P>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut P, GateError>
where
    &'e mut P: TryFrom<&'e mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(GateError::Program {
            name,
            message: "missing from the object".into(),
        })?
        .try_into()
        .map_err(program_error(name))
}

/// A cgroup program's link as a pinnable bpf_link (cgroup links are fds from 5.7).
fn fd_link<L>(name: &'static str, link: L) -> Result<FdLink, GateError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|e| GateError::Program {
        name,
        message: format!("not a bpf_link (kernel 5.7+): {e}"),
    })
}

/// The attached gate and its maps.
pub struct GateProbes {
    dir: PathBuf,
    // Owns the programs (their links are pinned, so they stay attached without it).
    _ebpf: Ebpf,
    rules: Array<MapData, GateRule>,
    state: Array<MapData, GateState>,
    drops: PerCpuArray<MapData, u64>,
    senders: HashMap<MapData, u32, u64>,
    sender_bits: Array<MapData, u64>,
    comms: HashMap<MapData, [u8; 16], u64>,
}

impl GateProbes {
    /// Load the gate and attach it, taking over what an earlier daemon pinned under
    /// `dir` (its maps, and so its state; then its links are replaced by ours).
    pub fn attach(dir: &Path) -> Result<Self, GateError> {
        ensure_bpffs(dir)?;
        let maps_dir = dir.join(format!("v{PIN_VERSION}"));
        let links_dir = dir.join("links");
        for d in [&maps_dir, &links_dir] {
            fs::create_dir_all(d)
                .map_err(|e| GateError::PinDir(d.display().to_string(), e.to_string()))?;
        }
        let kernel_btf = Btf::from_sys_fs().map_err(|e| GateError::Btf(e.to_string()))?;
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&kernel_btf));
        let pins: Vec<(&str, PathBuf)> = maps::ALL
            .iter()
            .map(|name| (*name, maps_dir.join(name)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        loader.map_max_entries(maps::SENDER_BITS, super::probes::bit_words());
        let mut ebpf = loader.load(OBJECT)?;

        let mut links: Vec<(&'static str, FdLink)> = Vec::new();
        let cgroup_root = procfs::cgroup2_mount().ok_or(GateError::NoCgroup2)?;
        let cgroup = fs::File::open(&cgroup_root).map_err(|e| GateError::Program {
            name: programs::EGRESS,
            message: format!("opening {}: {e}", cgroup_root.display()),
        })?;
        {
            let name = programs::EGRESS;
            let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
            prog.load().map_err(program_error(name))?;
            // A bpf_link takes no flags and always attaches as BPF_F_ALLOW_MULTI (the
            // kernel's cgroup_bpf_link_attach): other programs on the root keep running.
            let id = prog
                .attach(
                    &cgroup,
                    CgroupSkbAttachType::Egress,
                    CgroupAttachMode::Single,
                )
                .map_err(program_error(name))?;
            let link = prog.take_link(id).map_err(program_error(name))?;
            links.push((name, fd_link(name, link)?));
        }
        {
            let name = programs::TAG_CREATE;
            let prog: &mut CgroupSock = program(&mut ebpf, name)?;
            prog.load().map_err(program_error(name))?;
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(program_error(name))?;
            let link = prog.take_link(id).map_err(program_error(name))?;
            links.push((name, fd_link(name, link)?));
        }
        for (name, tracepoint) in programs::TAGGERS {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(tracepoint, &kernel_btf)
                .map_err(program_error(name))?;
            let id = prog.attach().map_err(program_error(name))?;
            let link = prog.take_link(id).map_err(program_error(name))?;
            links.push((name, FdLink::from(link)));
        }
        // (bpffs takes no dots in names.)
        // Ours are attached: now replace the old pins (a rename over them detaches the
        // earlier daemon's programs), so some program gates at every moment.
        for (name, link) in links {
            let path = links_dir.join(name);
            let fresh = links_dir.join(format!("{name}_new"));
            let _ = fs::remove_file(&fresh);
            let pinned: PinnedLink = link.pin(&fresh).map_err(|e| GateError::Program {
                name,
                message: format!("pinning at {}: {e}", fresh.display()),
            })?;
            fs::rename(&fresh, &path).map_err(|e| GateError::Program {
                name,
                message: format!("pinning at {}: {e}", path.display()),
            })?;
            drop(pinned);
        }
        remove_other_versions(dir, &maps_dir);

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(GateError::Map {
                name,
                message: "missing from the object".into(),
            })
        };
        let rules =
            Array::try_from(take(&mut ebpf, maps::RULES)?).map_err(map_error(maps::RULES))?;
        let state =
            Array::try_from(take(&mut ebpf, maps::STATE)?).map_err(map_error(maps::STATE))?;
        let drops =
            PerCpuArray::try_from(take(&mut ebpf, maps::DROPS)?).map_err(map_error(maps::DROPS))?;
        let senders =
            HashMap::try_from(take(&mut ebpf, maps::SENDERS)?).map_err(map_error(maps::SENDERS))?;
        let sender_bits = Array::try_from(take(&mut ebpf, maps::SENDER_BITS)?)
            .map_err(map_error(maps::SENDER_BITS))?;
        let comms =
            HashMap::try_from(take(&mut ebpf, maps::COMMS)?).map_err(map_error(maps::COMMS))?;
        Ok(GateProbes {
            dir: dir.to_owned(),
            _ebpf: ebpf,
            rules,
            state,
            drops,
            senders,
            sender_bits,
            comms,
        })
    }

    /// The state as the kernel side sees it (an earlier daemon's, right after a takeover).
    pub fn state(&self) -> Result<GateState, GateError> {
        self.state.get(&0, 0).map_err(map_error(maps::STATE))
    }

    pub fn set_state(&mut self, state: GateState) -> Result<(), GateError> {
        self.state.set(0, state, 0).map_err(map_error(maps::STATE))
    }

    /// The first `count` rules in the kernel.
    pub fn rules(&self, count: usize) -> Result<Vec<GateRule>, GateError> {
        (0..count.min(MAX_GATES) as u32)
            .map(|i| self.rules.get(&i, 0).map_err(map_error(maps::RULES)))
            .collect()
    }

    /// Write the rules (the state's `count` says how many are in use: set it after).
    pub fn set_rules(&mut self, rules: &[GateRule]) -> Result<(), GateError> {
        for i in 0..MAX_GATES {
            let rule = rules.get(i).copied().unwrap_or_default();
            self.rules
                .set(i as u32, rule, 0)
                .map_err(map_error(maps::RULES))?;
        }
        Ok(())
    }

    /// Packets dropped by each gate (by index) since the counters were last cleared.
    pub fn drops(&self) -> [u64; MAX_GATES] {
        let mut out = [0u64; MAX_GATES];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self
                .drops
                .get(&(i as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
        }
        out
    }

    /// Zero the drop counters (the rules changed places).
    pub fn clear_drops(&mut self) -> Result<(), GateError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| GateError::Map {
            name: maps::DROPS,
            message: e.to_string(),
        })?;
        for i in 0..MAX_GATES as u32 {
            let zero = aya::maps::PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| {
                GateError::Map {
                    name: maps::DROPS,
                    message: e.to_string(),
                }
            })?;
            self.drops.set(i, zero, 0).map_err(map_error(maps::DROPS))?;
        }
        Ok(())
    }

    /// Make the senders map say `want` (tgid -> mask), changing only what differs: the
    /// hash first, then its bit (so a set bit always has its entry).
    pub fn sync_senders(&mut self, want: &StdHashMap<u32, u64>) -> Result<(), GateError> {
        // The tagger sees the kernel's ids; a process gone from view has none.
        let ids = super::pidns::ids();
        let want: StdHashMap<u32, u64> = want
            .iter()
            .filter_map(|(tgid, mask)| Some((ids.track(*tgid).ok().flatten()?, *mask)))
            .collect();
        let want = &want;
        let have: StdHashMap<u32, u64> = self.senders.iter().filter_map(Result::ok).collect();
        for (tgid, mask) in want {
            if have.get(tgid) != Some(mask) {
                self.senders
                    .insert(tgid, mask, 0)
                    .map_err(map_error(maps::SENDERS))?;
                self.set_sender_bit(*tgid, true)?;
            }
        }
        for tgid in have.keys().filter(|t| !want.contains_key(t)) {
            self.set_sender_bit(*tgid, false)?;
            ignore_missing(self.senders.remove(tgid), maps::SENDERS)?;
        }
        Ok(())
    }

    /// The bit of sender `tgid` (see [`super::probes::set_bit`]).
    fn set_sender_bit(&mut self, tgid: u32, on: bool) -> Result<(), GateError> {
        super::probes::set_bit(&mut self.sender_bits, tgid, on)
            .map_err(map_error(maps::SENDER_BITS))
    }

    /// Make the comm senders map say `want` (program name -> gate mask).
    pub fn sync_comms(&mut self, want: &StdHashMap<String, u64>) -> Result<(), GateError> {
        let want: StdHashMap<[u8; 16], u64> = want
            .iter()
            .map(|(c, m)| (super::probes::comm_key(c), *m))
            .collect();
        let have: HashSet<[u8; 16]> = self.comms.keys().filter_map(Result::ok).collect();
        for (key, mask) in &want {
            self.comms
                .insert(key, mask, 0)
                .map_err(map_error(maps::COMMS))?;
        }
        for key in have.iter().filter(|k| !want.contains_key(*k)) {
            ignore_missing(self.comms.remove(key), maps::COMMS)?;
        }
        Ok(())
    }

    /// Take the gate away: unpin its links and maps, so it detaches when this is dropped.
    pub fn remove(self) {
        remove_pins(&self.dir);
    }
}

/// Take away a gate an earlier daemon left pinned under `dir` (the gates are no longer
/// configured). Returns whether there was one.
pub fn remove_pinned(dir: &Path) -> bool {
    let there = dir.join("links").exists();
    if there {
        remove_pins(dir);
    }
    there
}

/// Remove everything pinned under `dir` (the links, whatever versions of the maps), and
/// `dir` itself: what is attached only through these pins detaches.
pub fn remove_pins(dir: &Path) {
    for sub in fs::read_dir(dir).into_iter().flatten().flatten() {
        remove_pin_dir(&sub.path());
    }
    let _ = fs::remove_dir(dir);
}

/// Remove the maps an older daemon pinned in another layout version.
fn remove_other_versions(dir: &Path, keep: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path != keep && e.file_name().to_string_lossy().starts_with('v') {
            remove_pin_dir(&path);
        }
    }
}

/// A directory of pins, and its pins.
fn remove_pin_dir(d: &Path) {
    if !d.is_dir() {
        return;
    }
    for f in fs::read_dir(d).into_iter().flatten().flatten() {
        let _ = fs::remove_file(f.path());
    }
    let _ = fs::remove_dir(d);
}

fn ignore_missing(r: Result<(), aya::maps::MapError>, name: &'static str) -> Result<(), GateError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_error(name)(e)),
    }
}

/// `dir`'s parent must be on bpffs; mount bpffs at /sys/fs/bpf if that is where it
/// goes and nothing is mounted there (systemd mounts it at boot; containers may not).
fn ensure_bpffs(dir: &Path) -> Result<(), GateError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let err = |m: String| GateError::PinDir(dir.display().to_string(), m);
    if on_bpffs(parent) {
        return Ok(());
    }
    if parent != Path::new("/sys/fs/bpf") {
        return Err(err(format!(
            "{} is not on a bpf filesystem (mount -t bpf bpf {0})",
            parent.display()
        )));
    }
    super::mount::mount("bpf", "/sys/fs/bpf", "bpf")
        .map_err(|e| err(format!("mounting bpffs at /sys/fs/bpf: {e}")))
}

fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_gate_object_has_exactly_the_shared_map_and_program_names() {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let obj = object::File::parse(super::OBJECT).expect("an ELF object");
        let mut maps: Vec<String> = Vec::new();
        let mut programs: Vec<String> = Vec::new();
        let mut globals: Vec<String> = Vec::new();
        for sym in obj.symbols() {
            let (Ok(name), Some(section)) = (
                sym.name(),
                sym.section_index()
                    .and_then(|i| obj.section_by_index(i).ok()),
            ) else {
                continue;
            };
            match section.name().unwrap_or("") {
                "maps" | ".maps" => maps.push(name.into()),
                ".rodata" | ".bss" | ".data" if name.starts_with("WD_") => {
                    globals.push(name.into())
                }
                s if (s.starts_with("cgroup") || s.starts_with("tp_btf"))
                    && sym.kind() == object::SymbolKind::Text =>
                {
                    programs.push(name.into())
                }
                _ => {}
            }
        }
        maps.sort();
        programs.sort();
        let mut want_maps: Vec<String> = super::maps::ALL.iter().map(|s| s.to_string()).collect();
        want_maps.sort();
        assert_eq!(maps, want_maps);
        let mut want_programs: Vec<String> = [super::programs::EGRESS, super::programs::TAG_CREATE]
            .into_iter()
            .chain(super::programs::TAGGERS.map(|(name, _)| name))
            .map(str::to_owned)
            .collect();
        want_programs.sort();
        assert_eq!(programs, want_programs);
        assert!(globals.is_empty(), "{globals:?}");
    }
}
