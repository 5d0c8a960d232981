"""Turn nnU-Net's own plans into the small "nnUNetZooPlans" the demo zoo trains with.

Why: nnU-Net plans the phantoms like real data (about 1 mm in-plane, a patch of ~48 x 192 x 224 and a
30 M-parameter U-Net), which would take days on two CPU cores. The demo zoo keeps everything nnU-Net
planned (normalisation, resampling functions, transposes, intensity properties, label manager) and
changes only what decides the cost, all in the `3d_fullres` configuration:

- spacing: 3.0 x 2.0 x 2.0 mm (z, y, x) for Task 1, 2.0 x 1.5 x 1.5 mm for Task 2 (the T2 crops are
  small, and their tumours need the finer grid); about 4x fewer voxels than nnU-Net's choice;
- patch: 24 x 80 x 80 voxels (72 x 160 x 160 mm on Task 1: most of the pancreas in-plane);
- network: a 5-stage PlainConvUNet, features 6-12-24-48-64, two convolutions per encoder stage and
  one per decoder stage, 3x3x3 kernels: about 0.5 M parameters, a ~2 MB checkpoint; one training
  iteration (batch 2, forward and backward) takes about 0.5 s on two idle CPU cores, and 1-3 s when
  they are shared (measured), which is what sets these sizes;
- batch size 2, and Dice computed over the batch (batch_dice): the tumour fills about 1 % of a
  patch, and per-sample Dice left a first trial predicting background only after 325 iterations;
- every other configuration (2d, 3d_lowres, cascade) is dropped.

The architecture must be identical for both tasks so Task 1 weights load into Task 2 trainers.
"""

from __future__ import annotations

import copy

import numpy as np

PLANS_NAME = "nnUNetZooPlans"
CONFIGURATION = "3d_fullres"
PATCH_SIZE = [24, 80, 80]
TARGET_SPACING = {"t1": [3.0, 2.0, 2.0], "t2": [2.0, 1.5, 1.5]}
FEATURES = [6, 12, 24, 48, 64]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
BATCH_SIZE = 2


def zoo_architecture(template: dict) -> dict:
    """The reduced PlainConvUNet, keeping nnU-Net's choice of conv/norm/nonlinearity from template."""
    arch = copy.deepcopy(template)
    n = len(FEATURES)
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    kwargs = arch["arch_kwargs"]
    kwargs.update(
        n_stages=n,
        features_per_stage=list(FEATURES),
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[list(s) for s in STRIDES],
        n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[1] * (n - 1),
    )
    for key in ("block", "bottleneck_channels", "stem_channels", "n_blocks_per_stage"):
        kwargs.pop(key, None)
    return arch


def shrink_plans(plans: dict, task: str, fingerprint: dict) -> dict:
    """Return a copy of nnU-Net's plans with only a small 3d_fullres configuration (see module doc).

    fingerprint is the dataset's dataset_fingerprint.json, used to restate the median image size
    at the new spacing (nnU-Net only uses it for information, but it should not lie).
    """
    if task not in TARGET_SPACING:
        raise ValueError(f"task must be one of {sorted(TARGET_SPACING)}, not {task!r}")
    if CONFIGURATION not in plans.get("configurations", {}):
        raise ValueError(
            f"plans have no {CONFIGURATION!r} configuration to shrink; found {sorted(plans.get('configurations', {}))}"
        )
    out = copy.deepcopy(plans)
    config = out["configurations"][CONFIGURATION]
    out["configurations"] = {CONFIGURATION: config}
    out["plans_name"] = PLANS_NAME
    config["data_identifier"] = f"{PLANS_NAME}_{CONFIGURATION}"
    config.pop("inherits_from", None)
    config["spacing"] = list(TARGET_SPACING[task])
    config["patch_size"] = list(PATCH_SIZE)
    config["batch_size"] = BATCH_SIZE
    config["batch_dice"] = True
    config["architecture"] = zoo_architecture(config["architecture"])
    config["median_image_size_in_voxels"] = median_size_at(fingerprint, out["transpose_forward"], TARGET_SPACING[task])
    return out


def retarget_spacing(plans: dict, task: str, fingerprint: dict) -> dict:
    """Plans moved from Task 1 (nnUNetv2_move_plans_between_datasets) with Task 2's spacing.

    Only spacing and the informative median size change; the architecture stays, so the Task 1
    weights still fit.
    """
    out = copy.deepcopy(plans)
    config = out["configurations"][CONFIGURATION]
    config["spacing"] = list(TARGET_SPACING[task])
    config["median_image_size_in_voxels"] = median_size_at(fingerprint, out["transpose_forward"], TARGET_SPACING[task])
    return out


def median_size_at(fingerprint: dict, transpose_forward: list[int], spacing: list[float]) -> list[float]:
    """Median image size in voxels (transposed axis order) once resampled to spacing."""
    spacings = np.array(fingerprint["spacings"])[:, transpose_forward]
    shapes = np.array(fingerprint["shapes_after_crop"])[:, transpose_forward]
    extent_mm = np.median(spacings * shapes, axis=0)
    return [float(round(v)) for v in extent_mm / np.array(spacing)]
