// SPDX-License-Identifier: GPL-2.0
/*
 * Fallback for inode_file_setattr on kernels without that hook (it exists since
 * 6.17): a file's attribute flags seen where chattr asks for them, at ioctl(2).
 * Never enabled on its own; krsid attaches it in place of inode_file_setattr
 * (programs/file_ioctl.yaml: fallback_for), and policy rules written for
 * inode_file_setattr apply to it.
 *
 * file_ioctl runs on every ioctl (terminals, sockets, block devices, ...): the
 * command is compared first and every other one is counted as filtered. The two
 * commands that set flags are FS_IOC_SETFLAGS (chattr; the new FS_*_FL word; also
 * its 32-bit number, which 32-bit programs use) and FS_IOC_FSSETXATTR (xfs_io
 * chattr; struct fsxattr, whose fsx_xflags carry the same immutable/append bits
 * under other values). The new flags are the caller's argument, read from user
 * memory; the old state is the inode's S_IMMUTABLE/S_APPEND, as in the hook.
 *
 * Differences from inode_file_setattr, all inherent to the hook:
 *   - The event is an attempt: the hook runs before the kernel's own checks
 *     (ownership, CAP_LINUX_IMMUTABLE, whether the filesystem has flags at all), so
 *     an unprivileged `chattr +i` that the kernel then refuses is reported too.
 *   - flags is the word the caller passed; for FS_IOC_FSSETXATTR only the flags
 *     both interfaces share (immutable, append, sync, noatime, nodump, dax,
 *     projinherit) are known here.
 *   - The argument is user memory that another thread of the caller can rewrite
 *     between this read and the kernel's own copy: a deny rule can be raced by a
 *     multi-threaded caller.
 *   - file_setattr() (6.17) does not go through ioctl; on those kernels the hook
 *     itself is used. From 6.8, 32-bit programs' ioctls take file_ioctl_compat,
 *     which this fallback does not see.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#endif

/* Option slots and policy field slots: inode_file_setattr's (file_ioctl.yaml). */
#define FILE_IOCTL_OPT_ALL 0
#define FILE_IOCTL_POLICY_IMMUTABLE 0
#define FILE_IOCTL_POLICY_APPEND_ONLY 1

/* ioctl numbers (include/uapi/linux/fs.h): _IOW('f', 2, long), its 32-bit form
 * _IOW('f', 2, int), and _IOW('X', 32, struct fsxattr). */
#define FILE_IOCTL_FS_IOC_SETFLAGS 0x40086602U
#define FILE_IOCTL_FS_IOC32_SETFLAGS 0x40046602U
#define FILE_IOCTL_FS_IOC_FSSETXATTR 0x401c5820U
#define FILE_IOCTL_CMD_SETFLAGS 1
#define FILE_IOCTL_CMD_FSSETXATTR 2

/* fsx_xflags bits and the FS_*_FL bits they stand for (fileattr_fill_xflags). */
#define FILE_IOCTL_XFLAG_IMMUTABLE 0x8
#define FILE_IOCTL_XFLAG_APPEND 0x10
#define FILE_IOCTL_XFLAG_SYNC 0x20
#define FILE_IOCTL_XFLAG_NOATIME 0x40
#define FILE_IOCTL_XFLAG_NODUMP 0x80
#define FILE_IOCTL_XFLAG_PROJINHERIT 0x200
#define FILE_IOCTL_XFLAG_DAX 0x8000
#define FILE_IOCTL_FL_SYNC 0x8
#define FILE_IOCTL_FL_NODUMP 0x40
#define FILE_IOCTL_FL_NOATIME 0x80
#define FILE_IOCTL_FL_DAX 0x02000000
#define FILE_IOCTL_FL_PROJINHERIT 0x20000000

#define FILE_IOCTL_NAME_LEN 128

struct file_ioctl_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 flags;
    __u32 immutable;
    __u32 append_only;
    __u32 cmd;
    char dir[FILE_IOCTL_NAME_LEN];
    char file[FILE_IOCTL_NAME_LEN];
};

/* The FS_*_FL bits of an fsx_xflags word (shifts: no branches before krsid_decide). */
static __always_inline __u32 file_ioctl_xflags_to_flags(__u32 x)
{
    return (x & (FILE_IOCTL_XFLAG_IMMUTABLE | FILE_IOCTL_XFLAG_APPEND | FILE_IOCTL_XFLAG_NOATIME)) << 1 |
           (x & FILE_IOCTL_XFLAG_SYNC) >> 2 | (x & FILE_IOCTL_XFLAG_NODUMP) >> 1 |
           (x & FILE_IOCTL_XFLAG_PROJINHERIT) << 20 | (x & FILE_IOCTL_XFLAG_DAX) << 10;
}

LSM_PROBE(file_ioctl, struct file *file, unsigned int cmd, unsigned long arg)
{
    KRSID_HOOK_PROLOGUE();

    /* Which command, without branches (see krsid_decide): 1 or 0 each. */
    __u64 is_setflags =
        (krsid_nonzero(cmd ^ FILE_IOCTL_FS_IOC_SETFLAGS) & krsid_nonzero(cmd ^ FILE_IOCTL_FS_IOC32_SETFLAGS)) ^ 1;
    __u64 is_fssetxattr = krsid_nonzero(cmd ^ FILE_IOCTL_FS_IOC_FSSETXATTR) ^ 1;
    if (!(is_setflags | is_fssetxattr))
        KRSID_RETURN_FILTERED();

    /* Both start with a 32-bit word: the flags, or struct fsxattr's fsx_xflags. An
     * unreadable argument fails the ioctl with EFAULT anyway: nothing to report. */
    __u32 word = 0;
    if (bpf_probe_read_user(&word, sizeof(word), (const void *)arg))
        KRSID_RETURN_FILTERED();
    __u32 new_flags = (word & -(__u32)is_setflags) | (file_ioctl_xflags_to_flags(word) & -(__u32)is_fssetxattr);

    struct inode *inode = file->f_inode;
    struct dentry *dentry = file->f_path.dentry;
    struct krsid_file_attr_change change = krsid_file_attr_change(inode, new_flags);

    struct krsid_policy_input in = {};
    in.field[FILE_IOCTL_POLICY_IMMUTABLE] = change.immutable;
    in.field[FILE_IOCTL_POLICY_APPEND_ONLY] = change.append_only;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && !change.immutable && !change.append_only &&
        !krsid_option(KRSID_HOOK_ID, FILE_IOCTL_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct file_ioctl_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct file_ioctl_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->flags = new_flags;
    e->immutable = change.immutable;
    e->append_only = change.append_only;
    e->cmd = is_setflags * FILE_IOCTL_CMD_SETFLAGS + is_fssetxattr * FILE_IOCTL_CMD_FSSETXATTR;
    krsid_read_names(e->dir, e->file, FILE_IOCTL_NAME_LEN, dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
