"""Fold combination as nnU-Net does it: logits averaged within a model folder, probabilities across folders.

Fake networks with constant logits on an image at the plans' spacing with no zero voxel (nothing is
cropped or resampled), so every expected probability is exact: two folds of one folder with tumour
logits -8 (weight 1) and 3 (weight 2) give sigmoid((-8 + 2 * 3) / 3) = sigmoid(-2/3) = 0.34, background,
where the mean of their probabilities would give (sigmoid(-8) + 2 * sigmoid(3)) / 3 = 0.64, tumour.
"""

from __future__ import annotations

import numpy as np
import pytest

from pantherseg.config import parse_config
from pantherseg.engine import to_image_space
from pantherseg.engine.deadline import Deadline
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.networks import GivenNetworks
from pantherseg.engine.runtime import EngineOptions
from pantherseg.io.images import volume_from_image

from conftest import synthetic_image
from fakes import EchoNetwork, FakeClock
from model_factory import config_dict, load_plans, make_model_folder, member, shrink

FOLDS = "Dataset821_Folds/T__P__3d_fullres"
OTHER = "Dataset822_Other/T__P__3d_fullres"


def sigmoid(value: float) -> float:
    return float(1 / (1 + np.exp(-value)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("fold-weights")
    plans = shrink(load_plans("task1"), divisor=16)
    plans["configurations"]["3d_fullres"]["patch_size"] = [16, 32, 32]
    make_model_folder(root, FOLDS, plans=plans, folds=(0, 1))
    make_model_folder(root, OTHER, plans=plans)
    return root


@pytest.fixture(scope="module")
def volume():
    return volume_from_image(
        synthetic_image(
            shape_zyx=(16, 32, 96), spacing_xyz=(1.1875, 1.1875, 3.0), seed=2, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)
        )
    )


def _ensemble(weights, members_and_shifts, clock=None, seconds_per_tile=0.0):
    config = parse_config(config_dict([m for m, _ in members_and_shifts]))
    networks = GivenNetworks(
        {
            spec["name"]: EchoNetwork(scale=0.0, shift=shift, clock=clock, seconds_per_tile=seconds_per_tile)
            for spec, shift in members_and_shifts
        }
    )
    return Ensemble.load(
        config=config, task="t1", weights=weights, engine=EngineOptions(device="cpu"), backend=networks
    )


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports (logits -> image-space probabilities) of one prediction."""
    calls = []
    real = to_image_space.logits_to_probabilities
    monkeypatch.setattr(
        to_image_space,
        "logits_to_probabilities",
        lambda logits, m, properties: calls.append(m.name) or real(logits, m, properties),
    )
    return calls


def test_folds_of_one_folder_average_logits_and_folders_average_probabilities(weights, volume, exports):
    ensemble = _ensemble(
        weights,
        [
            (member("f0", FOLDS, weight=1.0), -8.0),
            (member("f1", FOLDS, fold=1, weight=2.0), 3.0),
            (member("other", OTHER), 0.6),
        ],
    )
    prediction = ensemble.predict(volume)
    tumour = prediction.probabilities[1]
    # The folder weighs 3 (its members' weights), the other folder 1.
    np.testing.assert_allclose(tumour, (3 * sigmoid(-2 / 3) + 1 * sigmoid(0.6)) / 4, rtol=1e-5)
    assert np.all(prediction.mask == 0)
    assert len(exports) == 2  # one per model folder, not one per member
    assert [o.status for o in prediction.outcomes] == ["ran", "ran", "ran"]


def test_the_rule_decides_a_mask_that_the_probability_mean_would_decide_otherwise(weights, volume):
    ensemble = _ensemble(weights, [(member("f0", FOLDS), -8.0), (member("f1", FOLDS, fold=1, weight=2.0), 3.0)])
    prediction = ensemble.predict(volume)
    np.testing.assert_allclose(prediction.probabilities[1], sigmoid(-2 / 3), rtol=1e-5)
    assert (sigmoid(-8) + 2 * sigmoid(3)) / 3 > 0.5  # what averaging probabilities would have said
    assert np.all(prediction.mask == 0)


def test_member_outputs_are_each_members_own_probabilities(weights, volume, exports):
    ensemble = _ensemble(
        weights,
        [(member("f0", FOLDS), -8.0), (member("f1", FOLDS, fold=1, weight=2.0), 3.0), (member("other", OTHER), 0.6)],
    )
    prediction = ensemble.predict(volume, keep_member_probabilities=True)
    own = prediction.member_probabilities
    assert sorted(own) == ["f0", "f1", "other"]
    for name, logit in (("f0", -8.0), ("f1", 3.0), ("other", 0.6)):
        np.testing.assert_allclose(own[name][1], sigmoid(logit), rtol=1e-5)
    np.testing.assert_allclose(prediction.probabilities[1], (3 * sigmoid(-2 / 3) + sigmoid(0.6)) / 4, rtol=1e-5)
    # Three own maps, and the folder of two its own export; the lone member's map serves as its folder's.
    assert len(exports) == 4


def test_a_skipped_fold_leaves_its_folders_mean(weights, volume):
    # 5 tiles of 10 s each: f0 ends at 50 s; f1 (same network, so 50 s projected) does not fit in 70 - 10 - 50.
    clock = FakeClock()
    ensemble = _ensemble(
        weights,
        [(member("f0", FOLDS), -8.0), (member("f1", FOLDS, fold=1, weight=2.0), 3.0)],
        clock=clock,
        seconds_per_tile=10.0,
    )
    prediction = ensemble.predict(
        volume,
        deadline=Deadline(budget_s=70, reserve_s=10, clock=clock, started_at=0.0),
        keep_member_probabilities=True,
    )
    assert [o.status for o in prediction.outcomes] == ["ran", "skipped"]
    np.testing.assert_allclose(prediction.probabilities[1], sigmoid(-8), rtol=1e-5)
    assert sorted(prediction.member_probabilities) == ["f0"]
    assert prediction.members_used() == ["f0"]


def test_a_partial_fold_counts_only_where_its_tiles_reached(weights, volume):
    # f0 is stopped after 1 of 5 tiles (x < 32) with nothing else finished: kept as partial; f1 (the same
    # network, 50 s projected) is then skipped. Where f0 looked: its logit; elsewhere nobody: background.
    clock = FakeClock()
    ensemble = _ensemble(
        weights, [(member("f0", FOLDS), 3.0), (member("f1", FOLDS, fold=1), -8.0)], clock=clock, seconds_per_tile=10.0
    )
    prediction = ensemble.predict(volume, deadline=Deadline(budget_s=40, reserve_s=10, clock=clock, started_at=0.0))
    assert [o.status for o in prediction.outcomes] == ["partial", "skipped"]
    np.testing.assert_allclose(prediction.probabilities[1, :, :, :32], sigmoid(3), rtol=1e-5)
    np.testing.assert_array_equal(prediction.probabilities[0, :, :, 32:], 1.0)
    assert np.all(prediction.mask[:, :, :32] == 1) and np.all(prediction.mask[:, :, 32:] == 0)
