"""Flood summaries the daemon writes (krsid/pipeline/flood.py) and the fair_share config."""

from __future__ import annotations

from collections import Counter

import pytest

from krsid.catalog import load_catalog
from krsid.config import FairShareConfig, parse_config
from krsid.errors import ConfigError
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.flood import FloodState, FloodSweeper
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)
HOOKS = "hooks: {file_mprotect: {}}\n"
PERIOD = 1_000_000_000
FLOOD_ID = 7  # one past the module's last hook


class States:
    def __init__(self, states: list[FloodState]) -> None:
        self.states = list(states)
        self.forgotten: list[FloodState] = []

    def flood_states(self) -> list[FloodState]:
        return list(self.states)

    def forget_flood_state(self, state: FloodState) -> None:
        self.states.remove(state)
        self.forgotten.append(state)


def state(first_ns: int, *, pending: int = 5, scope: str = "uid", hook_id: int = 2) -> FloodState:
    return FloodState(
        scope=scope,
        hook_id=hook_id,
        key_id=65534,
        pending=pending,
        first_ns=first_ns,
        last_ns=first_ns + 10,
        pid=4321,
        tgid=4320,
        uid=65534,
        comm=b"flooder",
    )


def sweeper(states: States, records: list[bytes], now: int, written: Counter[str]) -> FloodSweeper:
    assert CATALOG.flood is not None
    return FloodSweeper(
        states,
        CATALOG.flood,
        FLOOD_ID,
        CATALOG.contract,
        records.append,
        PERIOD,
        {2: "file_mprotect"},
        written,
        clock=lambda: now,
    )


def test_only_floods_quiet_for_two_periods_are_written_and_then_forgotten() -> None:
    now = 100 * PERIOD
    quiet, busy = state(now - 2 * PERIOD), state(now - PERIOD // 2, hook_id=3)
    states, written = States([quiet, busy]), Counter[str]()
    records: list[bytes] = []
    assert sweeper(states, records, now, written).sweep() == 1
    assert states.forgotten == [quiet] and states.states == [busy]
    assert written == Counter({"file_mprotect": 1})
    assert len(records) == 1


def test_at_stop_every_pending_flood_is_written() -> None:
    now = 100 * PERIOD
    states = States([state(now), state(now - 1, scope="process")])
    records: list[bytes] = []
    assert sweeper(states, records, now, Counter()).sweep(everything=True) == 2
    assert states.states == []


def test_a_daemon_summary_decodes_like_the_kernels() -> None:
    """The record the daemon builds is struct krsid_flood_event: the decoder reads it
    with the flood event type's layout, names the hook, and says who wrote it."""
    now = 100 * PERIOD
    records: list[bytes] = []
    sweeper(States([state(now - 3 * PERIOD, pending=1234)]), records, now, Counter()).sweep()
    assert CATALOG.flood is not None
    decoder = EventDecoder({2: CATALOG["file_mprotect"], FLOOD_ID: CATALOG.flood}, boot_to_epoch=0.0)
    event = decoder.decode(records[0])
    v = event.values
    assert event.hook == "flood" and event.seq == 0
    assert (v["flooded_hook"], v["folded"], v["scope"], v["origin"]) == ("file_mprotect", 1234, "uid", "daemon")
    assert (v["flood_uid"], v["flood_tgid"], v["flood_comm"], v["comm"]) == (65534, 4320, b"flooder", b"flooder")
    assert v["first_ns"] == now - 3 * PERIOD and v["last_ns"] == now - 3 * PERIOD + 10
    assert v["auid"] == 0xFFFFFFFF  # not kept: unset, never a false "root login"


def test_a_count_caught_while_the_kernel_wrote_its_summary_is_dated_by_its_last_fold() -> None:
    """The kernel takes the count, then clears first_ns: a fold in between leaves a count
    with first_ns 0. It must not read as a flood from boot (due at once, dated 0)."""
    now = 100 * PERIOD
    racing = FloodState("uid", 2, 1, 3, 0, now - PERIOD // 2, 1, 1, 1, b"x")
    states = States([racing])
    assert sweeper(states, [], now, Counter()).sweep() == 0
    old = FloodState("uid", 2, 1, 3, 0, now - 3 * PERIOD, 1, 1, 1, b"x")
    records: list[bytes] = []
    assert sweeper(States([old]), records, now, Counter()).sweep() == 1


def test_fair_share_is_on_by_default_and_every_key_is_checked() -> None:
    config = parse_config(HOOKS, "t.yaml", catalog=CATALOG)
    assert config.fair_share == FairShareConfig() and config.fair_share.enabled
    off = parse_config(
        HOOKS + "fair_share: {priority: {process_rate: 0, uid_rate: 0}, bulk: {process_rate: 0, uid_rate: 0}}",
        "t.yaml",
        catalog=CATALOG,
    )
    assert not off.fair_share.enabled
    priority_off = "fair_share: {priority: {process_rate: 0, uid_rate: 0}}"
    bulk_only = parse_config(HOOKS + priority_off, "t.yaml", catalog=CATALOG)
    assert bulk_only.fair_share.enabled and bulk_only.fair_share.bulk == FairShareConfig().bulk


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("fair_share: {bulk: {process_rate: -1}}", "fair_share.bulk.process_rate"),
        ("fair_share: {priority: {uid_rate: lots}}", "fair_share.priority.uid_rate"),
        ("fair_share: {priority: {per_user: 5}}", "per_user"),
        ("fair_share: {process_rate: 5}", "process_rate"),
        ("fair_share: {bulk: {process_burst: 0}}", "process_burst"),
        ("fair_share: {summary_interval_ms: 10}", "summary_interval_ms"),
        ("fair_share: [1]", "fair_share"),
        ("buffer: {priority_pages: 8}", "priority_pages"),
        ("buffer: {priority_pages: 48}", "power of two"),
    ],
)
def test_bad_fair_share_and_lane_settings_are_clear_errors(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_config(HOOKS + text, "t.yaml", catalog=CATALOG)


def test_a_first_fold_seen_before_its_time_is_written_never_ends_before_it_starts() -> None:
    """A fold on another CPU writes first_ns, then last_folded_ns: the map can hold the
    new first and the previous period's last. The summary's last_ns is then its first."""
    now = 100 * PERIOD
    torn = FloodState("uid", 2, 1, 3, now - 3 * PERIOD, now - 5 * PERIOD, 1, 1, 1, b"x")
    records: list[bytes] = []
    assert sweeper(States([torn]), records, now, Counter()).sweep() == 1
    assert CATALOG.flood is not None
    decoder = EventDecoder({2: CATALOG["file_mprotect"], FLOOD_ID: CATALOG.flood}, boot_to_epoch=0.0)
    v = decoder.decode(records[0]).values
    assert (v["first_ns"], v["last_ns"]) == (now - 3 * PERIOD, now - 3 * PERIOD)
