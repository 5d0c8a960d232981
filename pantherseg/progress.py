"""Progress for people: bars on a terminal, plain log lines elsewhere (container, CI, pipes)."""

from __future__ import annotations

import logging
import sys

from pantherseg.engine.ensemble import MemberOutcome, ProgressListener

log = logging.getLogger("pantherseg")


class LogProgress(ProgressListener):
    """One line when a member starts and one when it ends: readable in grand-challenge's log."""

    def member_started(self, name: str, tiles_total: int) -> None:
        log.info("member %s: %d tiles", name, tiles_total)

    def member_finished(self, outcome: MemberOutcome) -> None:
        detail = f" ({outcome.reason})" if outcome.reason else ""
        log.info(
            "member %s: %s, %d/%d tiles in %.1f s%s",
            outcome.name,
            outcome.status,
            outcome.tiles_done,
            outcome.tiles_total,
            outcome.network_s,
            detail,
        )


class BarProgress(ProgressListener):
    """A tqdm bar per member."""

    def __init__(self):
        self._bar = None

    def member_started(self, name: str, tiles_total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=tiles_total, desc=name, unit="tile", leave=False, file=sys.stderr)

    def tiles_done(self, name: str, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def member_finished(self, outcome: MemberOutcome) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        LogProgress().member_finished(outcome)


def make_progress(quiet: bool = False) -> ProgressListener:
    if quiet:
        return ProgressListener()
    return BarProgress() if sys.stderr.isatty() else LogProgress()
