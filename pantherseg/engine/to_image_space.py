"""From one member's logits in its preprocessed space to class probabilities in the image's space.

This follows nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` step for
step (resample logits with the plans' ``resampling_fn_probabilities``, softmax, put the crop back
with background = 1 outside it, undo the transpose), minus the segmentation it also computes and
we do not need. Ensembling then happens on these probabilities, in the original image space, as
``nnUNetv2_ensemble`` does.

The resampling runs in torch on the logits' device when the plans use nnU-Net's standard order-1
resampling (see pantherseg.engine.resampling: same numbers, no float64 copy, no per-channel skimage);
any other resampling function goes through nnU-Net's own. On that torch route the softmax, the
uncrop and the transpose stay on the device too, and the probabilities cross to the host once, at
the end (or not at all with ``keep_on_device``).
"""

from __future__ import annotations

import numpy as np
import torch

from pantherseg.engine.members import Member
from pantherseg.engine.resampling import resample_linear, torch_resampling_applies


def logits_to_probabilities(
    logits: torch.Tensor, member: Member, properties: dict, *, keep_on_device: bool = False
) -> np.ndarray | torch.Tensor:
    """(classes, z', y', x') logits -> (classes, z, y, x) float32 probabilities in the input's array order.

    ``properties`` is the dict nnU-Net's preprocessor filled for this image (shape before cropping,
    crop box, shape after cropping). The result is a numpy array, or with ``keep_on_device`` a tensor on
    the logits' device (where the torch resampling applies; else on the CPU).
    """
    plans_manager = member.plans_manager
    label_manager = member.label_manager
    resampled = to_cropped_image_grid(logits, member, properties)
    probabilities = label_manager.apply_inference_nonlin(resampled)
    del resampled
    if isinstance(probabilities, torch.Tensor) and not label_manager.has_regions:
        probabilities = uncrop(probabilities, properties["bbox_used_for_cropping"], properties["shape_before_cropping"])
    else:
        if isinstance(probabilities, torch.Tensor):
            probabilities = probabilities.cpu()
        probabilities = label_manager.revert_cropping_on_probabilities(
            probabilities, properties["bbox_used_for_cropping"], properties["shape_before_cropping"]
        )
    order = [0] + [i + 1 for i in plans_manager.transpose_backward]
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.float().permute(order).contiguous()
        return probabilities if keep_on_device else probabilities.cpu().numpy()  # the one transfer
    probabilities = np.ascontiguousarray(probabilities.transpose(order), dtype=np.float32)
    return torch.from_numpy(probabilities) if keep_on_device else probabilities


def to_cropped_image_grid(maps: torch.Tensor, member: Member, properties: dict):
    """(channels, z', y', x') maps in the member's preprocessed space -> the image's grid inside the crop box
    (still transposed), with the plans' ``resampling_fn_probabilities`` rule: torch on the maps' device where
    pantherseg.engine.resampling reproduces it, else nnU-Net's own function (a CPU tensor or array)."""
    configuration_manager = member.configuration_manager
    spacing_transposed = [properties["spacing"][i] for i in member.plans_manager.transpose_forward]
    shape_after_cropping = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = (
        configuration_manager.spacing
        if len(configuration_manager.spacing) == len(shape_after_cropping)
        else [spacing_transposed[0], *configuration_manager.spacing]
    )
    applies, separate_z, axis = torch_resampling_applies(configuration_manager, current_spacing, spacing_transposed)
    if applies:
        return resample_linear(maps, shape_after_cropping, separate_z=separate_z, axis=axis)
    return configuration_manager.resampling_fn_probabilities(
        maps.cpu(), shape_after_cropping, current_spacing, spacing_transposed
    )


def uncrop(probabilities: torch.Tensor, bbox, shape) -> torch.Tensor:
    """nnU-Net's ``revert_cropping_on_probabilities`` (labels, not regions) on the tensor's device: the crop
    back into the full (transposed) image, background probability 1 outside it."""
    full = torch.zeros((probabilities.shape[0], *shape), dtype=probabilities.dtype, device=probabilities.device)
    full[0] = 1
    full[(slice(None), *(slice(int(low), int(high)) for low, high in bbox))] = probabilities
    return full


def logits_to_tumour_mask(logits: torch.Tensor, member: Member, properties: dict, channel: int) -> np.ndarray:
    """One member's own tumour mask, (z, y, x) bool in the input's array order, without a full export.

    For quality control when folds share one export (pantherseg.engine.quality): the tumour channel's
    margin over the best other channel, ``logit[channel] - max(other logits)``, is resampled like the
    logits (one channel instead of all), cropped back with "not tumour" outside the crop and
    transposed back; the mask is where the margin is positive. Linear resampling of the margin is not
    exactly the argmax of resampled logits at boundary voxels: close enough for agreement measures,
    never used for the ensemble's own mask. Unvisited voxels of a stopped member (NaN) are not tumour."""
    others = torch.cat([logits[:channel], logits[channel + 1 :]]).amax(0, keepdim=True)
    margin = (logits[channel : channel + 1] - others).float()
    positive = (torch.as_tensor(to_cropped_image_grid(margin, member, properties))[0] > 0).cpu().numpy()
    full = np.zeros(tuple(int(s) for s in properties["shape_before_cropping"]), dtype=bool)
    full[tuple(slice(int(low), int(high)) for low, high in properties["bbox_used_for_cropping"])] = positive
    return np.ascontiguousarray(full.transpose(member.plans_manager.transpose_backward))
