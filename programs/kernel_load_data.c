// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel is about to load data that user space hands over as a memory
 * buffer, not as a file: init_module() (a module image from memory), kexec_load(),
 * the firmware fallback loader, a policy. Unlike kernel_read_file there is no file
 * to name: a module loaded this way comes from anonymous memory.
 */
#include "krsid.h"

#define KERNEL_LOAD_DATA_FLAG_CONTENTS 0x1
/* Policy field slots, see kernel_load_data.yaml. */
#define KERNEL_LOAD_DATA_POLICY_ID 0
#define KERNEL_LOAD_DATA_POLICY_CONTENTS 1

struct kernel_load_data_event {
    KRSID_EVENT_HEADER
    __u32 id;
    __u32 flags;
};

/* id is an enum kernel_load_data_id, declared as int: its header, linux/security.h,
 * pulls in the kernel's linux/bpf.h (see socket_connect.c). */
LSM_PROBE(kernel_load_data, int id, bool contents)
{
    KRSID_HOOK_PROLOGUE();

    struct krsid_policy_input in = {};
    in.field[KERNEL_LOAD_DATA_POLICY_ID] = id;
    in.field[KERNEL_LOAD_DATA_POLICY_CONTENTS] = contents ? 1 : 0;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct kernel_load_data_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct kernel_load_data_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->id = id;
    e->flags = contents ? KERNEL_LOAD_DATA_FLAG_CONTENTS : 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
