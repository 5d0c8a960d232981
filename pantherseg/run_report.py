"""The run report: a small JSON file that says what produced a mask.

Versions, device, members used and skipped (with the reason), time per stage, the input's geometry and
the quality block, so that a mask found later can be traced to the models and software that made it.
:class:`RunReport` is a frozen value: :func:`pantherseg.api.segment` builds it, ``to_json`` gives the
file's content, ``from_json`` reads one back (a cohort's resume and its rows read reports that way, never
by string keys). A report read from disk is untrusted: ``from_json`` checks every field's type and raises
:class:`ReportError` with one line for anything else.
"""

from __future__ import annotations

import functools
import json
import math
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pantherseg import __version__
from pantherseg.engine.outcomes import MemberOutcome, MemberStatus
from pantherseg.errors import OutputError, PantherError


class ReportError(PantherError):
    """A run report read back from disk does not have the shape this version writes."""


@functools.cache  # the installed versions do not change while the process runs; asked once per case
def _installed_versions() -> tuple[tuple[str, str], ...]:
    versions = {"pantherseg": __version__, "python": platform.python_version()}
    for package in ("torch", "nnunetv2", "SimpleITK", "numpy", "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tuple(versions.items())


def software_versions() -> dict[str, str]:
    return dict(_installed_versions())


@dataclass(frozen=True)
class OutputRecord:
    """What was written: the mask (``path``, the first output), every output, and the tumour's size.

    ``tumor_statistics`` (pantherseg.io.tumour_stats): volume in ml, connected components, the largest
    one's volume and bounding box in patient coordinates."""

    path: str
    paths: tuple[str, ...]
    tumor_voxels: int
    tumor_volume_mm3: float
    tumor_statistics: dict | None = None


@dataclass(frozen=True)
class RunReport:
    """One case's run report.

    ``input``: the input's path and geometry (size, spacing, origin, direction, ...). ``run_hash``: SHA-256
    of the config and member weights (pantherseg.cohort.resume); a cohort rerun skips a case whose report
    carries the same hash. ``quality``: the case's quality block (pantherseg.engine.quality,
    docs/quality.md: score in [0, 1], review flag, reasons, measures)."""

    task: str
    input: dict
    output: OutputRecord
    device: str
    weights: str
    config: str
    members: tuple[MemberOutcome, ...]
    timings_s: dict[str, float]
    notes: tuple[str, ...] = ()
    quality: dict | None = None
    run_hash: str | None = None
    software: dict[str, str] = field(default_factory=software_versions)

    @property
    def members_used(self) -> list[str]:
        return [member.name for member in self.members if member.status.used]

    @property
    def tumor_volume_ml(self) -> float:
        return self.output.tumor_volume_mm3 / 1000

    def to_json(self) -> dict:
        report = {
            "software": dict(self.software),
            "task": self.task,
            "input": dict(self.input),
            "output": {
                "path": self.output.path,
                "paths": list(self.output.paths),
                "tumor_voxels": self.output.tumor_voxels,
                "tumor_volume_mm3": round(self.output.tumor_volume_mm3, 3),
                "tumor_statistics": self.output.tumor_statistics,
            },
            "device": self.device,
            "weights": self.weights,
            "config": self.config,
            "members": [member.as_dict() for member in self.members],
            "members_used": self.members_used,
            "timings_s": {stage: round(seconds, 3) for stage, seconds in self.timings_s.items()},
            "notes": list(self.notes),
        }
        if self.quality is not None:
            report["quality"] = self.quality
        if self.run_hash is not None:
            report["run_hash"] = self.run_hash
        return report

    @classmethod
    def from_json(cls, data: object, *, source: str = "run report") -> "RunReport":
        """The report ``to_json`` wrote; ReportError naming the first field that is missing or of another type."""
        reader = _Fields(data, source)
        output = _Fields(reader.get("output", dict), f"{source}: output")
        members = []
        for index, entry in enumerate(reader.get("members", list)):
            item = _Fields(entry, f"{source}: members[{index}]")
            try:
                status = MemberStatus(item.get("status", str))
            except ValueError:
                raise ReportError(
                    f"{source}: members[{index}].status must be one of "
                    f"{[s.value for s in MemberStatus]}, found {entry['status']!r}."
                ) from None
            members.append(
                MemberOutcome(
                    name=item.get("name", str),
                    role=item.get("role", str),
                    weight=item.number("weight"),
                    status=status,
                    reason=item.get("reason", str, default=""),
                    tiles_done=item.get("tiles_done", int, default=0),
                    tiles_total=item.get("tiles_total", int, default=0),
                    network_s=item.number("network_s", default=0.0),
                )
            )
        timings = reader.get("timings_s", dict)
        if not all(isinstance(k, str) and _is_number(v) for k, v in timings.items()):
            raise ReportError(f"{source}: timings_s must map stage names to seconds.")
        quality = reader.get("quality", dict, default=None)
        if quality is not None:
            block = _Fields(quality, f"{source}: quality")
            block.number("score"), block.get("review", bool)
            if not all(isinstance(reason, str) for reason in block.get("reasons", list, default=[])):
                raise ReportError(f"{source}: quality.reasons must be a list of strings.")
        notes = reader.get("notes", list, default=[])
        paths = output.get("paths", list)
        if not all(isinstance(p, str) for p in [*notes, *paths]):
            raise ReportError(f"{source}: notes and output.paths must be lists of strings.")
        return cls(
            task=reader.get("task", str),
            input=reader.get("input", dict),
            device=reader.get("device", str),
            output=OutputRecord(
                path=output.get("path", str),
                paths=tuple(paths),
                tumor_voxels=output.get("tumor_voxels", int),
                tumor_volume_mm3=output.number("tumor_volume_mm3"),
                tumor_statistics=output.get("tumor_statistics", dict, default=None),
            ),
            weights=reader.get("weights", str),
            config=reader.get("config", str),
            members=tuple(members),
            timings_s={k: float(v) for k, v in timings.items()},
            notes=tuple(notes),
            quality=quality,
            run_hash=reader.get("run_hash", str, default=None),
            software=reader.get("software", dict, default={}),
        )

    def write(self, path: Path | str) -> Path:
        """Write the report atomically (a uniquely named hidden file, then a rename); OutputError if it cannot."""
        from pantherseg.io.files import write_text_atomically

        path = Path(path)
        try:
            write_text_atomically(path, json.dumps(self.to_json(), indent=2) + "\n")
        except OSError as error:
            raise OutputError(f"Cannot write the run report {path}: {error.strerror or error}.") from error
        return path

    @classmethod
    def read(cls, path: Path | str) -> "RunReport":
        """A report file from disk (untrusted: bounded, and checked field by field); ReportError otherwise."""
        from pantherseg.json_files import read_json_object

        return cls.from_json(read_json_object(path, error=ReportError, what="run report"), source=str(path))


_MISSING = object()


class _Fields:
    """Typed access to a JSON object's fields, each failure one ReportError line naming the field."""

    def __init__(self, data: object, source: str):
        if not isinstance(data, dict):
            raise ReportError(f"{source} must be a JSON object, found {type(data).__name__}.")
        self.data, self.source = data, source

    def get(self, key: str, kind: type, *, default=_MISSING):
        value = self.data.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                raise ReportError(f"{self.source}: '{key}' is missing.")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ReportError(f"{self.source}: '{key}' must be {kind.__name__}, found {type(value).__name__}.")
        return value

    def number(self, key: str, *, default=_MISSING) -> float:
        value = self.data.get(key, _MISSING)
        if value is _MISSING and default is not _MISSING:
            return default
        if not _is_number(value):
            raise ReportError(f"{self.source}: '{key}' must be a finite number, found {value!r:.40}.")
        return float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
