"""The per-case time budget: decide which members can still run, and when to stop one.

Grand-challenge kills a case at its time limit and then there is no mask at all, which scores
like an empty prediction. So members run in the configured priority order, and before and while
each one runs the engine projects its finish time from measured tile times; a member that would
finish past ``budget - reserve`` is skipped (or stopped), and the mean is taken over the members
that finished. The reserve covers ensembling, export and writing the mask.

The clock is injectable so the policy is tested without sleeping.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Clock = Callable[[], float]


def seconds_since_process_start(
    stat: Path | str = "/proc/self/stat", uptime: Path | str = "/proc/uptime", ticks_per_second: int | None = None
) -> float:
    """How long this process has existed (Linux /proc), so the budget includes interpreter start-up.

    ``stat``: the process's stat line (field 22, after the command in parentheses, which may hold spaces and
    ')', is its start in clock ticks after boot); ``uptime``: seconds since boot. 0.0 where /proc is not
    there or says something else (then the budget counts from the call)."""
    try:
        with open(stat, encoding="ascii") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open(uptime, encoding="ascii") as handle:
            seconds_up = float(handle.read().split()[0])
        ticks = ticks_per_second or os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, seconds_up - start_ticks / ticks)


@dataclass
class Deadline:
    """``budget_s`` seconds from ``started_at`` (on ``clock``), of which ``reserve_s`` is kept for export."""

    budget_s: float
    reserve_s: float
    clock: Clock = time.monotonic
    started_at: float = field(default=None)

    def __post_init__(self):
        if self.started_at is None:
            self.started_at = self.clock() - seconds_since_process_start()

    @classmethod
    def unlimited(cls, clock: Clock = time.monotonic) -> "Deadline":
        return cls(budget_s=float("inf"), reserve_s=0.0, clock=clock)

    def elapsed(self) -> float:
        return self.clock() - self.started_at

    def remaining_for_members(self) -> float:
        """Seconds left for network work before the export reserve starts."""
        return self.budget_s - self.reserve_s - self.elapsed()


class TileCostModel:
    """Seconds per tile, learned from the tiles already run.

    Members with the same patch size and architecture cost the same per tile; for a member with
    nothing measured yet, the cost is scaled from the measured ones by patch volume, which is what
    dominates convolution cost for networks of one family.
    """

    def __init__(self):
        self._seconds_per_tile: dict[str, float] = {}
        self._voxels: dict[str, int] = {}

    def record(self, key: str, patch_voxels: int, tiles: int, seconds: float) -> None:
        if tiles > 0:
            self._seconds_per_tile[key] = seconds / tiles
            self._voxels[key] = patch_voxels

    def estimate(self, key: str, patch_voxels: int) -> float | None:
        """Seconds per tile for ``key``, or None while nothing at all has been measured."""
        if key in self._seconds_per_tile:
            return self._seconds_per_tile[key]
        if not self._seconds_per_tile:
            return None
        per_voxel = max(s / self._voxels[k] for k, s in self._seconds_per_tile.items())
        return per_voxel * patch_voxels
