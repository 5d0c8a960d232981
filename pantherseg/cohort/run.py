"""``run_cohort``: list the cases, take this process's part, skip finished ones, run the rest, report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from pantherseg.cohort.cases import list_cases, split_cases
from pantherseg.cohort.progress import CohortProgress
from pantherseg.cohort.report import CaseRow, CohortReport, report_stem
from pantherseg.cohort.resume import finished_report, run_hash
from pantherseg.cohort.worker import CohortSettings
from pantherseg.config import EnsembleConfig, load_config
from pantherseg.paths import default_config, default_weights
from pantherseg.run_state import record_cohort

log = logging.getLogger(__name__)


def run_cohort(
    inputs: Path | str | Sequence[Path | str],
    *,
    output_dir: Path | str,
    task: str = "t1",
    config: Path | str | EnsembleConfig | None = None,
    weights: Path | str | None = None,
    device: str = "auto",
    tile_batch_size: int = 1,
    precision: str | None = None,
    backend: str | None = None,
    time_budget_s: float | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    resume: bool = True,
    ray=None,
    write_reports: bool = True,
    progress: CohortProgress | None = None,
) -> CohortReport:
    """Segment every case of a cohort; returns the cohort report (also written to the output folder).

    Args:
        inputs: image files and/or folders (searched recursively; see cases.py for the naming rule).
        output_dir: ``<name>.mha`` masks, ``<name>.report.json`` run reports and ``cohort_report.csv/.json``
            (``cohort_report.part-K-of-N.*`` for a part).
        task, config, weights, device, tile_batch_size, precision, backend, time_budget_s: as
            :func:`pantherseg.api.segment`; every case gets its own time budget.
        num_parts, part_id: run only part ``part_id`` of ``num_parts`` (round-robin over the sorted
            cases), for N independent processes (Slurm arrays, Kubernetes indexed jobs).
        resume: skip cases whose mask and report exist with this run's hash (see resume.py);
            False runs every case again.
        ray: None runs in this process; a :class:`pantherseg.cohort.ray_runner.RayOptions` runs on Ray.
        write_reports: write ``<name>.report.json`` (needed to resume).
        progress: cohort progress listener (default silent).

    Raises PantherError for a bad input list, config or model (before or while loading); a bad case
    never raises: it is an ``error`` row of the report.
    """
    started = time.monotonic()
    progress = progress or CohortProgress()
    output_dir = Path(output_dir).absolute()
    config = config if isinstance(config, EnsembleConfig) else load_config(config or default_config())
    weights = Path(weights if weights is not None else default_weights()).absolute()
    cases = split_cases(list_cases(inputs, exclude=output_dir), num_parts, part_id)
    fingerprint = run_hash(config, task, weights, precision=precision, backend=backend)
    report = CohortReport(run_hash=fingerprint, task=task, output_dir=str(output_dir),
                          runner="ray" if ray is not None else "local", part=(part_id, num_parts))

    todo = []
    for case in cases:
        existing = finished_report(case, output_dir, fingerprint) if resume and write_reports else None
        if existing is None:
            todo.append(case)
        else:
            report.rows.append(CaseRow(name=case.name, input=str(case.path), status="skipped", attempts=0,
                                       output=existing["output"]["path"], device=existing.get("device"),
                                       members_used=list(existing.get("members_used", []))))
    log.info("cohort: %d case(s) in this part, %d already done, %d to run (run hash %s)",
             len(cases), len(cases) - len(todo), len(todo), fingerprint[:12])

    settings = CohortSettings(config=config, task=task, weights=str(weights), output_dir=str(output_dir),
                              run_hash=fingerprint, device=device, tile_batch_size=tile_batch_size,
                              precision=precision, backend=backend, time_budget_s=time_budget_s,
                              write_reports=write_reports)
    progress.start(len(todo), len(cases) - len(todo))
    stem = report_stem(output_dir, (part_id, num_parts))
    try:
        if todo and ray is not None:
            from pantherseg.cohort.ray_runner import run_ray

            report.workers, report.worker_deaths = run_ray(todo, settings, ray, progress, report.rows)
        elif todo:
            from pantherseg.cohort.local_runner import run_local

            report.workers = run_local(todo, settings, progress, report.rows)
    except BaseException:  # Ctrl-C, SIGTERM: the rows so far are written, and the last line says so
        _write_report(report, stem, started, progress)
        totals = report.totals()
        record_cohort(f"{totals['done'] + totals['skipped']} of {len(cases)} case(s) finished with mask and "
                      f"report (see {stem}.csv); the same command again does the rest")
        raise
    _write_report(report, stem, started, progress)
    log.info("cohort: %s", report.summary())
    return report


def _write_report(report: CohortReport, stem: Path, started: float, progress: CohortProgress) -> None:
    progress.close()
    report.wall_s = time.monotonic() - started
    report.write(stem)
