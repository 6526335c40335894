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

struct kernel_read_file_event {
    KRSID_EVENT_HEADER
    __u32 id;
    __u32 flags;
    char path[KRSID_PATH_LEN];
};

LSM_PROBE(kernel_read_file, struct file *file, enum kernel_read_file_id id, bool contents)
{
    int ret = KRSID_PREV_RET();

    krsid_count(KRSID_HOOK_ID, KRSID_CNT_INVOCATIONS);
    if (ret != 0)
        return ret;

    struct kernel_read_file_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct kernel_read_file_event));
    if (!e)
        return 0;

    e->id = id;
    e->flags = contents ? KERNEL_READ_FILE_FLAG_CONTENTS : 0;
    /* The absolute path; if it cannot be resolved, the file's own name. */
    int n = bpf_d_path(&file->f_path, e->path, sizeof(e->path));
    if (n < 0) {
        e->flags |= KERNEL_READ_FILE_FLAG_NO_PATH;
        krsid_read_dentry_name(e->path, sizeof(e->path), file->f_path.dentry);
    }

    krsid_event_submit(ctx, KRSID_HOOK_ID, e, sizeof(struct kernel_read_file_event));
    return 0;
}
