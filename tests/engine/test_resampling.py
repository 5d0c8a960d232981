"""Torch resampling of logits equals nnU-Net's skimage/scipy route (float32 tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pantherseg.engine.resampling import resample_linear


def _nnunet(data, new_shape, separate_z, axis):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg

    return resample_data_or_seg(
        data.astype(np.float64), new_shape, is_seg=False, axis=axis, order=1, do_separate_z=separate_z, order_z=0
    )


@pytest.mark.parametrize(
    "shape,new_shape",
    [
        ((3, 20, 40, 50), (30, 55, 41)),  # up in z and y, down in x
        ((2, 33, 17, 29), (12, 40, 29)),
        ((3, 10, 12, 14), (10, 12, 14)),  # unchanged
    ],
)
def test_trilinear_matches_nnunet(shape, new_shape):
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ours = resample_linear(torch.from_numpy(data), new_shape).numpy()
    np.testing.assert_allclose(ours, _nnunet(data, new_shape, False, None), atol=2e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("factor", [0.45, 2.7])
def test_separate_z_matches_nnunet(axis, factor):
    shape = [14, 22, 26]
    new_shape = [int(round(s * 1.3)) for s in shape]
    new_shape[axis] = int(round(shape[axis] * factor))
    data = np.random.default_rng(axis).normal(size=(2, *shape)).astype(np.float32)
    ours = resample_linear(torch.from_numpy(data), new_shape, separate_z=True, axis=axis).numpy()
    np.testing.assert_allclose(ours, _nnunet(data, new_shape, True, axis), atol=2e-5)
