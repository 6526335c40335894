// SPDX-License-Identifier: GPL-2.0
/*
 * inode_rmdir: a directory is about to be removed (rmdir, unlinkat AT_REMOVEDIR,
 * rm -r once the directory is empty).
 *
 * Reported: directories the file-integrity watch covers - a watched directory itself
 * (level 0), one below it, or one under a watched name. The files in it were
 * removed first and are reported by inode_unlink; this event closes the record:
 * a staged drop-in or *.wants directory taken away after use, a log directory
 * removed (under `logs`, a deletion is what is reported), /root/.ssh deleted. With
 * the option all, every rmdir.
 *
 * The kernel calls the hook before it checks that the directory is empty, so an
 * rmdir that then fails with ENOTEMPTY is reported too (the errno is not known
 * here): such a directory is still there afterwards.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_rmdir.yaml. */
#define INODE_RMDIR_OPT_ALL 0

#define INODE_RMDIR_NAME_LEN 128

struct inode_rmdir_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 watch;
    __u32 watch_level;
    char dir[INODE_RMDIR_NAME_LEN];
    char name[INODE_RMDIR_NAME_LEN];
};

LSM_PROBE(inode_rmdir, struct inode *dir, struct dentry *dentry)
{
    KRSID_HOOK_PROLOGUE();

    /* path_prefix matches the directory being removed (its inode and those above). */
    struct krsid_policy_input in = {};
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_DELETE);
    if (!d.rule && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_RMDIR_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_rmdir_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_rmdir_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(dentry->d_inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->watch = watch.id;
    e->watch_level = watch.level;
    krsid_read_names(e->dir, e->name, INODE_RMDIR_NAME_LEN, dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
