// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel is about to read a whole file on its own behalf: a kernel module
 * (finit_module, i.e. insmod/modprobe), firmware, a kexec image or initramfs
 * (kexec_file_load), an IMA policy, an X.509 certificate.
 *
 * bpf_d_path is allowed here: kernel_read_file is one of the kernel's
 * "sleepable" LSM hooks, and bpf_d_path is allowed on every hook of that list.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/kernel_read_file.h>
#endif

#define KERNEL_READ_FILE_FLAG_CONTENTS 0x1
#define KERNEL_READ_FILE_FLAG_NO_PATH 0x2
/* Policy field slots, see kernel_read_file.yaml. */
#define KERNEL_READ_FILE_POLICY_ID 0
#define KERNEL_READ_FILE_POLICY_CONTENTS 1

struct kernel_read_file_event {
    KRSID_EVENT_HEADER
    __u32 id;
    __u32 flags;
    char path[KRSID_PATH_LEN];
};

LSM_PROBE(kernel_read_file, struct file *file, enum kernel_read_file_id id, bool contents)
{
    KRSID_HOOK_PROLOGUE();

    struct krsid_policy_input in = {};
    in.field[KERNEL_READ_FILE_POLICY_ID] = id;
    in.field[KERNEL_READ_FILE_POLICY_CONTENTS] = contents ? 1 : 0;
    in.file = file->f_path.dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct kernel_read_file_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct kernel_read_file_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->id = id;
    e->flags = contents ? KERNEL_READ_FILE_FLAG_CONTENTS : 0;
    /* The absolute path; if it cannot be resolved, the file's own name. */
    int n = bpf_d_path(&file->f_path, e->path, sizeof(e->path));
    if (n < 0) {
        e->flags |= KERNEL_READ_FILE_FLAG_NO_PATH;
        krsid_read_dentry_name(e->path, sizeof(e->path), file->f_path.dentry);
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
