"""The VM tests' delivery-order check (tests/support/order.py)."""

from __future__ import annotations

from tests.support.order import LATE_SEQS_PER_OTHER_CPU, lane_order_violations


def test_one_cpu_allows_no_record_out_of_order() -> None:
    assert lane_order_violations([1, 2, 5, 9], cpus=1) == []
    assert lane_order_violations([1, 3, 2, 4], cpus=1) == [(2, 3)]


def test_more_cpus_allow_a_record_made_at_the_same_moment_to_arrive_second() -> None:
    assert lane_order_violations([1686, 1688, 1687, 1689], cpus=2) == []
    assert lane_order_violations([10, 10 + LATE_SEQS_PER_OTHER_CPU, 10 + 1], cpus=2) == []


def test_more_cpus_still_catch_a_record_delivered_far_too_late() -> None:
    late = [1, 2, 3 + LATE_SEQS_PER_OTHER_CPU + 1, 3]
    assert lane_order_violations(late, cpus=2) == [(3, 3 + LATE_SEQS_PER_OTHER_CPU + 1)]
    assert lane_order_violations(late, cpus=3) == []
    assert lane_order_violations([100, 1], cpus=4) == [(1, 100)]
