"""Build real nnU-Net v2 result folders with random weights for tests.

The plans are the PANTHER organisers' real ones (tests/data/panther-baseline-plans), optionally
with fewer features per stage so a CPU test runs in seconds; patch size, spacing, normalisation
and resampling stay real. Checkpoints are saved the way nnU-Net's trainer saves them (including
numpy scalars in the training log and a torch.device in init_args) and name a trainer class that
is not installed, like the winners' checkpoints.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data"
BASELINE_PLANS = DATA / "panther-baseline-plans"
UNINSTALLED_TRAINER = "nnUNetTrainer_DA5Segord0_150epochs"


def load_plans(task: str = "task1") -> dict:
    return json.loads((BASELINE_PLANS / task / "plans.json").read_text())


def shrink(plans: dict, *, divisor: int = 8, configuration: str = "3d_fullres", minimum: int = 4) -> dict:
    """Fewer features per stage; everything else (patch, spacing, stages) as planned."""
    plans = copy.deepcopy(plans)
    kwargs = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [max(minimum, f // divisor) for f in kwargs["features_per_stage"]]
    return plans


def network_from_plans(
    plans: dict,
    num_classes: int,
    *,
    configuration: str = "3d_fullres",
    deep_supervision: bool = False,
    allow_init: bool = True,
) -> torch.nn.Module:
    """The plans' network with random weights, built as nnU-Net builds it (one input channel)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(plans).get_configuration(configuration)
    return get_network_from_plans(
        cm.network_arch_class_name,
        cm.network_arch_init_kwargs,
        cm.network_arch_init_kwargs_req_import,
        1,
        num_classes,
        allow_init=allow_init,
        deep_supervision=deep_supervision,
    )


def make_model_folder(
    root: Path,
    name: str,
    *,
    plans: dict,
    labels: dict | None = None,
    folds=(0,),
    checkpoint_name: str = "checkpoint_final.pth",
    trainer_name: str = UNINSTALLED_TRAINER,
    configuration: str = "3d_fullres",
    seed: int = 0,
    nnunet_style: bool = True,
) -> Path:
    """Write ``root/name`` as an nnU-Net results folder with random-weight checkpoints; returns it."""
    labels = labels or {"background": 0, "tumor": 1}
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 10, "file_ending": ".mha"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    for index, fold in enumerate(folds):
        torch.manual_seed(seed * 100 + index)
        network = network_from_plans(plans, len(labels), configuration=configuration, deep_supervision=True)
        _perturb_norms(network, seed * 100 + index)
        checkpoint = {
            "network_weights": network.state_dict(),
            "trainer_name": trainer_name,
            "init_args": {"configuration": configuration, "fold": fold},
            "inference_allowed_mirroring_axes": (0, 1, 2),
            "current_epoch": 150,
        }
        if nnunet_style:
            checkpoint.update(
                {
                    "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]},
                    "grad_scaler_state": None,
                    "logging": {"mean_fg_dice": [np.float64(0.4)], "ema_fg_dice": [np.float64(0.4)], "lrs": [0.01]},
                    "_best_ema": np.float64(0.4),
                }
            )
            checkpoint["init_args"].update(
                {"plans": plans, "dataset_json": dataset_json, "device": torch.device("cpu")}
            )
        fold_dir = folder / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        torch.save(checkpoint, fold_dir / checkpoint_name)
    return folder


def _perturb_norms(network: torch.nn.Module, seed: int) -> None:
    """Random affine norms, so that random networks do not predict one class everywhere."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.InstanceNorm3d) and module.affine:
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))


def member(
    name: str,
    model: str,
    *,
    fold: int = 0,
    checkpoint: str = "checkpoint_final.pth",
    weight: float = 1.0,
    role: str = "all-rounder",
) -> dict:
    return {"name": name, "role": role, "model": model, "fold": fold, "checkpoint": checkpoint, "weight": weight}


def config_dict(members_t1: list[dict], members_t2: list[dict] | None = None, **top) -> dict:
    tasks = {
        "t1": {
            "input_slug": "abdominal-t1-mri",
            "output_slug": "pancreatic-tumor-segmentation",
            "tumor_label": 1,
            "members": members_t1,
        }
    }
    if members_t2:
        tasks["t2"] = {
            "input_slug": "abdominal-t2-mri",
            "output_slug": "pancreatic-tumor-segmentation",
            "tumor_label": 1,
            "members": members_t2,
        }
    return {"version": 1, "tile_step_size": 0.5, "use_mirroring": False, "time_budget_s": 300, **top, "tasks": tasks}
