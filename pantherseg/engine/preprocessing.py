"""nnU-Net's own preprocessing, run once per distinct preprocessing and shared between members.

Members whose plans agree on transpose, target spacing, normalisation, intensity statistics and
resampling (see ``Member.preprocessing_key``) see identical network input, so the image is
transposed, cropped, normalised and resampled once for all of them with the preprocessor the
plans name (nnU-Net's ``DefaultPreprocessor.run_case_npy`` for standard plans).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from pantherseg.engine.members import Member
from pantherseg.io.images import Volume


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
        volume.data,
        None,
        properties,
        member.plans_manager,
        member.configuration_manager,
        member.dataset_json,
    )
    return Preprocessed(data=torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), properties=properties)
