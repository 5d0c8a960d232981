"""The PANTHER challenge metrics, computed on numpy arrays.

Per case (``case_metrics``): volumetric Dice, surface Dice at 5 mm, HD95 and MASD from DeepMind's
``surface-distance`` package, the same calls as the organisers' evaluation script
(DIAGNijmegen/PANTHER_baseline, ``Evaluation/evaluate_local.py``), plus the predicted and true
tumour volumes in mm^3 (voxel count x voxel volume).

Over cases (``aggregate``): the mean of each of the four metrics and the tumour-burden RMSE,
sqrt(mean((pred_volume - true_volume)^2)) in mm^3.

Between submissions (``leaderboard``): for each of the five aggregate figures the position of
each submission (Dice and surface Dice: higher is better; HD95, MASD and RMSE: lower is better;
ties share the best position, 1, 1, 3), then the mean of the five positions, the challenge's
ranking score (lower is better).

Axis order: every array here is in one axis order, normally numpy's (z, y, x) from SimpleITK's
``GetArrayFromImage``, and ``spacing_mm`` must be given in that same order (the reverse of
SimpleITK's ``GetSpacing()``). Nothing here reads files or knows about SimpleITK.

Cases the library cannot score (it divides by zero, and with NumPy 2 it crashes on ``np.Inf``),
decided here once:

=====================  =====================  ======  ============  =============  ===========
truth                  prediction             Dice    surface Dice  HD95 (mm)      MASD (mm)
=====================  =====================  ======  ============  =============  ===========
empty                  empty                  1       1             0              0
any                    empty or all tumour    0       0             image diagonal image diagonal
empty                  tumour somewhere       0       0             image diagonal image diagonal
=====================  =====================  ======  ============  =============  ===========

The second row is the organisers' rule ("uniform prediction": lowest possible score, the image
diagonal sqrt(sum((shape * spacing)^2)) as the distance penalty). The first row differs from their
script, which penalises an empty prediction even when the truth is empty too; a correct "no tumour"
answer scores perfectly here. The third row is what the library's figures tend to (no overlap, an
infinite distance) with the same finite penalty as a missed tumour. Volumes are always the real
voxel counts (their script records 0 mm^3 for an all-tumour prediction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from pantherseg.errors import InputError

SURFACE_DICE_TOLERANCE_MM = 5.0
"""Tolerance of the surface Dice, in mm (the challenge's value)."""

HAUSDORFF_PERCENTILE = 95.0
"""Percentile of the robust Hausdorff distance (HD95)."""

METRIC_NAMES = ("dice", "surface_dice", "hd95", "masd", "volume_rmse")
"""The five leaderboard figures, in the order they are shown."""

HIGHER_IS_BETTER = {
    "dice": True,
    "surface_dice": True,
    "hd95": False,
    "masd": False,
    "volume_rmse": False,
}
"""For each leaderboard figure, whether a higher value ranks better."""


@dataclass(frozen=True)
class CaseMetrics:
    """The challenge figures for one case.

    ``dice`` and ``surface_dice`` are in [0, 1]; ``hd95`` and ``masd`` in mm; ``pred_volume`` and
    ``truth_volume`` in mm^3. ``rule`` names how the figures were obtained: ``"surface-distance"``
    (the library), ``"both empty"``, ``"uniform prediction"`` (empty or all tumour) or
    ``"empty truth"``; see the module docstring.
    """

    dice: float
    surface_dice: float
    hd95: float
    masd: float
    pred_volume: float
    truth_volume: float
    rule: str

    def as_dict(self) -> dict:
        """The figures as a plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class Aggregate:
    """The challenge figures over a set of cases.

    ``dice``, ``surface_dice``, ``hd95`` (mm) and ``masd`` (mm) are means over the cases;
    ``volume_rmse`` is the tumour-burden RMSE in mm^3; ``n_cases`` the number of cases.
    """

    dice: float
    surface_dice: float
    hd95: float
    masd: float
    volume_rmse: float
    n_cases: int

    def as_dict(self) -> dict:
        """The figures as a plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class LeaderboardEntry:
    """One submission's place: its position for each figure in ``METRIC_NAMES`` (1 = best), the
    mean of those positions (``score``, lower is better) and its overall ``rank`` by score (ties
    share the best rank)."""

    name: str
    positions: Mapping[str, int]
    score: float
    rank: int

    def as_dict(self) -> dict:
        """The entry as a plain dict (JSON-ready)."""
        return {"name": self.name, "positions": dict(self.positions), "score": self.score, "rank": self.rank}


def binarise(labels: np.ndarray, name: str) -> np.ndarray:
    """Turn a label image into a boolean tumour mask: ``labels > 0``.

    Accepted, like the organisers' script: values {0, 1}, or {0, k} for one positive k (e.g. a
    mask saved with label 2), including either value alone. Anything else (three or more distinct
    values, negative or NaN values) is not a tumour mask, and raises ``InputError`` naming
    ``name`` (the file or case) and the values found.
    """
    values = np.unique(labels)
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise InputError(f"{name}: expected a binary tumour mask (values 0 and one positive label), found NaN values")
    nonzero = values[values != 0]
    if nonzero.size > 1 or (nonzero.size == 1 and nonzero[0] < 0):
        shown = ", ".join(str(v) for v in values[:10].tolist())
        more = f" and {values.size - 10} more" if values.size > 10 else ""
        raise InputError(
            f"{name}: expected a binary tumour mask (values 0 and one positive "
            f"label, e.g. {{0, 1}}), found values {{{shown}}}{more}"
        )
    return labels > 0


def image_diagonal_mm(shape: Sequence[int], spacing_mm: Sequence[float]) -> float:
    """The length of the image's diagonal in mm: sqrt(sum((shape * spacing)^2)), with ``shape``
    and ``spacing_mm`` in the same axis order. The distance penalty for a missed case."""
    return float(np.linalg.norm(np.asarray(shape, dtype=float) * np.asarray(spacing_mm, float)))


def _check_pair(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]) -> tuple:
    for label, mask in (("prediction", pred), ("truth", truth)):
        if not isinstance(mask, np.ndarray) or mask.dtype != bool:
            found = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
            raise TypeError(f"{label} must be a boolean numpy array (use binarise()), not {found}")
        if mask.ndim != 3:
            raise InputError(f"{label} must be a 3D mask, found {mask.ndim} dimensions (shape {mask.shape})")
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"spacing must be three positive numbers in mm, found {spacing_mm}")
    return spacing


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float], *, tolerance_mm: float = SURFACE_DICE_TOLERANCE_MM
) -> CaseMetrics:
    """The challenge figures for one case.

    ``pred`` and ``truth`` are boolean 3D masks of the same shape (see ``binarise``);
    ``spacing_mm`` is the voxel size in mm along the arrays' own axes (for arrays from SimpleITK's
    ``GetArrayFromImage``, that is (z, y, x): ``GetSpacing()[::-1]``). The same spacing gives the
    distances, the image diagonal penalty and the voxel volume. Empty and uniform masks follow the
    table in the module docstring; everything else is the straight ``surface_distance`` result.
    """
    spacing = _check_pair(pred, truth, spacing_mm)
    voxel_volume = float(np.prod(spacing))
    pred_count = int(np.count_nonzero(pred))
    truth_count = int(np.count_nonzero(truth))
    volumes = {"pred_volume": pred_count * voxel_volume, "truth_volume": truth_count * voxel_volume}

    if pred_count == 0 and truth_count == 0:
        return CaseMetrics(1.0, 1.0, 0.0, 0.0, rule="both empty", **volumes)
    penalty = image_diagonal_mm(pred.shape, spacing)
    if pred_count == 0 or pred_count == pred.size:
        return CaseMetrics(0.0, 0.0, penalty, penalty, rule="uniform prediction", **volumes)
    if truth_count == 0:
        return CaseMetrics(0.0, 0.0, penalty, penalty, rule="empty truth", **volumes)

    from surface_distance import metrics as sd  # imported late: scipy is slow to import

    distances = sd.compute_surface_distances(truth, pred, spacing)
    gt_to_pred, pred_to_gt = sd.compute_average_surface_distance(distances)
    return CaseMetrics(
        dice=float(sd.compute_dice_coefficient(truth, pred)),
        surface_dice=float(sd.compute_surface_dice_at_tolerance(distances, tolerance_mm)),
        hd95=float(sd.compute_robust_hausdorff(distances, HAUSDORFF_PERCENTILE)),
        masd=float((gt_to_pred + pred_to_gt) / 2.0),
        rule="surface-distance",
        **volumes,
    )


def aggregate(cases: Sequence[CaseMetrics]) -> Aggregate:
    """The challenge's aggregate over ``cases``: the mean Dice, surface Dice, HD95 (mm) and MASD
    (mm), and the tumour-burden RMSE sqrt(mean((pred_volume - truth_volume)^2)) in mm^3.

    Raises ``ValueError`` for an empty sequence (there is nothing to average).
    """
    if len(cases) == 0:
        raise ValueError("aggregate() needs at least one case, got none")
    errors = np.array([c.pred_volume - c.truth_volume for c in cases], dtype=float)
    return Aggregate(
        dice=float(np.mean([c.dice for c in cases])),
        surface_dice=float(np.mean([c.surface_dice for c in cases])),
        hd95=float(np.mean([c.hd95 for c in cases])),
        masd=float(np.mean([c.masd for c in cases])),
        volume_rmse=float(np.sqrt(np.mean(errors**2))),
        n_cases=len(cases),
    )


def positions(values: Sequence[float], *, higher_is_better: bool) -> list[int]:
    """Competition positions of ``values`` (1 = best; equal values share the best position, and
    the next position skips: 0.9, 0.9, 0.8 -> 1, 1, 3). Equality is exact."""
    signed = [v if higher_is_better else -v for v in values]
    return [1 + sum(other > mine for other in signed) for mine in signed]


def leaderboard(results: Mapping[str, Aggregate]) -> list[LeaderboardEntry]:
    """Rank submissions the challenge's way.

    ``results`` maps a submission's name to its ``Aggregate``. For each figure in ``METRIC_NAMES``
    every submission gets its position among all of them (``positions``); its score is the mean
    of the five positions. Returned best score first (ties keep the input order), each with its
    overall rank by score (ties share the best rank).
    """
    names = list(results)
    per_metric = {
        metric: positions([getattr(results[n], metric) for n in names], higher_is_better=HIGHER_IS_BETTER[metric])
        for metric in METRIC_NAMES
    }
    scores = [float(np.mean([per_metric[m][i] for m in METRIC_NAMES])) for i in range(len(names))]
    ranks = positions(scores, higher_is_better=False)
    entries = [
        LeaderboardEntry(name=n, positions={m: per_metric[m][i] for m in METRIC_NAMES}, score=scores[i], rank=ranks[i])
        for i, n in enumerate(names)
    ]
    return sorted(entries, key=lambda e: e.rank)
