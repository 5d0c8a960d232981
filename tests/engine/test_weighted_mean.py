"""pantherseg.engine.weighted_mean: the running mean and the shared preprocessed inputs, on tiny arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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
    monkeypatch.setattr("pantherseg.engine.preprocessing.preprocess",
                        lambda volume, member, device=None: calls.append(member.name) or SimpleNamespace(group=member.key))
    members = [SimpleNamespace(name=n, preprocessing_key=k, key=k) for n, k in
               [("a1", "A"), ("b1", "B"), ("a2", "A")]]
    timings = {"preprocess": 0.0}
    shared = SharedPreprocessing(members, volume=None, timings=timings)
    assert shared.get(members[0]).group == "A"
    shared.done(members[0])
    assert shared.get(members[1]).group == "B"
    shared.done(members[1])
    assert "B" not in shared._ready and "A" in shared._ready  # B has no member left, A has a2
    assert shared.get(members[2]).group == "A"
    shared.done(members[2])
    assert calls == ["a1", "b1"] and shared._ready == {}
    assert timings["preprocess"] >= 0.0
