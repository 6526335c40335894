// SPDX-License-Identifier: GPL-2.0
/*
 * task_fix_setuid: a set*uid() call is about to change the caller's user ids
 * (setuid, setreuid, setresuid, setfsuid). `new` holds the credentials that will be
 * committed, `old` the current ones. Calls that change nothing (e.g. setuid(0) by
 * root) are counted as filtered in the kernel.
 */
#include "krsid.h"

/* Which ids differ, for the filter and the `changed` field. */
#define TASK_FIX_SETUID_CHANGED_UID 0x1
#define TASK_FIX_SETUID_CHANGED_EUID 0x2
#define TASK_FIX_SETUID_CHANGED_SUID 0x4
#define TASK_FIX_SETUID_CHANGED_FSUID 0x8

/* Policy field slots, see task_fix_setuid.yaml. */
#define TASK_FIX_SETUID_POLICY_NEW_UID 0
#define TASK_FIX_SETUID_POLICY_NEW_EUID 1
#define TASK_FIX_SETUID_POLICY_OLD_UID 2
#define TASK_FIX_SETUID_POLICY_CHANGED 3

struct task_fix_setuid_event {
    KRSID_EVENT_HEADER
    __u32 old_uid;
    __u32 new_uid;
    __u32 old_euid;
    __u32 new_euid;
    __u32 old_suid;
    __u32 new_suid;
    __u32 old_fsuid;
    __u32 new_fsuid;
    __u32 flags;
    __u32 changed;
};

LSM_PROBE(task_fix_setuid, struct cred *new, const struct cred *old, int flags)
{
    KRSID_HOOK_PROLOGUE();

    __u32 old_uid = old->uid.val, new_uid = new->uid.val;
    __u32 old_euid = old->euid.val, new_euid = new->euid.val;
    __u32 old_suid = old->suid.val, new_suid = new->suid.val;
    __u32 old_fsuid = old->fsuid.val, new_fsuid = new->fsuid.val;
    /* Without branches (see krsid_decide): four ifs would hand the rule loop 16
     * different constant states, each verified on its own (690k instructions). */
    _Static_assert(TASK_FIX_SETUID_CHANGED_UID == 1 && TASK_FIX_SETUID_CHANGED_EUID == 2 &&
                       TASK_FIX_SETUID_CHANGED_SUID == 4 && TASK_FIX_SETUID_CHANGED_FSUID == 8,
                   "changed is built bit by bit");
    __u32 changed = krsid_nonzero(old_uid ^ new_uid) | krsid_nonzero(old_euid ^ new_euid) << 1 |
                    krsid_nonzero(old_suid ^ new_suid) << 2 | krsid_nonzero(old_fsuid ^ new_fsuid) << 3;

    struct krsid_policy_input in = {};
    in.field[TASK_FIX_SETUID_POLICY_NEW_UID] = new_uid;
    in.field[TASK_FIX_SETUID_POLICY_NEW_EUID] = new_euid;
    in.field[TASK_FIX_SETUID_POLICY_OLD_UID] = old_uid;
    in.field[TASK_FIX_SETUID_POLICY_CHANGED] = changed;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && changed == 0)
        KRSID_RETURN_FILTERED();

    struct task_fix_setuid_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct task_fix_setuid_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->old_uid = old_uid;
    e->new_uid = new_uid;
    e->old_euid = old_euid;
    e->new_euid = new_euid;
    e->old_suid = old_suid;
    e->new_suid = new_suid;
    e->old_fsuid = old_fsuid;
    e->new_fsuid = new_fsuid;
    e->flags = flags;
    e->changed = changed;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
