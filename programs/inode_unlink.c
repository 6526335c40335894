// SPDX-License-Identifier: GPL-2.0
/*
 * Deletion of a running executable (KRSI's example): unlink() of a file that some
 * task is executing right now, the classic "run the dropper, delete it" pattern.
 *
 * The signal: inode->i_writecount < 0. Exec denies writes to the file it runs
 * (deny_write_access(): each holder decrements i_writecount) for as long as a
 * process runs from it; measured on 6.12 in the VM: -1 for a file one process
 * runs, 0 for any other file, -N for a binary N processes run. Other holders of
 * that denial are rare and short: an exec in progress (a binary that is being
 * started) and kernel_read_file() (a module or firmware file while it is loaded);
 * they count as running too. Files opened for writing have i_writecount > 0.
 *
 * On overlayfs (measured on 6.12, the VM's /tmp) the hook runs twice: for the
 * overlay's dentry, whose inode is the write-denied one (emitted), then for the
 * upper layer's file that overlayfs removes in turn (i_writecount 0: filtered;
 * with `all`, a second event with running = no). With the option `all`, every
 * unlink is emitted (noisy).
 *
 * Also reported: the unlink of a file the file-integrity watch covers
 * (krsid_watch_find, krsid.h): a watched file or one below a watched directory
 * deleted (a cron job or sudoers drop-in removed after use), and watched names
 * anywhere (.bash_history: the history a shell would leave).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, set from the config through programs/inode_unlink.yaml. */
#define INODE_UNLINK_OPT_ALL 0

#define INODE_UNLINK_INFO_RUNNING 0x1
/* Policy field slots, see inode_unlink.yaml. */
#define INODE_UNLINK_POLICY_RUNNING 0

struct inode_unlink_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __s32 writecount;
    __u32 info;
    __u32 watch;
    __u32 watch_level;
    char name[KRSID_PATH_LEN];
};

LSM_PROBE(inode_unlink, struct inode *dir, struct dentry *dentry)
{
    KRSID_HOOK_PROLOGUE();

    struct inode *inode = dentry->d_inode;
    int writecount = 0;
    if (inode)
        writecount = inode->i_writecount.counter;
    int running = writecount < 0;

    /* path_prefix matches the file being removed. */
    struct krsid_policy_input in = {};
    in.field[INODE_UNLINK_POLICY_RUNNING] = running;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_DELETE);  /* after the policy: see inode_rename.c */
    if (!d.rule && !running && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_UNLINK_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_unlink_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_unlink_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->writecount = writecount;
    e->info = running ? INODE_UNLINK_INFO_RUNNING : 0;
    e->watch = watch.id;
    e->watch_level = watch.level;
    krsid_read_dentry_name(e->name, sizeof(e->name), dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
