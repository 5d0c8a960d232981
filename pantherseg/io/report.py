"""The run report: a small JSON file that says what produced a mask.

Versions, device, members used and skipped (with the reason), time per stage and the input's
geometry, so that a mask found later can be traced to the models and software that made it.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from pantherseg import __version__

# A member's status in the report: ran | partial | skipped | stopped. These put its map in the mean.
USED_STATUSES = ("ran", "partial")


def software_versions() -> dict[str, str]:
    versions = {"pantherseg": __version__, "python": platform.python_version()}
    for package in ("torch", "nnunetv2", "SimpleITK", "numpy", "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_report(*, task: str, input_path: str, output_path: str, device: str, geometry: dict,
                 outcomes: list[dict], timings_s: dict, notes: list[str], weights: str, config: str,
                 tumor_voxels: int, tumor_volume_mm3: float, tumor_statistics: dict | None = None,
                 output_paths: list[str] | None = None, run_hash: str | None = None,
                 quality: dict | None = None) -> dict:
    """``run_hash``: SHA-256 of the config and member weights (pantherseg.cohort.resume); a cohort
    rerun skips a case whose report carries the same hash. ``quality``: the case's quality block
    (pantherseg.engine.quality, docs/quality.md: score in [0, 1], review flag, reasons, measures)."""
    report = {
        "software": software_versions(),
        "task": task,
        "input": {"path": input_path, **geometry},
        # tumor_statistics (pantherseg.io.tumour_stats): volume in ml, connected components, the largest one's
        # volume and bounding box in patient coordinates.
        "output": {"path": output_path, "paths": output_paths or [output_path], "tumor_voxels": tumor_voxels,
                   "tumor_volume_mm3": round(tumor_volume_mm3, 3), "tumor_statistics": tumor_statistics},
        "device": device,
        "weights": weights,
        "config": config,
        "members": outcomes,
        "members_used": [o["name"] for o in outcomes if o["status"] in USED_STATUSES],
        "timings_s": {stage: round(seconds, 3) for stage, seconds in timings_s.items()},
        "notes": notes,
    }
    if quality is not None:
        report["quality"] = quality
    if run_hash is not None:
        report["run_hash"] = run_hash
    return report


def write_report(report: dict, path: Path) -> Path:
    """Write ``report`` atomically (a uniquely named hidden file, then a rename); OutputError if it cannot."""
    from pantherseg.errors import OutputError
    from pantherseg.io.files import write_text_atomically

    path = Path(path)
    try:
        write_text_atomically(path, json.dumps(report, indent=2) + "\n")
    except OSError as error:
        raise OutputError(f"Cannot write the run report {path}: {error.strerror or error}.") from None
    return path
