//! Tag each socket with its sender, in the sender's own context: when it is created
//! (cgroup/sock_create), after every send (sock_send_length), and when a TCP socket
//! connects (its SYN). The egress program may
//! run elsewhere (a TCP retransmit in softirq), so it reads the tag, not `current`.
//! An ungated sender's send costs one helper call and a load: the tag stays that of the
//! last gated sender (a socket is one process's, nearly always).
//!
//! BTF tracepoints, not fentry: they need no function tracing (which some kernels and
//! sandboxes lack), and their `struct sock *` argument is a typed pointer that the
//! socket storage helper accepts.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_sk_storage_get},
    macros::{btf_tracepoint, cgroup_sock},
    programs::{BtfTracePointContext, SockContext},
};
use watchdog_common::gate::SockTag;

use crate::maps::{GATE_COMMS, GATE_SENDERS, GATE_SNDR_BITS, GATE_STATE, tags};

const BPF_SK_STORAGE_GET_F_CREATE: u64 = 1;
const TCP_SYN_SENT: i32 = 2;

/// An inet socket being created, in its creator (1: let it be created).
#[cgroup_sock(sock_create)]
pub fn gate_tag_create(ctx: SockContext) -> i32 {
    tag(ctx.sock.cast());
    1
}

/// sock_send_length(struct sock *sk, __u16 family, __u16 protocol, int ret, int flags),
/// at the end of every sendmsg.
#[btf_tracepoint(function = "sock_send_length")]
pub fn gate_tag_send(ctx: BtfTracePointContext) -> i32 {
    tag(ctx.arg(0));
    0
}

/// inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate):
/// SYN_SENT is set by connect(), in the connecting task.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn gate_tag_connect(ctx: BtfTracePointContext) -> i32 {
    let newstate: i32 = ctx.arg(2);
    if newstate == TCP_SYN_SENT {
        tag(ctx.arg(0));
    }
    0
}

#[inline(always)]
fn tag(sk: *mut u8) {
    let Some(state) = GATE_STATE.get(0) else {
        return;
    };
    if state.count == 0 || sk.is_null() {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let listed = match GATE_SNDR_BITS.get(tgid >> 6) {
        Some(w) => *w & (1u64 << (tgid & 63)) != 0,
        None => true,
    };
    let mut mask = 0;
    if listed {
        mask = unsafe { GATE_SENDERS.get(&tgid) }.copied().unwrap_or(0);
    }
    if state.comm_senders != 0
        && let Ok(comm) = bpf_get_current_comm()
    {
        mask |= unsafe { GATE_COMMS.get(&comm) }.copied().unwrap_or(0);
    }
    if mask == 0 {
        return;
    }
    let t = unsafe {
        bpf_sk_storage_get(
            tags(),
            sk.cast(),
            core::ptr::null_mut(),
            BPF_SK_STORAGE_GET_F_CREATE,
        )
    } as *mut SockTag;
    if !t.is_null() && unsafe { (*t).mask } != mask {
        unsafe { (*t).mask = mask };
    }
}
