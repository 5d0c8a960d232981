"""Member folders on disk (engine/model_files.py): loops, FIFOs, devices, depth and links leaving the weights
folder are one ModelError line (exit 3) before any file of the member is opened."""

from __future__ import annotations

import os
import shutil
import time
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


def refused(weights: Path, expected: str) -> str:
    started = time.process_time()  # this process's CPU: other work on shared cores does not count
    with pytest.raises(ModelError) as caught:
        load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), weights)
    message = str(caught.value)
    assert "\n" not in message and "member 'a-f0'" in message and expected in message, message
    assert time.process_time() - started < 10
    return message


def test_a_symlink_loop_in_a_member_folder(weights):
    os.symlink("loop", weights / MODEL_A / "loop")
    refused(weights, "symbolic link loop")


def test_a_two_link_loop(weights):
    os.symlink("b", weights / MODEL_A / "a")
    os.symlink("a", weights / MODEL_A / "b")
    refused(weights, "cannot be followed")


def test_a_member_folder_1500_levels_deep(weights, deep_folder):
    deep_folder(weights / MODEL_A, 1500)
    refused(weights, "nested more than 32 folders deep")


def test_a_fifo_in_a_member_folder(weights):
    os.mkfifo(weights / MODEL_A / "fold_0" / "pipe")
    refused(weights, "FIFO")


def test_a_fifo_as_the_checkpoint(weights):
    path = weights / MODEL_A / "fold_0" / "checkpoint_final.pth"
    path.unlink()
    os.mkfifo(path)
    refused(weights, "FIFO")


def test_a_link_to_a_device(weights):
    os.symlink("/dev/zero", weights / MODEL_A / "plans.json.bak")
    refused(weights, "outside the weights folder")


def test_a_link_to_a_fifo_inside_the_weights_folder(weights):
    os.mkfifo(weights / "pipe")
    os.symlink(weights / "pipe", weights / MODEL_A / "dataset.json.link")
    refused(weights, "leads to a FIFO")


def test_a_link_leaving_the_weights_folder(weights, tmp_path):
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", weights / MODEL_A / "fold_0" / "extra")
    refused(weights, "outside the weights folder")
