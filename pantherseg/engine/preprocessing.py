"""nnU-Net's own preprocessing, run once per distinct preprocessing and shared between members.

Members whose plans agree on transpose, target spacing, normalisation, intensity statistics and
resampling (see ``Member.preprocessing_key``) see identical network input, so the image is
transposed, cropped, normalised and resampled once for all of them with the preprocessor the
plans name (nnU-Net's ``DefaultPreprocessor.run_case_npy`` for standard plans).

The network sees finite numbers only. nnU-Net normalises in float32, and its z-score sums the
squared deviations there: above about 1e15 (an image of maximum 3.25e17, well inside what the
image reader accepts) the standard deviation overflows to infinity, every voxel normalises to 0
and the mask comes out wrong (9.4 times too large in the case found) with exit 0. So an image
whose magnitude exceeds :data:`SAFE_MAGNITUDE` is first scaled by a power of two when every scheme
of the plans is scale-invariant (z-score, rescale to [0, 1]): exact in binary floating point and
the normalised result is the same, without the overflow. Schemes that are not scale-invariant
(CTNormalization clips to the plans' percentiles first, so it cannot overflow) run unchanged.
Whatever the scheme, a normalised input that is not finite everywhere is refused (InputError,
exit 2): no mask is computed from it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from pantherseg.engine.members import Member
from pantherseg.engine.model_schema import SCALE_INVARIANT_SCHEMES
from pantherseg.errors import InputError
from pantherseg.io.images import Volume

# Squares of 2**40 summed over 2**40 voxels stay below float32's largest number (about 2**128).
SAFE_MAGNITUDE = 2.0**40


@dataclass
class Preprocessed:
    data: torch.Tensor  # (channels, z', y', x') float32 in the plans' transposed axis order
    properties: dict  # nnU-Net's properties: crop box, shapes, spacing


def preprocess(volume: Volume, member: Member, device: torch.device | None = None) -> Preprocessed:
    """Preprocess ``volume`` exactly as nnU-Net would for ``member``'s plans and configuration.

    On a CUDA ``device`` the same steps run there in torch (pantherseg.engine.device_preprocessing)."""
    from pantherseg.engine import device_preprocessing

    if device_preprocessing.wanted(member, device):
        data, properties = device_preprocessing.preprocess_on_device(volume, member, torch.device(device))
        return Preprocessed(data=data, properties=properties)
    preprocessor = member.configuration_manager.preprocessor_class(verbose=False)
    properties = copy.deepcopy(volume.nnunet_properties())
    data, _, properties = preprocessor.run_case_npy(
        scaled_for_float32(volume.data, member.configuration_manager.normalization_schemes),
        None,
        properties,
        member.plans_manager,
        member.configuration_manager,
        member.dataset_json,
    )
    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(
            f"{volume.source}: the image normalised for {member.describe()} is not finite everywhere "
            f"(intensities {float(np.min(volume.data)):.3g} to {float(np.max(volume.data)):.3g} overflow "
            f"its {list(member.configuration_manager.normalization_schemes)} in float32); no mask is "
            f"computed from it."
        )
    return Preprocessed(data=tensor, properties=properties)


def scaled_for_float32(data: np.ndarray, schemes) -> np.ndarray:
    """``data`` times a power of two that brings its magnitude to at most :data:`SAFE_MAGNITUDE`, where every
    scheme is scale-invariant and the magnitude is above it; otherwise ``data`` itself."""
    if not all(scheme in SCALE_INVARIANT_SCHEMES for scheme in schemes):
        return data
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if not math.isfinite(peak) or peak <= SAFE_MAGNITUDE:
        return data
    return np.ldexp(data, -math.ceil(math.log2(peak / SAFE_MAGNITUDE))).astype(np.float32)
