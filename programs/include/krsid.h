/* SPDX-License-Identifier: GPL-2.0 */
/*
 * krsid.h - what every krsid BPF-LSM program shares.
 *
 * This header is the single place where the event header layout is written.
 * Python never restates it: krsid/pipeline/layout.py parses the KRSID_EVENT_HEADER
 * macro below and each program's `struct <hook>_event`, and the loader makes clang
 * prove that parse with one _Static_assert per member on every compile.
 *
 * Rules for event structs (so that parse stays trivial and bcc's table.event()
 * could build the same class): flat, members are __u8/__u16/__u32/__u64 (or
 * __s*), or char name[N], one member per line.
 *
 * The loader compiles all enabled programs as one BCC module (one clang run) and
 * prepends, per program, numeric defines only:
 *   KRSID_HOOK_ID      index of the hook in this daemon's catalog
 *   KRSID_HOOK_NARGS   the hook's argument count on the running kernel (from BTF)
 * and once, for the module:
 *   KRSID_MAX_HOOKS    size of the per-hook maps
 *   KRSID_RINGBUF_PAGES, KRSID_USE_PERFBUF, KRSID_WAKEUP_EVENTS
 *   KRSID_CNT_SLOTS_EXPECTED, KRSID_RULES_PER_HOOK_EXPECTED  (user space's numbers, asserted)
 * No configuration string ever becomes C text: options reach the kernel through
 * the krsid_options map (krsid_option()).
 */
#ifndef KRSID_H
#define KRSID_H

#ifndef __always_inline
/* The BTF-synthesized header tree has no compiler.h. */
#define __always_inline inline __attribute__((always_inline))
#endif

#if defined(KRSID_VMLINUX_H)
#define KRSID_KERNEL_HEADERS 0
#else
#define KRSID_KERNEL_HEADERS 1
#include <linux/sched.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/dcache.h>
#include <linux/sched/signal.h>
#include <linux/tty.h>
#include <linux/mm_types.h>
#include <linux/fs_struct.h>
#include <linux/pid_namespace.h>
#include <linux/nsproxy.h>
#include <linux/ipc_namespace.h>
#include <linux/utsname.h>
#include <linux/user_namespace.h>
#include <linux/cgroup.h>
#include <linux/time_namespace.h>
#endif

#include <linux/version.h>

/* Macros BTF cannot carry: stable UAPI values. */
#ifndef EPERM
#define EPERM 1
#endif
#ifndef PROT_READ
#define PROT_READ 0x1
#define PROT_WRITE 0x2
#define PROT_EXEC 0x4
#endif

#ifndef KRSID_MAX_HOOKS
#define KRSID_MAX_HOOKS 64
#endif
#ifndef KRSID_RINGBUF_PAGES
#define KRSID_RINGBUF_PAGES 256
#endif
#ifndef KRSID_USE_PERFBUF
#define KRSID_USE_PERFBUF 0
#endif
#ifndef KRSID_OPTION_SLOTS
#define KRSID_OPTION_SLOTS 8
#endif
/* Wake the daemon once per this many events (0: as the kernel does, see krsid_wakeup_flags). */
#ifndef KRSID_WAKEUP_EVENTS
#define KRSID_WAKEUP_EVENTS 0
#endif

/* bpf_get_current_task_btf() (5.11): the task's fields become plain loads that the
 * verifier guards, instead of one bpf_probe_read_kernel() helper call each. */
#if defined(LINUX_VERSION_CODE) && defined(KERNEL_VERSION) && LINUX_VERSION_CODE >= KERNEL_VERSION(5, 11, 0) && \
    !defined(KRSID_NO_TASK_BTF)
#define KRSID_TASK_BTF 1
#else
#define KRSID_TASK_BTF 0
#endif

/* bpf_ringbuf_submit() flags: stable UAPI values, named here because the
 * BTF-generated headers carry them only as an anonymous enum. */
#define KRSID_RB_NO_WAKEUP 1
#define KRSID_RB_FORCE_WAKEUP 2
/* bpf_ringbuf_query() flag: bytes written and not yet consumed. */
#define KRSID_RB_AVAIL_DATA 0

/* Lengths: kernel paths can be PATH_MAX, events stay bounded; truncation is
 * flagged by the program in its flags member. */
#define KRSID_COMM_LEN 16
#define KRSID_TTY_LEN 16
#define KRSID_PATH_LEN 256

/*
 * The common event header, as struct members. Each program's event struct starts
 * with KRSID_EVENT_HEADER; keep one member per line (layout.py reads these lines).
 *   seq       per-daemon, strictly increasing over all hooks: gaps = lost events
 *   ktime_ns  bpf_ktime_get_boot_ns() at the hook
 *   hook_id   KRSID_HOOK_ID of the program that emitted it
 *   pid       kernel pid of the calling task (the thread id)
 *   tgid      thread group id: the process id that ps shows
 *   ppid      tgid of the real parent
 *   start_ns         start time of the process (its group leader's start_boottime, ns
 *                    since boot): with tgid and the boot id, the process instance id
 *   parent_start_ns  the same for the real parent's process (identity: parent_process_id)
 */
#define KRSID_EVENT_HEADER \
    __u64 seq; \
    __u64 ktime_ns; \
    __u64 cgroup_id; \
    __u32 hook_id; \
    __u32 pid; \
    __u32 tgid; \
    __u32 ppid; \
    __u32 uid; \
    __u32 gid; \
    __u32 euid; \
    __u32 auid; \
    __u32 sessionid; \
    __s32 verdict; \
    __u32 rule; \
    __u32 action; \
    __u32 suppressed; \
    __u32 hdr_pad; \
    __u64 start_ns; \
    __u64 parent_start_ns; \
    char comm[KRSID_COMM_LEN]; \
    char tty[KRSID_TTY_LEN];

/*
 * The verdict of the BPF-LSM programs that ran before this one on the same hook
 * (0 = allowed so far). An LSM program receives the hook's arguments and then this
 * value in ctx; the argument count differs between kernels (bpf() gained one in
 * 6.13), so programs do not declare it in LSM_PROBE: the loader passes the count
 * from BTF. Return it unchanged when non-zero: never turn a deny into an allow.
 */
#define KRSID_PREV_RET() ((int)ctx[KRSID_HOOK_NARGS])

/* Counter slots per hook in krsid_counters (read by the Prometheus collector). */
enum krsid_counter {
    KRSID_CNT_INVOCATIONS = 0, /* every call of the hook program */
    KRSID_CNT_EMITTED = 1,     /* events written to the ring buffer */
    KRSID_CNT_LOST_RINGBUF = 2,/* reserve/output failed: ring buffer full */
    KRSID_CNT_FILTERED = 3,    /* dropped by an in-kernel filter */
    KRSID_CNT_SUPPRESSED_RATE = 4,  /* over the hook's rate limit */
    KRSID_CNT_SUPPRESSED_DEDUP = 5, /* folded into an identical recent event */
    KRSID_CNT_SUPPRESSED_FLOOD = 6, /* over its process's or uid's fair share (krsid_fair_share) */
    KRSID_CNT_FLOOD_SUMMARIES = 7,  /* summary records written about this hook's floods */
    KRSID_CNT_SLOTS = 8,
};

/* Per-CPU so the hot path never contends on a cache line. */
BPF_PERCPU_ARRAY(krsid_counters, __u64, KRSID_MAX_HOOKS * KRSID_CNT_SLOTS);
/* Options from the config, KRSID_OPTION_SLOTS u64 per hook, written by the loader. */
BPF_ARRAY(krsid_options, __u64, KRSID_MAX_HOOKS * KRSID_OPTION_SLOTS);
/* One global sequence counter; the loader seeds it so seq stays monotonic per boot. */
BPF_ARRAY(krsid_seq, __u64, 1);

struct krsid_header_view { KRSID_EVENT_HEADER };

/*
 * Lanes: the events that matter most for an investigation (exec, module loads,
 * bpf(), setuid, ptrace, userns, mount, every deny and would-deny verdict, flood
 * summaries) never share buffer space with the high-volume hooks (mprotect, mmap,
 * open, connect): each lane is its own ring buffer with its own loss accounting,
 * drained by the same poll loop, priority lane first. A hook's lane is its sidecar's
 * `lane:` (the loader defines KRSID_HOOK_LANE per program). seq stays global over
 * both lanes; order is kept within a lane, not across them.
 * The perf buffer (KRSID_USE_PERFBUF) has one lane: both names are the same buffer.
 */
#define KRSID_LANE_PRIORITY 0
#define KRSID_LANE_BULK 1
#define KRSID_LANES 2
#ifndef KRSID_BULK_RINGBUF_PAGES
#define KRSID_BULK_RINGBUF_PAGES KRSID_RINGBUF_PAGES
#endif
/* Per lane, per CPU: records written and records lost (no room), read by the collector. */
#define KRSID_LANESTAT_EMITTED 0
#define KRSID_LANESTAT_LOST 1
#define KRSID_LANESTATS 2
BPF_PERCPU_ARRAY(krsid_lane_counters, __u64, KRSID_LANES * KRSID_LANESTATS);

#if KRSID_USE_PERFBUF
/* Kernels < 5.8 have no BPF ring buffer: stage the event in a per-CPU scratch
 * slot and copy it out with perf_submit. */
#define KRSID_SCRATCH_SIZE 4096
struct krsid_scratch { char data[KRSID_SCRATCH_SIZE]; };
BPF_PERCPU_ARRAY(krsid_scratch_map, struct krsid_scratch, 1);
BPF_PERF_OUTPUT(events);
#else
BPF_RINGBUF_OUTPUT(events, KRSID_RINGBUF_PAGES);              /* the priority lane */
BPF_RINGBUF_OUTPUT(events_bulk, KRSID_BULK_RINGBUF_PAGES);    /* the bulk lane */
#endif

static __always_inline void krsid_count(__u32 hook_id, __u32 slot)
{
    int idx = hook_id * KRSID_CNT_SLOTS + slot;
    __u64 *v = krsid_counters.lookup(&idx);
    if (v)
        *v += 1;
}

static __always_inline void krsid_lane_count(__u32 lane, __u32 slot)
{
    int idx = lane * KRSID_LANESTATS + slot;
    __u64 *v = krsid_lane_counters.lookup(&idx);
    if (v)
        *v += 1;
}

static __always_inline __u64 krsid_option(__u32 hook_id, __u32 slot)
{
    int idx = hook_id * KRSID_OPTION_SLOTS + slot;
    __u64 *v = krsid_options.lookup(&idx);
    return v ? *v : 0;
}

/*
 * Policy: per-hook rules, written by user space into krsid_rules (never C text).
 *
 * Two banks of KRSID_MAX_HOOKS x KRSID_RULES_PER_HOOK slots; krsid_policy_bank[0]
 * names the active one. A reload writes the inactive bank and then flips the index:
 * every hook call sees either the whole old policy or the whole new one, and no
 * program is ever detached. Rules are evaluated in order, first match wins; an
 * empty slot (action 0) ends the list; no match means audit.
 *
 * The rule loop is a bounded loop (verified iteration by iteration, kernel >= 5.3),
 * not unrolled: 128 rules unrolled would be tens of thousands of instructions per
 * program. Its body is kept small: comm compares as two words, directory prefixes
 * are looked up once per call (krsid_dirs) and tested as one bit per rule.
 */
#define KRSID_RULES_PER_HOOK 128
#define KRSID_POLICY_FIELDS 4
/* Distinct cgroups the rules of one bank may name (krsid_rule_cgroups holds two banks). */
#define KRSID_POLICY_CGROUPS 64
/* Levels of a directory walk (the file itself, then d_parent up to its filesystem's root). */
#define KRSID_DIR_DEPTH 16
#define KRSID_DIR_ENTRIES 4096

#define KRSID_ACT_AUDIT 1      /* emit the event */
#define KRSID_ACT_IGNORE 2     /* count only */
#define KRSID_ACT_DENY 3       /* return -EPERM and emit */
#define KRSID_ACT_WOULD_DENY 4 /* emit and count as would-deny, allow */

#define KRSID_MATCH_UID 0x1
#define KRSID_MATCH_NOT_UID 0x2
#define KRSID_MATCH_COMM 0x4
#define KRSID_MATCH_CGROUP 0x8
#define KRSID_MATCH_EXE 0x10          /* the caller's executable is inode (exe_dev, exe_ino) */
#define KRSID_MATCH_EXE_PREFIX 0x20   /* ... lies below a directory of this rule (krsid_dirs) */
#define KRSID_MATCH_FILE_PREFIX 0x40  /* the hook's file lies below a directory of this rule */
#define KRSID_MATCH_FILE_ANY 0x80     /* the hook has a file (path_prefix: /) */
#define KRSID_MATCH_FIELD0 0x100      /* FIELD0 << i for field i */
#define KRSID_MATCH_EXE_ANY 0x1000    /* the caller has an executable (exe_prefix: /) */

#define KRSID_FIELD_OP_ALL 1   /* (value & mask) == mask: "contains all of" */
#define KRSID_FIELD_OP_ANY 2   /* (value & mask) != 0:    "contains any of" */
#define KRSID_FIELD_OP_EQ 3    /* value == want */
#define KRSID_FIELD_OP_NE 4    /* value != want */

#define KRSID_DIR_KIND_FILE 0
#define KRSID_DIR_KIND_EXE 1

struct krsid_rule {
    __u32 action;
    __u32 match;
    __u32 uid;
    __u32 cgroup_slot;    /* match: cgroup: this rule's entry of krsid_rule_cgroups */
    __u64 comm[2];        /* the command name, NUL-padded, as two words */
    __u64 exe_ino;
    __u32 exe_dev;        /* the kernel's dev_t (MAJOR << 20 | MINOR) */
    __u32 needs;          /* slot 0 only: the match bits of all the hook's rules, OR-ed */
    __u64 field_arg[KRSID_POLICY_FIELDS];
    __u32 field_op[KRSID_POLICY_FIELDS];
    /* slot + 1, written by user space. The decision takes the rule's number from
     * here, not from the loop counter: a constant per iteration would make the
     * verifier walk the rest of the program once for every slot that can match. */
    __u32 number;
    __u32 reserved;
};

/* What a program offers to rules: its policy fields (declared in its sidecar's
 * `policy:`) and, for hooks that have one, the file the call is about (`policy_path:`),
 * NULL when there is none. */
struct krsid_policy_input {
    __u64 field[KRSID_POLICY_FIELDS];
    struct dentry *file;
};

/* A directory named by a path_prefix / exe_prefix matcher, in one bank and hook. */
struct krsid_dir_key {
    __u32 bank_hook;  /* bank * KRSID_MAX_HOOKS + hook id */
    __u32 kind;       /* KRSID_DIR_KIND_* */
    __u32 dev;
    __u32 pad;
    __u64 ino;
};
/* The rule slots (bit i = slot i) that name this directory. */
struct krsid_dir_rules {
    __u64 bits[KRSID_RULES_PER_HOOK / 64];
};

BPF_ARRAY(krsid_rules, struct krsid_rule, 2 * KRSID_MAX_HOOKS * KRSID_RULES_PER_HOOK);
/*
 * The cgroups rules name (match: cgroup), one slot per distinct cgroup in a bank
 * (bank * KRSID_POLICY_CGROUPS + i), written by user space as an open cgroup
 * directory. The kernel then tests "is current in this cgroup or below it" itself.
 * A (cgroup id, level) pair would not do: user space sees cgroup paths relative to
 * its own cgroup namespace (docker, Kubernetes, nspawn give krsid one), so it
 * cannot know how deep a cgroup lies in the kernel's tree.
 */
BPF_CGROUP_ARRAY(krsid_rule_cgroups, 2 * KRSID_POLICY_CGROUPS);
BPF_ARRAY(krsid_policy_bank, __u32, 1);
BPF_HASH(krsid_dirs, struct krsid_dir_key, struct krsid_dir_rules, KRSID_DIR_ENTRIES);
/* Hits per rule slot and bank (per-CPU): krsid_denied_total / krsid_would_deny_total / ... */
BPF_PERCPU_ARRAY(krsid_rule_hits, __u64, 2 * KRSID_MAX_HOOKS * KRSID_RULES_PER_HOOK);

#ifdef KRSID_RULES_PER_HOOK_EXPECTED
_Static_assert(KRSID_RULES_PER_HOOK == KRSID_RULES_PER_HOOK_EXPECTED, "krsid: rules per hook differ from user space");
#endif
_Static_assert(KRSID_RULES_PER_HOOK == 128, "krsid_dir_rules and the bit test assume two words of slots");

/* The caller, read once per call and only as far as the hook's rules need. */
struct krsid_caller {
    __u64 comm[2];
    __u64 exe_ino;
    __u64 exe_bits[2];   /* rule slots whose exe_prefix directory holds the executable */
    __u64 file_bits[2];  /* rule slots whose path_prefix directory holds the hook's file */
    __u32 exe_dev;
    __u32 uid;
    __u64 has_file;      /* in->file != NULL, as a number (no ALU on pointers) */
};

/*
 * A dentry's inode, parent and name (len and the pointer to its bytes), what every
 * level of a directory walk and every name match reads, in one bpf_probe_read_kernel:
 * struct dentry keeps d_parent, d_name and d_inode next to each other, so reading the
 * span is one helper call instead of three; a walk level's cost is mostly its helper
 * calls (bench/run.py walk). Should a kernel ever spread them further apart, three
 * reads. A failed read (a NULL dentry) leaves them 0.
 */
struct krsid_dentry_link {
    struct inode *inode;
    struct dentry *parent;
    struct qstr name;
};
#define KRSID_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KRSID_MAX(a, b) ((a) < (b) ? (b) : (a))
#define KRSID_DENTRY_PARENT_AT __builtin_offsetof(struct dentry, d_parent)
#define KRSID_DENTRY_INODE_AT __builtin_offsetof(struct dentry, d_inode)
#define KRSID_DENTRY_NAME_AT __builtin_offsetof(struct dentry, d_name)
#define KRSID_DENTRY_LINK_FROM KRSID_MIN(KRSID_MIN(KRSID_DENTRY_PARENT_AT, KRSID_DENTRY_INODE_AT), KRSID_DENTRY_NAME_AT)
#define KRSID_DENTRY_LINK_SPAN                                                                                 \
    (KRSID_MAX(KRSID_MAX(KRSID_DENTRY_PARENT_AT, KRSID_DENTRY_INODE_AT) + sizeof(void *),                      \
               KRSID_DENTRY_NAME_AT + sizeof(struct qstr)) -                                                    \
     KRSID_DENTRY_LINK_FROM)
#define KRSID_DENTRY_LINK_SPAN_MAX 64

static __always_inline struct krsid_dentry_link krsid_dentry_link(struct dentry *d)
{
    struct krsid_dentry_link out;
    if (KRSID_DENTRY_LINK_SPAN <= KRSID_DENTRY_LINK_SPAN_MAX) {
        char span[KRSID_DENTRY_LINK_SPAN <= KRSID_DENTRY_LINK_SPAN_MAX ? KRSID_DENTRY_LINK_SPAN : 8];
        bpf_probe_read_kernel(span, sizeof(span), (char *)d + KRSID_DENTRY_LINK_FROM);
        __builtin_memcpy(&out.inode, span + (KRSID_DENTRY_INODE_AT - KRSID_DENTRY_LINK_FROM), sizeof(out.inode));
        __builtin_memcpy(&out.parent, span + (KRSID_DENTRY_PARENT_AT - KRSID_DENTRY_LINK_FROM), sizeof(out.parent));
        __builtin_memcpy(&out.name, span + (KRSID_DENTRY_NAME_AT - KRSID_DENTRY_LINK_FROM), sizeof(out.name));
    } else {
        __builtin_memset(&out, 0, sizeof(out));
        bpf_probe_read_kernel(&out.inode, sizeof(out.inode), &d->d_inode);
        bpf_probe_read_kernel(&out.parent, sizeof(out.parent), &d->d_parent);
        bpf_probe_read_kernel(&out.name, sizeof(out.name), &d->d_name);
    }
    return out;
}

/* (s_dev, i_ino) of a dentry's inode; 0, 0 when it has none. */
static __always_inline void krsid_dentry_id(struct dentry *d, __u32 *dev, __u64 *ino)
{
    struct inode *inode = 0;
    struct super_block *sb = 0;
    *dev = 0;
    *ino = 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), &d->d_inode);
    bpf_probe_read_kernel(&sb, sizeof(sb), &d->d_sb);
    if (!inode || !sb)
        return;
    bpf_probe_read_kernel(ino, sizeof(*ino), &inode->i_ino);
    bpf_probe_read_kernel(dev, sizeof(*dev), &sb->s_dev);
}

/* The current task's executable (mm->exe_file), NULL for kernel threads. */
static __always_inline struct dentry *krsid_exe_dentry(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct mm_struct *mm = 0;
    struct file *exe = 0;
    struct dentry *d = 0;
    bpf_probe_read_kernel(&mm, sizeof(mm), &task->mm);
    if (!mm)
        return 0;
    bpf_probe_read_kernel(&exe, sizeof(exe), &mm->exe_file);
    if (!exe)
        return 0;
    bpf_probe_read_kernel(&d, sizeof(d), &exe->f_path.dentry);
    return d;
}

/*
 * OR together the rule slots of every krsid_dirs entry on the way from d up to
 * its filesystem's root (at most KRSID_DIR_DEPTH levels). The walk follows
 * d_parent, so it stays on d's filesystem: a directory above a mount point is
 * never reached (user space turns "/" into FILE_ANY/EXE_ANY instead).
 */
static __always_inline void krsid_dir_bits(__u32 bank_hook, __u32 kind, struct dentry *d, __u64 *bits)
{
    struct krsid_dir_key k = {};
    struct super_block *sb = 0;
    k.bank_hook = bank_hook;
    k.kind = kind;
    bpf_probe_read_kernel(&sb, sizeof(sb), &d->d_sb);
    if (!sb)
        return;
    bpf_probe_read_kernel(&k.dev, sizeof(k.dev), &sb->s_dev);
#pragma clang loop unroll(disable)
    for (int level = 0; level < KRSID_DIR_DEPTH; level++) {
        struct krsid_dentry_link link = krsid_dentry_link(d);
        k.ino = 0;
        if (link.inode)
            bpf_probe_read_kernel(&k.ino, sizeof(k.ino), &link.inode->i_ino);
        struct krsid_dir_rules *r = krsid_dirs.lookup(&k);
        if (r) {
            bits[0] |= r->bits[0];
            bits[1] |= r->bits[1];
        }
        if (!link.parent || link.parent == d)
            break;  /* the filesystem's root is its own parent */
        d = link.parent;
    }
}

/*
 * Rule matching is written without conditional jumps: the bounded loop runs it up
 * to 128 times and the verifier walks every iteration, keeping a pending state for
 * each branch on its way (~30 branches per rule went past its limit of 8192 jumps
 * on a 4-field hook). 0/1 values come from ALU ops; the empty asm keeps clang from
 * turning them back into compares, which the BPF backend emits as branches.
 */
static __always_inline __u64 krsid_nonzero(__u64 z)
{
    __u64 neg = 0 - z;
    asm volatile("" : "+r"(neg));
    __u64 bit = (z | neg) >> 63;  /* 1 if z != 0 */
    asm volatile("" : "+r"(bit));  /* clang must not know it is 0/1: it would make selects (branches) of it */
    return bit;
}

/* 1 if a < b (signed), without a branch. */
static __always_inline __u64 krsid_less(__s64 a, __s64 b)
{
    __s64 diff = a - b;
    asm volatile("" : "+r"(diff));
    __u64 bit = (__u64)diff >> 63;
    asm volatile("" : "+r"(bit));
    return bit;
}

static __always_inline __u64 krsid_bit(__u64 word, __u32 bit)
{
    return (word >> bit) & 1;
}

/* Bit `slot` of a two-word slot set. */
static __always_inline __u64 krsid_slot_bit(__u64 *bits, __u32 slot)
{
    __u64 hi = (slot >> 6) & 1;
    __u64 word = (bits[0] & (hi - 1)) | (bits[1] & (0 - hi));
    return (word >> (slot & 63)) & 1;
}

_Static_assert(KRSID_MATCH_UID == 1 << 0 && KRSID_MATCH_NOT_UID == 1 << 1 && KRSID_MATCH_COMM == 1 << 2 &&
                   KRSID_MATCH_EXE == 1 << 4 && KRSID_MATCH_EXE_PREFIX == 1 << 5 &&
                   KRSID_MATCH_FILE_PREFIX == 1 << 6 && KRSID_MATCH_FILE_ANY == 1 << 7 &&
                   KRSID_MATCH_FIELD0 == 1 << 8 && KRSID_MATCH_EXE_ANY == 1 << 12,
               "krsid_rule_fails tests these bit positions");

/* 0 if rule r (in slot `slot`) matches this call, non-zero if not. */
static __always_inline __u64 krsid_rule_fails(struct krsid_rule *r, __u32 slot, struct krsid_policy_input *in,
                                             struct krsid_caller *c)
{
    __u64 m = r->match;
    __u64 uid_differs = krsid_nonzero(c->uid ^ r->uid);
    __u64 no_exe = krsid_nonzero(c->exe_ino) ^ 1;
    __u64 fail = (krsid_bit(m, 0) & uid_differs)                                          /* UID */
               | (krsid_bit(m, 1) & (uid_differs ^ 1))                                    /* NOT_UID */
               | (krsid_bit(m, 2) & krsid_nonzero((c->comm[0] ^ r->comm[0]) | (c->comm[1] ^ r->comm[1])))
               | (krsid_bit(m, 4) & (krsid_nonzero((c->exe_ino ^ r->exe_ino) | (c->exe_dev ^ r->exe_dev)) | no_exe))
               | (krsid_bit(m, 12) & no_exe)                                              /* EXE_ANY */
               | (krsid_bit(m, 5) & (krsid_slot_bit(c->exe_bits, slot) ^ 1))              /* EXE_PREFIX */
               | (krsid_bit(m, 7) & (c->has_file ^ 1))                                    /* FILE_ANY */
               | (krsid_bit(m, 6) & (krsid_slot_bit(c->file_bits, slot) ^ 1));            /* FILE_PREFIX */
#pragma unroll
    for (int f = 0; f < KRSID_POLICY_FIELDS; f++) {
        __u64 v = in->field[f], a = r->field_arg[f];
        __u64 op = r->field_op[f];
        __u64 field_fails = ((krsid_nonzero(op ^ KRSID_FIELD_OP_ALL) ^ 1) & krsid_nonzero((v & a) ^ a))
                          | ((krsid_nonzero(op ^ KRSID_FIELD_OP_ANY) ^ 1) & (krsid_nonzero(v & a) ^ 1))
                          | ((krsid_nonzero(op ^ KRSID_FIELD_OP_EQ) ^ 1) & krsid_nonzero(v ^ a))
                          | ((krsid_nonzero(op ^ KRSID_FIELD_OP_NE) ^ 1) & (krsid_nonzero(v ^ a) ^ 1));
        fail |= krsid_bit(m, 8 + f) & field_fails;
    }
    /* The one test left with a branch: a helper call is worth skipping. */
    if (!fail && (m & KRSID_MATCH_CGROUP) && krsid_rule_cgroups.check_current_task(r->cgroup_slot) != 1)
        fail = 1;  /* 1: under it; 0: not; < 0: an empty slot (never written) */
    return fail;
}

/* What the policy decided for one call: KRSID_ACT_* and the rule slot + 1 (0 = none). */
struct krsid_decision {
    __u32 action;
    __u32 rule;
};

/*
 * Whether the active policy has a rule for the hook: krsid_decide's own first test
 * (two array lookups the verifier inlines), for a program whose policy input costs
 * helper calls (inode_create's mode needs the caller's umask: three calls) and that
 * reports nothing without a rule unless an option says so.
 */
static __always_inline int krsid_hook_has_rules(__u32 hook_id)
{
    int zero = 0;
    __u32 *bankp = krsid_policy_bank.lookup(&zero);
    int first = ((bankp ? (*bankp & 1) : 0) * KRSID_MAX_HOOKS + hook_id) * KRSID_RULES_PER_HOOK;
    struct krsid_rule *r0 = krsid_rules.lookup(&first);
    return r0 && r0->action;
}

/*
 * The decision for this call under the active policy. A hook without rules costs
 * two array lookups (the bank index and its first rule slot); the caller's comm,
 * executable and directory walks are read only when one of the hook's rules needs
 * them (slot 0's `needs`).
 */
static __always_inline struct krsid_decision krsid_decide(__u32 hook_id, struct krsid_policy_input *in)
{
    struct krsid_decision d = {KRSID_ACT_AUDIT, 0};
    int zero = 0;
    __u32 *bankp = krsid_policy_bank.lookup(&zero);
    __u32 bank = bankp ? (*bankp & 1) : 0;
    __u32 bank_hook = bank * KRSID_MAX_HOOKS + hook_id;
    int first = bank_hook * KRSID_RULES_PER_HOOK;

    struct krsid_rule *r0 = krsid_rules.lookup(&first);
    if (!r0 || !r0->action)
        return d;

    __u32 needs = r0->needs;
    struct krsid_caller c = {};
    c.uid = (__u32)bpf_get_current_uid_gid();
    if (in->file)
        c.has_file = 1;
    if (needs & KRSID_MATCH_COMM)
        bpf_get_current_comm(c.comm, sizeof(c.comm));  /* NUL-padded to 16 bytes */
    if (needs & (KRSID_MATCH_EXE | KRSID_MATCH_EXE_ANY | KRSID_MATCH_EXE_PREFIX)) {
        struct dentry *exe = krsid_exe_dentry();
        if (exe) {
            krsid_dentry_id(exe, &c.exe_dev, &c.exe_ino);
            if (needs & KRSID_MATCH_EXE_PREFIX)
                krsid_dir_bits(bank_hook, KRSID_DIR_KIND_EXE, exe, c.exe_bits);
        }
    }
    if ((needs & KRSID_MATCH_FILE_PREFIX) && in->file)
        krsid_dir_bits(bank_hook, KRSID_DIR_KIND_FILE, in->file, c.file_bits);

#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < KRSID_RULES_PER_HOOK; i++) {
        int idx = first + i;
        struct krsid_rule *r = krsid_rules.lookup(&idx);
        if (!r || !r->action)
            break;
        if (!krsid_rule_fails(r, i, in, &c)) {
            __u64 *hits = krsid_rule_hits.lookup(&idx);
            if (hits)
                *hits += 1;
            d.action = r->action;
            d.rule = r->number;
            return d;
        }
    }
    return d;
}

/* Record the decision in the event header (call before krsid_event_submit). */
static __always_inline void krsid_set_decision(void *ev, __u32 action, __u32 rule)
{
    struct krsid_header_view *h = ev;
    h->action = action;
    h->rule = rule;
    h->verdict = action == KRSID_ACT_DENY ? -EPERM : 0;
}

/*
 * Return the decision to the kernel. Written as two constant returns behind a
 * compiler barrier: `return deny ? -EPERM : 0` compiles to -(x & 1), which the
 * verifier cannot prove to be within [-4095, 0] and rejects.
 */
#define KRSID_RETURN_DECISION(action)              \
    do {                                           \
        if ((action) == KRSID_ACT_DENY) {          \
            asm volatile("" ::: "memory");         \
            return -EPERM;                         \
        }                                          \
        return 0;                                  \
    } while (0)


/*
 * The shape every hook program follows (see programs/<hook>.c):
 *
 *   KRSID_HOOK_PROLOGUE();                      count the call; keep an earlier deny
 *   struct krsid_policy_input in = {};          the hook's policy fields and file
 *   struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
 *   KRSID_DROP_IF_IGNORED(d);
 *   if (!d.rule && <hook filter>)               filters apply only when no rule matched
 *       KRSID_RETURN_FILTERED();
 *   e = krsid_event_begin(...); if (!e) KRSID_RETURN_DECISION(d.action);
 *   ... fill e ...
 *   KRSID_SUBMIT_AND_RETURN(e, d);
 *
 * Compute the policy fields without branches where you can (krsid_nonzero,
 * krsid_less): the verifier walks the 128-rule loop (~80k instructions) once for
 * every distinct state that reaches krsid_decide, and stops at 1M. Four ifs
 * before it in task_fix_setuid made 16 such states (690k).
 *
 * Rules run before the hook's own filters, so a deny rule sees every call; the
 * decision is returned even when no event could be written (rate limit, dedup,
 * full ring buffer): noise control never turns a deny into an allow.
 */
#define KRSID_HOOK_PROLOGUE()                                     \
    do {                                                          \
        int krsid_prev_ret_ = KRSID_PREV_RET();                   \
        krsid_count(KRSID_HOOK_ID, KRSID_CNT_INVOCATIONS);        \
        if (krsid_prev_ret_ != 0)                                 \
            return krsid_prev_ret_; /* never turn a deny into an allow */ \
    } while (0)

/* Allowed, counted as filtered, nothing emitted. */
#define KRSID_RETURN_FILTERED()                              \
    do {                                                     \
        krsid_count(KRSID_HOOK_ID, KRSID_CNT_FILTERED);      \
        return 0;                                            \
    } while (0)

#define KRSID_DROP_IF_IGNORED(d)                 \
    do {                                         \
        if ((d).action == KRSID_ACT_IGNORE)      \
            KRSID_RETURN_FILTERED();             \
    } while (0)

/* Stamp the decision into the event, hand it out, return the decision. */
#define KRSID_SUBMIT_AND_RETURN(e, d)                                   \
    do {                                                                \
        krsid_set_decision((e), (d).action, (d).rule);                  \
        krsid_event_submit(ctx, KRSID_HOOK_ID, (e), sizeof(*(e)));      \
        KRSID_RETURN_DECISION((d).action);                              \
    } while (0)

#ifdef KRSID_CNT_SLOTS_EXPECTED
_Static_assert(KRSID_CNT_SLOTS == KRSID_CNT_SLOTS_EXPECTED, "krsid: counter slots differ from user space");
#endif

/*
 * Noise control for busy hooks, per hook, set from the config (hooks.<hook>.rate_limit
 * and .dedup_window_ms) by user space. Both act before a sequence number is taken,
 * so suppressed events leave no gap; they are counted (krsid_events_suppressed_total).
 *
 * Rate limit: a token bucket per CPU (the rate is split over the CPUs, so no lock),
 * kept as time credit: every event costs cost_ns, credit grows with time up to burst.
 * Dedup: an event identical to one of the same hook, process and key within
 * window_ns is folded; the next event emitted for that key carries the count.
 */
struct krsid_limit {
    __u64 cost_ns;    /* 1e9 / (events per second per CPU); 0 = no rate limit */
    __u64 burst_ns;   /* the most credit a bucket can hold */
    __u64 window_ns;  /* dedup window; 0 = no dedup */
};
struct krsid_bucket {
    __u64 credit_ns;
    __u64 last_ns;
};
struct krsid_dedup_key {
    __u32 hook_id;
    __u32 tgid;
    __u64 key;
};
struct krsid_dedup_val {
    __u64 last_ns;
    __u64 folded;
};
BPF_ARRAY(krsid_limits, struct krsid_limit, KRSID_MAX_HOOKS);
BPF_PERCPU_ARRAY(krsid_buckets, struct krsid_bucket, KRSID_MAX_HOOKS);
BPF_TABLE("lru_hash", struct krsid_dedup_key, struct krsid_dedup_val, krsid_dedup, 16384);

/* 1 if the event may go out; 0 if rate-limited or folded (counted). *folded gets the
 * number of identical events folded since the last one emitted for this key. */
static __always_inline int krsid_admit(__u32 hook_id, __u64 key, __u32 *folded)
{
    __u32 idx = hook_id;
    struct krsid_limit *lim = krsid_limits.lookup(&idx);
    *folded = 0;
    if (!lim || !(lim->window_ns | lim->cost_ns))
        return 1;  /* no noise control on this hook: no clock read either */
    __u64 now = bpf_ktime_get_ns();
    if (lim->window_ns) {
        struct krsid_dedup_key k = {};
        k.hook_id = hook_id;
        k.tgid = bpf_get_current_pid_tgid() >> 32;
        k.key = key;
        struct krsid_dedup_val *v = krsid_dedup.lookup(&k);
        if (v && now - v->last_ns < lim->window_ns) {
            __sync_fetch_and_add(&v->folded, 1);
            krsid_count(hook_id, KRSID_CNT_SUPPRESSED_DEDUP);
            return 0;
        }
        struct krsid_dedup_val fresh = {};
        fresh.last_ns = now;
        if (v)
            *folded = (__u32)v->folded;
        krsid_dedup.update(&k, &fresh);
    }
    if (lim->cost_ns) {
        struct krsid_bucket *b = krsid_buckets.lookup(&idx);
        if (b) {
            __u64 credit = b->credit_ns + (now - b->last_ns);
            if (credit > lim->burst_ns)
                credit = lim->burst_ns;
            b->last_ns = now;
            if (credit < lim->cost_ns) {
                b->credit_ns = credit;
                krsid_count(hook_id, KRSID_CNT_SUPPRESSED_RATE);
                return 0;
            }
            b->credit_ns = credit - lim->cost_ns;
        }
    }
    return 1;
}

static __always_inline __u64 krsid_next_seq(void)
{
    int zero = 0;
    __u64 *seq = krsid_seq.lookup(&zero);
    return seq ? __sync_fetch_and_add(seq, 1) + 1 : 0;
}

/* Fill the common header from the current task. */
static __always_inline void krsid_fill_header(struct krsid_header_view *h, __u32 hook_id, __u64 seq)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u64 uid_gid = bpf_get_current_uid_gid();
    struct tty_struct *tty = 0;

    h->seq = seq;
    h->ktime_ns = bpf_ktime_get_boot_ns();
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->hook_id = hook_id;
    h->pid = (__u32)pid_tgid;
    h->tgid = pid_tgid >> 32;
    h->uid = (__u32)uid_gid;
    h->gid = uid_gid >> 32;
    h->verdict = 0;
    h->rule = 0;
    h->action = KRSID_ACT_AUDIT;
    h->suppressed = 0;
    h->hdr_pad = 0;
#if KRSID_TASK_BTF
    /* A BTF task pointer: every -> below is one load (a fault reads as 0). */
    struct task_struct *task = bpf_get_current_task_btf();
    h->ppid = task->real_parent->tgid;
    /* Start times of the group leaders, not of the threads: a process's id must not
     * depend on which of its threads acts (de_thread copies the leader's on exec). */
    h->start_ns = task->group_leader->start_boottime;
    h->parent_start_ns = task->real_parent->group_leader->start_boottime;
    h->euid = task->cred->euid.val;
    h->auid = task->loginuid.val;
    h->sessionid = task->sessionid;
    tty = task->signal->tty;
#else
    /* Explicit reads: bcc rewrites pointer walks only in the main file, and
     * task is a plain scalar here, not a BTF pointer. */
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct task_struct *parent = 0;
    const struct cred *cred = 0;
    struct signal_struct *sig = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
    bpf_probe_read_kernel(&h->ppid, sizeof(h->ppid), &parent->tgid);
    struct task_struct *leader = 0;
    h->start_ns = 0;
    h->parent_start_ns = 0;
    bpf_probe_read_kernel(&leader, sizeof(leader), &task->group_leader);
    if (leader)
        bpf_probe_read_kernel(&h->start_ns, sizeof(h->start_ns), &leader->start_boottime);
    leader = 0;
    if (parent)
        bpf_probe_read_kernel(&leader, sizeof(leader), &parent->group_leader);
    if (leader)
        bpf_probe_read_kernel(&h->parent_start_ns, sizeof(h->parent_start_ns), &leader->start_boottime);
    bpf_probe_read_kernel(&cred, sizeof(cred), &task->cred);
    bpf_probe_read_kernel(&h->euid, sizeof(h->euid), &cred->euid.val);
    bpf_probe_read_kernel(&h->auid, sizeof(h->auid), &task->loginuid.val);
    bpf_probe_read_kernel(&h->sessionid, sizeof(h->sessionid), &task->sessionid);
    bpf_probe_read_kernel(&sig, sizeof(sig), &task->signal);
    if (sig)
        bpf_probe_read_kernel(&tty, sizeof(tty), &sig->tty);
#endif
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
    /* Controlling terminal (task->signal->tty->name, e.g. "pts/0"), "" if none. */
    h->tty[0] = 0;
    if (tty)
        bpf_probe_read_kernel_str(&h->tty, sizeof(h->tty), &tty->name);
}

/*
 * Fair sharing (on by default; the config's fair_share section, one set of numbers
 * per lane): no single uid can take more than its share of a lane, all hooks
 * together, and no single process (tgid) more than its share of one hook, so an
 * unprivileged flood cannot crowd out everyone else's events. Each (lane, uid) and
 * (hook, tgid) has a token bucket kept as time credit (as krsid_limit's): an event
 * costs cost_ns, credit grows with time up to burst_ns. A call over its share is
 * not emitted; it is counted (KRSID_CNT_SUPPRESSED_FLOOD) and folded into a pending
 * summary of its (hook, tgid) or (hook, uid). The flood is itself a signal: a summary
 * record (struct krsid_flood_event, priority lane) says who flooded which hook, how
 * many calls were folded and from when to when. The kernel writes it from a folded
 * call once the summary period (summary_ns) is over; the last period of a flood that
 * went quiet is written by the daemon (krsid/pipeline/flood.py reads
 * krsid_flood_procs/_uids). Uid entries live in their own map, so a fork flood that
 * churns the per-process LRU cannot evict its uid's bucket. The price of an event
 * rises with its lane's backlog (krsid_congestion_shift): the shares adapt to how
 * fast the daemon really drains.
 */
#define KRSID_FLOOD_SCOPE_PROCESS 1
#define KRSID_FLOOD_SCOPE_UID 2
#define KRSID_FLOOD_ORIGIN_KERNEL 0
#define KRSID_FLOOD_ORIGIN_DAEMON 1
#define KRSID_FLOOD_PROCS 16384
#define KRSID_FLOOD_UIDS 4096
/* krsid_flood_uids holds two kinds of entries: a uid's bucket for a whole lane, keyed
 * (KRSID_FLOOD_LANE_KEY + lane, uid), and its folded calls per hook, keyed (hook, uid). */
#define KRSID_FLOOD_LANE_KEY 0x10000

struct krsid_fair_share {
    __u64 proc_cost_ns;   /* 1e9 / (events per second per process); 0 = off */
    __u64 proc_burst_ns;
    __u64 uid_cost_ns;    /* 1e9 / (events per second per uid); 0 = off */
    __u64 uid_burst_ns;
    __u64 summary_ns;     /* a flood summary covers at most this long */
};
struct krsid_flood_key {
    __u32 hook_id;
    __u32 id;             /* tgid or uid */
};
struct krsid_flood_state {
    __u64 credit_ns;      /* bucket entries: the token bucket */
    __u64 last_ns;        /* the key's last call */
    __u64 pending;        /* calls folded since the last summary (atomic adds) */
    __u64 first_ns;       /* the first of them (boot clock, as ktime_ns), 0 = none */
    __u64 last_folded_ns; /* the latest of them */
    __u32 pid;            /* who made the first folded call of the period */
    __u32 tgid;
    __u32 uid;
    __u32 pad;
    char comm[KRSID_COMM_LEN];
};
/* The summary record: a header (of the process the kernel wrote it from, or of the
 * first folded call when the daemon writes it) and what was folded. Its hook_id is
 * KRSID_MAX_HOOKS, one past the last hook: flooded_hook names the hook. */
struct krsid_flood_event {
    KRSID_EVENT_HEADER
    __u64 folded;
    __u64 first_ns;
    __u64 last_ns;
    __u32 flooded_hook;
    __u32 scope;
    __u32 flood_tgid;
    __u32 flood_uid;
    __u32 origin;
    __u32 flood_pad;
    char flood_comm[KRSID_COMM_LEN];
};
#define KRSID_FLOOD_HOOK_ID KRSID_MAX_HOOKS
BPF_ARRAY(krsid_fair_share_config, struct krsid_fair_share, KRSID_LANES);  /* per lane */
BPF_TABLE("lru_hash", struct krsid_flood_key, struct krsid_flood_state, krsid_flood_procs, KRSID_FLOOD_PROCS);
BPF_TABLE("lru_hash", struct krsid_flood_key, struct krsid_flood_state, krsid_flood_uids, KRSID_FLOOD_UIDS);

/* A new key's state: a full bucket. */
static __always_inline struct krsid_flood_state krsid_flood_fresh(__u64 now, __u64 burst)
{
    struct krsid_flood_state fresh = {};
    fresh.credit_ns = burst;
    fresh.last_ns = now;
    return fresh;
}

/* The key's state, created on its first call (NULL only if the map refuses: the call
 * is then admitted, fail open for visibility). One function per map: BCC rewrites
 * map calls only when the map is named in place. */
static __always_inline struct krsid_flood_state *krsid_flood_uid_state(struct krsid_flood_key *k, __u64 now,
                                                                       __u64 burst)
{
    struct krsid_flood_state *s = krsid_flood_uids.lookup(k);
    if (s)
        return s;
    struct krsid_flood_state fresh = krsid_flood_fresh(now, burst);
    krsid_flood_uids.insert(k, &fresh);
    return krsid_flood_uids.lookup(k);
}

static __always_inline struct krsid_flood_state *krsid_flood_proc_state(struct krsid_flood_key *k, __u64 now,
                                                                        __u64 burst)
{
    struct krsid_flood_state *s = krsid_flood_procs.lookup(k);
    if (s)
        return s;
    struct krsid_flood_state fresh = krsid_flood_fresh(now, burst);
    krsid_flood_procs.insert(k, &fresh);
    return krsid_flood_procs.lookup(k);
}

#if !KRSID_USE_PERFBUF
/* BCC 0.26 (Debian's) has no ringbuf_query() map method, and a plain `&events` is not
 * turned into the map's fd. ringbuf_reserve() is: for these lines, its helper is read
 * as bpf_ringbuf_query(map, flags), so the rewritten call queries the lane's ring. */
#define bpf_ringbuf_reserve(map, flags, unused) ((void *)bpf_ringbuf_query((map), (flags)))
static __always_inline __u64 krsid_lane_unread_bytes(__u32 lane)
{
    if (lane == KRSID_LANE_BULK)
        return (__u64)events_bulk.ringbuf_reserve(KRSID_RB_AVAIL_DATA);
    return (__u64)events.ringbuf_reserve(KRSID_RB_AVAIL_DATA);
}
#undef bpf_ringbuf_reserve
#endif

/*
 * Congestion pricing: the shares follow the daemon's real drain rate. A fixed rate
 * cannot: 400 exec events/s per uid is nothing for a daemon on real hardware and more
 * than an emulated or overloaded one drains, and one uid's burst of 3.7 KB exec events
 * can outgrow the whole ring. So an event's price rises with how full its lane's ring
 * is (bytes the daemon has not read yet): up to half full it costs its share's normal
 * price, so a benign burst that fits half the lane is never touched; from there x8
 * per further eighth (x8 at 4/8, x64 at 5/8, x512 at 6/8, x4096 from 7/8). A flooder,
 * whose bucket is always near empty, is folded down to a trickle as soon as the ring
 * backs up, so the ring drains; a quiet uid or process has a full bucket and still
 * gets its events through, since no price exceeds a full bucket. Returns the price's
 * shift (0 = normal).
 */
static __always_inline __u32 krsid_congestion_shift(__u32 lane)
{
#if KRSID_USE_PERFBUF
    return 0;  /* a perf buffer cannot be queried: the fixed shares alone */
#else
    __u64 size = (lane == KRSID_LANE_BULK ? KRSID_BULK_RINGBUF_PAGES : KRSID_RINGBUF_PAGES) * (__u64)PAGE_SIZE;
    __u64 eighths = (krsid_lane_unread_bytes(lane) << 3) / size;
    if (eighths < 4)
        return 0;
    if (eighths > 7)
        eighths = 7;
    return 3 * (__u32)(eighths - 3);
#endif
}

/* The price of one event at this congestion: never above a full bucket. */
static __always_inline __u64 krsid_share_price(__u64 cost, __u32 shift, __u64 burst)
{
    __u64 price = cost << shift;
    return price < burst ? price : burst;
}

/* Take one event's credit (`cost`) from the bucket; 0 if it has not enough. */
static __always_inline int krsid_share_take(struct krsid_flood_state *s, __u64 now, __u64 cost, __u64 burst)
{
    __u64 credit = s->credit_ns + (now - s->last_ns);
    if (credit > burst)
        credit = burst;
    s->last_ns = now;
    if (credit < cost) {
        s->credit_ns = credit;
        return 0;
    }
    s->credit_ns = credit - cost;
    return 1;
}

/* A call over the key's share: fold it into the pending summary. The first folded
 * call of a period names the flooder (a racing CPU may write it too: same key). */
static __always_inline void krsid_flood_fold(struct krsid_flood_state *s, __u64 now)
{
    __sync_fetch_and_add(&s->pending, 1);
    if (!s->first_ns) {
        __u64 pid_tgid = bpf_get_current_pid_tgid();
        s->first_ns = now;
        s->pid = (__u32)pid_tgid;
        s->tgid = pid_tgid >> 32;
        s->uid = (__u32)bpf_get_current_uid_gid();
        bpf_get_current_comm(&s->comm, sizeof(s->comm));
    }
    s->last_folded_ns = now;
}

/*
 * Write the key's pending summary if its period is over. The count is taken with an
 * atomic subtract of what was read, so calls folded meanwhile on another CPU stay
 * pending; with no room in the priority lane nothing is taken (retried next call).
 */
static __always_inline void krsid_flood_summarize(struct krsid_flood_state *s, __u32 hook_id, __u32 scope, __u64 now,
                                                  __u64 summary_ns)
{
    __u64 first = s->first_ns;
    __u64 folded = s->pending;
    if (!folded || !first || now - first < summary_ns)
        return;
#if KRSID_USE_PERFBUF
    return;  /* one lane and no reserve: the daemon writes the summaries (krsid/pipeline/flood.py) */
#else
    struct krsid_flood_event *e = events.ringbuf_reserve(sizeof(struct krsid_flood_event));
    if (!e)
        return;  /* nothing lost: the count stays pending for the next fold or the daemon */
    krsid_fill_header((struct krsid_header_view *)e, KRSID_FLOOD_HOOK_ID, krsid_next_seq());
    e->folded = folded;
    e->first_ns = first;
    /* A fold on another CPU writes first_ns before last_folded_ns: this CPU may see its
     * first_ns and the previous period's last one. The last fold is never before the
     * first (measured: one summary in a 6.12 run with 2 vCPUs had first_ns > last_ns). */
    __u64 last = s->last_folded_ns;
    e->last_ns = last + (first - last) * krsid_less(last, first);
    e->flooded_hook = hook_id;
    e->scope = scope;
    e->flood_tgid = s->tgid;
    e->flood_uid = s->uid;
    e->origin = KRSID_FLOOD_ORIGIN_KERNEL;
    e->flood_pad = 0;
    __builtin_memcpy(e->flood_comm, s->comm, sizeof(e->flood_comm));
    /* Take the count first: a fold racing on another CPU between the two writes keeps
     * its count pending (its period then starts at its own next fold). */
    __sync_fetch_and_sub(&s->pending, folded);
    s->first_ns = 0;
    events.ringbuf_submit(e, 0);
    krsid_lane_count(KRSID_LANE_PRIORITY, KRSID_LANESTAT_EMITTED);
    krsid_count(hook_id, KRSID_CNT_FLOOD_SUMMARIES);
#endif
}

/* A folded call: counted, added to its key's pending summary, and the summary
 * written when its period is over. */
static __always_inline void krsid_flood_note(struct krsid_flood_state *s, __u32 hook_id, __u32 scope, __u64 now,
                                             __u64 summary_ns)
{
    krsid_count(hook_id, KRSID_CNT_SUPPRESSED_FLOOD);
    if (!s)
        return;
    krsid_flood_fold(s, now);
    krsid_flood_summarize(s, hook_id, scope, now, summary_ns);
}

/*
 * 1 if the caller's uid has credit in this lane and its process on this hook (the
 * credit is taken), 0 if the call is over a share (folded and counted).
 * A uid's bucket covers the whole lane, all hooks together: flooding several hooks
 * at once buys no more room. A process's bucket is per hook.
 */
static __always_inline int krsid_fair_share_admit(__u32 hook_id, __u32 lane)
{
    __u32 idx = lane;
    struct krsid_fair_share *fs = krsid_fair_share_config.lookup(&idx);
    if (!fs || !(fs->proc_cost_ns | fs->uid_cost_ns))
        return 1;  /* off: no clock read, no map */
    __u64 now = bpf_ktime_get_boot_ns();
    __u32 uid = (__u32)bpf_get_current_uid_gid();
    __u32 shift = krsid_congestion_shift(lane);

    struct krsid_flood_state *u = 0;
    __u64 uid_price = krsid_share_price(fs->uid_cost_ns, shift, fs->uid_burst_ns);
    if (fs->uid_cost_ns) {
        struct krsid_flood_key bucket = {};
        bucket.hook_id = KRSID_FLOOD_LANE_KEY + lane;
        bucket.id = uid;
        u = krsid_flood_uid_state(&bucket, now, fs->uid_burst_ns);
        if (u && !krsid_share_take(u, now, uid_price, fs->uid_burst_ns)) {
            struct krsid_flood_key folds = {};
            folds.hook_id = hook_id;
            folds.id = uid;
            krsid_flood_note(krsid_flood_uid_state(&folds, now, 0), hook_id, KRSID_FLOOD_SCOPE_UID, now,
                             fs->summary_ns);
            return 0;
        }
    }
    if (fs->proc_cost_ns) {
        struct krsid_flood_key pk = {};
        pk.hook_id = hook_id;
        pk.id = bpf_get_current_pid_tgid() >> 32;
        struct krsid_flood_state *p = krsid_flood_proc_state(&pk, now, fs->proc_burst_ns);
        if (p && !krsid_share_take(p, now, krsid_share_price(fs->proc_cost_ns, shift, fs->proc_burst_ns),
                                   fs->proc_burst_ns)) {
            if (u)
                u->credit_ns += uid_price;  /* not emitted: give the uid its credit back */
            krsid_flood_note(p, hook_id, KRSID_FLOOD_SCOPE_PROCESS, now, fs->summary_ns);
            return 0;
        }
    }
    return 1;
}

/*
 * Start an event of `size` bytes (a struct that begins with KRSID_EVENT_HEADER):
 * takes the next sequence number, reserves ring-buffer room and fills the header.
 * The sequence number is taken BEFORE the reserve, so when the buffer is full the
 * number is burnt and the loss counted: every gap in delivered seq numbers is a
 * counted loss. Returns NULL when there is no room.
 */
static __always_inline void *krsid_event_begin_lane(__u32 hook_id, __u32 size, __u64 dedup_key, __u32 action,
                                                     __u32 hook_lane)
{
    __u32 folded = 0;
    /* Verdicts are evidence: a deny or would-deny takes the priority lane whatever the hook's. */
    __u32 lane = hook_lane;
    if (action == KRSID_ACT_DENY || action == KRSID_ACT_WOULD_DENY)
        lane = KRSID_LANE_PRIORITY;
    if (!krsid_fair_share_admit(hook_id, lane))
        return 0;
    if (!krsid_admit(hook_id, dedup_key, &folded))
        return 0;
    __u64 seq = krsid_next_seq();
#if KRSID_USE_PERFBUF
    int zero = 0;
    void *p = krsid_scratch_map.lookup(&zero);
#else
    void *p = 0;
    if (lane == KRSID_LANE_BULK)
        p = events_bulk.ringbuf_reserve(size);
    else
        p = events.ringbuf_reserve(size);
#endif
    if (!p) {
        krsid_count(hook_id, KRSID_CNT_LOST_RINGBUF);
        krsid_lane_count(lane, KRSID_LANESTAT_LOST);
        return 0;
    }
    krsid_lane_count(lane, KRSID_LANESTAT_EMITTED);
    krsid_fill_header((struct krsid_header_view *)p, hook_id, seq);
    ((struct krsid_header_view *)p)->suppressed = folded;
    return p;
}

/* In a program: krsid_event_begin(KRSID_HOOK_ID, sizeof(struct <hook>_event), d.action),
 * or krsid_event_begin_keyed(..., dedup key, d.action) to fold by a key of the hook's
 * (dedup, when configured, folds events of the same hook, process and key). `action`
 * is the policy's decision: it picks the lane with the program's KRSID_HOOK_LANE.
 * Returns NULL when suppressed or no room. */
#define krsid_event_begin_keyed(hook_id, size, dedup_key, action) \
    krsid_event_begin_lane((hook_id), (size), (dedup_key), (action), KRSID_HOOK_LANE)
#define krsid_event_begin(hook_id, size, action) krsid_event_begin_lane((hook_id), (size), 0, (action), KRSID_HOOK_LANE)

#if !KRSID_USE_PERFBUF
/*
 * Whether this event wakes the daemon. By default the kernel wakes the consumer for
 * the first record after it caught up, which is nearly every record while the daemon
 * keeps up: an interrupt and a wake-up per event. With KRSID_WAKEUP_EVENTS = K, only
 * every K-th sequence number wakes it (forced, since the daemon is then behind); the
 * records in between wait for that or for the daemon's poll timeout (poll_timeout_ms),
 * so latency stays bounded and a busy system pays for one wake-up per batch.
 * Counting by seq needs no shared state: seq is already global and unique.
 */
static __always_inline __u64 krsid_wakeup_flags(void *ev, __u32 hook_lane)
{
    struct krsid_header_view *h = ev;
    /* The priority lane is low-volume by design: its records wake the daemon as the
     * kernel decides (at once when it has caught up), never wait for a batch. */
    if (hook_lane == KRSID_LANE_PRIORITY || h->action == KRSID_ACT_DENY || h->action == KRSID_ACT_WOULD_DENY)
        return 0;
#if KRSID_WAKEUP_EVENTS > 0
    if (h->seq % KRSID_WAKEUP_EVENTS == 0)
        return KRSID_RB_FORCE_WAKEUP;
    return KRSID_RB_NO_WAKEUP;
#else
    return 0;
#endif
}
#endif

/* Hand the event to user space (ring buffer) or copy it out (perf buffer). */
static __always_inline void krsid_event_submit_lane(void *ctx, __u32 hook_id, void *ev, __u32 size, __u32 hook_lane)
{
#if KRSID_USE_PERFBUF
    if (events.perf_submit(ctx, ev, size) == 0)
        krsid_count(hook_id, KRSID_CNT_EMITTED);
    else
        krsid_count(hook_id, KRSID_CNT_LOST_RINGBUF);
#else
    events.ringbuf_submit(ev, krsid_wakeup_flags(ev, hook_lane));
    krsid_count(hook_id, KRSID_CNT_EMITTED);
#endif
}
/* Macros, so that KRSID_HOOK_LANE is the calling program's (the loader defines it per program). */
#define krsid_event_submit(ctx, hook_id, ev, size) krsid_event_submit_lane((ctx), (hook_id), (ev), (size), KRSID_HOOK_LANE)

/* The dentry's own name (no directory): usable on every hook, unlike bpf_d_path. */
static __always_inline void krsid_read_dentry_name(char *dst, __u32 size, struct dentry *d)
{
    const unsigned char *name = 0;
    bpf_probe_read_kernel(&name, sizeof(name), &d->d_name.name);
    bpf_probe_read_kernel_str(dst, size, name);
}

/*
 * File-integrity watch (the config's `watch:`, README: File-integrity watch).
 *
 * Files and directory subtrees are watched by identity, (s_dev, i_ino), as the
 * policy's path_prefix is: the daemon resolves each configured path when it starts
 * and at every reload, so a hard link to a watched file, a bind mount of a watched
 * directory or a file renamed into one is still the watched inode or lies below it.
 * Basenames (authorized_keys, .bash_history, ...) are watched anywhere, by name, and
 * directories by their last one to three names (every home's .config/autostart and
 * .config/systemd/user): the directory itself and the names directly in it.
 * A map value holds the daemon's watch id (1 + the entry's index in its append-only
 * watch table; an event names the configured entry that matched) in its low
 * KRSID_WATCH_ID_BITS, and above them the operations (KRSID_WATCH_OP_*) the entry
 * reports: every one for `paths` and `names`, only the destructive ones for `logs`
 * (files appended to all day, whose appends say nothing, but whose truncation,
 * deletion, renaming or rewriting in place is log tampering, ATT&CK T1070.002).
 */
#define KRSID_WATCH_FILES 4096        /* watched files and directories */
#define KRSID_WATCH_NAMES 256         /* watched basenames */
#define KRSID_WATCH_NAME_LEN 64       /* a name key, NUL-padded: names of up to 62 bytes */
#define KRSID_WATCH_LEVEL_NAME 255    /* watch_level of a match by basename */
#define KRSID_WATCH_DIRS 64           /* directories watched by name */
#define KRSID_WATCH_DIR_NAME_LEN 32   /* each name of a directory key, NUL-padded: up to 30 bytes */

#define KRSID_WATCH_ID_BITS 24
#define KRSID_WATCH_ID_MASK ((1U << KRSID_WATCH_ID_BITS) - 1)
/* What a hook does to the file, the op argument of krsid_watch_find. */
#define KRSID_WATCH_OP_WRITE 0x01    /* opened for writing (file_open) */
#define KRSID_WATCH_OP_TRUNCATE 0x02 /* data cut off: an O_TRUNC open or truncate(2) of a non-empty file */
#define KRSID_WATCH_OP_DELETE 0x04   /* inode_unlink, inode_rmdir */
#define KRSID_WATCH_OP_RENAME 0x08   /* inode_rename, either side */
#define KRSID_WATCH_OP_CREATE 0x10   /* a new name: inode_link, inode_symlink, inode_mkdir, inode_mknod */
#define KRSID_WATCH_OP_ATTR 0x20     /* mode, explicit times, ACLs (inode_setattr, inode_set_acl) */
#define KRSID_WATCH_OP_READ 0x40     /* opened for reading by a process that does not own it (file_open) */
/* Opened so that data already there can be changed in place (file_open): a file with
 * data opened for writing without O_APPEND, or for reading and writing (a shared
 * mapping of an O_APPEND file writes anywhere). Always asked with OP_WRITE, so the
 * entries that report every write need not list it. */
#define KRSID_WATCH_OP_REWRITE 0x80
/* Literals: krsid/catalog/contract.py reads them (the daemon writes them into the maps). */
#define KRSID_WATCH_OPS_ALL 0x3f     /* `paths` and `names` entries: every change (not reads) */
#define KRSID_WATCH_OPS_LOGS 0x8e    /* `logs` entries: what destroys or edits a log's content */
#define KRSID_WATCH_OPS_SECRETS 0x40 /* `secrets` entries (names): reads by others */
_Static_assert(KRSID_WATCH_OPS_ALL == (KRSID_WATCH_OP_ATTR << 1) - 1, "every operation but reads");
_Static_assert(KRSID_WATCH_OPS_LOGS == (KRSID_WATCH_OP_TRUNCATE | KRSID_WATCH_OP_DELETE | KRSID_WATCH_OP_RENAME |
                                        KRSID_WATCH_OP_REWRITE),
               "truncation, deletion, renames, rewrites in place");
_Static_assert(KRSID_WATCH_OPS_SECRETS == KRSID_WATCH_OP_READ, "reads");
_Static_assert((KRSID_WATCH_OPS_ALL | KRSID_WATCH_OPS_LOGS | KRSID_WATCH_OPS_SECRETS) >> (32 - KRSID_WATCH_ID_BITS) == 0,
               "the operations fit above the id");

struct krsid_watch_file_key {
    __u32 dev;
    __u32 pad;
    __u64 ino;
};
struct krsid_watch_name_key {
    char name[KRSID_WATCH_NAME_LEN];
};
BPF_HASH(krsid_watch_files, struct krsid_watch_file_key, __u32, KRSID_WATCH_FILES);
/* The devices (s_dev) krsid_watch_files has entries on -> how many. The walk never
 * leaves the file's filesystem, so a file on any other device (a tmpfs, a data
 * volume, /proc) cannot lie below a watched path: one lookup instead of the walk
 * (measured under TCG: a filtered write open cost +20 % over the empty programs with
 * the walk). */
BPF_HASH(krsid_watch_devs, __u32, __u32, KRSID_WATCH_FILES);
BPF_HASH(krsid_watch_names, struct krsid_watch_name_key, __u32, KRSID_WATCH_NAMES);
/* A directory watched by name: its own name, its parent's and its grandparent's ("" where
 * fewer names were configured: any). */
struct krsid_watch_dir_key {
    char name[KRSID_WATCH_DIR_NAME_LEN];
    char parent[KRSID_WATCH_DIR_NAME_LEN];
    char grandparent[KRSID_WATCH_DIR_NAME_LEN];
};
BPF_HASH(krsid_watch_dirs, struct krsid_watch_dir_key, __u32, KRSID_WATCH_DIRS);
/* A pre-filter of the watched basenames by (length, first byte): bit (c & 63) of word
 * len * 4 + (c >> 6) is set when a watched name is len bytes long and starts with the
 * byte c (krsid/watch.py: name_filter; len * PER_LEN in general). A name it rules out, most names a write path
 * sees, skips the 64-byte read, the key's hash and the lookup. */
#define KRSID_WATCH_NAME_FILTER_PER_LEN 4 /* words per length: 4 x 64 bits, one per first byte */
_Static_assert(KRSID_WATCH_NAME_FILTER_PER_LEN * 64 == 256, "one bit per value of the first byte");
#define KRSID_WATCH_NAME_FILTER_WORDS (KRSID_WATCH_NAME_LEN * KRSID_WATCH_NAME_FILTER_PER_LEN)
BPF_ARRAY(krsid_watch_name_filter, __u64, KRSID_WATCH_NAME_FILTER_WORDS);
/* The same pre-filter of the directories watched by name (their own names). */
#define KRSID_WATCH_DIR_FILTER_WORDS (KRSID_WATCH_DIR_NAME_LEN * KRSID_WATCH_NAME_FILTER_PER_LEN)
BPF_ARRAY(krsid_watch_dir_filter, __u64, KRSID_WATCH_DIR_FILTER_WORDS);
/* A pre-filter of the watched inode numbers: bit (ino % KRSID_WATCH_INO_FILTER_BITS)
 * is set when a watched file or directory has that inode number modulo it
 * (krsid/watch.py: ino_filter). A level of the walk whose inode it rules out, nearly
 * every directory above an unwatched file, costs an inlined array lookup instead of
 * the (device, inode) key's hash and the hash map's lookup. */
#define KRSID_WATCH_INO_FILTER_BITS 65536
_Static_assert((KRSID_WATCH_INO_FILTER_BITS & (KRSID_WATCH_INO_FILTER_BITS - 1)) == 0, "a power of two: a mask");
#define KRSID_WATCH_INO_FILTER_WORDS (KRSID_WATCH_INO_FILTER_BITS / 64)
BPF_ARRAY(krsid_watch_ino_filter, __u64, KRSID_WATCH_INO_FILTER_WORDS);
/* [0]: how many entries the watch maps hold; 0 skips the walk (no watch configured). */
BPF_ARRAY(krsid_watch_count, __u64, 1);

struct krsid_watch_hit {
    __u32 id;     /* 0: nothing watched matched */
    __u32 level;  /* 0: d itself; N: d lies N levels below the watched directory; or LEVEL_NAME */
    __u32 ops;    /* of the op asked about, what the matching entry reports (never 0 with an id) */
    __u32 pad;
};

/* Per CPU, one slot: where krsid_watch_find launders its result (see there). */
BPF_PERCPU_ARRAY(krsid_watch_result, struct krsid_watch_hit, 1);

/*
 * The krsid_watch_names value (an entry's id and operations) of a basename, 0 for a
 * name not watched. name: a dentry's d_name.name, len its length, first its first
 * byte. Without a branch but the map's NULL check before the pre-filter's verdict
 * (krsid_watch_find walks it once per way out of its loop). A length past the map
 * reads word 0 (no name is 0 bytes long) and is ruled out by krsid_less too.
 */
static __always_inline __u32 krsid_watch_name_value(const unsigned char *name, __u32 len, __u8 first)
{
    __u32 word = (len & (KRSID_WATCH_NAME_LEN - 1)) * KRSID_WATCH_NAME_FILTER_PER_LEN + (first >> 6);
    __u64 *filter = krsid_watch_name_filter.lookup(&word);
    __u64 bits = filter ? *filter : 0;
    __u32 found = 0;
    if ((bits >> (first & 63)) & krsid_less(len, KRSID_WATCH_NAME_LEN)) {
        struct krsid_watch_name_key nk = {};
        long n = bpf_probe_read_kernel_str(nk.name, sizeof(nk.name), name);
        if (n > 0 && n < KRSID_WATCH_NAME_LEN) {  /* n counts the NUL: a longer name was cut */
            __u32 *value = krsid_watch_names.lookup(&nk);
            if (value)
                found = *value;
        }
    }
    return found;
}

/*
 * The krsid_watch_dirs value of a directory (dir: its krsid_dentry_link, first: its
 * name's first byte), 0 for one not watched by name: its name with its parent's and
 * grandparent's, else with its parent's, else alone (entries of three, two, one
 * name). The same pre-filter as the basenames, by the directory's own (length, first
 * byte): a name it rules out, nearly every one, costs one array lookup. A name of
 * KRSID_WATCH_DIR_NAME_LEN - 1 bytes or more is cut by the read and matches no entry
 * (their names have at most KRSID_WATCH_DIR_NAME_LEN - 2).
 */
static __always_inline __u32 krsid_watch_dir_value(struct krsid_dentry_link dir, __u8 first)
{
    struct qstr name = dir.name;
    __u32 word = (name.len & (KRSID_WATCH_DIR_NAME_LEN - 1)) * KRSID_WATCH_NAME_FILTER_PER_LEN + (first >> 6);
    __u64 *filter = krsid_watch_dir_filter.lookup(&word);
    __u64 bits = filter ? *filter : 0;
    __u32 found = 0;
    if ((bits >> (first & 63)) & krsid_less(name.len, KRSID_WATCH_DIR_NAME_LEN - 1)) {
        struct krsid_watch_dir_key k = {};
        bpf_probe_read_kernel_str(k.name, sizeof(k.name), name.name);
        struct krsid_dentry_link up = krsid_dentry_link(dir.parent);
        bpf_probe_read_kernel_str(k.parent, sizeof(k.parent), up.name.name);
        up = krsid_dentry_link(up.parent);
        bpf_probe_read_kernel_str(k.grandparent, sizeof(k.grandparent), up.name.name);
        __u32 *value = krsid_watch_dirs.lookup(&k);
        if (!value) {
            __builtin_memset(k.grandparent, 0, sizeof(k.grandparent));
            value = krsid_watch_dirs.lookup(&k);
        }
        if (!value) {
            __builtin_memset(k.parent, 0, sizeof(k.parent));
            value = krsid_watch_dirs.lookup(&k);
        }
        if (value)
            found = *value;
    }
    return found;
}

/* krsid_watch_dir_value of a directory, its name's first byte read here. */
static __always_inline __u32 krsid_watch_dir_of(struct krsid_dentry_link dir)
{
    __u8 first = 0;
    bpf_probe_read_kernel(&first, sizeof(first), dir.name.name);
    return krsid_watch_dir_value(dir, first);
}

/*
 * Whether op (KRSID_WATCH_OP_*, one or more) on d is watched: d itself or one of its
 * parents (up to KRSID_DIR_DEPTH levels, on d's filesystem) is a watched inode, or d's
 * name is a watched basename, or d, its parent or its grandparent is a directory
 * watched by name, and that entry reports one of the operations in op.
 * The nearest entry decides (a `paths` file inside a `logs` directory reports every
 * operation). A negative dentry (a name being created) has no inode: its parents
 * still match.
 *
 * The result goes through a per-CPU map slot on its way out, so that the verifier
 * sees unknown values rather than one constant level per loop exit. That alone did
 * not save inode_rename and inode_link (two calls each) on Debian's 6.1 when the
 * calls came before the policy's 128-rule loop: the verifier walked that loop once
 * per exit and stopped at 1M instructions (E2BIG, which BCC words as "too large").
 * Callers therefore look up the watch after krsid_decide (measured: 6.1 accepts).
 */
static __always_inline struct krsid_watch_hit krsid_watch_find(struct dentry *d, __u32 op)
{
    struct krsid_watch_hit hit = {};
    int zero = 0;
    __u64 *count = krsid_watch_count.lookup(&zero);
    if (!count || *count == 0)
        return hit;
    struct krsid_watch_file_key k = {};
    struct super_block *sb = 0;
    bpf_probe_read_kernel(&sb, sizeof(sb), &d->d_sb);
    if (sb)
        bpf_probe_read_kernel(&k.dev, sizeof(k.dev), &sb->s_dev);
    struct dentry *cur = d;
    /* Few branches per level: on 6.1 each one is a pending verifier state, and the
     * verifier refuses a program with more than 8,192 of them (E2BIG; BCC words it
     * as "too large"). A NULL inode or parent needs no test: the read from
     * it fails and leaves 0, inode 0 is in no map, and a NULL cur is its own parent. */
    __u32 depth = krsid_watch_devs.lookup(&k.dev) ? KRSID_DIR_DEPTH : 0;
#pragma clang loop unroll(disable)
    for (__u32 level = 0; level < depth && level < KRSID_DIR_DEPTH; level++) {
        struct krsid_dentry_link link = krsid_dentry_link(cur);
        k.ino = 0;
        bpf_probe_read_kernel(&k.ino, sizeof(k.ino), &link.inode->i_ino);
        __u32 bit = k.ino & (KRSID_WATCH_INO_FILTER_BITS - 1);
        __u32 word = bit >> 6;
        __u64 *filter = krsid_watch_ino_filter.lookup(&word);
        __u64 bits = filter ? *filter : 0;
        if ((bits >> (bit & 63)) & 1) {
            __u32 *value = krsid_watch_files.lookup(&k);
            if (value) {
                hit.id = *value;
                hit.level = level;
                break;
            }
        }
        if (link.parent == cur)
            break;  /* the filesystem's root is its own parent */
        cur = link.parent;
    }
    if (!hit.id) {
        struct krsid_dentry_link self = krsid_dentry_link(d);  /* its name and parent in one read */
        __u8 first = 0;
        bpf_probe_read_kernel(&first, sizeof(first), self.name.name);
        hit.id = krsid_watch_name_value(self.name.name, self.name.len, first);
        hit.level = KRSID_WATCH_LEVEL_NAME * krsid_nonzero(hit.id);
        if (!hit.id) {  /* d is a directory watched by name (level 0) */
            hit.id = krsid_watch_dir_value(self, first);
            hit.level = 0;
        }
        /* d lies in one (1), or one directory deeper (2: a unit's drop-in directory
         * foo.service.d/, the links of a target's .wants/). Written out, not as a
         * loop: 6.1's verifier refuses a loop whose last instruction is a helper
         * call (its CFG check: "back-edge from insn N to N+1"), which clang made. */
        if (!hit.id) {
            struct krsid_dentry_link parent = krsid_dentry_link(self.parent);
            hit.id = krsid_watch_dir_of(parent);
            hit.level = 1;  /* 0 below when nothing matched */
            if (!hit.id) {
                hit.id = krsid_watch_dir_of(krsid_dentry_link(parent.parent));
                hit.level = 2;
            }
        }
    }
    /* hit.id holds the map value so far: the id, and above it the entry's operations.
     * Without a branch: an entry that does not report op is no match. */
    hit.ops = (hit.id >> KRSID_WATCH_ID_BITS) & op;
    hit.level *= krsid_nonzero(hit.ops);
    hit.id = (hit.id & KRSID_WATCH_ID_MASK) * krsid_nonzero(hit.ops);
    struct krsid_watch_hit *slot = krsid_watch_result.lookup(&zero);
    if (!slot) {
        struct krsid_watch_hit none = {};
        return none;
    }
    *slot = hit;
    asm volatile("" ::: "memory");  /* read it back from the map, not from the registers */
    struct krsid_watch_hit out = *slot;
    return out;
}

/* The watch hit of a hook with two dentries (rename, link): first's, else second's;
 * *side = 1 when first matched, 2 for second, 0 for none. */
static __always_inline struct krsid_watch_hit krsid_watch_find_either(struct dentry *first, struct dentry *second,
                                                                      __u32 op, __u32 *side)
{
    *side = 1;
    struct krsid_watch_hit hit = krsid_watch_find(first, op);
    if (!hit.id) {
        hit = krsid_watch_find(second, op);
        *side = hit.id ? 2 : 0;
    }
    return hit;
}

/*
 * A process named the way user space can name it from inside any pid namespace: the
 * option value of type daemon_tgid (krsid/daemon.py, daemon_process_key) holds the
 * daemon's process id as its own pid namespace sees it (low 32 bits) and that
 * namespace's inode number (high 32 bits). Under systemd-nspawn or in a container
 * krsid's getpid() is not the kernel's tgid; comparing both at each of the task's
 * namespace levels is right wherever it runs (the initial namespace is level 0).
 */
#define KRSID_PIDNS_LEVELS 8 /* namespace levels looked at; the kernel allows 32 */

/* 1 when task t belongs to the process `key` names (see above); 0 for key 0. */
static __always_inline __u32 krsid_task_is_process(struct task_struct *t, __u64 key)
{
    struct task_struct *leader = 0;
    struct pid *pid = 0;
    unsigned int level = 0;
    bpf_probe_read_kernel(&leader, sizeof(leader), &t->group_leader);
    if (!key || !leader)
        return 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), &leader->thread_pid);
    if (!pid)
        return 0;
    bpf_probe_read_kernel(&level, sizeof(level), &pid->level);
#pragma unroll
    for (__u32 i = 0; i < KRSID_PIDNS_LEVELS; i++) {
        if (i > level)
            break;
        struct upid u = {};
        bpf_probe_read_kernel(&u, sizeof(u), &pid->numbers[i]);
        if ((__u32)u.nr != (__u32)key || !u.ns)
            continue;
        unsigned int inum = 0;
        bpf_probe_read_kernel(&inum, sizeof(inum), &u.ns->ns.inum);
        if (inum == (__u32)(key >> 32))
            return 1;
    }
    return 0;
}

/* task_struct.flags: a kernel thread (no user process behind the call). */
#define KRSID_PF_KTHREAD 0x00200000

/* 1 when the calling task is a kernel thread (0 also when its flags cannot be read). */
static __always_inline __u32 krsid_current_kthread(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    unsigned int pflags = 0;
    bpf_probe_read_kernel(&pflags, sizeof(pflags), &task->flags);
    return (pflags & KRSID_PF_KTHREAD) != 0;
}

/* The calling task's umask (its fs_struct), 0 if it cannot be read. The hooks that
 * create inodes (inode_mkdir, inode_mknod) get the requested mode: the umask is
 * applied before them only on filesystems without POSIX ACLs, after them on the
 * others (tmpfs, ext4 by default). Applying it again is the same on the first kind. */
static __always_inline __u32 krsid_current_umask(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fs_struct *fs = 0;
    int umask = 0;
    bpf_probe_read_kernel(&fs, sizeof(fs), &task->fs);
    if (fs)
        bpf_probe_read_kernel(&umask, sizeof(umask), &fs->umask);
    return umask;
}

/*
 * Where a file lies, as an exec sees its program (bprm_check_security's context) and
 * as file_open sees the script an interpreter runs (reason SCRIPT): places an attacker
 * drops what they run, and that a package never installs to.
 */
#define KRSID_FILE_CTX_MEMFD 0x8               /* a memfd ("memfd:" dentry): fileless */
#define KRSID_FILE_CTX_DELETED 0x10            /* no name left (nlink 0) */
#define KRSID_FILE_CTX_TMPFS 0x20              /* on a tmpfs (s_magic): /dev/shm, /run, often /tmp */
#define KRSID_FILE_CTX_WORLD_WRITABLE_DIR 0x40 /* its directory is o+w: /tmp, /var/tmp, /dev/shm */
#define KRSID_FILE_CTX_UPPER_LAYER 0x800       /* in an overlayfs upper layer: in a container, not from its image */
/* Stable ABI numbers BTF does not carry (include/uapi/linux/stat.h, magic.h). */
#define KRSID_S_IFMT 0170000
#define KRSID_S_IFREG 0100000
#define KRSID_S_IFDIR 0040000
#define KRSID_S_IWOTH 0002
#define KRSID_TMPFS_MAGIC 0x01021994
#define KRSID_OVERLAYFS_MAGIC 0x794c7630
/* "memfd:" as the first 6 bytes of a little-endian word (x86-64), and its length. */
#define KRSID_MEMFD_HEAD 0x3a64666d656dULL
#define KRSID_MEMFD_LEN 6

/* KRSID_FILE_CTX_* of the file at dentry (on overlayfs, the overlay's own dentry). */
static __always_inline __u32 krsid_file_context(struct dentry *dentry)
{
    struct inode *inode = 0;
    struct super_block *sb = 0;
    struct dentry *parent = 0;
    struct dentry *upper = 0;
    struct inode *dir = 0;
    const unsigned char *name = 0;
    __u64 head = 0;
    __u32 len = 0, nlink = 1, dir_mode = 0;
    __u16 mode16 = 0;
    unsigned long magic = 0;

    bpf_probe_read_kernel(&inode, sizeof(inode), &dentry->d_inode);
    bpf_probe_read_kernel(&sb, sizeof(sb), &dentry->d_sb);
    bpf_probe_read_kernel(&parent, sizeof(parent), &dentry->d_parent);
    bpf_probe_read_kernel(&len, sizeof(len), &dentry->d_name.len);
    bpf_probe_read_kernel(&name, sizeof(name), &dentry->d_name.name);
    /* 8 bytes of the name: a name shorter than that lives inside the dentry
     * (d_iname), so the read stays in mapped memory; a failed read leaves 0. */
    bpf_probe_read_kernel(&head, sizeof(head), name);
    if (inode)
        bpf_probe_read_kernel(&nlink, sizeof(nlink), &inode->i_nlink);
    if (sb)
        bpf_probe_read_kernel(&magic, sizeof(magic), &sb->s_magic);
    /* Every overlayfs inode is the vfs_inode of a struct ovl_inode, whose next member
     * is __upperdentry: the file's dentry in the upper (writable) layer, NULL while
     * the file exists only below (fs/overlayfs/ovl_entry.h, not installed; the same
     * from 4.19 to 7.x, checked in each kernel's BTF by the VM test). It is set once
     * the file is created or copied up: written, chmod-ed, chown-ed through the
     * overlay. In a container, a file in the upper layer is not from its image. */
    if (inode && magic == KRSID_OVERLAYFS_MAGIC)
        bpf_probe_read_kernel(&upper, sizeof(upper), (char *)inode + sizeof(struct inode));
    /* A memfd's dentry is its own parent (alloc_file_pseudo) and not a directory. */
    if (parent)
        bpf_probe_read_kernel(&dir, sizeof(dir), &parent->d_inode);
    if (dir) {
        bpf_probe_read_kernel(&mode16, sizeof(mode16), &dir->i_mode);
        dir_mode = mode16;
    }

    __u64 is_memfd = krsid_nonzero((head & 0xffffffffffffULL) ^ KRSID_MEMFD_HEAD) ^ 1;
    is_memfd &= krsid_less(KRSID_MEMFD_LEN - 1, len);
    __u64 deleted = krsid_nonzero(nlink) ^ 1;
    __u64 tmpfs = krsid_nonzero(magic ^ KRSID_TMPFS_MAGIC) ^ 1;
    __u64 ww_dir = krsid_nonzero((dir_mode & KRSID_S_IFMT) ^ KRSID_S_IFDIR) ^ 1;
    ww_dir &= krsid_nonzero(dir_mode & KRSID_S_IWOTH);
    __u64 upper_layer = krsid_nonzero((__u64)upper);
    return (is_memfd * KRSID_FILE_CTX_MEMFD) | (deleted * KRSID_FILE_CTX_DELETED) | (tmpfs * KRSID_FILE_CTX_TMPFS) |
           (ww_dir * KRSID_FILE_CTX_WORLD_WRITABLE_DIR) | (upper_layer * KRSID_FILE_CTX_UPPER_LAYER);
}

/*
 * The script an interpreter was started on (`sh x.sh`, `python3 /dev/shm/x.py`), per
 * thread: bprm_check_security writes it when the program it runs is one of its
 * `interpreters`, from the command line (the basenames of argv[1..3] that are no
 * options: an option's value may come first, `python3 -W ignore x.py`), and removes
 * it at every other exec; at the thread's first read open of a regular file of one
 * of those names file_open removes it, and reports the open if the file lies in a
 * place krsid_file_context flags (reason SCRIPT). The first such open is the
 * script itself: an interpreter opens its script before it runs any of it, so a
 * file the script reads later (named by a later argument) is not taken for it. Task storage: the kernel
 * frees it with the thread, and a thread without it costs file_open one lookup that
 * finds nothing.
 */
#define KRSID_SCRIPT_NAMES 3      /* argv[1..3], a slot each */
#define KRSID_SCRIPT_NAME_LEN 32 /* a basename, NUL-padded: up to 31 bytes */
struct krsid_script_names {
    __u32 len[KRSID_SCRIPT_NAMES]; /* 0: no name in this slot (its bytes mean nothing) */
    char name[KRSID_SCRIPT_NAMES][KRSID_SCRIPT_NAME_LEN];
};
BPF_TASK_STORAGE(krsid_script_names, struct krsid_script_names);

/* Eight characters as the little-endian word they form in memory. */
#define KRSID_WORD8(a, b, c, d, e, f, g, h)                                                             \
    ((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 |          \
     (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)

/* An extended attribute's namespace, from its name's prefix (inode_setxattr,
 * inode_removexattr). The sidecars' enum is derived from these defines (value set
 * xattr_namespaces in include/krsid.yaml: c_defines). */
#define KRSID_XATTR_NS_OTHER 0
#define KRSID_XATTR_NS_SECURITY 1
#define KRSID_XATTR_NS_TRUSTED 2
#define KRSID_XATTR_NS_USER 3
#define KRSID_XATTR_NS_SYSTEM 4

/* What an xattr name's first 24 bytes (w, NUL-padded) say: its namespace, whether it
 * is exactly security.capability, overlayfs' own (trusted.overlay.*) or a POSIX ACL
 * (system.posix_acl_*). Without branches (see krsid_decide). */
struct krsid_xattr_kind {
    __u32 ns;
    __u64 is_capability;
    __u64 is_overlay;
    __u64 is_acl;
};
static __always_inline struct krsid_xattr_kind krsid_xattr_namespace(const __u64 *w)
{
    __u64 sec = (krsid_nonzero(w[0] ^ KRSID_WORD8('s', 'e', 'c', 'u', 'r', 'i', 't', 'y')) |
                 krsid_nonzero((w[1] & 0xff) ^ '.')) ^ 1;
    __u64 trusted = krsid_nonzero(w[0] ^ KRSID_WORD8('t', 'r', 'u', 's', 't', 'e', 'd', '.')) ^ 1;
    __u64 user = krsid_nonzero((w[0] & 0xffffffffffULL) ^ KRSID_WORD8('u', 's', 'e', 'r', '.', 0, 0, 0)) ^ 1;
    __u64 system = krsid_nonzero((w[0] & 0xffffffffffffffULL) ^ KRSID_WORD8('s', 'y', 's', 't', 'e', 'm', '.', 0)) ^ 1;
    struct krsid_xattr_kind k = {};
    k.is_overlay = trusted & (krsid_nonzero(w[1] ^ KRSID_WORD8('o', 'v', 'e', 'r', 'l', 'a', 'y', '.')) ^ 1);
    k.is_acl = (krsid_nonzero(w[0] ^ KRSID_WORD8('s', 'y', 's', 't', 'e', 'm', '.', 'p')) |
                krsid_nonzero(w[1] ^ KRSID_WORD8('o', 's', 'i', 'x', '_', 'a', 'c', 'l')) |
                krsid_nonzero((w[2] & 0xff) ^ '_')) ^ 1;
    k.is_capability = sec & (krsid_nonzero(w[1] ^ KRSID_WORD8('.', 'c', 'a', 'p', 'a', 'b', 'i', 'l')) ^ 1) &
                      (krsid_nonzero(w[2] ^ KRSID_WORD8('i', 't', 'y', 0, 0, 0, 0, 0)) ^ 1);
    k.ns = sec * KRSID_XATTR_NS_SECURITY + trusted * KRSID_XATTR_NS_TRUSTED + user * KRSID_XATTR_NS_USER +
           system * KRSID_XATTR_NS_SYSTEM;
    return k;
}

/* The kernel's internal dev_t: MAJOR << 20 | MINOR (include/linux/kdev_t.h: macros, not in BTF). */
#define KRSID_MINORBITS 20

/* Inode number and device (as stat's st_dev major/minor) of an inode; all 0 for NULL. */
static __always_inline void krsid_inode_id(struct inode *inode, __u64 *ino, __u32 *dev_major, __u32 *dev_minor)
{
    struct super_block *sb = 0;
    __u32 dev = 0;
    *ino = 0;
    if (inode) {
        bpf_probe_read_kernel(ino, sizeof(*ino), &inode->i_ino);
        bpf_probe_read_kernel(&sb, sizeof(sb), &inode->i_sb);
    }
    if (sb)
        bpf_probe_read_kernel(&dev, sizeof(dev), &sb->s_dev);
    *dev_major = dev >> KRSID_MINORBITS;
    *dev_minor = dev & ((1U << KRSID_MINORBITS) - 1);
}

/* An inode's mtime and ctime (seconds, nanoseconds), as stat reports them. The
 * members moved three times: timespec64 i_mtime/i_ctime until 6.5, __i_ctime in
 * 6.6, __i_mtime too in 6.7-6.10, separate *_sec/*_nsec integers since 6.11. From
 * 6.13 the top bit of i_ctime_nsec is a flag (I_CTIME_QUERIED, multigrain
 * timestamps), masked here as inode_get_ctime_nsec() does. */
#define KRSID_NSEC_MASK 0x3fffffff /* nanoseconds < 10^9 < 2^30 */
struct krsid_inode_times {
    __s64 mtime_sec;
    __s64 ctime_sec;
    __u32 mtime_nsec;
    __u32 ctime_nsec;
};
static __always_inline struct krsid_inode_times krsid_inode_times(struct inode *inode)
{
    struct krsid_inode_times t = {};
    if (!inode)
        return t;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
    bpf_probe_read_kernel(&t.mtime_sec, sizeof(t.mtime_sec), &inode->i_mtime_sec);
    bpf_probe_read_kernel(&t.mtime_nsec, sizeof(t.mtime_nsec), &inode->i_mtime_nsec);
    bpf_probe_read_kernel(&t.ctime_sec, sizeof(t.ctime_sec), &inode->i_ctime_sec);
    bpf_probe_read_kernel(&t.ctime_nsec, sizeof(t.ctime_nsec), &inode->i_ctime_nsec);
#else
    struct timespec64 m = {}, c = {};
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
    bpf_probe_read_kernel(&m, sizeof(m), &inode->__i_mtime);
#else
    bpf_probe_read_kernel(&m, sizeof(m), &inode->i_mtime);
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
    bpf_probe_read_kernel(&c, sizeof(c), &inode->__i_ctime);
#else
    bpf_probe_read_kernel(&c, sizeof(c), &inode->i_ctime);
#endif
    t.mtime_sec = m.tv_sec;
    t.mtime_nsec = m.tv_nsec;
    t.ctime_sec = c.tv_sec;
    t.ctime_nsec = c.tv_nsec;
#endif
    t.mtime_nsec &= KRSID_NSEC_MASK;
    t.ctime_nsec &= KRSID_NSEC_MASK;
    return t;
}

/* A file's immutable (chattr +i) and append-only (+a) flags, for inode_file_setattr
 * and its fallback file_ioctl. The flag words are the FS_*_FL of chattr and
 * FS_IOC_SETFLAGS (include/uapi/linux/fs.h); the inode keeps the current state as
 * S_IMMUTABLE/S_APPEND in i_flags (include/linux/fs.h). Macros in the kernel, not in
 * BTF: own names, so the kernel headers' definitions never clash. */
#define KRSID_FS_IMMUTABLE_FL 0x10
#define KRSID_FS_APPEND_FL 0x20
#define KRSID_S_APPEND 0x4
#define KRSID_S_IMMUTABLE 0x8
/* What a call does to one of the two flags (the events' immutable/append_only enums). */
#define KRSID_FLAG_UNCHANGED 0
#define KRSID_FLAG_ADDED 1
#define KRSID_FLAG_REMOVED 2
_Static_assert(KRSID_FLAG_UNCHANGED == 0 && KRSID_FLAG_REMOVED == KRSID_FLAG_ADDED + 1,
               "krsid_file_attr_change computes the values as (changed) * (ADDED + was set)");

/* What a call setting the flag word new_flags does to a file's immutable and
 * append-only flags (KRSID_FLAG_*), the current state read from its inode (NULL:
 * neither set). Without branches: the results are policy fields (see krsid_decide). */
struct krsid_file_attr_change {
    __u32 immutable;
    __u32 append_only;
};
static __always_inline struct krsid_file_attr_change krsid_file_attr_change(struct inode *inode, __u32 new_flags)
{
    __u32 i_flags = 0;
    if (inode)
        bpf_probe_read_kernel(&i_flags, sizeof(i_flags), &inode->i_flags);
    __u32 was_immutable = (i_flags / KRSID_S_IMMUTABLE) & 1, was_append = (i_flags / KRSID_S_APPEND) & 1;
    __u32 is_immutable = (new_flags / KRSID_FS_IMMUTABLE_FL) & 1, is_append = (new_flags / KRSID_FS_APPEND_FL) & 1;
    struct krsid_file_attr_change c = {
        .immutable = (was_immutable ^ is_immutable) * (KRSID_FLAG_ADDED + was_immutable),
        .append_only = (was_append ^ is_append) * (KRSID_FLAG_ADDED + was_append),
    };
    return c;
}

/* A dentry's name and its directory's name (the inode hooks have no path). */
static __always_inline void krsid_read_names(char *dir, char *name, __u32 size, struct dentry *d)
{
    struct dentry *parent = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), &d->d_parent);
    if (parent)
        krsid_read_dentry_name(dir, size, parent);
    krsid_read_dentry_name(name, size, d);
}

/*
 * A new name in a directory: the event members and their fill, one shape for the hooks
 * that make a name (inode_mkdir, inode_create, inode_mknod, inode_symlink). The
 * dentry is negative (no inode yet), so the identity is the directory's:
 *   dir_ino, dev_major, dev_minor  the directory's inode number and device
 *   watch, watch_level             what krsid_watch_find found for the new name (0: no watch)
 *   dir, name                      the directory's last name and the new name
 * Members, one per line (layout.py expands KRSID_*_MEMBERS macros in place).
 */
#define KRSID_NEW_NAME_LEN 128
#define KRSID_NEW_NAME_MEMBERS \
    __u64 dir_ino; \
    __u32 dev_major; \
    __u32 dev_minor; \
    __u32 watch; \
    __u32 watch_level; \
    char dir[KRSID_NEW_NAME_LEN]; \
    char name[KRSID_NEW_NAME_LEN];

/* Fill an event's KRSID_NEW_NAME_MEMBERS (a macro: every program's struct has its own type). */
#define KRSID_NEW_NAME_FILL(e, dir_inode, dentry, hit)                              \
    do {                                                                            \
        krsid_inode_id((dir_inode), &(e)->dir_ino, &(e)->dev_major, &(e)->dev_minor); \
        (e)->watch = (hit).id;                                                      \
        (e)->watch_level = (hit).level;                                             \
        krsid_read_names((e)->dir, (e)->name, KRSID_NEW_NAME_LEN, (dentry));        \
    } while (0)

/* Both names of a rename or link and their directories' names. */
static __always_inline void krsid_read_two_names(char *old_dir, char *old_name, char *new_dir, char *new_name,
                                                 __u32 size, struct dentry *old_dentry, struct dentry *new_dentry)
{
    krsid_read_names(old_dir, old_name, size, old_dentry);
    krsid_read_names(new_dir, new_name, size, new_dentry);
}

#endif /* KRSID_H */
