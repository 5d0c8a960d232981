"""Evaluate prediction folders against a truth folder the PANTHER challenge's way.

``evaluate`` is the one API function (the ``pantherseg evaluate`` command calls it): it matches
cases by file name stem, reads each pair with SimpleITK, scores it with ``pantherseg.evaluation.metrics``,
aggregates per prediction folder, ranks the folders when there are several, and optionally writes
a JSON and a CSV file. ``format_table`` renders the result for a terminal.

Files: the image files the rest of the package reads (``pantherseg.io.images.IMAGE_SUFFIXES``:
``.mha``, ``.mhd``, ``.nii.gz``, ``.nii``, ``.nrrd``); ``case_001.mha`` in a prediction folder matches
``case_001.nii.gz`` in the truth folder. Other files, and hidden ones, are ignored. Cases found in only one of the
two folders are reported (``missing_truth`` / ``missing_prediction``), never silently dropped.

Axis order: SimpleITK reports spacing as (x, y, z) and ``GetArrayFromImage`` returns (z, y, x)
arrays, so the spacing is reversed before scoring. ``xyz_spacing_order=True`` passes the (x, y, z)
spacing against the (z, y, x) arrays instead, reproducing the organisers' public script exactly
(distances, surface Dice and the diagonal penalty change on anisotropic images; volumes do not),
for comparison with published numbers.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pantherseg.errors import InputError
from pantherseg.evaluation.metrics import (
    METRIC_NAMES,
    Aggregate,
    CaseMetrics,
    LeaderboardEntry,
    aggregate,
    binarise,
    case_metrics,
    leaderboard,
)
from pantherseg.io.images import IMAGE_SUFFIXES, checked_reader, image_stem, is_image_file, itk_error_line

logger = logging.getLogger(__name__)

SPACING_TOLERANCE_MM = 1e-4
"""Largest spacing difference (per axis, mm) between a prediction and its truth; the organisers'
value."""

MIN_SPACING_MM, MAX_SPACING_MM = 1e-6, 1e4
"""Voxel spacings (mm) a label image may have: beyond them volumes (mm^3) and surface areas
overflow float64 or round to zero, and the metrics would be NaN."""

CSV_COLUMNS = (
    "prediction_folder",
    "case",
    "status",
    "dice",
    "surface_dice",
    "hd95_mm",
    "masd_mm",
    "pred_volume_mm3",
    "truth_volume_mm3",
    "rule",
    "prediction_file",
    "truth_file",
)


@dataclass(frozen=True)
class CaseEvaluation:
    """One scored case: its name (the file stem), the two files and the figures."""

    case: str
    prediction_file: Path
    truth_file: Path
    metrics: CaseMetrics

    def as_dict(self) -> dict:
        """The row as a plain dict (JSON-ready)."""
        return {
            "case": self.case,
            "prediction_file": str(self.prediction_file),
            "truth_file": str(self.truth_file),
            **self.metrics.as_dict(),
        }


@dataclass(frozen=True)
class FolderResult:
    """The result for one prediction folder: scored cases (sorted by name), their aggregate, the
    cases that have a prediction but no truth (``missing_truth``) and those with a truth but no
    prediction (``missing_prediction``)."""

    pred_dir: Path
    cases: list[CaseEvaluation]
    aggregate: Aggregate
    missing_truth: list[str]
    missing_prediction: list[str]

    def as_dict(self) -> dict:
        """The folder's result as a plain dict (JSON-ready)."""
        return {
            "prediction_folder": str(self.pred_dir),
            "cases": [c.as_dict() for c in self.cases],
            "aggregate": self.aggregate.as_dict(),
            "missing_truth": list(self.missing_truth),
            "missing_prediction": list(self.missing_prediction),
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Everything ``evaluate`` found: one ``FolderResult`` per prediction folder (in the order
    given) and, with two or more folders, the leaderboard (best first, entries named by the
    folder path as given)."""

    gt_dir: Path
    xyz_spacing_order: bool
    folders: list[FolderResult]
    leaderboard: list[LeaderboardEntry] | None = field(default=None)

    def as_dict(self) -> dict:
        """The whole result as a plain dict (what the JSON file holds)."""
        out = {
            "truth_folder": str(self.gt_dir),
            "spacing_order": "x,y,z (organisers' script)" if self.xyz_spacing_order else "array order z,y,x",
            "folders": [f.as_dict() for f in self.folders],
        }
        if self.leaderboard is not None:
            out["leaderboard"] = [e.as_dict() for e in self.leaderboard]
        return out


def case_files(folder: Path) -> dict[str, Path]:
    """Map each case name (file name without its image suffix) in ``folder`` to its file.

    Raises ``InputError`` if ``folder`` is not a folder or holds one case twice (e.g.
    ``case_001.mha`` and ``case_001.nii.gz``).
    """
    if not folder.is_dir():
        raise InputError(f"expected a folder of label images, found no folder at {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image_file(path):
            continue
        case = image_stem(path)
        if case in files:
            raise InputError(f"case {case} appears twice in {folder}: {files[case].name} and {path.name}; keep one")
        files[case] = path
    return files


def read_mask(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a 3D label image as a boolean tumour mask in (z, y, x) order with its SimpleITK
    spacing in (x, y, z) order, mm. Raises ``InputError`` for an unreadable, non-3D,
    multi-component or non-binary image (see ``metrics.binarise``)."""
    import SimpleITK as sitk

    reader = checked_reader(path)  # the header checks of ``segment``: links, data files, sizes, truncation
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read {path} as an image: {itk_error_line(str(exc))}") from exc
    spacing = tuple(float(s) for s in image.GetSpacing())
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise InputError(
            f"{path}: voxel spacing {[float(f'{s:.4g}') for s in spacing]} mm (x,y,z) is outside "
            f"[{MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm: volumes and surface areas would overflow "
            f"or vanish; the header is corrupt."
        )
    labels = sitk.GetArrayFromImage(image)  # numpy (z, y, x)
    return binarise(labels, str(path)), spacing


def evaluate_case(case: str, pred_file: Path, truth_file: Path, *, xyz_spacing_order: bool = False) -> CaseEvaluation:
    """Score one case from its two files. Raises ``InputError`` naming the case when the shapes
    or spacings differ."""
    pred, pred_spacing_xyz = read_mask(pred_file)
    truth, truth_spacing_xyz = read_mask(truth_file)
    if pred.shape != truth.shape:
        raise InputError(
            f"case {case}: prediction {pred_file} has shape (z,y,x) {pred.shape}, "
            f"truth {truth_file} has {truth.shape}; they must match"
        )
    if not np.allclose(pred_spacing_xyz, truth_spacing_xyz, rtol=0, atol=SPACING_TOLERANCE_MM):
        raise InputError(
            f"case {case}: prediction {pred_file} has spacing (x,y,z) "
            f"{pred_spacing_xyz} mm, truth {truth_file} has {truth_spacing_xyz} mm; "
            f"they must match"
        )
    spacing = truth_spacing_xyz if xyz_spacing_order else truth_spacing_xyz[::-1]
    return CaseEvaluation(case, pred_file, truth_file, case_metrics(pred, truth, spacing))


def evaluate(
    pred_dirs: list[Path] | Path,
    gt_dir: Path,
    *,
    xyz_spacing_order: bool = False,
    json_path: Path | None = None,
    csv_path: Path | None = None,
) -> EvaluationResult:
    """Score one or more prediction folders against the truth folder ``gt_dir``.

    Every case present in both a prediction folder and ``gt_dir`` is scored (see
    ``pantherseg.evaluation.metrics``); an empty or uniform prediction is scored with the penalty and the
    evaluation goes on. Cases present in only one folder are listed in the result. With several
    prediction folders the result includes the challenge leaderboard; note that folders with
    different case sets are then ranked on different cases (``format_table`` says so).

    ``xyz_spacing_order``: reproduce the organisers' script's spacing order (see module docstring).
    ``json_path`` / ``csv_path``: also write the result there (JSON: ``EvaluationResult.as_dict``;
    CSV: one row per prediction folder and case, missing cases included, columns
    ``CSV_COLUMNS``). Parent folders must exist.

    Raises ``InputError`` for a missing folder, a folder whose cases match none in ``gt_dir``,
    an unreadable or non-binary image, or a case whose shapes or spacings differ.
    """
    pred_dirs = [Path(pred_dirs)] if isinstance(pred_dirs, (str, Path)) else [Path(p) for p in pred_dirs]
    if not pred_dirs:
        raise InputError("expected at least one prediction folder, got none")
    gt_dir = Path(gt_dir)
    truth = case_files(gt_dir)
    if not truth:
        raise InputError(
            f"expected label images ({', '.join(IMAGE_SUFFIXES)}) in the truth folder {gt_dir}, found none"
        )

    folders = []
    for pred_dir in pred_dirs:
        preds = case_files(pred_dir)
        common = sorted(set(preds) & set(truth))
        if not common:
            raise InputError(
                f"no case in {pred_dir} ({len(preds)} label images) has a truth file of the same name in {gt_dir}"
            )
        cases = []
        for case in common:
            logger.info("scoring %s / %s", pred_dir, case)
            cases.append(evaluate_case(case, preds[case], truth[case], xyz_spacing_order=xyz_spacing_order))
        folders.append(
            FolderResult(
                pred_dir=pred_dir,
                cases=cases,
                aggregate=aggregate([c.metrics for c in cases]),
                missing_truth=sorted(set(preds) - set(truth)),
                missing_prediction=sorted(set(truth) - set(preds)),
            )
        )

    board = None
    if len(folders) > 1:
        names = [str(f.pred_dir) for f in folders]
        if len(set(names)) != len(names):
            raise InputError(f"the same prediction folder is given twice: {names}")
        board = leaderboard({name: f.aggregate for name, f in zip(names, folders)})
    result = EvaluationResult(gt_dir, xyz_spacing_order, folders, board)
    if json_path is not None:
        write_json(result, Path(json_path))
    if csv_path is not None:
        write_csv(result, Path(csv_path))
    return result


def write_json(result: EvaluationResult, path: Path) -> None:
    """Write ``result.as_dict()`` to ``path`` as indented JSON."""
    path.write_text(json.dumps(result.as_dict(), indent=2, allow_nan=False) + "\n")


def csv_rows(result: EvaluationResult) -> list[dict]:
    """One dict per (prediction folder, case), keys ``CSV_COLUMNS``: scored cases with status
    ``scored``, then cases with status ``missing_prediction`` or ``missing_truth`` and empty
    figures."""
    rows = []
    for folder in result.folders:
        for c in folder.cases:
            m = c.metrics
            rows.append(
                {
                    "prediction_folder": str(folder.pred_dir),
                    "case": c.case,
                    "status": "scored",
                    "dice": m.dice,
                    "surface_dice": m.surface_dice,
                    "hd95_mm": m.hd95,
                    "masd_mm": m.masd,
                    "pred_volume_mm3": m.pred_volume,
                    "truth_volume_mm3": m.truth_volume,
                    "rule": m.rule,
                    "prediction_file": str(c.prediction_file),
                    "truth_file": str(c.truth_file),
                }
            )
        for status, names in (
            ("missing_prediction", folder.missing_prediction),
            ("missing_truth", folder.missing_truth),
        ):
            for case in names:
                row = dict.fromkeys(CSV_COLUMNS, "")
                row.update(prediction_folder=str(folder.pred_dir), case=case, status=status)
                rows.append(row)
    return rows


def write_csv(result: EvaluationResult, path: Path) -> None:
    """Write ``csv_rows(result)`` to ``path`` with a header line."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(result))


_HEADINGS = {
    "dice": "Dice",
    "surface_dice": "SurfDice@5",
    "hd95": "HD95 mm",
    "masd": "MASD mm",
    "volume_rmse": "RMSE mm3",
}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left=(0,)) -> list[str]:
    """Text columns: those numbered in ``left`` aligned left, the rest right."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(
            str(x).ljust(w) if i in left else str(x).rjust(w) for i, (x, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def format_table(result: EvaluationResult) -> str:
    """Render ``result`` as plain text: for each prediction folder the per-case table, its
    aggregate and its missing cases; then, with several folders, the leaderboard."""
    lines: list[str] = []
    order = "x,y,z as the organisers' script" if result.xyz_spacing_order else "z,y,x (array order)"
    lines.append(f"Truth: {result.gt_dir}   spacing order: {order}")
    header = ["case", "Dice", "SurfDice@5", "HD95 mm", "MASD mm", "pred mm3", "true mm3", "rule"]
    for folder in result.folders:
        lines += ["", f"Predictions: {folder.pred_dir}"]
        rows = [
            [
                c.case,
                f"{c.metrics.dice:.4f}",
                f"{c.metrics.surface_dice:.4f}",
                f"{c.metrics.hd95:.2f}",
                f"{c.metrics.masd:.2f}",
                f"{c.metrics.pred_volume:.1f}",
                f"{c.metrics.truth_volume:.1f}",
                "" if c.metrics.rule == "surface-distance" else c.metrics.rule,
            ]
            for c in folder.cases
        ]
        lines += _table(header, rows, left=(0, len(header) - 1))
        a = folder.aggregate
        lines.append(
            f"Aggregate over {a.n_cases} case(s): Dice {a.dice:.4f}, surface Dice "
            f"{a.surface_dice:.4f}, HD95 {a.hd95:.2f} mm, MASD {a.masd:.2f} mm, "
            f"tumour-burden RMSE {a.volume_rmse:.1f} mm3"
        )
        if folder.missing_prediction:
            lines.append(
                f"No prediction for {len(folder.missing_prediction)} case(s): " + ", ".join(folder.missing_prediction)
            )
        if folder.missing_truth:
            lines.append(f"No truth for {len(folder.missing_truth)} case(s): " + ", ".join(folder.missing_truth))
    if result.leaderboard is not None:
        by_name = {str(f.pred_dir): f.aggregate for f in result.folders}
        lines += ["", "Leaderboard (position per metric, score = mean position, lower is better)"]
        rows = [
            [
                e.name,
                *(f"{getattr(by_name[e.name], m):.4g} ({e.positions[m]})" for m in METRIC_NAMES),
                f"{e.score:.2f}",
                str(e.rank),
            ]
            for e in result.leaderboard
        ]
        lines += _table(["folder", *(_HEADINGS[m] for m in METRIC_NAMES), "score", "rank"], rows)
        if len({tuple(c.case for c in f.cases) for f in result.folders}) > 1:
            lines.append("Note: the folders were scored on different sets of cases.")
    return "\n".join(lines)
