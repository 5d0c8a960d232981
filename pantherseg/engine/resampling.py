"""Resampling logits back to the image grid with torch instead of scipy/skimage in float64.

nnU-Net's export (``resample_data_or_seg_to_shape`` with order 1) converts the logits to float64
and resizes them channel by channel with skimage on the CPU: tens of seconds and gigabytes for a
large case (nnU-Net issues #2540, #2912). The same interpolation in torch, in float32, on the
device the logits are on:

- not separate-z: skimage ``resize(order=1, mode='edge', anti_aliasing=False)`` samples the input at
  ``(i + 0.5) * in/out - 0.5`` with coordinates clamped to the edge, which is exactly trilinear
  ``F.interpolate(..., align_corners=False)``;
- separate-z (anisotropy above nnU-Net's threshold 3): bilinear in-plane per slice as above, then
  along the low-resolution axis ``map_coordinates(order=0, mode='nearest')`` at the same
  coordinates, i.e. index ``floor((i + 0.5) * in/out)``, which is ``mode='nearest-exact'``.

Any other resampling function or order in the plans is left to nnU-Net. tests/engine/test_resampling.py
holds the equality with nnU-Net's function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def torch_resampling_applies(configuration_manager, current_spacing, new_spacing) -> tuple[bool, bool, int | None]:
    """(applies, separate_z, axis) for the plans' probability resampling between these spacings."""
    from nnunetv2.preprocessing.resampling.default_resampling import (
        determine_do_sep_z_and_axis,
        resample_data_or_seg_to_shape,
    )

    function = configuration_manager.resampling_fn_probabilities
    kwargs = configuration_manager.configuration.get("resampling_fn_probabilities_kwargs", {})
    if getattr(function, "func", function) is not resample_data_or_seg_to_shape:
        return False, False, None
    if kwargs.get("is_seg", False) or kwargs.get("order", 3) != 1 or kwargs.get("order_z", 0) != 0:
        return False, False, None
    separate_z, axis = determine_do_sep_z_and_axis(
        kwargs.get("force_separate_z"), current_spacing, new_spacing, kwargs.get("separate_z_anisotropy_threshold", 3)
    )
    return True, bool(separate_z), axis


def resample_linear(
    data: torch.Tensor, new_shape, *, separate_z: bool = False, axis: int | None = None
) -> torch.Tensor:
    """(C, z, y, x) float tensor -> (C, *new_shape), as nnU-Net's order-1 probability resampling."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    data = data.float()
    if not separate_z:
        return F.interpolate(data[None], size=new_shape, mode="trilinear", align_corners=False)[0]
    # Move the low-resolution axis first, resize every slice in-plane, then pick slices along it.
    moved = data.movedim(axis + 1, 1)  # (C, low, a, b)
    channels, slices = moved.shape[:2]
    in_plane = tuple(s for i, s in enumerate(new_shape) if i != axis)
    resized = F.interpolate(
        moved.reshape(channels * slices, 1, *moved.shape[2:]), size=in_plane, mode="bilinear", align_corners=False
    ).reshape(channels, slices, *in_plane)
    if slices != new_shape[axis]:
        resized = F.interpolate(resized[None], size=(new_shape[axis], *in_plane), mode="nearest-exact")[0]
    return resized.movedim(1, axis + 1).contiguous()
