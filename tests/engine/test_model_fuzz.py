"""Property: a mutated model folder loads, or is one ModelError line (exit 3), quickly, leaving nothing behind.

Hypothesis mutates the real plans (the organisers' Task 1 and Task 2 plans as the tiny test members
carry them, and the zoo's under weights/), dataset.json, and checkpoints (tensor types and shapes,
members recompressed with extra bytes). The default run draws a few examples of each (seconds);
``--runslow`` draws hundreds.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_json_properties import replace_somewhere  # the config fuzzer's JSON documents

from pantherseg.config import parse_config
from pantherseg.engine.members import build_network, load_members
from pantherseg.errors import ModelError
from pantherseg.paths import default_weights

from conftest import MODEL_A, MODEL_B
from model_factory import config_dict, member

FEW = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
MANY = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
ZOO_MODEL = "Dataset901_PhantomT1/nnUNetTrainer_ZooAllRounder__nnUNetZooPlans__3d_fullres"
TIME_BOUND_S = 20


@pytest.fixture(scope="module")
def folders(tiny_weights, tmp_path_factory) -> Path:
    """A private weights root: the organisers' two tiny models and one zoo model, fold 0 each."""
    root = tmp_path_factory.mktemp("fuzz-weights")
    for model in (MODEL_A, MODEL_B):
        shutil.copytree(tiny_weights / model, root / model)
    shutil.copytree(default_weights() / ZOO_MODEL, root / ZOO_MODEL)
    return root


MEMBERS = {
    MODEL_A: member("m", MODEL_A),
    MODEL_B: member("m", MODEL_B, checkpoint="checkpoint_best.pth"),
    ZOO_MODEL: member("m", ZOO_MODEL, checkpoint="checkpoint_best.pth"),
}


def contract(root: Path, model: str) -> None:
    """Members load and build, or one ModelError line; within the time bound; no file added to the folder."""
    before = sorted(p.name for p in (root / model).rglob("*"))
    started = time.process_time()  # CPU seconds of this process, not the shared cores' wall clock
    try:
        for loaded in load_members(parse_config(config_dict([MEMBERS[model]])).task("t1"), root):
            build_network(loaded, torch.device("cpu"))
    except ModelError as error:
        message = str(error)
        assert "\n" not in message and message.startswith("member 'm'") and len(message) < 2000, message
    assert time.process_time() - started < TIME_BOUND_S
    assert sorted(p.name for p in (root / model).rglob("*")) == before


class Mutated:
    """Write a mutated copy of one of the folder's files, restore the original afterwards."""

    def __init__(self, path: Path):
        self.path, self.original = path, path.read_bytes()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.path.write_bytes(self.original)


def _plans_case(folders, data, name):
    model = data.draw(st.sampled_from(sorted(MEMBERS)), label="model")
    path = folders / model / name
    with Mutated(path) as mutated:
        document = json.loads(mutated.original)
        path.write_text(json.dumps(replace_somewhere(document, data)))
        contract(folders, model)


def _numbers_case(folders, data):
    """Numbers of the configuration replaced by others of the same kind: the bounds, not the types."""
    model = data.draw(st.sampled_from(sorted(MEMBERS)), label="model")
    path = folders / model / "plans.json"
    with Mutated(path) as mutated:
        plans = json.loads(mutated.original)
        configuration = plans["configurations"]["3d_fullres"]
        arch = configuration["architecture"]["arch_kwargs"]
        key = data.draw(
            st.sampled_from(
                [
                    "n_conv_per_stage",
                    "n_conv_per_stage_decoder",
                    "features_per_stage",
                    "strides",
                    "kernel_sizes",
                    "n_stages",
                ]
            ),
            label="key",
        )
        target = arch if key in arch else configuration
        value = copy.deepcopy(target.get(key, 1))
        number = st.integers(min_value=-3, max_value=300_000)
        if isinstance(value, list):
            index = data.draw(st.integers(0, len(value) - 1), label="index")
            value[index] = data.draw(number if not isinstance(value[index], list) else st.lists(number, max_size=4))
        else:
            value = data.draw(number)
        target[key] = value
        path.write_text(json.dumps(plans))
        contract(folders, model)


@FEW
@given(data=st.data())
def test_mutated_plans(folders, data):
    _plans_case(folders, data, "plans.json")


@FEW
@given(data=st.data())
def test_mutated_plans_numbers(folders, data):
    _numbers_case(folders, data)


@FEW
@given(data=st.data())
def test_mutated_dataset_json(folders, data):
    _plans_case(folders, data, "dataset.json")


DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.complex64, torch.bool]


def _checkpoint_case(folders, data):
    model = data.draw(st.sampled_from(sorted(MEMBERS)), label="model")
    path = folders / model / "fold_0" / MEMBERS[model]["checkpoint"]
    with Mutated(path):
        kind = data.draw(st.sampled_from(["dtype", "shape", "recompress"]), label="kind")
        if kind == "recompress":
            with zipfile.ZipFile(path) as source:
                entries = [(info, source.read(info)) for info in source.infolist()]
            victim = data.draw(st.integers(0, len(entries) - 1), label="member")
            extra = data.draw(st.sampled_from([0, 1 << 10, 1 << 20, 8 << 20]), label="extra bytes")
            with zipfile.ZipFile(path, "w") as target:
                for index, (info, content) in enumerate(entries):
                    if index == victim:
                        target.writestr(info.filename, content + bytes(extra), compress_type=zipfile.ZIP_DEFLATED)
                    else:
                        target.writestr(info, content)
        else:
            checkpoint = torch.load(path, weights_only=False)
            weights = checkpoint["network_weights"]
            key = data.draw(st.sampled_from(sorted(weights)), label="tensor")
            if kind == "dtype":
                weights[key] = weights[key].to(data.draw(st.sampled_from(DTYPES), label="dtype"))
            else:
                shape = list(weights[key].shape) + [1] if data.draw(st.booleans()) else list(weights[key].shape)[1:]
                weights[key] = torch.zeros(shape)
            torch.save(checkpoint, path)
        contract(folders, model)


@FEW
@given(data=st.data())
def test_mutated_checkpoints(folders, data):
    _checkpoint_case(folders, data)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_many_mutated_model_files(folders, data):
    case = data.draw(st.sampled_from(["plans", "numbers", "dataset", "checkpoint"]), label="file")
    if case == "plans":
        _plans_case(folders, data, "plans.json")
    elif case == "numbers":
        _numbers_case(folders, data)
    elif case == "dataset":
        _plans_case(folders, data, "dataset.json")
    else:
        _checkpoint_case(folders, data)
