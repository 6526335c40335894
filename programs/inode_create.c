// SPDX-License-Identifier: GPL-2.0
/*
 * inode_create: a regular file is about to be created (open or openat with O_CREAT
 * of a name that does not exist, creat, mknod of a regular file).
 *
 * The hook of policy rules on file creation. A deny here refuses the open before the
 * name exists: nothing is left behind. A file_open deny of the same open comes after
 * the kernel has made the name, so an empty file stays (README: file-integrity watch).
 *
 * Reported: what a policy rule matches (audit, would_deny, deny). With the option
 * watched, every file created in a watched directory or under a watched name, with the
 * permissions it gets; off by default because file_open reports the same open, with
 * the full path, as a write in a watched place. With the option all, every creation.
 *
 * mode is what the file gets: the requested mode less the caller's umask (applied
 * again as in inode_mkdir: on filesystems with POSIX ACLs the kernel applies it after
 * this hook). The kernel calls this hook only for a name that does not exist yet (an
 * O_CREAT open of an existing file is an open: file_open), also on filesystems that
 * create and open in one step (NFS, FUSE, 9p: the check comes before their
 * atomic_open).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_create.yaml. */
#define INODE_CREATE_OPT_ALL 0
#define INODE_CREATE_OPT_WATCHED 1
/* Policy field slots, see inode_create.yaml. */
#define INODE_CREATE_POLICY_MODE 0

#define INODE_CREATE_PERMISSION_BITS 07777

struct inode_create_event {
    KRSID_EVENT_HEADER
    KRSID_NEW_NAME_MEMBERS
    __u32 mode;
    __u32 pad;
};

LSM_PROBE(inode_create, struct inode *dir, struct dentry *dentry, umode_t mode)
{
    KRSID_HOOK_PROLOGUE();

    /* The shipped default (rules only) with no rule for this hook: done before the
     * umask's three helper calls (measured under TCG: 900 ns a filtered call with
     * them, see README: the watch walk). */
    int all = krsid_option(KRSID_HOOK_ID, INODE_CREATE_OPT_ALL) != 0;
    int watched = krsid_option(KRSID_HOOK_ID, INODE_CREATE_OPT_WATCHED) != 0;
    if (!all && !watched && !krsid_hook_has_rules(KRSID_HOOK_ID))
        KRSID_RETURN_FILTERED();

    __u32 perm = mode & ~krsid_current_umask() & INODE_CREATE_PERMISSION_BITS;
    /* path_prefix matches the new file's directories (the dentry is negative). */
    struct krsid_policy_input in = {};
    in.field[INODE_CREATE_POLICY_MODE] = perm;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && !all && !watched)
        KRSID_RETURN_FILTERED(); /* rules that did not match this call */
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_CREATE);
    if (!d.rule && !watch.id && !all)
        KRSID_RETURN_FILTERED();

    struct inode_create_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_create_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    KRSID_NEW_NAME_FILL(e, dir, dentry, watch);
    e->mode = perm;
    e->pad = 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
