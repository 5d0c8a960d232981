"""nnU-Net 2.8's ``DefaultPreprocessor.run_case_npy`` in torch, on the device the network runs on.

nnU-Net preprocesses on the CPU with scipy/skimage in float64: 6-8 s per case with 16 cores, more
with the 4 vCPUs of grand-challenge's T4 instance (issue 24; nnU-Net's own issue #2912). This module
does the same steps on a torch device, and :func:`preprocess_on_device` is used only where
:func:`applies` says every step is one it reproduces; the CPU route keeps nnU-Net's own code
(pantherseg.engine.preprocessing chooses). The steps, as nnU-Net does them:

- transpose (``transpose_forward``), then crop to the bounding box of the non-zero voxels of any
  channel (``crop_to_nonzero``: the box is half open, the whole axis where nothing is non-zero);
- the non-zero mask with its holes filled (``binary_fill_holes``, 6-connected background), needed
  only by ZScore normalisation with ``use_mask_for_norm``; here a flood fill of the background from
  the crop's faces (the same set: everything outside the box is background connected to the border);
- normalisation per channel (ZScore with or without the mask, CT, none, rescale to [0, 1], RGB),
  statistics in float64 like numpy's float32 pairwise sums up to rounding;
- resampling with ``resample_data_or_seg_to_shape``: skimage ``resize(order, mode='edge',
  anti_aliasing=False)`` is ``scipy.ndimage.zoom(grid_mode=True)``, a separable linear map per axis
  followed by a clip to the input's range. Each axis' map is built once, exactly, by giving nnU-Net's
  own skimage call the identity matrix (float64, on the CPU, a few milliseconds), and then applied
  as a matrix product on the device; the clip is applied per channel (or per slice with separate-z,
  as nnU-Net resizes slice by slice); the separate-z step along the low-resolution axis uses scipy's
  ``map_coordinates(order_z, mode='nearest')`` at nnU-Net's coordinates, again as a matrix;
- plans whose ``resampling_fn_data`` is nnU-Net's own ``resample_torch_fornnunet`` get that
  function with the device.

Array layout: the result is (channels, z', y', x') float32 on ``device`` in the plans' transposed
order, with nnU-Net's properties (crop box, shapes) filled as nnU-Net fills them.
tests/engine/test_device_preprocessing.py compares both the arrays and the resulting masks.
"""

from __future__ import annotations

import copy
import functools
from typing import Sequence

import numpy as np
import torch

from pantherseg.engine.members import Member

_NORMALISATIONS = (
    "ZScoreNormalization",
    "CTNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
)
# Flood-fill iterations between two convergence checks (each check is one device synchronisation).
_FILL_CHECK_EVERY = 16


ENVIRONMENT_VARIABLE = "PANTHERSEG_DEVICE_PREPROCESSING"
CHOICES = ("auto", "on", "off")


def wanted(member: Member, device) -> bool:
    """Whether ``member``'s input is preprocessed here: on CUDA devices by default, never on the CPU unless
    ``PANTHERSEG_DEVICE_PREPROCESSING=on`` (tests, benchmarks); ``off`` keeps nnU-Net's CPU route everywhere."""
    import os

    from pantherseg.errors import ConfigError

    choice = os.environ.get(ENVIRONMENT_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{ENVIRONMENT_VARIABLE} must be one of {list(CHOICES)}, found {choice!r}.")
    if choice == "off" or device is None or not applies(member):
        return False
    return choice == "on" or torch.device(device).type == "cuda"


def applies(member: Member) -> bool:
    """True if every step of ``member``'s preprocessing is one this module reproduces."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    cm = member.configuration_manager
    if cm.preprocessor_class is not DefaultPreprocessor:
        return False
    if any(scheme not in _NORMALISATIONS for scheme in cm.normalization_schemes):
        return False
    return _resampling_kind(member) is not None


def _resampling_kind(member: Member) -> str | None:
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
    from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet

    function = member.configuration_manager.resampling_fn_data
    base = getattr(function, "func", function)
    kwargs = getattr(function, "keywords", {}) or {}
    if base is resample_torch_fornnunet and not kwargs.get("is_seg", False):
        return "torch"
    if base is resample_data_or_seg_to_shape and not kwargs.get("is_seg", False):
        return "spline"
    return None


def preprocess_on_device(volume, member: Member, device: torch.device) -> tuple[torch.Tensor, dict]:
    """``volume`` preprocessed for ``member`` as nnU-Net would, computed on ``device``: (data, properties)."""
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    plans_manager, cm = member.plans_manager, member.configuration_manager
    properties = copy.deepcopy(volume.nnunet_properties())
    data = torch.as_tensor(volume.data, dtype=torch.float32).to(device)
    data = data.permute(0, *[i + 1 for i in plans_manager.transpose_forward])
    original_spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    properties["shape_before_cropping"] = tuple(data.shape[1:])
    nonzero = (data != 0).any(0)
    bbox = nonzero_bbox(nonzero)
    crop = tuple(slice(low, high) for low, high in bbox)
    data, nonzero = data[(slice(None), *crop)].contiguous(), nonzero[crop]  # contiguous: a copy, the input stays
    properties["bbox_used_for_cropping"] = bbox
    properties["shape_after_cropping_and_before_resampling"] = tuple(data.shape[1:])

    target_spacing = list(cm.spacing)
    if len(target_spacing) < data.ndim - 1:
        target_spacing = [original_spacing[0], *target_spacing]  # 2d configurations keep the slice spacing
    new_shape = [int(s) for s in compute_new_shape(data.shape[1:], original_spacing, target_spacing)]
    mask = fill_holes(nonzero) if _needs_mask(cm) else None
    del nonzero
    normalise(data, mask, cm, plans_manager.foreground_intensity_properties_per_channel)
    del mask
    data = resample_data(data, new_shape, original_spacing, target_spacing, member)
    return data, properties


# --- crop ---------------------------------------------------------------------------------------


def nonzero_bbox(nonzero: torch.Tensor) -> list[list[int]]:
    """nnU-Net's ``get_bbox_from_mask``: half-open [start, end) per axis; the whole axis if nothing is set."""
    bbox = []
    for axis in range(nonzero.ndim):
        present = nonzero.any(dim=tuple(a for a in range(nonzero.ndim) if a != axis))
        where = torch.nonzero(present).flatten().cpu()
        bbox.append([int(where[0]), int(where[-1]) + 1] if where.numel() else [0, int(nonzero.shape[axis])])
    return bbox


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """``scipy.ndimage.binary_fill_holes`` (6-connectivity): everything but the background reachable from outside.

    The background reachable from outside grows one 6-neighbour step per iteration, starting from the
    background on the array's faces; convergence is checked every ``_FILL_CHECK_EVERY`` steps."""
    background = ~mask
    reached = torch.zeros_like(mask)
    for axis in range(mask.ndim):
        for index in (0, -1):
            face = [slice(None)] * mask.ndim
            face[axis] = index
            reached[tuple(face)] = background[tuple(face)]
    while True:
        before = reached.clone()
        for _ in range(_FILL_CHECK_EVERY):
            reached = _grow(reached) & background
        if torch.equal(before, reached):
            return ~reached


def _grow(reached: torch.Tensor) -> torch.Tensor:
    grown = reached.clone()
    for axis in range(reached.ndim):
        size = reached.shape[axis]
        if size < 2:
            continue
        grown.narrow(axis, 1, size - 1).logical_or_(reached.narrow(axis, 0, size - 1))
        grown.narrow(axis, 0, size - 1).logical_or_(reached.narrow(axis, 1, size - 1))
    return grown


# --- normalise ----------------------------------------------------------------------------------


def _needs_mask(cm) -> bool:
    return any(
        scheme == "ZScoreNormalization" and bool(use)
        for scheme, use in zip(cm.normalization_schemes, cm.use_mask_for_norm)
    )


def normalise(data: torch.Tensor, mask: torch.Tensor | None, cm, intensity_properties: dict) -> None:
    """nnU-Net's normalisation schemes, channel by channel, in place (float32 target, eps 1e-8)."""
    eps = 1e-8
    for channel, scheme in enumerate(cm.normalization_schemes):
        image = data[channel]
        if scheme == "ZScoreNormalization":
            if cm.use_mask_for_norm[channel]:
                values = image[mask].double()
                mean, std = values.mean(), values.std(correction=0)
                image[mask] = ((image[mask] - mean.float()) / max(float(std), eps)).float()
            else:
                mean, std = image.double().mean(), image.double().std(correction=0)
                image -= mean.float()
                image /= max(float(std), eps)
        elif scheme == "CTNormalization":
            props = intensity_properties[str(channel)]
            image.clamp_(props["percentile_00_5"], props["percentile_99_5"])
            image -= props["mean"]
            image /= max(props["std"], eps)
        elif scheme == "RescaleTo01Normalization":
            image -= image.min()
            image /= image.max().clamp(min=eps)
        elif scheme == "RGBTo01Normalization":
            image /= 255.0


# --- resample -----------------------------------------------------------------------------------


def resample_data(data: torch.Tensor, new_shape: Sequence[int], current_spacing, new_spacing, member: Member):
    """The plans' ``resampling_fn_data`` between the two spacings, on ``data``'s device."""
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis
    from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet

    function = member.configuration_manager.resampling_fn_data
    kwargs = dict(getattr(function, "keywords", {}) or {})
    if _resampling_kind(member) == "torch":
        kwargs.pop("device", None)
        return resample_torch_fornnunet(data, new_shape, current_spacing, new_spacing, device=data.device, **kwargs)
    separate_z, axis = determine_do_sep_z_and_axis(
        kwargs.get("force_separate_z", False),
        current_spacing,
        new_spacing,
        kwargs.get("separate_z_anisotropy_threshold", 3),
    )
    return resample_spline(
        data,
        new_shape,
        order=kwargs.get("order", 3),
        separate_z=bool(separate_z),
        axis=axis,
        order_z=kwargs.get("order_z", 0),
    )


def resample_spline(
    data: torch.Tensor,
    new_shape: Sequence[int],
    *,
    order: int = 3,
    separate_z: bool = False,
    axis: int | None = None,
    order_z: int = 0,
) -> torch.Tensor:
    """(C, z, y, x) -> (C, *new_shape) as nnU-Net's ``resample_data_or_seg(is_seg=False)`` computes it."""
    new_shape = [int(s) for s in new_shape]
    if list(data.shape[1:]) == new_shape:
        return data
    if not separate_z:
        low, high = _range(data, keep=(0,))
        for dim in range(3):
            data = _apply_along(data, dim + 1, resize_operator(data.shape[dim + 1], new_shape[dim], order))
        return _clip(data, low, high)
    plane = [d for d in range(3) if d != axis]
    low, high = _range(data, keep=(0, axis + 1))  # nnU-Net resizes (and clips) slice by slice
    for dim in plane:
        data = _apply_along(data, dim + 1, resize_operator(data.shape[dim + 1], new_shape[dim], order))
    data = _clip(data, low, high)
    if data.shape[axis + 1] != new_shape[axis]:
        data = _apply_along(data, axis + 1, low_resolution_operator(data.shape[axis + 1], new_shape[axis], order_z))
    return data


@functools.lru_cache(maxsize=64)
def resize_operator(size: int, new_size: int, order: int) -> np.ndarray:
    """(new_size, size) float64 matrix of skimage's 1-d ``resize`` as nnU-Net calls it, without the clip."""
    from skimage.transform import resize

    if size == new_size:
        return np.eye(size)
    return resize(np.eye(size), (new_size, size), order=order, mode="edge", anti_aliasing=False, clip=False)


@functools.lru_cache(maxsize=64)
def low_resolution_operator(size: int, new_size: int, order: int) -> np.ndarray:
    """(new_size, size) matrix of nnU-Net's separate-z step: ``map_coordinates(order, mode='nearest')`` at
    ``size / new_size * (i + 0.5) - 0.5``."""
    from scipy.ndimage import map_coordinates

    coordinates = float(size) / new_size * (np.arange(new_size) + 0.5) - 0.5
    rows, columns = np.meshgrid(coordinates, np.arange(size, dtype=float), indexing="ij")
    return map_coordinates(np.eye(size), np.array([rows, columns]), order=order, mode="nearest")


def _apply_along(data: torch.Tensor, dim: int, operator: np.ndarray) -> torch.Tensor:
    # A float32 matrix product: on CUDA it must not run in TF32 (10 mantissa bits would move the result away
    # from nnU-Net's float64), so TF32 is switched off around it should anything have switched it on.
    matrix = torch.as_tensor(operator, dtype=torch.float32, device=data.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return (data.movedim(dim, -1) @ matrix.T).movedim(-1, dim).contiguous()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _range(data: torch.Tensor, keep: tuple[int, ...]):
    """Min and max over every dim not in ``keep``, shaped to broadcast against ``data``."""
    reduce = tuple(d for d in range(data.ndim) if d not in keep)
    return data.amin(dim=reduce, keepdim=True), data.amax(dim=reduce, keepdim=True)


def _clip(data: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(data, high), low)
