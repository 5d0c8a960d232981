"""A replica of the winners' released weights (Zenodo record 17212158), made by script: nothing is downloaded.

The release (their repository's README) holds two nnU-Net v2 results folders:

- Task 1 ``Dataset901_PANTHER/nnUNetTrainer1e3__nnUNetResEncUNetLPlansPancCTMultiTalentV2__3d_fullres_iso1x1x1``,
  folds 0-5, ``checkpoint_best.pth``;
- Task 2 ``Dataset902_PANTHER_HR/nnUNetTrainer1e3__nnUNetResEncUNetLPlansTask1PancCTMultiTalentV2__3d_fullres_iso1x1x1``,
  folds 0-4, ``checkpoint_best.pth``.

The replica has those folder names, fold counts and file names, checkpoints laid out as nnU-Net's trainer
saves them (``network_weights``, ``optimizer_state`` with SGD momentum buffers as large as the weights,
``grad_scaler_state``, ``logging``, ``_best_ema``, ``current_epoch``, ``init_args``, ``trainer_name``,
``inference_allowed_mirroring_axes``), and each task packed as nnU-Net's pretrained-model zip (what
``nnUNetv2_export_model_to_zip`` writes and ``nnUNetv2_install_pretrained_model_from_zip`` takes: names
relative to ``nnUNet_results``, ``plans.json``, ``dataset.json``, ``dataset_fingerprint.json`` per folder,
``checkpoint``, ``progress.png`` and ``validation/summary.json`` per fold).

Weights are random, from the ResEnc-L plans at 1 mm isotropic with a 192^3 patch
(``benchmarks/data/resencl-l-iso1mm-192``, the winners' configuration, 102.35 M parameters):

- ``--size full``: that network (about 0.8 GB a checkpoint): real sizes and timings, not real masks;
- ``--size tiny`` (the default, and the tests'): the same layout with features / 32 and a 64^3 patch:
  kilobytes, seconds.

What is a guess: the real archives' file names (here ``<Dataset>.zip``), the configuration's content
(here it inherits ``3d_fullres``, as a custom nnU-Net configuration does) and what else the real zips
carry. Command line::

    python resources/release_replica.py --output /tmp/replica                 # tiny, both tasks
    python resources/release_replica.py --output /tmp/replica --size full --tasks t1
    python resources/release_replica.py --output /tmp/replica --zoo           # Task 1 from the demo zoo
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PLANS_DIR = ROOT / "benchmarks" / "data" / "resencl-l-iso1mm-192"
ZOO_T1 = ROOT / "weights" / "Dataset901_PhantomT1"
CONFIGURATION = "3d_fullres_iso1x1x1"
CHECKPOINT = "checkpoint_best.pth"
TRAINER = "nnUNetTrainer1e3"
TINY_DIVISOR = 32
TINY_PATCH = (64, 64, 64)  # five stride-2 stages: a 2^3 bottleneck (instance norm needs more than 1 voxel)
# nnU-Net's trainer: SGD, Nesterov momentum 0.99, weight decay 3e-5, fp16 grad scaler on CUDA.
SGD_GROUP = {
    "lr": 1e-3,
    "momentum": 0.99,
    "dampening": 0,
    "weight_decay": 3e-5,
    "nesterov": True,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": None,
}
GRAD_SCALER_STATE = {
    "scale": 65536.0,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "_growth_tracker": 0,
}


@dataclass(frozen=True)
class ReleaseModel:
    """One results folder of the release."""

    task: str
    dataset: str
    plans_name: str
    folds: tuple[int, ...]

    @property
    def folder(self) -> str:
        """Relative to the weights root (nnU-Net's ``nnUNet_results``)."""
        return f"{self.dataset}/{TRAINER}__{self.plans_name}__{CONFIGURATION}"

    @property
    def archive_name(self) -> str:
        return f"{self.dataset}.zip"


RELEASE = {
    "t1": ReleaseModel("t1", "Dataset901_PANTHER", "nnUNetResEncUNetLPlansPancCTMultiTalentV2", (0, 1, 2, 3, 4, 5)),
    "t2": ReleaseModel(
        "t2", "Dataset902_PANTHER_HR", "nnUNetResEncUNetLPlansTask1PancCTMultiTalentV2", (0, 1, 2, 3, 4)
    ),
}


def release_plans(model: ReleaseModel, *, size: str = "tiny", base: dict | None = None) -> dict:
    """The replica's plans.json: ``base`` (default: the ResEnc-L plans, shrunk for ``tiny``) under the
    release's plans name, with the release's configuration inheriting ``3d_fullres``."""
    from model_factory import shrink

    plans = copy.deepcopy(base) if base is not None else json.loads((PLANS_DIR / "plans.json").read_text())
    if base is None and size == "tiny":
        plans = shrink(plans, divisor=TINY_DIVISOR)
        plans["configurations"]["3d_fullres"]["patch_size"] = list(TINY_PATCH)
    elif size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    plans["dataset_name"] = model.dataset
    plans["plans_name"] = model.plans_name
    plans["configurations"][CONFIGURATION] = {
        "inherits_from": "3d_fullres",
        "data_identifier": f"{model.plans_name}_{CONFIGURATION}",
    }
    return plans


def nnunet_checkpoint(network, *, plans: dict, dataset_json: dict, fold: int, seed: int) -> dict:
    """A checkpoint as nnU-Net's trainer writes it (``nnUNetTrainer.save_checkpoint``), with random SGD
    momentum buffers (the optimizer state is as large as the weights, as in a real one)."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    parameters = list(network.parameters())
    optimizer_state = {
        "state": {
            i: {"momentum_buffer": 1e-3 * torch.randn(p.shape, generator=generator)} for i, p in enumerate(parameters)
        },
        "param_groups": [{**SGD_GROUP, "params": list(range(len(parameters)))}],
    }
    dice = [np.float64(0.5 + 0.001 * e) for e in range(3)]
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer_state,
        "grad_scaler_state": dict(GRAD_SCALER_STATE),
        "logging": {
            "mean_fg_dice": dice,
            "ema_fg_dice": dice,
            "dice_per_class_or_region": [[float(d)] for d in dice],
            "train_losses": [np.float64(-0.5)] * 3,
            "val_losses": [np.float64(-0.4)] * 3,
            "lrs": [1e-3] * 3,
            "epoch_start_timestamps": [0.0] * 3,
            "epoch_end_timestamps": [1.0] * 3,
        },
        "_best_ema": np.float64(0.502),
        "current_epoch": 1000,
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": fold,
            "dataset_json": dataset_json,
            "device": torch.device("cuda"),
        },
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def write_model_folder(results_root: Path, model: ReleaseModel, *, size: str = "tiny", seed: int = 0) -> Path:
    """``results_root/<model.folder>`` with random-weight folds; returns the folder."""
    import torch

    from model_factory import _perturb_norms, network_from_plans

    plans = release_plans(model, size=size)
    dataset_json = json.loads((PLANS_DIR / "dataset.json").read_text())
    folder = _folder_files(results_root, model, plans, dataset_json)
    for fold in model.folds:
        torch.manual_seed(seed * 100 + fold)
        network = network_from_plans(
            plans, len(dataset_json["labels"]), configuration=CONFIGURATION, deep_supervision=True
        )
        _perturb_norms(network, seed * 100 + fold)  # random networks that do not predict one class everywhere
        _write_fold(
            folder,
            fold,
            nnunet_checkpoint(network, plans=plans, dataset_json=dataset_json, fold=fold, seed=seed * 100 + fold),
        )
        del network
    return folder


def zoo_release_folder(results_root: Path, zoo_t1: Path = ZOO_T1) -> Path:
    """The demo zoo's six trained Task 1 checkpoints (one plans.json) as folds 0-5 of the release's Task 1
    folder: a release-like folder with trained weights. Returns the folder."""
    import torch

    from model_factory import network_from_plans

    sources = sorted(zoo_t1.glob("*/fold_*/checkpoint_*.pth"))
    plans_files = {(s.parents[1] / "plans.json").read_text() for s in sources}
    if len(sources) != 6 or len(plans_files) != 1:
        raise SystemExit(
            f"expected six zoo checkpoints sharing one plans.json under {zoo_t1}, found "
            f"{len(sources)} with {len(plans_files)} plans"
        )
    model = RELEASE["t1"]
    plans = release_plans(model, base=json.loads(plans_files.pop()))
    dataset_json = json.loads((sources[0].parents[1] / "dataset.json").read_text())
    folder = _folder_files(results_root, model, plans, dataset_json)
    for fold, source in zip(model.folds, sources):
        network = network_from_plans(
            plans, len(dataset_json["labels"]), configuration=CONFIGURATION, deep_supervision=True
        )
        network.load_state_dict(torch.load(source, map_location="cpu", weights_only=True)["network_weights"])
        _write_fold(
            folder, fold, nnunet_checkpoint(network, plans=plans, dataset_json=dataset_json, fold=fold, seed=fold)
        )
    return folder


def _folder_files(results_root: Path, model: ReleaseModel, plans: dict, dataset_json: dict) -> Path:
    folder = Path(results_root) / model.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=4))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=4))
    shutil.copy(PLANS_DIR / "dataset_fingerprint.json", folder / "dataset_fingerprint.json")
    return folder


def _write_fold(folder: Path, fold: int, checkpoint: dict) -> None:
    import torch

    fold_dir = folder / f"fold_{fold}"
    (fold_dir / "validation").mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, fold_dir / CHECKPOINT)
    (fold_dir / "progress.png").write_bytes(_grey_png())  # nnU-Net's export zips each fold's training curve
    (fold_dir / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}}))


def _grey_png() -> bytes:
    """A valid 1 x 1 grey PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
    )


def pack_release_zip(results_root: Path, model: ReleaseModel, output: Path) -> Path:
    """``output``: the folder packed as ``nnUNetv2_export_model_to_zip`` packs it (deflated, names relative to
    the results root, per fold its checkpoint, progress.png and validation/summary.json, then the folder's
    plans.json, dataset_fingerprint.json and dataset.json)."""
    results_root = Path(results_root)
    folder = results_root / model.folder
    names = []
    for fold in model.folds:
        names += [f"fold_{fold}/{CHECKPOINT}", f"fold_{fold}/progress.png", f"fold_{fold}/validation/summary.json"]
    names += ["plans.json", "dataset_fingerprint.json", "dataset.json"]
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(folder / name, (folder / name).relative_to(results_root).as_posix())
    return output


def build_replica(output: Path, *, tasks=("t1", "t2"), size: str = "tiny", zoo: bool = False) -> dict[str, Path]:
    """``output/results`` (the installed layout) and ``output/<Dataset>.zip`` per task; returns {task: zip}."""
    results = Path(output) / "results"
    archives = {}
    for task in tasks:
        model = RELEASE[task]
        if zoo and task == "t1":
            zoo_release_folder(results)
        else:
            write_model_folder(results, model, size=size)
        archives[task] = pack_release_zip(results, model, Path(output) / model.archive_name)
    return archives


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a replica of the winners' released weights and its zips.")
    parser.add_argument("--output", type=Path, required=True, help="folder for results/ and the <Dataset>.zip files")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--tasks", nargs="+", choices=sorted(RELEASE), default=sorted(RELEASE))
    parser.add_argument("--zoo", action="store_true", help="Task 1 from the demo zoo's six trained checkpoints")
    args = parser.parse_args(argv)
    for task, archive in build_replica(args.output, tasks=args.tasks, size=args.size, zoo=args.zoo).items():
        print(f"{task}: {archive} ({archive.stat().st_size / 1024**2:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
