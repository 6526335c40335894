"""The event path stage (pipeline.flow.EventPipeline): decode -> rule name -> enrich ->
dispatch, each failure counted at its stage and never raised into bcc's callback."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from krsid.event import Event
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.enrich import Enricher
from krsid.pipeline.flow import EventPipeline
from krsid.pipeline.stats import STAGE_DECODE, STAGE_PERFBUF, PipelineStats
from tests.support.records import catalog, pack
from tests.support.sinks import CollectingSink

CAT = catalog()
MPROT = CAT["file_mprotect"]
RULES = {("file_mprotect", 2): "no-wx"}


class BrokenEnricher(Enricher):
    """/proc or /sys/fs/cgroup misbehaving in a way the enricher does not expect."""

    def enrich(self, event: Event) -> None:
        raise PermissionError(13, "Permission denied", "/proc/1/exe")


class BrokenDecoder(EventDecoder):
    """A decoder bug: something other than DecodeError escapes decode()."""

    def decode(self, raw: bytes) -> Event:
        raise IndexError("tuple index out of range")


def make(
    *, enricher: Enricher | None = None, decoder: EventDecoder | None = None
) -> tuple[EventPipeline, CollectingSink, PipelineStats, list[tuple[str, int]]]:
    stats = PipelineStats()
    sink = CollectingSink()
    asked: list[tuple[str, int]] = []

    def rule_name(hook: str, rule_no: int) -> str:
        asked.append((hook, rule_no))
        return RULES.get((hook, rule_no), "")

    pipeline = EventPipeline(
        decoder or EventDecoder({0: MPROT}, boot_to_epoch=0.0),
        rule_name,
        enricher or Enricher(),
        Dispatcher([sink], stats, log=lambda _m: None),
        stats,
    )
    return pipeline, sink, stats, asked


def record(**values: object) -> bytes:
    return pack(MPROT, 0, seq=9, tgid=os.getpid(), pid=os.getpid(), **values)


def own_start_ns() -> int:
    """This process's start time as the kernel header carries it (the enricher checks it against /proc)."""
    from krsid.identity.ids import BootClock
    from krsid.identity.procfs import parse_stat

    parsed = parse_stat(Path("/proc/self/stat").read_bytes())
    assert parsed is not None
    return parsed[1] * BootClock(boot_id="").ns_per_tick


def test_a_record_goes_down_decoded_named_and_enriched() -> None:
    pipeline, sink, stats, asked = make()
    pipeline.handle(record(rule=2, start_ns=own_start_ns()))
    (event,) = sink.events
    assert event.hook == "file_mprotect" and event.seq == 9
    assert event.values["rule"] == "no-wx" and asked == [("file_mprotect", 2)]
    assert event.values["exe"] == os.readlink("/proc/self/exe").encode()  # enriched before dispatch
    assert stats.events == Counter({"file_mprotect": 1}) and not stats.lost and stats.enrich_errors == 0


def test_a_rule_number_without_a_rule_becomes_an_empty_name() -> None:
    pipeline, sink, _stats, asked = make()
    pipeline.handle(record(rule=0))  # 0: no rule, named without asking the policy
    pipeline.handle(record(rule=9))  # past the policy's rules: the policy says ""
    assert [e.values["rule"] for e in sink.events] == ["", ""] and asked == [("file_mprotect", 9)]


@pytest.mark.parametrize(
    ("raw", "hook"),
    [
        pytest.param(pack(MPROT, 0)[:-1], "file_mprotect", id="short-record-of-a-known-hook"),
        pytest.param(pack(MPROT, 7), "unknown", id="unknown-hook-id"),
        pytest.param(b"\0" * 8, "unknown", id="shorter-than-the-header"),
    ],
)
def test_a_record_that_does_not_decode_is_counted_at_decode_per_hook(raw: bytes, hook: str) -> None:
    pipeline, sink, stats, asked = make()
    pipeline.handle(raw)  # must not raise: it runs inside bcc's C callback
    assert stats.lost == Counter({(hook, STAGE_DECODE): 1})
    assert sink.events == [] and asked == [] and not stats.events


def test_a_decoder_bug_is_counted_at_decode_not_raised() -> None:
    pipeline, sink, stats, _asked = make(decoder=BrokenDecoder({0: MPROT}, boot_to_epoch=0.0))
    pipeline.handle(record())
    assert stats.lost == Counter({("file_mprotect", STAGE_DECODE): 1}) and sink.events == []


def test_an_enrich_error_is_counted_and_the_event_still_delivered() -> None:
    pipeline, sink, stats, _asked = make(enricher=BrokenEnricher())
    pipeline.handle(record(rule=2))
    pipeline.handle(record(rule=2))
    assert stats.enrich_errors == 2
    assert [e.values["rule"] for e in sink.events] == ["no-wx", "no-wx"]  # named, delivered
    assert all("exe" not in e.values for e in sink.events)
    assert stats.events == Counter({"file_mprotect": 2}) and not stats.lost


def test_perf_buffer_losses_are_counted_without_a_hook() -> None:
    pipeline, _sink, stats, _asked = make()
    pipeline.lost(5)
    pipeline.lost(2)
    assert stats.lost == Counter({("unknown", STAGE_PERFBUF): 7})


class CountingDecoder(EventDecoder):
    def __init__(self) -> None:
        super().__init__({0: MPROT}, boot_to_epoch=0.0)
        self.decoded = 0

    def decode(self, raw: bytes) -> Event:
        self.decoded += 1
        return super().decode(raw)


def test_when_every_sink_is_full_records_are_dropped_before_decoding(tmp_path: Path) -> None:
    """Overload sheds at the cheapest point (issue 16): once every sink refused an event
    for a full backlog, later records are counted lost at the same queue stages without
    being decoded, until a flush finds room again."""
    from krsid.sinks.journald import JournaldSink
    from tests.unit.test_sinks import StallingSender

    sock = tmp_path / "socket"
    sock.touch()
    sender = StallingSender()
    journald = JournaldSink(sender, socket_path=sock, backlog_bytes=1)  # one entry fills it
    stats = PipelineStats()
    decoder = CountingDecoder()
    dispatcher = Dispatcher([journald], stats, log=lambda _m: None)
    pipeline = EventPipeline(decoder, lambda _h, _n: "", Enricher(seed=False), dispatcher, stats)
    record = pack(MPROT, 0, seq=1, pid=os.getpid(), tgid=os.getpid(), comm="t")
    for _ in range(5):
        pipeline.handle(record)
    assert decoder.decoded == 2  # one queued, one refused: the rest were shed undecoded
    assert stats.events["file_mprotect"] == 5
    assert stats.lost[("file_mprotect", "queue_journald")] == 4
    dispatcher.flush()  # still stalled: still full, still shedding
    pipeline.handle(record)
    assert decoder.decoded == 2 and stats.lost[("file_mprotect", "queue_journald")] == 5
    sender.stalled = False
    dispatcher.flush()  # room again: records are decoded and delivered
    pipeline.handle(record)
    dispatcher.flush()
    assert decoder.decoded == 3 and len(sender.entries) == 2
    assert stats.lost[("file_mprotect", "queue_journald")] == 5


def test_a_sink_with_room_keeps_every_record_decoded(tmp_path: Path) -> None:
    """Shedding needs every sink full: one full sink next to one with room changes nothing."""
    from krsid.sinks.journald import JournaldSink
    from tests.unit.test_sinks import StallingSender

    sock = tmp_path / "socket"
    sock.touch()
    stats = PipelineStats()
    decoder = CountingDecoder()
    collecting = CollectingSink()
    full = JournaldSink(StallingSender(), socket_path=sock, backlog_bytes=1)
    dispatcher = Dispatcher([full, collecting], stats, log=lambda _m: None)
    pipeline = EventPipeline(decoder, lambda _h, _n: "", Enricher(seed=False), dispatcher, stats)
    record = pack(MPROT, 0, seq=1, pid=os.getpid(), tgid=os.getpid(), comm="t")
    for _ in range(4):
        pipeline.handle(record)
    assert decoder.decoded == 4 and len(collecting.events) == 4
    assert stats.lost[("file_mprotect", "queue_journald")] == 3
