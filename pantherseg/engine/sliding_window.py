"""Sliding-window prediction of one network over one preprocessed volume.

nnU-Net's tiling (``compute_steps_for_sliding_window``), Gaussian importance map
(``compute_gaussian``, sigma = patch/8) and zero padding (``pad_nd_image``) are used as they are, so
tiles and weights match nnU-Net's own predictor. What differs, and why:
- logits are accumulated in float32 (nnU-Net sums in float16, which loses precision where many
  tiles overlap and is slow on CPUs);
- several tiles can go through the network in one batch (``tile_batch_size``), which keeps a GPU busy;
- the case goes to the device once, padded there, and tiles are views of it (a batch of several is
  one copy on the device): nothing goes through host memory per tile;
- a callback lets the caller report progress and watch the deadline. On the CPU it is called after
  every batch (a batch is finished when the network returns). On a GPU the host only queues work, so
  the callback is called at checks at least ``check_interval_s`` apart (``DEFAULT_CHECK_INTERVAL_S``,
  1 s) and after the last batch; a check waits for the queued batches to finish (the one
  synchronisation) so that ``tiles_done`` is true. The GPU is idle at a check for about one kernel
  launch; a deadline can be overrun by at most the interval plus one batch (docs/speed.md, "How often the
  deadline looks").

Array layout: ``data`` is (channels, z, y, x) in nnU-Net's transposed axis order; the result is
(classes, z, y, x) float32 logits.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import nullcontext
from typing import Callable, Sequence

import torch

TileCallback = Callable[[int, int], "bool | None"]
# Seconds between two deadline checks on an asynchronous device (CUDA); the CPU checks every batch.
DEFAULT_CHECK_INTERVAL_S = 1.0


class BatchTimeline:
    """When each tile batch started and ended on the device's own clock: CUDA events on a GPU (recorded in
    the stream, no synchronisation), ``time.perf_counter`` on the CPU. Read it after the prediction."""

    def __init__(self, device: torch.device, clock=time.perf_counter):
        self.device = torch.device(device)
        self.clock = clock  # the CPU's clock (injectable for tests)
        self._marks: list = []  # start, end, start, end, ...

    def mark(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(self.clock())

    def _seconds(self, earlier, later) -> float:
        if self.device.type == "cuda":
            later.synchronize()
            return earlier.elapsed_time(later) / 1000.0
        return later - earlier

    def busy_s(self) -> float:
        """Sum over batches of end - start: the device's time inside the batches."""
        return sum(self._seconds(a, b) for a, b in zip(self._marks[0::2], self._marks[1::2]))

    def idle_between_batches_s(self) -> float:
        """Sum of the gaps from one batch's end to the next batch's start: the device waiting for the host."""
        return sum(self._seconds(a, b) for a, b in zip(self._marks[1::2], self._marks[2::2]))

    @property
    def batches(self) -> int:
        return len(self._marks) // 2


def tile_origins(image_shape: Sequence[int], patch_size: Sequence[int], step_size: float) -> list[tuple[int, ...]]:
    """Corner of every tile nnU-Net would use for an image of ``image_shape`` (already padded)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    steps = compute_steps_for_sliding_window(tuple(image_shape), tuple(patch_size), step_size)
    return list(itertools.product(*steps))


def count_tiles(image_shape: Sequence[int], patch_size: Sequence[int], step_size: float) -> int:
    """How many tiles ``tile_origins`` gives for ``image_shape`` (padded to the patch first), computed with
    nnU-Net's formula instead of listing them: the memory check counts tiles of untrusted, possibly huge shapes."""
    total = 1
    for size, patch in zip(image_shape, patch_size):
        size, patch = max(int(size), int(patch)), int(patch)
        total *= math.ceil((size - patch) / (patch * step_size)) + 1
    return total


@torch.inference_mode()
def predict_logits(
    network: torch.nn.Module,
    data: torch.Tensor,
    *,
    patch_size: Sequence[int],
    num_classes: int,
    step_size: float = 0.5,
    device: torch.device = torch.device("cpu"),
    accumulate_on_device: bool = True,
    tile_batch_size: int = 1,
    mirror_axes: Sequence[int] | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_batch: TileCallback | None = None,
    check_interval_s: float | None = None,
    timeline: BatchTimeline | None = None,
) -> torch.Tensor:
    """Gaussian-weighted sliding-window logits of ``network`` over ``data``.

    Args:
        network: in eval mode, already on ``device``; maps (B, C, *patch) to (B, num_classes, *patch).
        data: (C, z, y, x) float32 preprocessed image (any device; moved to ``device`` once, tiles are views).
        patch_size: network input size (z, y, x); smaller images are zero-padded to it.
        step_size: tile step as a fraction of the patch (0.5 = 50% overlap), as in nnU-Net.
        accumulate_on_device: keep the (classes, z, y, x) sums on ``device``; False keeps them on the
            CPU (slower, but uses no device memory beyond the network and one tile batch).
        tile_batch_size: tiles per forward pass.
        mirror_axes: spatial axes (0=z, 1=y, 2=x) for flip test-time augmentation; None disables it.
        autocast_dtype: run the network under autocast in this dtype (torch.float16 on CUDA as nnU-Net
            does, torch.bfloat16 on CPUs with AMX/AVX512-BF16); None runs it in float32. Sums stay float32.
        on_batch: called as ``on_batch(tiles_done, tiles_total)`` after each forward pass; returning
            False stops the prediction there (voxels no tile reached get NaN logits: no evidence). Called
            after every batch on the CPU, at checks ``check_interval_s`` apart on other devices, and after
            the last batch.
        check_interval_s: least seconds between two ``on_batch`` calls; None: 0 on the CPU (every batch),
            ``DEFAULT_CHECK_INTERVAL_S`` on other devices (each call waits for the queued batches).
        timeline: if given, each batch's start and end are marked in it (GPU idle time between tiles).

    Returns the logits on the device the sums were kept on (``device`` or the CPU).
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    if data.ndim != 4:
        raise ValueError(f"data must be (C, z, y, x), got shape {tuple(data.shape)}")
    if tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be >= 1, got {tile_batch_size}")
    patch_size = tuple(int(p) for p in patch_size)
    device = torch.device(device)
    if check_interval_s is None:
        check_interval_s = 0.0 if device.type == "cpu" else DEFAULT_CHECK_INTERVAL_S
    padded, revert_padding = pad_nd_image(
        data.to(device, dtype=torch.float32), patch_size, "constant", {"value": 0}, True, None
    )
    origins = tile_origins(padded.shape[1:], patch_size, step_size)

    results_device = device if accumulate_on_device else torch.device("cpu")
    logits = torch.zeros((num_classes, *padded.shape[1:]), dtype=torch.float32, device=results_device)
    weights = torch.zeros(padded.shape[1:], dtype=torch.float32, device=results_device)
    gaussian = compute_gaussian(
        patch_size, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float32, device=results_device
    )
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    flips = _flip_combinations(mirror_axes)

    done = 0
    last_check = time.perf_counter()
    for start in range(0, len(origins), tile_batch_size):
        batch_origins = origins[start : start + tile_batch_size]
        slicers = [tuple(slice(o, o + p) for o, p in zip(origin, patch_size)) for origin in batch_origins]
        if timeline is not None:
            timeline.mark()
        if len(slicers) == 1:
            tiles = padded[(slice(None), *slicers[0])][None]  # a view: no copy at all
        else:
            tiles = torch.stack([padded[(slice(None), *s)] for s in slicers])  # one copy, on the device
        with autocast:
            prediction = network(tiles)
            for axes in flips:
                prediction = prediction + torch.flip(network(torch.flip(tiles, axes)), axes)
        prediction = prediction.float()
        if flips:
            prediction /= len(flips) + 1
        prediction = prediction.to(results_device)
        for tile_logits, s in zip(prediction, slicers):
            logits[(slice(None), *s)] += tile_logits * gaussian
            weights[s] += gaussian
        if timeline is not None:
            timeline.mark()
        done += len(batch_origins)
        if on_batch is None or (done < len(origins) and time.perf_counter() - last_check < check_interval_s):
            continue
        _synchronise(device)  # tiles_done must be tiles the device has finished
        last_check = time.perf_counter()
        if on_batch(done, len(origins)) is False:
            break

    if done < len(origins):
        # Stopped early (deadline): voxels no tile reached hold no evidence. They become NaN, not some
        # made-up "background" logit: (1, 0, 0) is only 0.58 background after softmax and would outvote
        # members that did look there. The engine gives NaN voxels no weight in the ensemble mean.
        uncovered = weights == 0
        logits[:, uncovered] = float("nan")
        weights[uncovered] = 1
    logits /= weights
    return logits[(slice(None), *revert_padding[1:])]


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flip_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """All non-empty subsets of the mirror axes, as tensor dims of a (B, C, z, y, x) batch."""
    if not mirror_axes:
        return []
    dims = [int(a) + 2 for a in mirror_axes]
    return [c for i in range(len(dims)) for c in itertools.combinations(dims, i + 1)]
