// SPDX-License-Identifier: GPL-2.0
/*
 * inode_link: a hard link is about to be created (link, linkat, ln without -s).
 *
 * Reported: links that touch the file-integrity watch (krsid_watch_find, krsid.h):
 * a second name for a watched file (ln /etc/shadow /tmp/s: the name-based
 * sensitive_paths of file_open never sees /tmp/s; the watch still does, by inode)
 * or a new name placed in a watched directory (ln /tmp/job /etc/cron.d/job). The
 * file being linked is checked first, then the new name's directories. With the
 * option all, every hard link.
 *
 * protected_hardlinks (fs.protected_hardlinks=1, the default) already refuses
 * links to files the caller does not own and cannot read and write; this hook runs
 * after that check, so what is reported here really happens.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_link.yaml. */
#define INODE_LINK_OPT_ALL 0

/* watch_side: krsid_watch_find_either(old_dentry, new_dentry) - 1: the file being
 * linked is watched, 2: the new name lies in a watched directory. */
#define INODE_LINK_NAME_LEN 128

struct inode_link_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 watch;
    __u32 watch_level;
    __u32 watch_side;
    __u32 nlink;
    char old_dir[INODE_LINK_NAME_LEN];
    char old_name[INODE_LINK_NAME_LEN];
    char new_dir[INODE_LINK_NAME_LEN];
    char new_name[INODE_LINK_NAME_LEN];
};

LSM_PROBE(inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)
{
    KRSID_HOOK_PROLOGUE();


    /* path_prefix matches the file being linked (its identity and directories). */
    struct krsid_policy_input in = {};
    in.file = old_dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in file_open: the walks' many exits ahead of the rule loop
     * made Debian 6.1's verifier walk that loop once per exit (1M instructions). */
    __u32 side = 0;
    struct krsid_watch_hit watch = krsid_watch_find_either(old_dentry, new_dentry, KRSID_WATCH_OP_CREATE, &side);
    if (!d.rule && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_LINK_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_link_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_link_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    struct inode *inode = old_dentry->d_inode;
    krsid_inode_id(inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->nlink = inode ? inode->i_nlink : 0;
    e->watch = watch.id;
    e->watch_level = watch.level;
    e->watch_side = side;
    krsid_read_two_names(e->old_dir, e->old_name, e->new_dir, e->new_name, INODE_LINK_NAME_LEN, old_dentry,
                         new_dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
