"""ensemble_config.json: which nnU-Net folds make up each task's ensemble, and how they run.

The file is the product's public interface, so it is read strictly: unknown keys, wrong types and
impossible values are refused with a ConfigError that names the key path, what was expected and
what was found, before any model is touched.

    {
      "version": 1,
      "tile_step_size": 0.5,          # sliding-window step as a fraction of the patch (nnU-Net's)
      "use_mirroring": false,         # test-time augmentation by flipping; off in the winning method
      "time_budget_s": 300,           # grand-challenge's limit per case (entry points: from process start)
      "precision": "auto",            # network arithmetic: auto = fp16 autocast on CUDA (as nnU-Net),
                                      # fp32 on CPU; bf16 = bfloat16 autocast (fast on AMX CPUs)
      "backend": "auto",              # torch, onnxruntime or openvino; auto = see docs/speed.md
      "quality_review_below": 0.41,   # optional: flag a case for review when its quality score is lower
                                      # (docs/quality.md; default chosen on benchmarks/bench_quality.py)
      "tasks": {
        "t1": {
          "input_slug": "abdominal-t1-mri",
          "output_slug": "pancreatic-tumor-segmentation",
          "tumor_label": 1,           # the label (in every member's dataset.json) written as 1
          "members": [                # priority order: under time pressure the tail is skipped
            {"name": "allrounder-f0", "role": "all-rounder",
             "model": "Dataset.../Trainer__Plans__3d_fullres",   # relative to the weights root
             "fold": 0, "checkpoint": "checkpoint_best.pth", "weight": 1.0}
          ]
        }
      }
    }

Optional per member: "configuration" (default: the part after the last "__" of the model folder
name, as nnU-Net names result folders, else "3d_fullres").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pantherseg.errors import ConfigError, short_repr
from pantherseg.json_files import read_json_object

SUPPORTED_VERSIONS = (1,)
# The winners' three kinds of expert; examples, not a restriction: a role is free text (it is reported,
# never acted on), so a user's own ensemble may name other experts.
KNOWN_ROLES = ("all-rounder", "volume", "boundary")
MAX_ROLE_LENGTH = 128

_TOP_KEYS = {
    "version",
    "tile_step_size",
    "use_mirroring",
    "time_budget_s",
    "export_reserve_s",
    "precision",
    "backend",
    "quality_review_below",
    "tasks",
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
_TASK_KEYS = {"input_slug", "output_slug", "tumor_label", "members"}
_MEMBER_KEYS = {"name", "role", "model", "fold", "checkpoint", "weight", "configuration"}
# Slugs and member names become folder and file names (output folder, --member-outputs): no separators,
# no '..', no NUL. grand-challenge's slugs are lower-case letters, digits and hyphens.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# The default review threshold on the per-case quality score (pantherseg.engine.quality): chosen on the
# calibration half of benchmarks/bench_quality.py (docs/quality.md).
DEFAULT_QUALITY_REVIEW_BELOW = 0.41
# Below a tenth of the patch nnU-Net's tiling stops making sense: 1000 times the tiles of step 1.
MIN_TILE_STEP = 0.1


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member: one fold of one nnU-Net model folder."""

    name: str
    role: str
    model: str
    fold: int | str
    checkpoint: str
    weight: float
    configuration: str

    def describe(self) -> str:
        return f"member '{self.name}' ({self.model}, fold {self.fold}, {self.checkpoint})"

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "role": self.role,
            "model": self.model,
            "fold": self.fold,
            "checkpoint": self.checkpoint,
            "weight": self.weight,
        }
        if self.configuration != _configuration_from_folder(self.model):
            out["configuration"] = self.configuration
        return out


@dataclass(frozen=True)
class TaskSpec:
    name: str
    input_slug: str
    output_slug: str
    tumor_label: int
    members: tuple[MemberSpec, ...]

    def to_dict(self) -> dict:
        return {
            "input_slug": self.input_slug,
            "output_slug": self.output_slug,
            "tumor_label": self.tumor_label,
            "members": [member.to_dict() for member in self.members],
        }


@dataclass(frozen=True)
class EnsembleConfig:
    tasks: dict[str, TaskSpec]
    tile_step_size: float = 0.5
    use_mirroring: bool = False
    time_budget_s: float = 300.0
    # Seconds kept free at the end of the budget for ensembling, export and writing the mask.
    export_reserve_s: float = 20.0
    precision: str = "auto"
    backend: str = "auto"
    quality_review_below: float = DEFAULT_QUALITY_REVIEW_BELOW
    version: int = 1
    source: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        """The config as ``ensemble_config.json`` holds it: ``parse_config(config.to_dict())`` gives it back.

        A member's ``configuration`` is written only where it differs from the one its folder name gives."""
        return {
            "version": self.version,
            "tile_step_size": self.tile_step_size,
            "use_mirroring": self.use_mirroring,
            "time_budget_s": self.time_budget_s,
            "export_reserve_s": self.export_reserve_s,
            "precision": self.precision,
            "backend": self.backend,
            "quality_review_below": self.quality_review_below,
            "tasks": {name: task.to_dict() for name, task in self.tasks.items()},
        }

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise ConfigError(
                f"Task '{name}' is not in the ensemble config{_where(self.source)}; it defines {sorted(self.tasks)}."
            )
        return self.tasks[name]

    @property
    def input_slugs(self) -> list[str]:
        """The input interface slugs of all tasks, sorted (for messages)."""
        return sorted(t.input_slug for t in self.tasks.values())

    def takes_slug(self, slug: str) -> bool:
        return any(t.input_slug == slug for t in self.tasks.values())

    def task_for_slug(self, slug: str) -> TaskSpec:
        """The task whose input interface is ``slug`` (ConfigError naming the known slugs if none)."""
        for task in self.tasks.values():
            if task.input_slug == slug:
                return task
        raise ConfigError(
            f"No task takes the input interface '{slug}'{_where(self.source)}; known input slugs: {self.input_slugs}."
        )


def _where(source: Path | None) -> str:
    return f" ({source})" if source else ""


def load_config(path: Path | str) -> EnsembleConfig:
    """Read and validate an ensemble_config.json file."""
    path = Path(path)
    raw = read_json_object(
        path, error=ConfigError, what="Ensemble config", missing="Ensemble config not found", top=object
    )  # parse_config names a top level of the wrong type
    return parse_config(raw, source=path)


def parse_config(raw: object, *, source: Path | None = None) -> EnsembleConfig:
    """Validate a decoded config; every error names the key path, the rule and the value found."""
    where = f"{source}: " if source else ""

    def fail(key: str, expected: str, found: object) -> ConfigError:
        shown = short_repr(found)
        return ConfigError(f"{where}'{key}' must be {expected}, found {shown}.")

    if not isinstance(raw, dict):
        raise fail("<top level>", "a JSON object", type(raw).__name__)
    _reject_unknown(raw, _TOP_KEYS, "<top level>", where)

    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        raise fail("version", f"one of {list(SUPPORTED_VERSIONS)}", version)
    step = _number(raw.get("tile_step_size", 0.5), "tile_step_size", fail)
    if not MIN_TILE_STEP <= step <= 1:
        raise fail("tile_step_size", f"a number in [{MIN_TILE_STEP}, 1] (a fraction of the patch)", step)
    mirroring = raw.get("use_mirroring", False)
    if not isinstance(mirroring, bool):
        raise fail("use_mirroring", "true or false", mirroring)
    budget = _number(raw.get("time_budget_s", 300), "time_budget_s", fail)
    if budget <= 0:
        raise fail("time_budget_s", "a positive number of seconds", budget)
    reserve = _number(raw.get("export_reserve_s", 20), "export_reserve_s", fail)
    if not 0 <= reserve < budget:
        raise fail("export_reserve_s", f"a number of seconds in [0, time_budget_s={budget})", reserve)

    precision = raw.get("precision", "auto")
    if precision not in PRECISIONS:
        raise fail("precision", f"one of {list(PRECISIONS)}", precision)
    backend = raw.get("backend", "auto")
    if backend not in BACKENDS:
        raise fail("backend", f"one of {list(BACKENDS)}", backend)

    review_below = _number(raw.get("quality_review_below", DEFAULT_QUALITY_REVIEW_BELOW), "quality_review_below", fail)
    if not 0 <= review_below <= 1:
        raise fail(
            "quality_review_below", "a number in [0, 1] (the quality score under which a case is flagged)", review_below
        )

    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        raise fail("tasks", "a non-empty object of task name -> task", tasks_raw)
    tasks = {name: _parse_task(name, task, fail, where) for name, task in tasks_raw.items()}
    slugs = [t.input_slug for t in tasks.values()]
    duplicated = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicated:
        raise ConfigError(f"{where}input slug(s) {duplicated} are used by more than one task; each must be unique.")
    return EnsembleConfig(
        tasks=tasks,
        tile_step_size=step,
        use_mirroring=mirroring,
        time_budget_s=budget,
        export_reserve_s=reserve,
        precision=precision,
        backend=backend,
        quality_review_below=review_below,
        version=version,
        source=source,
    )


def _parse_task(name: str, raw: object, fail, where: str) -> TaskSpec:
    key = f"tasks.{name}"
    if not isinstance(raw, dict):
        raise fail(key, "an object", type(raw).__name__)
    _reject_unknown(raw, _TASK_KEYS, key, where)
    for text_key in ("input_slug", "output_slug"):
        if not isinstance(raw.get(text_key), str) or not _NAME.fullmatch(raw[text_key]):
            raise fail(f"{key}.{text_key}", "a slug of letters, digits, '-', '_' or '.'", raw.get(text_key))
    tumor_label = raw.get("tumor_label", 1)
    if isinstance(tumor_label, bool) or not isinstance(tumor_label, int) or tumor_label <= 0:
        raise fail(f"{key}.tumor_label", "a positive integer label", tumor_label)
    members_raw = raw.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise fail(f"{key}.members", "a non-empty list of members", members_raw)
    members = tuple(_parse_member(f"{key}.members[{i}]", m, fail, where) for i, m in enumerate(members_raw))
    names = [m.name for m in members]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{where}{key}: member names {duplicated} are used twice; names must be unique.")
    return TaskSpec(
        name=name,
        input_slug=raw["input_slug"],
        output_slug=raw["output_slug"],
        tumor_label=tumor_label,
        members=members,
    )


def _parse_member(key: str, raw: object, fail, where: str) -> MemberSpec:
    if not isinstance(raw, dict):
        raise fail(key, "an object", raw)
    _reject_unknown(raw, _MEMBER_KEYS, key, where)
    for text_key in ("name", "model", "checkpoint"):
        if not isinstance(raw.get(text_key), str) or not raw[text_key] or "\x00" in raw[text_key]:
            raise fail(f"{key}.{text_key}", "a non-empty string", raw.get(text_key))
    if not _NAME.fullmatch(raw["name"]):
        raise fail(f"{key}.name", "a name of letters, digits, '-', '_' or '.' (it names output folders)", raw["name"])
    model = raw["model"]
    if Path(model).is_absolute() or ".." in Path(model).parts:
        raise fail(f"{key}.model", "a folder path relative to the weights root, without '..'", model)
    role = raw.get("role", "all-rounder")
    if not isinstance(role, str) or not role.strip() or len(role) > MAX_ROLE_LENGTH or not role.isprintable():
        raise fail(
            f"{key}.role",
            f"a short free-text name of up to {MAX_ROLE_LENGTH} printable characters (e.g. one of {list(KNOWN_ROLES)})",
            role,
        )
    fold = raw.get("fold")
    if not (fold == "all" or (isinstance(fold, int) and not isinstance(fold, bool) and fold >= 0)):
        raise fail(f"{key}.fold", 'a non-negative integer or "all"', fold)
    if not raw["checkpoint"].endswith(".pth") or "/" in raw["checkpoint"]:
        raise fail(f"{key}.checkpoint", "a checkpoint file name such as checkpoint_best.pth", raw["checkpoint"])
    weight = _number(raw.get("weight", 1.0), f"{key}.weight", fail)
    if weight <= 0:
        raise fail(f"{key}.weight", "a positive number", weight)
    configuration = raw.get("configuration") or _configuration_from_folder(model)
    if not isinstance(configuration, str) or "\x00" in configuration:
        raise fail(f"{key}.configuration", "a configuration name such as 3d_fullres", configuration)
    return MemberSpec(
        name=raw["name"],
        role=role,
        model=model,
        fold=fold,
        checkpoint=raw["checkpoint"],
        weight=weight,
        configuration=configuration,
    )


def _configuration_from_folder(model: str) -> str:
    """nnU-Net names result folders Trainer__Plans__Configuration."""
    parts = Path(model).name.split("__")
    return parts[-1] if len(parts) >= 3 else "3d_fullres"


def _number(value: object, key: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(key, "a finite number", value)
    return float(value)


def _reject_unknown(raw: dict, allowed: set[str], key: str, where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}{key} has unknown key(s) {unknown}; allowed: {sorted(allowed)}.")
