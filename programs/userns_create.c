// SPDX-License-Identifier: GPL-2.0
/*
 * A new user namespace is about to be created: unshare(CLONE_NEWUSER),
 * clone(CLONE_NEWUSER), `unshare -U`, rootless containers, browser sandboxes. Inside
 * it the creator gets a full capability set, which is what most unprivileged
 * kernel exploits start with.
 *
 * cred is the creator's new credentials (prepared from its current ones), so uid,
 * euid and the capability sets are the creator's. Exists since 6.1 (5.19 with
 * backports); on older kernels the hook is absent and krsid attaches its fallback,
 * cred_prepare.c, in its place (with these rules; hooks.userns_create.fallback).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/user_namespace.h>
#endif

#define USERNS_CREATE_FLAG_UNPRIVILEGED 0x1
/* Policy field slots, named in userns_create.yaml's `policy:`. */
#define USERNS_CREATE_POLICY_UNPRIVILEGED 0

struct userns_create_event {
    KRSID_EVENT_HEADER
    __u64 cap_effective;
    __u64 cap_permitted;
    __u32 cred_uid;
    __u32 cred_euid;
    __u32 cred_gid;
    __u32 parent_level;
    __u32 parent_inum;
    __u32 flags;
};

LSM_PROBE(userns_create, const struct cred *cred)
{
    KRSID_HOOK_PROLOGUE();

    /* kernel_cap_t is struct { u64 val; } since 6.3 and { u32 cap[2]; } before:
     * 8 bytes, bit n = capability n, either way. */
    __u64 cap_effective = 0;
    bpf_probe_read_kernel(&cap_effective, sizeof(cap_effective), &cred->cap_effective);
    /* CAP_SYS_ADMIN (21) in the effective set: not the usual unprivileged case. */
    __u32 unprivileged = !(cap_effective & (1ULL << 21));

    /* Policy (e.g. etc/policies/deny-unprivileged-userns.yaml): the generic matchers
     * (uid, comm, cgroup, exe) see the creator, which is the current task. */
    struct krsid_policy_input in = {};
    in.field[USERNS_CREATE_POLICY_UNPRIVILEGED] = unprivileged;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct userns_create_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct userns_create_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);  /* a full buffer must not turn a deny into allow */

    e->cap_effective = cap_effective;
    e->cap_permitted = 0;
    bpf_probe_read_kernel(&e->cap_permitted, sizeof(e->cap_permitted), &cred->cap_permitted);
    e->cred_uid = cred->uid.val;
    e->cred_euid = cred->euid.val;
    e->cred_gid = cred->gid.val;
    /* The namespace the creator lives in, which becomes the new one's parent. */
    struct user_namespace *ns = cred->user_ns;
    e->parent_level = ns->level;
    e->parent_inum = ns->ns.inum;
    e->flags = unprivileged ? USERNS_CREATE_FLAG_UNPRIVILEGED : 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
