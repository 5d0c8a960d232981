"""Train the demo nnU-Net v2 model zoo on synthetic phantoms and ship it to weights/.

One command rebuilds everything (about an hour on 2 CPU cores; see resources/README.md)::

    .venv/bin/python resources/zoo/train_zoo.py --scratch work/zoo

Stages, in order (--stages picks a subset; each is resumable):

1. data   - phantoms in nnU-Net raw format: Dataset900_PhantomPretrainT1 (pretraining),
            Dataset901_PhantomT1, Dataset902_PhantomT2;
2. plan   - nnU-Net's fingerprint and ExperimentPlanner on Task 1, shrunk to nnUNetZooPlans
            (plans.py), moved to the other two datasets like nnUNetv2_move_plans_between_datasets,
            then nnU-Net's own preprocessing of all three;
3. train  - every fold of RECIPE with the short trainers of trainers.py on the CPU, in-process as
            nnunetv2/run/run_training.py does (nnUNetv2_train cannot find trainers outside the
            installed package). The cascade of the winning method, scaled down: a foundation model
            on the pretraining phantoms (fold "all"), Task 1 models fine-tuned from it, Task 2
            models fine-tuned from Task 1 (nnU-Net's -pretrained_weights); folds whose
            checkpoint_final.pth exists are skipped;
4. ship   - stripped checkpoints, plans.json and dataset.json to --weights, ensemble_config.json,
            each member's OpenVINO conversion (pantherseg export-openvino), and a table of nnU-Net's own validation Dice to <scratch>/validation_dice.json.

--token shrinks everything to a smoke run (3 coarse phantoms per task, 1 epoch of 2 iterations per
fold) that exercises every step; the tests use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

logger = logging.getLogger("train_zoo")

STAGES = ("data", "plan", "train", "ship")
NUM_THREADS = 2  # processes for phantom generation, preprocessing and data augmentation
# One intra-op thread for training: with 2 threads on 2 shared cores one iteration took 3-6 s
# instead of 0.45 s (measured), because OpenMP threads wait for each other whenever a core is busy.
TORCH_THREADS = 1


@dataclass(frozen=True)
class ModelSpec:
    """One trained model of the zoo: its trainer, its folds, what is shipped, where its weights start.

    pretrained_from is (dataset key, trainer, fold) of the checkpoint_final.pth to start from;
    checkpoint None means the model is a training step only and is not shipped.
    """

    task: str
    role: str
    trainer: str
    folds: tuple[int | str, ...]
    checkpoint: str | None
    pretrained_from: tuple[str, str, int | str] | None = None


FOUNDATION = ("pretrain", "nnUNetTrainer_ZooFoundation", "all")
# The cascade and ensemble of the winning method, scaled down. Shipped members keep this order in
# ensemble_config.json (priority order). Every Task 2 fold starts from fold 0 of its Task 1 model.
RECIPE = (
    ModelSpec("pretrain", "foundation", "nnUNetTrainer_ZooFoundation", ("all",), None),
    ModelSpec(
        "t1", "all-rounder", "nnUNetTrainer_ZooAllRounder", (0, 1, 2), "checkpoint_best.pth", pretrained_from=FOUNDATION
    ),
    ModelSpec("t1", "volume", "nnUNetTrainer_ZooVolumeDA5", (0, 1), "checkpoint_final.pth", pretrained_from=FOUNDATION),
    ModelSpec(
        "t1", "boundary", "nnUNetTrainer_ZooBoundaryDA5ord0", (0,), "checkpoint_final.pth", pretrained_from=FOUNDATION
    ),
    ModelSpec(
        "t2",
        "all-rounder",
        "nnUNetTrainer_ZooT2AllRounderDA5",
        (0,),
        "checkpoint_best.pth",
        pretrained_from=("t1", "nnUNetTrainer_ZooVolumeDA5", 0),
    ),
    ModelSpec(
        "t2",
        "volume",
        "nnUNetTrainer_ZooT2VolumeDA5Segord0",
        (0, 1, 2, 3),
        "checkpoint_final.pth",
        pretrained_from=("t1", "nnUNetTrainer_ZooAllRounder", 0),
    ),
)
TOKEN_SEEDS = {"pretrain": [500, 501, 502], "t1": [0, 1, 2], "t2": [0, 1, 2]}
TOKEN_VOXEL_SCALE = 2.5


def configure_environment(scratch: Path) -> dict[str, Path]:
    """Point nnU-Net at the scratch folders; must run before nnunetv2 is first imported."""
    paths = {name: scratch / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    os.environ.setdefault("nnUNet_n_proc_DA", str(NUM_THREADS))
    os.environ.setdefault("nnUNet_def_n_proc", str(NUM_THREADS))
    os.environ.setdefault("OMP_NUM_THREADS", str(TORCH_THREADS))
    if "nnunetv2.paths" in sys.modules:
        raise RuntimeError("nnunetv2 was imported before its paths were set; run the zoo in a fresh process")
    return paths


def stage_data(paths: dict[str, Path], token: bool) -> None:
    import datasets
    import phantoms

    full = {
        "pretrain": phantoms.PRETRAIN_SEEDS["t1"],
        "t1": phantoms.TRAIN_SEEDS["t1"],
        "t2": phantoms.TRAIN_SEEDS["t2"],
    }
    for key in datasets.DATASETS:
        seeds = TOKEN_SEEDS[key] if token else list(full[key])
        datasets.write_raw_dataset(
            key, seeds, paths["nnUNet_raw"], num_processes=NUM_THREADS, voxel_scale=TOKEN_VOXEL_SCALE if token else 1.0
        )


def _write_token_splits(preprocessed: Path, names: list[str]) -> None:
    """Five folds over three cases (nnU-Net's own 5-fold split needs at least five)."""
    splits = [
        {"train": [n for n in names if n != names[i % len(names)]], "val": [names[i % len(names)]]} for i in range(5)
    ]
    (preprocessed / "splits_final.json").write_text(json.dumps(splits, indent=2))


def stage_plan(paths: dict[str, Path], token: bool) -> None:
    import datasets
    import plans as zoo_plans
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess_dataset,
    )
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets,
    )

    t1_id, t1_name = datasets.DATASETS["t1"]
    extract_fingerprints(
        [i for i, _ in datasets.DATASETS.values()], num_processes=NUM_THREADS, check_dataset_integrity=False, clean=True
    )
    plan_experiments([t1_id])

    pre = paths["nnUNet_preprocessed"]
    fingerprint = {
        k: json.loads((pre / name / "dataset_fingerprint.json").read_text())
        for k, (_, name) in datasets.DATASETS.items()
    }
    planned = json.loads((pre / t1_name / "nnUNetPlans.json").read_text())
    small = zoo_plans.shrink_plans(planned, "t1", fingerprint["t1"])
    (pre / t1_name / f"{zoo_plans.PLANS_NAME}.json").write_text(json.dumps(small, indent=2))

    for key, (dataset_id, name) in datasets.DATASETS.items():
        if key == "t1":
            continue
        move_plans_between_datasets(t1_id, dataset_id, zoo_plans.PLANS_NAME, zoo_plans.PLANS_NAME)
        shutil.copyfile(paths["nnUNet_raw"] / name / "dataset.json", pre / name / "dataset.json")
        moved_file = pre / name / f"{zoo_plans.PLANS_NAME}.json"
        moved = zoo_plans.retarget_spacing(
            json.loads(moved_file.read_text()), datasets.PHANTOM_TASK[key], fingerprint[key]
        )
        moved_file.write_text(json.dumps(moved, indent=2))

    for dataset_id, name in datasets.DATASETS.values():
        preprocess_dataset(
            dataset_id,
            plans_identifier=zoo_plans.PLANS_NAME,
            configurations=(zoo_plans.CONFIGURATION,),
            num_processes=(NUM_THREADS,),
        )
        if token:
            cases = sorted(p.name[: -len("_0000.mha")] for p in (paths["nnUNet_raw"] / name / "imagesTr").iterdir())
            _write_token_splits(pre / name, cases)


def _train_fold(spec: ModelSpec, fold: int | str, paths: dict[str, Path], token: bool) -> float:
    """Train one fold in-process, then run nnU-Net's validation; returns the wall time in seconds."""
    import datasets
    import plans as zoo_plans
    import torch
    import trainers

    name = datasets.DATASETS[spec.task][1]
    pre = paths["nnUNet_preprocessed"] / name
    plans = json.loads((pre / f"{zoo_plans.PLANS_NAME}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = trainers.TRAINERS[spec.trainer](
        plans=plans,
        configuration=zoo_plans.CONFIGURATION,
        fold=fold,
        dataset_json=dataset_json,
        device=torch.device("cpu"),
    )
    if token:
        trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    start = time.time()
    if spec.pretrained_from is not None:
        key, source_trainer, source_fold = spec.pretrained_from
        source = _results_folder(paths, key, source_trainer) / f"fold_{source_fold}" / "checkpoint_final.pth"
        trainer.initialize()
        load_pretrained(trainer.network, source)
        logger.info("%s fold %s starts from %s", spec.trainer, fold, source)
    trainer.run_training()
    if spec.checkpoint is not None:  # the foundation (fold "all") has no held-out cases to validate on
        trainer.perform_actual_validation(False)
    return time.time() - start


def load_pretrained(network, checkpoint: Path) -> None:
    """nnU-Net's -pretrained_weights, segmentation heads included: one strict load of every tensor.

    nnU-Net re-initialises the 1x1 segmentation heads because pretraining usually has other labels;
    every dataset of the zoo has the same three, and with fresh heads a fine-tuned fold spent its
    whole short budget relearning the tumour (validation Dice under 0.1 after 500 iterations,
    measured). A strict load_state_dict also refuses missing keys and mismatched shapes, the checks
    nnU-Net's loader makes.
    """
    import torch

    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"])


def _results_folder(paths: dict[str, Path], task: str, trainer: str) -> Path:
    import datasets
    import plans as zoo_plans

    return (
        paths["nnUNet_results"]
        / datasets.DATASETS[task][1]
        / f"{trainer}__{zoo_plans.PLANS_NAME}__{zoo_plans.CONFIGURATION}"
    )


def stage_train(paths: dict[str, Path], token: bool, only: set[str] | None) -> None:
    import torch

    torch.set_num_threads(TORCH_THREADS)
    timings_file = paths["nnUNet_results"] / "fold_timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for spec in RECIPE:
        if only and spec.trainer not in only:
            continue
        for fold in spec.folds:
            done = _results_folder(paths, spec.task, spec.trainer) / f"fold_{fold}" / "checkpoint_final.pth"
            if done.exists():
                logger.info("skip %s fold %s: %s exists", spec.trainer, fold, done)
                continue
            logger.info("train %s fold %s", spec.trainer, fold)
            seconds = _train_fold(spec, fold, paths, token)
            timings[f"{spec.trainer}/fold_{fold}"] = round(seconds, 1)
            timings_file.write_text(json.dumps(timings, indent=2))
            logger.info("trained %s fold %s in %.0f s", spec.trainer, fold, seconds)


def members() -> list:
    import datasets
    import plans as zoo_plans
    from ship import Member

    return [
        Member(
            task=s.task,
            role=s.role,
            dataset=datasets.DATASETS[s.task][1],
            trainer=s.trainer,
            plans=zoo_plans.PLANS_NAME,
            configuration=zoo_plans.CONFIGURATION,
            fold=fold,
            checkpoint=s.checkpoint,
        )
        for s in RECIPE
        if s.checkpoint is not None
        for fold in s.folds
    ]


def export_openvino(weights: Path, config: Path) -> None:
    """Ship each member's OpenVINO conversion too, so the CPU default never converts inside a case's budget."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("openvino") is None:
        logger.warning(
            "openvino is not installed: the zoo ships without OpenVINO IR (the CPU route converts "
            "on first use); install pantherseg[openvino] and run `pantherseg export-openvino`"
        )
        return
    subprocess.run(
        [sys.executable, "-m", "pantherseg", "export-openvino", "--config", str(config), "--weights", str(weights)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def stage_ship(paths: dict[str, Path], weights: Path, config: Path) -> None:
    import ship

    shipped = members()
    ship.ship(shipped, paths["nnUNet_results"], weights)
    ship.write_ensemble_config(shipped, config)
    export_openvino(weights, config)
    table = {}
    for m in shipped:
        summary = paths["nnUNet_results"] / m.model_folder / f"fold_{m.fold}" / "validation" / "summary.json"
        if summary.exists():
            per_class = json.loads(summary.read_text())["mean"]
            table[f"{m.model_folder}/fold_{m.fold}"] = {
                "tumour_dice": round(per_class["1"]["Dice"], 4),
                "pancreas_dice": round(per_class["2"]["Dice"], 4),
            }
    (paths["nnUNet_results"].parent / "validation_dice.json").write_text(json.dumps(table, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scratch",
        type=Path,
        default=REPO / "work" / "zoo",
        help="folder for nnUNet_raw/_preprocessed/_results (default: work/zoo)",
    )
    parser.add_argument("--weights", type=Path, default=REPO / "weights", help="where to ship the zoo")
    parser.add_argument(
        "--config", type=Path, default=REPO / "ensemble_config.json", help="ensemble_config.json to write"
    )
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--only", default="", help="comma-separated trainer names to train (default: all)")
    parser.add_argument("--token", action="store_true", help="smoke run: 3 tiny phantoms, 2 iterations per fold")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {STAGES}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    paths = configure_environment(args.scratch.resolve())
    only = {t for t in args.only.split(",") if t} or None
    for stage in STAGES:
        if stage not in stages:
            continue
        start = time.time()
        if stage == "data":
            stage_data(paths, args.token)
        elif stage == "plan":
            stage_plan(paths, args.token)
        elif stage == "train":
            stage_train(paths, args.token, only)
        else:
            stage_ship(paths, args.weights, args.config)
        logger.info("stage %s took %.0f s", stage, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
