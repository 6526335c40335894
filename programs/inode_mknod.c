// SPDX-License-Identifier: GPL-2.0
/*
 * inode_mknod: a special file is about to be created (mknod, mknodat, mkfifo; also
 * the socket file of a unix socket bound to a path).
 *
 * Reported by default:
 *   device nodes  a block or character device node made by a process, anywhere:
 *                 `mknod /tmp/sda b 8 0` gives raw access to a disk past every file
 *                 permission (a container escape with CAP_MKNOD, T1006), a node of
 *                 /dev/mem or /dev/kmem reads kernel memory. The nodes every
 *                 container runtime makes in a new root (null, zero, full, random,
 *                 urandom, tty, ptmx) and the kernel's own (devtmpfs) are left out.
 *   watched       any special file made in a watched directory or under a watched
 *                 name (a FIFO planted as a cron drop-in, a socket as authorized_keys).
 * Options: fifos (every named pipe: the mkfifo of a netcat reverse shell; off by
 * default because container runtimes make FIFOs for the stdio of every container
 * and every exec into one, a busy node's liveness probes included), kernel (the
 * kernel threads' nodes: devtmpfs makes every /dev node this way), all.
 *
 * mode is the permission bits the node gets (the requested mode less the umask, as
 * inode_mkdir); kind is the file type (S_IFMT).
 */
#include "krsid.h"
#if KRSID_KERNEL_HEADERS
#include <linux/fs.h>
#include <linux/dcache.h>
#endif

/* Option slots, see inode_mknod.yaml. */
#define INODE_MKNOD_OPT_ALL 0
#define INODE_MKNOD_OPT_DEVICES 1
#define INODE_MKNOD_OPT_FIFOS 2
#define INODE_MKNOD_OPT_KERNEL 3
/* Policy field slots, see inode_mknod.yaml. */
#define INODE_MKNOD_POLICY_KIND 0
#define INODE_MKNOD_POLICY_RDEV_MAJOR 1
#define INODE_MKNOD_POLICY_RDEV_MINOR 2

/* File types (S_IFMT bits, stable UAPI values; BTF carries no macros). */
#define INODE_MKNOD_IFMT 0170000
#define INODE_MKNOD_IFCHR 0020000
#define INODE_MKNOD_IFBLK 0060000
#define INODE_MKNOD_IFIFO 0010000
#define INODE_MKNOD_PERMISSION_BITS 07777
/* Character devices every runtime makes in a container's /dev: mem's null (3), zero
 * (5), full (7), random (8), urandom (9); tty (5:0) and ptmx (5:2). A bit per minor. */
#define INODE_MKNOD_MEM_MAJOR 1
#define INODE_MKNOD_MEM_QUIET_MINORS ((1U << 3) | (1U << 5) | (1U << 7) | (1U << 8) | (1U << 9))
#define INODE_MKNOD_TTY_MAJOR 5
#define INODE_MKNOD_TTY_QUIET_MINORS ((1U << 0) | (1U << 2))


struct inode_mknod_event {
    KRSID_EVENT_HEADER
    KRSID_NEW_NAME_MEMBERS
    __u32 rdev_major;
    __u32 rdev_minor;
    __u32 kind;
    __u32 mode;
    __u32 kernel_thread;
    __u32 pad;
};

/* Whether a character device is one of those every container's /dev gets. */
static __always_inline int inode_mknod_quiet_char(__u32 major, __u32 minor)
{
    if (minor >= 32)
        return 0;
    if (major == INODE_MKNOD_MEM_MAJOR)
        return (INODE_MKNOD_MEM_QUIET_MINORS >> minor) & 1;
    if (major == INODE_MKNOD_TTY_MAJOR)
        return (INODE_MKNOD_TTY_QUIET_MINORS >> minor) & 1;
    return 0;
}

LSM_PROBE(inode_mknod, struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev)
{
    KRSID_HOOK_PROLOGUE();

    __u32 kind = mode & INODE_MKNOD_IFMT;
    __u32 perm = mode & ~krsid_current_umask() & INODE_MKNOD_PERMISSION_BITS;
    /* dev is the kernel's dev_t (MAJOR << 20 | MINOR), 0 for what is not a device. */
    __u32 rdev_major = (__u32)dev >> KRSID_MINORBITS;
    __u32 rdev_minor = (__u32)dev & ((1U << KRSID_MINORBITS) - 1);
    __u32 kthread = krsid_current_kthread();

    /* path_prefix matches the new node's directories (the dentry is negative). */
    struct krsid_policy_input in = {};
    in.field[INODE_MKNOD_POLICY_KIND] = kind;
    in.field[INODE_MKNOD_POLICY_RDEV_MAJOR] = rdev_major;
    in.field[INODE_MKNOD_POLICY_RDEV_MINOR] = rdev_minor;
    in.file = dentry;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    /* After the policy, as in inode_link (Debian 6.1's verifier, see krsid_watch_find). */
    struct krsid_watch_hit watch = krsid_watch_find(dentry, KRSID_WATCH_OP_CREATE);

    int wanted = d.rule || watch.id || krsid_option(KRSID_HOOK_ID, INODE_MKNOD_OPT_ALL);
    if (!wanted && (!kthread || krsid_option(KRSID_HOOK_ID, INODE_MKNOD_OPT_KERNEL))) {
        if (kind == INODE_MKNOD_IFBLK ||
            (kind == INODE_MKNOD_IFCHR && !inode_mknod_quiet_char(rdev_major, rdev_minor)))
            wanted = krsid_option(KRSID_HOOK_ID, INODE_MKNOD_OPT_DEVICES) != 0;
        else if (kind == INODE_MKNOD_IFIFO)
            wanted = krsid_option(KRSID_HOOK_ID, INODE_MKNOD_OPT_FIFOS) != 0;
    }
    if (!wanted)
        KRSID_RETURN_FILTERED();

    struct inode_mknod_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct inode_mknod_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    KRSID_NEW_NAME_FILL(e, dir, dentry, watch);
    e->rdev_major = rdev_major;
    e->rdev_minor = rdev_minor;
    e->kind = kind;
    e->mode = perm;
    e->kernel_thread = kthread;
    e->pad = 0;

    KRSID_SUBMIT_AND_RETURN(e, d);
}
