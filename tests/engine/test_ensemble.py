"""The ensemble's output post-conditions (engine/ensemble.py): finite probabilities, the tumour's channel."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import pantherseg.engine.members as members_module
from pantherseg.config import load_config
from pantherseg.engine.ensemble import Ensemble, tumour_channel
from pantherseg.engine.runtime import EngineOptions
from pantherseg.errors import ModelError
from pantherseg.io.images import volume_from_image

from conftest import synthetic_image


def test_the_tumour_label_maps_to_its_channel_by_the_label_map():
    member = SimpleNamespace(label_manager=SimpleNamespace(all_labels=[0, 2, 5]), describe=lambda: "member 'm'")
    assert tumour_channel(member, 5) == 2 and tumour_channel(member, 2) == 1
    with pytest.raises(ModelError, match="tumor_label 3 is not one of its labels"):
        tumour_channel(member, 3)


def test_nan_weights_that_pass_the_load_check_never_make_a_mask(micro_weights, monkeypatch):
    """All-NaN weights gave an empty mask with exit 0; the post-condition refuses their probabilities."""
    weights, config = micro_weights
    ensemble = Ensemble.load(config=load_config(config), task="t1", weights=weights, engine=EngineOptions(device="cpu"))
    member = ensemble.members[0]
    monkeypatch.setattr(members_module, "check_finite", lambda *a, **k: None)  # the load-time check, bypassed
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in member.checkpoint.state_dict.items()
    }
    monkeypatch.setattr(member.checkpoint, "state_dict", state)
    volume = volume_from_image(synthetic_image(shape_zyx=(12, 24, 24)))
    with pytest.raises(ModelError, match="non-finite probabilities"):
        ensemble.predict(volume)
