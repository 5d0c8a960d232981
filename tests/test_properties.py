"""Property: any image either gets a mask with its own geometry and values in {0, 1}, or a PantherError.

Hypothesis draws the size (some axes too short on purpose), spacing (0.05 to 6 mm), direction
(random rotations, half of them with a flipped axis, i.e. left-handed), origin, pixel type,
intensity range (up to 1e7, constant images, NaN/Inf voxels) and runs the product's own steps on
it in this process: ``volume_from_image`` -> memory check -> ``Ensemble.predict`` -> ``mask_image``
-> atomic write, read back. Any exception that is not a PantherError fails the property.

The default run draws 15 cases through a one-member ensemble with a small patch (well under a second
a case); ``--runslow`` draws 60 larger images through the three-member Task 1 ensemble of
``tiny_weights`` with the organisers' real patch sizes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantherseg.config import load_config
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.memory_estimate import check_prediction_fits
from pantherseg.engine.runtime import EngineOptions
from pantherseg.errors import PantherError
from pantherseg.io.images import mask_image, volume_from_image, write_image_atomically

# Two threads on two shared cores mostly wait for each other; one is several times faster here.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The fixtures (ensembles, one torch thread) hold no per-example state.
SLOW_AND_FIXTURES = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
PIXEL_TYPES = {
    "uint8": sitk.sitkUInt8,
    "int16": sitk.sitkInt16,
    "uint16": sitk.sitkUInt16,
    "int32": sitk.sitkInt32,
    "float32": sitk.sitkFloat32,
    "float64": sitk.sitkFloat64,
}


@pytest.fixture(scope="module")
def micro_ensemble(micro_weights):
    root, config = micro_weights
    return Ensemble.load(config=load_config(config), task="t1", weights=root, engine=EngineOptions(device="cpu"))


@pytest.fixture(scope="module")
def tiny_ensemble(tiny_weights, tiny_config):
    return Ensemble.load(
        config=load_config(tiny_config), task="t1", weights=tiny_weights, engine=EngineOptions(device="cpu")
    )


@st.composite
def directions(draw) -> tuple[float, ...]:
    """A uniformly random rotation (from a unit quaternion), with one axis flipped half of the time."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0, 0, 0])
    w, x, y, z = q / np.linalg.norm(q)
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    flip = np.eye(3)
    if draw(st.booleans()):
        flip[draw(st.integers(0, 2))] *= -1
    return tuple(float(v) for v in (rotation @ flip).ravel())


@st.composite
def images(draw, max_voxels_per_axis: int = 14):
    size_xyz = [draw(st.integers(3, max_voxels_per_axis)) for _ in range(3)]  # 3 is refused
    # Now and then an axis thinner than a target voxel (refused), else 0.3-6 mm.
    spacing = [
        draw(st.integers(0, 9).flatmap(lambda i: st.just(0.05) if i == 0 else st.floats(0.3, 6.0))) for _ in range(3)
    ]
    origin = [draw(st.floats(-500, 500)) for _ in range(3)]
    pixel_type = draw(st.sampled_from(sorted(PIXEL_TYPES)))
    kind = draw(st.sampled_from(["smooth", "noise", "constant"]))
    scale = draw(st.sampled_from([1e-3, 1.0, 300.0, 1e4, 1e7]))
    offset = draw(st.sampled_from([0.0, -1000.0, 50.0]))

    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape_zyx = tuple(reversed(size_xyz))
    if kind == "constant":
        array = np.full(shape_zyx, offset + scale)
    else:
        array = rng.normal(size=shape_zyx)
        if kind == "smooth":
            from scipy.ndimage import gaussian_filter

            array = gaussian_filter(array, 1.0)
        array = array * scale + offset
    if pixel_type.startswith("float") and array.size > 4 and draw(st.booleans()):
        array.ravel()[: draw(st.integers(1, 3))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if not pixel_type.startswith("float"):
        info = np.iinfo(pixel_type)
        array = np.clip(np.nan_to_num(array), info.min, info.max)
    image = sitk.GetImageFromArray(array.astype(pixel_type))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(draw(directions()))
    return image


def segment_or_refuse(ensemble: Ensemble, image) -> None:
    """The product's steps for one image; asserts the mask, lets PantherError through."""
    volume = volume_from_image(image, source="generated.mha")
    check_prediction_fits(volume, ensemble)
    prediction = ensemble.predict(volume)
    mask = mask_image(prediction.mask, volume.sitk_image)
    with tempfile.TemporaryDirectory() as folder:
        written = sitk.ReadImage(str(write_image_atomically(mask, Path(folder) / "mask.mha")))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert written.GetSize() == image.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayViewFromImage(written)).tolist()) <= {0, 1}


def check_property(ensemble: Ensemble, image) -> None:
    try:
        segment_or_refuse(ensemble, image)
    except PantherError as error:
        message = str(error)
        assert message and "\n" not in message


@settings(max_examples=15, deadline=None, suppress_health_check=SLOW_AND_FIXTURES)
@given(image=images())
def test_any_image_gets_a_mask_or_a_panther_error(micro_ensemble, image):
    check_property(micro_ensemble, image)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_AND_FIXTURES)
@given(image=images(max_voxels_per_axis=24))
def test_any_image_gets_a_mask_or_a_panther_error_real_patches(tiny_ensemble, image):
    check_property(tiny_ensemble, image)
