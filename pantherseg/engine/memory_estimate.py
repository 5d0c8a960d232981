"""Will this prediction fit in memory? Checked after reading the image and before the big arrays exist.

:func:`check_prediction_fits` runs once the ensemble is known (``api._segment_one`` calls it after
reading and before predicting): the peak host memory of ``Ensemble.predict`` is estimated from the
image's size and the members' plans and compared with what this process may still use
(:func:`pantherseg.io.host_memory.available_bytes`); a case that cannot fit is refused with a
ResourceError giving both figures. It also refuses, as an InputError, an image whose non-zero part is
thinner than half a voxel at some member's spacing: nnU-Net would resample it to nothing. The image
header itself was checked when it was read (:mod:`pantherseg.io.host_memory`).

The estimate is an upper bound of the arrays the engine holds at its peak (see
:func:`estimate_prediction`), in bytes, for the engine's data flow: the image (as read and as
float32), each preprocessing group's resampled input, the image-space probability accumulator, the
running logit sum of each model folder with several folds, each member's own tumour mask (bool, kept for
quality control), and the largest member's own peak: either its sliding window (padded input, float32 logits and tile
weights; plus the network's activations for one tile batch when running on the CPU) or its export
(the logits, a float64 copy of them should nnU-Net's own resampling run instead of the torch one,
and the resampled, softmaxed, uncropped and transposed probabilities in image space). Network
weights are not counted: the checkpoints are memory-mapped when the ensemble is loaded, before the
check, and a network built on the CPU adopts those tensors rather than copying them.

Whose fault (issue 20): when the case does not fit, each member is also tried alone on a typical
PANTHER image (``TYPICAL_IMAGE``, the Task 1 median). A member that would not fit even that, or
whose target spacing makes that image less than one voxel across, has absurd plans (a spacing of
0.001 mm, a 2000^3 patch): that is refused as a ModelError (exit 3) naming the member, its spacing
and patch, not as "crop the image" (exit 5), which is kept for images that are too large for
members that are fine.

GPU memory (:func:`estimate_device_prediction`): the device's peak when preprocessing, sliding
window and export all run there (issue 24), checked against the card's memory with
``DEVICE_USABLE_FRACTION``; a case over it is logged, and the engine's CUDA out-of-memory fallbacks
(sums on the CPU, smaller batches) take over. docs/speed.md gives the figure for a 16 GB T4.

Sizes are numbers of voxels; axis orders do not matter for them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pantherseg.engine.sliding_window import count_tiles
from pantherseg.errors import InputError, ModelError, ResourceError
from pantherseg.io import host_memory
from pantherseg.io.host_memory import FLOAT32, gb, image_read_bytes, shortfall

if TYPE_CHECKING:
    from pantherseg.engine.ensemble import Ensemble
    from pantherseg.io.images import Volume

log = logging.getLogger(__name__)

FLOAT64 = 8
# A typical PANTHER image (Task 1 median of the organisers' fingerprint), (z, y, x) voxels and mm: a member
# that cannot segment this within the memory has absurd plans, whatever image it is given.
TYPICAL_IMAGE = ((72, 258, 318), (3.0, 1.19, 1.19))
# grand-challenge's smallest machine (g4dn.xlarge: 16 GB, 1 GB reserved). A member is at fault only if it needs
# more than this for a typical image; needing more than a smaller machine has is the machine's shortfall.
SMALLEST_MACHINE_BYTES = 15 * 1024**3
# Of the GPU's memory, this much is planned for: the CUDA context, cuDNN workspaces, allocator fragmentation.
DEVICE_USABLE_FRACTION = 0.85
# Python objects per sliding-window tile (its origin tuple and slices, engine bookkeeping), generously.
TILE_BOOKKEEPING_BYTES = 1024
_HUGE = 1 << 62


@dataclass
class MemoryEstimate:
    """Peak bytes of one prediction, with the parts that make it up (for the error message and tests)."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        largest = sorted(self.parts.items(), key=lambda item: -item[1])[:3]
        return ", ".join(f"{name} {gb(value)}" for name, value in largest)


def resampled_shape(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], member) -> tuple[int, ...]:
    """The shape ``member``'s preprocessing resamples an array of ``shape_zyx`` to, in the plans' transposed
    axis order (nnU-Net's ``compute_new_shape``: round(spacing / target * shape))."""
    order = list(member.plans_manager.transpose_forward)
    target = list(member.configuration_manager.spacing)
    sizes = (spacing_zyx[axis] / t * shape_zyx[axis] for axis, t in zip(order, target))
    return tuple(int(round(s)) if s < _HUGE else _HUGE for s in sizes)  # capped: 1e308 mm must not overflow


def activation_bytes(arch_kwargs: dict, patch_size: Sequence[int], tile_batch_size: int) -> int:
    """Feature maps of one tile batch in a U-Net forward pass: every stage's skip tensor kept for the
    decoder, plus four full-resolution first-stage maps as working buffers (conv output, concatenation)."""
    features = list(arch_kwargs.get("features_per_stage") or [32])
    strides = list(arch_kwargs.get("strides") or [[1] * len(patch_size)] * len(features))
    voxels = math.prod(int(p) for p in patch_size)
    total = 0
    first = None
    for stage_features, stride in zip(features, strides):
        stride = [stride] * len(patch_size) if isinstance(stride, int) else list(stride)
        voxels = max(1, voxels // max(1, math.prod(int(s) for s in stride)))
        first = first if first is not None else int(stage_features) * voxels
        total += int(stage_features) * voxels
    return tile_batch_size * FLOAT32 * (total + 4 * (first or 0))


def estimate_prediction(
    *,
    shape_zyx: Sequence[int],
    spacing_zyx: Sequence[float],
    source_bytes_per_voxel: int,
    members: Sequence,
    num_classes: int,
    device_type: str = "cpu",
    tile_batch_size: int = 1,
    tile_step_size: float = 0.5,
) -> MemoryEstimate:
    """Peak host memory of ``Ensemble.predict`` on an image of ``shape_zyx`` voxels at ``spacing_zyx`` mm.

    ``members`` are :class:`pantherseg.engine.members.Member` objects (their plans give the target spacing,
    patch size and network). Cropping to the non-zero region is ignored (an upper bound).
    """
    image_voxels = math.prod(int(s) for s in shape_zyx)
    parts = {
        "image": image_read_bytes(image_voxels, source_bytes_per_voxel) - image_voxels,  # finite mask is freed
        "probability accumulator": num_classes * image_voxels * FLOAT32,
    }
    groups: dict[str, int] = {}
    folds: dict[str, list[int]] = {}  # per model folder: its members' logit sums, held until its last fold ran
    member_peak = 0
    for member in members:
        cm = member.configuration_manager
        preprocessed = resampled_shape(shape_zyx, spacing_zyx, member)
        preprocessed_voxels = math.prod(max(1, s) for s in preprocessed)
        padded_voxels = math.prod(max(max(1, s), int(p)) for s, p in zip(preprocessed, member.patch_size))
        groups[member.preprocessing_key] = preprocessed_voxels * FLOAT32
        folds.setdefault(str(member.folder), []).append(num_classes * preprocessed_voxels * FLOAT32)
        network = (num_classes + 2) * padded_voxels * FLOAT32
        network += count_tiles(preprocessed, member.patch_size, tile_step_size) * TILE_BOOKKEEPING_BYTES
        if device_type == "cpu":
            network += activation_bytes(cm.network_arch_init_kwargs or {}, member.patch_size, tile_batch_size)
        export = (
            num_classes * preprocessed_voxels * (FLOAT32 + FLOAT64)
            + num_classes * image_voxels * 3 * FLOAT32
            + image_voxels * FLOAT64
        )
        member_peak = max(member_peak, network, export)
    parts["preprocessed input"] = sum(groups.values())
    # A folder of several folds keeps one running sum of their logits from its first fold to its last; every
    # folder may be open at once (members run in priority order, not folder by folder).
    parts["fold logit sums"] = sum(max(sums) for sums in folds.values() if len(sums) > 1)
    # Quality control keeps each member's own tumour mask (bool, image space) until the case's score is made.
    parts["members' tumour masks"] = len(members) * image_voxels
    parts["largest member (sliding window or export)"] = member_peak
    return MemoryEstimate(parts)


def check_prediction_fits(volume: "Volume", ensemble: "Ensemble") -> MemoryEstimate:
    """Raise ResourceError if predicting ``volume`` with ``ensemble`` would not fit in the available memory,
    or InputError if the image would not fit the members' voxel grid (thinner than half a target voxel)."""
    _check_resampled_shapes(volume, ensemble)
    estimate = estimate_prediction(
        shape_zyx=volume.shape_zyx,
        spacing_zyx=volume.spacing_zyx,
        source_bytes_per_voxel=_bytes_per_voxel(volume.sitk_image),
        members=ensemble.members,
        num_classes=ensemble.num_classes,
        device_type=getattr(ensemble.device, "type", "cpu"),
        tile_batch_size=ensemble.tile_batch_size,
        tile_step_size=ensemble.config.tile_step_size,
    )
    available = host_memory.available_bytes()
    if available is not None and estimate.total > available * host_memory.USABLE_FRACTION:
        _blame_a_member(ensemble, available)
        raise ResourceError(
            f"{volume.source}: not enough memory to segment this image of size {list(reversed(volume.shape_zyx))} "
            f"(x,y,z) at [{', '.join(f'{s:.4g}' for s in reversed(volume.spacing_zyx))}] mm: it "
            f"{shortfall(estimate.total, available)} ({estimate.describe()}); "
            f"crop the image or use a machine with more RAM."
        )
    _log_device_estimate(volume, ensemble)
    return estimate


def _blame_a_member(ensemble: "Ensemble", available: int) -> None:
    """ModelError naming the first member that alone would not fit a typical image even on grand-challenge's
    smallest machine, nor here: its plans are at fault, not the image."""
    shape, spacing = TYPICAL_IMAGE
    for member in ensemble.members:
        alone = estimate_prediction(
            shape_zyx=shape,
            spacing_zyx=spacing,
            source_bytes_per_voxel=FLOAT32,
            members=[member],
            num_classes=ensemble.num_classes,
            device_type=getattr(ensemble.device, "type", "cpu"),
            tile_batch_size=ensemble.tile_batch_size,
            tile_step_size=ensemble.config.tile_step_size,
        )
        limit = max(available, SMALLEST_MACHINE_BYTES) * host_memory.USABLE_FRACTION
        if alone.total > limit:
            raise ModelError(
                f"{member.describe()}: its plans (target spacing {_spacing_xyz(member)} mm (x,y,z), patch "
                f"{list(reversed(member.patch_size))}) would not fit in memory even for a typical PANTHER image "
                f"(size {list(reversed(shape))} at {list(reversed(spacing))} mm): it "
                f"{shortfall(alone.total, available)} "
                f"({alone.describe()}). Check the model's plans.json (spacing, patch_size)."
            )


def _spacing_xyz(member) -> list[float]:
    order = list(member.plans_manager.transpose_forward)
    return [float(f"{member.configuration_manager.spacing[order.index(a)]:.4g}") for a in (2, 1, 0)]


def _check_resampled_shapes(volume: "Volume", ensemble: "Ensemble") -> None:
    """nnU-Net crops the image to its non-zero voxels, then resamples the crop to each member's spacing;
    a crop thinner than half a target voxel would become an empty array (a ValueError deep in nnU-Net)."""
    nonzero = volume.data[0] != 0
    extent = []
    for axis in range(3):
        present = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return  # all zero: the engine returns an empty mask without preprocessing
        extent.append(int(present[-1] - present[0] + 1))
    del nonzero
    typical_shape, typical_spacing = TYPICAL_IMAGE
    for member in ensemble.members:
        if min(resampled_shape(typical_shape, typical_spacing, member)) < 1:
            raise ModelError(
                f"{member.describe()}: its target spacing {_spacing_xyz(member)} mm (x,y,z) makes even a typical "
                f"PANTHER image (size {list(reversed(typical_shape))} at {list(reversed(typical_spacing))} mm) less "
                f"than one voxel across. Check the spacing in the model's plans.json."
            )
        shape = resampled_shape(extent, volume.spacing_zyx, member)
        if min(shape) < 1:
            millimetres = [round(n * s, 3) for n, s in zip(extent, volume.spacing_zyx)]
            target = [
                member.configuration_manager.spacing[list(member.plans_manager.transpose_forward).index(a)]
                for a in range(3)
            ]
            raise InputError(
                f"{volume.source}: the image's non-zero part is only {list(reversed(millimetres))} mm across "
                f"(x,y,z); at {member.describe()}'s spacing {list(reversed(target))} mm that is less than one "
                f"voxel on some axis. Check the spacing in the header."
            )


def _bytes_per_voxel(image) -> int:
    try:
        return int(image.GetSizeOfPixelComponent()) * int(image.GetNumberOfComponentsPerPixel())
    except AttributeError:
        return FLOAT32


# --- GPU memory -----------------------------------------------------------------------------------


def parameter_bytes(member) -> int:
    """The network's weights in float32, counted on the meta device (nothing is allocated)."""
    from pantherseg.engine.architectures import build_network_on_meta

    cm = member.configuration_manager
    network = build_network_on_meta(
        cm.network_arch_class_name,
        cm.network_arch_init_kwargs,
        cm.network_arch_init_kwargs_req_import,
        owner=member.describe(),
        input_channels=len(cm.normalization_schemes),
        output_channels=member.label_manager.num_segmentation_heads,
    )
    return FLOAT32 * sum(p.numel() for p in network.parameters())


def estimate_device_prediction(
    *,
    shape_zyx: Sequence[int],
    spacing_zyx: Sequence[float],
    members: Sequence,
    num_classes: int,
    weight_bytes: int,
    tile_batch_size: int = 1,
    activation_bytes_per_value: int = FLOAT32,
) -> MemoryEstimate:
    """Peak GPU memory of one prediction when preprocessing, sliding window and export run on the device.

    Upper bounds, no cropping: the image (float32) and the largest resampling stage (its input and output
    both held) for device preprocessing; every preprocessing group's input (kept until its last member);
    the largest member's sliding window (padded copy, float32 logits and tile weights, the Gaussian, one
    tile batch's input and output and its activations at ``activation_bytes_per_value``: 4, as under
    fp16 autocast the instance norms run in float32) or its export (logits, resampled and softmaxed in the
    crop, uncropped and transposed in image space); one network's weights (``weight_bytes``; one member runs at a time)."""
    image_voxels = math.prod(int(s) for s in shape_zyx)
    groups: dict[str, int] = {}
    preprocessing = window = export = 0
    for member in members:
        cm = member.configuration_manager
        target = resampled_shape(shape_zyx, spacing_zyx, member)
        voxels = math.prod(max(1, s) for s in target)
        groups[member.preprocessing_key] = voxels * FLOAT32
        # Three separable stages; the largest holds its input and its output: at most image + 2 x output.
        preprocessing = max(preprocessing, FLOAT32 * (2 * image_voxels + 2 * max(voxels, image_voxels)))
        patch = math.prod(int(p) for p in member.patch_size)
        padded = math.prod(max(max(1, s), int(p)) for s, p in zip(target, member.patch_size))
        activations = activation_bytes(cm.network_arch_init_kwargs or {}, member.patch_size, tile_batch_size)
        window = max(
            window,
            FLOAT32 * ((num_classes + 2) * padded + patch)
            + tile_batch_size * patch * FLOAT32 * (1 + 2 * num_classes)
            + activations * activation_bytes_per_value // FLOAT32,
        )
        export = max(export, FLOAT32 * num_classes * (voxels + 2 * image_voxels + 2 * image_voxels))
    return MemoryEstimate(
        {
            "network weights": int(weight_bytes),
            "preprocessed input": sum(groups.values()),
            "largest stage (preprocessing, sliding window or export)": max(preprocessing, window, export),
        }
    )


def _log_device_estimate(volume: "Volume", ensemble: "Ensemble") -> None:
    """On CUDA: warn when the device estimate exceeds the card (the engine's out-of-memory fallbacks follow)."""
    device = getattr(ensemble, "device", None)
    if getattr(device, "type", "cpu") != "cuda":
        return
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    estimate = estimate_device_prediction(
        shape_zyx=volume.shape_zyx,
        spacing_zyx=volume.spacing_zyx,
        members=ensemble.members,
        num_classes=ensemble.num_classes,
        weight_bytes=max(parameter_bytes(m) for m in ensemble.members),
        tile_batch_size=ensemble.tile_batch_size,
    )
    if estimate.total > total * DEVICE_USABLE_FRACTION:
        log.warning(
            "%s: the GPU needs about %s (%s) of its %s; the engine falls back to sums on the CPU if it runs out",
            volume.source,
            gb(estimate.total),
            estimate.describe(),
            gb(total),
        )
