//! The gate's maps. The daemon pins them (with the programs' links), so a restarted
//! daemon takes over the same state: names are `watchdog_common::gate::maps`.
use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray},
};
use watchdog_common::gate::{GateRule, GateState, MAX_GATES, SockTag};

#[map]
pub static GATE_RULES: Array<GateRule> = Array::with_max_entries(MAX_GATES as u32, 0);

#[map]
pub static GATE_STATE: Array<GateState> = Array::with_max_entries(1, 0);

/// Packets dropped, per gate, per CPU (a per-CPU array lookup is a plain load).
#[map]
pub static GATE_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_GATES as u32, 0);

/// tgid -> sender mask. Room for every monitored process (TARGETS holds 4096) and the
/// `pid:` senders.
#[map]
pub static GATE_SENDERS: HashMap<u32, u64> = HashMap::with_max_entries(8192, 0);

/// One bit per tgid: the keys of GATE_SENDERS, so that an ungated sender's send costs a
/// load, not a hash lookup. Sized by the loader to pid_max; an id beyond it falls back
/// to the hash.
#[map]
pub static GATE_SNDR_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// comm -> mask of the gates whose sender is that program name.
#[map]
pub static GATE_COMMS: HashMap<[u8; 16], u64> = HashMap::with_max_entries(64, 0);

/// Each socket's tag, freed with the socket (socket-local storage needs a BTF map).
#[btf_map]
pub static GATE_TAGS: SkStorage<SockTag> = SkStorage::new();

/// The map pointer helpers take.
#[inline(always)]
pub fn tags() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&GATE_TAGS).cast_mut().cast()
}
