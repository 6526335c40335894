// SPDX-License-Identifier: GPL-2.0
/*
 * inode_set_acl: a POSIX ACL is about to be set on a file (setfacl, or setxattr of
 * system.posix_acl_access / system.posix_acl_default). The hook exists since Linux
 * 6.2, when ACLs left the xattr path; before that they reach inode_setxattr, which
 * reports them by name (programs/inode_setxattr.c).
 *
 * An ACL gives a named user or group rights that `ls -l` and a mode check never
 * show: `setfacl -m u:www-data:rw /etc/shadow` or `-m u:backdoor:rwx /root` keeps an
 * attacker's access after every chmod and owner check an admin would run. Reported
 * by default: an ACL whose named user or group entries grant write, and any ACL set
 * on a file the file-integrity watch covers. The rest (the read-only entries systemd
 * and journald put on log directories and user journals) is counted as filtered in
 * the kernel, unless the option all is on.
 *
 * The entries are read from the kernel's copy (kacl): count, named users and groups,
 * the rights they get (before the mask) and the mask, and the first named entry's id
 * and rights. The hook has no path: the event names the file, its directory and
 * (device, inode). The first argument is the mount's idmap (6.3+; struct
 * user_namespace in 6.2): not used, declared as void * so one text fits both.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/posix_acl.h>
#endif

/* Option slots, see inode_set_acl.yaml. */
#define INODE_SET_ACL_OPT_ALL 0
/* Policy field slots, see inode_set_acl.yaml. */
#define INODE_SET_ACL_POLICY_TYPE 0
#define INODE_SET_ACL_POLICY_NAMED_PERMS 1

/* e_tag values (include/uapi/linux/posix_acl.h): macros, not in BTF. */
#define INODE_SET_ACL_TAG_USER 0x02
#define INODE_SET_ACL_TAG_GROUP 0x08
#define INODE_SET_ACL_TAG_MASK 0x10
#define INODE_SET_ACL_PERM_WRITE 0x2
#define INODE_SET_ACL_MAX_ENTRIES 32 /* entries looked at; count says how many there are */

#define INODE_SET_ACL_TYPE_ACCESS 1
#define INODE_SET_ACL_TYPE_DEFAULT 2
#define INODE_SET_ACL_NAME_PREFIX_LEN 17 /* "system.posix_acl_", then "access" or "default" */

#define INODE_SET_ACL_NAME_LEN 128

struct inode_set_acl_event {
    KRSID_EVENT_HEADER
    __u64 ino;
    __u32 dev_major;
    __u32 dev_minor;
    __u32 type;
    __u32 entries;
    __u32 named_users;
    __u32 named_groups;
    __u32 named_perms;
    __u32 mask_perms;
    __u32 first_named;
    __u32 first_named_id;
    __u32 first_named_perms;
    __u32 watch;
    __u32 watch_level;
    __u32 pad;
    char dir[INODE_SET_ACL_NAME_LEN];
    char file[INODE_SET_ACL_NAME_LEN];
};

/* What the entries say, summed without branches (see krsid_decide). */
struct inode_set_acl_summary {
    __u32 entries;
    __u32 named_users;
    __u32 named_groups;
    __u32 named_perms;
    __u32 mask_perms;
    __u32 first_named;  /* its tag: USER or GROUP; 0 when there is none */
    __u32 first_named_id;
    __u32 first_named_perms;
};

static __always_inline struct inode_set_acl_summary inode_set_acl_summarize(struct posix_acl *kacl)
{
    struct inode_set_acl_summary s = {};
    if (!kacl)
        return s;  /* the ACL is being removed */
    bpf_probe_read_kernel(&s.entries, sizeof(s.entries), &kacl->a_count);
    __u32 seen = 0;  /* 1 once a named entry was taken as the first */
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < INODE_SET_ACL_MAX_ENTRIES; i++) {
        if (i >= s.entries)
            break;
        struct posix_acl_entry ent = {};
        bpf_probe_read_kernel(&ent, sizeof(ent), &kacl->a_entries[i]);
        __u32 tag = (__u16)ent.e_tag, perm = ent.e_perm & 7;
        __u64 user = krsid_nonzero(tag ^ INODE_SET_ACL_TAG_USER) ^ 1;
        __u64 group = krsid_nonzero(tag ^ INODE_SET_ACL_TAG_GROUP) ^ 1;
        __u64 mask = krsid_nonzero(tag ^ INODE_SET_ACL_TAG_MASK) ^ 1;
        __u32 named = user | group;
        __u32 take = named & (seen ^ 1);
        s.named_users += user;
        s.named_groups += group;
        s.named_perms |= perm & -named;
        s.mask_perms |= perm & -(__u32)mask;
        s.first_named |= tag & -take;
        s.first_named_id |= ent.e_uid.val & -take;
        s.first_named_perms |= perm & -take;
        seen |= named;
    }
    return s;
}

LSM_PROBE(inode_set_acl, const void *idmap, struct dentry *dentry, const char *acl_name, struct posix_acl *kacl)
{
    KRSID_HOOK_PROLOGUE();

    char kind = 0;
    bpf_probe_read_kernel(&kind, sizeof(kind), acl_name + INODE_SET_ACL_NAME_PREFIX_LEN);
    __u32 type = (krsid_nonzero(kind ^ 'a') ^ 1) * INODE_SET_ACL_TYPE_ACCESS +
                 (krsid_nonzero(kind ^ 'd') ^ 1) * INODE_SET_ACL_TYPE_DEFAULT;
    struct inode_set_acl_summary s = inode_set_acl_summarize(kacl);

    struct krsid_policy_input in = {};
    in.field[INODE_SET_ACL_POLICY_TYPE] = type;
    in.field[INODE_SET_ACL_POLICY_NAMED_PERMS] = s.named_perms;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_ATTR);
    if (!d.rule && !(s.named_perms & INODE_SET_ACL_PERM_WRITE) && !watch.id &&
        !krsid_option(KRSID_HOOK_ID, INODE_SET_ACL_OPT_ALL))
        KRSID_RETURN_FILTERED();

    struct inode_set_acl_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_set_acl_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    struct inode *inode = 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), &dentry->d_inode);
    krsid_inode_id(inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->type = type;
    e->entries = s.entries;
    e->named_users = s.named_users;
    e->named_groups = s.named_groups;
    e->named_perms = s.named_perms;
    e->mask_perms = s.mask_perms;
    e->first_named = s.first_named;
    e->first_named_id = s.first_named_id;
    e->first_named_perms = s.first_named_perms;
    e->watch = watch.id;
    e->watch_level = watch.level;
    e->pad = 0;
    krsid_read_names(e->dir, e->file, INODE_SET_ACL_NAME_LEN, dentry);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
