"""Resuming a cohort: the run hash, and whether a case is already done.

The run hash is the SHA-256 of what decides a mask: the task's part of the ensemble config (its
members with their weights, the tumour label, tile step, mirroring, the time budget, precision and
backend as configured) together with the precision and backend asked for on the command line, and
the bytes of every member's checkpoint, ``plans.json`` and ``dataset.json``. It is written into
each case's run report (``run_hash``). Not in it: the software versions (they are in the report,
but a rerun with a fixed pantherseg keeps finished masks) and the device.

A case is done, and a rerun skips it, when its mask ``<name>.mha`` and its report
``<name>.report.json`` both exist in the output folder, the report parses, names the same input
file, the mask, and carries the same run hash. A case that failed has no mask, so every rerun tries
it again. Masks and reports are written atomically (temporary file, then rename), so a killed worker
leaves either a whole file or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from pantherseg.cohort.cases import Case
from pantherseg.config import EnsembleConfig, read_json_object
from pantherseg.errors import ModelError, PantherError
from pantherseg.io.files import cached_file_sha256

log = logging.getLogger(__name__)


def run_hash(config: EnsembleConfig, task: str, weights: Path | str, *, precision: str | None = None,
             backend: str | None = None) -> str:
    """SHA-256 (hex) of the task's config and the member files; ModelError if a member file is missing."""
    spec = config.task(task)
    settings = dataclasses.asdict(config)
    settings.pop("source", None)
    settings["tasks"] = {task: dataclasses.asdict(spec)}
    settings["overrides"] = {"precision": precision, "backend": backend}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    weights = Path(weights)
    seen = set()
    for member in spec.members:
        folder = weights / member.model
        for path in (folder / "plans.json", folder / "dataset.json",
                     folder / f"fold_{member.fold}" / member.checkpoint):
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
        raise ModelError(f"{owner}: cannot read {path}: {error.strerror or error}.") from None


def _recorded_path(report: dict, key: str) -> str | None:
    """``report[key]["path"]`` if the report (a file anyone could have edited) holds a usable one."""
    entry = report.get(key)
    path = entry.get("path") if isinstance(entry, dict) else None
    return path if isinstance(path, str) and path and "\x00" not in path and len(path) < 4096 else None


def mask_path(output_dir: Path, case: Case) -> Path:
    return Path(output_dir) / f"{case.name}.mha"


def report_path(output_dir: Path, case: Case) -> Path:
    return Path(output_dir) / f"{case.name}.report.json"


def finished_report(case: Case, output_dir: Path, expected_hash: str) -> dict | None:
    """The case's existing run report if its mask is complete and made by this run's config and weights."""
    mask, report_file = mask_path(output_dir, case), report_path(output_dir, case)
    if not (mask.is_file() and report_file.is_file()):
        return None
    try:
        report = read_json_object(report_file, error=PantherError, what=f"{case.name}: run report")
    except PantherError as error:  # a FIFO, oversized, not JSON, nested too deep: rerun, never block or crash
        log.warning("%s; the case runs again", error)
        return None
    if report.get("run_hash") != expected_hash:
        log.debug("%s: made with another config or other weights; it runs again", case.name)
        return None
    recorded_input, recorded_output = _recorded_path(report, "input"), _recorded_path(report, "output")
    used, device = report.get("members_used", []), report.get("device")
    if not (isinstance(used, list) and all(isinstance(m, str) for m in used)
            and (device is None or isinstance(device, str))):
        log.warning("%s: report %s has malformed members_used or device; the case runs again", case.name, report_file)
        return None
    try:
        same_input = recorded_input is not None and Path(recorded_input).resolve() == case.path.resolve()
    except (OSError, RuntimeError):  # a link loop in the recorded path
        same_input = False
    if not same_input:
        log.debug("%s: the report names another input (%s); it runs again", case.name, recorded_input)
        return None
    if recorded_output is None or Path(recorded_output).name != mask.name:
        return None
    return report
