"""Memory estimates: whose fault a refusal is, the figures it prints, and the GPU peak on a 16 GB T4."""

from __future__ import annotations

import copy
import dataclasses
import sys
from types import SimpleNamespace

import pytest

from pantherseg.engine.memory_estimate import (
    DEVICE_USABLE_FRACTION,
    check_prediction_fits,
    estimate_device_prediction,
    parameter_bytes,
)
from pantherseg.errors import ModelError, ResourceError
from pantherseg.io import host_memory
from pantherseg.io.images import volume_from_image

from conftest import ROOT, synthetic_image

T4_BYTES = 15_360 * 1024**2  # what a 16 GB T4 shows to CUDA (nvidia-smi: 15360 MiB)


@pytest.fixture(scope="module")
def micro_ensemble(micro_weights):
    from pantherseg.config import load_config
    from pantherseg.engine.ensemble import Ensemble
    from pantherseg.engine.runtime import EngineOptions

    root, config = micro_weights
    return Ensemble.load(config=load_config(config), task="t1", weights=root, engine=EngineOptions(device="cpu"))


def _with_plans(ensemble, **changes):
    """A copy of ``ensemble`` whose one member's 3d_fullres configuration is edited."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    [member] = ensemble.members
    plans = copy.deepcopy(member.plans_manager.plans)
    plans["configurations"]["3d_fullres"].update(changes)
    manager = PlansManager(plans)
    edited = copy.copy(ensemble)
    edited.members = [
        dataclasses.replace(
            member, plans_manager=manager, configuration_manager=manager.get_configuration("3d_fullres")
        )
    ]
    return edited


def _volume(shape=(24, 64, 72)):
    return volume_from_image(synthetic_image(shape), source="case.mha")


@pytest.mark.parametrize(
    "changes,fault",
    [({"spacing": [0.002, 0.002, 0.002]}, "target spacing"), ({"patch_size": [1024, 2048, 2048]}, "patch")],
)
def test_absurd_model_plans_blame_the_member_not_the_image(micro_ensemble, monkeypatch, changes, fault):
    monkeypatch.setattr(host_memory, "available_bytes", lambda: 8 * 1024**3)
    with pytest.raises(ModelError, match=rf"micro.*{fault}.* even for a typical PANTHER image.*plans\.json") as error:
        check_prediction_fits(_volume(), _with_plans(micro_ensemble, **changes))
    assert "crop the image" not in str(error.value) and ModelError.exit_code == 3


def test_a_spacing_that_makes_any_image_one_voxel_blames_the_model(micro_ensemble):
    spacing = r"target spacing \[1000000.0, 1000000.0, 1000000.0\] mm"
    with pytest.raises(ModelError, match=spacing + r" .* less than one voxel"):
        check_prediction_fits(_volume(), _with_plans(micro_ensemble, spacing=[1e6, 1e6, 1e6]))


def test_a_large_image_for_a_sound_model_says_crop_with_figures_that_differ(micro_ensemble, monkeypatch):
    needed = check_prediction_fits(_volume((60, 200, 200)), micro_ensemble).total
    available = int(needed / host_memory.USABLE_FRACTION * 0.97)  # just short: 1-decimal GB would print equal figures
    monkeypatch.setattr(host_memory, "available_bytes", lambda: available)
    with pytest.raises(ResourceError, match="crop the image") as error:
        check_prediction_fits(_volume((60, 200, 200)), micro_ensemble)
    message = str(error.value)
    needed_text = message.split("needs about ")[1].split(",")[0]
    usable_text = message.split("90% of it, ")[1].split(",")[0]
    assert needed_text != usable_text, message


@pytest.mark.parametrize(
    "values,expected",
    [
        ((0.33 * 1024**3, 0.31 * 1024**3), ["0.33 GB", "0.31 GB"]),
        ((5 * 1024**3, 2 * 1024**3), ["5.0 GB", "2.0 GB"]),
        ((1024**3, 1024**3 + 3 * 1024**2, 1024**3), ["1.000 GB", "1.003 GB", "1.000 GB"]),
        ((1024**3, 1024**3 + 300 * 1024), ["1024.0 MB", "1024.3 MB"]),
    ],
)
def test_distinct_sizes_use_the_fewest_digits_that_tell_them_apart(values, expected):
    assert host_memory.distinct_sizes(*values) == expected


def test_winners_configuration_fits_a_16_gb_t4_with_margin():
    """Six ResEnc-L members (1 mm, 192^3, fp16 activations) on the largest Task 1 image, everything on the GPU."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import winners
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans, dataset = winners.load_winner_plans()
    manager = PlansManager(plans)
    member = SimpleNamespace(
        plans_manager=manager,
        configuration_manager=manager.get_configuration("3d_fullres"),
        patch_size=(192, 192, 192),
        preprocessing_key="winner",
        describe=lambda: "winner",
        label_manager=manager.get_label_manager(dataset),
    )
    weights = parameter_bytes(member)
    assert 300e6 < weights < 500e6  # ResEnc-L: about 100 M parameters
    estimate = estimate_device_prediction(
        shape_zyx=winners.LARGEST_T1_ZYX,
        spacing_zyx=winners.LARGEST_T1_SPACING_ZYX,
        members=[member] * 6,
        num_classes=len(dataset["labels"]),
        weight_bytes=weights,
    )
    assert estimate.total < T4_BYTES * DEVICE_USABLE_FRACTION, estimate.describe()
    # An upper bound of what the H200 measured for this case (docs/speed.md: 4.21 GB allocated at batch 1,
    # 7.65 GB at batch 2, with preprocessing still on the CPU).
    assert estimate.total > 4.21 * 1024**3
    batched = estimate_device_prediction(
        shape_zyx=winners.LARGEST_T1_ZYX,
        spacing_zyx=winners.LARGEST_T1_SPACING_ZYX,
        members=[member] * 6,
        num_classes=len(dataset["labels"]),
        weight_bytes=weights,
        tile_batch_size=4,
    )
    assert batched.total > 7.65 * 1024**3


def test_folds_of_one_folder_add_their_logit_sum_and_every_member_its_tumour_mask(micro_ensemble):
    """Two folds of one model folder hold a running logit sum while the second runs; two folders do not;
    quality control keeps one bool mask per member in image space."""
    from pantherseg.engine.memory_estimate import estimate_prediction

    [member] = micro_ensemble.members
    shape, spacing = (40, 120, 130), (3.0, 1.0, 1.0)
    kwargs = dict(shape_zyx=shape, spacing_zyx=spacing, source_bytes_per_voxel=4, num_classes=3)
    one_folder = estimate_prediction(members=[member, dataclasses.replace(member)], **kwargs)
    two_folders = estimate_prediction(
        members=[member, dataclasses.replace(member, folder=member.folder.with_name("other"))], **kwargs
    )
    alone = estimate_prediction(members=[member], **kwargs)
    from pantherseg.engine.memory_estimate import resampled_shape

    preprocessed = 1
    for size in resampled_shape(shape, spacing, member):
        preprocessed *= size
    assert one_folder.parts["fold logit sums"] == 3 * preprocessed * 4
    assert two_folders.parts["fold logit sums"] == alone.parts["fold logit sums"] == 0
    assert one_folder.parts["members' tumour masks"] == 2 * 40 * 120 * 130
    assert one_folder.total - two_folders.total == 3 * preprocessed * 4
