// SPDX-License-Identifier: GPL-2.0
/*
 * inode_setattr: a file's attributes are about to change (notify_change): chmod,
 * chown, utimes/utimensat (touch), truncate, and the kernel's own changes on the
 * way (O_TRUNC opens, dropping setuid bits on chown or write).
 *
 * Why this hook and not path_chmod/path_chown: it is the one place that sees every
 * attribute change - mode, owner, explicitly set timestamps (timestomping) and
 * truncation - with both the requested values (struct iattr) and the current ones
 * (the inode), for one fixed cost per call. path_chmod and path_chown see only mode
 * and owner (two programs, no timestamps, no truncation); their one advantage, a
 * struct path for bpf_d_path, would cost a path walk on every call. Here the event
 * carries the file's name, its directory's name and (device, inode).
 *
 * Every O_TRUNC open and touch comes here, so the common case must stay cheap: the
 * requested and current values are read with plain loads and the filter is
 * arithmetic. By default only security-relevant changes are emitted:
 *   MODE_BITS  setuid, setgid or sticky bits added by a mode change
 *   OWNER      the owner or group really changes (chown to the same ids is not)
 *   WATCHED_MODE  any permission change of a file the file-integrity watch covers
 *              (chmod 0666 /etc/shadow)
 *   WATCHED_TIMES atime or mtime set to an explicit value (utimensat with times,
 *              touch -d/-r) on a file the watch covers: timestomping of what an
 *              attacker changed (a cron drop-in, authorized_keys)
 *   WATCHED_TRUNCATE truncate(2) cutting data off a file the watch covers, `logs`
 *              entries included (truncate -s 0 /var/log/auth.log); an O_TRUNC open
 *              is file_open's event
 * The watch walk (krsid_watch_find) runs only for mode changes, explicit times and
 * shrinking truncations the filters above did not already emit.
 * With the option timestamps, explicit times on any file (TIMES_SET). It is off by
 * default: dpkg, tar, cp -p and logrotate set them on every file they write
 * (measured: 147 events per 1,000 benign execs, bench/run.py benign), and a
 * timestomping tool's exec event (touch -r, with its args) is recorded anyway.
 * Truncation (ATTR_SIZE) is emitted with the option truncate, everything with all.
 *
 * The first argument is the mount's idmap since 6.3 (none before): declared as
 * void * and skipped by the argument count, so one text fits every kernel.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_setattr.yaml. */
#define INODE_SETATTR_OPT_ALL 0
#define INODE_SETATTR_OPT_TIMESTAMPS 1
#define INODE_SETATTR_OPT_TRUNCATE 2
/* Policy field slots, see inode_setattr.yaml. */
#define INODE_SETATTR_POLICY_VALID 0
#define INODE_SETATTR_POLICY_MODE 1
#define INODE_SETATTR_POLICY_ADDED 2
#define INODE_SETATTR_POLICY_NEW_UID 3

/* ATTR_* of include/linux/fs.h (macros: not in BTF; the same from 5.x to 7.x). */
#define INODE_SETATTR_ATTR_MODE (1U << 0)
#define INODE_SETATTR_ATTR_UID (1U << 1)
#define INODE_SETATTR_ATTR_GID (1U << 2)
#define INODE_SETATTR_ATTR_SIZE (1U << 3)
#define INODE_SETATTR_ATTR_ATIME (1U << 4)
#define INODE_SETATTR_ATTR_MTIME (1U << 5)
#define INODE_SETATTR_ATTR_ATIME_SET (1U << 7)
#define INODE_SETATTR_ATTR_MTIME_SET (1U << 8)
#define INODE_SETATTR_ATTR_OPEN (1U << 15)

#define INODE_SETATTR_PERM_BITS 07777
#define INODE_SETATTR_SPECIAL_BITS 07000 /* S_ISUID | S_ISGID | S_ISVTX */

/* Why an event was emitted (the `changes` field). */
#define INODE_SETATTR_CHANGE_MODE_BITS 0x1
#define INODE_SETATTR_CHANGE_OWNER 0x2
#define INODE_SETATTR_CHANGE_TIMES_SET 0x4
#define INODE_SETATTR_CHANGE_TRUNCATE 0x8
#define INODE_SETATTR_CHANGE_WATCHED_MODE 0x10
#define INODE_SETATTR_CHANGE_WATCHED_TIMES 0x20
#define INODE_SETATTR_CHANGE_WATCHED_TRUNCATE 0x40

#define INODE_SETATTR_DIR_LEN 128
#define INODE_SETATTR_MINORBITS KRSID_MINORBITS
#define INODE_SETATTR_MINORMASK ((1U << INODE_SETATTR_MINORBITS) - 1)

struct inode_setattr_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __s64 size;
    __s64 old_size;
    __s64 atime;
    __s64 mtime;
    __s64 old_mtime;
    __u32 valid;
    __u32 changes;
    __u32 mode;
    __u32 old_mode;
    __u32 added;
    __u32 new_uid;
    __u32 old_uid;
    __u32 new_gid;
    __u32 old_gid;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 watch;
    __u32 watch_level;
    __u32 pad0;
    char file[KRSID_PATH_LEN];
    char dir[INODE_SETATTR_DIR_LEN];
};

#if KRSID_HOOK_NARGS == 2
LSM_PROBE(inode_setattr, struct dentry *dentry, struct iattr *attr)
#else
LSM_PROBE(inode_setattr, const void *idmap, struct dentry *dentry, struct iattr *attr)
#endif
{
    KRSID_HOOK_PROLOGUE();

    /* The verifier of 7.x knows d_inode may be NULL (a negative dentry): such a call
     * has no file to change; it is counted as filtered. */
    struct inode *inode = dentry->d_inode;
    if (!inode)
        KRSID_RETURN_FILTERED();

    /* Without branches (see krsid_decide): every value is computed whether or not
     * the call changes it, and masked by its ATTR_* bit. */
    __u32 valid = attr->ia_valid;
    __u32 old_mode = inode->i_mode & INODE_SETATTR_PERM_BITS;
    __u32 old_uid = inode->i_uid.val, old_gid = inode->i_gid.val;
    __u64 has_mode = valid & INODE_SETATTR_ATTR_MODE;
    __u64 has_uid = (valid & INODE_SETATTR_ATTR_UID) >> 1;
    __u64 has_gid = (valid & INODE_SETATTR_ATTR_GID) >> 2;
    __u32 mode = ((attr->ia_mode & INODE_SETATTR_PERM_BITS) & (0 - has_mode)) | (old_mode & (has_mode - 1));
    __u32 new_uid = (attr->ia_uid.val & (0 - has_uid)) | (old_uid & (has_uid - 1));
    __u32 new_gid = (attr->ia_gid.val & (0 - has_gid)) | (old_gid & (has_gid - 1));
    __u32 added = mode & ~old_mode;
    _Static_assert(INODE_SETATTR_CHANGE_MODE_BITS == 1 && INODE_SETATTR_CHANGE_OWNER == 2 &&
                       INODE_SETATTR_CHANGE_TIMES_SET == 4 && INODE_SETATTR_CHANGE_TRUNCATE == 8,
                   "changes is built bit by bit");
    __u32 changes =
        krsid_nonzero(added & INODE_SETATTR_SPECIAL_BITS) |
        (krsid_nonzero(new_uid ^ old_uid) | krsid_nonzero(new_gid ^ old_gid)) << 1 |
        krsid_nonzero(valid & (INODE_SETATTR_ATTR_ATIME_SET | INODE_SETATTR_ATTR_MTIME_SET)) << 2 |
        krsid_nonzero(valid & INODE_SETATTR_ATTR_SIZE) << 3;

    struct krsid_policy_input in = {};
    in.field[INODE_SETATTR_POLICY_VALID] = valid;
    in.field[INODE_SETATTR_POLICY_MODE] = mode;
    in.field[INODE_SETATTR_POLICY_ADDED] = added;
    in.field[INODE_SETATTR_POLICY_NEW_UID] = new_uid;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    struct krsid_watch_hit watch = {};
    if (!d.rule && !krsid_option(KRSID_HOOK_ID, INODE_SETATTR_OPT_ALL)) {
        __u32 wanted = INODE_SETATTR_CHANGE_MODE_BITS | INODE_SETATTR_CHANGE_OWNER;
        if (krsid_option(KRSID_HOOK_ID, INODE_SETATTR_OPT_TIMESTAMPS))
            wanted |= INODE_SETATTR_CHANGE_TIMES_SET;
        if (krsid_option(KRSID_HOOK_ID, INODE_SETATTR_OPT_TRUNCATE))
            wanted |= INODE_SETATTR_CHANGE_TRUNCATE;
        if (!(changes & wanted)) {
            /* Only what a watched file makes worth reporting is left: permission
             * changes and explicit times (KRSID_WATCH_OP_ATTR), and truncate(2) of a
             * file with data (KRSID_WATCH_OP_TRUNCATE; an O_TRUNC open was already
             * reported by file_open). */
            __u32 attr_bits =
                krsid_nonzero(mode ^ old_mode) * INODE_SETATTR_CHANGE_WATCHED_MODE |
                krsid_nonzero(changes & INODE_SETATTR_CHANGE_TIMES_SET) * INODE_SETATTR_CHANGE_WATCHED_TIMES;
            __u64 cut = krsid_nonzero(valid & INODE_SETATTR_ATTR_SIZE) &
                        (krsid_nonzero(valid & INODE_SETATTR_ATTR_OPEN) ^ 1) & krsid_less(attr->ia_size, inode->i_size);
            __u32 op = krsid_nonzero(attr_bits) * KRSID_WATCH_OP_ATTR | (__u32)cut * KRSID_WATCH_OP_TRUNCATE;
            if (!op)
                KRSID_RETURN_FILTERED();
            watch = krsid_watch_find(dentry, op);
            if (!watch.id)
                KRSID_RETURN_FILTERED();
            changes |= attr_bits * krsid_nonzero(watch.ops & KRSID_WATCH_OP_ATTR) |
                       INODE_SETATTR_CHANGE_WATCHED_TRUNCATE * krsid_nonzero(watch.ops & KRSID_WATCH_OP_TRUNCATE);
        }
    }

    struct inode_setattr_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_setattr_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    __u32 dev = inode->i_sb->s_dev;
    e->ino = inode->i_ino;
    e->dev_major = dev >> INODE_SETATTR_MINORBITS;
    e->dev_minor = dev & INODE_SETATTR_MINORMASK;
    e->old_size = inode->i_size;
    e->size = (valid & INODE_SETATTR_ATTR_SIZE) ? attr->ia_size : 0;
    e->atime = (valid & INODE_SETATTR_ATTR_ATIME) ? attr->ia_atime.tv_sec : 0;
    e->mtime = (valid & INODE_SETATTR_ATTR_MTIME) ? attr->ia_mtime.tv_sec : 0;
    e->old_mtime = krsid_inode_times(inode).mtime_sec;
    e->valid = valid;
    e->changes = changes;
    e->mode = mode;
    e->old_mode = old_mode;
    e->added = added;
    e->new_uid = new_uid;
    e->old_uid = old_uid;
    e->new_gid = new_gid;
    e->old_gid = old_gid;
    e->watch = watch.id;
    e->watch_level = watch.level;
    e->pad0 = 0;
    krsid_read_dentry_name(e->file, sizeof(e->file), dentry);
    krsid_read_dentry_name(e->dir, sizeof(e->dir), dentry->d_parent);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
