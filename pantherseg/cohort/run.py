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
from pantherseg.io.outputs import check_output_formats
from pantherseg.options import RunOptions
from pantherseg.paths import default_config, default_weights
from pantherseg.run_state import record_cohort

log = logging.getLogger(__name__)


def run_cohort(
    inputs: Path | str | Sequence[Path | str],
    *,
    output_dir: Path | str,
    options: RunOptions | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    resume: bool = True,
    ray=None,
    write_reports: bool = True,
    progress: CohortProgress | None = None,
    **fields,
) -> CohortReport:
    """Segment every case of a cohort; returns the cohort report (also written to the output folder).

    Args:
        inputs: image files, DICOM folders and/or folders of them (searched recursively; see cases.py for
            the naming rule).
        output_dir: each case's outputs (``<name>.mha`` or the formats asked for) and ``<name>.report.json``
            run report, and ``cohort_report.csv/.json`` (``cohort_report.part-K-of-N.*`` for a part).
        options: the run's :class:`~pantherseg.options.RunOptions`, carried whole to every worker (task,
            config, weights, engine options, output formats, previews, member outputs, ...); every case
            gets its own time budget; ``report_dir`` is the output folder. ``**fields`` override them.
        num_parts, part_id: run only part ``part_id`` of ``num_parts`` (round-robin over the sorted
            cases), for N independent processes (Slurm arrays, Kubernetes indexed jobs).
        resume: skip cases whose outputs and report exist with this run's hash (see resume.py);
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
    options = (options or RunOptions()).but(**fields)
    config = options.config
    config = config if isinstance(config, EnsembleConfig) else load_config(config or default_config())
    weights = Path(options.weights if options.weights is not None else default_weights()).absolute()
    cases = split_cases(list_cases(inputs, exclude=output_dir), num_parts, part_id)
    formats = check_output_formats(options.output_formats, [case.path for case in cases])
    options = options.but(
        config=config,
        weights=weights,
        output_formats=formats,
        stop_on_error=True,
        report_dir=output_dir if write_reports else None,
        report_name=None,
    )
    fingerprint = run_hash(
        config,
        options.task,
        weights,
        precision=options.precision,
        backend=options.backend,
        roi_name=options.roi_name,
        series_uid=options.series_uid,
    )
    report = CohortReport(
        run_hash=fingerprint,
        task=options.task,
        output_dir=str(output_dir),
        runner="ray" if ray is not None else "local",
        part=(part_id, num_parts),
    )

    todo = []
    for case in cases:
        existing = finished_report(case, output_dir, fingerprint, formats) if resume and write_reports else None
        if existing is None:
            todo.append(case)
        else:
            row = CaseRow(name=case.name, input=str(case.path), status="skipped", attempts=0)
            row.take_report(existing)
            report.rows.append(row)
    log.info(
        "cohort: %d case(s) in this part, %d already done, %d to run (run hash %s)",
        len(cases),
        len(cases) - len(todo),
        len(todo),
        fingerprint[:12],
    )

    settings = CohortSettings(options=options, output_dir=str(output_dir), run_hash=fingerprint)
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
        record_cohort(
            f"{totals['done'] + totals['skipped']} of {len(cases)} case(s) finished with mask and "
            f"report (see {stem}.csv); the same command again does the rest"
        )
        raise
    _write_report(report, stem, started, progress)
    log.info("cohort: %s", report.summary())
    return report


def _write_report(report: CohortReport, stem: Path, started: float, progress: CohortProgress) -> None:
    progress.close()
    report.wall_s = time.monotonic() - started
    report.write(stem)
