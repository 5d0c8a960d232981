"""Copy what inference needs from nnU-Net's results folder into weights/, and write ensemble_config.json.

Why: nnU-Net's results hold logs, validation outputs and checkpoints with optimiser state, logging
history and init arguments that pickle a torch.device and whole plans dictionaries. Inference needs
none of it, and a checkpoint that `torch.load(weights_only=True)` refuses would force the engine to
unpickle arbitrary code. The shipped checkpoint keeps only plain tensors and primitives.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import phantoms  # noqa: E402  (resources/ is a folder of scripts, not a package)

logger = logging.getLogger(__name__)

SHIPPED_KEYS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes", "current_epoch")


@dataclass(frozen=True)
class Member:
    """One ensemble member: a fold of one trained model, and which checkpoint of it is shipped."""

    task: str
    role: str
    dataset: str
    trainer: str
    plans: str
    configuration: str
    fold: int
    checkpoint: str

    @property
    def model_folder(self) -> str:
        """Folder relative to nnUNet_results and to weights/, named as nnU-Net names it."""
        return f"{self.dataset}/{self.trainer}__{self.plans}__{self.configuration}"

    @property
    def name(self) -> str:
        return f"{self.role.replace('-', '')}-f{self.fold}"


def strip_checkpoint(source: Path, target: Path) -> None:
    """Write a weights_only-loadable copy of an nnU-Net checkpoint with SHIPPED_KEYS only."""
    full = torch.load(source, map_location="cpu", weights_only=False)
    axes = full.get("inference_allowed_mirroring_axes")
    init_args = full.get("init_args", {})
    stripped = {
        # No clone: the U-Net's decoder reuses encoder modules, so the state dict lists shared tensors
        # twice; kept shared, torch.save stores them once (cloning doubled the file size).
        "network_weights": {k: v.detach() for k, v in full["network_weights"].items()},
        "trainer_name": str(full["trainer_name"]),
        "init_args": {"configuration": str(init_args["configuration"]), "fold": int(init_args["fold"])},
        "inference_allowed_mirroring_axes": None if axes is None else [int(a) for a in axes],
        "current_epoch": int(full["current_epoch"]),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stripped, target)
    torch.load(target, map_location="cpu", weights_only=True)


def ship(members: list[Member], results_dir: Path, weights_dir: Path) -> None:
    """Copy plans.json, dataset.json and the stripped checkpoint of every member into weights_dir."""
    for member in members:
        source = Path(results_dir) / member.model_folder
        target = Path(weights_dir) / member.model_folder
        target.mkdir(parents=True, exist_ok=True)
        for name in ("plans.json", "dataset.json"):
            shutil.copyfile(source / name, target / name)
        strip_checkpoint(
            source / f"fold_{member.fold}" / member.checkpoint, target / f"fold_{member.fold}" / member.checkpoint
        )
        logger.info("shipped %s fold %d (%s)", member.model_folder, member.fold, member.checkpoint)


def ensemble_config(members: list[Member]) -> dict:
    """The ensemble_config.json document (schema version 1) for these members, in the given order."""
    tasks = {}
    for task, input_slug in phantoms.GC_INPUT_SLUGS.items():
        tasks[task] = {
            "input_slug": input_slug,
            "output_slug": "pancreatic-tumor-segmentation",
            "tumor_label": phantoms.LABELS["tumor"],
            "members": [
                {
                    "name": m.name,
                    "role": m.role,
                    "model": m.model_folder,
                    "fold": m.fold,
                    "checkpoint": m.checkpoint,
                    "weight": 1.0,
                }
                for m in members
                if m.task == task
            ],
        }
    return {"version": 1, "tile_step_size": 0.5, "use_mirroring": False, "time_budget_s": 300, "tasks": tasks}


def write_ensemble_config(members: list[Member], path: Path) -> None:
    Path(path).write_text(json.dumps(ensemble_config(members), indent=2) + "\n")
