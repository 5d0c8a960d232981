"""The winning method's configuration at the largest Task 1 size, for bench_cpu_side.py and bench_gpu.py.

Plans: ``benchmarks/data/resencl-l-iso1mm-192`` (ResEnc-L, 1 mm isotropic, patch 192^3, 3 classes).
Image: 88 x 466 x 570 voxels (z, y, x) at 3.0 x 0.69 x 0.69 mm, the largest Task 1 image of the
organisers' fingerprint; at 1 mm it is 264 x 322 x 393, 2 x 3 x 4 = 24 tiles per member at step 0.5.
Members: ``members`` members of one random-weight fold (the engine builds and runs each as its own
member, so the work is that of ``members`` distinct folds; only one checkpoint is written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PLANS_DIR = ROOT / "benchmarks" / "data" / "resencl-l-iso1mm-192"
MODEL = "Dataset090_PantherTask1/nnUNetTrainer__nnUNetResEncUNetLPlans__3d_fullres"
LARGEST_T1_ZYX = (88, 466, 570)
LARGEST_T1_SPACING_ZYX = (3.0, 0.69, 0.69)
TILES_PER_MEMBER = 24  # of the largest case, checked by the benchmarks against the engine's count


def load_winner_plans(*, divisor: int = 1, patch: tuple[int, int, int] | None = None) -> tuple[dict, dict]:
    """(plans, dataset.json); ``divisor`` > 1 shrinks the features per stage, ``patch`` replaces the patch."""
    from model_factory import shrink

    plans = json.loads((PLANS_DIR / "plans.json").read_text())
    dataset = json.loads((PLANS_DIR / "dataset.json").read_text())
    if divisor > 1:
        plans = shrink(plans, divisor=divisor)
    if patch is not None:
        plans["configurations"]["3d_fullres"]["patch_size"] = list(patch)
    return plans, dataset


def build_workload(
    root: Path,
    *,
    members: int,
    divisor: int = 1,
    patch=None,
    shape_zyx=LARGEST_T1_ZYX,
    spacing_zyx=LARGEST_T1_SPACING_ZYX,
) -> tuple[Path, Path, Path]:
    """Write a model folder (``members`` random folds), a config and the image; returns (weights, config, image)."""
    import SimpleITK as sitk

    from model_factory import config_dict, make_model_folder, member

    plans, dataset = load_winner_plans(divisor=divisor, patch=patch)
    weights = root / "weights"
    make_model_folder(weights, MODEL, plans=plans, labels=dataset["labels"], folds=(0,), trainer_name="nnUNetTrainer")
    roles = ["all-rounder"] * 3 + ["volume"] * 2 + ["boundary"]
    config = root / "ensemble_config.json"
    config.write_text(
        json.dumps(config_dict([member(f"m{i}", MODEL, fold=0, role=roles[i % 6]) for i in range(members)]))
    )
    image = root / "case.mha"
    sitk.WriteImage(abdomen_like_image(shape_zyx, spacing_zyx), str(image))
    return weights, config, image


def abdomen_like_image(shape_zyx, spacing_zyx, seed: int = 0):
    """An MR-like float32 volume: a body ellipse with smooth texture in dim noise (an MR image's
    background is noise, not zeros, so nnU-Net's crop to non-zero keeps the whole field of view and
    the largest case keeps its 24 tiles per member), axis-aligned."""
    import SimpleITK as sitk
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=tuple(max(2, s // 16) for s in shape_zyx)).astype(np.float32)
    texture = zoom(coarse, [s / c for s, c in zip(shape_zyx, coarse.shape)], order=1)[
        : shape_zyx[0], : shape_zyx[1], : shape_zyx[2]
    ]
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape_zyx], indexing="ij", sparse=True)
    body = (yy / 0.8) ** 2 + (xx / 0.9) ** 2 < 1
    array = np.where(body, 400 + 120 * texture, 20 + 5 * np.abs(texture)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    return image


def tile_flops(plans: dict, num_classes: int) -> float:
    """Floating-point operations of one forward pass of one patch (multiply-add = 2), counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model_factory import network_from_plans

    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    with torch.device("meta"):
        network = network_from_plans(plans, num_classes, allow_init=False)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            network(torch.zeros((1, 1, *patch)))
    return float(counter.get_total_flops())
