"""From one member's logits in its preprocessed space to class probabilities in the image's space.

This follows nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` step for
step (resample logits with the plans' ``resampling_fn_probabilities``, softmax, put the crop back
with background = 1 outside it, undo the transpose), minus the segmentation it also computes and
we do not need. Ensembling then happens on these probabilities, in the original image space, as
``nnUNetv2_ensemble`` does.

The resampling runs in torch on the logits' device when the plans use nnU-Net's standard order-1
resampling (see pantherseg.engine.resampling: same numbers, no float64 copy, no per-channel skimage);
any other resampling function goes through nnU-Net's own.
"""

from __future__ import annotations

import numpy as np
import torch

from pantherseg.engine.members import Member
from pantherseg.engine.resampling import resample_linear, torch_resampling_applies


def logits_to_probabilities(logits: torch.Tensor, member: Member, properties: dict) -> np.ndarray:
    """(classes, z', y', x') logits -> (classes, z, y, x) float32 probabilities in the input's array order.

    ``properties`` is the dict nnU-Net's preprocessor filled for this image (shape before cropping,
    crop box, shape after cropping).
    """
    plans_manager = member.plans_manager
    configuration_manager = member.configuration_manager
    label_manager = member.label_manager

    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape_after_cropping = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = (
        configuration_manager.spacing
        if len(configuration_manager.spacing) == len(shape_after_cropping)
        else [spacing_transposed[0], *configuration_manager.spacing]
    )
    applies, separate_z, axis = torch_resampling_applies(configuration_manager, current_spacing, spacing_transposed)
    if applies:
        resampled = resample_linear(logits, shape_after_cropping, separate_z=separate_z, axis=axis)
    else:
        resampled = configuration_manager.resampling_fn_probabilities(
            logits.cpu(), shape_after_cropping, current_spacing, spacing_transposed
        )
    probabilities = label_manager.apply_inference_nonlin(resampled)
    del resampled
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.cpu()
    probabilities = label_manager.revert_cropping_on_probabilities(
        probabilities, properties["bbox_used_for_cropping"], properties["shape_before_cropping"]
    )
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.numpy()
    probabilities = probabilities.transpose([0] + [i + 1 for i in plans_manager.transpose_backward])
    return np.ascontiguousarray(probabilities, dtype=np.float32)
