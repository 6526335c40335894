"""A bounded answer cache that is called as a C function.

Event values repeat endlessly: a process's comm and exe, the flag sets of one
hook, the same errno. ``Memo(render)`` is a dict of render's answers, and
``Memo(render).__getitem__`` is what the hot paths call: a value seen before is
answered by the dict's C lookup, with no Python frame (~0.1 µs less than calling
a memoizing Python function, per field of every event; issue 16). Bounded: it is
emptied when full, so hostile values cannot grow it without limit, and values
that repeat are back after a few events.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_SIZE = 4096


class Memo(dict, Generic[K, V]):  # type: ignore[type-arg]
    __slots__ = ("_render", "_size")

    def __init__(self, render: Callable[[K], V], size: int = DEFAULT_SIZE) -> None:
        super().__init__()
        self._render = render
        self._size = size

    def __missing__(self, key: K) -> V:
        value = self._render(key)  # may raise: nothing is stored then
        if len(self) >= self._size:
            self.clear()
        self[key] = value
        return value
