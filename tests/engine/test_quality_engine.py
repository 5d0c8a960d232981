"""The engine's quality hook: each member's own tumour mask, and what skipped members do to the score."""

from __future__ import annotations

import numpy as np
import pytest

from pantherseg.config import parse_config
from pantherseg.engine.deadline import Deadline
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.networks import GivenNetworks
from pantherseg.engine.quality import assess_prediction
from pantherseg.engine.runtime import EngineOptions
from pantherseg.io.images import volume_from_image

from conftest import MODEL_A, synthetic_image
from fakes import EchoNetwork, FakeClock
from model_factory import config_dict, member

SECONDS_PER_TILE = 10.0
NAMES = ("a-f0", "a-f1", "a-f0-copy")


@pytest.fixture(scope="module")
def volume():
    # 8 tiles per member with the organisers' Task 1 patch (48 x 192 x 224) at their spacing.
    return volume_from_image(synthetic_image(shape_zyx=(60, 200, 240), spacing_xyz=(1.1875, 1.1875, 3.0), seed=5))


def _predict(tiny_weights, volume, budget, **keywords):
    members = [member(name, MODEL_A, fold=1 if "f1" in name else 0) for name in NAMES]
    config = parse_config(config_dict(members))
    clock = FakeClock()
    networks = GivenNetworks(
        {
            name: EchoNetwork(scale=1.0 + index, shift=-0.5 * index, clock=clock, seconds_per_tile=SECONDS_PER_TILE)
            for index, name in enumerate(NAMES)
        }
    )
    ensemble = Ensemble.load(
        config=config, task="t1", weights=tiny_weights, engine=EngineOptions(device="cpu"), backend=networks
    )
    deadline = Deadline(budget_s=budget, reserve_s=10.0, clock=clock, started_at=0.0)
    return ensemble, ensemble.predict(volume, deadline=deadline, **keywords)


def test_each_members_mask_is_its_own_argmax_kept_as_bool(tiny_weights, volume):
    ensemble, prediction = _predict(tiny_weights, volume, float("inf"), keep_member_probabilities=True)
    assert list(prediction.member_tumour_masks) == list(NAMES)
    for name, mask in prediction.member_tumour_masks.items():
        assert mask.dtype == bool and mask.shape == volume.shape_zyx
        np.testing.assert_array_equal(mask, prediction.member_probabilities[name].argmax(0) == 1)
    quality = assess_prediction(
        prediction, members=ensemble.members, image_zyx=volume.data[0], spacing_zyx=volume.spacing_zyx
    )
    assert quality["measures"]["members_used"] == 3 and "weakened_by" not in quality
    assert quality["measures"]["mean_pairwise_dice"] < 1  # the echo networks differ on purpose


def test_folds_sharing_one_export_still_get_their_own_masks(tiny_weights, volume):
    # The three members are folds of one folder: one export serves them all, but quality control must see
    # each fold's own mask (from its logits), or their agreement would be 1 by construction.
    _, own_maps = _predict(tiny_weights, volume, float("inf"), keep_member_probabilities=True)
    ensemble, prediction = _predict(tiny_weights, volume, float("inf"))
    assert not prediction.member_probabilities and list(prediction.member_tumour_masks) == list(NAMES)
    for name, mask in prediction.member_tumour_masks.items():
        exact = own_maps.member_probabilities[name].argmax(0) == 1
        assert mask.dtype == bool and mask.shape == volume.shape_zyx and exact.any()
        assert (mask == exact).mean() >= 0.999
        assert 2 * (mask & exact).sum() / (mask.sum() + exact.sum()) >= 0.98
    masks = list(prediction.member_tumour_masks.values())
    assert not np.array_equal(masks[0], masks[1])
    quality = assess_prediction(
        prediction, members=ensemble.members, image_zyx=volume.data[0], spacing_zyx=volume.spacing_zyx
    )
    assert quality["measures"]["mean_pairwise_dice"] < 1


def test_a_deadline_that_leaves_one_member_flags_the_case_and_says_why(tiny_weights, volume):
    ensemble, prediction = _predict(tiny_weights, volume, budget=100.0)  # one member's 8 tiles fit, not two
    assert prediction.members_used() == ["a-f0"]
    quality = assess_prediction(
        prediction, members=ensemble.members, image_zyx=volume.data[0], spacing_zyx=volume.spacing_zyx
    )
    assert quality["measures"]["members_used"] == 1 and quality["measures"]["members_total"] == 3
    assert quality["measures"]["mean_pairwise_dice"] is None
    assert quality["review"] and any("only 1 of 3" in r and "undefined" in r for r in quality["reasons"])
    assert "2 of 3 member(s) did not contribute" in quality["weakened_by"] and "budget" in quality["weakened_by"]


def test_a_constant_image_runs_nothing_and_scores_zero(tiny_weights):
    from pantherseg.io.images import volume_from_image as make

    image = synthetic_image(shape_zyx=(8, 16, 16), seed=0) * 0 + 7
    volume = make(image)
    ensemble, prediction = _predict(tiny_weights, volume, float("inf"))
    quality = assess_prediction(
        prediction, members=ensemble.members, image_zyx=volume.data[0], spacing_zyx=volume.spacing_zyx
    )
    assert quality["score"] == 0.0 and quality["review"] and "constant image" in quality["weakened_by"]
