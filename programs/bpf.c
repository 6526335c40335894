// SPDX-License-Identifier: GPL-2.0
/*
 * The bpf() syscall: loading programs, creating maps, loading BTF, attaching.
 *
 * The hook gets the command and the kernel's copy of union bpf_attr (already
 * copied from user space and zero-padded to the kernel's size, so every member
 * read here is inside the union). Kernels >= 6.13 pass a 4th argument (bool
 * kernel: called from a BPF_PROG_TYPE_SYSCALL program); it is not needed and not
 * declared: KRSID_PREV_RET() finds the verdict from the kernel's own count.
 *
 * Noise: every bpf() call runs this, including krsid's own map reads at scrape
 * time. Two in-kernel filters: only the commands that put new code or objects
 * into the kernel are emitted by default (all_commands: false), and the
 * daemon's own process is skipped (ignore_tgid, set by the loader).
 */
#include "krsid.h"
/* union bpf_attr comes from the UAPI bpf.h that BCC always includes (with kernel
 * headers) or from vmlinux.h. Not <linux/bpf.h>: see socket_connect.c. */

/* Option slots, see bpf.yaml. */
#define BPF_HOOK_OPT_ALL_COMMANDS 0
#define BPF_HOOK_OPT_IGNORE_TGID 1
/* Policy field slots, see bpf.yaml. */
#define BPF_HOOK_POLICY_CMD 0
#define BPF_HOOK_POLICY_PROG_TYPE 1
#define BPF_HOOK_POLICY_MAP_TYPE 2

/* enum bpf_cmd values (UAPI, stable; the same on 6.12 and 6.18). Enum constants
 * are in BTF, but the kernel-header path includes bcc's own uapi copy: spell out
 * the few numbers the filter needs. */
#define BPF_HOOK_CMD_MAP_CREATE 0
#define BPF_HOOK_CMD_PROG_LOAD 5
#define BPF_HOOK_CMD_PROG_ATTACH 8
#define BPF_HOOK_CMD_BTF_LOAD 18
#define BPF_HOOK_CMD_LINK_CREATE 28

#define BPF_HOOK_NAME_LEN 16  /* BPF_OBJ_NAME_LEN */

struct bpf_event {
    KRSID_EVENT_HEADER
    __u32 cmd;
    __u32 size;
    __u32 prog_type;
    __u32 map_type;
    __u32 attach_type;
    __u32 insn_cnt;
    __u32 max_entries;
    __u32 btf_size;
    __u32 target_fd;
    __u32 prog_fd;
    char name[BPF_HOOK_NAME_LEN];
};

LSM_PROBE(bpf, int cmd, union bpf_attr *attr, unsigned int size)
{
    KRSID_HOOK_PROLOGUE();

    /* krsid's own calls first, before any rule: a policy must never deny krsid its
     * maps (that would blind it, or stop a reload). */
    __u64 ignore = krsid_option(KRSID_HOOK_ID, BPF_HOOK_OPT_IGNORE_TGID);
    if (ignore && krsid_task_is_process((struct task_struct *)bpf_get_current_task(), ignore))
        KRSID_RETURN_FILTERED();

    __u32 prog_type = 0, map_type = 0;
    if (cmd == BPF_HOOK_CMD_PROG_LOAD)
        bpf_probe_read_kernel(&prog_type, sizeof(prog_type), &attr->prog_type);
    else if (cmd == BPF_HOOK_CMD_MAP_CREATE)
        bpf_probe_read_kernel(&map_type, sizeof(map_type), &attr->map_type);
    struct krsid_policy_input in = {};
    in.field[BPF_HOOK_POLICY_CMD] = cmd;
    in.field[BPF_HOOK_POLICY_PROG_TYPE] = prog_type;
    in.field[BPF_HOOK_POLICY_MAP_TYPE] = map_type;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule && !krsid_option(KRSID_HOOK_ID, BPF_HOOK_OPT_ALL_COMMANDS) && cmd != BPF_HOOK_CMD_PROG_LOAD &&
        cmd != BPF_HOOK_CMD_MAP_CREATE && cmd != BPF_HOOK_CMD_BTF_LOAD && cmd != BPF_HOOK_CMD_LINK_CREATE &&
        cmd != BPF_HOOK_CMD_PROG_ATTACH)
        KRSID_RETURN_FILTERED();

    struct bpf_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct bpf_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->cmd = cmd;
    e->size = size;
    e->prog_type = prog_type;
    e->map_type = map_type;
    e->attach_type = 0;
    e->insn_cnt = 0;
    e->max_entries = 0;
    e->btf_size = 0;
    e->target_fd = 0;
    e->prog_fd = 0;
    e->name[0] = 0;
    /* Explicit reads of the union's members: which one is valid depends on cmd. */
    if (cmd == BPF_HOOK_CMD_PROG_LOAD) {
        bpf_probe_read_kernel(&e->insn_cnt, sizeof(e->insn_cnt), &attr->insn_cnt);
        bpf_probe_read_kernel(&e->attach_type, sizeof(e->attach_type), &attr->expected_attach_type);
        bpf_probe_read_kernel(e->name, sizeof(e->name), &attr->prog_name);
    } else if (cmd == BPF_HOOK_CMD_MAP_CREATE) {
        bpf_probe_read_kernel(&e->max_entries, sizeof(e->max_entries), &attr->max_entries);
        bpf_probe_read_kernel(e->name, sizeof(e->name), &attr->map_name);
    } else if (cmd == BPF_HOOK_CMD_PROG_ATTACH) {
        bpf_probe_read_kernel(&e->target_fd, sizeof(e->target_fd), &attr->target_fd);
        bpf_probe_read_kernel(&e->prog_fd, sizeof(e->prog_fd), &attr->attach_bpf_fd);
        bpf_probe_read_kernel(&e->attach_type, sizeof(e->attach_type), &attr->attach_type);
    } else if (cmd == BPF_HOOK_CMD_LINK_CREATE) {
        bpf_probe_read_kernel(&e->target_fd, sizeof(e->target_fd), &attr->link_create.target_fd);
        bpf_probe_read_kernel(&e->prog_fd, sizeof(e->prog_fd), &attr->link_create.prog_fd);
        bpf_probe_read_kernel(&e->attach_type, sizeof(e->attach_type), &attr->link_create.attach_type);
    } else if (cmd == BPF_HOOK_CMD_BTF_LOAD) {
        bpf_probe_read_kernel(&e->btf_size, sizeof(e->btf_size), &attr->btf_size);
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
