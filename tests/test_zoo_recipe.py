"""The demo-zoo recipe (resources/zoo) and the zoo it shipped (weights/, ensemble_config.json).

The recipe runs as a subprocess because nnU-Net reads its folder variables once, at import.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "resources" / "zoo"
sys.path.insert(0, str(ZOO))

import plans as zoo_plans  # noqa: E402
import ship  # noqa: E402
import train_zoo  # noqa: E402
import trainers  # noqa: E402

SHIPPED = set(ship.SHIPPED_KEYS)


def _nnunet_like_plans() -> dict:
    """A plans.json as nnU-Net's ExperimentPlanner writes it, trimmed to what shrink_plans reads."""
    arch_kwargs = {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 5,
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        "n_conv_per_stage": [2] * 6,
        "n_conv_per_stage_decoder": [2] * 5,
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [48, 192, 224],
        "median_image_size_in_voxels": [72, 258, 318],
        "spacing": [3.0, 1.19, 1.19],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "batch_dice": False,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": arch_kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
    }
    return {
        "dataset_name": "Dataset901_PhantomT1",
        "plans_name": "nnUNetPlans",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {"batch_size": 12}, "3d_fullres": config},
    }


FINGERPRINT = {"spacings": [[3.0, 1.0, 1.0], [3.0, 1.2, 1.2]], "shapes_after_crop": [[72, 300, 360], [70, 250, 300]]}


def _network(plans: dict):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"]["3d_fullres"]["architecture"]
    return get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 3, deep_supervision=False
    )


def test_shrunk_plans_build_a_small_network_that_takes_the_patch():
    small = zoo_plans.shrink_plans(_nnunet_like_plans(), "t1", FINGERPRINT)
    config = small["configurations"]["3d_fullres"]
    assert list(small["configurations"]) == ["3d_fullres"]
    assert small["plans_name"] == config["data_identifier"].split("_3d")[0] == zoo_plans.PLANS_NAME
    assert config["spacing"] == zoo_plans.TARGET_SPACING["t1"] and config["patch_size"] == zoo_plans.PATCH_SIZE
    network = _network(small)
    megabytes = sum(p.numel() * p.element_size() for p in network.parameters()) / 1e6
    assert 0.5 < megabytes < 3.5
    torch.set_num_threads(1)
    with torch.no_grad():
        out = network(torch.zeros(1, 1, *zoo_plans.PATCH_SIZE))
    assert tuple(out.shape) == (1, 3, *zoo_plans.PATCH_SIZE)


def test_task2_plans_keep_the_task1_architecture():
    small = zoo_plans.shrink_plans(_nnunet_like_plans(), "t1", FINGERPRINT)
    moved = zoo_plans.retarget_spacing(small, "t2", FINGERPRINT)
    assert (
        moved["configurations"]["3d_fullres"]["architecture"] == small["configurations"]["3d_fullres"]["architecture"]
    )
    assert moved["configurations"]["3d_fullres"]["spacing"] == zoo_plans.TARGET_SPACING["t2"]
    with pytest.raises(ValueError, match="task must be one of"):
        zoo_plans.shrink_plans(_nnunet_like_plans(), "t9", FINGERPRINT)


def test_stripped_checkpoint_loads_with_weights_only(tmp_path):
    network = _network(zoo_plans.shrink_plans(_nnunet_like_plans(), "t1", FINGERPRINT))
    full = {
        "network_weights": network.state_dict(),
        "optimizer_state": torch.optim.SGD(network.parameters(), lr=0.1).state_dict(),
        "init_args": {
            "plans": _nnunet_like_plans(),
            "configuration": "3d_fullres",
            "fold": 2,
            "dataset_json": {},
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer_ZooAllRounder",
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 5,
        "_best_ema": np.float64(0.5),
        "logging": {"ema_fg_dice": [np.float32(0.5)]},
    }
    torch.save(full, tmp_path / "full.pth")
    with pytest.raises(pickle.UnpicklingError):  # weights_only refuses the numpy scalars
        torch.load(tmp_path / "full.pth", weights_only=True)
    ship.strip_checkpoint(tmp_path / "full.pth", tmp_path / "fold_2" / "checkpoint_final.pth")
    stripped = torch.load(tmp_path / "fold_2" / "checkpoint_final.pth", weights_only=True)
    assert set(stripped) == SHIPPED
    assert stripped["init_args"] == {"configuration": "3d_fullres", "fold": 2}
    assert stripped["inference_allowed_mirroring_axes"] == [0, 1, 2]
    network.load_state_dict(stripped["network_weights"])


def test_fine_tuning_starts_from_every_pretrained_tensor_heads_included(tmp_path):
    small = zoo_plans.shrink_plans(_nnunet_like_plans(), "t1", FINGERPRINT)
    torch.manual_seed(0)
    pretrained = _network(small)
    torch.save({"network_weights": pretrained.state_dict()}, tmp_path / "checkpoint_final.pth")
    torch.manual_seed(1)
    fine_tuned = _network(small)
    train_zoo.load_pretrained(fine_tuned, tmp_path / "checkpoint_final.pth")
    loaded = fine_tuned.state_dict()
    assert any(".seg_layers." in k for k in loaded)  # nnU-Net's own loader would skip these
    assert all(torch.equal(v, loaded[k]) for k, v in pretrained.state_dict().items())
    other = zoo_plans.shrink_plans(_nnunet_like_plans(), "t1", FINGERPRINT)
    other["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][0] += 2
    with pytest.raises(RuntimeError, match="size mismatch"):
        train_zoo.load_pretrained(_network(other), tmp_path / "checkpoint_final.pth")


def test_ensemble_config_follows_the_winning_layout():
    config = ship.ensemble_config(train_zoo.members())
    assert {k: config[k] for k in ("version", "tile_step_size", "use_mirroring", "time_budget_s")} == {
        "version": 1,
        "tile_step_size": 0.5,
        "use_mirroring": False,
        "time_budget_s": 300,
    }
    t1, t2 = config["tasks"]["t1"], config["tasks"]["t2"]
    assert (t1["input_slug"], t2["input_slug"]) == ("abdominal-t1-mri", "abdominal-t2-mri")
    assert [m["role"] for m in t1["members"]] == ["all-rounder"] * 3 + ["volume"] * 2 + ["boundary"]
    assert [m["role"] for m in t2["members"]] == ["all-rounder"] + ["volume"] * 4
    for member in t1["members"] + t2["members"]:
        expected = "checkpoint_best.pth" if member["role"] == "all-rounder" else "checkpoint_final.pth"
        assert member["checkpoint"] == expected
    names = [m["name"] for m in t1["members"] + t2["members"]]
    assert len(names) == len(set(names[:6])) + len(set(names[6:]))


def _defined_in_nnunetv2(class_name: str) -> bool:
    """Whether nnunetv2's source defines the class (what nnUNet's trainer search would find).

    Reads the source instead of calling recursive_find_trainer_class_by_name, which imports every
    trainer module, including ones whose optional dependencies may not import in this environment.
    """
    import nnunetv2

    needle = f"class {class_name}("
    return any(needle in path.read_text(errors="ignore") for path in Path(nnunetv2.__path__[0]).rglob("*.py"))


def test_zoo_trainers_keep_upstream_augmentation_and_are_unknown_to_nnunet():
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation import nnUNetTrainerDA5 as da5

    assert issubclass(trainers.nnUNetTrainer_ZooVolumeDA5, da5.nnUNetTrainerDA5)
    assert issubclass(trainers.nnUNetTrainer_ZooBoundaryDA5ord0, da5.nnUNetTrainerDA5ord0)
    assert issubclass(trainers.nnUNetTrainer_ZooT2VolumeDA5Segord0, da5.nnUNetTrainerDA5Segord0)
    assert {spec.trainer for spec in train_zoo.RECIPE} == set(trainers.TRAINERS)
    assert _defined_in_nnunetv2("nnUNetTrainerDA5Segord0")
    for name in trainers.TRAINERS:
        assert not _defined_in_nnunetv2(name)


def test_shipped_weights_match_ensemble_config():
    config = json.loads((ROOT / "ensemble_config.json").read_text())
    weights = ROOT / "weights"
    expected_files = {weights / "README.md"}
    for task in ("t1", "t2"):
        for member in config["tasks"][task]["members"]:
            folder = weights / member["model"]
            checkpoint = folder / f"fold_{member['fold']}" / member["checkpoint"]
            openvino_ir = checkpoint.with_suffix(".openvino.xml")  # pantherseg export-openvino, float32
            expected_files |= {
                folder / "plans.json",
                folder / "dataset.json",
                checkpoint,
                openvino_ir,
                openvino_ir.with_suffix(".bin"),
            }
            loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
            assert set(loaded) == SHIPPED, member["name"]
            assert loaded["init_args"]["fold"] == member["fold"]
            assert loaded["trainer_name"] == member["model"].split("/")[1].split("__")[0]
            assert not _defined_in_nnunetv2(loaded["trainer_name"])
            plans = json.loads((folder / "plans.json").read_text())
            _network(plans).load_state_dict(loaded["network_weights"])
            labels = json.loads((folder / "dataset.json").read_text())["labels"]
            assert labels == {"background": 0, "tumor": 1, "pancreas": 2}
    found = {p for p in weights.rglob("*") if p.is_file()}
    assert found == expected_files, (
        f"unexpected files in weights/: {sorted(map(str, found - expected_files))}; "
        f"missing: {sorted(map(str, expected_files - found))}"
    )
    assert sum(p.stat().st_size for p in found) < 75e6


def test_shipped_openvino_conversions_are_current():
    """The shipped IR carries its checkpoint's hash: a retrained zoo without re-export would fall back silently."""
    pytest.importorskip("openvino")
    from pantherseg.config import load_config
    from pantherseg.engine.members import load_members
    from pantherseg.engine.openvino_backend import find_current, ir_path

    config = load_config(ROOT / "ensemble_config.json")
    for task in config.tasks:
        for member in load_members(config.task(task), ROOT / "weights"):
            assert find_current(member, cache_dir=Path("/nonexistent")) == ir_path(member), member.describe()


def _run_recipe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    return subprocess.run(
        [
            sys.executable,
            str(ZOO / "train_zoo.py"),
            "--token",
            "--scratch",
            str(tmp_path / "zoo"),
            "--weights",
            str(tmp_path / "weights"),
            "--config",
            str(tmp_path / "ensemble_config.json"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_token_recipe_prepares_all_datasets(tmp_path):
    result = _run_recipe(tmp_path, "--stages", "data,plan")
    assert result.returncode == 0, result.stderr[-3000:]
    pre = tmp_path / "zoo" / "nnUNet_preprocessed"
    names = ("Dataset900_PhantomPretrainT1", "Dataset901_PhantomT1", "Dataset902_PhantomT2")
    plans = {name: json.loads((pre / name / "nnUNetZooPlans.json").read_text()) for name in names}
    architectures = {json.dumps(p["configurations"]["3d_fullres"]["architecture"]) for p in plans.values()}
    assert len(architectures) == 1  # weights move along the cascade only between identical networks
    for name in names:
        assert plans[name]["dataset_name"] == name
        assert len(list((pre / name / "nnUNetZooPlans_3d_fullres").glob("*_seg.b2nd"))) == 3
    assert plans["Dataset902_PhantomT2"]["configurations"]["3d_fullres"]["spacing"] == zoo_plans.TARGET_SPACING["t2"]


@pytest.mark.slow
def test_token_recipe_end_to_end(tmp_path):
    """Every stage on 3 tiny phantoms per task, 1 epoch of 2 iterations per fold (~3-7 min on 2 cores)."""
    result = _run_recipe(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "ensemble_config.json").read_text())
    assert config == ship.ensemble_config(train_zoo.members())
    for task in ("t1", "t2"):
        for member in config["tasks"][task]["members"]:
            path = tmp_path / "weights" / member["model"] / f"fold_{member['fold']}" / member["checkpoint"]
            assert set(torch.load(path, weights_only=True)) == SHIPPED
            if importlib.util.find_spec("openvino") is not None:
                assert path.with_suffix(".openvino.xml").is_file() and path.with_suffix(".openvino.bin").is_file()
    # Fine-tuning started from Task 1 weights: after 2 iterations the Task 2 encoder is still close to them.
    t1 = torch.load(
        tmp_path
        / "zoo"
        / "nnUNet_results"
        / "Dataset901_PhantomT1"
        / "nnUNetTrainer_ZooAllRounder__nnUNetZooPlans__3d_fullres"
        / "fold_0"
        / "checkpoint_final.pth",
        weights_only=False,
    )["network_weights"]
    t2 = torch.load(
        tmp_path / "weights" / config["tasks"]["t2"]["members"][1]["model"] / "fold_0" / "checkpoint_final.pth",
        weights_only=True,
    )["network_weights"]
    key = next(k for k in t1 if k.endswith("weight") and t1[k].ndim == 5)
    assert torch.corrcoef(torch.stack([t1[key].flatten(), t2[key].flatten()]))[0, 1] > 0.9
