// SPDX-License-Identifier: GPL-2.0
/*
 * Fallback for userns_create on kernels without that hook (it exists since 6.1):
 * user namespace creation seen from cred_prepare. Never enabled on its own; krsid
 * attaches it in place of userns_create (programs/cred_prepare.yaml: fallback_for),
 * and policy rules written for userns_create apply to it.
 *
 * cred_prepare runs on EVERY prepare_creds(): each fork and clone (copy_creds),
 * exec, setuid, capset, ... So the program first decides, in the kernel, whether
 * this call is the one that creates a user namespace. Both callers of
 * create_user_ns() prepare the new credentials right before it:
 *   unshare(flags)       unshare_userns(): prepare_creds() when flags has CLONE_NEWUSER
 *   clone(flags, ...)    copy_process() -> copy_creds(): prepare_creds(), then
 *   clone3(args, size)   create_user_ns() when the flags have CLONE_NEWUSER
 * The syscall and its first argument come from the caller's saved registers
 * (bpf_task_pt_regs, as in bprm_check_security.c): x86-64 (also x32, whose numbers
 * carry bit 30) reads rdi, the ia32 ABI (TS_COMPAT: a 32-bit program, or int $0x80)
 * reads ebx with the 32-bit numbers. clone3's flags are the first u64 of the
 * caller's struct clone_args, read again from user memory. Every other call
 * (kernel threads, exec, setuid, fork without CLONE_NEWUSER, ...) is counted as
 * filtered and emits nothing. x86 only: on other architectures every call is
 * filtered (the fallback then sees nothing; userns_create is there since 6.1).
 *
 * Differences from userns_create, all inherent to the hook:
 *   - A deny makes prepare_creds() fail, which its callers report as ENOMEM: the
 *     caller sees unshare/clone fail with "Cannot allocate memory", not EPERM
 *     (measured on 6.12, tests/vm/test_hook_cred_prepare.py). The event still
 *     says verdict=-EPERM: that is what the program returned.
 *   - The event is an attempt: it comes before the kernel's own checks in
 *     create_user_ns() (nesting depth, max_user_namespaces, ...), which may still
 *     refuse the namespace.
 *   - Registers cannot change under a running syscall, but clone_args is user
 *     memory: another thread of the caller can rewrite its flags between the
 *     kernel's copy and this read. A deny rule can therefore be raced with clone3
 *     from a multi-threaded caller; unshare and clone cannot be raced this way.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/ptrace.h>
#include <linux/user_namespace.h>
#endif

#define CRED_PREPARE_FLAG_UNPRIVILEGED 0x1
#define CRED_PREPARE_FLAG_COMPAT 0x2

/* Policy field slots: userns_create's (programs/cred_prepare.yaml `policy:`). */
#define CRED_PREPARE_POLICY_UNPRIVILEGED 0

#define CRED_PREPARE_SYSCALL_UNSHARE 1
#define CRED_PREPARE_SYSCALL_CLONE 2
#define CRED_PREPARE_SYSCALL_CLONE3 3

/* Syscall numbers (arch/x86/entry/syscalls/syscall_{64,32}.tbl) and kernel flags:
 * macros, not in BTF; own names, so the kernel headers' definitions never clash. */
#define CRED_PREPARE_NR_CLONE 56
#define CRED_PREPARE_NR_UNSHARE 272
#define CRED_PREPARE_NR_CLONE3 435
#define CRED_PREPARE_NR32_CLONE 120
#define CRED_PREPARE_NR32_UNSHARE 310
#define CRED_PREPARE_NR32_CLONE3 435
#define CRED_PREPARE_X32_SYSCALL_BIT 0x40000000
#define CRED_PREPARE_TS_COMPAT 0x0002      /* thread_info.status: an ia32 syscall is running */
#define CRED_PREPARE_CLONE_NEWUSER 0x10000000ULL
#define CRED_PREPARE_CSIGNAL 0xffULL       /* clone(): the low byte is the exit signal */

struct cred_prepare_event {
    KRSID_EVENT_HEADER
    __u64 cap_effective;
    __u64 cap_permitted;
    __u64 clone_flags;
    __u32 cred_uid;
    __u32 cred_euid;
    __u32 cred_gid;
    __u32 parent_level;
    __u32 parent_inum;
    __u32 flags;
    __u32 syscall;
    __u32 pad;
};

/*
 * CRED_PREPARE_SYSCALL_* when the current task is in a syscall that creates a user
 * namespace (its flags in *clone_flags, CRED_PREPARE_FLAG_COMPAT in *compat for the
 * ia32 ABI); 0 for every other call.
 */
static __always_inline __u32 cred_prepare_userns_syscall(__u64 *clone_flags, __u32 *compat)
{
#if defined(__x86_64__)
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    __u32 status = 0;
    __u64 nr = 0, arg0 = 0;
    __u32 sys = 0;

    if (krsid_current_kthread())
        return 0;  /* prepare_kernel_cred() and friends: no user syscall */
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
    if (!regs)
        return 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    bpf_probe_read_kernel(&status, sizeof(status), &task->thread_info.status);
    if (status & CRED_PREPARE_TS_COMPAT) {
        if (nr == CRED_PREPARE_NR32_UNSHARE)
            sys = CRED_PREPARE_SYSCALL_UNSHARE;
        else if (nr == CRED_PREPARE_NR32_CLONE)
            sys = CRED_PREPARE_SYSCALL_CLONE;
        else if (nr == CRED_PREPARE_NR32_CLONE3)
            sys = CRED_PREPARE_SYSCALL_CLONE3;
        else
            return 0;
        bpf_probe_read_kernel(&arg0, sizeof(arg0), &regs->bx);
        arg0 &= 0xffffffffULL;  /* 32-bit flags or pointer */
        *compat = CRED_PREPARE_FLAG_COMPAT;
    } else {
        nr &= ~(__u64)CRED_PREPARE_X32_SYSCALL_BIT;
        if (nr == CRED_PREPARE_NR_UNSHARE)
            sys = CRED_PREPARE_SYSCALL_UNSHARE;
        else if (nr == CRED_PREPARE_NR_CLONE)
            sys = CRED_PREPARE_SYSCALL_CLONE;
        else if (nr == CRED_PREPARE_NR_CLONE3)
            sys = CRED_PREPARE_SYSCALL_CLONE3;
        else
            return 0;
        bpf_probe_read_kernel(&arg0, sizeof(arg0), &regs->di);
    }
    __u64 flags = arg0;
    if (sys == CRED_PREPARE_SYSCALL_CLONE3) {
        /* struct clone_args starts with __u64 flags. The kernel copied it already,
         * so it is resident; a failed read (the caller unmapped it meanwhile) is
         * treated like a flag rewrite: not seen (see the race note above). */
        flags = 0;
        if (bpf_probe_read_user(&flags, sizeof(flags), (const void *)arg0))
            return 0;
    } else if (sys == CRED_PREPARE_SYSCALL_CLONE) {
        flags &= ~CRED_PREPARE_CSIGNAL;
    }
    if (!(flags & CRED_PREPARE_CLONE_NEWUSER))
        return 0;
    *clone_flags = flags;
    return sys;
#else
    return 0;
#endif
}

LSM_PROBE(cred_prepare, struct cred *new, const struct cred *old, gfp_t gfp)
{
    KRSID_HOOK_PROLOGUE();

    __u64 clone_flags = 0;
    __u32 compat = 0;
    __u32 sys = cred_prepare_userns_syscall(&clone_flags, &compat);
    if (!sys)
        KRSID_RETURN_FILTERED();

    /* The creator's capabilities, from the credentials being copied (old: the
     * creator's; new is still an identical copy at this point). */
    __u64 cap_effective = 0;
    bpf_probe_read_kernel(&cap_effective, sizeof(cap_effective), &old->cap_effective);
    __u32 unprivileged = !(cap_effective & (1ULL << 21));  /* no CAP_SYS_ADMIN */

    /* Policy: the rules of userns_create (the daemon loads them into this hook's
     * slots), with the same policy field; the generic matchers see the creator. */
    struct krsid_policy_input in = {};
    in.field[CRED_PREPARE_POLICY_UNPRIVILEGED] = unprivileged;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    struct cred_prepare_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct cred_prepare_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);  /* a full buffer must not turn a deny into allow */

    e->cap_effective = cap_effective;
    e->cap_permitted = 0;
    bpf_probe_read_kernel(&e->cap_permitted, sizeof(e->cap_permitted), &old->cap_permitted);
    e->cred_uid = old->uid.val;
    e->cred_euid = old->euid.val;
    e->cred_gid = old->gid.val;
    struct user_namespace *ns = old->user_ns;
    e->parent_level = ns->level;
    e->parent_inum = ns->ns.inum;
    e->flags = compat | (unprivileged ? CRED_PREPARE_FLAG_UNPRIVILEGED : 0);
    e->clone_flags = clone_flags;
    e->syscall = sys;
    e->pad = 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
