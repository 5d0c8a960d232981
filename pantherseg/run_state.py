"""What this process has finished writing, so that an interruption message tells the truth.

A mask counts as completed once it and its report are both in place (``api._segment_one`` removes
the mask again if anything fails before that, SIGTERM included). ``cli.run_guarded`` reads this
when a run is interrupted: "no mask was written" only when that is so. A cohort's workers may be
other processes (Ray), so a cohort records its own report instead (``cohort.run``).
"""

from __future__ import annotations

from pathlib import Path

_completed: list[Path] = []
_cohort_summary: list[str] = []


def mark_completed(paths) -> None:
    _completed.extend(Path(p) for p in paths)


def completed_outputs() -> list[Path]:
    """Outputs completed by this process that still exist."""
    return [p for p in _completed if p.exists()]


def record_cohort(summary: str) -> None:
    """The cohort's state as its report was written (also when interrupted), for the interruption line."""
    _cohort_summary[:] = [summary]


def cohort_summary() -> str | None:
    return _cohort_summary[0] if _cohort_summary else None
