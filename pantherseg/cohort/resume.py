"""Resuming a cohort: the run hash, and whether a case is already done.

The run hash is the SHA-256 of what decides a mask: the task's part of the ensemble config (its
members with their weights, the tumour label, tile step, mirroring, the time budget, precision and
backend as configured) together with the precision and backend asked for on the command line, and
the bytes of every member's checkpoint, ``plans.json`` and ``dataset.json`` (and, when set, the
RTSTRUCT's ROI name and the DICOM series chosen). It is written into
each case's run report (``run_hash``). Not in it: the software versions (they are in the report,
but a rerun with a fixed pantherseg keeps finished masks) and the device.

A case is done, and a rerun skips it, when its report ``<name>.report.json`` reads back as a
:class:`~pantherseg.run_report.RunReport`, carries the same run hash, names the same input, and lists
every output the run asks for (``<name>.mha``, ``.nii.gz``, ``.seg.dcm``, ...), each of which exists. A case that failed has no mask, so every rerun tries
it again. Masks and reports are written atomically (temporary file, then rename), so a killed worker
leaves either a whole file or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

from pantherseg.cohort.cases import Case
from pantherseg.config import EnsembleConfig
from pantherseg.errors import ModelError, PantherError
from pantherseg.io.files import cached_file_sha256
from pantherseg.io.outputs import output_paths
from pantherseg.run_report import RunReport

log = logging.getLogger(__name__)


def run_hash(
    config: EnsembleConfig,
    task: str,
    weights: Path | str,
    *,
    precision: str | None = None,
    backend: str | None = None,
    roi_name: str | None = None,
    series_uid: str | None = None,
) -> str:
    """SHA-256 (hex) of the task's config, the options that change what is written (precision, backend, the
    RTSTRUCT's ROI name, the DICOM series chosen) and the member files; ModelError if a member file is missing."""
    spec = config.task(task)
    settings = dataclasses.asdict(config)
    settings.pop("source", None)
    settings["tasks"] = {task: dataclasses.asdict(spec)}
    settings["overrides"] = {"precision": precision, "backend": backend}
    if roi_name is not None or series_uid is not None:  # only then: finished cohorts keep their hash
        settings["outputs"] = {"roi_name": roi_name, "series_uid": series_uid}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    weights = Path(weights)
    seen = set()
    for member in spec.members:
        folder = weights / member.model
        for path in (
            folder / "plans.json",
            folder / "dataset.json",
            folder / f"fold_{member.fold}" / member.checkpoint,
        ):
            if path in seen:
                continue
            seen.add(path)
            digest.update(f"{path.relative_to(weights).as_posix()}\0".encode())
            digest.update(_file_sha256(path, member.describe()).encode())
    return digest.hexdigest()


def _file_sha256(path: Path, owner: str) -> str:
    try:
        return cached_file_sha256(path)  # the workers' backends reuse it in this process
    except FileNotFoundError:
        raise ModelError(f"{owner}: file not found: expected {path}.") from None
    except OSError as error:
        raise ModelError(f"{owner}: cannot read {path}: {error.strerror or error}.") from error


def report_path(output_dir: Path, case: Case) -> Path:
    return Path(output_dir) / f"{case.name}.report.json"


def finished_report(
    case: Case, output_dir: Path, expected_hash: str, formats: Sequence[str] = ("mha",)
) -> RunReport | None:
    """The case's existing run report if its outputs are complete and made by this run's config and weights:
    the report reads back, carries ``expected_hash``, names this case's input, and lists every output
    ``formats`` asks for, each of which exists."""
    report_file = report_path(output_dir, case)
    if not report_file.is_file():
        return None
    try:
        report = RunReport.read(report_file)
    except PantherError as error:  # a FIFO, oversized, not JSON, a field of another type: rerun, never crash
        log.warning("%s: %s; the case runs again", case.name, error)
        return None
    if report.run_hash != expected_hash:
        log.debug("%s: made with another config or other weights; it runs again", case.name)
        return None
    if not _same_path(report.input.get("path"), case.path):
        log.debug("%s: the report names another input (%s); it runs again", case.name, report.input.get("path"))
        return None
    recorded = {Path(path).name for path in report.output.paths}
    expected = output_paths(Path(output_dir), case.name, formats)
    if not all(path.name in recorded and path.is_file() for path in expected):
        return None
    return report


def _same_path(recorded: object, path: Path) -> bool:
    if not (isinstance(recorded, str) and recorded and "\x00" not in recorded and len(recorded) < 4096):
        return False
    try:
        return Path(recorded).resolve() == path.resolve()
    except (OSError, RuntimeError):  # a link loop in the recorded path
        return False
