"""Device preprocessing (torch, run here on the CPU) against nnU-Net 2.8's own CPU preprocessing.

Arrays are compared directly (float32 rounding: nnU-Net resamples in float64) on the shipped zoo's
plans and the bundled samples, on the organisers' plans, and on plans edited to reach the branches
the zoo does not use (mask-based ZScore, CT normalisation, a transpose, separate-z along each axis).
Masks are compared through the whole engine: >= 99.9% of voxels with the trained zoo (both tasks),
>= 99.5% with random weights; the full zoo runs are slow tests.
"""

from __future__ import annotations

import copy
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pantherseg.engine import device_preprocessing
from pantherseg.engine.device_preprocessing import fill_holes, nonzero_bbox, preprocess_on_device, resample_spline
from pantherseg.engine.preprocessing import preprocess
from pantherseg.errors import ConfigError
from pantherseg.io.images import read_volume
from pantherseg.paths import default_config, default_weights

from conftest import MODEL_A, MODEL_B, SAMPLES, synthetic_image

TRAINED_AGREEMENT = 0.999
RANDOM_WEIGHT_AGREEMENT = 0.995
CPU = torch.device("cpu")
SAMPLE_IMAGES = {"t1": ["t1-phantom", "t1-amos_0540"], "t2": ["t2-phantom"]}
needs_zoo = pytest.mark.skipif(not (default_weights() / "README.md").exists(), reason="the demo zoo is not here")


def _sample(name: str) -> Path:
    return next((SAMPLES / name / "input" / "images").glob("*/*.mha"))


def _zoo(task: str, device: str = "cpu"):
    from pantherseg.config import load_config
    from pantherseg.engine.ensemble import Ensemble
    from pantherseg.engine.runtime import EngineOptions

    return Ensemble.load(
        config=load_config(default_config()),
        task=task,
        weights=default_weights(),
        engine=EngineOptions(device=device, backend="torch"),
    )


def _assert_same_preprocessing(volume, member, atol=1e-4):
    reference = preprocess(volume, member)
    data, properties = preprocess_on_device(volume, member, CPU)
    ours = types.SimpleNamespace(data=data, properties=properties)
    for key in ("shape_before_cropping", "bbox_used_for_cropping", "shape_after_cropping_and_before_resampling"):
        assert [list(map(int, np.ravel(v))) for v in [ours.properties[key]]] == [
            list(map(int, np.ravel(v))) for v in [reference.properties[key]]
        ], key
    assert ours.data.shape == reference.data.shape and ours.data.dtype == torch.float32
    difference = float((ours.data - reference.data).abs().max())
    assert difference <= atol * max(1.0, float(reference.data.abs().max())), difference
    return difference


@needs_zoo
@pytest.mark.parametrize("task", ["t1", "t2"])
def test_zoo_plans_on_the_samples_give_nnunets_arrays(task):
    ensemble = _zoo(task)
    groups = {member.preprocessing_key: member for member in ensemble.members}
    for name in SAMPLE_IMAGES[task]:
        volume = read_volume(_sample(name))
        for member in groups.values():
            assert device_preprocessing.applies(member)
            _assert_same_preprocessing(volume, member)


def _member_with(member, **changes):
    """A member whose plans' 3d_fullres configuration (or transpose) is edited: the branches the zoo skips."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = copy.deepcopy(member.plans_manager.plans)
    configuration = plans["configurations"]["3d_fullres"]
    transpose = changes.pop("transpose", None)
    if transpose is not None:
        plans["transpose_forward"] = transpose
        plans["transpose_backward"] = [transpose.index(i) for i in range(3)]
    configuration.update(changes)
    plans_manager = PlansManager(plans)
    return types.SimpleNamespace(
        plans_manager=plans_manager,
        dataset_json=member.dataset_json,
        configuration_manager=plans_manager.get_configuration("3d_fullres"),
    )


def _holey_volume(tmp_path, shape=(20, 40, 44), spacing_xyz=(0.8, 0.9, 2.4)):
    """Positive values in an off-centre box with zero holes and a zero border: crop, fill and mask all matter."""
    rng = np.random.default_rng(5)
    array = np.zeros(shape, np.float32)
    array[3:17, 6:35, 9:40] = rng.gamma(2.0, 200.0, size=(14, 29, 31))
    array[8:11, 15:20, 20:26] = 0  # a closed hole: filled, so inside the normalisation mask
    array[3:17, 6:8, 30:33] = 0  # open to the outside: stays out of the mask
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    path = tmp_path / "holey.mha"
    sitk.WriteImage(image, str(path))
    return read_volume(path)


@pytest.fixture(scope="module")
def plans_member(tiny_weights):
    from pantherseg.config import parse_config
    from pantherseg.engine.members import load_members

    from model_factory import config_dict, member

    config = parse_config(
        config_dict([member("a-f0", MODEL_A), member("b-f0", MODEL_B, checkpoint="checkpoint_best.pth")])
    )
    return load_members(config.task("t1"), tiny_weights)


@pytest.mark.parametrize(
    "changes",
    [
        {"use_mask_for_norm": [True]},
        {"normalization_schemes": ["CTNormalization"]},
        {"normalization_schemes": ["RescaleTo01Normalization"], "transpose": [2, 0, 1]},
        {"normalization_schemes": ["NoNormalization"], "spacing": [1.0, 1.0, 1.0]},
        {"spacing": [3.5, 0.6, 0.7]},  # anisotropic target: separate-z along z
        {"transpose": [1, 2, 0], "spacing": [0.7, 3.1, 0.9]},  # low-resolution axis in the middle after transposing
        {"use_mask_for_norm": [True], "transpose": [2, 1, 0], "spacing": [0.9, 0.6, 3.0]},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_edited_plans_reach_every_branch_like_nnunet(plans_member, changes, tmp_path):
    member = _member_with(plans_member[0], **copy.deepcopy(changes))
    assert device_preprocessing.applies(member)
    _assert_same_preprocessing(_holey_volume(tmp_path), member)


def test_organisers_plans_on_an_oblique_volume(plans_member, tmp_path):
    path = tmp_path / "oblique.mha"
    sitk.WriteImage(synthetic_image(shape_zyx=(18, 50, 60), seed=3), str(path))
    volume = read_volume(path)
    for member in plans_member:  # Task 1 and Task 2 plans: two spacings
        _assert_same_preprocessing(volume, member)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.7), st.sampled_from([(1, 9, 7), (6, 5, 8), (9, 9, 9)]))
def test_bbox_and_hole_filling_equal_nnunets(seed, density, shape):
    from acvl_utils.cropping_and_padding.bounding_boxes import get_bbox_from_mask
    from scipy.ndimage import binary_fill_holes

    mask = np.random.default_rng(seed).random(shape) < density
    assert nonzero_bbox(torch.from_numpy(mask)) == [list(map(int, b)) for b in get_bbox_from_mask(mask)]
    np.testing.assert_array_equal(fill_holes(torch.from_numpy(mask)).numpy(), binary_fill_holes(mask))


def test_a_long_winding_background_channel_is_followed_to_the_end():
    # A spiral corridor of background open at one end: far more steps than one convergence check.
    mask = np.ones((3, 40, 40), bool)
    mask[1, 1:39, 1] = False
    for row in range(1, 39, 2):
        mask[1, row, 1:39] = False
    mask[1, 1, 0] = False  # the opening
    from scipy.ndimage import binary_fill_holes

    np.testing.assert_array_equal(fill_holes(torch.from_numpy(mask)).numpy(), binary_fill_holes(mask))


@pytest.mark.parametrize("order", [0, 1, 3])
def test_spline_resampling_orders_match_nnunet(order):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg

    data = np.random.default_rng(order).normal(size=(2, 9, 23, 17)).astype(np.float32) * 50
    for new_shape, separate_z, axis in [((13, 30, 11), False, None), ((27, 19, 17), True, 0), ((9, 41, 25), True, 0)]:
        reference = resample_data_or_seg(data, new_shape, False, axis, order, separate_z, order_z=0)
        ours = resample_spline(torch.from_numpy(data), new_shape, order=order, separate_z=separate_z, axis=axis)
        np.testing.assert_allclose(ours.numpy(), reference, atol=2e-4)


def test_the_route_is_chosen_by_device_and_environment(plans_member, monkeypatch):
    member = plans_member[0]
    monkeypatch.delenv(device_preprocessing.ENVIRONMENT_VARIABLE, raising=False)
    assert not device_preprocessing.wanted(member, CPU) and device_preprocessing.wanted(member, torch.device("cuda"))
    monkeypatch.setenv(device_preprocessing.ENVIRONMENT_VARIABLE, "on")
    assert device_preprocessing.wanted(member, CPU) and not device_preprocessing.wanted(member, None)
    monkeypatch.setenv(device_preprocessing.ENVIRONMENT_VARIABLE, "off")
    assert not device_preprocessing.wanted(member, torch.device("cuda"))
    monkeypatch.setenv(device_preprocessing.ENVIRONMENT_VARIABLE, "gpu")
    with pytest.raises(ConfigError, match="PANTHERSEG_DEVICE_PREPROCESSING must be one of .* found 'gpu'"):
        device_preprocessing.wanted(member, CPU)
    unknown = _member_with(member, normalization_schemes=["MyOwnNormalization"])
    monkeypatch.setenv(device_preprocessing.ENVIRONMENT_VARIABLE, "on")
    assert not device_preprocessing.applies(unknown) and not device_preprocessing.wanted(unknown, CPU)


# --- masks through the whole engine ---------------------------------------------------------------


def _mask_agreement(ensemble, volume, monkeypatch) -> tuple[float, float]:
    masks = {}
    for route in ("off", "on"):
        monkeypatch.setenv(device_preprocessing.ENVIRONMENT_VARIABLE, route)
        masks[route] = ensemble.predict(volume).mask
    return float((masks["off"] == masks["on"]).mean()), float(masks["off"].mean())


@needs_zoo
def test_one_trained_member_gives_nnunets_mask_on_the_t2_phantom(monkeypatch, one_torch_thread):
    ensemble = _zoo("t2")
    ensemble.members = ensemble.members[:1]
    agreement, tumour = _mask_agreement(ensemble, read_volume(_sample("t2-phantom")), monkeypatch)
    assert tumour > 0 and agreement >= TRAINED_AGREEMENT


@pytest.mark.slow
@needs_zoo
@pytest.mark.parametrize("task,sample", [("t1", "t1-phantom"), ("t1", "t1-amos_0540"), ("t2", "t2-phantom")])
def test_trained_zoo_gives_nnunets_masks(task, sample, monkeypatch):
    agreement, tumour = _mask_agreement(_zoo(task), read_volume(_sample(sample)), monkeypatch)
    assert agreement >= TRAINED_AGREEMENT, agreement


@pytest.mark.slow
def test_random_weights_give_nnunets_masks(tiny_weights, tiny_config, monkeypatch, tmp_path):
    from pantherseg.config import load_config
    from pantherseg.engine.ensemble import Ensemble
    from pantherseg.engine.runtime import EngineOptions

    path = tmp_path / "synthetic.mha"
    sitk.WriteImage(synthetic_image(shape_zyx=(30, 90, 100), seed=3), str(path))
    ensemble = Ensemble.load(
        config=load_config(tiny_config),
        task="t1",
        weights=tiny_weights,
        engine=EngineOptions(device="cpu", backend="torch"),
    )
    agreement, tumour = _mask_agreement(ensemble, read_volume(path), monkeypatch)
    assert 0.01 < tumour < 0.99 and agreement >= RANDOM_WEIGHT_AGREEMENT, agreement
