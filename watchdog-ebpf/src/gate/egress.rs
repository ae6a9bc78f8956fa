//! cgroup_skb/egress, attached to the cgroup v2 root: every packet a local socket sends,
//! in every network namespace, before any qdisc. Without gates (count 0) a packet costs
//! one map load; a packet that no gate matches, the parse and the compares; only a
//! matching packet reads the (coarse) clock, and only while the gates are closed its
//! socket's tag.
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_sk_storage_get, bpf_skb_ancestor_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use watchdog_common::gate::{MAX_GATES, SENDER_CGROUP, SockTag, sender_gated};

use crate::{
    maps::{GATE_DROPS, GATE_RULES, GATE_STATE, tags},
    packet::parse,
};

const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn gate_egress(ctx: SkBuffContext) -> i32 {
    if gated(&ctx) { DROP } else { PASS }
}

#[inline(always)]
fn gated(ctx: &SkBuffContext) -> bool {
    let Some(state) = GATE_STATE.get(0) else {
        return false;
    };
    let count = state.count as usize;
    if count == 0 {
        return false;
    }
    let skb = ctx.skb.skb;
    let Some(packet) = (unsafe { parse(skb) }) else {
        return false;
    };
    // The first gate the packet matches, if any: the common packet stops here. (One
    // pass that remembers only an index: a mask of matches would make the verifier walk
    // every combination of them.)
    let mut first = MAX_GATES;
    for i in 0..MAX_GATES {
        if i >= count {
            break;
        }
        if let Some(rule) = GATE_RULES.get(i as u32)
            && rule.matches(packet.proto, &packet.dst, packet.port)
        {
            first = i;
            break;
        }
    }
    // The coarse clock (the last tick's time, no clock read): the lease is hundreds of
    // ms, a tick is a few.
    if first == MAX_GATES || !state.is_closed(unsafe { bpf_ktime_get_coarse_ns() }) {
        return false;
    }
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    let mut tag = 0u64;
    if !sk.is_null() {
        let t = unsafe { bpf_sk_storage_get(tags(), sk.cast(), core::ptr::null_mut(), 0) }
            as *const SockTag;
        if !t.is_null() {
            tag = unsafe { (*t).mask };
        }
    }
    for i in 0..MAX_GATES {
        if i >= count {
            break;
        }
        if i < first {
            continue;
        }
        let Some(rule) = GATE_RULES.get(i as u32) else {
            continue;
        };
        if !rule.matches(packet.proto, &packet.dst, packet.port) {
            continue;
        }
        let in_cgroup = rule.sender == SENDER_CGROUP
            && unsafe { bpf_skb_ancestor_cgroup_id(skb, rule.cgroup_level as i32) }
                == rule.cgroup_id;
        if sender_gated(rule, i, tag, in_cgroup) {
            if let Some(n) = GATE_DROPS.get_ptr_mut(i as u32) {
                // Per-CPU, and this program is not preempted.
                unsafe { *n += 1 };
            }
            return true;
        }
    }
    false
}
