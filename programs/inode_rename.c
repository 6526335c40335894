// SPDX-License-Identifier: GPL-2.0
/*
 * inode_rename: a file is about to be renamed (rename, renameat2, mv on one
 * filesystem; RENAME_EXCHANGE calls the hook twice, once per side).
 *
 * Reported: renames that touch the file-integrity watch (krsid_watch_find, krsid.h),
 * which write-opens alone cannot see: a file prepared elsewhere and moved into a
 * watched directory (mv /tmp/x /etc/cron.d/x: nothing is ever opened there), a
 * watched file replaced by a rename over it (how passwd and editors write
 * /etc/shadow), or a watched file moved away. The destination is checked first:
 * new_dentry is the name being created or replaced, so its parents (and, when it
 * replaces a file, that file) are what matters; then the file being moved.
 * With the option all, every rename (noisy: editors, package managers, logrotate).
 *
 * Why inode_rename and not path_rename: both see the two dentries, and path_rename's
 * struct paths would allow bpf_d_path only from Linux 6.8 (the path hooks joined the
 * bpf_d_path allowlist then), while krsid runs from 6.1. The watch names the
 * configured path that matched; the event adds both names and directory names.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_rename.yaml. */
#define INODE_RENAME_OPT_ALL 0

/* watch_side: krsid_watch_find_either(new_dentry, old_dentry) - 1: the destination
 * (or the file it replaces) is watched, 2: the file being moved is. */
#define INODE_RENAME_NAME_LEN 128

struct inode_rename_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 watch;
    __u32 watch_level;
    __u32 watch_side;
    __u32 replaces;
    char old_dir[INODE_RENAME_NAME_LEN];
    char old_name[INODE_RENAME_NAME_LEN];
    char new_dir[INODE_RENAME_NAME_LEN];
    char new_name[INODE_RENAME_NAME_LEN];
};

LSM_PROBE(inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
          struct dentry *new_dentry)
{
    KRSID_HOOK_PROLOGUE();


    /* path_prefix matches the destination: a rule on a directory covers what is
     * moved into it (the file's new place; its parents when it is a new name). */
    struct krsid_policy_input in = {};
    in.file = new_dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in file_open: the walks' many exits ahead of the rule loop
     * made Debian 6.1's verifier walk that loop once per exit (1M instructions). */
    __u32 side = 0;
    struct krsid_watch_hit watch = krsid_watch_find_either(new_dentry, old_dentry, KRSID_WATCH_OP_RENAME, &side);
    if (!d.rule && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_RENAME_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_rename_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_rename_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    krsid_inode_id(old_dentry->d_inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->watch = watch.id;
    e->watch_level = watch.level;
    e->watch_side = side;
    /* Read explicitly: `new_dentry->d_inode != 0` came out true for a negative dentry
     * (BCC 0.26, 6.12: every rename to a new name said replaces). */
    struct inode *replaced = 0;
    bpf_probe_read_kernel(&replaced, sizeof(replaced), &new_dentry->d_inode);
    e->replaces = replaced ? 1 : 0;
    krsid_read_two_names(e->old_dir, e->old_name, e->new_dir, e->new_name, INODE_RENAME_NAME_LEN, old_dentry,
                         new_dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
