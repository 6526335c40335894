"""Fans each Event out to the sinks and accounts for every event a sink could not take.

Loss stages (the `stage` label of krsid_events_lost_total), per sink:
- ``queue_<sink>``: the sink's backlog was full (its destination is too slow or stalled);
- ``sink_<sink>``: the destination is down or a write failed.
Each is logged at most once per ``log_interval`` with the count since the last line,
and once more when the sink takes events again.

A sink may also report failures that lose no event by themselves (``take_errors``:
the JSON lines file could not be reopened after a rotation); each is counted in
krsid_sink_errors_total.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from krsid.event import Event
from krsid.pipeline.stats import PipelineStats, queue_stage, sink_stage
from krsid.sinks.base import BacklogFull, Sink, SinkUnavailable

FLUSH_EVERY = 1024  # events between sink writes while the poller is busy


class Dispatcher:
    def __init__(
        self,
        sinks: Sequence[Sink],
        stats: PipelineStats,
        *,
        log: Callable[[str], None] = print,
        log_interval: float = 60.0,
    ) -> None:
        self.sinks = list(sinks)
        self.stats = stats
        # The collector exports every sink's loss and error series from the start, at 0.
        stats.sink_names = [sink.name for sink in self.sinks]
        self._log = log
        self._log_interval = log_interval
        self._last_logged: dict[str, float] = {}
        self._overflow: dict[str, list[int]] = {}  # sink -> [dropped this episode, not yet reported]
        self._since_flush = 0
        self._backlog_peak = 0  # most bytes the sinks held at a flush since they were last empty
        # Every sink refused the last event for a full backlog, and none has written
        # since: the pipeline drops records before decoding them (see shed).
        self.shedding = False

    def _count(self, hook: str) -> None:
        """One more event of hook reached the sinks' side (delivered, shed or refused)."""
        self.stats.events[hook] += 1
        # Under sustained load the ring-buffer poll call does not return between
        # records, so the sinks are also written every FLUSH_EVERY events.
        self._since_flush += 1
        if self._since_flush >= FLUSH_EVERY:
            self.flush()

    def _refused(self, hook: str, sink: Sink) -> None:
        """The sink's backlog was full: counted at its queue stage, logged rate-limited."""
        self.stats.lost[(hook, queue_stage(sink.name))] += 1
        self._report_overflow(sink)

    def handle(self, event: Event) -> None:
        self._count(event.hook)
        refused = 0
        for sink in self.sinks:
            try:
                sink.emit(event)
            except BacklogFull:
                self._refused(event.hook, sink)
                refused += 1
            except SinkUnavailable:
                # The sink logs its own up/down transitions; here it is only counted.
                self.stats.lost[(event.hook, sink_stage(sink.name))] += 1
            except Exception as e:  # a sink bug must not stop the others or the poller
                self.stats.lost[(event.hook, sink_stage(sink.name))] += 1
                self.stats.sink_errors[sink.name] += 1
                self._rate_limited_log(sink.name, f"sink {sink.name} failed: {type(e).__name__}: {e}")
        if refused and refused == len(self.sinks):
            self.shedding = True

    def shed(self, hook: str) -> None:
        """A record of hook that every sink would refuse (``shedding``): counted lost at
        each sink's queue stage, exactly as handle() would, without being decoded,
        enriched or encoded. Under overload a dropped event so costs ~1 µs, not the
        ~8 µs of decoding and enriching it (issue 16: more load must not deliver less)."""
        self._count(hook)
        for sink in self.sinks:
            self._refused(hook, sink)

    def _report_overflow(self, sink: Sink) -> None:
        episode = self._overflow.get(sink.name)
        metric = f'krsid_events_lost_total{{stage="{queue_stage(sink.name)}"}}'
        if episode is None:
            self._overflow[sink.name] = [1, 0]
            self._last_logged[f"{sink.name}/queue"] = time.monotonic()
            self._log(f"sink {sink.name} is behind: its backlog is full; dropping new events (counted in {metric})")
            return
        episode[0] += 1
        episode[1] += 1
        if self._rate_limited_log(
            f"{sink.name}/queue", f"sink {sink.name} still behind: {episode[1]} more event(s) dropped"
        ):
            episode[1] = 0

    def flush(self) -> None:
        """Write what the sinks can take now, without blocking; count what they gave up."""
        self._since_flush = 0
        held = 0
        full = 0
        for sink in self.sinks:
            try:
                lost = sink.flush()
            except Exception as e:
                self.stats.sink_errors[sink.name] += 1
                self._rate_limited_log(sink.name, f"sink {sink.name} flush failed: {type(e).__name__}: {e}")
                continue
            self._count_given_up(sink, lost)
            self._count_errors(sink)
            backlog = getattr(sink, "backlog", None)
            if backlog is not None:
                self.stats.backlog[sink.name] = (len(backlog), backlog.size)
                held += backlog.size
                full += backlog.full()
            if sink.name in self._overflow and not sink.pending():
                dropped = self._overflow.pop(sink.name)[0]
                self._log(f"sink {sink.name} caught up; {dropped} event(s) were dropped while it was behind")
        self._backlog_peak = max(self._backlog_peak, held)
        self.shedding = self.shedding and full == len(self.sinks)

    def reopen(self) -> None:
        """Log rotation: sinks writing to a file reopen it at their next flush."""
        for sink in self.sinks:
            reopen = getattr(sink, "reopen", None)
            if reopen is not None:
                reopen()

    def _count_errors(self, sink: Sink) -> None:
        take_errors = getattr(sink, "take_errors", None)
        if take_errors is None:
            return
        for message in take_errors():
            self.stats.sink_errors[sink.name] += 1
            self._rate_limited_log(f"{sink.name}/error", f"sink {sink.name}: {message}")

    def take_drained_peak(self) -> int:
        """Once every sink is empty: the most bytes they held (seen at a flush) since
        they were last empty, and 0 from then on until they hold something again.

        The daemon returns the heap to the kernel after a large backlog drained: the
        freed entries would otherwise stay resident in malloc's arenas (measured: a
        full 16 MiB backlog left ~22 MB of anonymous memory behind).
        """
        if self.pending():
            return 0
        peak, self._backlog_peak = self._backlog_peak, 0
        return peak

    def _count_given_up(self, sink: Sink, lost: Counter[str]) -> None:
        if not lost:
            return
        stage = sink_stage(sink.name)
        for hook, n in lost.items():
            self.stats.lost[(hook, stage)] += n
        self.stats.sink_errors[sink.name] += sum(lost.values())
        reason = getattr(sink, "last_error", "")
        self._rate_limited_log(
            sink.name,
            f"sink {sink.name}: {sum(lost.values())} event(s) could not be written" + (f": {reason}" if reason else ""),
        )

    def pending(self) -> int:
        return sum(sink.pending() for sink in self.sinks)

    def blocked_sinks(self) -> tuple[list[int], bool]:
        """fds of sinks holding entries, to poll for POLLOUT; and whether some sink
        holds entries but has no fd (then the caller retries on a short timer)."""
        fds, timer = [], False
        for sink in self.sinks:
            if sink.pending():
                fd = sink.wait_fd()
                if fd >= 0:
                    fds.append(fd)
                else:
                    timer = True
        return fds, timer

    def close(self) -> None:
        for sink in self.sinks:
            try:
                self._count_given_up(sink, sink.close())
            except Exception as e:
                self._log(f"sink {sink.name} close failed: {e}")

    def _rate_limited_log(self, key: str, message: str) -> bool:
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= self._log_interval:
            self._last_logged[key] = now
            self._log(message)
            return True
        return False
