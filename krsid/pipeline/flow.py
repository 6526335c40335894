"""The event path, one record at a time: decode -> rule name -> enrich -> dispatch.

``EventPipeline.handle`` is what the transport calls for each raw record; every
stage it calls lies below it, and the event only goes down (to the sinks), never
back into the daemon. What it needs from the rest of krsid comes in at
construction: the decoder, the enricher and dispatcher, the stats it counts in,
and a ``rule_name`` callable (the live policy's lookup), so that a reload changes
the names without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable

from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.enrich import Enricher
from krsid.pipeline.stats import STAGE_DECODE, STAGE_PERFBUF, UNKNOWN_HOOK, PipelineStats

# (hook, rule number the program wrote: 1-based, 0 = no rule) -> the rule's name, "" if none.
RuleName = Callable[[str, int], str]


class EventPipeline:
    def __init__(
        self,
        decoder: EventDecoder,
        rule_name: RuleName,
        enricher: Enricher,
        dispatcher: Dispatcher,
        stats: PipelineStats,
    ) -> None:
        self.decoder = decoder
        self.rule_name = rule_name
        self.enricher = enricher
        self.dispatcher = dispatcher
        self.stats = stats

    def handle(self, raw: bytes) -> None:
        """One raw record from the event buffer, delivered to the sinks or counted as lost.

        Runs for every record the transport reads, inside bcc's C callback where
        libbpf reads the buffer: an exception there would be printed and lost, so every
        failure is caught and counted."""
        if self.dispatcher.shedding:  # every sink is full: count it, skip the work
            spec = self.decoder.hook_of(raw)
            self.dispatcher.shed(spec.name if spec else UNKNOWN_HOOK)
            return
        try:
            event = self.decoder.decode(raw)
        except Exception:  # DecodeError, or a decoder bug: count it, keep polling
            spec = self.decoder.hook_of(raw)
            self.stats.lost[(spec.name if spec else UNKNOWN_HOOK, STAGE_DECODE)] += 1
            return
        rule_no = event.values.get("rule")
        if type(rule_no) is int:  # 0: no rule (most events), named "" without a call
            event.values["rule"] = self.rule_name(event.hook, rule_no) if rule_no else ""
        try:
            self.enricher.enrich(event)
        except Exception:  # context is a bonus: deliver the event without it
            self.stats.enrich_errors += 1
        self.dispatcher.handle(event)

    def lane_handler(self, lane: str) -> Callable[[bytes], None]:
        """``handle`` for the records of one lane's buffer: counts what each lane delivers."""
        counts = self.stats.lane_records
        handle = self.handle

        def handle_lane_record(raw: bytes) -> None:
            counts[lane] += 1
            handle(raw)

        return handle_lane_record

    def lost(self, count: int) -> None:
        """Records the perf buffer reports lost (overwritten before they were read);
        the perf buffer does not say which hook wrote them."""
        self.stats.lost[(UNKNOWN_HOOK, STAGE_PERFBUF)] += count
