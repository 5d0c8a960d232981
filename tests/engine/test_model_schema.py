"""plans.json and dataset.json against their declared schema (pantherseg/engine/model_schema.py).

The first test is the one that keeps the schema complete: every key that the engine and nnU-Net
read from plans.json and dataset.json while loading, building and running members (the zoo's and
the organisers' plans) is recorded, and must be declared. The others are the cases of issue 20:
each broken field is one ModelError line naming the file and the key, before any image is read.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

import pantherseg.engine.members as members_module
from pantherseg.config import load_config, parse_config
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.members import build_network, load_members
from pantherseg.engine.model_schema import declared
from pantherseg.engine.runtime import EngineOptions
from pantherseg.errors import ModelError
from pantherseg.io.images import volume_from_image
from pantherseg.paths import default_config, default_weights

from conftest import MODEL_A, synthetic_image
from model_factory import config_dict, member


class Recorded(dict):
    """A dict that notes every key read through it (nested objects too; copies keep noting)."""

    def __init__(self, data: dict, path: str, log: set):
        super().__init__({k: _wrap(v, f"{path}.{k}" if path else str(k), log) for k, v in data.items()})
        self._path, self._log = path, log

    def _note(self, key):
        self._log.add(f"{self._path}.{key}" if self._path else str(key))

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)

    def __deepcopy__(self, memo):
        new = Recorded.__new__(Recorded)
        dict.__init__(new, {k: copy.deepcopy(v, memo) for k, v in dict.items(self)})
        new._path, new._log = self._path, self._log
        return new


def _wrap(value, path, log):
    return Recorded(value, path, log) if isinstance(value, dict) else value


@pytest.fixture
def recording(monkeypatch):
    """Every key read from plans.json and dataset.json, as 'plans:<path>' / 'dataset:<path>'."""
    reads: dict[str, set] = {"plans": set(), "dataset": set()}
    original = members_module._read_json

    def read(path: Path, owner: str):
        kind = "plans" if path.name == "plans.json" else "dataset"
        return Recorded(original(path, owner), "", reads[kind])

    monkeypatch.setattr(members_module, "_read_json", read)
    return reads


def _undeclared(reads: dict[str, set]) -> list[str]:
    from pantherseg.engine.model_schema import DATASET

    missing = [f"plans.json {k}" for k in sorted(reads["plans"]) if not declared(k)]
    return missing + [f"dataset.json {k}" for k in sorted(reads["dataset"]) if not declared(k, DATASET)]


def test_every_key_the_zoo_and_nnunet_read_is_declared(recording):
    config = load_config(default_config())
    for task in config.tasks:
        for loaded in load_members(config.task(task), default_weights()):
            build_network(loaded, __import__("torch").device("cpu"))
    assert recording["plans"] and recording["dataset"]
    assert _undeclared(recording) == []


def test_every_key_a_prediction_reads_is_declared(recording, micro_weights, tiny_weights, tiny_config):
    """The organisers' Task 1 and Task 2 plans (tiny_weights) loaded and built, and a whole prediction
    with the Task 2 plans (micro_weights): preprocessing, normalisation, resampling back, label manager."""
    import torch

    for loaded in load_members(load_config(tiny_config).task("t1"), tiny_weights):
        build_network(loaded, torch.device("cpu"))
    weights, config = micro_weights
    ensemble = Ensemble.load(config=load_config(config), task="t1", weights=weights, engine=EngineOptions(device="cpu"))
    volume = volume_from_image(synthetic_image(shape_zyx=(12, 24, 24), spacing_xyz=(2.0, 2.0, 3.0)))
    ensemble.predict(volume)
    assert "configurations.3d_fullres.resampling_fn_probabilities" in recording["plans"]
    assert "configurations.3d_fullres.normalization_schemes" in recording["plans"]
    assert _undeclared(recording) == []


def test_the_recorder_catches_an_undeclared_key(recording, micro_weights):
    """The test above can fail: a key read that the schema does not declare is reported."""
    weights, config = micro_weights
    loaded = load_members(load_config(config).task("t1"), weights)[0]
    loaded.plans["configurations"]["3d_fullres"].get("an_undeclared_knob")
    assert _undeclared(recording) == ["plans.json configurations.3d_fullres.an_undeclared_knob"]


# --- each broken field: one line, exit 3, naming file and key -------------------------------------------


@pytest.fixture
def weights(tiny_weights, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_weights, tmp_path / "weights"))


def edit(weights: Path, change, name="plans.json") -> None:
    path = weights / MODEL_A / name
    data = json.loads(path.read_text())
    if name == "plans.json":
        change(data["configurations"]["3d_fullres"], data)
    else:
        change(data)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def refused(weights: Path, *expected: str) -> str:
    with pytest.raises(ModelError) as caught:
        load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), weights)
    message = str(caught.value)
    assert "\n" not in message and "member 'a-f0'" in message and len(message) < 1000, message
    assert ModelError.exit_code == 3
    for text in expected:
        assert text in message, message
    return message


def _arch(c):
    return c["architecture"]["arch_kwargs"]


PLANS_CASES = {
    "inherits_from loop": (
        lambda c, p: (
            p["configurations"].update(loop_a={"inherits_from": "loop_b"}, loop_b={"inherits_from": "loop_a"}),
            c.update(inherits_from="loop_a"),
        ),
        "inherits_from",
    ),
    "inherits_from missing": (lambda c, p: c.update(inherits_from="nowhere"), "'nowhere'"),
    "transpose [0,0,0]": (lambda c, p: p.update(transpose_forward=[0, 0, 0]), "transpose_forward"),
    "transpose [5,1,2]": (lambda c, p: p.update(transpose_forward=[5, 1, 2]), "transpose_forward[0]"),
    "transpose string": (lambda c, p: p.update(transpose_forward="012"), "transpose_forward"),
    "transpose not inverse": (
        lambda c, p: p.update(transpose_forward=[1, 2, 0], transpose_backward=[1, 2, 0]),
        "transpose_backward",
    ),
    "preprocessor unknown": (lambda c, p: c.update(preprocessor_name="EvilPreprocessor"), "preprocessor_name"),
    "preprocessor other class": (lambda c, p: c.update(preprocessor_name="ResEncUNetPlanner"), "preprocessor_name"),
    "normalisation unknown": (lambda c, p: c.update(normalization_schemes=["os.system"]), "normalization_schemes[0]"),
    "normalisation two channels": (
        lambda c, p: c.update(normalization_schemes=["ZScoreNormalization"] * 2),
        "normalization_schemes",
    ),
    "resampling fn unknown": (lambda c, p: c.update(resampling_fn_data="resample_evil"), "resampling_fn_data"),
    "resampling kwargs unknown": (
        lambda c, p: c["resampling_fn_data_kwargs"].update(device="cuda"),
        "resampling_fn_data_kwargs.device",
    ),
    "resampling order 99": (
        lambda c, p: c["resampling_fn_probabilities_kwargs"].update(order=99),
        "resampling_fn_probabilities_kwargs.order",
    ),
    "CTNormalization without properties": (
        lambda c, p: (
            c.update(normalization_schemes=["CTNormalization"]),
            p["foreground_intensity_properties_per_channel"]["0"].pop("percentile_99_5"),
        ),
        "percentile_99_5",
    ),
    "use_mask_for_norm yes": (lambda c, p: c.update(use_mask_for_norm=["yes"]), "use_mask_for_norm[0]"),
    "n_conv_per_stage 200000": (lambda c, p: _arch(c).update(n_conv_per_stage=[200000] * 6), "n_conv_per_stage"),
    "n_conv_per_stage wrong count": (lambda c, p: _arch(c).update(n_conv_per_stage=[2] * 5), "n_conv_per_stage"),
    "features huge": (
        lambda c, p: _arch(c).update(features_per_stage=[4096] * 6, n_conv_per_stage=[64] * 6),
        "parameters",
    ),
    "kernel 2D": (lambda c, p: _arch(c).update(kernel_sizes=[[3, 3]] * 6), "kernel_sizes[0]"),
    "unknown arch kwarg": (lambda c, p: _arch(c).update(block="os.system"), "arch_kwargs.block"),
    "layer kwargs nested": (lambda c, p: _arch(c).update(nonlin_kwargs={"inplace": {"deep": 1}}), "nonlin_kwargs"),
    "cascade": (lambda c, p: c.update(previous_stage="3d_lowres"), "previous_stage"),
    "label manager class": (lambda c, p: p.update(label_manager="os.system"), "label_manager"),
    "two channels of statistics": (
        lambda c, p: p["foreground_intensity_properties_per_channel"].update({"1": {"mean": 1}}),
        "foreground_intensity_properties_per_channel",
    ),
}


@pytest.mark.parametrize("case", sorted(PLANS_CASES))
def test_plans_field_is_refused_naming_file_and_key(weights, case):
    change, key = PLANS_CASES[case]
    edit(weights, change)
    refused(weights, "plans.json", key)


DATASET_CASES = {
    "labels not consecutive (tumor 5)": (
        lambda d: d.update(labels={"background": 0, "tumor": 5, "pancreas": 2}),
        "consecutive",
    ),
    "labels regions": (lambda d: d.update(labels={"background": 0, "tumor": [1, 2]}), "labels.tumor"),
    "background not 0": (lambda d: d.update(labels={"background": 1, "tumor": 0}), "labels.background"),
    "two channels": (lambda d: d.update(channel_names={"0": "T1", "1": "T2"}), "channel_names"),
    "no channels": (lambda d: d.pop("channel_names"), "channel_names"),
    "regions_class_order": (lambda d: d.update(regions_class_order=[1]), "regions_class_order"),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_dataset_field_is_refused_naming_file_and_key(weights, case):
    change, key = DATASET_CASES[case]
    edit(weights, change, name="dataset.json")
    refused(weights, "dataset.json", key)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"configurations": ' + "7" * 5000 + "}", "5000 digits"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"a": 1', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_plans_json_that_the_config_reader_also_refuses(weights, text, expected):
    path = weights / MODEL_A / "plans.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(weights, "plans.json", expected)


def test_fifo_as_plans_json_is_refused_without_blocking(weights):
    import os

    path = weights / MODEL_A / "plans.json"
    path.unlink()
    os.mkfifo(path)
    refused(weights, "plans.json", "FIFO")


def test_oversized_dataset_json_is_refused(weights):
    path = weights / MODEL_A / "dataset.json"
    path.write_bytes(b" " * (17 << 20) + b"{}")
    refused(weights, "dataset.json", "bytes")


def test_the_shipped_and_organisers_plans_pass_unchanged(weights):
    assert load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), weights)


def test_inheritance_resolves_as_nnunet_does():
    """A child's keys over its parent's, as PlansManager resolves them; the schema checks the result."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pantherseg.engine.model_schema import validate_plans

    from model_factory import load_plans

    plans = load_plans("task1")
    plans["configurations"]["3d_child"] = {"inherits_from": "3d_fullres", "patch_size": [32, 64, 64]}
    resolved = validate_plans(plans, "3d_child")
    assert resolved == PlansManager(plans).get_configuration("3d_child").configuration
    assert resolved["patch_size"] == [32, 64, 64] and resolved["spacing"] == [3.0, 1.1875, 1.1875]
