// SPDX-License-Identifier: GPL-2.0
/*
 * exec audit: one event per bprm_check_security call.
 *
 * The hook runs once per binary handler pass: a script produces one event for the
 * script (interp == filename) and one after binfmt_script swapped in the
 * interpreter (interp = "/bin/sh", filename = the script), as KRSI's first
 * example showed.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/binfmts.h>
#endif

#define BPRM_FLAG_FILENAME_TRUNCATED 0x1
#define BPRM_FLAG_INTERP_TRUNCATED 0x2

struct bprm_check_security_event {
    KRSID_EVENT_HEADER
    __u32 flags;
    __u32 path_len;
    char filename[KRSID_PATH_LEN];
    char interp[KRSID_PATH_LEN];
    char path[KRSID_PATH_LEN];
};

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm)
{
    int ret = KRSID_PREV_RET();

    krsid_count(KRSID_HOOK_ID, KRSID_CNT_INVOCATIONS);
    if (ret != 0)
        return ret;  /* an earlier program already denied; never turn a deny into allow */

    struct bprm_check_security_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct bprm_check_security_event));
    if (!e)
        return 0;

    e->flags = 0;
    /* filename/interp are what the caller passed (may be relative); path is the
     * resolved absolute path of the file being executed. */
    int n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
    if (n == sizeof(e->filename))
        e->flags |= BPRM_FLAG_FILENAME_TRUNCATED;
    n = bpf_probe_read_kernel_str(e->interp, sizeof(e->interp), bprm->interp);
    if (n == sizeof(e->interp))
        e->flags |= BPRM_FLAG_INTERP_TRUNCATED;
    n = bpf_d_path(&bprm->file->f_path, e->path, sizeof(e->path));
    e->path_len = n > 0 ? n : 0;
    if (n < 0)
        e->path[0] = 0;

    krsid_event_submit(ctx, KRSID_HOOK_ID, e, sizeof(struct bprm_check_security_event));
    return 0;
}
