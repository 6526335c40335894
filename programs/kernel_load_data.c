// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel is about to load data that user space hands over as a memory
 * buffer, not as a file: init_module() (a module image from memory), kexec_load(),
 * the firmware fallback loader, a policy. Unlike kernel_read_file there is no file
 * to name: a module loaded this way comes from anonymous memory.
 */
#include "krsid.h"

#define KERNEL_LOAD_DATA_FLAG_CONTENTS 0x1

struct kernel_load_data_event {
    KRSID_EVENT_HEADER
    __u32 id;
    __u32 flags;
};

/* id is an enum kernel_load_data_id, declared as int: its header, linux/security.h,
 * pulls in the kernel's linux/bpf.h (see socket_connect.c). */
LSM_PROBE(kernel_load_data, int id, bool contents)
{
    int ret = KRSID_PREV_RET();

    krsid_count(KRSID_HOOK_ID, KRSID_CNT_INVOCATIONS);
    if (ret != 0)
        return ret;

    struct kernel_load_data_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct kernel_load_data_event));
    if (!e)
        return 0;

    e->id = id;
    e->flags = contents ? KERNEL_LOAD_DATA_FLAG_CONTENTS : 0;

    krsid_event_submit(ctx, KRSID_HOOK_ID, e, sizeof(struct kernel_load_data_event));
    return 0;
}
