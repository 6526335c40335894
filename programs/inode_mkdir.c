// SPDX-License-Identifier: GPL-2.0
/*
 * inode_mkdir: a directory is about to be created (mkdir, mkdirat).
 *
 * Reported: directories whose new name the file-integrity watch covers - created in
 * a watched directory or under a watched name anywhere. A new directory is where
 * persistence is staged before any file in it is written: a systemd drop-in
 * directory (/etc/systemd/system/ssh.service.d, a *.wants directory that
 * `ln -s` then fills), a cron or sudoers sub-directory, /root/.ssh. The writes into
 * it are reported too (file_open, by the directories above them); this event says
 * when, by whom and with which permissions the place was made. With the option all,
 * every mkdir.
 *
 * mode is what the directory gets: the requested mode less the caller's umask. The
 * hook sees the requested mode with the umask already applied only on filesystems
 * without POSIX ACLs; on the others (tmpfs, ext4 by default) the ACL code applies it
 * after the hook (measured on 6.1: mkdir(0777) under umask 022 arrived as 0777).
 * Applying it here again is the same on the first kind and right on the second. A
 * default ACL on the parent, rare on system directories, decides instead.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_mkdir.yaml. */
#define INODE_MKDIR_OPT_ALL 0
/* Policy field slots, see inode_mkdir.yaml. */
#define INODE_MKDIR_POLICY_MODE 0

#define INODE_MKDIR_PERMISSION_BITS 07777

struct inode_mkdir_event {
    KRSID_EVENT_HEADER
    KRSID_NEW_NAME_MEMBERS
    __u32 mode;
    __u32 pad;
};

LSM_PROBE(inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode)
{
    KRSID_HOOK_PROLOGUE();

    __u32 perm = mode & ~krsid_current_umask() & INODE_MKDIR_PERMISSION_BITS;
    /* path_prefix matches the new directory's parents (the dentry is negative). */
    struct krsid_policy_input in = {};
    in.field[INODE_MKDIR_POLICY_MODE] = perm;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_CREATE);
    if (!d.rule && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_MKDIR_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_mkdir_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_mkdir_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    KRSID_NEW_NAME_FILL(e, dir, dentry, watch);
    e->mode = perm;
    e->pad = 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
