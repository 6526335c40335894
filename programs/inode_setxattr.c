// SPDX-License-Identifier: GPL-2.0
/*
 * inode_setxattr: an extended attribute is about to be set on a file (setxattr(2),
 * fsetxattr, lsetxattr; setcap writes security.capability this way).
 *
 * What matters for security are the security.* names (file capabilities =
 * security.capability, SELinux/Smack/AppArmor labels, IMA/EVM hashes) and trusted.*
 * (overlayfs' whiteouts and redirects, only root may set them). With
 * security_trusted_only (default) every other namespace (user.*, system.*) is
 * counted as filtered in the kernel: the name's first 8 bytes decide, no string is
 * copied for a dropped call. overlayfs' own trusted.overlay.* attributes, which the
 * kernel sets on every copy-up in a container's writable layer, are dropped too
 * unless the option overlayfs is on. POSIX ACLs (system.posix_acl_access and
 * _default) are emitted too: they come here only before 6.2, from when they have
 * their own hook (inode_set_acl, which reads their entries); here only the name and
 * size are known.
 *
 * The hook has no path (bpf_d_path is not allowed on it): the event carries the
 * file's name, its parent directory's name and (device, inode), and rules can still
 * match the file's directory with path_prefix (by inode).
 *
 * The first argument is the mount's idmap (6.3+; struct user_namespace before; none
 * before 5.12): not used, declared as void * so one text fits every kernel.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_setxattr.yaml. */
#define INODE_SETXATTR_OPT_SECURITY_TRUSTED_ONLY 0
#define INODE_SETXATTR_OPT_OVERLAYFS 1
/* Policy field slots, see inode_setxattr.yaml. */
#define INODE_SETXATTR_POLICY_NAMESPACE 0
#define INODE_SETXATTR_POLICY_CAPABILITY 1

#define INODE_SETXATTR_NS_OTHER 0
#define INODE_SETXATTR_NS_SECURITY 1
#define INODE_SETXATTR_NS_TRUSTED 2
#define INODE_SETXATTR_NS_USER 3
#define INODE_SETXATTR_NS_SYSTEM 4

#define INODE_SETXATTR_NAME_LEN 128
#define INODE_SETXATTR_DIR_LEN 128
#define INODE_SETXATTR_MINORBITS KRSID_MINORBITS
#define INODE_SETXATTR_MINORMASK ((1U << INODE_SETXATTR_MINORBITS) - 1)

/* Eight characters as the little-endian word they form in memory. */
#define INODE_SETXATTR_W(a, b, c, d, e, f, g, h)                                                          \
    ((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 |              \
     (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)

struct inode_setxattr_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u64 size;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 flags;
    __u32 namespace;
    char name[INODE_SETXATTR_NAME_LEN];
    char file[KRSID_PATH_LEN];
    char dir[INODE_SETXATTR_DIR_LEN];
};

/* The namespace of an xattr name from its first 24 bytes (NUL-padded), whether it
 * is exactly security.capability, whether it is overlayfs' own (trusted.overlay.*) and
 * whether it is a POSIX ACL (system.posix_acl_*); without branches (see krsid_decide). */
static __always_inline __u32 inode_setxattr_namespace(const __u64 *w, __u64 *is_capability, __u64 *is_overlay,
                                                      __u64 *is_acl)
{
    __u64 sec = (krsid_nonzero(w[0] ^ INODE_SETXATTR_W('s', 'e', 'c', 'u', 'r', 'i', 't', 'y')) |
                 krsid_nonzero((w[1] & 0xff) ^ '.')) ^ 1;
    __u64 trusted = krsid_nonzero(w[0] ^ INODE_SETXATTR_W('t', 'r', 'u', 's', 't', 'e', 'd', '.')) ^ 1;
    __u64 user = krsid_nonzero((w[0] & 0xffffffffffULL) ^ INODE_SETXATTR_W('u', 's', 'e', 'r', '.', 0, 0, 0)) ^ 1;
    __u64 system =
        krsid_nonzero((w[0] & 0xffffffffffffffULL) ^ INODE_SETXATTR_W('s', 'y', 's', 't', 'e', 'm', '.', 0)) ^ 1;
    *is_overlay = trusted & (krsid_nonzero(w[1] ^ INODE_SETXATTR_W('o', 'v', 'e', 'r', 'l', 'a', 'y', '.')) ^ 1);
    *is_acl = (krsid_nonzero(w[0] ^ INODE_SETXATTR_W('s', 'y', 's', 't', 'e', 'm', '.', 'p')) |
               krsid_nonzero(w[1] ^ INODE_SETXATTR_W('o', 's', 'i', 'x', '_', 'a', 'c', 'l')) |
               krsid_nonzero((w[2] & 0xff) ^ '_')) ^ 1;
    *is_capability = sec & (krsid_nonzero(w[1] ^ INODE_SETXATTR_W('.', 'c', 'a', 'p', 'a', 'b', 'i', 'l')) ^ 1) &
                     (krsid_nonzero(w[2] ^ INODE_SETXATTR_W('i', 't', 'y', 0, 0, 0, 0, 0)) ^ 1);
    return sec * INODE_SETXATTR_NS_SECURITY + trusted * INODE_SETXATTR_NS_TRUSTED + user * INODE_SETXATTR_NS_USER +
           system * INODE_SETXATTR_NS_SYSTEM;
}

#if KRSID_HOOK_NARGS == 5
LSM_PROBE(inode_setxattr, struct dentry *dentry, const char *name, const void *value, size_t size, int flags)
#else
LSM_PROBE(inode_setxattr, const void *idmap, struct dentry *dentry, const char *name, const void *value,
          size_t size, int flags)
#endif
{
    KRSID_HOOK_PROLOGUE();

    __u64 head[3] = {};
    bpf_probe_read_kernel_str(head, sizeof(head), name);
    __u64 is_capability = 0, is_overlay = 0, is_acl = 0;
    __u32 ns = inode_setxattr_namespace(head, &is_capability, &is_overlay, &is_acl);

    struct krsid_policy_input in = {};
    in.field[INODE_SETXATTR_POLICY_NAMESPACE] = ns;
    in.field[INODE_SETXATTR_POLICY_CAPABILITY] = is_capability;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && ns != INODE_SETXATTR_NS_SECURITY && ns != INODE_SETXATTR_NS_TRUSTED && !is_acl &&
        krsid_option(KRSID_HOOK_ID, INODE_SETXATTR_OPT_SECURITY_TRUSTED_ONLY))
        KRSID_RETURN_FILTERED();
    if (!d.rule && is_overlay && !krsid_option(KRSID_HOOK_ID, INODE_SETXATTR_OPT_OVERLAYFS))
        KRSID_RETURN_FILTERED();

    struct inode_setxattr_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_setxattr_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->ino = 0;
    e->dev_major = 0;
    e->dev_minor = 0;
    struct inode *inode = dentry->d_inode;
    if (inode) {
        __u32 dev = inode->i_sb->s_dev;
        e->ino = inode->i_ino;
        e->dev_major = dev >> INODE_SETXATTR_MINORBITS;
        e->dev_minor = dev & INODE_SETXATTR_MINORMASK;
    }
    e->size = size;
    e->flags = flags;
    e->namespace = ns;
    bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
    krsid_read_dentry_name(e->file, sizeof(e->file), dentry);
    krsid_read_dentry_name(e->dir, sizeof(e->dir), dentry->d_parent);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
