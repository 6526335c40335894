// SPDX-License-Identifier: GPL-2.0
/*
 * exec audit: one event per bprm_check_security call.
 *
 * The hook runs once per binary handler pass: a script produces one event for the
 * script (interp == filename) and one after binfmt_script swapped in the
 * interpreter (interp = "/bin/sh", filename = the script), as KRSI's first
 * example showed. Both events carry the caller's argv (and envp, option env).
 *
 * Where argv/envp come from: at this hook the kernel has already copied the
 * strings, but into the NEW mm (bprm->mm), which a non-sleepable program cannot
 * read. current->mm is still the caller's until the point of no return, so the
 * caller's own argv/envp arrays are read with bpf_probe_read_user, from the
 * pointers in its syscall registers (bpf_task_pt_regs, x86-64 only):
 *   execve    (nr 59):  rsi = argv, rdx = envp
 *   execveat  (nr 322): rdx = argv, r10 = envp
 * Anything else (an exec started by the kernel: usermode helpers, init; a 32-bit
 * or x32 execve) has no user argv to read: ARGS_UNAVAILABLE, argc = the kernel's
 * count. Caveat: what is read is the caller's memory at hook time; another thread
 * of the caller could change it after the kernel copied it (the program gets the
 * kernel's copy). Audit data, not a proof.
 *
 * Layout of args/env: the strings back to back, each followed by its NUL, then at
 * least one more NUL (the rest of the buffer is zero): "ls\0-l\0\0\0...". The
 * last string may be cut when the buffer is full (ARGS_TRUNCATED/ENV_TRUNCATED).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/binfmts.h>
#include <linux/ptrace.h>
#endif

/* Option slots, set from the config through programs/bprm_check_security.yaml. */
#define BPRM_CHECK_SECURITY_OPT_ENV 0
/* Policy field slots, see bprm_check_security.yaml. */
#define BPRM_CHECK_SECURITY_POLICY_ARGC 0
#define BPRM_CHECK_SECURITY_POLICY_INTERPRETER 1

#define BPRM_CHECK_SECURITY_FLAG_FILENAME_TRUNCATED 0x1
#define BPRM_CHECK_SECURITY_FLAG_INTERP_TRUNCATED 0x2
#define BPRM_CHECK_SECURITY_FLAG_ARGS_TRUNCATED 0x4
#define BPRM_CHECK_SECURITY_FLAG_ENV_TRUNCATED 0x8
#define BPRM_CHECK_SECURITY_FLAG_ARGS_UNAVAILABLE 0x10
#define BPRM_CHECK_SECURITY_FLAG_ENV_UNAVAILABLE 0x20

/* Sizes of args/env. The last byte of each always stays 0, so the strings are
 * always followed by an extra NUL. */
#define BPRM_CHECK_SECURITY_ARGS_LEN 1024
#define BPRM_CHECK_SECURITY_ENV_LEN 1024
#define BPRM_CHECK_SECURITY_VEC_LEN 1024
#define BPRM_CHECK_SECURITY_VEC_CAP (BPRM_CHECK_SECURITY_VEC_LEN - 1)
_Static_assert(BPRM_CHECK_SECURITY_ARGS_LEN == BPRM_CHECK_SECURITY_VEC_LEN, "args is filled from the scratch vector");
_Static_assert(BPRM_CHECK_SECURITY_ENV_LEN == BPRM_CHECK_SECURITY_VEC_LEN, "env is filled from the scratch vector");
/* Strings copied per vector. Each bounded loop iteration is walked by the
 * verifier, and the envp loop once for every way the argv loop can end: 64
 * keeps that in the tens of thousands of instructions (256 did not load). */
#define BPRM_CHECK_SECURITY_MAX_STRINGS 64

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl): macros, not in BTF. */
#define BPRM_CHECK_SECURITY_NR_EXECVE 59
#define BPRM_CHECK_SECURITY_NR_EXECVEAT 322

struct bprm_check_security_event {
    KRSID_EVENT_HEADER
    __u32 flags;
    __u32 path_len;
    __u32 argc;
    __u32 args_len;
    __u32 envc;
    __u32 env_len;
    char filename[KRSID_PATH_LEN];
    char interp[KRSID_PATH_LEN];
    char path[KRSID_PATH_LEN];
    char args[BPRM_CHECK_SECURITY_ARGS_LEN];
    char env[BPRM_CHECK_SECURITY_ENV_LEN];
};

/* The strings are gathered here first: a read at a variable offset must provably
 * stay inside its buffer for the verifier (max offset + max size), hence twice the
 * length (only the first VEC_CAP bytes are ever written); then the first VEC_LEN
 * bytes are copied into the event. Per CPU: too big for the stack. */
struct bprm_check_security_scratch_buf {
    char data[2 * BPRM_CHECK_SECURITY_VEC_LEN];
};
BPF_PERCPU_ARRAY(bprm_check_security_scratch, struct bprm_check_security_scratch_buf, 1);

/* All zeros, never written: the source for clearing args/env. */
struct bprm_check_security_zero_buf {
    char data[BPRM_CHECK_SECURITY_VEC_LEN];
};
BPF_ARRAY(bprm_check_security_zeros, struct bprm_check_security_zero_buf, 1);

/* The caller's argc, by thread, saved on the first pass when argv did not fit: an
 * interpreter pass has no exact count of its own (bprm->argc then counts what the
 * handler inserted too). LRU: entries of finished execs just age out. */
BPF_TABLE("lru_hash", __u64, __u32, bprm_check_security_argc, 1024);

/* What reading one string vector gave. */
struct bprm_check_security_vec {
    __u32 count;     /* strings copied */
    __u32 used;      /* bytes of buf used, NULs included, <= VEC_CAP */
    __u32 complete;  /* the NULL that ends the array was reached */
    __u32 cut;       /* a string did not fit in full */
};

/*
 * Copy the user string array at uvec (NULL-terminated) into buf (zeroed), back to
 * back, at most MAX_STRINGS strings and VEC_CAP bytes.
 */
static __always_inline void bprm_check_security_read_vec(char *buf, __u64 uvec, struct bprm_check_security_vec *v)
{
    __u64 off = 0;
    __u32 i;

    v->count = 0;
    v->complete = 0;
    v->cut = 0;
    if (!uvec) {  /* execve(path, NULL, ...): an empty array */
        v->complete = 1;
        v->used = 0;
        return;
    }
#pragma clang loop unroll(disable)
    for (i = 0; i < BPRM_CHECK_SECURITY_MAX_STRINGS; i++) {
        const char *p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), (const void *)(uvec + (__u64)i * sizeof(p))))
            break;  /* the caller's memory changed under us: incomplete */
        if (!p) {
            v->complete = 1;
            break;
        }
        /* The verifier must see o in [0, CAP-1] on the very register that gives
         * the destination and the size: 64-bit, behind an empty asm so that clang
         * neither reuses an older copy (with the signed range of the helper's
         * return) nor rewrites CAP - o as o ^ CAP. room is then in [1, CAP]. */
        __u64 o = off;
        asm volatile("" : "+r"(o));
        if (o >= BPRM_CHECK_SECURITY_VEC_CAP)
            break;  /* full */
        __u64 room = BPRM_CHECK_SECURITY_VEC_CAP - o;
        long n = bpf_probe_read_user_str(buf + o, room, p);
        if (n < 0)
            break;
        /* An empty string ("") reads as 0, not 1: strncpy_from_user_nofault counts the
         * NUL only after a non-empty string. buf is zeroed, so it holds the NUL. */
        if (n == 0)
            n = 1;
        v->count = i + 1;
        if ((__u64)n >= room) {
            off = BPRM_CHECK_SECURITY_VEC_CAP;  /* this string may be cut */
            v->cut = 1;
        } else {
            off = o + n;
        }
    }
    v->used = off;
}

/* The caller's execve/execveat argv and envp pointers; 0 when there is no such
 * syscall to read them from. */
static __always_inline int bprm_check_security_user_vectors(__u64 *argv, __u64 *envp)
{
#if defined(__x86_64__)
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    __u64 nr = 0;

    if (!regs)
        return 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    if (nr == BPRM_CHECK_SECURITY_NR_EXECVE) {
        bpf_probe_read_kernel(argv, sizeof(*argv), &regs->si);
        bpf_probe_read_kernel(envp, sizeof(*envp), &regs->dx);
        return 1;
    }
    if (nr == BPRM_CHECK_SECURITY_NR_EXECVEAT) {
        bpf_probe_read_kernel(argv, sizeof(*argv), &regs->dx);
        bpf_probe_read_kernel(envp, sizeof(*envp), &regs->r10);
        return 1;
    }
#endif
    return 0;
}

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm)
{
    KRSID_HOOK_PROLOGUE();

    /* The generic matchers see the caller (exe = the program that calls execve);
     * path_prefix matches the file being executed (on an interpreter pass, the
     * interpreter). */
    int first_pass = bprm->interp == bprm->filename;
    struct krsid_policy_input in = {};
    in.field[BPRM_CHECK_SECURITY_POLICY_ARGC] = bprm->argc;
    in.field[BPRM_CHECK_SECURITY_POLICY_INTERPRETER] = !first_pass;
    in.file = bprm->file->f_path.dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    int zero = 0;
    struct bprm_check_security_scratch_buf *s = bprm_check_security_scratch.lookup(&zero);
    struct bprm_check_security_zero_buf *zeros = bprm_check_security_zeros.lookup(&zero);
    if (!s || !zeros)
        KRSID_RETURN_DECISION(d.action);

    struct bprm_check_security_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct bprm_check_security_event));
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->flags = 0;
    /* filename/interp are what the caller passed (may be relative); path is the
     * resolved absolute path of the file being executed. */
    int n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
    if (n == sizeof(e->filename))
        e->flags |= BPRM_CHECK_SECURITY_FLAG_FILENAME_TRUNCATED;
    n = bpf_probe_read_kernel_str(e->interp, sizeof(e->interp), bprm->interp);
    if (n == sizeof(e->interp))
        e->flags |= BPRM_CHECK_SECURITY_FLAG_INTERP_TRUNCATED;
    n = bpf_d_path(&bprm->file->f_path, e->path, sizeof(e->path));
    e->path_len = n > 0 ? n : 0;
    if (n < 0)
        e->path[0] = 0;

    /* The first pass of an exec has bprm->interp == bprm->filename (alloc_bprm);
     * a binfmt handler that swaps in an interpreter also changes bprm->argc. */
    __u32 kernel_argc = bprm->argc;
    __u32 kernel_envc = bprm->envc;
    int want_env = krsid_option(KRSID_HOOK_ID, BPRM_CHECK_SECURITY_OPT_ENV) != 0;

    /* Every byte of args/env is written: the strings, then zeros (the decoder
     * reads up to the double NUL; no stale ring-buffer bytes behind it either). A
     * 1 KiB __builtin_memset becomes a call the BPF backend refuses, so zeros are
     * copied from a map value nobody writes. */
    bpf_probe_read_kernel(e->env, sizeof(e->env), zeros->data);
    e->argc = 0;
    e->args_len = 0;
    e->env_len = 0;
    e->envc = kernel_envc;  /* execve's envp count: handlers do not change it */

    __u64 uargv = 0, uenvp = 0;
    if (!bprm_check_security_user_vectors(&uargv, &uenvp)) {
        bpf_probe_read_kernel(e->args, sizeof(e->args), zeros->data);
        e->argc = kernel_argc;
        e->flags |= BPRM_CHECK_SECURITY_FLAG_ARGS_UNAVAILABLE;
        if (want_env)
            e->flags |= BPRM_CHECK_SECURITY_FLAG_ENV_UNAVAILABLE;
        KRSID_SUBMIT_AND_RETURN(e, d);
    }

    struct bprm_check_security_vec v = {};
    bpf_probe_read_kernel(s->data, BPRM_CHECK_SECURITY_VEC_LEN, zeros->data);
    bprm_check_security_read_vec(s->data, uargv, &v);
    /* Always the full length: a constant size (a variable one would be a precise
     * value for the verifier and multiply its states). */
    bpf_probe_read_kernel(e->args, BPRM_CHECK_SECURITY_VEC_LEN, s->data);
    e->args_len = v.used;
    e->argc = v.count;
    if (v.cut || !v.complete)
        e->flags |= BPRM_CHECK_SECURITY_FLAG_ARGS_TRUNCATED;
    if (!v.complete) {
        __u64 key = bpf_get_current_pid_tgid();  /* the same thread runs every pass */
        if (first_pass) {
            e->argc = kernel_argc;  /* exact: the kernel counted the caller's argv */
            bprm_check_security_argc.update(&key, &kernel_argc);
        } else {
            __u32 *saved = bprm_check_security_argc.lookup(&key);
            if (saved)
                e->argc = *saved;  /* else: the strings copied, a lower bound */
        }
    }

    if (want_env) {
        bpf_probe_read_kernel(s->data, BPRM_CHECK_SECURITY_VEC_LEN, zeros->data);
        bprm_check_security_read_vec(s->data, uenvp, &v);
        bpf_probe_read_kernel(e->env, BPRM_CHECK_SECURITY_VEC_LEN, s->data);
        e->env_len = v.used;
        if (v.cut || !v.complete)
            e->flags |= BPRM_CHECK_SECURITY_FLAG_ENV_TRUNCATED;
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
