// SPDX-License-Identifier: GPL-2.0
/*
 * krsid's load generator: real krsid event records from a raw tracepoint.
 *
 * The development hosts refuse LSM programs but load raw tracepoints, so this
 * program stands in for the hooks to measure the user-space pipeline at native
 * speed: on every syscall entry of ONE target process it emits one
 * file_mprotect record through krsid_event_begin/_submit into krsid's own ring
 * buffer. The records then take the daemon's real path (poll -> decode -> enrich ->
 * sinks) and the same accounting: sequence numbers, ring-buffer loss counters.
 *
 * A second, optional target (the "priority" driver) stands in for the events that
 * matter most (exec, module loads, ...): each of its getppid() calls emits one
 * record through krsid_event_begin_lane into the lane loadgen_ctl[2] names, marked
 * (vm_flags LOADGEN_PRIORITY_VM_FLAGS, file "libloadgen-priority.so") so that the
 * output tells the two apart. Only getppid counts for it: its pacing sleeps must not
 * add records, so what it offers is exactly the calls it makes.
 *
 * Appended to the module by tests/support/loadgen.py (BuildSettings.extra_source)
 * after the hook programs, with LOADGEN_HOOK_ID set to file_mprotect's hook id.
 */
/* The records are file_mprotect's, so they take its lane (the bulk one). */
#define KRSID_HOOK_LANE KRSID_LANE_BULK
#define LOADGEN_PRIORITY_VM_FLAGS 0x75
/*
 * [0] target tgid (0 = off): every syscall entry emits a record into the bulk lane.
 * [1] priority target tgid (0 = off): every getppid() emits a marked record.
 * [2] the priority target's lane: KRSID_LANE_PRIORITY (0) or KRSID_LANE_BULK (1, one
 *     lane for everything: krsid before lanes).
 * [3] getppid's syscall number on this architecture (written with [1]).
 */
BPF_ARRAY(loadgen_ctl, __u64, 4);
/*
 * Per target (0 flood, 1 priority), per CPU, LOADGEN_OUTCOMES slots: calls, records
 * written, lost for want of room, suppressed (fair share, rate limit, dedup). A NULL
 * from krsid_event_begin_lane is told apart by the hook's lost_ringbuf counter on
 * this CPU: it moved = no room. (Another run of a program on the same CPU between
 * the two reads could only move a loss to "suppressed", never hide one from the
 * kernel's own counters.)
 */
#define LOADGEN_CALLS 0
#define LOADGEN_EMITTED 1
#define LOADGEN_LOST 2
#define LOADGEN_SUPPRESSED 3
#define LOADGEN_OUTCOMES 4
BPF_PERCPU_ARRAY(loadgen_counts, __u64, 2 * LOADGEN_OUTCOMES);

static __always_inline void loadgen_count(int target, int outcome)
{
    int idx = target * LOADGEN_OUTCOMES + outcome;
    __u64 *v = loadgen_counts.lookup(&idx);
    if (v)
        *v += 1;
}

static __always_inline __u64 loadgen_lost_ringbuf(void)
{
    int idx = LOADGEN_HOOK_ID * KRSID_CNT_SLOTS + KRSID_CNT_LOST_RINGBUF;
    __u64 *v = krsid_counters.lookup(&idx);
    return v ? *v : 0;
}

/* One event per syscall: more than one krsid_event_begin per program run, rolled
 * or unrolled, is more branching than the verifier accepts ("sequence of 8193
 * jumps is too complex"). The driver makes as many syscalls as events wanted. */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    int zero = 0, one = 1, two = 2, three = 3;
    __u64 *flood = loadgen_ctl.lookup(&zero);
    __u64 *prio = loadgen_ctl.lookup(&one);
    __u64 *prio_lane = loadgen_ctl.lookup(&two);
    __u64 *prio_nr = loadgen_ctl.lookup(&three);
    if (!flood || !prio || !prio_lane || !prio_nr)
        return 0;
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    int target;
    __u32 lane;
    if (*flood && *flood == tgid) {
        target = 0;
        lane = KRSID_LANE_BULK;
    } else if (*prio && *prio == tgid && ctx->args[1] == *prio_nr) {
        target = 1;
        lane = *prio_lane == KRSID_LANE_BULK ? KRSID_LANE_BULK : KRSID_LANE_PRIORITY;
    } else {
        return 0;
    }
    krsid_count(LOADGEN_HOOK_ID, KRSID_CNT_INVOCATIONS);
    loadgen_count(target, LOADGEN_CALLS);

    __u64 lost_before = loadgen_lost_ringbuf();
    struct file_mprotect_event *e =
        krsid_event_begin_lane(LOADGEN_HOOK_ID, sizeof(struct file_mprotect_event), 0, KRSID_ACT_AUDIT, lane);
    if (!e) {
        /* no room: counted as lost_ringbuf, its seq burnt; or suppressed (counted too) */
        loadgen_count(target, loadgen_lost_ringbuf() != lost_before ? LOADGEN_LOST : LOADGEN_SUPPRESSED);
        return 0;
    }
    e->vm_start = 0x7f0000000000ULL + ((__u64)bpf_get_prandom_u32() << 12);
    e->vm_end = e->vm_start + 0x1000;
    e->reqprot = PROT_READ | PROT_EXEC;
    e->prot = PROT_READ | PROT_EXEC;
    e->flags = 0;
    e->pad0 = 0;
    /* A realistic name of a realistic length. */
    if (target == 0) {
        e->vm_flags = 0x73;
        __builtin_memcpy(e->file, "libloadgen-jit-cache.so", 24);
    } else {
        e->vm_flags = LOADGEN_PRIORITY_VM_FLAGS;
        __builtin_memcpy(e->file, "libloadgen-priority.so", 23);
    }
    krsid_event_submit_lane(ctx, LOADGEN_HOOK_ID, e, sizeof(struct file_mprotect_event), lane);
    loadgen_count(target, LOADGEN_EMITTED);
    return 0;
}
