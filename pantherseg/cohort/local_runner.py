"""The cohort in this process: one ensemble load, then the cases one after another.

This is the route for ``--num-parts/--part-id`` (each Slurm array task or Kubernetes indexed-job pod
runs one part with it) and for small cohorts without Ray.
"""

from __future__ import annotations

from typing import Sequence

from pantherseg.cohort.cases import Case
from pantherseg.cohort.progress import CohortProgress
from pantherseg.cohort.report import CaseRow
from pantherseg.cohort.worker import CaseWorker, CohortSettings, raise_load_error


def run_local(
    cases: Sequence[Case], settings: CohortSettings, progress: CohortProgress, rows: list[CaseRow]
) -> list[dict]:
    """Appends a row per case to ``rows`` as each finishes (kept if interrupted); returns the worker's
    description. Raises PantherError if the ensemble cannot load."""
    worker = CaseWorker(settings)
    info = worker.ready()
    if "error" in info:
        raise_load_error(info["error"])
    for case in cases:
        progress.case_started(case, worker.name)
        row = worker.process(case)
        rows.append(row)
        progress.case_finished(row)
    return [info]
