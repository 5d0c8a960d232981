"""Preprocessing hands the network finite numbers, normalised as nnU-Net would (engine/preprocessing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

from pantherseg.config import load_config
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.preprocessing import SAFE_MAGNITUDE, preprocess, scaled_for_float32
from pantherseg.engine.runtime import EngineOptions
from pantherseg.errors import InputError
from pantherseg.io.images import volume_from_image

from conftest import synthetic_image

HUGE = 300.0 * 2.0**50  # 3.4e17 at the peak of synthetic_image: inside the reader's 1e18 limit


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nnunets_own_zscore_overflows_at_this_magnitude():
    """The defect being worked around: float32 standard deviation of 3e17 intensities is infinite."""
    image = np.full((8, 64, 64), HUGE, dtype=np.float32)
    image[::2] = 0
    normalised = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(image.copy())
    assert not normalised.any()  # every voxel 0: the network sees a constant


def test_scaling_is_exact_and_only_where_needed():
    ordinary = np.arange(10, dtype=np.float32)[None]
    assert scaled_for_float32(ordinary, ["ZScoreNormalization"]) is ordinary
    huge = ordinary * np.float32(HUGE)
    assert scaled_for_float32(huge, ["CTNormalization"]) is huge  # clips first: cannot overflow
    scaled = scaled_for_float32(huge, ["ZScoreNormalization"])
    assert np.abs(scaled).max() <= SAFE_MAGNITUDE
    ratio = huge[0, 1:] / scaled[0, 1:]
    assert np.all(ratio == ratio[0]) and np.log2(ratio[0]).is_integer()


@pytest.fixture(scope="module")
def micro_ensemble(micro_weights):
    weights, config = micro_weights
    return Ensemble.load(config=load_config(config), task="t1", weights=weights, engine=EngineOptions(device="cpu"))


def _striped(scale: float, shape=(16, 48, 48), spacing=(2.0, 2.0, 3.0)):
    """synthetic_image with every other column 0: deviations about half the peak, as a masked or padded scan."""
    import SimpleITK as sitk

    image = synthetic_image(shape_zyx=shape, spacing_xyz=spacing, scale=scale)
    array = sitk.GetArrayFromImage(image)
    array[:, :, 1::2] = 0
    striped = sitk.GetImageFromArray(array)
    striped.CopyInformation(image)
    return volume_from_image(striped)


def _same_image_at(peak: float, shape=(16, 48, 48), spacing=(2.0, 2.0, 3.0)):
    small = _striped(300.0, shape, spacing)
    power = 2.0 ** np.floor(np.log2(peak / float(small.data.max())))  # the same image, exactly scaled
    large = _striped(300.0 * power, shape, spacing)
    assert peak / 2 < float(large.data.max()) <= peak
    return small, large


def test_a_float_image_of_maximum_3e17_is_normalised_as_the_same_image_at_300(micro_ensemble):
    """Issue 20: 3.25e17 (5.9 M voxels) made the mask 9.4x too large with exit 0: float32 std overflowed."""
    small, large = _same_image_at(3.25e17, shape=(48, 96, 96), spacing=(0.5, 0.5, 1.0))
    member = micro_ensemble.members[0]
    np.testing.assert_allclose(preprocess(large, member).data, preprocess(small, member).data, rtol=1e-5, atol=1e-5)


def test_a_float_image_below_the_reader_limit_gives_the_mask_of_the_same_image_at_300(micro_ensemble):
    """Z-score is scale-invariant: the same image at 9.5e17 (under the reader's 1e18) gets the same mask."""
    small, large = _same_image_at(9.5e17, shape=(16, 48, 48), spacing=(0.5, 0.5, 1.0))  # one tile
    expected, found = micro_ensemble.predict(small), micro_ensemble.predict(large)
    np.testing.assert_array_equal(found.mask, expected.mask)
    np.testing.assert_allclose(found.probabilities, expected.probabilities, atol=1e-4)
    assert expected.probabilities.std() > 0


def test_a_normalised_input_that_is_not_finite_is_refused(micro_ensemble):
    volume = volume_from_image(synthetic_image(shape_zyx=(12, 24, 24)))
    volume.data[0, 0, 0, 0] = np.nan  # past the reader (which sets NaN voxels to 0): the post-condition holds
    with pytest.raises(InputError, match="not finite everywhere"):
        preprocess(volume, micro_ensemble.members[0])
