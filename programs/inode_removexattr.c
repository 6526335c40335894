// SPDX-License-Identifier: GPL-2.0
/*
 * inode_removexattr: an extended attribute is about to be removed from a file
 * (removexattr(2); `setcap -r` removes security.capability this way). Removing a
 * security label or an IMA/EVM hash is as telling as setting one (defence evasion).
 *
 * The same namespace logic, options and fields as inode_setxattr.c (see there):
 * security.* and trusted.* (but not overlayfs' trusted.overlay.*) by default, the
 * rest counted as filtered in the kernel;
 * the file's name, its directory's name and (device, inode), no path.
 * The first argument is the mount's idmap (6.3+; struct user_namespace before; none
 * before 5.12): not used, declared as void *.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_removexattr.yaml. */
#define INODE_REMOVEXATTR_OPT_SECURITY_TRUSTED_ONLY 0
#define INODE_REMOVEXATTR_OPT_OVERLAYFS 1
/* Policy field slots, see inode_removexattr.yaml. */
#define INODE_REMOVEXATTR_POLICY_NAMESPACE 0
#define INODE_REMOVEXATTR_POLICY_CAPABILITY 1

#define INODE_REMOVEXATTR_NS_OTHER 0
#define INODE_REMOVEXATTR_NS_SECURITY 1
#define INODE_REMOVEXATTR_NS_TRUSTED 2
#define INODE_REMOVEXATTR_NS_USER 3
#define INODE_REMOVEXATTR_NS_SYSTEM 4

#define INODE_REMOVEXATTR_NAME_LEN 128
#define INODE_REMOVEXATTR_DIR_LEN 128
#define INODE_REMOVEXATTR_MINORBITS KRSID_MINORBITS
#define INODE_REMOVEXATTR_MINORMASK ((1U << INODE_REMOVEXATTR_MINORBITS) - 1)

/* Eight characters as the little-endian word they form in memory. */
#define INODE_REMOVEXATTR_W(a, b, c, d, e, f, g, h)                                                          \
    ((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 |              \
     (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)

struct inode_removexattr_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 namespace;
    __u32 pad0;
    char name[INODE_REMOVEXATTR_NAME_LEN];
    char file[KRSID_PATH_LEN];
    char dir[INODE_REMOVEXATTR_DIR_LEN];
};

/* The namespace of an xattr name from its first 24 bytes (NUL-padded), whether it
 * is exactly security.capability and whether it is overlayfs' own (trusted.overlay.*);
 * without branches (see krsid_decide). */
static __always_inline __u32 inode_removexattr_namespace(const __u64 *w, __u64 *is_capability, __u64 *is_overlay)
{
    __u64 sec = (krsid_nonzero(w[0] ^ INODE_REMOVEXATTR_W('s', 'e', 'c', 'u', 'r', 'i', 't', 'y')) |
                 krsid_nonzero((w[1] & 0xff) ^ '.')) ^ 1;
    __u64 trusted = krsid_nonzero(w[0] ^ INODE_REMOVEXATTR_W('t', 'r', 'u', 's', 't', 'e', 'd', '.')) ^ 1;
    __u64 user = krsid_nonzero((w[0] & 0xffffffffffULL) ^ INODE_REMOVEXATTR_W('u', 's', 'e', 'r', '.', 0, 0, 0)) ^ 1;
    __u64 system =
        krsid_nonzero((w[0] & 0xffffffffffffffULL) ^ INODE_REMOVEXATTR_W('s', 'y', 's', 't', 'e', 'm', '.', 0)) ^ 1;
    *is_overlay = trusted & (krsid_nonzero(w[1] ^ INODE_REMOVEXATTR_W('o', 'v', 'e', 'r', 'l', 'a', 'y', '.')) ^ 1);
    *is_capability = sec & (krsid_nonzero(w[1] ^ INODE_REMOVEXATTR_W('.', 'c', 'a', 'p', 'a', 'b', 'i', 'l')) ^ 1) &
                     (krsid_nonzero(w[2] ^ INODE_REMOVEXATTR_W('i', 't', 'y', 0, 0, 0, 0, 0)) ^ 1);
    return sec * INODE_REMOVEXATTR_NS_SECURITY + trusted * INODE_REMOVEXATTR_NS_TRUSTED + user * INODE_REMOVEXATTR_NS_USER +
           system * INODE_REMOVEXATTR_NS_SYSTEM;
}

#if KRSID_HOOK_NARGS == 2
LSM_PROBE(inode_removexattr, struct dentry *dentry, const char *name)
#else
LSM_PROBE(inode_removexattr, const void *idmap, struct dentry *dentry, const char *name)
#endif
{
    KRSID_HOOK_PROLOGUE();

    __u64 head[3] = {};
    bpf_probe_read_kernel_str(head, sizeof(head), name);
    __u64 is_capability = 0, is_overlay = 0;
    __u32 ns = inode_removexattr_namespace(head, &is_capability, &is_overlay);

    struct krsid_policy_input in = {};
    in.field[INODE_REMOVEXATTR_POLICY_NAMESPACE] = ns;
    in.field[INODE_REMOVEXATTR_POLICY_CAPABILITY] = is_capability;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && ns != INODE_REMOVEXATTR_NS_SECURITY && ns != INODE_REMOVEXATTR_NS_TRUSTED &&
        krsid_option(KRSID_HOOK_ID, INODE_REMOVEXATTR_OPT_SECURITY_TRUSTED_ONLY))
        KRSID_RETURN_FILTERED();
    if (!d.rule && is_overlay && !krsid_option(KRSID_HOOK_ID, INODE_REMOVEXATTR_OPT_OVERLAYFS))
        KRSID_RETURN_FILTERED();

    struct inode_removexattr_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_removexattr_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->ino = 0;
    e->dev_major = 0;
    e->dev_minor = 0;
    struct inode *inode = dentry->d_inode;
    if (inode) {
        __u32 dev = inode->i_sb->s_dev;
        e->ino = inode->i_ino;
        e->dev_major = dev >> INODE_REMOVEXATTR_MINORBITS;
        e->dev_minor = dev & INODE_REMOVEXATTR_MINORMASK;
    }
    e->namespace = ns;
    e->pad0 = 0;
    bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
    krsid_read_dentry_name(e->file, sizeof(e->file), dentry);
    krsid_read_dentry_name(e->dir, sizeof(e->dir), dentry->d_parent);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
