"""benchmarks/bench_quality.py: its statistics on known answers, and its shifted phantoms."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_quality  # noqa: E402


def test_auroc_of_known_rankings():
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    assert bench_quality.auroc(scores, np.array([True, True, False, False])) == 1.0  # low score = bad: perfect
    assert bench_quality.auroc(scores, np.array([False, False, True, True])) == 0.0
    assert bench_quality.auroc(scores, np.array([True, False, True, False])) == pytest.approx(0.75)
    assert bench_quality.auroc(scores, np.array([True] * 4)) is None


def test_the_threshold_separates_the_calibration_cases():
    rows = [{"score": s, "dice": d} for s, d in [(0.1, 0.0), (0.3, 0.2), (0.45, 0.9), (0.7, 0.8), (0.9, 0.95)]]
    threshold = bench_quality.choose_threshold(rows)
    assert 0.3 < threshold <= 0.45


def test_shifted_phantoms_keep_the_geometry_and_their_truth():
    clean, truth = bench_quality.make_case("t2", "clean", 3001, margin_mm=20)
    small, small_truth = bench_quality.make_case("t2", "small_tumour", 3001, margin_mm=20)
    hidden, hidden_truth = bench_quality.make_case("t2", "no_tumour", 3001, margin_mm=20)
    assert clean.GetSize() == truth.GetSize() and clean.GetPixelID() == sitk.sitkFloat32
    voxels = [int(sitk.GetArrayFromImage(t).sum()) for t in (truth, small_truth, hidden_truth)]
    assert voxels[0] > 10 * voxels[1] > 0 and voxels[2] == 0
    noisy, _ = bench_quality.make_case("t2", "noise", 3001, margin_mm=20)
    assert np.std(sitk.GetArrayFromImage(noisy)) > np.std(sitk.GetArrayFromImage(clean))
