"""Fans each Event out to the sinks. A failing sink is counted and logged, never fatal."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from krsid.pipeline.decode import Event
from krsid.pipeline.stats import PipelineStats, sink_stage
from krsid.sinks.base import Sink, SinkUnavailable


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
        self._log = log
        self._log_interval = log_interval
        self._last_logged: dict[str, float] = {}

    def handle(self, event: Event) -> None:
        self.stats.events[event.hook] += 1
        for sink in self.sinks:
            try:
                sink.emit(event)
            except SinkUnavailable:
                # The sink logs its own up/down transitions; here it is only counted.
                self.stats.lost[(event.hook, sink_stage(sink.name))] += 1
            except Exception as e:  # a sink bug must not stop the others or the poller
                self.stats.lost[(event.hook, sink_stage(sink.name))] += 1
                self.stats.sink_errors[sink.name] += 1
                self._rate_limited_log(sink.name, f"sink {sink.name} failed: {type(e).__name__}: {e}")

    def flush(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as e:
                self.stats.sink_errors[sink.name] += 1
                self._rate_limited_log(sink.name, f"sink {sink.name} flush failed: {e}")

    def close(self) -> None:
        self.flush()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                self._log(f"sink {sink.name} close failed: {e}")

    def _rate_limited_log(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= self._log_interval:
            self._last_logged[key] = now
            self._log(message)
