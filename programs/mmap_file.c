// SPDX-License-Identifier: GPL-2.0
/*
 * W^X audit at mmap time: mmap() (and shmat(), remap) asking for executable memory.
 *
 * security_mmap_file(file, prot, flags) runs for every mapping, file-backed or
 * anonymous (file == NULL), before the mapping exists: there is no address or
 * length yet. On 6.12 the hook gets (file, reqprot, prot, flags): reqprot is what
 * the caller asked for, prot what the kernel will apply (READ_IMPLIES_EXEC
 * personalities add PROT_EXEC), flags the MAP_* flags as passed.
 *
 * Every dynamically linked program maps its libraries PROT_EXEC, so even the
 * default filter (exec_only: only calls that get PROT_EXEC) lets ordinary exec
 * activity through; the other calls are counted and dropped in the kernel.
 * bpf_d_path is allowed on this hook: file mappings are named by full path.
 *
 * Verifier trap: LSM hook arguments are typed as trusted pointers that cannot be
 * NULL, so `if (file)` is folded to true when the program is verified and the
 * anonymous branch silently disappears (measured on 6.12: anonymous mappings came
 * out as file mappings with no path). The NULL test reads the argument's raw value
 * from ctx with bpf_probe_read_kernel instead, which the verifier cannot fold.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#endif

/* Option slots, set from the config through programs/mmap_file.yaml. */
#define MMAP_FILE_OPT_EXEC_ONLY 0

#define MMAP_FILE_INFO_ANONYMOUS 0x1
#define MMAP_FILE_INFO_PATH_UNAVAILABLE 0x2
/* Policy field slots, see mmap_file.yaml. */
#define MMAP_FILE_POLICY_REQPROT 0
#define MMAP_FILE_POLICY_PROT 1
#define MMAP_FILE_POLICY_FLAGS 2

struct mmap_file_event {
    KRSID_EVENT_HEADER
    __u64 flags;
    __u32 reqprot;
    __u32 prot;
    __u32 info;
    __u32 path_len;
    char path[KRSID_PATH_LEN];
};

LSM_PROBE(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags)
{
    KRSID_HOOK_PROLOGUE();

    /* file is NULL for an anonymous mapping, and kernels disagree on what the verifier
     * knows about that, so the program tests it twice (measured in the kernel matrix):
     * - Kernels that type LSM arguments trusted but predate the upstream fix (Debian's
     *   6.12.95; not 6.1) take `file` as never NULL: a NULL test of `file` itself is
     *   removed as dead code, and the dereference below oopsed the kernel on the first
     *   anonymous mmap. A copy read with bpf_probe_read_kernel is a plain number to the
     *   verifier; its test stays.
     * - From the upstream fix (bpf_lsm_mmap_file's file__nullable, in Debian's 7.2 and
     *   7.3) the argument is
     *   trusted_ptr_or_null and only a NULL test of the pointer itself allows the
     *   dereference ("R9 invalid mem access 'trusted_ptr_or_null_'" otherwise).
     * At run time both tests see the same value. Each dereference sits under both
     * tests (not under a saved result, which the verifier could not connect to `file`). */
    __u64 file_addr = 0;
    bpf_probe_read_kernel(&file_addr, sizeof(file_addr), &ctx[0]);
    struct krsid_policy_input in = {};
    in.field[MMAP_FILE_POLICY_REQPROT] = reqprot;
    in.field[MMAP_FILE_POLICY_PROT] = prot;
    in.field[MMAP_FILE_POLICY_FLAGS] = flags;
    if (file_addr && file)
        in.file = file->f_path.dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* Filter in the kernel: by default only mappings that will be executable. */
    if (!d.rule && krsid_option(KRSID_HOOK_ID, MMAP_FILE_OPT_EXEC_ONLY) && !((reqprot | prot) & PROT_EXEC))
        KRSID_RETURN_FILTERED();

    struct mmap_file_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct mmap_file_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->flags = flags;
    e->reqprot = reqprot;
    e->prot = prot;
    e->info = 0;
    e->path_len = 0;
    e->path[0] = 0;
    if (file_addr && file) {
        /* Absolute, relative to the caller's root; " (deleted)" appended for an
         * unlinked file. Too long (> 255 bytes) or not resolvable: the file's
         * own name (its dentry) + flag. */
        int n = bpf_d_path(&file->f_path, e->path, sizeof(e->path));
        if (n > 0) {
            e->path_len = n;
        } else {
            krsid_read_dentry_name(e->path, sizeof(e->path), file->f_path.dentry);
            e->info |= MMAP_FILE_INFO_PATH_UNAVAILABLE;
        }
    } else {
        e->info |= MMAP_FILE_INFO_ANONYMOUS;
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
