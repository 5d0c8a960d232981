"""The time budget, with an injected clock and fake networks: no sleeping, no timed tests."""

from __future__ import annotations

import numpy as np
import pytest

from pantherseg.config import parse_config
from pantherseg.engine.deadline import Deadline, TileCostModel
from pantherseg.engine.deadline import seconds_since_process_start as REAL_PROCESS_START  # before the autouse stub
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.networks import GivenNetworks
from pantherseg.engine.runtime import EngineOptions
from pantherseg.io.images import volume_from_image

from conftest import MODEL_A, synthetic_image
from fakes import EchoNetwork, FakeClock
from model_factory import config_dict, member

SECONDS_PER_TILE = 10.0


def _config(names_and_weights):
    members = [
        member(name, MODEL_A, fold=1 if "f1" in name else 0, weight=weight) for name, weight in names_and_weights
    ]
    return parse_config(config_dict(members))


MEMBERS = [("a-f0", 1.0), ("a-f1", 2.0), ("a-f0-copy", 1.0)]


@pytest.fixture(scope="module")
def volume():
    # 8 tiles per member with the organisers' Task 1 patch (48 x 192 x 224) at their spacing.
    return volume_from_image(synthetic_image(shape_zyx=(60, 200, 240), spacing_xyz=(1.1875, 1.1875, 3.0), seed=5))


def _ensemble(tiny_weights, names_and_weights, clock):
    # Different members see the intensity differently, so which ones ran changes the mask.
    networks = GivenNetworks(
        {
            name: EchoNetwork(scale=1.0 + index, shift=-0.5 * index, clock=clock, seconds_per_tile=SECONDS_PER_TILE)
            for index, (name, _) in enumerate(names_and_weights)
        }
    )
    return Ensemble.load(
        config=_config(names_and_weights),
        task="t1",
        weights=tiny_weights,
        engine=EngineOptions(device="cpu"),
        backend=networks,
    )


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


def test_deadline_counts_from_process_start(monkeypatch):
    from pantherseg.engine import deadline as deadline_module

    monkeypatch.setattr(deadline_module, "seconds_since_process_start", lambda: 12.5)
    deadline = Deadline(budget_s=300, reserve_s=20, clock=FakeClock(100.0))
    assert deadline.elapsed() == 12.5 and deadline.remaining_for_members() == 300 - 20 - 12.5


def proc_files(tmp_path, command: str, start_ticks: int, uptime: str):
    """A /proc/self/stat line (pid, command in parentheses, then fields 3..) and a /proc/uptime line."""
    fields = ["S", *["0"] * 18, str(start_ticks), "0", "0"]  # field 22 is the start time
    (tmp_path / "stat").write_text(f"4242 ({command}) {' '.join(fields)}\n", encoding="ascii")
    (tmp_path / "uptime").write_text(uptime, encoding="ascii")
    return tmp_path / "stat", tmp_path / "uptime"


@pytest.mark.parametrize("command", ["python3", "a b) (c", ")"])
def test_the_process_start_is_read_from_proc_even_with_odd_command_names(tmp_path, command):
    stat, uptime = proc_files(tmp_path, command, start_ticks=50_000, uptime="1000.25 1800.00\n")
    assert REAL_PROCESS_START(stat, uptime, ticks_per_second=100) == pytest.approx(500.25)


@pytest.mark.parametrize("damage", ["missing", "garbage", "short", "before-start"])
def test_a_proc_that_says_something_else_counts_from_the_call(tmp_path, damage):
    stat, uptime = proc_files(tmp_path, "python3", start_ticks=50_000, uptime="1000.25 1800.00\n")
    if damage == "missing":
        uptime.unlink()
    elif damage == "garbage":
        stat.write_text("not a stat line", encoding="ascii")
    elif damage == "short":
        stat.write_text("4242 (python3) S 1 2", encoding="ascii")
    else:  # a clock that went backwards: never a negative age
        uptime.write_text("10.0 0.0", encoding="ascii")
    assert REAL_PROCESS_START(stat, uptime, ticks_per_second=100) == 0.0


def test_this_process_is_younger_than_the_machine():
    age = REAL_PROCESS_START()
    uptime = float(open("/proc/uptime").read().split()[0])
    assert 0.0 < age <= uptime


@pytest.fixture(scope="module")
def small_patch_weights(tmp_path_factory):
    """Two models from the Task 1 plans (features / 16) with test-sized patches: 16x32x32 and 16x32x96."""
    from model_factory import load_plans, make_model_folder, shrink

    root = tmp_path_factory.mktemp("small-patch-weights")
    for name, patch in (
        ("Dataset811_Small/T__P__3d_fullres", [16, 32, 32]),
        ("Dataset812_Wide/T__P__3d_fullres", [16, 32, 96]),
    ):
        plans = shrink(load_plans("task1"), divisor=16)
        plans["configurations"]["3d_fullres"]["patch_size"] = patch
        make_model_folder(root, name, plans=plans)
    return root


def test_voxels_a_partial_member_never_reached_carry_no_weight(small_patch_weights):
    # Member A (5 tiles of 16x32x32 along x, 10 s each) says "background" firmly (tumour logit -5) where
    # it looks, and is stopped after its first tile (x < 32). Member B (one 16x32x96 tile, 30 s) says
    # "tumour" mildly everywhere (tumour logit 0.6, p = sigmoid(0.6) = 0.646). The image has the plans'
    # spacing and no zero voxel, so nothing is resampled or cropped and the right answer is exact:
    # where A looked the mean is (sigmoid(-5) + sigmoid(0.6)) / 2 -> background; elsewhere only B counts
    # -> tumour with p = 0.646. The old rule gave A's unvisited voxels logits (1, 0), p(tumour) 0.27,
    # which outvoted B there: (0.27 + 0.646) / 2 < 0.5, background everywhere.
    config = parse_config(
        config_dict(
            [
                member("a", "Dataset811_Small/T__P__3d_fullres"),
                member("b", "Dataset812_Wide/T__P__3d_fullres"),
            ]
        )
    )
    clock = FakeClock()
    networks = GivenNetworks(
        {
            "a": EchoNetwork(scale=0.0, shift=-5.0, clock=clock, seconds_per_tile=10.0),
            "b": EchoNetwork(scale=0.0, shift=0.6, clock=clock, seconds_per_tile=30.0),
        }
    )
    ensemble = Ensemble.load(
        config=config, task="t1", weights=small_patch_weights, engine=EngineOptions(device="cpu"), backend=networks
    )
    volume = volume_from_image(
        synthetic_image(
            shape_zyx=(16, 32, 96), spacing_xyz=(1.1875, 1.1875, 3.0), seed=2, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)
        )
    )
    assert float(np.abs(volume.data).min()) > 0  # no crop

    # After A's first tile (t = 10): 4 more tiles would need 40 s, only 35 s are left -> A stops.
    # B's projected 30 s (A's cost per voxel x B's patch) fit -> B runs.
    prediction = ensemble.predict(
        volume,
        deadline=Deadline(budget_s=55, reserve_s=10, clock=clock, started_at=0.0),
        keep_member_probabilities=True,
    )
    assert [(o.status, o.tiles_done, o.tiles_total) for o in prediction.outcomes] == [("partial", 1, 5), ("ran", 1, 1)]

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    tumour = prediction.probabilities[1]
    np.testing.assert_allclose(tumour[:, :, :32], (sigmoid(-5.0) + sigmoid(0.6)) / 2, rtol=1e-5)
    np.testing.assert_allclose(tumour[:, :, 32:], sigmoid(0.6), rtol=1e-5)
    assert np.all(prediction.mask[:, :, :32] == 0) and np.all(prediction.mask[:, :, 32:] == 1)
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, rtol=1e-5)
    # A's own map says background where it never looked; it is a probability map, not NaN.
    own = prediction.member_probabilities["a"]
    assert np.all(own[0, :, :, 32:] == 1.0) and not np.isnan(own).any()


def test_a_lone_partial_member_leaves_background_where_it_never_looked(small_patch_weights):
    config = parse_config(config_dict([member("a", "Dataset811_Small/T__P__3d_fullres")]))
    clock = FakeClock()
    networks = GivenNetworks({"a": EchoNetwork(scale=0.0, shift=3.0, clock=clock, seconds_per_tile=10.0)})
    ensemble = Ensemble.load(
        config=config, task="t1", weights=small_patch_weights, engine=EngineOptions(device="cpu"), backend=networks
    )
    volume = volume_from_image(
        synthetic_image(
            shape_zyx=(16, 32, 96), spacing_xyz=(1.1875, 1.1875, 3.0), seed=2, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)
        )
    )
    prediction = ensemble.predict(volume, deadline=Deadline(budget_s=40, reserve_s=10, clock=clock, started_at=0.0))
    assert prediction.outcomes[0].status == "partial" and prediction.outcomes[0].tiles_done == 1
    assert np.all(prediction.mask[:, :, :32] == 1) and np.all(prediction.mask[:, :, 32:] == 0)
    np.testing.assert_array_equal(prediction.probabilities[0, :, :, 32:], 1.0)


@pytest.mark.parametrize("from_process_start", [False, True])
def test_segment_counts_from_the_call_unless_the_entry_point_says_process_start(
    tiny_weights, tiny_config, tmp_path, monkeypatch, from_process_start
):
    # A process that has lived for an hour (a notebook, a server, a long test session): a library call
    # gets its whole budget; the entry points (fresh processes, timed by grand-challenge from container
    # start) count the interpreter's life too, and here that is already past the budget.
    import SimpleITK as sitk

    from pantherseg.api import segment
    from pantherseg.engine import deadline as deadline_module

    monkeypatch.setattr(deadline_module, "seconds_since_process_start", lambda: 3600.0)
    path = tmp_path / "case.mha"
    sitk.WriteImage(synthetic_image(seed=3), str(path))
    result = segment(
        path,
        output_dir=tmp_path / "out",
        config=tiny_config,
        weights=tiny_weights,
        device="cpu",
        report_dir=tmp_path / "out",
        time_budget_s=300,
        budget_from_process_start=from_process_start,
    )[0]
    statuses = [m.status for m in result.report.members]
    if from_process_start:
        assert "skipped" in statuses, statuses
    else:
        assert set(statuses) == {"ran"}, statuses
    assert result.output.is_file()
