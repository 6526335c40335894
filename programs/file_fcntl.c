// SPDX-License-Identifier: GPL-2.0
/*
 * file_fcntl: fcntl(2) on an open file, before the command runs.
 *
 * Reported: F_SETFL taking O_APPEND off a file that holds data below a `logs` entry
 * of the file-integrity watch (KRSID_WATCH_OP_REWRITE, as file_open's edits in
 * place). A log opened with O_APPEND can only grow, so file_open leaves that open
 * unreported; with the flag taken off, every write lands where the file offset
 * points: lines overwritten in place, and no open shows it. With the option all,
 * every F_SETFL that takes O_APPEND off a file with data, wherever it is.
 *
 * Every other call (F_GETFL, F_SETFD, F_SETFL toggling O_NONBLOCK on sockets and
 * pipes: nearly all of them) stops at three compares of values the hook already
 * has, after the policy, and is counted as filtered.
 *
 * The kernel refuses the change afterwards when the file is append-only (chattr +a:
 * setfl's IS_APPEND check); the attempt is reported all the same. Not seen:
 * pwritev2(RWF_NOAPPEND) (Linux 6.9+), which bypasses O_APPEND for one write and
 * passes no LSM check that sees its flags. The hook has no path (bpf_d_path is not
 * allowed here): the event names the file, its directory and (device, inode).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#endif

/* Option slots, see file_fcntl.yaml. */
#define FILE_FCNTL_OPT_ALL 0
/* Policy field slots, see file_fcntl.yaml. */
#define FILE_FCNTL_POLICY_CMD 0
#define FILE_FCNTL_POLICY_APPEND 1

/* Kernel constants BTF cannot carry (include/uapi/asm-generic/fcntl.h, fs/fcntl.c). */
#define FILE_FCNTL_F_SETFL 4
#define FILE_FCNTL_O_APPEND 0x400
/* SETFL_MASK: the flags F_SETFL can change (O_APPEND, O_NONBLOCK, O_NDELAY, FASYNC,
 * O_DIRECT, O_NOATIME); the others keep their value. */
#define FILE_FCNTL_SETFL_MASK 0x46c00

#define FILE_FCNTL_NAME_LEN 128

struct file_fcntl_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u64 size;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 cmd;
    __u32 flags;
    __u32 new_flags;
    __u32 append;
    __u32 watch;
    __u32 watch_level;
    char dir[FILE_FCNTL_NAME_LEN];
    char file[FILE_FCNTL_NAME_LEN];
};

LSM_PROBE(file_fcntl, struct file *file, unsigned int cmd, unsigned long arg)
{
    KRSID_HOOK_PROLOGUE();

    __u32 fflags = file->f_flags;
    struct dentry *dentry = file->f_path.dentry;
    /* 1 when the call is F_SETFL and takes O_APPEND off: the one change reported. */
    __u32 drops_append = (__u32)(krsid_nonzero(cmd == FILE_FCNTL_F_SETFL) & krsid_nonzero(fflags & FILE_FCNTL_O_APPEND) &
                                 (krsid_nonzero(arg & FILE_FCNTL_O_APPEND) ^ 1));

    struct krsid_policy_input in = {};
    in.field[FILE_FCNTL_POLICY_CMD] = cmd;
    in.field[FILE_FCNTL_POLICY_APPEND] = drops_append;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    __s64 size = file->f_inode->i_size;
    /* Data there to overwrite once the appends stop. */
    int rewrites = drops_append && size > 0;
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = {};
    if (rewrites)
        watch = krsid_watch_find(dentry, KRSID_WATCH_OP_REWRITE);
    if (!d.rule && !watch.id && !(rewrites && krsid_option(KRSID_HOOK_ID, FILE_FCNTL_OPT_ALL)))
        KRSID_RETURN_FILTERED();

    struct file_fcntl_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct file_fcntl_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(file->f_inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->size = size;
    e->cmd = cmd;
    e->flags = fflags;
    e->new_flags = cmd == FILE_FCNTL_F_SETFL ? (fflags & ~FILE_FCNTL_SETFL_MASK) | (arg & FILE_FCNTL_SETFL_MASK) : fflags;
    e->append = drops_append;
    e->watch = watch.id;
    e->watch_level = watch.level;
    krsid_read_names(e->dir, e->file, FILE_FCNTL_NAME_LEN, dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
