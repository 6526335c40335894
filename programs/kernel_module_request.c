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
    int ret = KRSID_PREV_RET();

    krsid_count(KRSID_HOOK_ID, KRSID_CNT_INVOCATIONS);
    if (ret != 0)
        return ret;

    struct kernel_module_request_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct kernel_module_request_event));
    if (!e)
        return 0;

    e->flags = 0;
    e->pad0 = 0;
    int n = bpf_probe_read_kernel_str(e->kmod_name, sizeof(e->kmod_name), kmod_name);
    if (n == sizeof(e->kmod_name))
        e->flags |= KERNEL_MODULE_REQUEST_FLAG_TRUNCATED;
    else if (n < 0)
        e->kmod_name[0] = 0;

    krsid_event_submit(ctx, KRSID_HOOK_ID, e, sizeof(struct kernel_module_request_event));
    return 0;
}
