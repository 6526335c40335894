// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel asks user space (modprobe) to load a module by name: request_module()
 * autoloading, e.g. a socket of an unregistered address family ("net-pf-38"),
 * "ip link add ... type KIND" ("rtnl-link-KIND"), a filesystem type on mount
 * ("fs-NAME"). Called before the usermode helper runs, whether or not such a
 * module exists. The task is the one whose request triggered the load.
 */
#include "krsid.h"

#define KERNEL_MODULE_REQUEST_NAME_LEN 64  /* MODULE_NAME_LEN is 56; request names can be longer */
#define KERNEL_MODULE_REQUEST_FLAG_TRUNCATED 0x1

struct kernel_module_request_event {
    KRSID_EVENT_HEADER
    __u32 flags;
    __u32 pad0;
    char kmod_name[KERNEL_MODULE_REQUEST_NAME_LEN];
};

LSM_PROBE(kernel_module_request, char *kmod_name)
{
    KRSID_HOOK_PROLOGUE();

    /* No hook fields: the generic matchers (uid, comm, cgroup, exe) see the task whose
     * request triggered the load. */
    struct krsid_policy_input in = {};
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct kernel_module_request_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct kernel_module_request_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->flags = 0;
    e->pad0 = 0;
    int n = bpf_probe_read_kernel_str(e->kmod_name, sizeof(e->kmod_name), kmod_name);
    if (n == sizeof(e->kmod_name))
        e->flags |= KERNEL_MODULE_REQUEST_FLAG_TRUNCATED;
    else if (n < 0)
        e->kmod_name[0] = 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
