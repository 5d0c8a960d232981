"""A model tarball's plans.json is data, never code: architectures come from an allow-list, and the
numbers inference divides by are checked when the member is validated (exit 3, one line).

Each test breaks one thing in a private copy of the session's tiny weights; validation builds
networks on the meta device only, so these take well under a second each.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pantherseg.config import parse_config
from pantherseg.engine.members import load_members
from pantherseg.errors import ModelError

from conftest import MODEL_A
from model_factory import config_dict, member


@pytest.fixture
def weights(tiny_weights, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_weights, tmp_path / "weights"))


def edit_plans(weights: Path, change) -> None:
    path = weights / MODEL_A / "plans.json"
    plans = json.loads(path.read_text())
    change(plans["configurations"]["3d_fullres"], plans)
    path.write_text(json.dumps(plans))


def refused(weights: Path) -> str:
    with pytest.raises(ModelError) as caught:
        load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), weights)
    message = str(caught.value)
    assert "\n" not in message and "member 'a-f0'" in message
    return message


def test_a_function_named_as_the_architecture_is_never_called(weights, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")

    def change(configuration, _plans):
        configuration["architecture"]["network_class_name"] = "logging.basicConfig"
        configuration["architecture"]["arch_kwargs"] = {"filename": str(victim), "filemode": "w", "force": True}
        configuration["architecture"]["_kw_requires_import"] = []

    edit_plans(weights, change)
    message = refused(weights)
    assert "'logging.basicConfig'" in message and "not an allowed network" in message
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "dynamic_network_architectures.architectures.unet.os",
        "dynamic_network_architectures.architectures.primus.Primus",
        "",
        7,
    ],
)
def test_architectures_outside_the_allow_list_are_refused(weights, name):
    edit_plans(weights, lambda c, _p: c["architecture"].update(network_class_name=name))
    assert "not an allowed network" in refused(weights)


def test_requires_import_names_no_module(weights):
    sys.modules.pop("this", None)

    def change(configuration, _plans):
        configuration["architecture"]["arch_kwargs"]["nonlin"] = "this"

    edit_plans(weights, change)
    message = refused(weights)
    assert "'nonlin'" in message and "'this'" in message and "torch.nn layer" in message
    assert "this" not in sys.modules, "a module named in plans.json was imported"


def test_requires_import_listing_a_module_instead_of_a_key(weights):
    sys.modules.pop("this", None)
    edit_plans(weights, lambda c, _p: c["architecture"]["_kw_requires_import"].append("this"))
    assert "not a key of arch_kwargs" in refused(weights)
    assert "this" not in sys.modules


@pytest.mark.parametrize("layer", ["torch.nn.functional.relu", "torch.nn.modules.conv.os", "torch.nn._reduction"])
def test_requires_import_must_be_a_torch_layer_class(weights, layer):
    edit_plans(weights, lambda c, _p: c["architecture"]["arch_kwargs"].update(nonlin=layer))
    assert "torch.nn layer" in refused(weights)


def test_a_short_class_name_as_nnunet_accepts_it_still_loads(weights):
    edit_plans(
        weights,
        lambda c, _p: c["architecture"].update(
            network_class_name=c["architecture"]["network_class_name"].rsplit(".", 1)[-1]
        ),
    )
    members = load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), weights)
    assert members[0].name == "a-f0"


@pytest.mark.parametrize("stages", [10**9, 0, "6"])
def test_absurd_stage_counts_are_refused_before_building(weights, stages):
    edit_plans(weights, lambda c, _p: c["architecture"]["arch_kwargs"].update(n_stages=stages))
    assert "'n_stages' must be an integer" in refused(weights)


@pytest.mark.parametrize("patch", [[0, 0, 0], [-64, 128, 128], [64.5, 128, 128], [64, 128]])
def test_impossible_patch_size_is_a_model_error(weights, patch):
    edit_plans(weights, lambda c, _p: c.update(patch_size=patch))
    assert "patch_size" in refused(weights)


@pytest.mark.parametrize("spacing", [[-3.0, 1.0, 1.0], [0, 1, 1], ["1", 1, 1]])
def test_impossible_target_spacing_is_blamed_on_the_model(weights, spacing):
    edit_plans(weights, lambda c, _p: c.update(spacing=spacing))
    message = refused(weights)
    assert "target spacing" in message and "plans.json" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "12"])
def test_non_finite_intensity_properties_are_refused(weights, value):
    def change(_configuration, plans):
        plans["foreground_intensity_properties_per_channel"]["0"]["mean"] = value

    edit_plans(weights, change)
    message = refused(weights)
    assert "intensity properties" in message and "finite" in message
