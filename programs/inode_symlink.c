// SPDX-License-Identifier: GPL-2.0
/*
 * inode_symlink: a symbolic link is about to be created (symlink, symlinkat, ln -s).
 *
 * Reported: symlinks whose new name the file-integrity watch covers - a name placed
 * in a watched directory or a watched name anywhere. That is how a unit or a job is
 * planted without writing a file there: `systemctl enable` itself links
 * /etc/systemd/system/multi-user.target.wants/x.service to the unit file, so
 * `ln -s /tmp/evil.service /etc/systemd/system/multi-user.target.wants/` is
 * persistence that no write open sees; so is ~/.bashrc made a link to a file the
 * attacker controls. With the option all, every symlink.
 *
 * A symlink's target is only text (it is resolved when the link is followed, with
 * the follower's permissions), so the target being a watched file (ln -s
 * /etc/shadow /tmp/s) changes nothing and is not what is matched: the writes through
 * such a link reach the watched inode and file_open reports them there.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_symlink.yaml. */
#define INODE_SYMLINK_OPT_ALL 0

#define INODE_SYMLINK_TARGET_LEN 256

struct inode_symlink_event {
    KRSID_EVENT_HEADER
    KRSID_NEW_NAME_MEMBERS
    char target[INODE_SYMLINK_TARGET_LEN];
};

LSM_PROBE(inode_symlink, struct inode *dir, struct dentry *dentry, const char *old_name)
{
    KRSID_HOOK_PROLOGUE();

    /* path_prefix matches the new name's directories (the dentry is negative). */
    struct krsid_policy_input in = {};
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_CREATE);
    if (!d.rule && !watch.id && !krsid_option(KRSID_HOOK_ID, INODE_SYMLINK_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_symlink_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_symlink_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    KRSID_NEW_NAME_FILL(e, dir, dentry, watch);
    bpf_probe_read_kernel_str(e->target, sizeof(e->target), old_name);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
