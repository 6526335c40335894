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

#define INODE_SETXATTR_NAME_LEN 128
#define INODE_SETXATTR_DIR_LEN 128

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
    struct krsid_xattr_kind kind = krsid_xattr_namespace(head);
    __u32 ns = kind.ns;

    struct krsid_policy_input in = {};
    in.field[INODE_SETXATTR_POLICY_NAMESPACE] = ns;
    in.field[INODE_SETXATTR_POLICY_CAPABILITY] = kind.is_capability;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && ns != KRSID_XATTR_NS_SECURITY && ns != KRSID_XATTR_NS_TRUSTED && !kind.is_acl &&
        krsid_option(KRSID_HOOK_ID, INODE_SETXATTR_OPT_SECURITY_TRUSTED_ONLY))
        KRSID_RETURN_FILTERED();
    if (!d.rule && kind.is_overlay && !krsid_option(KRSID_HOOK_ID, INODE_SETXATTR_OPT_OVERLAYFS))
        KRSID_RETURN_FILTERED();

    struct inode_setxattr_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_setxattr_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(dentry->d_inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->size = size;
    e->flags = flags;
    e->namespace = ns;
    bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
    krsid_read_dentry_name(e->file, sizeof(e->file), dentry);
    krsid_read_dentry_name(e->dir, sizeof(e->dir), dentry->d_parent);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
