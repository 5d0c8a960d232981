"""One cohort worker: loads the ensemble once, then turns case after case into a report row.

The same class runs in this process (local_runner.py) and as a Ray actor (ray_runner.py). A bad
case never raises out of :meth:`CaseWorker.process`: it becomes an ``error`` row with a one-line
reason and the worker goes on with the next case. Only a failure to load the ensemble (bad config
or model) stops the cohort, because then no case can succeed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from pantherseg.cohort.cases import Case
from pantherseg.cohort.report import CaseRow
from pantherseg.errors import PantherError
from pantherseg.options import RunOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortSettings:
    """Everything a worker needs, picklable (it travels to Ray actors on other machines): the run's options
    carried whole (their config parsed, their weights absolute; ``report_dir`` is the output folder unless
    reports are off), the output folder and the run hash the reports carry."""

    options: RunOptions
    output_dir: str
    run_hash: str
    log_level: int | None = None  # set in worker processes that do not inherit the driver's logging


def raise_load_error(error: list[str] | tuple[str, str]) -> None:
    """Raise a worker's load failure in the driver as the same PantherError type (same exit code)."""
    from pantherseg import errors

    kind_name, message = error
    kind = getattr(errors, kind_name, None)
    if not (isinstance(kind, type) and issubclass(kind, PantherError)):
        kind = PantherError
    raise kind(message)


class CaseWorker:
    """Holds a loaded ensemble; :meth:`process` segments one case and returns its row."""

    def __init__(self, settings: CohortSettings):
        if settings.log_level is not None:
            logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
            logging.getLogger("pantherseg").setLevel(settings.log_level)
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.ensemble = None
        self.load_error: tuple[str, str] | None = None  # (error class name, message)
        try:
            self._load()
        except PantherError as error:
            # Kept, not raised: the driver asks ready() and stops the cohort with this one line.
            self.load_error = (type(error).__name__, str(error))

    def _load(self) -> None:
        from pantherseg.api import load_ensemble

        self.ensemble = load_ensemble(self.settings.options, keep_networks=True)  # case after case: built once

    def ready(self) -> dict:
        """Who this worker is, or why it could not load the ensemble (``error``)."""
        if self.load_error is not None:
            return {"worker": self.name, "error": list(self.load_error)}
        ensemble = self.ensemble
        return {
            "worker": self.name,
            "pid": os.getpid(),
            "load_s": round(ensemble.load_s, 3),
            "device": ensemble.describe_device(),
        }

    def process(self, case: Case) -> CaseRow:
        from pantherseg.api import segment_case

        if self.load_error is not None:
            return CaseRow(
                name=case.name,
                input=str(case.path),
                status="error",
                worker=self.name,
                error=f"the ensemble did not load: {self.load_error[1]}",
            )
        s = self.settings
        started = time.perf_counter()
        row = CaseRow(name=case.name, input=str(case.path), status="error", worker=self.name)
        try:
            result = segment_case(
                self.ensemble,
                case.path,
                output_dir=s.output_dir,
                options=s.options,
                name=case.name,
                run_hash=s.run_hash,
            )
        except PantherError as error:
            row.error = str(error)
        except MemoryError:
            row.error = "out of memory; try a worker with more RAM (or GPU memory) or fewer CPU workers per node"
        except Exception as error:  # noqa: BLE001 - a bug on one case must not stop the cohort; it is reported
            log.exception("%s: unexpected error", case.name)
            row.error = f"unexpected {type(error).__name__}: {' '.join(str(error).split())}"
        else:
            row.status = "done"
            row.take_report(result.report)
        row.seconds = round(time.perf_counter() - started, 3)
        if row.error:
            log.error("%s: %s", case.name, row.error)
        return row
