// SPDX-License-Identifier: GPL-2.0
/*
 * W^X audit: mprotect() changing the protection of a mapping.
 *
 * bpf_d_path is not allowed on this hook (the kernel's allow-list has
 * bprm_check_security, file_open, mmap_file..., not file_mprotect), so a file
 * mapping is named by its dentry, without directories.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/mm_types.h>
#endif

/* Option slots, set from etc/krsid.yaml through programs/file_mprotect.yaml. */
#define FILE_MPROTECT_OPT_EXEC_ONLY 0

#define FILE_MPROTECT_FLAG_ANON 0x1
/* Policy field slots, named in file_mprotect.yaml's `policy:`. */
#define FILE_MPROTECT_POLICY_REQPROT 0
#define FILE_MPROTECT_POLICY_PROT 1
#define FILE_MPROTECT_POLICY_VM_FLAGS 2

struct file_mprotect_event {
    KRSID_EVENT_HEADER
    __u64 vm_start;
    __u64 vm_end;
    __u64 vm_flags;
    __u32 reqprot;
    __u32 prot;
    __u32 flags;
    __u32 pad0;
    char file[KRSID_PATH_LEN];
};

LSM_PROBE(file_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot)
{
    KRSID_HOOK_PROLOGUE();

    /* Policy first: a rule may deny or ignore any request. Then, when no rule
     * matched, the exec_only filter keeps only requests that add PROT_EXEC. */
    struct file *f = vma->vm_file;
    struct krsid_policy_input in = {};
    in.field[FILE_MPROTECT_POLICY_REQPROT] = reqprot;
    in.field[FILE_MPROTECT_POLICY_PROT] = prot;
    in.field[FILE_MPROTECT_POLICY_VM_FLAGS] = vma->vm_flags;
    in.file = f ? f->f_path.dentry : 0;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && krsid_option(KRSID_HOOK_ID, FILE_MPROTECT_OPT_EXEC_ONLY) && !(reqprot & PROT_EXEC))
        KRSID_RETURN_FILTERED();

    struct file_mprotect_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct file_mprotect_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);  /* a full buffer must not turn a deny into allow */

    e->vm_start = vma->vm_start;
    e->vm_end = vma->vm_end;
    e->vm_flags = vma->vm_flags;   /* the mapping's flags before this change */
    e->reqprot = reqprot;
    e->prot = prot;
    e->flags = 0;
    e->pad0 = 0;
    e->file[0] = 0;
    if (f)
        krsid_read_dentry_name(e->file, sizeof(e->file), f->f_path.dentry);
    else
        e->flags |= FILE_MPROTECT_FLAG_ANON;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
