"""Files in and out of ensemble selection: member probability maps, costs, a new ensemble_config.json.

Inputs come from the engine itself:
- ``pantherseg predict --member-outputs DIR`` writes each member's probability maps (one vector
  component per class) to ``DIR/<member name>/<case>.mha``; a scalar map is read as the tumour
  probability alone (then thresholded at 0.5 instead of the engine's argmax);
- its run reports (``<case>.report.json``) hold each member's measured network time.
The result is the base config with the task's member list replaced by the chosen members and
their integer weights (heaviest first, which is also the priority order under time pressure).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from pantherseg.config import EnsembleConfig
from pantherseg.errors import InputError
from pantherseg.evaluation.folders import case_files, read_mask
from pantherseg.evaluation.selection import SelectionResult, ValidationCase
from pantherseg.io.images import itk_error_line
from pantherseg.json_files import read_json_object


def load_validation_cases(
    member_outputs: Path, gt_dir: Path, members: list[str], tumor_label: int
) -> list[ValidationCase]:
    """Cases present in the truth folder and in every member's folder.

    Per-class maps are kept as float16 (10 Task 1 cases x 6 members x 3 classes fit in 2 GB); the
    ensemble's mean is taken in float32.
    """
    import SimpleITK as sitk

    member_files = {}
    for name in members:
        folder = Path(member_outputs) / name
        if not folder.is_dir():
            raise InputError(
                f"No probability maps for member '{name}': expected the folder {folder} "
                f"(written by pantherseg predict --member-outputs)."
            )
        member_files[name] = case_files(folder)
    truth_files = case_files(Path(gt_dir))
    cases = sorted(set(truth_files).intersection(*[set(f) for f in member_files.values()]))
    if not cases:
        raise InputError(f"No case is in {gt_dir} and in every member folder under {member_outputs}.")
    loaded = []
    for case in cases:
        truth, spacing_xyz = read_mask(truth_files[case])
        probabilities = {}
        for name in members:
            image = _read_map(member_files[name][case])
            array = sitk.GetArrayFromImage(image)
            if image.GetNumberOfComponentsPerPixel() > 1:
                array = np.moveaxis(array, -1, 0).astype(np.float16)
            else:
                array = array.astype(np.float32, copy=False)
            if array.shape[-truth.ndim :] != truth.shape:
                raise InputError(f"case {case}: member '{name}' map has shape {array.shape}, truth {truth.shape}.")
            probabilities[name] = array
        per_class = {a.ndim == truth.ndim + 1 for a in probabilities.values()}
        if len(per_class) != 1:
            raise InputError(
                f"case {case}: some members' maps are per class and some tumour-only; "
                f"write them all again with one version of 'pantherseg predict --member-outputs'."
            )
        loaded.append(
            ValidationCase(
                case,
                probabilities,
                truth,
                tuple(reversed(spacing_xyz)),
                tumor_label=tumor_label if per_class == {True} else None,
            )
        )
    return loaded


def costs_from_reports(report_dir: Path, members: list[str]) -> dict[str, float]:
    """Median seconds per case of each member's network passes, from the engine's run reports."""
    seconds: dict[str, list[float]] = {name: [] for name in members}
    reports = sorted(Path(report_dir).glob("*.report.json"))
    if not reports:
        raise InputError(
            f"No run reports (*.report.json) in {report_dir} to take member costs from; "
            f"pass --costs with a JSON object of member -> seconds per case instead."
        )
    for path in reports:
        report = _read_json(path, "Run report")
        outcomes = report.get("members") if isinstance(report, dict) else None
        if not isinstance(outcomes, list) or not all(isinstance(o, dict) for o in outcomes):
            raise InputError(f"{path} is not a pantherseg run report: expected a 'members' list of objects.")
        for outcome in outcomes:
            if outcome.get("name") in seconds and outcome.get("status") == "ran":
                network_s = outcome.get("network_s")
                if isinstance(network_s, bool) or not isinstance(network_s, (int, float)) or not network_s >= 0:
                    raise InputError(
                        f"{path}: member '{outcome['name']}' has no network_s in seconds, found {network_s!r}."
                    )
                seconds[outcome["name"]].append(float(network_s))
    missing = [name for name, values in seconds.items() if not values]
    if missing:
        raise InputError(f"The run reports in {report_dir} have no completed run of member(s) {missing}.")
    return {name: statistics.median(values) for name, values in seconds.items()}


def costs_from_json(path: Path, members: list[str]) -> dict[str, float]:
    """``{member name: seconds per case}`` from a JSON file; InputError naming the file for anything else."""
    costs = _read_json(Path(path), "Member costs (member -> seconds per case)")
    if not isinstance(costs, dict):
        raise InputError(f"{path} must be a JSON object of member -> seconds per case, found {type(costs).__name__}.")
    missing = [
        m
        for m in members
        if isinstance(costs.get(m), bool)
        or not isinstance(costs.get(m), (int, float))
        or not 0 <= costs[m] < float("inf")
    ]
    if missing:
        raise InputError(f"{path} must give seconds per case (a number >= 0) for every member; missing {missing}.")
    return {m: float(costs[m]) for m in members}


def _read_json(path: Path, what: str):
    return read_json_object(path, error=InputError, what=what, top=object)


def _read_map(path: Path):
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read the probability map {path}: {itk_error_line(str(error))}") from error


def selected_config(base: EnsembleConfig, task: str, result: SelectionResult) -> dict:
    """``base`` as ``ensemble_config.json`` holds it, with the task's members replaced by the selection."""
    by_name = {m.name: m for m in base.task(task).members}
    raw = base.to_dict()
    original = {m["name"]: m for m in raw["tasks"][task]["members"]}
    order = sorted(result.weights, key=lambda name: (-result.weights[name], list(by_name).index(name)))
    raw["tasks"][task]["members"] = [{**original[name], "weight": float(result.weights[name])} for name in order]
    return raw
