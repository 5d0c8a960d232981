"""The way back to image space on the logits' device equals nnU-Net's export steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pantherseg.engine.to_image_space import logits_to_probabilities, uncrop

from conftest import MODEL_A


@pytest.fixture(scope="module")
def member(tiny_weights):
    from pantherseg.config import parse_config
    from pantherseg.engine.members import load_members

    from model_factory import config_dict
    from model_factory import member as member_entry

    return load_members(parse_config(config_dict([member_entry("a-f0", MODEL_A)])).task("t1"), tiny_weights)[0]


def test_uncrop_equals_nnunets_revert_cropping(member):
    probabilities = torch.softmax(torch.randn((3, 5, 7, 6)), 0)
    bbox, shape = [[2, 7], [0, 7], [3, 9]], (9, 7, 12)
    reference = member.label_manager.revert_cropping_on_probabilities(probabilities.numpy(), bbox, shape)
    np.testing.assert_array_equal(uncrop(probabilities, bbox, shape).numpy(), reference)


def test_device_route_equals_nnunets_export(member):
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    logits = torch.randn((member.label_manager.num_segmentation_heads, 11, 20, 17))
    properties = {
        "spacing": [3.3, 0.8, 0.75],
        "shape_before_cropping": (16, 40, 36),
        "bbox_used_for_cropping": [[1, 15], [4, 36], [0, 30]],
        "shape_after_cropping_and_before_resampling": (14, 32, 30),
    }
    _, reference = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.clone(),
        member.plans_manager,
        member.configuration_manager,
        member.label_manager,
        properties,
        return_probabilities=True,
    )
    ours = logits_to_probabilities(logits, member, properties)
    on_device = logits_to_probabilities(logits, member, properties, keep_on_device=True)
    assert isinstance(ours, np.ndarray) and isinstance(on_device, torch.Tensor)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_array_equal(on_device.numpy(), ours)
