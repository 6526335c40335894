"""Fixtures the host tier shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.journald import Journal, private_journald, unavailable_reason


@pytest.fixture(scope="module")
def journal() -> Iterator[Journal]:
    """A private systemd-journald for the module's tests (skips, with the reason, without one)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with private_journald() as j:
        yield j
