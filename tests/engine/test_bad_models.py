"""Bad model folders and configs are refused before any image is read, naming the member and the file.

Every test copies the session's ``tiny_weights`` (real nnU-Net result folders, about 2 MB) and
breaks one thing; validation builds networks on the meta device only, so each test takes well
under a second.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from pantherseg.config import parse_config
from pantherseg.engine.checkpoint import load_checkpoint
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.members import load_members
from pantherseg.engine.runtime import EngineOptions
from pantherseg.errors import ConfigError, ModelError

from conftest import MODEL_A, MODEL_B
from model_factory import config_dict, load_plans, make_model_folder, member, shrink


@pytest.fixture
def weights(tiny_weights, tmp_path) -> Path:
    """A private copy of the tiny weights, free to break."""
    return Path(shutil.copytree(tiny_weights, tmp_path / "weights"))


def task_of(*members_):
    return parse_config(config_dict(list(members_))).task("t1")


def checkpoint_of(weights: Path, model=MODEL_A, fold=0, name="checkpoint_final.pth") -> Path:
    return weights / model / f"fold_{fold}" / name


def refused(weights: Path, *members_, error=ModelError) -> str:
    with pytest.raises(error) as caught:
        load_members(task_of(*members_), weights)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_fold(weights):
    message = refused(weights, member("a-f3", MODEL_A, fold=3))
    assert "member 'a-f3'" in message
    assert str(checkpoint_of(weights, fold=3)) in message
    assert "folds present: ['fold_0', 'fold_1']" in message


def test_missing_model_folder(weights):
    message = refused(weights, member("gone", "Dataset999_Gone/T__P__3d_fullres"))
    assert "member 'gone'" in message and "Dataset999_Gone" in message


def test_checkpoint_that_is_text(weights):
    checkpoint_of(weights).write_text("this is not a checkpoint\n")
    message = refused(weights, member("a-f0", MODEL_A))
    assert "member 'a-f0'" in message and str(checkpoint_of(weights)) in message
    assert "not a readable PyTorch checkpoint" in message


def test_truncated_checkpoint(weights):
    path = checkpoint_of(weights)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = refused(weights, member("a-f0", MODEL_A))
    assert "member 'a-f0'" in message and str(path) in message
    assert "truncated" in message


def test_empty_checkpoint(weights):
    checkpoint_of(weights).write_bytes(b"")
    message = refused(weights, member("a-f0", MODEL_A))
    assert "member 'a-f0'" in message and str(checkpoint_of(weights)) in message


def test_checkpoint_without_network_weights(weights):
    torch.save({"trainer_name": "nnUNetTrainer", "network_weights": {}}, checkpoint_of(weights))
    message = refused(weights, member("a-f0", MODEL_A))
    assert "has no network weights" in message and str(checkpoint_of(weights)) in message


def test_checkpoint_whose_weights_do_not_fit_its_plans(weights, tmp_path):
    """Weights trained with twice the features of the plans.json next to them."""
    other = make_model_folder(tmp_path / "other", MODEL_A, plans=shrink(load_plans("task1"), divisor=8))
    shutil.copy(other / "fold_0" / "checkpoint_final.pth", checkpoint_of(weights))
    message = refused(weights, member("a-f0", MODEL_A))
    assert "member 'a-f0'" in message and str(checkpoint_of(weights)) in message
    assert "does not fit the network in its plans.json" in message
    assert "wrong shape" in message


def test_members_whose_label_maps_differ(weights, tmp_path):
    make_model_folder(
        weights,
        "Dataset804_Labels/T__nnUNetPlans__3d_fullres",
        plans=shrink(load_plans("task1"), divisor=16),
        labels={"background": 0, "tumor": 1, "pancreas": 2},
    )
    message = refused(
        weights, member("a-f0", MODEL_A), member("three-labels", "Dataset804_Labels/T__nnUNetPlans__3d_fullres")
    )
    assert "member 'three-labels'" in message and "member 'a-f0'" in message
    assert "'pancreas': 2" in message and "label map" in message


def test_tumor_label_missing_from_the_members(weights):
    raw = config_dict([member("a-f0", MODEL_A)])
    raw["tasks"]["t1"]["tumor_label"] = 2
    with pytest.raises(ModelError, match=r"tumor_label 2 is not a label of the members"):
        load_members(parse_config(raw).task("t1"), weights)


def test_unknown_task(weights, tiny_config):
    from pantherseg.config import load_config

    with pytest.raises(ConfigError, match=r"Task 't3' is not in the ensemble config .*\['t1', 't2'\]"):
        Ensemble.load(config=load_config(tiny_config), task="t3", weights=weights, engine=EngineOptions(device="cpu"))


@pytest.mark.parametrize("weight", [0, -1.5, float("nan"), "1"])
def test_non_positive_or_non_numeric_weight(weight):
    with pytest.raises(ConfigError, match=r"tasks\.t1\.members\[0\]\.weight' must be"):
        parse_config(config_dict([member("a-f0", MODEL_A, weight=weight)]))


@pytest.mark.parametrize("where", ["top", "task", "member"])
def test_unknown_key_in_the_config(where):
    raw = config_dict([member("a-f0", MODEL_A)])
    target = {"top": raw, "task": raw["tasks"]["t1"], "member": raw["tasks"]["t1"]["members"][0]}[where]
    target["wieght"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['wieght'\]"):
        parse_config(raw)


class _RunsACommand:
    """Pickles as a call of os.system: what a malicious checkpoint looks like."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_checkpoint_with_executable_pickle_is_refused_without_running_it(weights, tmp_path):
    sentinel = tmp_path / "SENTINEL"
    path = checkpoint_of(weights)
    network_weights = {k: v.clone() for k, v in load_checkpoint(path, owner="test").state_dict.items()}
    checkpoint = {
        "network_weights": network_weights,
        "trainer_name": "nnUNetTrainer",
        "payload": _RunsACommand(f"touch {sentinel}"),
    }
    torch.save(checkpoint, path)

    message = refused(weights, member("a-f0", MODEL_A))
    assert not sentinel.exists(), "the pickled command ran"
    assert "member 'a-f0'" in message and str(path) in message
    assert "could run code" in message and "system" in message

    # Control: the payload is live, so the refusal above is what kept it from running.
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_symlinked_checkpoint_pointing_outside_the_weights_is_refused(weights, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "checkpoint_final.pth"
    shutil.move(checkpoint_of(weights), target)
    checkpoint_of(weights).symlink_to(target)
    message = refused(weights, member("a-f0", MODEL_A))
    assert "member 'a-f0'" in message and "outside the weights folder" in message
    assert str(target) in message


def test_symlinked_model_folder_pointing_outside_the_weights_is_refused(weights, tmp_path):
    outside = tmp_path / "elsewhere" / "model"
    shutil.move(weights / MODEL_B, outside)
    (weights / MODEL_B).symlink_to(outside, target_is_directory=True)
    message = refused(weights, member("b-f0", MODEL_B, checkpoint="checkpoint_best.pth"))
    assert "member 'b-f0'" in message and "outside the weights folder" in message


def test_symlink_inside_the_weights_is_accepted(weights):
    """Links that stay inside the weights folder (e.g. a shared plans.json) are harmless."""
    plans = weights / MODEL_A / "plans.json"
    shared = weights / "shared-plans.json"
    shutil.move(plans, shared)
    plans.symlink_to(shared)
    assert [m.name for m in load_members(task_of(member("a-f0", MODEL_A)), weights)] == ["a-f0"]


def test_checkpoint_naming_a_trainer_that_is_not_installed_loads(tiny_weights):
    """The winners' custom trainers are not in nnU-Net; networks come from plans.json instead."""
    members = load_members(
        task_of(member("a-f0", MODEL_A), member("b-f0", MODEL_B, checkpoint="checkpoint_best.pth")), tiny_weights
    )
    assert [m.checkpoint.trainer_name for m in members] == ["nnUNetTrainer_DA5Segord0_150epochs", "nnUNetTrainer_Foo"]
    assert all(m.checkpoint.state_dict for m in members)
