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
 *
 * Exec context (context, stdin_type/stdout_type/stderr_type, ld_*): what the
 * exec looks like from the kernel, read here where user space would race (a
 * /proc reader comes after the exec, when the fds may be gone and the memfd
 * closed):
 *   - fds 0, 1, 2 of the caller (task->files, before close-on-exec runs): a shell
 *     whose stdin/stdout is a TCP socket is a reverse shell;
 *   - the file executed: a memfd (fileless, memfd_create + fexecve), unlinked
 *     (nlink 0: deleted after start-up or an O_TMPFILE), on tmpfs, in a
 *     directory every user may write to (/tmp, /var/tmp, /dev/shm), or in the
 *     upper layer of an overlayfs (written or changed since the overlay was
 *     mounted: in a container, a program that is not from its image);
 *   - LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH in the new program's environment (the
 *     caller's envp): always scanned by name, whatever the env option says; their
 *     values (option ld_values) and no other variable.
 * All of it is computed before the policy decision (a rule can deny on it), without
 * data-dependent state that would make the verifier walk the rule loop more than
 * a few times.
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/binfmts.h>
#include <linux/ptrace.h>
#include <linux/fdtable.h>
#include <linux/net.h>
#endif

/* Option slots, set from the config through programs/bprm_check_security.yaml. */
#define BPRM_CHECK_SECURITY_OPT_ENV 0
#define BPRM_CHECK_SECURITY_OPT_LD_VALUES 1
/* Policy field slots, see bprm_check_security.yaml. */
#define BPRM_CHECK_SECURITY_POLICY_ARGC 0
#define BPRM_CHECK_SECURITY_POLICY_INTERPRETER 1
#define BPRM_CHECK_SECURITY_POLICY_CONTEXT 2

#define BPRM_CHECK_SECURITY_FLAG_FILENAME_TRUNCATED 0x1
#define BPRM_CHECK_SECURITY_FLAG_INTERP_TRUNCATED 0x2
#define BPRM_CHECK_SECURITY_FLAG_ARGS_TRUNCATED 0x4
#define BPRM_CHECK_SECURITY_FLAG_ENV_TRUNCATED 0x8
#define BPRM_CHECK_SECURITY_FLAG_ARGS_UNAVAILABLE 0x10
#define BPRM_CHECK_SECURITY_FLAG_ENV_UNAVAILABLE 0x20
#define BPRM_CHECK_SECURITY_FLAG_LD_VALUE_TRUNCATED 0x40

/* context: the exec's circumstances (the sidecar names the bits). */
#define BPRM_CHECK_SECURITY_CTX_STDIN_INET 0x1     /* fd 0 is an AF_INET/AF_INET6 socket */
#define BPRM_CHECK_SECURITY_CTX_STDOUT_INET 0x2
#define BPRM_CHECK_SECURITY_CTX_STDERR_INET 0x4
#define BPRM_CHECK_SECURITY_CTX_MEMFD KRSID_FILE_CTX_MEMFD
#define BPRM_CHECK_SECURITY_CTX_DELETED KRSID_FILE_CTX_DELETED
#define BPRM_CHECK_SECURITY_CTX_TMPFS KRSID_FILE_CTX_TMPFS
#define BPRM_CHECK_SECURITY_CTX_WORLD_WRITABLE_DIR KRSID_FILE_CTX_WORLD_WRITABLE_DIR
#define BPRM_CHECK_SECURITY_CTX_LD_PRELOAD 0x80
#define BPRM_CHECK_SECURITY_CTX_LD_AUDIT 0x100
#define BPRM_CHECK_SECURITY_CTX_LD_LIBRARY_PATH 0x200
#define BPRM_CHECK_SECURITY_CTX_ENV_NOT_SCANNED 0x400  /* envp not read to its end: LD_* bits may miss */
#define BPRM_CHECK_SECURITY_CTX_UPPER_LAYER KRSID_FILE_CTX_UPPER_LAYER
/* An interpreter started with no script and no -c code, its stdin a pipe or socket:
 * it runs what arrives there (curl ... | sh). */
#define BPRM_CHECK_SECURITY_CTX_STDIN_SCRIPT 0x1000
_Static_assert(BPRM_CHECK_SECURITY_CTX_STDOUT_INET == BPRM_CHECK_SECURITY_CTX_STDIN_INET << 1 &&
                   BPRM_CHECK_SECURITY_CTX_STDERR_INET == BPRM_CHECK_SECURITY_CTX_STDIN_INET << 2,
               "the stdio bits are STDIN_INET << fd");

/* stdin_type/stdout_type/stderr_type: what the fd is. */
#define BPRM_CHECK_SECURITY_FD_CLOSED 0
#define BPRM_CHECK_SECURITY_FD_FILE 1
#define BPRM_CHECK_SECURITY_FD_DIRECTORY 2
#define BPRM_CHECK_SECURITY_FD_PIPE 3
#define BPRM_CHECK_SECURITY_FD_TTY 4
#define BPRM_CHECK_SECURITY_FD_CHAR 5
#define BPRM_CHECK_SECURITY_FD_BLOCK 6
#define BPRM_CHECK_SECURITY_FD_SOCKET_UNIX 7
#define BPRM_CHECK_SECURITY_FD_SOCKET_INET 8
#define BPRM_CHECK_SECURITY_FD_SOCKET_INET6 9
#define BPRM_CHECK_SECURITY_FD_SOCKET_OTHER 10
#define BPRM_CHECK_SECURITY_FD_OTHER 11  /* anonymous inodes (eventfd, epoll, ...) */

/* Stable ABI numbers the BTF-generated headers lack (macros): file types
 * (include/uapi/linux/stat.h), address families, tty majors
 * (include/uapi/linux/major.h). */
#define BPRM_CHECK_SECURITY_S_IFMT KRSID_S_IFMT
#define BPRM_CHECK_SECURITY_S_IFSOCK 0140000
#define BPRM_CHECK_SECURITY_S_IFREG KRSID_S_IFREG
#define BPRM_CHECK_SECURITY_S_IFBLK 0060000
#define BPRM_CHECK_SECURITY_S_IFDIR KRSID_S_IFDIR
#define BPRM_CHECK_SECURITY_S_IFCHR 0020000
#define BPRM_CHECK_SECURITY_S_IFIFO 0010000
#define BPRM_CHECK_SECURITY_AF_UNIX 1
#define BPRM_CHECK_SECURITY_AF_INET 2
#define BPRM_CHECK_SECURITY_AF_INET6 10
#define BPRM_CHECK_SECURITY_TTY_MAJOR 4          /* tty0.., ttyS0.. */
#define BPRM_CHECK_SECURITY_TTYAUX_MAJOR 5       /* /dev/tty, /dev/console, /dev/ptmx */
#define BPRM_CHECK_SECURITY_PTS_MAJOR_FIRST 136  /* UNIX98_PTY_SLAVE_MAJOR: /dev/pts/N */
#define BPRM_CHECK_SECURITY_PTS_MAJORS 8
#define BPRM_CHECK_SECURITY_MINORBITS KRSID_MINORBITS

/* Environment strings scanned for the LD_* names. Apart from the envp loop of the
 * env option: a short body with no value the verifier must track precisely, so
 * every iteration is walked once and every way out of the loop prunes. More
 * strings than this set ENV_NOT_SCANNED (padding the environment is an evasion). */
#define BPRM_CHECK_SECURITY_LD_SCAN_STRINGS 256
/* Bytes of each LD_* value kept (option ld_values). */
#define BPRM_CHECK_SECURITY_LD_LEN 256

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
    __u32 context;
    __u32 stdin_type;
    __u32 stdout_type;
    __u32 stderr_type;
    __u32 dev_major;
    __u32 dev_minor;
    __u64 ino;
    __u64 size;
    __s64 mtime_ns;
    __s64 ctime_ns;
    char ld_preload[BPRM_CHECK_SECURITY_LD_LEN];
    char ld_audit[BPRM_CHECK_SECURITY_LD_LEN];
    char ld_library_path[BPRM_CHECK_SECURITY_LD_LEN];
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

/* The caller's execve/execveat argv and envp pointers, and 1 (else 0, with both 0)
 * when there is such a syscall to read them from. Without a branch: this runs before
 * the policy decision, and a result the verifier knows as a constant on each path
 * would make it walk the rule loop once per path (see krsid.h). */
static __always_inline __u64 bprm_check_security_user_vectors(__u64 *argv, __u64 *envp)
{
#if defined(__x86_64__)
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    __u64 nr = 0, si = 0, dx = 0, r10 = 0;

    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    bpf_probe_read_kernel(&si, sizeof(si), &regs->si);
    bpf_probe_read_kernel(&dx, sizeof(dx), &regs->dx);
    bpf_probe_read_kernel(&r10, sizeof(r10), &regs->r10);
    __u64 is_execve = krsid_nonzero(nr ^ BPRM_CHECK_SECURITY_NR_EXECVE) ^ 1;
    __u64 is_execveat = krsid_nonzero(nr ^ BPRM_CHECK_SECURITY_NR_EXECVEAT) ^ 1;
    *argv = (si & (0 - is_execve)) | (dx & (0 - is_execveat));
    *envp = (dx & (0 - is_execve)) | (r10 & (0 - is_execveat));
    return is_execve | is_execveat;
#else
    *argv = 0;
    *envp = 0;
    return 0;
#endif
}

/* What the caller's fd `fd` is (BPRM_CHECK_SECURITY_FD_*), from its fd table. */
static __always_inline __u32 bprm_check_security_fd_type(struct file **fds, int fd)
{
    struct file *f = 0;
    struct inode *inode = 0;
    __u16 mode = 0;

    /* fd 0..2 always lie inside the table: it has at least NR_OPEN_DEFAULT (64)
     * slots (the embedded fdtab), so no max_fds check. */
    bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
    if (!f)
        return BPRM_CHECK_SECURITY_FD_CLOSED;
    bpf_probe_read_kernel(&inode, sizeof(inode), &f->f_inode);
    if (!inode)
        return BPRM_CHECK_SECURITY_FD_OTHER;
    bpf_probe_read_kernel(&mode, sizeof(mode), &inode->i_mode);
    __u32 fmt = mode & BPRM_CHECK_SECURITY_S_IFMT;
    if (fmt == BPRM_CHECK_SECURITY_S_IFSOCK) {
        /* A sockfs file: private_data is its struct socket, ops->family its
         * address family (struct proto_ops, linux/net.h: no net/sock.h needed). */
        struct socket *sock = 0;
        const struct proto_ops *ops = 0;
        int family = 0;
        bpf_probe_read_kernel(&sock, sizeof(sock), &f->private_data);
        if (sock)
            bpf_probe_read_kernel(&ops, sizeof(ops), &sock->ops);
        if (ops)
            bpf_probe_read_kernel(&family, sizeof(family), &ops->family);
        if (family == BPRM_CHECK_SECURITY_AF_INET)
            return BPRM_CHECK_SECURITY_FD_SOCKET_INET;
        if (family == BPRM_CHECK_SECURITY_AF_INET6)
            return BPRM_CHECK_SECURITY_FD_SOCKET_INET6;
        if (family == BPRM_CHECK_SECURITY_AF_UNIX)
            return BPRM_CHECK_SECURITY_FD_SOCKET_UNIX;
        return BPRM_CHECK_SECURITY_FD_SOCKET_OTHER;
    }
    if (fmt == BPRM_CHECK_SECURITY_S_IFCHR) {
        __u32 rdev = 0;
        bpf_probe_read_kernel(&rdev, sizeof(rdev), &inode->i_rdev);
        __u32 major = rdev >> BPRM_CHECK_SECURITY_MINORBITS;
        if (major == BPRM_CHECK_SECURITY_TTY_MAJOR || major == BPRM_CHECK_SECURITY_TTYAUX_MAJOR ||
            major - BPRM_CHECK_SECURITY_PTS_MAJOR_FIRST < BPRM_CHECK_SECURITY_PTS_MAJORS)
            return BPRM_CHECK_SECURITY_FD_TTY;
        return BPRM_CHECK_SECURITY_FD_CHAR;
    }
    if (fmt == BPRM_CHECK_SECURITY_S_IFREG)
        return BPRM_CHECK_SECURITY_FD_FILE;
    if (fmt == BPRM_CHECK_SECURITY_S_IFIFO)
        return BPRM_CHECK_SECURITY_FD_PIPE;
    if (fmt == BPRM_CHECK_SECURITY_S_IFDIR)
        return BPRM_CHECK_SECURITY_FD_DIRECTORY;
    if (fmt == BPRM_CHECK_SECURITY_S_IFBLK)
        return BPRM_CHECK_SECURITY_FD_BLOCK;
    return BPRM_CHECK_SECURITY_FD_OTHER;
}

/* fds 0, 1, 2 of the current task; CLOSED when it has no fd table. */
static __always_inline void bprm_check_security_stdio(__u32 *types)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct files_struct *files = 0;
    struct fdtable *fdt = 0;
    struct file **fds = 0;

    types[0] = BPRM_CHECK_SECURITY_FD_CLOSED;
    types[1] = BPRM_CHECK_SECURITY_FD_CLOSED;
    types[2] = BPRM_CHECK_SECURITY_FD_CLOSED;
    bpf_probe_read_kernel(&files, sizeof(files), &task->files);
    if (files)
        bpf_probe_read_kernel(&fdt, sizeof(fdt), &files->fdt);
    if (fdt)
        bpf_probe_read_kernel(&fds, sizeof(fds), &fdt->fd);
    if (!fds)
        return;
    types[0] = bprm_check_security_fd_type(fds, 0);
    types[1] = bprm_check_security_fd_type(fds, 1);
    types[2] = bprm_check_security_fd_type(fds, 2);
}

/*
 * The script an interpreter is started on (krsid.h: krsid_script_names). Interpreters
 * are named by their program's file name up to its first digit (python3.11 ->
 * python, perl5.36.0 -> perl, ksh93 -> ksh): the option interpreters. The names kept
 * are the basenames of argv[1..3] that do not start with '-' (an option's value may
 * come first: `python3 -W ignore x.py`), of up to 31 bytes.
 */
#define BPRM_CHECK_SECURITY_INTERP_LEN 16
#define BPRM_CHECK_SECURITY_ARG_LEN 256       /* bytes of an argument read to find its basename */
#define BPRM_CHECK_SECURITY_STORAGE_CREATE 1  /* BPF_LOCAL_STORAGE_GET_F_CREATE (uapi enum) */
struct bprm_check_security_interp_key {
    char name[BPRM_CHECK_SECURITY_INTERP_LEN];
};
BPF_HASH(bprm_check_security_interpreters, struct bprm_check_security_interp_key, __u8, 256);
/* One argument, read to find its basename; twice the length so that a read at any
 * masked offset stays inside. Per CPU: too big for the stack. */
struct bprm_check_security_arg_buf {
    char data[2 * BPRM_CHECK_SECURITY_ARG_LEN];
    char tail[KRSID_SCRIPT_NAME_LEN];
    struct bprm_check_security_interp_key key;
    /* bprm_check_security_script_names' answer, read after the envp scan: a value
     * live across that loop costs 6.1's verifier ~64k instructions (measured). */
    __u64 from_stdin;
};
BPF_PERCPU_ARRAY(bprm_check_security_arg_scratch, struct bprm_check_security_arg_buf, 1);

/* 1 if the program being run is one of the interpreters, else 0; key: scratch. */
static __always_inline __u64 bprm_check_security_is_interpreter(struct dentry *dentry,
                                                                struct bprm_check_security_interp_key *key)
{
    __builtin_memset(key, 0, sizeof(*key));
    bpf_probe_read_kernel_str(key->name, sizeof(key->name), dentry->d_name.name);
    __u64 keep = 1;
#pragma unroll
    for (int i = 1; i < BPRM_CHECK_SECURITY_INTERP_LEN; i++) {
        __u8 c = key->name[i];
        keep &= krsid_less(9, (__u8)(c - '0'));  /* 0 from the first digit on */
        key->name[i] = c & (__u8)(0 - keep);
    }
    __u8 *listed = bprm_check_security_interpreters.lookup(key);
    __u64 found = 0;
    if (listed)
        found = 1;
    return found;
}

/* Store in slot the basename of the argument at user address p (0: none), with its
 * length; a length of 0 when there is no such argument, it is an option or a
 * directory ("x/"), its basename is 32 bytes or more, or want is 0. Straight-line:
 * the last '/' is looked for in the argument's last 32 bytes only, without a branch
 * on what was read. */
static __always_inline __u64 bprm_check_security_keep_name(struct krsid_script_names *names, int slot,
                                                           const char *p, struct bprm_check_security_arg_buf *buf,
                                                           __u64 want)
{
    long n = bpf_probe_read_user_str(buf->data, BPRM_CHECK_SECURITY_ARG_LEN, p);
    /* An argument of 1 to 254 bytes (n counts the NUL; a longer one's end is unknown). */
    __u64 ok = want & krsid_less(1, n) & krsid_less(n, BPRM_CHECK_SECURITY_ARG_LEN);
    __u64 option = krsid_nonzero((__u8)buf->data[0] ^ '-') ^ 1;
    ok &= option ^ 1;
    __u64 len = (__u64)(n - 1) & (BPRM_CHECK_SECURITY_ARG_LEN - 1);
    /* An option ending in c (`sh -c`, `bash -lc`, `python3 -c`): what follows is code,
     * not a script to open (`sh -c "mail root < /tmp/report"` reads that file). */
    __u64 code_next = option & (krsid_nonzero((__u8)buf->data[(len - 1) & (BPRM_CHECK_SECURITY_ARG_LEN - 1)] ^ 'c') ^ 1);
    __u64 longer = krsid_less(KRSID_SCRIPT_NAME_LEN, len);
    __u64 tail_len = len - longer * (len - KRSID_SCRIPT_NAME_LEN);  /* min(len, 32) */
    __u64 tail_at = (len - tail_len) & (BPRM_CHECK_SECURITY_ARG_LEN - 1);
    bpf_probe_read_kernel(buf->tail, sizeof(buf->tail), buf->data + tail_at);
    __u64 start = 0;  /* in tail: after its last '/' */
#pragma unroll
    for (int i = 0; i < KRSID_SCRIPT_NAME_LEN; i++) {
        __u64 slash = (krsid_nonzero((__u8)buf->tail[i] ^ '/') ^ 1) & krsid_less(i, tail_len);
        start += slash * (i + 1 - start);
    }
    __u64 base_len = tail_len - start;
    ok &= krsid_less(0, base_len) & krsid_less(base_len, KRSID_SCRIPT_NAME_LEN);
    __builtin_memset(names->name[slot], 0, KRSID_SCRIPT_NAME_LEN);  /* NUL-padded: file_open compares words */
    bpf_probe_read_kernel_str(names->name[slot], KRSID_SCRIPT_NAME_LEN,
                              buf->data + ((tail_at + start) & (BPRM_CHECK_SECURITY_ARG_LEN - 1)));
    names->len[slot] = base_len * ok;
    return code_next;
}

/* At every exec pass: the script names of an interpreter run on the command line
 * (argv[1..KRSID_SCRIPT_NAMES], one slot each); for any other program, none (the
 * storage is deleted). In the scratch buffer's from_stdin: 1 for an interpreter
 * started on no script and no -c code (it reads its program from stdin:
 * STDIN_SCRIPT if that is a pipe or socket), else 0. One path through the reads,
 * whatever they give: branches
 * here have 6.1's verifier walk the rest of the program more often, and it is near
 * its 1M-instruction limit (measured: 885,394 before the script names, 891,360 with
 * this code, 950,359 with a branch per argument; one more map lookup here: E2BIG). */
static __always_inline void bprm_check_security_script_names(struct linux_binprm *bprm, __u64 uargv, int first_pass)
{
    int zero = 0;
    struct bprm_check_security_arg_buf *buf = bprm_check_security_arg_scratch.lookup(&zero);
    struct krsid_script_names *names = krsid_script_names.task_storage_get(
        (struct task_struct *)bpf_get_current_task_btf(), 0, BPRM_CHECK_SECURITY_STORAGE_CREATE);
    if (!buf)
        return;
    buf->from_stdin = 0;
    if (!names)
        return;
    /* Not on a script's interpreter pass (`./x.py`, `pip install x.whl` through its
     * #! line): the caller's argv[1..] are then the script's arguments, not scripts;
     * the script itself is on its own exec event, with its context. */
    __u64 keeps = bprm_check_security_is_interpreter(bprm->file->f_path.dentry, &buf->key) & krsid_nonzero(first_pass);
    __u64 want = keeps;
#pragma unroll
    for (int i = 0; i < KRSID_SCRIPT_NAMES; i++) {
        const char *p = 0;
        bpf_probe_read_user(&p, sizeof(p), (const void *)(uargv + (__u64)(i + 1) * sizeof(p)));  /* 0 if it fails */
        /* argv ends at the first NULL: an argument after it is no argument. */
        uargv &= 0 - krsid_nonzero((__u64)p);
        /* After `-c` and its code, no argument is a script ($0, $1 of the code). */
        want &= bprm_check_security_keep_name(names, i, p, buf, want) ^ 1;
    }
    /* want is still set on an interpreter's first pass without -c code. */
    __u64 kept = 0;
#pragma unroll
    for (int i = 0; i < KRSID_SCRIPT_NAMES; i++)
        kept |= names->len[i];
    buf->from_stdin = want & (krsid_nonzero(kept) ^ 1);
    /* Only interpreters keep the storage: the kernel memory of every other thread's
     * would be spent on nothing (lengths 0 match nothing anyway). */
    if (!keeps)
        krsid_script_names.task_storage_delete((struct task_struct *)bpf_get_current_task_btf());
}

/* Where the LD_* values are in the caller's memory (0 = not set), and the context bits. */
struct bprm_check_security_ld {
    __u64 preload;
    __u64 audit;
    __u64 library_path;
    __u32 context;
};

/* The exec context once computed, laundered through this map (see the program). */
struct bprm_check_security_context_vals {
    __u64 preload;
    __u64 audit;
    __u64 library_path;
    __u32 context;
    __u32 stdio[3];
};
BPF_PERCPU_ARRAY(bprm_check_security_context_slot, struct bprm_check_security_context_vals, 1);

/* keep = match ? value : keep, without a branch (match is 0 or 1). */
static __always_inline __u64 bprm_check_security_pick(__u64 match, __u64 value, __u64 keep)
{
    return (keep & (match - 1)) | (value & (0 - match));
}

/*
 * Scan the caller's envp for LD_PRELOAD=, LD_AUDIT=, LD_LIBRARY_PATH=: only the first
 * 23 bytes of each string are read, and kept nowhere. The last occurrence wins, as
 * in glibc's ld.so. No branch on what is read: only a failed read and the array's
 * end leave the loop.
 */
static __always_inline void bprm_check_security_scan_ld(__u64 uenvp, __u64 have_vectors,
                                                        struct bprm_check_security_ld *ld)
{
    __u64 words[3];
    /* execve(path, argv, NULL) is an empty environment, fully scanned; no user
     * vectors at all (an exec by the kernel) is an environment not scanned. */
    __u64 complete = (krsid_nonzero(uenvp) ^ 1) & have_vectors;
    __u64 seen = 0;
    __u32 i;

    ld->preload = 0;
    ld->audit = 0;
    ld->library_path = 0;
#pragma clang loop unroll(disable)
    for (i = 0; i < BPRM_CHECK_SECURITY_LD_SCAN_STRINGS; i++) {
        __u64 p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), (const void *)(uenvp + (__u64)i * sizeof(p))))
            break;
        if (!p) {
            complete = 1;
            break;
        }
        words[0] = 0;
        words[1] = 0;
        words[2] = 0;
        bpf_probe_read_user_str(words, sizeof(words), (const void *)p);
        __u64 w0 = words[0], w1 = words[1];
        __u64 preload = krsid_nonzero((w0 ^ KRSID_WORD8('L', 'D', '_', 'P', 'R', 'E', 'L', 'O')) |
                                      ((w1 & 0xffffff) ^ KRSID_WORD8('A', 'D', '=', 0, 0, 0, 0, 0))) ^ 1;
        __u64 audit = krsid_nonzero((w0 ^ KRSID_WORD8('L', 'D', '_', 'A', 'U', 'D', 'I', 'T')) |
                                    ((w1 & 0xff) ^ '=')) ^ 1;
        __u64 libpath = krsid_nonzero((w0 ^ KRSID_WORD8('L', 'D', '_', 'L', 'I', 'B', 'R', 'A')) |
                                      (w1 ^ KRSID_WORD8('R', 'Y', '_', 'P', 'A', 'T', 'H', '='))) ^ 1;
        ld->preload = bprm_check_security_pick(preload, p + sizeof("LD_PRELOAD=") - 1, ld->preload);
        ld->audit = bprm_check_security_pick(audit, p + sizeof("LD_AUDIT=") - 1, ld->audit);
        ld->library_path = bprm_check_security_pick(libpath, p + sizeof("LD_LIBRARY_PATH=") - 1, ld->library_path);
        seen |= (preload * BPRM_CHECK_SECURITY_CTX_LD_PRELOAD) | (audit * BPRM_CHECK_SECURITY_CTX_LD_AUDIT) |
                (libpath * BPRM_CHECK_SECURITY_CTX_LD_LIBRARY_PATH);
    }
    ld->context = seen | ((complete ^ 1) * BPRM_CHECK_SECURITY_CTX_ENV_NOT_SCANNED);
}

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm)
{
    KRSID_HOOK_PROLOGUE();

    /* The generic matchers see the caller (exe = the program that calls execve);
     * path_prefix matches the file being executed (on an interpreter pass, the
     * interpreter). */
    int first_pass = bprm->interp == bprm->filename;

    /* The exec context, before the decision: rules can match it. */
    __u64 uargv = 0, uenvp = 0;
    __u64 have_vectors = bprm_check_security_user_vectors(&uargv, &uenvp);
    /* First, whatever the policy decides or the ring buffer holds (an exec folded into
     * a flood summary still runs its script), in straight-line code that leaves
     * nothing behind but the thread's task storage (and its from_stdin answer in the
     * scratch buffer). */
    bprm_check_security_script_names(bprm, uargv, first_pass);
    /* The envp scan first: its loop is walked once per distinct state that reaches
     * it, and the stdio types (a constant per fd and type) would multiply those. */
    struct bprm_check_security_ld ld = {};
    bprm_check_security_scan_ld(uenvp, have_vectors, &ld);
    __u32 stdio[3];
    bprm_check_security_stdio(stdio);
    __u32 context = ld.context | krsid_file_context(bprm->file->f_path.dentry);
#pragma unroll
    for (int fd = 0; fd < 3; fd++) {
        __u64 inet = krsid_nonzero(stdio[fd] ^ BPRM_CHECK_SECURITY_FD_SOCKET_INET) ^ 1;
        inet |= krsid_nonzero(stdio[fd] ^ BPRM_CHECK_SECURITY_FD_SOCKET_INET6) ^ 1;
        context |= inet * (BPRM_CHECK_SECURITY_CTX_STDIN_INET << fd);
    }
    /* Launder the context through a map: the values read back are unknown to the
     * verifier, so the many ways through the stdio types and the envp scan (each a
     * distinct state of constants) become one state for the rest of the program.
     * 6.12's verifier prunes them anyway; 6.1's walked the rest once per way and
     * passed its 1M-instruction limit. The lookups cannot fail (arrays, key 0). */
    int slot_key = 0;
    struct bprm_check_security_context_vals *cv = bprm_check_security_context_slot.lookup(&slot_key);
    struct bprm_check_security_arg_buf *args = bprm_check_security_arg_scratch.lookup(&slot_key);
    if (!cv || !args)
        KRSID_RETURN_FILTERED();
    cv->preload = ld.preload;
    cv->audit = ld.audit;
    cv->library_path = ld.library_path;
    cv->context = context;
    cv->stdio[0] = stdio[0];
    cv->stdio[1] = stdio[1];
    cv->stdio[2] = stdio[2];
    asm volatile("" ::: "memory");  /* read back from the map, not from registers */
    ld.preload = cv->preload;
    ld.audit = cv->audit;
    ld.library_path = cv->library_path;
    context = cv->context;
    stdio[0] = cv->stdio[0];
    stdio[1] = cv->stdio[1];
    stdio[2] = cv->stdio[2];
    /* STDIN_SCRIPT: the program an interpreter reads from stdin comes through a pipe
     * or a socket (not a terminal, a file or /dev/null). */
    __u64 stdin_fed = krsid_nonzero(stdio[0] ^ BPRM_CHECK_SECURITY_FD_PIPE) ^ 1;
    stdin_fed |= krsid_less(BPRM_CHECK_SECURITY_FD_SOCKET_UNIX - 1, stdio[0]) &
                 krsid_less(stdio[0], BPRM_CHECK_SECURITY_FD_SOCKET_OTHER + 1);
    context |= (args->from_stdin & stdin_fed) * BPRM_CHECK_SECURITY_CTX_STDIN_SCRIPT;

    struct krsid_policy_input in = {};
    in.field[BPRM_CHECK_SECURITY_POLICY_ARGC] = bprm->argc;
    in.field[BPRM_CHECK_SECURITY_POLICY_INTERPRETER] = !first_pass;
    in.field[BPRM_CHECK_SECURITY_POLICY_CONTEXT] = context;
    in.file = bprm->file->f_path.dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    int zero = 0;
    struct bprm_check_security_scratch_buf *s = bprm_check_security_scratch.lookup(&zero);
    struct bprm_check_security_zero_buf *zeros = bprm_check_security_zeros.lookup(&zero);
    if (!s || !zeros)
        KRSID_RETURN_DECISION(d.action);

    struct bprm_check_security_event *e =
        krsid_event_begin(KRSID_HOOK_ID, sizeof(struct bprm_check_security_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    int n = 0;
    e->flags = 0;
    e->context = context;
    e->stdin_type = stdio[0];
    e->stdout_type = stdio[1];
    e->stderr_type = stdio[2];
    /* The file's identity as stat shows it: user space looks its hash up by this key
     * (a binary run before answers on the exec event itself) and, when the process
     * is gone before it can be read, hashes the path only if it is still this file.
     * Straight-line reads: no state for the verifier to multiply. */
    struct inode *inode = bprm->file->f_inode;
    krsid_inode_id(inode, &e->ino, &e->dev_major, &e->dev_minor);
    e->size = 0;
    bpf_probe_read_kernel(&e->size, sizeof(e->size), &inode->i_size);
    struct krsid_inode_times times = krsid_inode_times(inode);
    e->mtime_ns = times.mtime_sec * 1000000000LL + times.mtime_nsec;
    e->ctime_ns = times.ctime_sec * 1000000000LL + times.ctime_nsec;
    /* The three values, only with ld_values: a pointer of 0 (not set, option off)
     * fails the read, which zero-fills the buffer. */
    __u64 want_ld = krsid_option(KRSID_HOOK_ID, BPRM_CHECK_SECURITY_OPT_LD_VALUES) != 0;
    __u64 ld_mask = 0 - want_ld;
    n = bpf_probe_read_user_str(e->ld_preload, sizeof(e->ld_preload), (const void *)(ld.preload & ld_mask));
    int ld_cut = n == sizeof(e->ld_preload);
    n = bpf_probe_read_user_str(e->ld_audit, sizeof(e->ld_audit), (const void *)(ld.audit & ld_mask));
    ld_cut |= n == sizeof(e->ld_audit);
    n = bpf_probe_read_user_str(e->ld_library_path, sizeof(e->ld_library_path),
                                (const void *)(ld.library_path & ld_mask));
    ld_cut |= n == sizeof(e->ld_library_path);
    if (ld_cut)
        e->flags |= BPRM_CHECK_SECURITY_FLAG_LD_VALUE_TRUNCATED;
    /* filename/interp are what the caller passed (may be relative); path is the
     * resolved absolute path of the file being executed. */
    n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
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

    if (!have_vectors) {
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
