"""The synthetic phantoms: deterministic, shaped like the two PANTHER tasks, with a findable tumour."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


def _load_phantoms():
    spec = importlib.util.spec_from_file_location("phantoms", ROOT / "resources" / "phantoms.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("phantoms", module)
    spec.loader.exec_module(module)
    return module


phantoms = _load_phantoms()


def _arrays(image: sitk.Image, label: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)


@pytest.mark.parametrize("task, scale", [("t1", 3.0), ("t2", 1.0)])
def test_same_seed_gives_the_same_phantom(task, scale):
    first = phantoms.make_phantom(7, task, voxel_scale=scale)
    second = phantoms.make_phantom(7, task, voxel_scale=scale)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        assert a.GetSpacing() == b.GetSpacing()
        assert a.GetOrigin() == b.GetOrigin()
        assert a.GetDirection() == b.GetDirection()


def test_different_seeds_give_different_phantoms():
    a, _ = phantoms.make_phantom(1, "t2")
    b, _ = phantoms.make_phantom(2, "t2")
    assert a.GetSize() != b.GetSize() or not np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_t1_geometry_matches_the_task1_fingerprint():
    image, label = phantoms.make_phantom(1001, "t1")
    sx, sy, sz = image.GetSpacing()
    nx, ny, nz = image.GetSize()
    assert sz == pytest.approx(3.0)
    assert sx == pytest.approx(sy) and 0.7 <= sx <= 1.3
    assert 64 <= nz <= 80
    assert 300 <= nx * sx <= 385 and 220 <= ny * sy <= 330
    assert image.GetPixelID() == sitk.sitkFloat32 and label.GetPixelID() == sitk.sitkUInt8
    assert label.GetSize() == image.GetSize() and label.GetDirection() == image.GetDirection()


@pytest.mark.parametrize("seed", [0, 5, 1003])
def test_t2_geometry_is_a_pancreas_region_crop(seed):
    image, _ = phantoms.make_phantom(seed, "t2")
    nx, ny, nz = image.GetSize()
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 2.0))
    assert 150 <= nx <= 180 and 110 <= ny <= 140 and 56 <= nz <= 64


@pytest.mark.parametrize("task, seed", [("t1", 3), ("t1", 1004), ("t2", 4), ("t2", 1008)])
def test_direction_is_orthonormal_and_slightly_oblique(task, seed):
    image, _ = phantoms.make_phantom(seed, task, voxel_scale=4.0)
    d = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(d @ d.T, np.eye(3), atol=1e-6)
    # Flips allowed, obliquity only a few degrees: every axis stays within ~10 degrees of a world axis.
    assert np.all(np.abs(d).max(axis=0) > np.cos(np.deg2rad(10)))


@pytest.mark.parametrize("task, seed", [("t1", 0), ("t1", 1001), ("t2", 1), ("t2", 1005)])
def test_labels_hold_a_tumour_in_or_at_the_pancreas(task, seed):
    image, label = phantoms.make_phantom(seed, task, voxel_scale=1.5 if task == "t1" else 1.0)
    array, labels = _arrays(image, label)
    assert set(np.unique(labels)) == {0, 1, 2}
    tumour, pancreas = labels == 1, labels == 2
    spacing_zyx = image.GetSpacing()[::-1]
    volume_ml = tumour.sum() * np.prod(spacing_zyx) / 1000
    assert 1.0 <= volume_ml <= 70.0  # diameters of about 15-50 mm
    # The tumour overrides the pancreas, so it touches it, and lies within a few mm of it.
    assert (ndimage.binary_dilation(tumour) & pancreas).any()
    distance_mm = ndimage.distance_transform_edt(~pancreas, sampling=spacing_zyx)
    assert np.mean(distance_mm[tumour] < 15.0) > 0.9
    # Low contrast: tumour and pancreas differ by 15-45 %, darker on T1, brighter on T2.
    ratio = np.median(array[tumour]) / np.median(array[pancreas])
    if task == "t1":
        assert 0.55 <= ratio <= 0.85
    else:
        assert 1.15 <= ratio <= 1.45


def test_train_and_test_seeds_are_disjoint():
    for task in phantoms.TASKS:
        assert phantoms.TRAIN_SEEDS[task] and phantoms.TEST_SEEDS[task]
        assert not set(phantoms.TRAIN_SEEDS[task]) & set(phantoms.TEST_SEEDS[task])


def test_unknown_task_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="task must be one of"):
        phantoms.make_phantom(0, "t3")
    with pytest.raises(ValueError, match="voxel_scale"):
        phantoms.make_phantom(0, "t2", voxel_scale=0.5)
    with pytest.raises(ValueError, match="run upwards"):
        phantoms.parse_seeds("9-3")
    assert phantoms.parse_seeds("1000-1002,7") == [1000, 1001, 1002, 7]


def test_cli_writes_images_and_labels(tmp_path):
    assert phantoms.main(["--task", "t2", "--seeds", "1000-1001", "--out", str(tmp_path)]) == 0
    for seed in (1000, 1001):
        name = phantoms.case_name(seed, "t2")
        image = sitk.ReadImage(str(tmp_path / f"{name}.mha"))
        label = sitk.ReadImage(str(tmp_path / "labels" / f"{name}.mha"))
        assert image.GetSize() == label.GetSize()


def test_grand_challenge_sample_layout(tmp_path):
    image_path = phantoms.write_grand_challenge_sample("t2", 1002, tmp_path)
    inputs = json.loads((tmp_path / "input" / "inputs.json").read_text())
    assert len(inputs) == 1
    assert inputs[0]["interface"]["slug"] == "abdominal-t2-mri"
    assert inputs[0]["interface"]["relative_path"] == "images/abdominal-t2-mri"
    assert inputs[0]["image"]["name"] != image_path.name
    truth = sitk.ReadImage(str(tmp_path / "ground-truth" / image_path.name))
    assert set(np.unique(sitk.GetArrayFromImage(truth))) == {0, 1}


@pytest.mark.parametrize("task", ["t1", "t2"])
def test_bundled_samples_are_held_out_phantoms(task):
    root = ROOT / "test" / "samples" / f"{task}-phantom"
    inputs = json.loads((root / "input" / "inputs.json").read_text())
    slug = inputs[0]["interface"]["slug"]
    images = sorted((root / "input" / inputs[0]["interface"]["relative_path"]).glob("*.mha"))
    assert slug == phantoms.GC_INPUT_SLUGS[task] and len(images) == 1
    seed = int(images[0].stem[-4:])
    assert seed in phantoms.TEST_SEEDS[task]
    truth = sitk.ReadImage(str(root / "ground-truth" / images[0].name))
    expected = sitk.GetArrayFromImage(phantoms.make_phantom(seed, task)[1]) == 1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(truth), expected.astype(np.uint8))
