"""Evidence for the per-case quality score (docs/quality.md): does a low score mean a bad mask?

Phantoms (resources/phantoms.py) under shifts the demo models were not trained on, segmented by the
default ensemble; each case's quality score is compared with its Dice against the phantom's truth:

- shifts: ``clean``, ``noise`` (Rician noise of 25 % of the pancreas signal), ``bias`` (a strong
  multiplicative field, up to x4.5 across the field of view), ``ghosting`` (two attenuated copies shifted
  along the phase-encoding axis, as motion makes), ``resolution`` (voxels twice as large), ``other_task``
  (a Task 2 image given to Task 1 and the reverse), ``no_tumour`` (the tumour painted with pancreas
  intensity; the truth is empty), ``small_tumour`` (the tumour shrunk to 30 %: 5-14 mm);
- ``--cases`` per shift and task (default 8: 64 per task); every image is cropped around its pancreas
  (``--margin-mm``) to keep the run short;
- seeds split by parity: even seeds are the calibration half (they choose the review threshold: the one
  with the best Youden index for Dice < 0.5), odd seeds the test half (Spearman rank correlation of
  score and Dice, AUROC of the score for Dice < 0.5, and the flag's sensitivity and specificity at the
  calibrated threshold), overall and per shift;
- and the real AMOS sample (test/samples/t1-amos_0540): what the score says on a real scan.

Dice: the challenge's, except that an empty mask on an empty truth counts 1 (the no-tumour shift).
One command (about 20-30 minutes on 2 shared CPU cores)::

    nice .venv/bin/python benchmarks/bench_quality.py --out work/quality

Writes ``<out>/cases.json`` (every case's measures and Dice) and ``<out>/summary.json``; prints the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "resources"))

import phantoms  # noqa: E402

from pantherseg.api import segment  # noqa: E402
from pantherseg.engine.quality import score  # noqa: E402

SHIFTS = ("clean", "noise", "bias", "ghosting", "resolution", "other_task", "no_tumour", "small_tumour")
AMOS = ROOT / "test" / "samples" / "t1-amos_0540" / "input"
FIRST_SEED = 3000  # outside every training and held-out range of resources/phantoms.py


def seeds(shift: str, cases: int) -> list[int]:
    return [FIRST_SEED + 100 * SHIFTS.index(shift) + i for i in range(cases)]


def make_case(task: str, shift: str, seed: int, margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """(image, tumour truth uint8) of one shifted phantom, cropped around its pancreas."""
    source_task = {"t1": "t2", "t2": "t1"}[task] if shift == "other_task" else task
    edit = {"no_tumour": _hide_tumour, "small_tumour": _shrink_tumour}.get(shift)
    image, label = _phantom(seed, source_task, voxel_scale=2.0 if shift == "resolution" else 1.0, edit=edit)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    labels = sitk.GetArrayFromImage(label)
    rng = np.random.default_rng(seed)
    signal = float(np.median(array[labels > 0]))
    if shift == "noise":
        sd = 0.25 * signal
        array = np.hypot(array + rng.normal(0, sd, array.shape), rng.normal(0, sd, array.shape)).astype(np.float32)
    elif shift == "bias":
        z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in array.shape), indexing="ij")
        array *= np.exp(0.75 * x + 0.5 * y + 0.25 * z).astype(np.float32)
    elif shift == "ghosting":
        ny = array.shape[1]
        array = array + 0.35 * np.roll(array, ny // 4, axis=1) + 0.2 * np.roll(array, -ny // 3, axis=1)
    truth = (labels == phantoms.LABELS["tumor"]).astype(np.uint8)
    if shift == "no_tumour":
        truth[:] = 0
    out_image, out_truth = sitk.GetImageFromArray(array.astype(np.float32)), sitk.GetImageFromArray(truth)
    for out in (out_image, out_truth):
        out.CopyInformation(image)
    return _crop(out_image, labels > 0, margin_mm), _crop(out_truth, labels > 0, margin_mm)


def _phantom(seed: int, task: str, *, voxel_scale: float, edit=None):
    """phantoms.make_phantom, with ``edit`` applied to the drawn anatomy before it is painted."""
    if edit is None:
        return phantoms.make_phantom(seed, task, voxel_scale=voxel_scale)
    draw = phantoms._draw_anatomy

    def edited(rng, which):
        anatomy = draw(rng, which)
        edit(anatomy)
        return anatomy

    phantoms._draw_anatomy = edited
    try:
        return phantoms.make_phantom(seed, task, voxel_scale=voxel_scale)
    finally:
        phantoms._draw_anatomy = draw


def _hide_tumour(anatomy: dict) -> None:
    anatomy["tumour_contrast"] = 1.0  # the pancreas's own intensity: nothing to see


def _shrink_tumour(anatomy: dict, factor: float = 0.3) -> None:
    centre, diameter, rotation, lobes = anatomy["tumour"]
    lobes = [(centre + (c - centre) * factor, r * factor, rot) for c, r, rot in lobes]
    anatomy["tumour"] = (centre, diameter * factor, rotation, lobes)


def _crop(image: sitk.Image, region_zyx: np.ndarray, margin_mm: float) -> sitk.Image:
    spacing = np.array(image.GetSpacing())  # x, y, z
    hits = np.argwhere(region_zyx)[:, ::-1]  # x, y, z
    margin = np.ceil(margin_mm / spacing).astype(int)
    low = np.maximum(hits.min(0) - margin, 0)
    high = np.minimum(hits.max(0) + margin + 1, np.array(image.GetSize()))
    return image[int(low[0]) : int(high[0]), int(low[1]) : int(high[1]), int(low[2]) : int(high[2])]


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def run_task(task: str, cases: int, out: Path, margin_mm: float) -> list[dict]:
    images, truths, masks = out / task / "images", out / task / "truth", out / task / "masks"
    for folder in (images, truths):
        folder.mkdir(parents=True, exist_ok=True)
    names = {}
    started = time.perf_counter()
    for shift in SHIFTS:
        for seed in seeds(shift, cases):
            name = f"{task}_{shift}_{seed}"
            names[name] = (shift, seed)
            if not (truths / f"{name}.mha").exists():
                image, truth = make_case(task, shift, seed, margin_mm)
                sitk.WriteImage(image, str(images / f"{name}.mha"), useCompression=True)
                sitk.WriteImage(truth, str(truths / f"{name}.mha"), useCompression=True)
    logging.warning("%s: %d cases made in %.0f s", task, len(names), time.perf_counter() - started)
    started = time.perf_counter()
    results = segment(images, output_dir=masks, task=task, device="cpu", report_dir=masks, time_budget_s=float("inf"))
    logging.warning("%s: %d cases segmented in %.0f s", task, len(results), time.perf_counter() - started)
    rows = []
    for result in results:
        name = result.input.name[: -len(".mha")]
        shift, seed = names[name]
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(result.output))) > 0
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truths / f"{name}.mha"))) > 0
        quality = result.report.quality
        rows.append(
            {
                "task": task,
                "shift": shift,
                "seed": seed,
                "half": "calibration" if seed % 2 == 0 else "test",
                "dice": round(dice(predicted, truth), 4),
                "score": quality["score"],
                "truth_ml": round(
                    float(truth.sum() * np.prod(sitk.ReadImage(str(truths / f"{name}.mha")).GetSpacing())) / 1000, 3
                ),
                "measures": quality["measures"],
                "reasons": quality["reasons"],
            }
        )
    return rows


def auroc(scores: np.ndarray, bad: np.ndarray) -> float | None:
    """AUROC of a low score for the bad cases (Mann-Whitney); None without both classes."""
    if bad.all() or not bad.any():
        return None
    ranks = stats.rankdata(-scores)
    n_bad, n_good = int(bad.sum()), int((~bad).sum())
    return float((ranks[bad].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


def choose_threshold(rows: list[dict]) -> float:
    """The review threshold with the best Youden index (sensitivity + specificity - 1) for Dice < 0.5."""
    scores = np.array([r["score"] for r in rows])
    bad = np.array([r["dice"] < 0.5 for r in rows])
    ordered = np.unique(scores)
    candidates = np.concatenate([[0.0], (ordered[1:] + ordered[:-1]) / 2, [1.0]])  # between neighbouring scores
    best, best_j = 0.5, -1.0
    for threshold in candidates:
        flagged = scores < threshold
        sensitivity = flagged[bad].mean() if bad.any() else 0.0
        specificity = (~flagged[~bad]).mean() if (~bad).any() else 0.0
        if sensitivity + specificity - 1 > best_j:
            best, best_j = float(threshold), sensitivity + specificity - 1
    return round(best, 3)  # a midpoint: rounding keeps it between the two scores unless they are 0.001 apart


def figures(rows: list[dict], threshold: float) -> dict:
    scores = np.array([r["score"] for r in rows])
    dices = np.array([r["dice"] for r in rows])
    bad = dices < 0.5
    flagged = scores < threshold
    rho = stats.spearmanr(scores, dices).statistic if len(rows) > 2 and np.ptp(scores) and np.ptp(dices) else None
    return {
        "cases": len(rows),
        "bad": int(bad.sum()),
        "mean_dice": round(float(dices.mean()), 3),
        "mean_score": round(float(scores.mean()), 3),
        "spearman": None if rho is None or np.isnan(rho) else round(float(rho), 3),
        "auroc": None if auroc(scores, bad) is None else round(auroc(scores, bad), 3),
        "sensitivity": round(float(flagged[bad].mean()), 3) if bad.any() else None,
        "specificity": round(float((~flagged[~bad]).mean()), 3) if (~bad).any() else None,
    }


def table(title: str, groups: dict[str, dict]) -> str:
    lines = [
        f"### {title}",
        "",
        "| group | cases | Dice<0.5 | mean Dice | mean score | Spearman | AUROC | sensitivity | specificity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in groups.items():
        shown = [
            "-" if f[k] is None else f[k]
            for k in ("cases", "bad", "mean_dice", "mean_score", "spearman", "auroc", "sensitivity", "specificity")
        ]
        lines.append(f"| {name} | " + " | ".join(str(v) for v in shown) + " |")
    return "\n".join(lines)


def amos(out: Path) -> dict | None:
    if not AMOS.is_dir():
        return None
    images = sorted((AMOS / "images").rglob("*.mha"))
    result = segment(images[0], output_dir=out / "amos", task="t1", device="cpu", time_budget_s=float("inf"))[0]
    quality = result.report.quality
    return {
        "score": quality["score"],
        "review": quality["review"],
        "reasons": quality["reasons"],
        "measures": quality["measures"],
        "tumour_ml": round(result.report.output.tumor_volume_mm3 / 1000, 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "quality")
    parser.add_argument("--tasks", default="t1,t2")
    parser.add_argument("--cases", type=int, default=8, help="cases per shift and task (default 8: 64 per task)")
    parser.add_argument("--margin-mm", type=float, default=35.0, help="crop margin around the pancreas (mm)")
    parser.add_argument("--reuse", action="store_true", help="only re-analyse <out>/cases.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cases_path = args.out / "cases.json"
    if args.reuse:  # the scores again from the stored measures, with the score as quality.py defines it now
        rows = json.loads(cases_path.read_text())
        for row in rows:
            row["score"] = round(score(row["measures"]), 4)
    else:
        rows = [row for task in args.tasks.split(",") for row in run_task(task, args.cases, args.out, args.margin_mm)]
        args.out.mkdir(parents=True, exist_ok=True)
        cases_path.write_text(json.dumps(rows, indent=1) + "\n")
    calibration = [r for r in rows if r["half"] == "calibration"]
    test = [r for r in rows if r["half"] == "test"]
    threshold = choose_threshold(calibration)
    summary = {"threshold": threshold, "calibration": figures(calibration, threshold), "test": {}}
    print(f"Review threshold chosen on the calibration half ({len(calibration)} cases): {threshold}\n")
    for task in sorted({r["task"] for r in rows}):
        groups = {"all shifts": figures([r for r in test if r["task"] == task], threshold)}
        for shift in SHIFTS:
            chosen = [r for r in test if r["task"] == task and r["shift"] == shift]
            if chosen:
                groups[shift] = figures(chosen, threshold)
        summary["test"][task] = groups
        print(table(f"Task {task}: test half", groups) + "\n")
    summary["test"]["both tasks"] = figures(test, threshold)
    print(table("Both tasks: test half", {"all": summary["test"]["both tasks"]}) + "\n")
    if args.reuse:
        summary["amos"] = json.loads((args.out / "summary.json").read_text()).get("amos")
        if summary["amos"]:
            summary["amos"]["score"] = round(score(summary["amos"]["measures"]), 4)
    else:
        summary["amos"] = amos(args.out)
    print(f"AMOS 0540 (real T1 scan): {json.dumps(summary['amos'])}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
