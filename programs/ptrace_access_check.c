// SPDX-License-Identifier: GPL-2.0
/*
 * ptrace_access_check: may the caller ptrace `child` (KRSI example)?
 *
 * The kernel asks this for PTRACE_ATTACH/SEIZE, but also, in READ mode, for every
 * access to another process's /proc/PID/{environ,maps,fd,stat,...}: each `ps` or
 * `top` makes hundreds. With attach_only (default), only ATTACH-mode checks are
 * reported - ptrace attach and opening /proc/PID/mem - and READ checks are counted
 * as filtered in the kernel. Access to one's own thread group never reaches LSMs.
 */
#include "krsid.h"

/* PTRACE_MODE_* of include/linux/ptrace.h (kernel-internal, not in BTF). */
#define PTRACE_ACCESS_CHECK_MODE_ATTACH 0x02

#define PTRACE_ACCESS_CHECK_OPT_ATTACH_ONLY 0
/* Policy field slots, see ptrace_access_check.yaml. */
#define PTRACE_ACCESS_CHECK_POLICY_MODE 0
#define PTRACE_ACCESS_CHECK_POLICY_TARGET_UID 1

struct ptrace_access_check_event {
    KRSID_EVENT_HEADER
    __u32 target_pid;
    __u32 target_tgid;
    __u32 target_uid;
    __u32 mode;
    char target_comm[KRSID_COMM_LEN];
};

LSM_PROBE(ptrace_access_check, struct task_struct *child, unsigned int mode)
{
    KRSID_HOOK_PROLOGUE();

    __u32 target_uid = child->real_cred->uid.val;
    struct krsid_policy_input in = {};
    in.field[PTRACE_ACCESS_CHECK_POLICY_MODE] = mode;
    in.field[PTRACE_ACCESS_CHECK_POLICY_TARGET_UID] = target_uid;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && krsid_option(KRSID_HOOK_ID, PTRACE_ACCESS_CHECK_OPT_ATTACH_ONLY) &&
        !(mode & PTRACE_ACCESS_CHECK_MODE_ATTACH))
        KRSID_RETURN_FILTERED();

    struct ptrace_access_check_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct ptrace_access_check_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->target_pid = child->pid;
    e->target_tgid = child->tgid;
    e->target_uid = target_uid;
    e->mode = mode;
    bpf_probe_read_kernel_str(e->target_comm, sizeof(e->target_comm), child->comm);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
