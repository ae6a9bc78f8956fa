//! Loading and attaching the kernel side. The only module that touches aya.
use std::path::Path;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Iter, ProgramFd, RawTracePoint, TracePoint},
};
use watchdog_common::{
    ClockSample, InFlight, PID_VIEW_GLOBALS, TASK_FIELD_GLOBALS, Target, counter, layout, maps,
};

use crate::{
    events::SyscallRecord,
    kernel::{
        btf,
        clock::monotonic_ns,
        jiffies::JiffyClock,
        pidns::{self, PidView, TaskIds},
        task_iter::TaskIter,
        tracefs,
    },
};

/// The eBPF object built by build.rs from watchdog-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watchdog"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "loading the eBPF object (needs root or CAP_BPF+CAP_PERFMON, and kernel 5.11+ with BTF): {0}"
    )]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("tracepoint {0} is missing or has an unknown layout on this kernel")]
    Layout(&'static str),
    #[error("mapping map {0}: {1}")]
    Mmap(&'static str, std::io::Error),
    #[error("reading the kernel's clocks (the clock_sample program): {0}")]
    Clock(String),
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(std::io::Error),
    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux, needs CONFIG_DEBUG_INFO_BTF): {0}")]
    Btf(String),
    #[error(
        "--probe-stats: enabling the kernel's BPF run-time statistics (kernel 5.8+, CAP_SYS_ADMIN): {0}"
    )]
    Stats(aya::sys::SyscallError),
    #[error("{0}")]
    PidView(#[from] super::pidns::ViewError),
    #[error("task iterator {name}: {source}")]
    TaskIter {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("process {0} is not in the watchdog's pid namespace (gone, or out of its view)")]
    NotInNamespace(u32),
}

/// Handles on the loaded, attached programs and their maps. Dropping it detaches every
/// program (the kernel also does so if the process dies: the links are fds).
pub struct Probes {
    // Owns the programs and their links; kept alive for as long as the probes should be.
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, Target>,
    /// The bits of `targets`, which the hot path tests instead of the hash.
    target_bits: Array<MapData, u64>,
    comms: HashMap<MapData, [u8; 16], u32>,
    cgroups: HashMap<MapData, u64, u32>,
    /// The threads that pass the hot path's first test (see watchdog-ebpf's `stacks`),
    /// and the iterator that covers a running process's threads.
    covered_bits: Array<MapData, u64>,
    stacks: Array<MapData, u64>,
    cover_targets: TaskIter,
}

/// Maps the daemon reads from its own tasks.
pub struct Channels {
    pub inflight: InFlightTable,
    pub events: RingBuf<MapData>,
    pub counters: Counters,
}

/// A read-only shared mapping of an mmapable BPF array map (BPF_F_MMAPABLE): the
/// daemon reads what the kernel side writes with no syscall per element.
struct MappedArray<T> {
    base: *const T,
    len: usize,
    bytes: usize,
    // Owns the fd the mapping was made from.
    _map: MapData,
}

impl<T> MappedArray<T> {
    fn new(map: MapData, name: &'static str) -> Result<Self, EbpfError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let len = map.info().map_err(map_error(name))?.max_entries() as usize;
        let page = 4096;
        let bytes = (len * size_of::<T>()).div_ceil(page) * page;
        // SAFETY: a shared read-only mapping of an mmapable array map's fd, of its size
        // rounded up to a page (as the kernel maps it).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(EbpfError::Mmap(name, std::io::Error::last_os_error()));
        }
        Ok(MappedArray {
            base: base.cast(),
            len,
            bytes,
            _map: map,
        })
    }

    /// Element `i`, read once (the kernel writes it concurrently; a record may be torn,
    /// and the scanner checks what it acts on).
    fn get(&self, i: usize) -> Option<T> {
        // SAFETY: within the mapping, and T is plain old data.
        (i < self.len).then(|| unsafe { std::ptr::read_volatile(self.base.add(i)) })
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.bytes) };
    }
}

/// The in-flight records, as the scanner reads them: THREAD_BITS says which threads
/// have one, SLOTS holds each where its tid puts it (both through read-only shared
/// mappings: no syscall per thread, and only the live threads' slots are touched),
/// and the INFLIGHT hash the few whose slot another thread owns; their jiffies placed
/// on CLOCK_MONOTONIC.
pub struct InFlightTable {
    slots: MappedArray<InFlight>,
    thread_bits: MappedArray<u64>,
    overflow: HashMap<MapData, u32, InFlight>,
    /// How many entries `overflow` holds: walked only when some.
    overflow_live: Array<MapData, u64>,
    sampler: ClockSampler,
    clock: JiffyClock,
}

// SAFETY: the mappings are read-only here, shared with the kernel, and live as long as
// the table; reading them from another thread is what they are for.
unsafe impl Send for InFlightTable {}

impl InFlightTable {
    fn new(
        slots: MapData,
        thread_bits: MapData,
        overflow: HashMap<MapData, u32, InFlight>,
        overflow_live: Array<MapData, u64>,
        sampler: ClockSampler,
    ) -> Result<Self, EbpfError> {
        let clock = sampler.calibrate()?;
        Ok(InFlightTable {
            slots: MappedArray::new(slots, maps::SLOTS)?,
            thread_bits: MappedArray::new(thread_bits, maps::THREAD_BITS)?,
            overflow,
            overflow_live,
            sampler,
            clock,
        })
    }

    /// Every thread's record: (tid, record). Each read first takes one more reading
    /// of the two clocks; one that contradicts the calibration has it made again (a
    /// record's times may then move by up to a jiffy, once), and an error means the
    /// records' times cannot be placed.
    pub fn read(&mut self) -> Result<Vec<(u32, SyscallRecord)>, EbpfError> {
        let sample = self.sampler.sample()?;
        if let Err(e) = self.clock.check(sample) {
            tracing::warn!(error = %e, "the kernel's jiffies moved against the calibration: calibrating again");
            self.clock = self.sampler.calibrate()?;
        }
        let clock = self.clock;
        let ids = pidns::ids();
        Ok(self
            .raw()
            .into_iter()
            .filter_map(|(tid, rec)| {
                // In the daemon's pid namespace (a thread it cannot place is gone).
                let (tid, tgid) = ids.thread(tid, rec.tgid)?;
                let mut rec = SyscallRecord::from_kernel(&rec, &clock);
                rec.tgid = tgid;
                Some((tid, rec))
            })
            .collect())
    }

    fn raw(&self) -> Vec<(u32, InFlight)> {
        let mut out = Vec::new();
        let mask = self.slots.len - 1;
        for w in 0..self.thread_bits.len {
            let mut word = self.thread_bits.get(w).unwrap_or(0);
            while word != 0 {
                let tid = (w * 64) as u32 + word.trailing_zeros();
                word &= word - 1;
                // Not in its slot: another thread owns the slot, and the hash has it.
                if let Some(rec) = self.slots.get(tid as usize & mask)
                    && rec.tid == tid
                {
                    out.push((tid, rec));
                }
            }
        }
        // An empty walk of the hash still visits every bucket.
        if self.overflow_live.get(&0, 0).map_or(true, |n| n > 0) {
            // One record per thread: a slot's (in tid order so far) over a hash entry.
            let in_slots = out.len();
            for (tid, rec) in self.overflow.iter().filter_map(Result::ok) {
                if out[..in_slots].binary_search_by_key(&tid, |e| e.0).is_err() {
                    out.push((tid, rec));
                }
            }
        }
        out
    }
}

/// Reads jiffies and CLOCK_MONOTONIC together, in the kernel: runs the `clock_sample`
/// program (BPF_PROG_TEST_RUN, never attached) and reads what it wrote.
struct ClockSampler {
    prog: ProgramFd,
    out: Array<MapData, ClockSample>,
}

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads it (`include/uapi/linux/bpf.h`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

impl ClockSampler {
    fn sample(&self) -> Result<ClockSample, EbpfError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let attr = TestRunAttr {
            prog_fd: self.prog.as_fd().as_raw_fd() as u32,
            ..TestRunAttr::default()
        };
        // SAFETY: a valid, zero-padded bpf_attr of the size passed; the kernel reads it
        // and writes retval/duration back into it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &attr as *const TestRunAttr,
                size_of::<TestRunAttr>(),
            )
        };
        if rc < 0 {
            return Err(EbpfError::Clock(format!(
                "BPF_PROG_TEST_RUN: {}",
                std::io::Error::last_os_error()
            )));
        }
        self.out
            .get(&0, 0)
            .map_err(|e| EbpfError::Clock(format!("reading map {}: {e}", maps::CLOCK)))
    }

    /// Sample back to back (a few µs apart) until two jiffy boundaries have passed and
    /// tell the period: two jiffies, 20 ms at worst (HZ=100). Only the samples on either
    /// side of each boundary are kept.
    fn calibrate(&self) -> Result<JiffyClock, EbpfError> {
        // A vCPU paused during one attempt (a host that steals it for a second) spoils
        // that attempt only: three, a second each at most.
        let mut attempt = 1;
        loop {
            match self.calibrate_once() {
                Ok(clock) => return Ok(clock),
                Err(e) if attempt == 3 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "calibrating the kernel's clocks: trying again");
                    attempt += 1;
                }
            }
        }
    }

    fn calibrate_once(&self) -> Result<JiffyClock, EbpfError> {
        let deadline = monotonic_ns() + 1_000_000_000;
        let mut prev = self.sample()?;
        let mut kept = vec![prev];
        loop {
            let s = self.sample()?;
            if s.jiffies != prev.jiffies {
                kept.extend([prev, s]);
                if kept.len() >= 5 {
                    match JiffyClock::calibrate(&kept) {
                        Ok(clock) => return Ok(clock),
                        Err(e) if monotonic_ns() > deadline => {
                            return Err(EbpfError::Clock(e.to_string()));
                        }
                        Err(_) => {}
                    }
                }
            } else if monotonic_ns() > deadline {
                // A vCPU paused past the deadline may not have ticked since it resumed:
                // look again after a few ticks before calling the clock stuck.
                std::thread::sleep(std::time::Duration::from_millis(50));
                if self.sample()?.jiffies == prev.jiffies {
                    return Err(EbpfError::Clock("jiffies did not move for a second".into()));
                }
            }
            prev = s;
        }
    }
}

/// SLOTS' entries: WATCHDOG_INFLIGHT_SLOTS (a power of two; tests set it to 1 to send
/// every thread but one through the overflow hash), else the default.
fn slot_count() -> u32 {
    std::env::var("WATCHDOG_INFLIGHT_SLOTS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| n.is_power_of_two())
        .unwrap_or(watchdog_common::DEFAULT_SLOTS)
}

/// The per-CPU counters of the kernel side, summed over CPUs.
pub struct Counters(PerCpuArray<MapData, u64>);

impl Counters {
    fn sum(&self, index: u32) -> u64 {
        self.0.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Events lost because the ring buffer was full.
    pub fn lost_events(&self) -> u64 {
        self.sum(counter::LOST_EVENTS)
    }

    /// Syscalls of monitored threads not tracked because the in-flight map was full.
    pub fn untracked_syscalls(&self) -> u64 {
        self.sum(counter::INFLIGHT_FULL)
    }
}

/// Mount tracefs if it is missing: classic tracepoints attach through it.
pub fn ensure_tracefs() -> Result<(), EbpfError> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() {
        return Ok(());
    }
    super::mount::mount("nodev", "/sys/kernel/tracing", "tracefs").map_err(EbpfError::Tracefs)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it (harmless after).
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels 5.11+");
    }
}

/// The error for map `name`.
fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

/// A removal from map `name` that is fine when the key is already gone.
fn ignore_missing(r: Result<(), aya::maps::MapError>, name: &'static str) -> Result<(), EbpfError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(EbpfError::Map { name, source }),
    }
}

/// A program name as the kernel keeps it: at most 15 bytes, NUL-padded.
pub(crate) fn comm_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let n = name.len().min(15);
    key[..n].copy_from_slice(&name.as_bytes()[..n]);
    key
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(EbpfError::MissingMap(name))?;
    T::try_from(map).map_err(map_error(name))
}

/// Load raw tracepoint program `name`.
fn load_raw<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut RawTracePoint, EbpfError> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.load()
        .map_err(|source| EbpfError::Program { name, source })?;
    Ok(prog)
}

fn attach_raw(ebpf: &mut Ebpf, name: &'static str, tp: &str) -> Result<(), EbpfError> {
    load_raw(ebpf, name)?
        .attach(tp)
        .map_err(|source| EbpfError::Program { name, source })?;
    Ok(())
}

/// Load task iterator `name` and attach it as an iterator link.
fn load_task_iter(ebpf: &mut Ebpf, name: &'static str, btf: &Btf) -> Result<TaskIter, EbpfError> {
    use std::os::fd::AsFd as _;
    let prog: &mut Iter = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.load("task", btf)
        .map_err(|source| EbpfError::Program { name, source })?;
    let fd = prog
        .fd()
        .map_err(|source| EbpfError::Program { name, source })?;
    TaskIter::attach(fd.as_fd()).map_err(|source| EbpfError::TaskIter { name, source })
}

/// Size the bit arrays to the kernel's pid_max and SLOTS to `mask + 1` entries (and
/// tell the programs the mask), as every load of the object must.
fn size_maps<'a>(loader: &mut EbpfLoader<'a>, mask: &'a u32) {
    let words = bit_words();
    for name in maps::BIT_ARRAYS {
        loader.map_max_entries(name, words);
    }
    loader.map_max_entries(maps::SLOTS, mask + 1);
    loader.override_global(watchdog_common::SLOT_MASK_GLOBAL, mask, true);
}

/// Load raw tracepoint program `name` without attaching it (it is run on demand), and
/// hand out its fd.
fn load_unattached_raw(ebpf: &mut Ebpf, name: &'static str) -> Result<ProgramFd, EbpfError> {
    load_raw(ebpf, name)?
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|source| EbpfError::Program { name, source })
}

/// Attach BTF tracepoint program `name` to `tp`.
fn attach_btf_tp(
    ebpf: &mut Ebpf,
    name: &'static str,
    tp: &str,
    btf: &Btf,
) -> Result<(), EbpfError> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.load(tp, btf)
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.attach()
        .map_err(|source| EbpfError::Program { name, source })?;
    Ok(())
}

/// Offsets of the `task_struct` fields the kernel side reads, from the kernel's BTF,
/// and (for a daemon in a pid namespace of its own) those the `pid_view` iterator reads.
fn task_field_offsets(
    in_namespace: bool,
) -> Result<
    (
        [u32; TASK_FIELD_GLOBALS.len()],
        [u32; PID_VIEW_GLOBALS.len()],
    ),
    EbpfError,
> {
    let data = std::fs::read(btf::VMLINUX).map_err(|e| EbpfError::Btf(e.to_string()))?;
    let types = btf::Btf::parse(&data).map_err(|e| EbpfError::Btf(e.to_string()))?;
    let mut view = [0; PID_VIEW_GLOBALS.len()];
    if in_namespace {
        for (slot, (_, name, field)) in view.iter_mut().zip(PID_VIEW_GLOBALS) {
            *slot = types
                .field_offset(name, field)
                .map_err(|e| EbpfError::Btf(e.to_string()))?;
        }
    }
    let mut out = [0; TASK_FIELD_GLOBALS.len()];
    for (slot, (_, field)) in out.iter_mut().zip(TASK_FIELD_GLOBALS) {
        // `__state` was `state` before Linux 5.14.
        let found = match types.field_offset("task_struct", field) {
            Err(_) if field == "__state" => types.field_offset("task_struct", "state"),
            found => found,
        };
        *slot = found.map_err(|e| EbpfError::Btf(e.to_string()))?;
    }
    Ok((out, view))
}

/// Set or clear `id`'s bit in a bit array only userspace writes (a read-modify-write of
/// its word, safe under the daemon's lock). An id beyond the array (pid_max raised since
/// load) is left to the hash the kernel side falls back to.
pub(crate) fn set_bit(
    bits: &mut Array<MapData, u64>,
    id: u32,
    on: bool,
) -> Result<(), aya::maps::MapError> {
    let index = id / 64;
    let Ok(word) = bits.get(&index, 0) else {
        return Ok(());
    };
    let bit = 1u64 << (id % 64);
    bits.set(index, if on { word | bit } else { word & !bit }, 0)
}

/// Words of a bit array with one bit per id up to the kernel's pid_max (ids beyond it,
/// if pid_max is raised later, fall back to the hash maps).
pub(crate) fn bit_words() -> u32 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1 << 22);
    pid_max.div_ceil(64).max(1)
}

fn attach_tp(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    tp: &str,
) -> Result<(), EbpfError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.load()
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.attach(category, tp)
        .map_err(|source| EbpfError::Program { name, source })?;
    Ok(())
}

/// A tracepoint (category, name) and the fields we read from it (`layout` index, name).
type TracepointFields = (&'static str, &'static str, &'static [(u32, &'static str)]);

/// This kernel's tracepoint field offsets, by `layout` index, and the names of the
/// tracepoints whose fields were all found.
fn read_layout() -> ([u32; layout::COUNT as usize], Vec<&'static str>) {
    let mut offsets = [0u32; layout::COUNT as usize];
    let wanted: [TracepointFields; 6] = [
        (
            "sched",
            "sched_process_exit",
            &[(layout::EXIT_GROUP_DEAD, "group_dead")],
        ),
        ("sched", "sched_process_hang", &[(layout::HANG_PID, "pid")]),
        (
            "sched",
            "sched_process_fork",
            &[(layout::FORK_CHILD_PID, "child_pid")],
        ),
        (
            "sched",
            "sched_process_exec",
            &[(layout::EXEC_OLD_PID, "old_pid")],
        ),
        ("oom", "mark_victim", &[(layout::OOM_PID, "pid")]),
        (
            "signal",
            "signal_generate",
            &[
                (layout::SIG_SIG, "sig"),
                (layout::SIG_CODE, "code"),
                (layout::SIG_PID, "pid"),
            ],
        ),
    ];
    let mut present = Vec::new();
    for (category, name, fields) in wanted {
        let Some(format) = tracefs::read_format(category, name) else {
            continue;
        };
        let mut all = true;
        for &(index, field) in fields {
            match tracefs::field_offset(&format, field) {
                Some(off) => offsets[index as usize] = off,
                None => all = false,
            }
        }
        if all {
            present.push(name);
        }
    }
    (offsets, present)
}

/// The benchmark's floor: empty programs on sys_enter and sys_exit, attached alone (the
/// daemon never attaches them). Detached when dropped.
pub struct Floor {
    _ebpf: Ebpf,
}

impl Floor {
    /// Empty raw tracepoint programs.
    pub fn attach() -> Result<Floor, EbpfError> {
        raise_memlock();
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        attach_raw(&mut ebpf, "floor_enter", "sys_enter")?;
        attach_raw(&mut ebpf, "floor_exit", "sys_exit")?;
        Ok(Floor { _ebpf: ebpf })
    }

    /// Raw tracepoint programs `enter` and `exit` (the bench-only ones in the object's
    /// `floor` module: parts and shapes of the unmonitored path), with the maps sized as
    /// the daemon sizes them (bit arrays to pid_max, so a bit test is a bit test).
    pub fn attach_pair(enter: &'static str, exit: &'static str) -> Result<Floor, EbpfError> {
        raise_memlock();
        let mut loader = EbpfLoader::new();
        let mask = slot_count() - 1;
        size_maps(&mut loader, &mask);
        let mut ebpf = loader.load(OBJECT)?;
        attach_raw(&mut ebpf, enter, "sys_enter")?;
        attach_raw(&mut ebpf, exit, "sys_exit")?;
        Ok(Floor { _ebpf: ebpf })
    }

    /// An empty BTF tracepoint program on sched_switch (the kind the probe is).
    pub fn attach_switch() -> Result<Floor, EbpfError> {
        raise_memlock();
        let btf = Btf::from_sys_fs().map_err(|e| EbpfError::Btf(e.to_string()))?;
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        attach_btf_tp(&mut ebpf, "floor_switch", "sched_switch", &btf)?;
        Ok(Floor { _ebpf: ebpf })
    }

    /// Empty BTF tracepoint programs (on sys_enter and sys_exit).
    pub fn attach_btf() -> Result<Floor, EbpfError> {
        raise_memlock();
        let btf = Btf::from_sys_fs().map_err(|e| EbpfError::Btf(e.to_string()))?;
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        attach_btf_tp(&mut ebpf, "floor_btf_enter", "sys_enter", &btf)?;
        attach_btf_tp(&mut ebpf, "floor_btf_exit", "sys_exit", &btf)?;
        Ok(Floor { _ebpf: ebpf })
    }
}

impl Probes {
    /// Load the object, attach every program, and hand out the maps. Targets start
    /// empty: add them with [`Probes::add_target`].
    pub fn load() -> Result<(Probes, Channels), EbpfError> {
        ensure_tracefs()?;
        raise_memlock();
        // Field offsets become constants of the programs, set before they load.
        let (offsets, present) = read_layout();
        let in_namespace = super::procfs::own_pid_namespace().is_some();
        let (task_offsets, view_offsets) = task_field_offsets(in_namespace)?;
        let kernel_btf = Btf::from_sys_fs().map_err(|e| EbpfError::Btf(e.to_string()))?;
        let mut loader = EbpfLoader::new();
        // The one parse of the kernel's BTF (the loader would parse its own otherwise).
        loader.btf(Some(&kernel_btf));
        for (name, off) in layout::GLOBALS.iter().zip(&offsets) {
            loader.override_global(name, off, true);
        }
        for ((name, _), off) in TASK_FIELD_GLOBALS.iter().zip(&task_offsets) {
            loader.override_global(name, off, true);
        }
        for ((name, _, _), off) in PID_VIEW_GLOBALS.iter().zip(&view_offsets) {
            loader.override_global(name, off, true);
        }
        let mask = slot_count() - 1;
        size_maps(&mut loader, &mask);
        let mut ebpf = loader.load(OBJECT)?;
        if in_namespace {
            let view = PidView::new(load_task_iter(&mut ebpf, "pid_view", &kernel_btf)?);
            pidns::set(TaskIds::Namespace(std::sync::Mutex::new(
                pidns::Namespace::new(view),
            )));
        } else {
            pidns::set(TaskIds::Host);
        }
        let targets = take(&mut ebpf, maps::TARGETS)?;
        let target_bits = take(&mut ebpf, maps::TARGET_BITS)?;
        let comms = take(&mut ebpf, maps::COMMS)?;
        let cgroups = take(&mut ebpf, maps::CGROUPS)?;
        let take_array = |ebpf: &mut Ebpf, name: &'static str| match ebpf.take_map(name) {
            Some(aya::maps::Map::Array(data)) => Ok(data),
            _ => Err(EbpfError::MissingMap(name)),
        };
        let covered_bits = take(&mut ebpf, maps::COVERED_BITS)?;
        let stacks = take(&mut ebpf, maps::STACKS)?;
        let cover_targets = load_task_iter(&mut ebpf, "cover_targets", &kernel_btf)?;
        let slots = take_array(&mut ebpf, maps::SLOTS)?;
        let thread_bits = take_array(&mut ebpf, maps::THREAD_BITS)?;
        let sampler = ClockSampler {
            prog: load_unattached_raw(&mut ebpf, "clock_sample")?,
            out: take(&mut ebpf, maps::CLOCK)?,
        };
        let inflight = InFlightTable::new(
            slots,
            thread_bits,
            take(&mut ebpf, maps::INFLIGHT)?,
            take(&mut ebpf, maps::INFLIGHT_LIVE)?,
            sampler,
        )?;
        let events = take(&mut ebpf, maps::EVENTS)?;
        let counters = Counters(take(&mut ebpf, maps::COUNTERS)?);
        // Exit first, so no thread can leave a slot behind between the other attaches.
        attach_tp(
            &mut ebpf,
            "sched_process_exit",
            "sched",
            "sched_process_exit",
        )?;
        attach_raw(&mut ebpf, "sys_exit", "sys_exit")?;
        // Before sys_enter: a record is followed through its switches from the first.
        attach_btf_tp(&mut ebpf, "sched_switch", "sched_switch", &kernel_btf)?;
        // Targets by name and cgroup: exec makes them, fork spreads them.
        attach_tp(
            &mut ebpf,
            "sched_process_exec",
            "sched",
            "sched_process_exec",
        )?;
        if !present.contains(&"sched_process_fork") {
            return Err(EbpfError::Layout("sched/sched_process_fork (child_pid)"));
        }
        attach_tp(
            &mut ebpf,
            "sched_process_fork",
            "sched",
            "sched_process_fork",
        )?;
        // Before any target is added: from then on, a target's new threads are
        // covered before they run (see watchdog-ebpf's `stacks`).
        attach_btf_tp(&mut ebpf, "cover_forked", "sched_process_fork", &kernel_btf)?;
        attach_raw(&mut ebpf, "sys_enter", "sys_enter")?;
        attach_tp(&mut ebpf, "printk_console", "printk", "console")?;
        // Structured signals beside the text, where this kernel has them.
        for (prog, category, name) in [
            ("sched_process_hang", "sched", "sched_process_hang"),
            ("oom_mark_victim", "oom", "mark_victim"),
            ("signal_generate", "signal", "signal_generate"),
        ] {
            if present.contains(&name) {
                attach_tp(&mut ebpf, prog, category, name)?;
            } else {
                tracing::info!(
                    tracepoint = %format!("{category}/{name}"),
                    "not on this kernel: relying on kernel messages alone"
                );
            }
        }
        Ok((
            Probes {
                ebpf,
                targets,
                target_bits,
                comms,
                cgroups,
                covered_bits,
                stacks,
                cover_targets,
            },
            Channels {
                inflight,
                events,
                counters,
            },
        ))
    }

    /// Have the kernel count every BPF program's run time and runs until the returned
    /// handle is dropped (the statistics stay on while any such handle is open, and
    /// the kernel closes ours when the daemon dies however it dies).
    pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd, EbpfError> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(EbpfError::Stats)
    }

    /// Time and runs of every program loaded on the system (by any process) named one
    /// of `names`, from the kernel's BPF statistics: (name, run time ns, runs).
    pub fn loaded_program_stats(names: &[&str]) -> Vec<(String, u64, u64)> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| {
                let name = p.name_as_str()?.to_owned();
                names
                    .contains(&name.as_str())
                    .then(|| (name, p.run_time().as_nanos() as u64, p.run_count()))
            })
            .collect()
    }

    /// Each program's time and runs from the kernel's BPF statistics (zero unless
    /// `enable_run_stats` or kernel.bpf_stats_enabled=1): (name, run time ns, runs).
    pub fn run_stats(&self) -> Vec<(String, u64, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some((
                    name.to_owned(),
                    info.run_time().as_nanos() as u64,
                    info.run_count(),
                ))
            })
            .collect()
    }

    /// Start measuring the threads of process `tgid`.
    pub fn add_target(&mut self, tgid: u32) -> Result<(), EbpfError> {
        self.insert_target(tgid, 0)
    }

    fn insert_target(&mut self, local_tgid: u32, flags: u32) -> Result<(), EbpfError> {
        // The kernel side's ids are the initial pid namespace's.
        let tgid = pidns::ids()
            .track(local_tgid)?
            .ok_or(EbpfError::NotInNamespace(local_tgid))?;
        self.targets
            .insert(tgid, Target { flags }, 0)
            .map_err(map_error(maps::TARGETS))?;
        self.set_target_bit(tgid, true)?;
        // A target whose threads are not covered would be a target in name only (the
        // hot path's first test drops its syscalls): it is taken back, and the error
        // says why.
        if let Err(e) = self.cover(tgid) {
            let _ = self.remove_target(local_tgid);
            return Err(e);
        }
        Ok(())
    }

    /// Cover the threads process `tgid` has now, so the hot path's first test lets
    /// their syscalls through (see watchdog-ebpf's `stacks`); threads it starts later
    /// are covered at fork. A process whose main thread is covered already (a child
    /// of a covered thread, covered at fork, and its threads with it) needs no walk.
    fn cover(&mut self, tgid: u32) -> Result<(), EbpfError> {
        if self.is_covered(tgid) {
            return Ok(());
        }
        self.cover_targets
            .run()
            .map(drop)
            .map_err(|source| EbpfError::TaskIter {
                name: "cover_targets",
                source,
            })
    }

    /// Whether thread `tid` (a kernel id) is covered.
    pub fn is_covered(&self, tid: u32) -> bool {
        self.covered_bits
            .get(&(tid / 64), 0)
            .is_ok_and(|w| w & (1 << (tid % 64)) != 0)
    }

    /// Covered threads, summed over the stack buckets: each live covered thread counts
    /// once (more only for threads beyond the bit arrays, counted for good).
    pub fn covered_count(&self) -> u64 {
        self.stacks.iter().filter_map(Result::ok).sum()
    }

    /// Set or clear `tgid`'s bit in TARGET_BITS (which only userspace writes, and only
    /// through `Probes`, behind the daemon's lock: no update is lost).
    fn set_target_bit(&mut self, tgid: u32, on: bool) -> Result<(), EbpfError> {
        set_bit(&mut self.target_bits, tgid, on).map_err(map_error(maps::TARGET_BITS))
    }

    /// Start measuring processes that exec program `name` (and what they fork).
    pub fn add_comm(&mut self, name: &str) -> Result<(), EbpfError> {
        self.comms
            .insert(comm_key(name), 1, 0)
            .map_err(map_error(maps::COMMS))
    }

    /// Stop making processes that exec program `name` targets.
    pub fn remove_comm(&mut self, name: &str) -> Result<(), EbpfError> {
        ignore_missing(self.comms.remove(&comm_key(name)), maps::COMMS)
    }

    /// Stop making processes that exec inside cgroup `id` targets.
    pub fn remove_cgroup(&mut self, id: u64) -> Result<(), EbpfError> {
        ignore_missing(self.cgroups.remove(&id), maps::CGROUPS)
    }

    /// Start measuring processes that exec inside cgroup `id` (and what they fork).
    pub fn add_cgroup(&mut self, id: u64) -> Result<(), EbpfError> {
        self.cgroups
            .insert(id, 1, 0)
            .map_err(map_error(maps::CGROUPS))
    }

    /// Start measuring process `tgid`, and the processes it forks.
    pub fn add_following_target(&mut self, tgid: u32) -> Result<(), EbpfError> {
        self.insert_target(tgid, watchdog_common::TARGET_FOLLOW_FORKS)
    }

    /// Stop measuring process `tgid` (it is gone).
    pub fn remove_target(&mut self, tgid: u32) -> Result<(), EbpfError> {
        let Some(tgid) = pidns::ids().untrack(tgid) else {
            return Ok(());
        };
        self.remove_kernel_target(tgid)
    }

    /// Stop measuring the process the kernel side knows as `tgid` (its id, not ours: a
    /// process it made a target that the daemon cannot see).
    pub fn remove_kernel_target(&mut self, tgid: u32) -> Result<(), EbpfError> {
        self.set_target_bit(tgid, false)?;
        ignore_missing(self.targets.remove(&tgid), maps::TARGETS)
    }
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use watchdog_common::{PID_VIEW_GLOBALS, SLOT_MASK_GLOBAL, TASK_FIELD_GLOBALS, layout, maps};

    use super::OBJECT;

    /// The names both sides must agree on come from `watchdog_common`; the kernel side
    /// declares its maps under the same identifiers and its globals from the same list.
    /// This reads the object that is embedded and loaded, so any drift fails here,
    /// without root.
    #[test]
    fn the_built_object_has_exactly_the_shared_map_and_global_names() {
        let file = object::File::parse(OBJECT).expect("the embedded eBPF object parses");
        let maps_section = file
            .section_by_name("maps")
            .expect("a maps section")
            .index();
        let mut declared: Vec<&str> = file
            .symbols()
            .filter(|s| s.section_index() == Some(maps_section))
            .map(|s| s.name().unwrap())
            .collect();
        declared.sort_unstable();
        let mut shared = maps::ALL.to_vec();
        shared.sort_unstable();
        assert_eq!(
            declared, shared,
            "maps in the object vs watchdog_common::maps::ALL"
        );
        let symbols: Vec<&str> = file.symbols().filter_map(|s| s.name().ok()).collect();
        let globals = layout::GLOBALS
            .iter()
            .chain(TASK_FIELD_GLOBALS.iter().map(|(g, _)| g))
            .chain(PID_VIEW_GLOBALS.iter().map(|(g, _, _)| g))
            .chain([&SLOT_MASK_GLOBAL]);
        for g in globals {
            assert!(symbols.contains(g), "global {g} is not in the object");
        }
    }
}
