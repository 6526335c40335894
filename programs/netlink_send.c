// SPDX-License-Identifier: GPL-2.0
/*
 * netlink_send: a process sends a netlink message to the kernel (netlink_sendmsg).
 * What matters here is NETLINK_AUDIT: the messages that reconfigure the kernel's
 * audit system - auditctl -e 0 (disable), -D (delete every rule), -d/-a (rules),
 * -f/-r/-b (failure mode, rate and backlog limits), a new audit daemon pid - which
 * is how an intruder blinds auditd (T1562.012). Every other netlink message (the
 * routing, diag and generic traffic of ip, ss, systemd, NetworkManager) is counted as
 * filtered in the kernel after one load of the socket's protocol.
 *
 * One call sees one sendmsg(), which may carry several netlink messages: the event
 * describes the first (auditctl sends one per call). Its payload is read from the
 * socket buffer's linear data (netlink_sendmsg copies the whole message there):
 * for AUDIT_SET the struct audit_status words (mask, enabled, failure, pid,
 * rate_limit, backlog_limit), for AUDIT_ADD_RULE / AUDIT_DEL_RULE the rule's list,
 * action and field count. Words beyond the message's length read as 0.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
/* net/sock.h pulls in the kernel's internal linux/bpf.h, which since 6.10 needs
 * UAPI structs BCC's older uapi/linux/bpf.h lacks: renamed while including, as in
 * socket_connect.c (see there). */
#define bpf_wq netlink_send_compat_bpf_wq
#define bpf_rb_root netlink_send_compat_bpf_rb_root
#define bpf_rb_node netlink_send_compat_bpf_rb_node
#define bpf_refcount netlink_send_compat_bpf_refcount
struct netlink_send_compat_bpf_wq { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct netlink_send_compat_bpf_rb_root { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct netlink_send_compat_bpf_rb_node { __u64 __opaque[4]; } __attribute__((aligned(8)));
struct netlink_send_compat_bpf_refcount { __u32 __opaque[1]; } __attribute__((aligned(4)));
#include <linux/skbuff.h>
#include <net/sock.h>
#undef bpf_wq
#undef bpf_rb_root
#undef bpf_rb_node
#undef bpf_refcount
#endif

/* Option slots, see netlink_send.yaml. */
#define NETLINK_SEND_OPT_PROTOCOLS 0
#define NETLINK_SEND_OPT_AUDIT_TYPES 1
/* Policy field slots, see netlink_send.yaml. */
#define NETLINK_SEND_POLICY_PROTOCOL 0
#define NETLINK_SEND_POLICY_MSG_TYPE 1
#define NETLINK_SEND_POLICY_STATUS_MASK 2
#define NETLINK_SEND_POLICY_ENABLED 3

/* UAPI values (linux/netlink.h, linux/audit.h), stable. */
#define NETLINK_SEND_NETLINK_AUDIT 9
#define NETLINK_SEND_AUDIT_FIRST 1000 /* AUDIT_GET; audit_types bit n = type 1000 + n */
#define NETLINK_SEND_AUDIT_SET 1001
#define NETLINK_SEND_AUDIT_ADD_RULE 1011
#define NETLINK_SEND_AUDIT_DEL_RULE 1012
#define NETLINK_SEND_NLMSG_HDRLEN 16
#define NETLINK_SEND_WORDS 6

struct netlink_send_msg {
    __u32 len;
    __u16 type;
    __u16 flags;
    __u32 seq;
    __u32 pid;
    __u32 word[NETLINK_SEND_WORDS];
};

struct netlink_send_event {
    KRSID_EVENT_HEADER
    __u32 protocol;
    __u32 size;
    __u32 msg_len;
    __u32 msg_type;
    __u32 msg_flags;
    __u32 status_mask;
    __u32 enabled;
    __u32 failure;
    __u32 audit_pid;
    __u32 rate_limit;
    __u32 backlog_limit;
    __u32 rule_list;
    __u32 rule_action;
    __u32 rule_fields;
};

LSM_PROBE(netlink_send, struct sock *sk, struct sk_buff *skb)
{
    KRSID_HOOK_PROLOGUE();

    __u32 protocol = sk->sk_protocol;
    __u64 protocols = krsid_option(KRSID_HOOK_ID, NETLINK_SEND_OPT_PROTOCOLS);
    /* Rules see every message (they may name any protocol and type), so the first
     * 40 bytes are read before the filters: one helper call, on a path that is not hot. */
    __u32 size = skb->len;
    struct netlink_send_msg m = {};
    bpf_probe_read_kernel(&m, sizeof(m), skb->data);
    /* What the message does not cover reads as 0 (without branches: see krsid_decide). */
    __u64 has_header = krsid_less(size, NETLINK_SEND_NLMSG_HDRLEN) ^ 1;
    __u32 msg_type = m.type & (0 - has_header);
#pragma unroll
    for (int i = 0; i < NETLINK_SEND_WORDS; i++)
        m.word[i] &= 0 - (krsid_less(size, NETLINK_SEND_NLMSG_HDRLEN + 4 * (i + 1)) ^ 1);
    __u64 is_audit = krsid_nonzero(protocol ^ NETLINK_SEND_NETLINK_AUDIT) ^ 1;
    __u64 is_set = is_audit & (krsid_nonzero(msg_type ^ NETLINK_SEND_AUDIT_SET) ^ 1);

    struct krsid_policy_input in = {};
    in.field[NETLINK_SEND_POLICY_PROTOCOL] = protocol;
    in.field[NETLINK_SEND_POLICY_MSG_TYPE] = msg_type;
    in.field[NETLINK_SEND_POLICY_STATUS_MASK] = m.word[0] & (0 - is_set);
    in.field[NETLINK_SEND_POLICY_ENABLED] = m.word[1] & (0 - is_set);
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule) {
        if (protocol >= 64 || !((protocols >> protocol) & 1))
            KRSID_RETURN_FILTERED();
        if (is_audit) {
            __u32 n = msg_type - NETLINK_SEND_AUDIT_FIRST;
            if (n >= 64 || !((krsid_option(KRSID_HOOK_ID, NETLINK_SEND_OPT_AUDIT_TYPES) >> n) & 1))
                KRSID_RETURN_FILTERED();
        }
    }

    struct netlink_send_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct netlink_send_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    __u64 is_rule = is_audit & ((krsid_nonzero(msg_type ^ NETLINK_SEND_AUDIT_ADD_RULE) ^ 1) |
                                (krsid_nonzero(msg_type ^ NETLINK_SEND_AUDIT_DEL_RULE) ^ 1));
    e->protocol = protocol;
    e->size = size;
    e->msg_len = m.len & (0 - has_header);
    e->msg_type = msg_type;
    e->msg_flags = m.flags & (0 - has_header);
    /* struct audit_status: mask, enabled, failure, pid, rate_limit, backlog_limit */
    e->status_mask = m.word[0] & (0 - is_set);
    e->enabled = m.word[1] & (0 - is_set);
    e->failure = m.word[2] & (0 - is_set);
    e->audit_pid = m.word[3] & (0 - is_set);
    e->rate_limit = m.word[4] & (0 - is_set);
    e->backlog_limit = m.word[5] & (0 - is_set);
    /* struct audit_rule_data: flags (the list, | AUDIT_FILTER_PREPEND 0x10), action, field_count */
    e->rule_list = m.word[0] & 0x0f & (0 - is_rule);
    e->rule_action = m.word[1] & (0 - is_rule);
    e->rule_fields = m.word[2] & (0 - is_rule);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
