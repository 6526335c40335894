// SPDX-License-Identifier: GPL-2.0
/*
 * connect() on a socket: outgoing TCP connections, UDP "connections", local
 * (AF_UNIX) connections. address is the kernel's copy of the caller's sockaddr
 * (move_addr_to_kernel), addrlen bytes of it are valid.
 *
 * Addresses are stored as the raw bytes of the sockaddr (network byte order):
 * addr4 is sin_addr.s_addr, addr6 is sin6_addr; user space prints them as text
 * (types ipv4/ipv6). The port is converted to host byte order.
 *
 * Noisy: every connect() runs this. The families option (a bit mask over address
 * family numbers) drops other families in the kernel; default AF_INET | AF_INET6.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
/*
 * net/sock.h (for struct sock) pulls in the kernel's internal linux/bpf.h, which
 * since 6.10 takes sizeof/alignof of UAPI structs (bpf_wq, bpf_rb_root,
 * bpf_rb_node, bpf_refcount) that BCC's own, older copy of uapi/linux/bpf.h
 * (force-included first; bcc 0.26 = Linux 6.1) lacks: "invalid application of
 * 'sizeof' to an incomplete type". Rename them while including and supply the
 * kernel's UAPI definitions under the new names: correct whether or not BCC's
 * copy has them (its definitions keep their own names), harmless on kernels that
 * do not use them.
 */
#define bpf_wq socket_connect_compat_bpf_wq
#define bpf_rb_root socket_connect_compat_bpf_rb_root
#define bpf_rb_node socket_connect_compat_bpf_rb_node
#define bpf_refcount socket_connect_compat_bpf_refcount
struct socket_connect_compat_bpf_wq { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct socket_connect_compat_bpf_rb_root { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct socket_connect_compat_bpf_rb_node { __u64 __opaque[4]; } __attribute__((aligned(8)));
struct socket_connect_compat_bpf_refcount { __u32 __opaque[1]; } __attribute__((aligned(4)));
#include <linux/net.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/un.h>
#include <net/sock.h>
#undef bpf_wq
#undef bpf_rb_root
#undef bpf_rb_node
#undef bpf_refcount
#endif

/* Option slots, see socket_connect.yaml. */
#define SOCKET_CONNECT_OPT_FAMILIES 0
/* Policy field slots, see socket_connect.yaml. */
#define SOCKET_CONNECT_POLICY_FAMILY 0
#define SOCKET_CONNECT_POLICY_PORT 1
#define SOCKET_CONNECT_POLICY_TYPE 2

/* Address families (UAPI, stable; macros, so not in BTF). */
#define SOCKET_CONNECT_AF_UNIX 1
#define SOCKET_CONNECT_AF_INET 2
#define SOCKET_CONNECT_AF_INET6 10

#define SOCKET_CONNECT_SUN_PATH_OFF 2     /* offsetof(struct sockaddr_un, sun_path) */
#define SOCKET_CONNECT_UNIX_PATH_LEN 108  /* sizeof(sun_path) (UNIX_PATH_MAX) */

#define SOCKET_CONNECT_FLAG_ABSTRACT 0x1

struct socket_connect_event {
    KRSID_EVENT_HEADER
    char addr6[16];
    __u32 addr4;
    __u32 addrlen;
    __u16 family;
    __u16 port;
    __u16 type;
    __u16 protocol;
    __u32 flags;
    __u32 pad0;
    char unix_path[SOCKET_CONNECT_UNIX_PATH_LEN];
};

LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
    KRSID_HOOK_PROLOGUE();

    /* Family and port without branches (see krsid_decide: each distinct state here
     * would verify the rule loop once more). The kernel's copy of the address is a
     * sockaddr_storage (128 bytes), so its first 4 bytes are always readable; what
     * addrlen does not cover is masked off. sin_port and sin6_port are both at
     * offset 2. */
    __u16 head[2] = {};
    bpf_probe_read_kernel(head, sizeof(head), address);
    __s64 len = addrlen;
    __u64 has_family = krsid_less(len, 2) ^ 1;
    __u16 family = head[0] & (0 - has_family);
    __u64 is4 = krsid_nonzero(family ^ SOCKET_CONNECT_AF_INET) ^ 1;
    __u64 is6 = krsid_nonzero(family ^ SOCKET_CONNECT_AF_INET6) ^ 1;
    __u64 need = sizeof(struct sockaddr_in) * is4 + sizeof(struct sockaddr_in6) * is6;
    __u64 has_port = (is4 | is6) & (krsid_less(len, need) ^ 1);
    __u16 port = __builtin_bswap16(head[1]) & (0 - has_port);

    /* Rules see every connect(), before the families filter. */
    struct krsid_policy_input in = {};
    in.field[SOCKET_CONNECT_POLICY_FAMILY] = family;
    in.field[SOCKET_CONNECT_POLICY_PORT] = port;
    in.field[SOCKET_CONNECT_POLICY_TYPE] = sock->type;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    __u64 families = krsid_option(KRSID_HOOK_ID, SOCKET_CONNECT_OPT_FAMILIES);
    if (!d.rule && (family >= 64 || !(families & (1ULL << family))))
        KRSID_RETURN_FILTERED();

    struct socket_connect_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct socket_connect_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    __builtin_memset(e->addr6, 0, sizeof(e->addr6));
    e->addr4 = 0;
    e->addrlen = addrlen;
    e->family = family;
    e->port = port;
    e->type = sock->type;
    e->protocol = 0;
    struct sock *sk = sock->sk;
    if (sk)
        e->protocol = sk->sk_protocol;
    e->flags = 0;
    e->pad0 = 0;
    e->unix_path[0] = 0;

    if (family == SOCKET_CONNECT_AF_INET && addrlen >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in *sin = (struct sockaddr_in *)address;
        bpf_probe_read_kernel(&e->addr4, sizeof(e->addr4), &sin->sin_addr);
    } else if (family == SOCKET_CONNECT_AF_INET6 && addrlen >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)address;
        bpf_probe_read_kernel(e->addr6, sizeof(e->addr6), &sin6->sin6_addr);
    } else if (family == SOCKET_CONNECT_AF_UNIX && addrlen > SOCKET_CONNECT_SUN_PATH_OFF) {
        /* sun_path holds addrlen - 2 bytes, not necessarily NUL-terminated; the
         * kernel's copy is a sockaddr_storage (128 bytes), so reading all of
         * sun_path stays inside it; what lies past addrlen is cut off. (A read of
         * exactly addrlen - 2 bytes needs a variable size, which clang's code for
         * it kept the verifier from bounding.) An abstract name starts with a NUL:
         * shown as "@name", as ss(8) does. */
        __u32 plen = addrlen - SOCKET_CONNECT_SUN_PATH_OFF;
        bpf_probe_read_kernel(e->unix_path, sizeof(e->unix_path),
                              (const char *)address + SOCKET_CONNECT_SUN_PATH_OFF);
        if (plen < SOCKET_CONNECT_UNIX_PATH_LEN)
            e->unix_path[plen & 0x7f] = 0;
        if (e->unix_path[0] == 0) {
            e->flags |= SOCKET_CONNECT_FLAG_ABSTRACT;
            e->unix_path[0] = '@';
        }
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
