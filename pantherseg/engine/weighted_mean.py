"""The ensemble's running states during one prediction: shared inputs, fold sums per model folder, the mean.

nnU-Net combines members at two levels, and so does the engine:

- within one model folder (same ``plans.json`` and configuration: the folds of one trained model),
  as ``nnUNetPredictor`` combines folds: the mean of their LOGITS in the folder's preprocessed space,
  then ONE export (resample, softmax, uncrop) for the folder (:class:`FoldLogits`, :class:`ModelFolders`);
- across model folders, as ``nnUNetv2_ensemble`` does: the mean of the folders' PROBABILITIES in image
  space (:class:`WeightedMean`).

Weights: within a folder the logits are weighted by the members' weights (equal weights are
nnU-Net's plain mean over folds); across folders a folder weighs the sum of the weights of its
members that contributed. A member the deadline skipped or stopped leaves its folder's mean (the
folder weighs less); one stopped before its last tile with nothing else finished (``partial``)
counts only where its tiles reached, in both means.

- :class:`SharedPreprocessing`: members of one preprocessing group (same plans, spacing and
  normalisation) share one preprocessed input, computed when the first of them runs and dropped
  after the last, so at most the groups still in use are in memory.

Logits are (classes, z', y', x') float32 torch tensors in the plans' transposed order; probabilities
are (classes, z, y, x) float32 numpy arrays in image space.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


class SharedPreprocessing:
    """Each preprocessing group's input, made on first use and released after its last member."""

    def __init__(self, members, volume, timer, device=None):
        self._volume = volume
        self._device = device  # CUDA: preprocessed there (pantherseg.engine.preprocessing.preprocess)
        self._timer = timer
        self._remaining = Counter(member.preprocessing_key for member in members)
        self._ready: dict[str, object] = {}

    def get(self, member):
        """nnU-Net's preprocessed case (``.data``, ``.properties``) for ``member``'s group."""
        from pantherseg.engine.preprocessing import preprocess

        key = member.preprocessing_key
        if key not in self._ready:
            with self._timer.stage("preprocess"):
                self._ready[key] = preprocess(self._volume, member, self._device)
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

    Those voxels of ``probabilities`` are set to background 1 in place (:func:`uncovered_to_background`)."""
    uncovered = uncovered_to_background(probabilities)
    return np.where(uncovered, np.float32(0), np.float32(weight))


def uncovered_to_background(probabilities: np.ndarray) -> np.ndarray:
    """Voxels no tile reached (NaN) become background 1, in place, so a partial member's own map
    (``--member-outputs``) stays a probability map; returns the (z, y, x) mask of those voxels."""
    uncovered = np.isnan(probabilities).any(0)
    probabilities[:, uncovered] = 0.0
    probabilities[0, uncovered] = 1.0
    return uncovered


def divide_by_weights(accumulated: np.ndarray, voxel_weights) -> None:
    """Weighted sum -> weighted mean, in place; voxels no member looked at become background."""
    if np.ndim(voxel_weights) == 0:
        accumulated /= voxel_weights
        return
    empty = voxel_weights == 0
    accumulated /= np.where(empty, np.float32(1), voxel_weights)
    accumulated[0][empty] = 1.0


class FoldLogits:
    """One model folder's weighted sum of member logits, in its preprocessed space (``nnUNetPredictor``'s
    mean over folds, with weights).

    :meth:`add` takes ownership of the tensor (it is scaled in place: no copy per member). A folder with
    one member gives that member's logits back untouched, so it exports exactly as a lone member would.
    Voxels where a partial member's tiles did not reach (NaN) count for the others only; voxels no member
    reached stay NaN, which the image-space mean then gives no weight."""

    def __init__(self):
        self.total = None
        self.weight_sum = 0.0  # the contributing members' nominal weights
        self.complete = True  # False once a partial member was added
        self._first = None  # (logits, weight, complete) while only one member was added
        self._voxel_weights = 0.0  # a float, or a (z', y', x') tensor once a partial member is in the sum

    def add(self, logits, weight: float, *, complete: bool = True) -> None:
        self.weight_sum += weight
        self.complete = self.complete and complete
        if self.total is None and self._first is None:
            self._first = (logits, weight, complete)
            return
        if self._first is not None:
            self._accumulate(*self._first)
            self._first = None
        self._accumulate(logits, weight, complete)

    def _accumulate(self, logits, weight: float, complete: bool) -> None:
        import torch  # the sliding window's logits are inference tensors: changed in place only in that mode

        with torch.inference_mode():
            self._accumulate_inference(logits, weight, complete)

    def _accumulate_inference(self, logits, weight: float, complete: bool) -> None:
        if self.total is not None and logits.device != self.total.device:
            logits = logits.to(self.total.device)  # a CUDA out-of-memory retry kept its sums on the CPU
        voxel_weight = weight
        if not complete:
            covered = ~logits.isnan().any(0)
            logits.nan_to_num_(0.0)
            voxel_weight = covered.to(logits.dtype) * weight
        if not (complete and weight == 1.0):
            logits.mul_(voxel_weight)
        if self.total is None:
            self.total = logits
        else:
            self.total += logits
        self._voxel_weights = self._voxel_weights + voxel_weight

    def mean(self):
        """The weighted mean of the logits (computed in place in the sum); NaN where no member looked."""
        import torch

        if self._first is not None:
            return self._first[0]
        with torch.inference_mode():
            return self._divide()

    def _divide(self):
        if isinstance(self._voxel_weights, float):
            self.total /= self._voxel_weights
            return self.total
        empty = self._voxel_weights == 0
        self.total /= self._voxel_weights.masked_fill(empty, 1.0)
        self.total[:, empty] = float("nan")
        return self.total


@dataclass
class FolderResult:
    """A model folder whose members are all done: what its one export needs."""

    member: object  # its first member: plans, configuration and label map for the export
    logits: object  # FoldLogits.mean()
    properties: dict  # nnU-Net's preprocessing properties of the folder's input
    weight: float  # its weight across folders: the sum of its contributing members' weights
    complete: bool
    names: list[str] = field(default_factory=list)  # the members in the mean, in order


class ModelFolders:
    """Members grouped by model folder and configuration; a folder is ready once its last member is done.

    Two members belong together when they are folds of one nnU-Net results folder under one configuration
    (``folder_key``): then they share ``plans.json``, ``dataset.json``, preprocessing and export, and nnU-Net's
    predictor would average their logits. Members of other folders, even with equal plans, are separate
    models and meet only in the image-space mean, as in ``nnUNetv2_ensemble``."""

    def __init__(self, members):
        self._remaining = Counter(folder_key(member) for member in members)
        self._sizes = Counter(self._remaining)
        self._sums: dict[tuple[str, str], FoldLogits] = {}
        self._first: dict[tuple[str, str], object] = {}
        self._properties: dict[tuple[str, str], dict] = {}
        self._names: dict[tuple[str, str], list[str]] = {}

    @property
    def has_members(self) -> bool:
        """Whether any member's logits were added (the deadline's 'another member has finished')."""
        return bool(self._names)

    def shares_export(self, member) -> bool:
        """Whether ``member`` is one of several folds of its folder (their logits meet before one export)."""
        return self._sizes[folder_key(member)] > 1

    def add(self, member, logits, properties: dict, *, complete: bool = True) -> None:
        key = folder_key(member)
        self._sums.setdefault(key, FoldLogits()).add(logits, member.spec.weight, complete=complete)
        self._first.setdefault(key, member)
        self._properties[key] = properties
        self._names.setdefault(key, []).append(member.name)

    def done(self, member) -> FolderResult | None:
        """``member`` is settled (used, skipped or stopped); the folder's result if it was the last of it
        and any of its members contributed, else None."""
        key = folder_key(member)
        self._remaining[key] -= 1
        if self._remaining[key] > 0 or key not in self._sums:
            return None
        sums = self._sums.pop(key)
        return FolderResult(
            member=self._first.pop(key),
            logits=sums.mean(),
            properties=self._properties.pop(key),
            weight=sums.weight_sum,
            complete=sums.complete,
            names=self._names[key],
        )


def folder_key(member) -> tuple[str, str]:
    """(model folder, configuration): members with equal keys are folds of one model."""
    return str(member.folder), member.spec.configuration
