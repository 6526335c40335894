// SPDX-License-Identifier: GPL-2.0
/*
 * socket_create: a socket is about to be created (socket(2), socketpair, and the
 * kernel's own sockets with kern = 1). Only integers: family, type (without
 * SOCK_NONBLOCK/SOCK_CLOEXEC, the kernel strips them before the hook), protocol.
 *
 * Why here and not socket_post_create or socket_bind: the decision comes before the
 * socket exists (a deny costs nothing to undo), and the hook reads no memory at all,
 * so the filtered case - the TCP, UDP and AF_UNIX sockets every process makes - costs
 * a few ALU ops. What is of interest, by default:
 *   - IP raw sockets (SOCK_RAW in AF_INET/AF_INET6): packet crafting, sniffing,
 *     ICMP tunnels (netlink sockets are SOCK_RAW too: not these);
 *   - AF_PACKET: sniffing and raw frames (also DHCP clients, at lease time);
 *   - AF_ALG: the kernel crypto API from user space, the way to several kernel
 *     exploits (Cloudflare's 2026 mitigation denies it to everything else);
 *   - AF_NETLINK sockets of the protocols in netlink_protocols, default XFRM (IPsec
 *     policy) and CRYPTO (crypto_user): rare, and ways into kernel bugs. Not AUDIT:
 *     PAM opens one for every login, sudo and cron job (netlink_send sees what is
 *     sent on it), nor NETFILTER: busy on container hosts.
 * Kernel-internal sockets (kern = 1) are dropped unless the option kernel is on.
 * Rules see every call, before these filters.
 */
#include "krsid.h"

/* Option slots, see socket_create.yaml. */
#define SOCKET_CREATE_OPT_FAMILIES 0
#define SOCKET_CREATE_OPT_RAW 1
#define SOCKET_CREATE_OPT_NETLINK_PROTOCOLS 2
#define SOCKET_CREATE_OPT_KERNEL 3
/* Policy field slots, see socket_create.yaml. */
#define SOCKET_CREATE_POLICY_FAMILY 0
#define SOCKET_CREATE_POLICY_TYPE 1
#define SOCKET_CREATE_POLICY_PROTOCOL 2
#define SOCKET_CREATE_POLICY_KERN 3

/* UAPI values, stable. */
#define SOCKET_CREATE_AF_INET 2
#define SOCKET_CREATE_AF_INET6 10
#define SOCKET_CREATE_AF_NETLINK 16
#define SOCKET_CREATE_SOCK_RAW 3

struct socket_create_event {
    KRSID_EVENT_HEADER
    __u32 family;
    __u32 type;
    __s32 protocol;
    __u32 kern;
};

LSM_PROBE(socket_create, int family, int type, int protocol, int kern)
{
    KRSID_HOOK_PROLOGUE();

    struct krsid_policy_input in = {};
    in.field[SOCKET_CREATE_POLICY_FAMILY] = (__u32)family;
    in.field[SOCKET_CREATE_POLICY_TYPE] = (__u32)type;
    in.field[SOCKET_CREATE_POLICY_PROTOCOL] = (__u32)protocol;
    in.field[SOCKET_CREATE_POLICY_KERN] = kern != 0;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule) {
        if (kern && !krsid_option(KRSID_HOOK_ID, SOCKET_CREATE_OPT_KERNEL))
            KRSID_RETURN_FILTERED();
        __u64 wanted = 0;
        if ((__u32)family < 64)
            wanted = (krsid_option(KRSID_HOOK_ID, SOCKET_CREATE_OPT_FAMILIES) >> family) & 1;
        /* IP raw sockets only: netlink sockets are SOCK_RAW too (ip, ss, systemd). */
        if (type == SOCKET_CREATE_SOCK_RAW && (family == SOCKET_CREATE_AF_INET || family == SOCKET_CREATE_AF_INET6) &&
            krsid_option(KRSID_HOOK_ID, SOCKET_CREATE_OPT_RAW))
            wanted = 1;
        if (family == SOCKET_CREATE_AF_NETLINK && (__u32)protocol < 64 &&
            ((krsid_option(KRSID_HOOK_ID, SOCKET_CREATE_OPT_NETLINK_PROTOCOLS) >> protocol) & 1))
            wanted = 1;
        if (!wanted)
            KRSID_RETURN_FILTERED();
    }

    struct socket_create_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct socket_create_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->family = family;
    e->type = type;
    e->protocol = protocol;
    e->kern = kern != 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
