"""pantherseg.engine.weighted_mean: the running mean and the shared preprocessed inputs, on tiny arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pantherseg.engine.stage_timer import StageTimer
from pantherseg.engine.weighted_mean import SharedPreprocessing, WeightedMean


def test_weights_make_a_weighted_mean():
    a = np.array([[[[0.8]]], [[[0.2]]]], np.float32)  # (classes, z, y, x)
    b = np.array([[[[0.2]]], [[[0.8]]]], np.float32)
    mean = WeightedMean()
    assert not mean.has_members
    mean.add(a.copy(), 1.0)
    mean.add(b.copy(), 3.0)
    assert mean.has_members and mean.weight_sum == 4.0
    np.testing.assert_allclose(mean.mean(), (a * 1 + b * 3) / 4, rtol=1e-6)


def test_a_partial_member_counts_only_where_its_tiles_reached():
    full = np.stack([np.full((1, 1, 2), 0.9, np.float32), np.full((1, 1, 2), 0.1, np.float32)])
    partial = np.stack([np.array([[[0.0, np.nan]]], np.float32), np.array([[[1.0, np.nan]]], np.float32)])
    mean = WeightedMean()
    mean.add(partial, 1.0, complete=False)
    # Where no tile reached, the member's own map says background (it stays a probability map).
    np.testing.assert_array_equal(partial[:, 0, 0, 1], [1.0, 0.0])
    mean.add(full.copy(), 1.0)
    result = mean.mean()
    np.testing.assert_allclose(result[:, 0, 0, 0], [0.45, 0.55], rtol=1e-6)  # both members
    np.testing.assert_allclose(result[:, 0, 0, 1], [0.9, 0.1], rtol=1e-6)  # the full member alone


def test_voxels_no_member_reached_are_background():
    nowhere = np.full((2, 1, 1, 2), np.nan, np.float32)
    mean = WeightedMean()
    mean.add(nowhere, 1.0, complete=False)
    np.testing.assert_array_equal(mean.mean()[:, 0, 0, :], [[1.0, 1.0], [0.0, 0.0]])


def test_a_group_is_preprocessed_once_and_dropped_after_its_last_member(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "pantherseg.engine.preprocessing.preprocess",
        lambda volume, member, device=None: calls.append(member.name) or SimpleNamespace(group=member.key),
    )
    members = [SimpleNamespace(name=n, preprocessing_key=k, key=k) for n, k in [("a1", "A"), ("b1", "B"), ("a2", "A")]]
    ticks = iter([0.0, 2.0, 10.0, 13.0])  # two preprocessings: 2 s and 3 s
    timer = StageTimer(clock=lambda: next(ticks))
    shared = SharedPreprocessing(members, volume=None, timer=timer)
    assert shared.get(members[0]).group == "A"
    shared.done(members[0])
    assert shared.get(members[1]).group == "B"
    shared.done(members[1])
    assert "B" not in shared._ready and "A" in shared._ready  # B has no member left, A has a2
    assert shared.get(members[2]).group == "A"
    shared.done(members[2])
    assert calls == ["a1", "b1"] and shared._ready == {}
    assert timer.seconds == {"preprocess": 5.0}  # the group preprocessed once is timed once


def test_fold_logits_are_a_weighted_mean_and_a_lone_fold_is_untouched():
    import torch

    from pantherseg.engine.weighted_mean import FoldLogits

    lone = torch.tensor([[[[0.3]]], [[[-1.7]]]])
    sums = FoldLogits()
    sums.add(lone, 0.7)
    assert sums.mean() is lone and torch.equal(lone, torch.tensor([[[[0.3]]], [[[-1.7]]]]))
    sums = FoldLogits()
    sums.add(torch.tensor([[[[1.0]]], [[[-8.0]]]]), 1.0)
    sums.add(torch.tensor([[[[0.0]]], [[[3.0]]]]), 2.0)
    assert sums.weight_sum == 3.0 and sums.complete
    torch.testing.assert_close(sums.mean(), torch.tensor([[[[1 / 3]]], [[[-2 / 3]]]]))


def test_fold_logits_of_a_partial_fold_count_where_it_looked_and_nan_where_nobody_did():
    import torch

    from pantherseg.engine.weighted_mean import FoldLogits

    nan = float("nan")
    sums = FoldLogits()
    sums.add(torch.tensor([[[[2.0, nan, nan]]], [[[4.0, nan, nan]]]]), 1.0, complete=False)
    sums.add(torch.tensor([[[[0.0, 6.0, nan]]], [[[0.0, 8.0, nan]]]]), 3.0, complete=False)
    result = sums.mean()
    assert not sums.complete and sums.weight_sum == 4.0
    torch.testing.assert_close(result[:, 0, 0, :2], torch.tensor([[0.5, 6.0], [1.0, 8.0]]))
    assert torch.isnan(result[:, 0, 0, 2]).all()


def test_model_folders_are_ready_after_their_last_member_and_only_if_one_contributed():
    from pathlib import Path

    import torch

    from pantherseg.engine.weighted_mean import ModelFolders

    def fold(name, folder, weight=1.0):
        return SimpleNamespace(
            name=name, folder=Path(folder), spec=SimpleNamespace(configuration="3d_fullres", weight=weight)
        )

    a0, b0, a1, c0 = fold("a0", "A"), fold("b0", "B"), fold("a1", "A", 2.0), fold("c0", "C")
    folders = ModelFolders([a0, b0, a1, c0])
    assert not folders.has_members
    folders.add(a0, torch.zeros(2, 1, 1, 1), {"p": 1})
    assert folders.has_members and folders.done(a0) is None  # a1 is still to come
    assert folders.done(b0) is None  # B's only member was skipped: nothing to export
    folders.add(a1, torch.ones(2, 1, 1, 1), {"p": 1})
    ready = folders.done(a1)
    assert ready.names == ["a0", "a1"] and ready.weight == 3.0 and ready.member is a0 and ready.complete
    torch.testing.assert_close(ready.logits, torch.full((2, 1, 1, 1), 2 / 3))
    assert folders.done(c0) is None
