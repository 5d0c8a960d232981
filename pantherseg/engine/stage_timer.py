"""Seconds per stage of a case (read, preprocess, network, export, ensemble, write), added up."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class StageTimer:
    """``with timer.stage("export"): ...`` adds the block's seconds to ``timer.seconds["export"]``.

    ``seconds`` may be a dict the caller owns (a prediction's ``timings_s``); a stage that raises still
    counts the time it took."""

    def __init__(self, seconds: dict[str, float] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.seconds = seconds if seconds is not None else {}
        self.clock = clock

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - started

    def add(self, name: str, seconds: float) -> None:
        """Seconds measured elsewhere (a member's network time, on the deadline's clock)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
