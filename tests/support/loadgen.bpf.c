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
 * Appended to the module by tests/support/loadgen.py (BuildSettings.extra_source)
 * after the hook programs, with LOADGEN_HOOK_ID set to file_mprotect's hook id.
 */
/* [0] target tgid (0 = off). */
BPF_ARRAY(loadgen_ctl, __u64, 1);

/* One event per syscall: more than one krsid_event_begin per program run, rolled
 * or unrolled, is more branching than the verifier accepts ("sequence of 8193
 * jumps is too complex"). The driver makes as many syscalls as events wanted. */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    int zero = 0;
    __u64 *target = loadgen_ctl.lookup(&zero);
    if (!target || *target != (bpf_get_current_pid_tgid() >> 32))
        return 0;
    krsid_count(LOADGEN_HOOK_ID, KRSID_CNT_INVOCATIONS);

    struct file_mprotect_event *e = krsid_event_begin(LOADGEN_HOOK_ID, sizeof(struct file_mprotect_event));
    if (!e)
        return 0;  /* no room: counted as lost_ringbuf, its seq burnt */
    e->vm_start = 0x7f0000000000ULL + ((__u64)bpf_get_prandom_u32() << 12);
    e->vm_end = e->vm_start + 0x1000;
    e->vm_flags = 0x73;
    e->reqprot = PROT_READ | PROT_EXEC;
    e->prot = PROT_READ | PROT_EXEC;
    e->flags = 0;
    e->pad0 = 0;
    /* A realistic name of a realistic length. */
    __builtin_memcpy(e->file, "libloadgen-jit-cache.so", 24);
    krsid_event_submit(ctx, LOADGEN_HOOK_ID, e, sizeof(struct file_mprotect_event));
    return 0;
}
