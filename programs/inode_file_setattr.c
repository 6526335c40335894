// SPDX-License-Identifier: GPL-2.0
/*
 * inode_file_setattr: a file's attribute flags are about to change (chattr: the
 * FS_IOC_SETFLAGS and FS_IOC_FSSETXATTR ioctls, and the file_setattr() syscall). The
 * hook exists since Linux 6.17; on older kernels krsid attaches the fallback
 * file_ioctl in its place (programs/file_ioctl.c).
 *
 * What matters for security are the immutable (chattr +i) and append-only (+a)
 * flags: attackers set +i on what they planted (a cron file, authorized_keys,
 * ld.so.preload, a miner) so that neither the admin nor a competing intruder can
 * remove it, and take +i/+a off a log or a system file before they rewrite it.
 * Changing either needs CAP_LINUX_IMMUTABLE, which the kernel has checked when the
 * hook runs (vfs_fileattr_set: fileattr_set_prepare, the hook, the filesystem): a
 * call that reaches it is allowed, and only a filesystem that does not keep a flag
 * can still refuse it. By default only calls
 * that add or remove one of the two are emitted; every other flag change (nodump,
 * noatime, nocow on a journal file) is counted as filtered, unless the option all
 * is on.
 *
 * fa->flags is the whole new flag word (FS_*_FL) whichever interface set it: the
 * kernel filled in the flags the call leaves alone before the hook. The old state is
 * the inode's S_IMMUTABLE/S_APPEND, which every filesystem keeps in step with its own
 * flags. The hook has no path: the event carries the file's name, its directory's
 * name and (device, inode).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fileattr.h>
#endif

/* Option slots, see inode_file_setattr.yaml (file_ioctl has the same). */
#define INODE_FILE_SETATTR_OPT_ALL 0
/* Policy field slots, see inode_file_setattr.yaml (file_ioctl has the same). */
#define INODE_FILE_SETATTR_POLICY_IMMUTABLE 0
#define INODE_FILE_SETATTR_POLICY_APPEND_ONLY 1

#define INODE_FILE_SETATTR_NAME_LEN 128

struct inode_file_setattr_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 flags;
    __u32 immutable;
    __u32 append_only;
    __u32 pad;
    char dir[INODE_FILE_SETATTR_NAME_LEN];
    char file[INODE_FILE_SETATTR_NAME_LEN];
};

LSM_PROBE(inode_file_setattr, struct dentry *dentry, struct file_kattr *fa)
{
    KRSID_HOOK_PROLOGUE();

    __u32 new_flags = 0;
    bpf_probe_read_kernel(&new_flags, sizeof(new_flags), &fa->flags);
    struct inode *inode = 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), &dentry->d_inode);
    struct krsid_file_attr_change change = krsid_file_attr_change(inode, new_flags);

    struct krsid_policy_input in = {};
    in.field[INODE_FILE_SETATTR_POLICY_IMMUTABLE] = change.immutable;
    in.field[INODE_FILE_SETATTR_POLICY_APPEND_ONLY] = change.append_only;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && !change.immutable && !change.append_only &&
        !krsid_option(KRSID_HOOK_ID, INODE_FILE_SETATTR_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_file_setattr_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_file_setattr_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->flags = new_flags;
    e->immutable = change.immutable;
    e->append_only = change.append_only;
    e->pad = 0;
    krsid_read_names(e->dir, e->file, INODE_FILE_SETATTR_NAME_LEN, dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
