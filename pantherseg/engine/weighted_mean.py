"""The ensemble's two running states during one prediction: shared preprocessed inputs and the mean.

- :class:`SharedPreprocessing`: members of one preprocessing group (same plans, spacing and
  normalisation) share one preprocessed input, computed when the first of them runs and dropped
  after the last, so at most the groups still in use are in memory;
- :class:`WeightedMean`: the image-space probabilities of the members that ran, summed with their
  weights and divided once at the end (a weighted mean). A member stopped by the deadline before
  its last tile (``partial``) counts only where its tiles reached.

Arrays are (classes, z, y, x) float32 in image space.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np


class SharedPreprocessing:
    """Each preprocessing group's input, made on first use and released after its last member."""

    def __init__(self, members, volume, timings: dict[str, float], device=None):
        self._volume = volume
        self._device = device  # CUDA: preprocessed there (pantherseg.engine.preprocessing.preprocess)
        self._timings = timings
        self._remaining = Counter(member.preprocessing_key for member in members)
        self._ready: dict[str, object] = {}

    def get(self, member):
        """nnU-Net's preprocessed case (``.data``, ``.properties``) for ``member``'s group."""
        from pantherseg.engine.preprocessing import preprocess

        key = member.preprocessing_key
        if key not in self._ready:
            started = time.perf_counter()
            self._ready[key] = preprocess(self._volume, member, self._device)
            self._timings["preprocess"] += time.perf_counter() - started
        return self._ready[key]

    def done(self, member) -> None:
        """``member`` no longer needs its input; the group's is dropped once no member still does."""
        key = member.preprocessing_key
        self._remaining[key] -= 1
        if self._remaining[key] == 0:
            self._ready.pop(key, None)


class WeightedMean:
    """Sum of ``weight * probabilities`` over the members that ran, then one division."""

    def __init__(self):
        self.total: np.ndarray | None = None
        self.weight_sum = 0.0  # the members' nominal weights: > 0 once any member was added
        self._voxel_weights: float | np.ndarray = 0.0  # per voxel once a partial member was added

    @property
    def has_members(self) -> bool:
        return self.weight_sum > 0

    def add(self, probabilities: np.ndarray, weight: float, *, complete: bool = True) -> None:
        """Add one member's map; a partial one (NaN where no tile reached) counts only where it looked."""
        voxel_weight = weight if complete else coverage_weight(probabilities, weight)
        if self.total is None:
            self.total = probabilities * voxel_weight
        else:
            self.total += probabilities * voxel_weight
        self.weight_sum += weight
        self._voxel_weights = self._voxel_weights + voxel_weight

    def mean(self) -> np.ndarray:
        """The weighted mean, computed in place in the running sum; voxels no member reached are background."""
        divide_by_weights(self.total, self._voxel_weights)
        return self.total


def coverage_weight(probabilities: np.ndarray, weight: float) -> np.ndarray:
    """A partial member's weight per voxel: 0 where no tile reached (NaN from the sliding window).

    Those voxels of ``probabilities`` are set to background 1 in place, so the member's own map
    (``--member-outputs``) stays a probability map."""
    uncovered = np.isnan(probabilities).any(0)
    probabilities[:, uncovered] = 0.0
    probabilities[0, uncovered] = 1.0
    return np.where(uncovered, np.float32(0), np.float32(weight))


def divide_by_weights(accumulated: np.ndarray, voxel_weights) -> None:
    """Weighted sum -> weighted mean, in place; voxels no member looked at become background."""
    if np.ndim(voxel_weights) == 0:
        accumulated /= voxel_weights
        return
    empty = voxel_weights == 0
    accumulated /= np.where(empty, np.float32(1), voxel_weights)
    accumulated[0][empty] = 1.0
