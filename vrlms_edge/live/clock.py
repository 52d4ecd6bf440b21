"""The one server clock: wall-clock milliseconds anchored once, advanced by the monotonic clock.

An NTP step of the box's wall clock after start-up never moves a lesson: all `*_ms` times
(anchors, time replies, acks) come from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


class ServerClock:
    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._anchor_mono = monotonic()
        self._anchor_wall_ms = wall() * 1000.0

    def now_ms(self) -> int:
        return int(self._anchor_wall_ms + (self._monotonic() - self._anchor_mono) * 1000.0)

    def now_ms_float(self) -> float:
        return self._anchor_wall_ms + (self._monotonic() - self._anchor_mono) * 1000.0

    def now(self) -> datetime:
        return self.datetime_at(self.now_ms())

    def datetime_at(self, ms: int) -> datetime:
        """A server time in ms (`now_ms`) as an aware UTC datetime."""
        return datetime.fromtimestamp(ms / 1000.0, UTC)

    def monotonic(self) -> float:
        return self._monotonic()
