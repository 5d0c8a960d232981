"""The time budget, with an injected clock and fake networks: no sleeping, no timed tests."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MODEL_A, synthetic_image
from fakes import EchoNetwork, FakeClock
from model_factory import member
from pantherseg.config import parse_config
from pantherseg.deadline import Deadline, TileCostModel
from pantherseg.engine import Ensemble
from pantherseg.image_io import volume_from_image

SECONDS_PER_TILE = 10.0


def _config(names_and_weights):
    members = [member(name, MODEL_A, fold=1 if "f1" in name else 0, weight=weight) for name, weight in names_and_weights]
    return parse_config({"version": 1, "tasks": {"t1": {"input_slug": "abdominal-t1-mri",
                                                        "output_slug": "pancreatic-tumor-segmentation",
                                                        "tumor_label": 1, "members": members}}})


MEMBERS = [("a-f0", 1.0), ("a-f1", 2.0), ("a-f0-copy", 1.0)]


@pytest.fixture(scope="module")
def volume():
    # 8 tiles per member with the organisers' Task 1 patch (48 x 192 x 224) at their spacing.
    return volume_from_image(synthetic_image(shape_zyx=(60, 200, 240), spacing_xyz=(1.1875, 1.1875, 3.0), seed=5))


def _ensemble(tiny_weights, names_and_weights, clock):
    ensemble = Ensemble.load(config=_config(names_and_weights), task="t1", weights=tiny_weights, device="cpu")
    for index, m in enumerate(ensemble.members):
        # Different members see the intensity differently, so which ones ran changes the mask.
        m.network = EchoNetwork(scale=1.0 + index, shift=-0.5 * index, clock=clock, seconds_per_tile=SECONDS_PER_TILE)
    return ensemble


def _run(tiny_weights, volume, budget, reserve, names_and_weights=MEMBERS):
    clock = FakeClock()
    ensemble = _ensemble(tiny_weights, names_and_weights, clock)
    deadline = Deadline(budget_s=budget, reserve_s=reserve, clock=clock, started_at=0.0)
    return ensemble.predict(volume, deadline=deadline), clock


def test_everything_runs_within_a_generous_budget(tiny_weights, volume):
    prediction, clock = _run(tiny_weights, volume, budget=1000, reserve=20)
    assert [o.status for o in prediction.outcomes] == ["ran", "ran", "ran"]
    assert [o.tiles_total for o in prediction.outcomes] == [8, 8, 8]
    assert clock.now == 3 * 8 * SECONDS_PER_TILE


def test_members_that_cannot_finish_are_skipped_and_the_mean_uses_those_that_ran(tiny_weights, volume):
    prediction, clock = _run(tiny_weights, volume, budget=200, reserve=20)
    assert [o.status for o in prediction.outcomes] == ["ran", "ran", "skipped"]
    assert "budget" in prediction.outcomes[2].reason
    assert prediction.members_used() == ["a-f0", "a-f1"]
    assert clock.now <= 200 - 20

    # Same mask as an ensemble of just the members that ran, with their weights, without a deadline.
    two_members, _ = _run(tiny_weights, volume, budget=float("inf"), reserve=0, names_and_weights=MEMBERS[:2])
    np.testing.assert_array_equal(prediction.mask, two_members.mask)
    three_members, _ = _run(tiny_weights, volume, budget=float("inf"), reserve=0)
    assert not np.array_equal(prediction.mask, three_members.mask)


def test_a_mask_is_written_even_when_not_even_one_member_fits(tiny_weights, volume):
    prediction, clock = _run(tiny_weights, volume, budget=50, reserve=20)
    first, *rest = prediction.outcomes
    assert first.status == "partial" and 0 < first.tiles_done < first.tiles_total
    assert [o.status for o in rest] == ["skipped", "skipped"]
    assert prediction.mask.shape == volume.shape_zyx and prediction.mask.dtype == np.uint8
    assert clock.now <= 50


def test_cost_model_scales_unmeasured_members_by_patch_volume():
    model = TileCostModel()
    assert model.estimate("a", 1000) is None
    model.record("a", patch_voxels=1000, tiles=4, seconds=8.0)
    assert model.estimate("a", 1000) == 2.0
    assert model.estimate("b", 4000) == 8.0


def test_deadline_counts_from_process_start():
    clock = FakeClock(100.0)
    deadline = Deadline(budget_s=300, reserve_s=20, clock=clock)
    assert deadline.elapsed() >= 0  # includes this process's start-up, read from /proc
    assert deadline.remaining_for_members() <= 280
