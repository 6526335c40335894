// SPDX-License-Identifier: GPL-2.0
/*
 * task_kill: a process sends a signal to another (kill, tgkill, sigqueue,
 * pidfd_send_signal). `p` is the task that would receive it.
 *
 * What attackers do with it (ATT&CK T1562.001 Impair defenses, T1489 Service stop):
 * stop or freeze the programs that watch them (`pkill auditd`, `kill -STOP` of an
 * agent, SIGKILL of krsid itself) before they act. Emitted by default:
 *   DAEMON  any signal to krsid itself (named by the daemon_tgid option: its pid and pid namespace,
 *           filled in by the loader): who stopped, froze or reloaded the auditor.
 *           A SIGSTOP's event is read when the daemon runs again; a SIGKILL's is in
 *           the ring buffer when the daemon dies and is lost with it, unless a
 *           rule denies the signal (README: Policies, self-protection).
 *   LISTED  any signal to a process whose command name (comm) is in the comms
 *           option: audit, logging and security agents (auditd, systemd-journal,
 *           rsyslogd, ...). The target's name is set by the target, not by the
 *           sender: an attacker cannot rename the process it signals to evade this.
 *   signals every signal whose bit is set in the signals option, to any process
 *           (default none: shells, systemd and timeout(1) send SIGTERM and SIGKILL
 *           all day).
 * Not emitted: signal 0 (an existence probe, nothing is delivered) and krsid's own
 * signals (to its compiler and hash workers).
 *
 * Only signals a process sends reach this hook: the kernel's own (SIGCHLD, SIGSEGV,
 * the OOM killer, cgroup.kill) are not checked, and neither is a signal the sender
 * had no permission to send (an unprivileged user signalling root's process gets
 * EPERM before any LSM is asked).
 */
#include "krsid.h"

/* Option slots, see task_kill.yaml. */
#define TASK_KILL_OPT_DAEMON_TGID 0
#define TASK_KILL_OPT_SIGNALS 1
/* Policy field slots, see task_kill.yaml. */
#define TASK_KILL_POLICY_SIG 0
#define TASK_KILL_POLICY_TARGET_UID 1
#define TASK_KILL_POLICY_PROTECTED 2

/* The protected field: why the target is watched. */
#define TASK_KILL_PROTECTED_NONE 0
#define TASK_KILL_PROTECTED_DAEMON 1
#define TASK_KILL_PROTECTED_LISTED 2

#define TASK_KILL_COMMS_SIZE 256

struct task_kill_comm_key {
    char comm[KRSID_COMM_LEN];
};
/* Filled by the loader from the comms option (see task_kill.yaml). */
BPF_HASH(task_kill_comms, struct task_kill_comm_key, __u8, TASK_KILL_COMMS_SIZE);

struct task_kill_event {
    KRSID_EVENT_HEADER
    __u32 sig;
    __u32 protected;
    __u32 target_pid;
    __u32 target_tgid;
    __u32 target_uid;
    __u32 pad0;
    char target_comm[KRSID_COMM_LEN];
};

LSM_PROBE(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)
{
    KRSID_HOOK_PROLOGUE();

    __u32 target_uid = p->real_cred->uid.val;
    __u64 daemon = krsid_option(KRSID_HOOK_ID, TASK_KILL_OPT_DAEMON_TGID);
    struct task_kill_comm_key key = {};
    bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), p->comm);
    __u32 protected = TASK_KILL_PROTECTED_NONE;
    if (krsid_task_is_process(p, daemon))
        protected = TASK_KILL_PROTECTED_DAEMON;
    else if (task_kill_comms.lookup(&key))
        protected = TASK_KILL_PROTECTED_LISTED;

    struct krsid_policy_input in = {};
    in.field[TASK_KILL_POLICY_SIG] = (__u32)sig;
    in.field[TASK_KILL_POLICY_TARGET_UID] = target_uid;
    in.field[TASK_KILL_POLICY_PROTECTED] = protected;
    struct krsid_decision d = krsid_decide(KRSID_HOOK_ID, &in);
    KRSID_DROP_IF_IGNORED(d);
    if (!d.rule) {
        if (sig <= 0 || krsid_task_is_process((struct task_struct *)bpf_get_current_task(), daemon))
            KRSID_RETURN_FILTERED();
        __u64 wanted = krsid_option(KRSID_HOOK_ID, TASK_KILL_OPT_SIGNALS);
        if (protected == TASK_KILL_PROTECTED_NONE && !(sig < 64 && ((wanted >> sig) & 1)))
            KRSID_RETURN_FILTERED();
    }

    struct task_kill_event *e = krsid_event_begin(KRSID_HOOK_ID, sizeof(struct task_kill_event), d.action);
    if (!e)
        KRSID_RETURN_DECISION(d.action);

    e->sig = (__u32)sig;
    e->protected = protected;
    e->target_pid = p->pid;
    e->target_tgid = p->tgid;
    e->target_uid = target_uid;
    e->pad0 = 0;
    __builtin_memcpy(e->target_comm, key.comm, sizeof(e->target_comm));

    KRSID_SUBMIT_AND_RETURN(e, d);
}
