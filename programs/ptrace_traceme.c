// SPDX-License-Identifier: GPL-2.0
/*
 * ptrace_traceme: a process asks its parent to trace it (ptrace(PTRACE_TRACEME)).
 * `parent` is the task that becomes the tracer (current->parent).
 *
 * Debuggers start their child this way (gdb, strace, ltrace), so the parent is what
 * matters: a debugger is expected, a shell or an unknown binary is not. Malware uses
 * it as anti-analysis (a process that is already traced by its own parent cannot
 * be attached by an analyst's debugger; ptrace(PTRACE_TRACEME) failing tells the
 * process it is being debugged) and as the first step of some ptrace-based
 * privilege escalations (CVE-2019-13272). Rare on a server: every call is emitted.
 * ptrace_access_check does not see this request (no access check is made for it).
 */
#include "krsid.h"

/* Policy field slots, see ptrace_traceme.yaml. */
#define PTRACE_TRACEME_POLICY_TRACER_UID 0

struct ptrace_traceme_event {
    KRSID_EVENT_HEADER
    __u32 tracer_pid;
    __u32 tracer_tgid;
    __u32 tracer_uid;
    __u32 pad0;
    char tracer_comm[KRSID_COMM_LEN];
};

LSM_PROBE(ptrace_traceme, struct task_struct *parent)
{
    KRSID_HOOK_PROLOGUE();

    __u32 tracer_uid = parent->real_cred->uid.val;
    struct krsid_policy_input in = {};
    in.field[PTRACE_TRACEME_POLICY_TRACER_UID] = tracer_uid;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct ptrace_traceme_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct ptrace_traceme_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->tracer_pid = parent->pid;
    e->tracer_tgid = parent->tgid;
    e->tracer_uid = tracer_uid;
    e->pad0 = 0;
    bpf_probe_read_kernel_str(e->tracer_comm, sizeof(e->tracer_comm), parent->comm);

    KRSID_SUBMIT_AND_RETURN(e, d);
}
