// SPDX-License-Identifier: GPL-2.0
/*
 * file_open: the LSM check of every open(2) that reaches a file (not O_PATH).
 *
 * The cases, told apart by `reason`:
 *   PROC_MEM_WRITE  a write open of /proc/PID/mem (or /proc/PID/task/TID/mem): the
 *                   way to inject code into another process without ptrace (KRSI's
 *                   example). target_pid = the PID directory's name, parsed here.
 *   SENSITIVE_PATH  an open of a path listed in the sensitive_paths option.
 *   WATCH           an open for writing (write access, O_TRUNC or O_CREAT) of a file
 *                   the file-integrity watch covers (krsid_watch_find, krsid.h): by
 *                   identity, so a hard link or bind mount reaches the same inode;
 *                   below a `logs` entry, only an open that can cut or edit the data a
 *                   file already has: O_TRUNC, or writing without O_APPEND, or
 *                   reading and writing (KRSID_WATCH_OP_REWRITE).
 *   NS_ENTER        an open of one of the host's namespaces (/proc/1/ns/uts, ipc,
 *                   pid, cgroup, time, mnt, net) by a process that is not in it: the
 *                   first step of setns(2) into it (`nsenter -t 1` from a container,
 *                   ATT&CK T1611). setns itself has no LSM hook, but the namespace
 *                   file is opened first. The initial namespaces have fixed inode
 *                   numbers (PROC_*_INIT_INO); the mount and network namespaces do
 *                   not, and are compared with those of PID 1 (the machine's, found
 *                   from the caller's own pid: file_open_pid1_nsproxy). Not
 *                   the initial user namespace: the kernel lets no process outside
 *                   it open it (the open's ptrace check wants CAP_SYS_PTRACE in it,
 *                   which no such process has), so there is nothing to report.
 *   SECRET_READ     an open for reading of a file named in the watch's `secrets`
 *                   (private keys, credential files: krsid_watch_name_value) by a
 *                   process whose fsuid is not the file's owner (ATT&CK T1552.004).
 *
 * This hook runs for every open on the machine, so the common case must be cheap:
 * one 8-byte read of the file's name (the dentry, no directories) and one lookup of
 * (name length, first 8 bytes) in file_open_names, filled from the listed paths'
 * basenames. Only on a hit does the program build the full path (bpf_d_path,
 * allowed on this hook) and look it up exactly in file_open_paths. Every open that
 * emits nothing is counted as filtered.
 *
 * Paths are what bpf_d_path gives: absolute, relative to the opener's root (in a
 * chroot or container, the path inside it), symlinks resolved.
 */
#include "krsid.h"

/* Kernel constants BTF cannot carry. The kernel's own macro wins where the headers
 * in use define it; the fallbacks are the values of include/linux/fs.h,
 * include/uapi/asm-generic/fcntl.h and include/uapi/linux/magic.h (6.12). */
#define FILE_OPEN_PROC_SUPER_MAGIC 0x9fa0 /* PROC_SUPER_MAGIC */
#define FILE_OPEN_FMODE_READ 0x1          /* FMODE_READ */
#define FILE_OPEN_FMODE_WRITE 0x2         /* FMODE_WRITE */
#define FILE_OPEN_FMODE_EXEC 0x20         /* FMODE_EXEC */
#define FILE_OPEN_O_ACCMODE 0x3           /* O_ACCMODE */
#define FILE_OPEN_O_CREAT 0x40            /* O_CREAT */
#define FILE_OPEN_O_TRUNC 0x200           /* O_TRUNC */
#define FILE_OPEN_O_APPEND 0x400          /* O_APPEND */
/* FMODE_BACKING (overlayfs' internal open of the real file) is a macro: BTF does not
 * carry it. Linux 6.14 renumbered the f_mode bits (fanotify pre-content events):
 * FMODE_BACKING went from bit 25 to bit 24, and bit 25 became FMODE_NONOTIFY
 * (include/linux/fs.h of Debian's 6.12.95: 1 << 25; of 7.2.13 and 7.3.4: 1 << 24).
 * The old value would drop every FMODE_NONOTIFY open instead of the backing opens
 * (measured in the kernel matrix on 7.2 and 7.3). Before 6.5 there are no backing
 * files and bit 25 is unused (6.1: FMODE_NONOTIFY is bit 26): the test never matches. */
#ifdef FMODE_BACKING
#define FILE_OPEN_FMODE_BACKING ((__u32)FMODE_BACKING)
#elif defined(LINUX_VERSION_CODE) && defined(KERNEL_VERSION) && LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
#define FILE_OPEN_FMODE_BACKING (1U << 24)
#else
#define FILE_OPEN_FMODE_BACKING (1U << 25)
#endif

#define FILE_OPEN_REASON_PROC_MEM_WRITE 1
#define FILE_OPEN_REASON_SENSITIVE_PATH 2
#define FILE_OPEN_REASON_RULE 3
#define FILE_OPEN_REASON_WATCH 4
#define FILE_OPEN_REASON_NS_ENTER 5
#define FILE_OPEN_REASON_SECRET_READ 6
#define FILE_OPEN_REASON_SCRIPT 7

/* Option slots, see file_open.yaml. */
#define FILE_OPEN_OPT_INIT_NAMESPACES 0

/* include/uapi/linux/magic.h; the inode numbers of the initial namespaces
 * (include/linux/proc_ns.h, PROC_*_INIT_INO: fixed since 3.8, time since 5.6). */
#define FILE_OPEN_NSFS_MAGIC 0x6e736673
#define FILE_OPEN_INIT_IPC_INO 0xEFFFFFFFU
#define FILE_OPEN_INIT_UTS_INO 0xEFFFFFFEU
#define FILE_OPEN_INIT_USER_INO 0xEFFFFFFDU /* never reported: see NS_ENTER above */
#define FILE_OPEN_INIT_PID_INO 0xEFFFFFFCU
#define FILE_OPEN_INIT_CGROUP_INO 0xEFFFFFFBU
#define FILE_OPEN_INIT_TIME_INO 0xEFFFFFFAU
/* The two kinds without a fixed inode number, as file_open_ns_inum names them. */
#define FILE_OPEN_NS_MNT 1
#define FILE_OPEN_NS_NET 2

#if KRSID_KERNEL_HEADERS
#include <linux/pid.h>
#include <net/net_namespace.h>
/* fs/mount.h, which defines it, is not among the installed headers; its first member
 * is ns (since 5.11: the VM tests check it in every kernel's BTF, and the
 * BTF-generated header tree has the whole struct). Were it not, the mount namespace
 * read below would be a wrong field of both namespaces compared: entries into it
 * would go unreported, nothing else reported wrongly. */
struct mnt_namespace {
    struct ns_common ns;
};
#endif

/* Policy field slots, see file_open.yaml. */
#define FILE_OPEN_POLICY_FLAGS 0
#define FILE_OPEN_POLICY_MODE 1

#define FILE_OPEN_MARK_TARGET_SELF 0x1

#define FILE_OPEN_SET_SIZE 1024
#define FILE_OPEN_PID_LEN 16

struct file_open_event {
    KRSID_EVENT_HEADER
    __u32 reason;
    __u32 access;
    __u32 flags;
    __u32 mode;
    __u32 target_pid;
    __u32 marks;
    __u32 watch;
    __u32 watch_level;
    __u32 context;
    __u32 pad;
    char path[KRSID_PATH_LEN];
};

/* A file name's length and first 8 bytes (NUL-padded): the loader's basename_head
 * key (krsid/catalog.py BASENAME_HEAD). */
struct file_open_name_key {
    __u32 len;
    __u32 pad;
    __u64 head;
};
#define FILE_OPEN_HEAD_MEM 0x6d656dULL /* "mem", little-endian */

struct file_open_path_key {
    char path[KRSID_PATH_LEN];
};

/* Filled by the loader from the sensitive_paths option (see file_open.yaml). */
BPF_HASH(file_open_names, struct file_open_name_key, __u8, FILE_OPEN_SET_SIZE);
BPF_HASH(file_open_paths, struct file_open_path_key, __u8, FILE_OPEN_SET_SIZE);

/* bpf_d_path writes the path at the end of its buffer and moves it to the front,
 * so the bytes after the NUL are not zero: raw takes the path, key gets a
 * NUL-padded copy that can be a hash key. Per CPU: too big for the stack. */
struct file_open_scratch_buf {
    char raw[KRSID_PATH_LEN];
    struct file_open_path_key key;
};
BPF_PERCPU_ARRAY(file_open_scratch, struct file_open_scratch_buf, 1);

/* The ns_common of obj->member, a namespace (each embeds one as `ns`); NULL if unset. */
#define FILE_OPEN_NS_OF(obj, member)                                         \
    ({                                                                       \
        __typeof__(*(obj)->member) *x_ = 0; /* not const: the read writes it */ \
        bpf_probe_read_kernel(&x_, sizeof(x_), &(obj)->member);              \
        x_ ? &x_->ns : (struct ns_common *)0;                                \
    })

/* The calling task's namespaces. */
static __always_inline struct nsproxy *file_open_current_nsproxy(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct nsproxy *nsp = 0;
    bpf_probe_read_kernel(&nsp, sizeof(nsp), &task->nsproxy);
    return nsp;
}

/* PID 1's namespaces, PID 1 of the whole machine: the reaper of the initial pid
 * namespace, which is level 0 of every task's pid (a container's own PID 1 is the
 * reaper of a namespace below it). NULL if it cannot be read. */
static __always_inline struct nsproxy *file_open_pid1_nsproxy(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct pid *pid = 0;
    struct pid_namespace *initial = 0;
    struct task_struct *pid1 = 0;
    struct nsproxy *nsp = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), &task->thread_pid);
    if (pid)
        bpf_probe_read_kernel(&initial, sizeof(initial), &pid->numbers[0].ns);
    if (initial)
        bpf_probe_read_kernel(&pid1, sizeof(pid1), &initial->child_reaper);
    if (pid1)
        bpf_probe_read_kernel(&nsp, sizeof(nsp), &pid1->nsproxy);
    return nsp;
}

/* The inode number of nsp's namespace of a kind: the one whose initial namespace has
 * inode number init_ino (one of FILE_OPEN_INIT_*_INO but USER), or FILE_OPEN_NS_MNT
 * or _NET; 0 if it cannot be read. pid and time: the namespace children get, which
 * is what setns(2) changes. */
static __always_inline __u32 file_open_ns_inum(struct nsproxy *nsp, __u32 init_ino)
{
    struct ns_common *ns = 0;
    if (nsp) {
        if (init_ino == FILE_OPEN_INIT_IPC_INO)
            ns = FILE_OPEN_NS_OF(nsp, ipc_ns);
        else if (init_ino == FILE_OPEN_INIT_UTS_INO)
            ns = FILE_OPEN_NS_OF(nsp, uts_ns);
        else if (init_ino == FILE_OPEN_INIT_PID_INO)
            ns = FILE_OPEN_NS_OF(nsp, pid_ns_for_children);
        else if (init_ino == FILE_OPEN_INIT_CGROUP_INO)
            ns = FILE_OPEN_NS_OF(nsp, cgroup_ns);
        else if (init_ino == FILE_OPEN_NS_MNT)
            ns = FILE_OPEN_NS_OF(nsp, mnt_ns);
        else if (init_ino == FILE_OPEN_NS_NET)
            ns = FILE_OPEN_NS_OF(nsp, net_ns);
        else
            ns = FILE_OPEN_NS_OF(nsp, time_ns_for_children);
    }
    unsigned int inum = 0;
    if (ns)
        bpf_probe_read_kernel(&inum, sizeof(inum), &ns->inum);
    return inum;
}

/* "1234" -> 1234; 0 for anything that is not a decimal number. */
static __always_inline __u32 file_open_parse_pid(const char *s)
{
    __u32 pid = 0;
#pragma unroll
    for (int i = 0; i < FILE_OPEN_PID_LEN - 1; i++) {
        char c = s[i];
        if (c == 0)
            return pid;
        if (c < '0' || c > '9' || i >= 10)
            return 0;
        pid = pid * 10 + (c - '0');
    }
    return 0;
}

/* Whether the dentry's name (len bytes) is one of the script names. */
static __always_inline int file_open_is_script(struct krsid_script_names *names, struct dentry *dentry, __u32 len)
{
    if (len != names->len[0] && len != names->len[1] && len != names->len[2])
        return 0;
    /* NUL-padded on both sides: compared as 8-byte words. */
    __u64 opened[KRSID_SCRIPT_NAME_LEN / 8] = {};
    bpf_probe_read_kernel_str(opened, sizeof(opened), dentry->d_name.name);
    __u64 found = 0;
#pragma unroll
    for (int slot = 0; slot < KRSID_SCRIPT_NAMES; slot++) {
        __u64 differ = len ^ names->len[slot];
#pragma unroll
        for (int w = 0; w < KRSID_SCRIPT_NAME_LEN / 8; w++) {
            __u64 word = 0;
            __builtin_memcpy(&word, names->name[slot] + w * 8, 8);
            differ |= word ^ opened[w];
        }
        found |= krsid_nonzero(differ) ^ 1;
    }
    return found != 0;
}

LSM_PROBE(file_open, struct file *file)
{
    KRSID_HOOK_PROLOGUE();

    __u32 fmode = file->f_mode;
    __u32 fflags = file->f_flags;
    struct dentry *dentry = file->f_path.dentry;
    /* Overlayfs opens the real file underneath once more (a "backing file", with the
     * lower layer's path): the user's open was already seen and decided. */
    if (fmode & FILE_OPEN_FMODE_BACKING)
        KRSID_RETURN_FILTERED();
    /* Before backing files (6.5), overlayfs opened the real file with
     * open_with_fake_path(): the overlay's path, the real file's inode, and no flag to
     * tell (measured on Debian's 6.1, /etc on overlayfs: every open of a lower-layer
     * file reported twice, the second with O_NOATIME added). An open whose inode is not
     * its path's inode is that inner open; every other open has the two equal. */
    if (file->f_inode != dentry->d_inode)
        KRSID_RETURN_FILTERED();

    /* Rules see every open, before the name filter below. */
    struct krsid_policy_input in = {};
    in.field[FILE_OPEN_POLICY_FLAGS] = fflags;
    in.field[FILE_OPEN_POLICY_MODE] = fmode & (FILE_OPEN_FMODE_READ | FILE_OPEN_FMODE_WRITE | FILE_OPEN_FMODE_EXEC);
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);

    __u32 reason = 0;
    __u32 target_pid = 0;
    int zero = 0;
    struct file_open_scratch_buf *buf = 0;

    /* The name's first 8 bytes, the rest masked off: names shorter than the dentry's
     * inline buffer (32+ bytes) live inside the dentry, so the read never runs past
     * mapped memory; a failed read leaves head 0, as an empty name. */
    struct file_open_name_key name = {};
    name.len = dentry->d_name.len;
    bpf_probe_read_kernel(&name.head, sizeof(name.head), dentry->d_name.name);
    if (name.len < 8)
        name.head &= (1ULL << (name.len * 8)) - 1;
    if (name.len == 3 && name.head == FILE_OPEN_HEAD_MEM && (fmode & FILE_OPEN_FMODE_WRITE) &&
        dentry->d_sb->s_magic == FILE_OPEN_PROC_SUPER_MAGIC) {
        char pid_name[FILE_OPEN_PID_LEN] = {};
        krsid_read_dentry_name(pid_name, sizeof(pid_name), dentry->d_parent);
        target_pid = file_open_parse_pid(pid_name);
        reason = FILE_OPEN_REASON_PROC_MEM_WRITE;
    } else if (file_open_names.lookup(&name)) {
        buf = file_open_scratch.lookup(&zero);
        if (!buf)
            KRSID_RETURN_DECISION(d.action);
        int n = bpf_d_path(&file->f_path, buf->raw, sizeof(buf->raw));
        if (n > 0) {
            __builtin_memset(&buf->key, 0, sizeof(buf->key));
            bpf_probe_read_kernel_str(buf->key.path, sizeof(buf->key.path), buf->raw);
            if (file_open_paths.lookup(&buf->key))
                reason = FILE_OPEN_REASON_SENSITIVE_PATH;
        }
    } else if (name.len == 1 && name.head == '/' && dentry->d_sb->s_magic == FILE_OPEN_NSFS_MAGIC &&
               krsid_option(KRSID_HOOK_ID, FILE_OPEN_OPT_INIT_NAMESPACES)) {
        /* Namespace files are anonymous dentries, named "/": no regular file is, so
         * the filter costs every other open one compare of what was read above. */
        __u32 ino = (__u32)file->f_inode->i_ino;
        __u32 kind = 0;
        /* The fixed numbers are the last ones below the dynamic ones (0xF0000000 up,
         * every other namespace's): a range, not a floor. */
        if (ino >= FILE_OPEN_INIT_TIME_INO && ino <= FILE_OPEN_INIT_IPC_INO) {
            if (ino != FILE_OPEN_INIT_USER_INO)
                kind = ino;
        } else {
            /* Other namespaces' files (a container runtime entering its containers)
             * cost two more lookups of PID 1's mount and network namespaces. */
            struct nsproxy *pid1 = file_open_pid1_nsproxy();
            if (ino == file_open_ns_inum(pid1, FILE_OPEN_NS_MNT))
                kind = FILE_OPEN_NS_MNT;
            else if (ino == file_open_ns_inum(pid1, FILE_OPEN_NS_NET))
                kind = FILE_OPEN_NS_NET;
        }
        if (kind && file_open_ns_inum(file_open_current_nsproxy(), kind) != ino)
            reason = FILE_OPEN_REASON_NS_ENTER;
    }
    /* Writes only: a read is no integrity change, and reads are most opens. Of a file
     * with data (a file this open created is empty; the open comes before the
     * truncation), an O_TRUNC open is also a truncation, and a write open that can
     * change the data in place a rewrite: without O_APPEND, or read-write, since a
     * shared writable mapping ignores O_APPEND. Those are what a `logs` entry reports
     * besides deletions and renames; its loggers' appends are not. */
    struct krsid_watch_hit watch = {};
    if ((fmode & FILE_OPEN_FMODE_WRITE) || (fflags & (FILE_OPEN_O_TRUNC | FILE_OPEN_O_CREAT))) {
        __u64 has_data = krsid_nonzero(file->f_inode->i_size);
        __u64 cuts = krsid_nonzero(fflags & FILE_OPEN_O_TRUNC) & has_data;
        __u64 in_place = krsid_nonzero(fmode & FILE_OPEN_FMODE_READ) | (krsid_nonzero(fflags & FILE_OPEN_O_APPEND) ^ 1);
        __u64 rewrites = krsid_nonzero(fmode & FILE_OPEN_FMODE_WRITE) & in_place & has_data;
        watch = krsid_watch_find(dentry, KRSID_WATCH_OP_WRITE | (__u32)cuts * KRSID_WATCH_OP_TRUNCATE |
                                             (__u32)rewrites * KRSID_WATCH_OP_REWRITE);
        if (reason == 0 && watch.id)
            reason = FILE_OPEN_REASON_WATCH;
    }
    /* watch.secrets: a private key or credential file, by name, opened for reading by a
     * process that does not own it: root or a service harvesting users' keys. The
     * owner's own reads (ssh with its user's key) are not reported. The pre-filter
     * takes the length and first byte read above: most reads stop at an array lookup
     * the verifier inlines. f_cred: the credentials the open was checked with. */
    if (reason == 0 && (fmode & FILE_OPEN_FMODE_READ)) {
        __u32 secret = krsid_watch_name_value(dentry->d_name.name, name.len, (__u8)name.head);
        if (((secret >> KRSID_WATCH_ID_BITS) & KRSID_WATCH_OP_READ) &&
            file->f_cred->fsuid.val != file->f_inode->i_uid.val) {
            watch.id = secret & KRSID_WATCH_ID_MASK;
            watch.level = KRSID_WATCH_LEVEL_NAME;
            reason = FILE_OPEN_REASON_SECRET_READ;
        }
    }
    /* The script an interpreter was started on (krsid.h: krsid_script_names), at the
     * thread's first read-only open of a file of that name (a shell's `<>` on a file
     * named in its -c command is no script): reported when it lies where
     * attackers drop what they run (krsid_file_context). Threads that no interpreter
     * exec marked, nearly all, stop at the task storage lookup (measured under TCG:
     * +145 ns per read open; README, bench/run.py walk). */
    __u32 context = 0;
    if (reason == 0 &&
        (fmode & (FILE_OPEN_FMODE_READ | FILE_OPEN_FMODE_WRITE | FILE_OPEN_FMODE_EXEC)) == FILE_OPEN_FMODE_READ &&
        (file->f_inode->i_mode & KRSID_S_IFMT) == KRSID_S_IFREG) {  /* `python3 -m venv x` opens the directory x */
        struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
        struct krsid_script_names *names = krsid_script_names.task_storage_get(task, 0, 0);
        if (names && file_open_is_script(names, dentry, name.len)) {
            krsid_script_names.task_storage_delete(task);  /* its one open of its script */
            context = krsid_file_context(dentry);
            if (context)
                reason = FILE_OPEN_REASON_SCRIPT;
        }
    }
    if (reason == 0) {
        if (!d.rule)
            KRSID_RETURN_FILTERED();
        reason = FILE_OPEN_REASON_RULE;  /* reported because a rule matched */
    }

    struct file_open_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct file_open_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->reason = reason;
    e->access = fflags & FILE_OPEN_O_ACCMODE;
    e->flags = fflags;
    e->mode = fmode & (FILE_OPEN_FMODE_READ | FILE_OPEN_FMODE_WRITE | FILE_OPEN_FMODE_EXEC);
    e->target_pid = target_pid;
    e->marks = 0;
    e->watch = watch.id;
    e->watch_level = watch.level;
    e->context = context;
    e->pad = 0;
    if (reason == FILE_OPEN_REASON_SENSITIVE_PATH && buf) {
        bpf_probe_read_kernel(e->path, sizeof(e->path), buf->key.path);
    } else {
        if (reason == FILE_OPEN_REASON_PROC_MEM_WRITE && target_pid != 0 &&
            (target_pid == e->tgid || target_pid == e->pid))
            e->marks |= FILE_OPEN_MARK_TARGET_SELF;
        /* e.g. "/proc/1234/mem"; the name alone if the path does not fit. */
        if (bpf_d_path(&file->f_path, e->path, sizeof(e->path)) <= 0)
            krsid_read_dentry_name(e->path, sizeof(e->path), dentry);
    }

    KRSID_SUBMIT_AND_RETURN(e, d);
}
