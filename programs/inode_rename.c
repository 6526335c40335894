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
/* Policy field slots, see inode_rename.yaml. */
#define INODE_RENAME_POLICY_WATCHED 0

#define INODE_RENAME_SIDE_NEW 1 /* the destination (or the file it replaces) is watched */
#define INODE_RENAME_SIDE_OLD 2 /* the file being moved is watched */

/* The kernel's internal dev_t (include/linux/kdev_t.h, MINORBITS): a macro. */
#define INODE_RENAME_MINORBITS 20
#define INODE_RENAME_MINORMASK ((1U << INODE_RENAME_MINORBITS) - 1)
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

    __u32 side = INODE_RENAME_SIDE_NEW;
    struct krsid_watch_hit watch = krsid_watch_find(new_dentry);
    if (!watch.id) {
        watch = krsid_watch_find(old_dentry);
        side = watch.id ? INODE_RENAME_SIDE_OLD : 0;
    }

    /* path_prefix matches the destination: a rule on a directory covers what is
     * moved into it (the file's new place; its parents when it is a new name). */
    struct krsid_policy_input in = {};
    in.field[INODE_RENAME_POLICY_WATCHED] = watch.id != 0;
    in.file = new_dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_RENAME_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_rename_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_rename_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    struct inode *inode = old_dentry->d_inode;
    e->ino = 0;
    e->dev_major = 0;
    e->dev_minor = 0;
    if (inode) {
        __u32 dev = inode->i_sb->s_dev;
        e->ino = inode->i_ino;
        e->dev_major = dev >> INODE_RENAME_MINORBITS;
        e->dev_minor = dev & INODE_RENAME_MINORMASK;
    }
    e->watch = watch.id;
    e->watch_level = watch.level;
    e->watch_side = side;
    /* Read explicitly: `new_dentry->d_inode != 0` came out true for a negative dentry
     * (BCC 0.26, 6.12: every rename to a new name said replaces). */
    struct inode *replaced = 0;
    bpf_probe_read_kernel(&replaced, sizeof(replaced), &new_dentry->d_inode);
    e->replaces = replaced ? 1 : 0;
    krsid_read_dentry_name(e->old_dir, sizeof(e->old_dir), old_dentry->d_parent);
    krsid_read_dentry_name(e->old_name, sizeof(e->old_name), old_dentry);
    krsid_read_dentry_name(e->new_dir, sizeof(e->new_dir), new_dentry->d_parent);
    krsid_read_dentry_name(e->new_name, sizeof(e->new_name), new_dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
