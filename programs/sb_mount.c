// SPDX-License-Identifier: GPL-2.0
/*
 * sb_mount: mount(2) - a new mount, a bind mount, a remount, a move or a change
 * of propagation (MS_SHARED/PRIVATE/...), before it happens.
 *
 * The new mount API (fsopen/fsmount/move_mount) does not pass through this hook.
 * dev_name and type are the kernel's copies of the strings mount(2) was given
 * (either may be NULL: reported as empty). The mount point is named with
 * bpf_d_path (allowed on this hook), relative to the caller's root.
 */
#include "krsid.h"

#define SB_MOUNT_DEV_NAME_TRUNCATED 0x1
#define SB_MOUNT_TARGET_TRUNCATED 0x2

#define SB_MOUNT_FSTYPE_LEN 64
/* Policy field slots, see sb_mount.yaml. */
#define SB_MOUNT_POLICY_FLAGS 0

struct sb_mount_event {
    KRSID_EVENT_HEADER
    __u64 flags;
    __u32 truncated;
    __u32 pad0;
    char dev_name[KRSID_PATH_LEN];
    char fstype[SB_MOUNT_FSTYPE_LEN];
    char target[KRSID_PATH_LEN];
};

LSM_PROBE(sb_mount, const char *dev_name, const struct path *path, const char *type, unsigned long flags,
          void *data)
{
    KRSID_HOOK_PROLOGUE();

    /* path_prefix matches the mount point (the directory mounted on, or remounted). */
    struct krsid_policy_input in = {};
    in.field[SB_MOUNT_POLICY_FLAGS] = flags;
    in.file = path->dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct sb_mount_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct sb_mount_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->flags = flags;
    e->truncated = 0;
    e->pad0 = 0;
    e->dev_name[0] = 0;
    e->fstype[0] = 0;
    if (dev_name) {
        int n = bpf_probe_read_kernel_str(e->dev_name, sizeof(e->dev_name), dev_name);
        if (n == sizeof(e->dev_name))
            e->truncated |= SB_MOUNT_DEV_NAME_TRUNCATED;
        else if (n < 0)
            e->dev_name[0] = 0;
    }
    if (type) {
        if (bpf_probe_read_kernel_str(e->fstype, sizeof(e->fstype), type) < 0)
            e->fstype[0] = 0;
    }
    if (bpf_d_path((struct path *)path, e->target, sizeof(e->target)) <= 0) {
        /* Too long for the event: the mount point's own name at least. */
        e->truncated |= SB_MOUNT_TARGET_TRUNCATED;
        krsid_read_dentry_name(e->target, sizeof(e->target), path->dentry);
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
