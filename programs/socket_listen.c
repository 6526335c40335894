// SPDX-License-Identifier: GPL-2.0
/*
 * socket_listen: a socket is about to accept connections (listen(2)). A bind shell
 * (nc -l -e /bin/sh, socat TCP-LISTEN) or a backdoor's listener shows up here with
 * the local address and port it will serve.
 *
 * Why here and not socket_bind: every TCP server listens, and only servers do;
 * bind(2) is also called by UDP clients, by every AF_UNIX server and by clients that
 * pick a source port, so it runs far more often for far less signal. A socket that
 * listens without binding first gets its port from the kernel after this hook
 * (inet_csk_listen_start, measured on 6.12): port 0 here. A UDP "bind shell"
 * (recvfrom on a bound UDP socket) never listens: socket_bind would be needed for it.
 *
 * Only the families in the families option are emitted (default AF_INET | AF_INET6);
 * AF_UNIX listeners (systemd, D-Bus, every local daemon) are counted as filtered.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
/* net/sock.h pulls in the kernel's internal linux/bpf.h, which since 6.10 needs
 * UAPI structs BCC's older uapi/linux/bpf.h lacks: renamed while including, as in
 * socket_connect.c (see there). */
#define bpf_wq socket_listen_compat_bpf_wq
#define bpf_rb_root socket_listen_compat_bpf_rb_root
#define bpf_rb_node socket_listen_compat_bpf_rb_node
#define bpf_refcount socket_listen_compat_bpf_refcount
struct socket_listen_compat_bpf_wq { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct socket_listen_compat_bpf_rb_root { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct socket_listen_compat_bpf_rb_node { __u64 __opaque[4]; } __attribute__((aligned(8)));
struct socket_listen_compat_bpf_refcount { __u32 __opaque[1]; } __attribute__((aligned(4)));
#include <linux/net.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <net/sock.h>
#undef bpf_wq
#undef bpf_rb_root
#undef bpf_rb_node
#undef bpf_refcount
#endif

/* Option slots, see socket_listen.yaml. */
#define SOCKET_LISTEN_OPT_FAMILIES 0
/* Policy field slots, see socket_listen.yaml. */
#define SOCKET_LISTEN_POLICY_FAMILY 0
#define SOCKET_LISTEN_POLICY_PORT 1
#define SOCKET_LISTEN_POLICY_TYPE 2

#define SOCKET_LISTEN_AF_INET 2
#define SOCKET_LISTEN_AF_INET6 10

struct socket_listen_event {
    KRSID_EVENT_HEADER
    char addr6[16];
    __u32 addr4;
    __s32 backlog;
    __u16 family;
    __u16 port;
    __u16 type;
    __u16 protocol;
};

LSM_PROBE(socket_listen, struct socket *sock, int backlog)
{
    KRSID_HOOK_PROLOGUE();

    /* sock->sk may be NULL for the verifier: read through it with helper calls (a
     * failed read leaves 0), not a branch before the rule loop (see krsid_decide). */
    struct sock *sk = 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), &sock->sk);
    __u16 family = 0, port = 0;
    bpf_probe_read_kernel(&family, sizeof(family), &sk->__sk_common.skc_family);
    bpf_probe_read_kernel(&port, sizeof(port), &sk->__sk_common.skc_num); /* local port, host order */
    __u16 type = sock->type;

    struct krsid_policy_input in = {};
    in.field[SOCKET_LISTEN_POLICY_FAMILY] = family;
    in.field[SOCKET_LISTEN_POLICY_PORT] = port;
    in.field[SOCKET_LISTEN_POLICY_TYPE] = type;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    __u64 families = krsid_option(KRSID_HOOK_ID, SOCKET_LISTEN_OPT_FAMILIES);
    if (!d.rule && (family >= 64 || !(families & (1ULL << family))))
        KRSID_RETURN_FILTERED();

    struct socket_listen_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct socket_listen_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    __builtin_memset(e->addr6, 0, sizeof(e->addr6));
    e->addr4 = 0;
    if (family == SOCKET_LISTEN_AF_INET)
        bpf_probe_read_kernel(&e->addr4, sizeof(e->addr4), &sk->__sk_common.skc_rcv_saddr);
    else if (family == SOCKET_LISTEN_AF_INET6)
        bpf_probe_read_kernel(e->addr6, sizeof(e->addr6), &sk->__sk_common.skc_v6_rcv_saddr);
    e->backlog = backlog;
    e->family = family;
    e->port = port;
    e->type = type;
    __u16 protocol = 0;
    bpf_probe_read_kernel(&protocol, sizeof(protocol), &sk->sk_protocol);
    e->protocol = protocol;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
