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

#define INODE_REMOVEXATTR_NAME_LEN 128
#define INODE_REMOVEXATTR_DIR_LEN 128

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

#if KRSID_HOOK_NARGS == 2
LSM_PROBE(inode_removexattr, struct dentry *dentry, const char *name)
#else
LSM_PROBE(inode_removexattr, const void *idmap, struct dentry *dentry, const char *name)
#endif
{
    KRSID_HOOK_PROLOGUE();

    __u64 head[3] = {};
    bpf_probe_read_kernel_str(head, sizeof(head), name);
    struct krsid_xattr_kind kind = krsid_xattr_namespace(head);
    __u32 ns = kind.ns;

    struct krsid_policy_input in = {};
    in.field[INODE_REMOVEXATTR_POLICY_NAMESPACE] = ns;
    in.field[INODE_REMOVEXATTR_POLICY_CAPABILITY] = kind.is_capability;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && ns != KRSID_XATTR_NS_SECURITY && ns != KRSID_XATTR_NS_TRUSTED &&
        krsid_option(KRSID_HOOK_ID, INODE_REMOVEXATTR_OPT_SECURITY_TRUSTED_ONLY))
        KRSID_RETURN_FILTERED();
    if (!d.rule && kind.is_overlay && !krsid_option(KRSID_HOOK_ID, INODE_REMOVEXATTR_OPT_OVERLAYFS))
        KRSID_RETURN_FILTERED();

    struct inode_removexattr_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_removexattr_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(dentry->d_inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->namespace = ns;
    e->pad0 = 0;
    bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
    krsid_read_dentry_name(e->file, sizeof(e->file), dentry);
    krsid_read_dentry_name(e->dir, sizeof(e->dir), dentry->d_parent);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
