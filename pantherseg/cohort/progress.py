"""Cohort progress: a bar over cases on a terminal, one log line per case elsewhere (Slurm, k8s logs)."""

from __future__ import annotations

import logging
import sys

from pantherseg.cohort.cases import Case
from pantherseg.cohort.report import CaseRow

log = logging.getLogger("pantherseg")


class CohortProgress:
    """Told when a case starts and ends; silent base class (also what tests pass for hooks)."""

    def start(self, total: int, skipped: int) -> None:
        pass

    def case_started(self, case: Case, worker: str | None) -> None:
        pass

    def case_finished(self, row: CaseRow) -> None:
        pass

    def case_retried(self, case: Case, worker: str | None, attempt: int, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


class LogCohortProgress(CohortProgress):
    def __init__(self):
        self.total = 0
        self.finished = 0

    def start(self, total: int, skipped: int) -> None:
        self.total = total
        log.info("cohort: %d case(s) to run, %d already done (skipped)", total, skipped)

    def case_finished(self, row: CaseRow) -> None:
        self.finished += 1
        detail = f"in {row.seconds:.1f} s" if row.status == "done" else row.error
        log.info("[%d/%d] %s: %s %s (%s)", self.finished, self.total, row.name, row.status, detail, row.worker)

    def case_retried(self, case: Case, worker: str | None, attempt: int, reason: str) -> None:
        log.warning("%s: worker %s died (%s); retrying (attempt %d)", case.name, worker, reason, attempt)


class BarCohortProgress(LogCohortProgress):
    """A tqdm bar: cases done / to run, with failures in the postfix (the worker logs each failure)."""

    def __init__(self):
        super().__init__()
        self._bar = None
        self._failed = 0

    def start(self, total: int, skipped: int) -> None:
        from tqdm import tqdm

        self.total = total
        self._bar = tqdm(total=total, desc=f"cohort ({skipped} skipped)", unit="case", file=sys.stderr)

    def case_finished(self, row: CaseRow) -> None:
        self.finished += 1
        if row.status != "done":  # the worker has logged the reason
            self._failed += 1
        if self._bar is not None:
            self._bar.set_postfix(failed=self._failed, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_cohort_progress(quiet: bool = False) -> CohortProgress:
    if quiet:
        return CohortProgress()
    return BarCohortProgress() if sys.stderr.isatty() else LogCohortProgress()
