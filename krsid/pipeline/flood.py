"""Flood summaries the daemon writes: the last period of a flood that went quiet.

The kernel folds the calls over a process's or a uid's fair share (krsid.h:
krsid_fair_share_admit) and writes a summary record from the flooding key's next
call once the summary period is over. A flood that stops leaves its last period
pending: nothing calls the hook for that key any more. ``FloodSweeper`` finds those
(pending calls, a period over twice), turns each into the same record the kernel
would have written (struct krsid_flood_event, origin "daemon", seq 0: the kernel's
sequence cannot be taken from user space without racing it), hands it to the event
pipeline like any record, and deletes the key's state. At stop it writes every
pending summary, so a flood's count is never left unsaid.

Counts add up: per hook, the folded counts of all summaries equal the kernel's
suppressed_flood counter, except for calls folded between the sweep's read and its
delete of a key quiet for a whole period (a flood restarting within microseconds).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from krsid.catalog import HookSpec
from krsid.catalog.contract import Contract

UNKNOWN_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class FloodState:
    """One key's pending folded calls, as read from krsid_flood_procs / krsid_flood_uids."""

    scope: str  # "process" or "uid" (contract.flood_scopes)
    hook_id: int
    key_id: int  # tgid or uid
    pending: int
    first_ns: int  # CLOCK_BOOTTIME of the first folded call
    last_ns: int
    pid: int  # of the first folded call
    tgid: int
    uid: int
    comm: bytes


class FloodStates(Protocol):
    """What the loader offers the sweeper (pipeline.load.LoadedPrograms)."""

    def flood_states(self) -> list[FloodState]: ...

    def forget_flood_state(self, state: FloodState) -> None: ...


def boot_ns() -> int:
    """Now on the kernel's bpf_ktime_get_boot_ns() clock."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class FloodSweeper:
    def __init__(
        self,
        states: FloodStates,
        spec: HookSpec,
        hook_id: int,
        contract: Contract,
        handle: Callable[[bytes], None],
        summary_ns: int,
        hook_names: Mapping[int, str],
        written: Counter[str],
        *,
        clock: Callable[[], int] = boot_ns,
    ) -> None:
        """spec: the flood event type (catalog.flood), hook_id: the id its records carry
        (KRSID_FLOOD_HOOK_ID: one past the module's last hook); handle: the pipeline's
        record handler; written: flooded hook -> summaries written here (PipelineStats)."""
        self._states = states
        self._spec = spec
        self._hook_id = hook_id
        self._scopes = {name: value for value, name in contract.flood_scopes.items()}
        self._daemon_origin = next(v for v, name in contract.flood_origins.items() if name == "daemon")
        self._handle = handle
        self.summary_ns = summary_ns
        self._clock = clock
        self._hook_names = hook_names
        self.written = written

    def sweep(self, *, everything: bool = False) -> int:
        """Write the summaries of keys quiet for a whole period (all of them at stop);
        returns how many were written."""
        now = self._clock()
        # first_ns is 0 for a moment while the kernel writes a summary (it takes the count
        # first): a count folded then is dated by its last fold.
        due = [s for s in self._states.flood_states() if everything or now - _start(s) >= 2 * self.summary_ns]
        for state in due:
            self._states.forget_flood_state(state)
            self._handle(self.record(state))
            self.written[self._hook_names.get(state.hook_id, f"unknown-{state.hook_id}")] += 1
        return len(due)

    def record(self, state: FloodState) -> bytes:
        """The struct krsid_flood_event the kernel would have written for this state."""
        values: dict[str, object] = {m.name: 0 for m in self._spec.layout.members}
        # What the state does not keep is unknown: ids read as unset (-1 as u32, like
        # auid's), ppid and cgroup_id as 0.
        values.update(gid=UNKNOWN_ID, euid=UNKNOWN_ID, auid=UNKNOWN_ID, sessionid=UNKNOWN_ID)
        values.update(
            hook_id=self._hook_id,
            ktime_ns=state.last_ns,
            pid=state.pid,
            tgid=state.tgid,
            uid=state.uid,
            action=1,  # audit: a summary records, it never decides
            folded=state.pending,
            first_ns=_start(state),
            # A fold on another CPU writes first_ns before its last time (krsid.h,
            # krsid_flood_summarize): the map may hold the new first and the old last.
            last_ns=max(state.last_ns, _start(state)),
            flooded_hook=state.hook_id,
            scope=self._scopes[state.scope],
            flood_tgid=state.tgid,
            flood_uid=state.uid,
            origin=self._daemon_origin,
            comm=state.comm,
            flood_comm=state.comm,
            tty=b"",
        )
        packed: Sequence[object] = [values[m.name] for m in self._spec.layout.members]
        return self._spec.layout.unpacker.pack(*packed)


def _start(state: FloodState) -> int:
    return state.first_ns or state.last_ns
