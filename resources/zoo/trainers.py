"""Short nnU-Net v2 trainers of the demo zoo, one per ensemble role.

Why they live here and not in the installed nnunetv2: the winning team's trainers are custom classes
that upstream nnU-Net does not know, so their checkpoints name a trainer that inference cannot import.
The demo zoo reproduces that on purpose: the inference engine must build networks from plans.json and
never look the trainer up. `nnUNetv2_train` cannot find these classes either; `train_zoo.py`
instantiates them in-process, as nnunetv2/run/run_training.py would.

Each class only shortens nnU-Net's schedule (CPU training in minutes, not days) and keeps the
augmentation of the upstream class it names:

- foundation: default augmentation, trained on separate pretraining phantoms, not shipped;
- all-rounder: default augmentation (nnUNetTrainer), like the winners' 1000-epoch model;
- volume: heavy DA5 augmentation (nnUNetTrainerDA5);
- boundary: DA5 with order-0 (nearest) image and label interpolation (nnUNetTrainerDA5ord0);
- Task 2 volume: DA5 with order-0 label interpolation only (nnUNetTrainerDA5Segord0).

The schedule constants below are the shipped recipe; `train_zoo.py --token` overrides the attributes
after construction for a smoke run.
"""

from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import (
    nnUNetTrainerDA5,
    nnUNetTrainerDA5ord0,
    nnUNetTrainerDA5Segord0,
)


class _ZooSchedule:
    """Mixin: a short CPU schedule, AdamW, more tumour patches, and validation without mirroring.

    AdamW instead of nnU-Net's SGD (lr 1e-2, Nesterov momentum 0.99), with nnU-Net's poly decay:
    SGD is made for 250 000 iterations, and in 900 it left the foundation predicting background
    only (pseudo Dice 0 for pancreas and tumour, measured), while AdamW at 2e-3 reached pancreas
    0.85 and tumour 0.60 pseudo Dice in 250 iterations (measured; nnU-Net ships Adam trainers too).

    Foreground oversampling: the foundation, which must first find the small tumour at all (about
    1 % of a patch), uses 0.8. That leaves it blind to the far background: on held-out phantoms it
    found 93 % of the tumour but also dark blobs in muscle, canal and bowel, 2-10x the tumour's
    volume (Dice 0.34, measured). The shipped folds fine-tune at 0.5 to unlearn those; at 0.33 with
    re-initialised heads (see train_zoo.load_pretrained) a fold's tumour Dice stayed under 0.1 after
    500 iterations.

    Validation runs without test-time mirroring because the ensemble runs without it (the
    challenge's 5-minute limit) and 8x mirroring on CPU is slow; the checkpoint still records the
    axes the augmentation allowed.
    """

    EPOCHS = 20
    ITERATIONS_PER_EPOCH = 25
    VAL_ITERATIONS_PER_EPOCH = 4
    OVERSAMPLE_FOREGROUND = 0.5
    INITIAL_LR = 1e-3  # fine-tuning from pretrained weights; the foundation uses more
    WEIGHT_DECAY = 3e-5

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cpu")
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.EPOCHS
        self.num_iterations_per_epoch = self.ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = self.VAL_ITERATIONS_PER_EPOCH
        self.oversample_foreground_percent = self.OVERSAMPLE_FOREGROUND
        self.save_every = 10**6
        self.initial_lr = self.INITIAL_LR
        self.weight_decay = self.WEIGHT_DECAY

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        axes = self.inference_allowed_mirroring_axes
        self.inference_allowed_mirroring_axes = None
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes


class nnUNetTrainer_ZooFoundation(_ZooSchedule, nnUNetTrainer):
    """Foundation model on the pretraining phantoms (fold "all"); every Task 1 model starts from it.

    The winners' cascade starts from a foundation model; here it also lets every shipped fold spend
    its short budget on refining rather than on finding the pancreas. Trained from scratch, so a
    higher learning rate than the fine-tuned models.
    """

    EPOCHS = 40
    INITIAL_LR = 2e-3
    OVERSAMPLE_FOREGROUND = 0.8


class nnUNetTrainer_ZooAllRounder(_ZooSchedule, nnUNetTrainer):
    """Task 1 all-rounder: default augmentation, longest schedule; the best checkpoint is shipped."""

    EPOCHS = 20


class nnUNetTrainer_ZooVolumeDA5(_ZooSchedule, nnUNetTrainerDA5):
    """Task 1 volume model: heavy DA5 augmentation, shorter (the winners' 200-epoch model)."""

    EPOCHS = 12


class nnUNetTrainer_ZooBoundaryDA5ord0(_ZooSchedule, nnUNetTrainerDA5ord0):
    """Task 1 boundary model: DA5 with nearest-neighbour resampling of image and labels."""

    EPOCHS = 12


class nnUNetTrainer_ZooT2AllRounderDA5(_ZooSchedule, nnUNetTrainerDA5):
    """Task 2 all-rounder: fine-tuned from the Task 1 volume (DA5) model with DA5."""

    EPOCHS = 12


class nnUNetTrainer_ZooT2VolumeDA5Segord0(_ZooSchedule, nnUNetTrainerDA5Segord0):
    """Task 2 volume model: fine-tuned from the Task 1 all-rounder with DA5Segord0."""

    EPOCHS = 8


TRAINERS = {
    cls.__name__: cls
    for cls in (
        nnUNetTrainer_ZooFoundation,
        nnUNetTrainer_ZooAllRounder,
        nnUNetTrainer_ZooVolumeDA5,
        nnUNetTrainer_ZooBoundaryDA5ord0,
        nnUNetTrainer_ZooT2AllRounderDA5,
        nnUNetTrainer_ZooT2VolumeDA5Segord0,
    )
}
