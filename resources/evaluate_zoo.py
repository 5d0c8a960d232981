"""Held-out quality of the demo zoo, every member alone, and metric-aware selection.

Reproduces the figures in the README (Demo models; Metrics and ensemble selection):

1. writes held-out phantoms (``phantoms.TEST_SEEDS``, never seen in training) and their
   tumour-only truth (the challenge's ground truth is tumour only);
2. runs the default ensemble on them once, keeping every member's probability map and own mask;
3. scores the ensemble and each member alone with the challenge metrics (``pantherseg evaluate``);
4. (``--select``) runs the ensemble on a disjoint set of validation phantoms, lets
   ``pantherseg select`` choose members and weights within the default ensemble's own measured
   time, then scores the selected ensemble on the held-out phantoms next to the default.

    python resources/evaluate_zoo.py --task t1 [--select] [--out work/zoo-eval]

Takes about 10-20 minutes per task on 2 CPU cores with --select.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "resources"))

import phantoms  # noqa: E402

from pantherseg.api import segment  # noqa: E402
from pantherseg.cli import main as cli_main  # noqa: E402
from pantherseg.config import load_config  # noqa: E402
from pantherseg.evaluation.folders import evaluate, format_table  # noqa: E402
from pantherseg.paths import default_config  # noqa: E402

VALIDATION_SEEDS = {"t1": tuple(range(2000, 2010)), "t2": tuple(range(2000, 2010))}


def write_cases(task: str, seeds, folder: Path) -> tuple[Path, Path]:
    """Images in ``folder/images``, tumour-only truth in ``folder/truth``."""
    images, truth = folder / "images", folder / "truth"
    images.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        name = phantoms.case_name(seed, task)
        if (truth / f"{name}.mha").exists():
            continue
        image, label = phantoms.make_phantom(seed, task)
        sitk.WriteImage(image, str(images / f"{name}.mha"), useCompression=True)
        tumour = sitk.Cast(label == phantoms.LABELS["tumor"], sitk.sitkUInt8)
        sitk.WriteImage(tumour, str(truth / f"{name}.mha"), useCompression=True)
    return images, truth


def run_ensemble(task: str, images: Path, out: Path, config: Path, weights: Path | None) -> tuple[Path, Path]:
    masks, members = out / "ensemble", out / "members"
    segment(
        images,
        output_dir=masks,
        task=task,
        config=config,
        weights=weights,
        report_dir=masks,
        member_outputs_dir=members,
        time_budget_s=float("inf"),
    )
    return masks, members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("t1", "t2"), default="t1")
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "zoo-eval")
    parser.add_argument("--config", type=Path, default=default_config())
    parser.add_argument("--weights", type=Path, default=None, help="weights root (default: weights/)")
    parser.add_argument("--cases", type=int, default=10, help="held-out (and validation) phantoms (default: 10)")
    parser.add_argument("--select", action="store_true", help="also run and score metric-aware selection")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    out = args.out / args.task
    config = load_config(args.config)
    member_names = [m.name for m in config.task(args.task).members]

    images, truth = write_cases(args.task, phantoms.TEST_SEEDS[args.task][: args.cases], out / "test")
    masks, members = run_ensemble(args.task, images, out / "test", args.config, args.weights)
    folders = [masks] + [members / name / "masks" for name in member_names]
    result = evaluate(folders, truth, json_path=out / "test-metrics.json")
    print(f"## Task {args.task}: default ensemble and each member alone, {args.cases} held-out phantoms\n")
    print(format_table(result))

    if not args.select:
        return
    val_images, val_truth = write_cases(args.task, VALIDATION_SEEDS[args.task][: args.cases], out / "validation")
    val_masks, val_members = run_ensemble(args.task, val_images, out / "validation", args.config, args.weights)
    reports = [json.loads(p.read_text()) for p in sorted(val_masks.glob("*.report.json"))]
    default_cost = sum(o["network_s"] for r in reports for o in r["members"]) / len(reports)
    selected_config = out / "selected_config.json"
    print(
        f"\n## Selection on {len(reports)} validation phantoms, budget = the default ensemble's own "
        f"network time, {default_cost:.1f} s per case\n"
    )
    cli_main(
        [
            "select",
            "--member-outputs",
            str(val_members),
            "--reports",
            str(val_masks),
            "--gt",
            str(val_truth),
            "--task",
            args.task,
            "--config",
            str(args.config),
            "--out",
            str(selected_config),
            "--budget",
            f"{default_cost:.3f}",
        ]
    )
    selected_masks = out / "test" / "selected"
    segment(
        images,
        output_dir=selected_masks,
        task=args.task,
        config=selected_config,
        weights=args.weights,
        time_budget_s=float("inf"),
    )
    print("\n## Held-out phantoms: default ensemble vs selected ensemble (leaderboard = challenge ranking)\n")
    print(format_table(evaluate([masks, selected_masks], truth, json_path=out / "selection-metrics.json")))


if __name__ == "__main__":
    main()
