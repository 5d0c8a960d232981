"""The lean per-task model tarball (pantherseg.container.lean_model, export.sh --task --config).

Built from the tiny release replica and the shipped preset; extracted as grand-challenge extracts it
(tarfile, filter="data"); run through the entry point with no --config (the tarball's own config wins)
and compared voxel for voxel with the full checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pantherseg.container import entry_point
from pantherseg.container.lean_model import KEPT_KEYS, build_lean_tarball, weights_hash
from pantherseg.errors import ModelError

from conftest import ROOT, synthetic_image, write_gc_input

sys.path.insert(0, str(ROOT / "resources"))
from release_replica import CHECKPOINT, RELEASE, build_replica  # noqa: E402

PRESET = ROOT / "configs" / "panther-release.json"


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    root = tmp_path_factory.mktemp("replica")
    build_replica(root, tasks=("t2",))
    return root / "results"


def _run(input_dir, output, weights, config=None):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    args = ["--input", str(input_dir), "--output", str(output), "--weights", str(weights), "--time-budget", "0"]
    try:
        assert entry_point.run(args + (["--config", str(config)] if config else [])) == 0
    finally:
        root.handlers[:], root.level = handlers, level
    [mask] = (output / "images" / "pancreatic-tumor-segmentation").glob("*.mha")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(mask))), json.loads((output / "run_report.json").read_text())


def test_the_lean_tarball_holds_the_task_alone_and_gives_the_full_checkpoints_mask(replica, tmp_path):
    report = build_lean_tarball(PRESET, "t2", replica, tmp_path / "model-t2.tar.gz")
    model = RELEASE["t2"]
    assert report.members == [f"fold{f}" for f in model.folds] and report.lean_bytes < report.full_bytes
    extracted = tmp_path / "opt-ml-model"
    with tarfile.open(report.tarball) as archive:
        archive.extractall(extracted, filter="data")
    assert sorted(p.relative_to(extracted).as_posix() for p in extracted.rglob("*") if p.is_file()) == sorted(
        [f"{model.folder}/{n}" for n in ("plans.json", "dataset.json")]
        + ["ensemble_config.json"]
        + [f"{model.folder}/fold_{f}/{CHECKPOINT}" for f in model.folds]
    )
    for fold in model.folds:
        full = torch.load(replica / model.folder / f"fold_{fold}" / CHECKPOINT, weights_only=False)
        lean = torch.load(extracted / model.folder / f"fold_{fold}" / CHECKPOINT, weights_only=True)
        assert set(lean) == set(KEPT_KEYS) and "optimizer_state" in full and "grad_scaler_state" in full
        assert weights_hash(lean["network_weights"]) == weights_hash(full["network_weights"])
        assert lean["init_args"]["configuration"] == full["init_args"]["configuration"]
        assert lean["inference_allowed_mirroring_axes"] == full["inference_allowed_mirroring_axes"]
    assert list(json.loads((extracted / "ensemble_config.json").read_text())["tasks"]) == ["t2"]

    input_dir = write_gc_input(
        tmp_path, synthetic_image((20, 50, 50), spacing_xyz=(1.1, 1.1, 2.0), seed=6), slug="abdominal-t2-mri"
    )
    lean_mask, lean_report = _run(input_dir, tmp_path / "lean-out", extracted)
    full_mask, _ = _run(input_dir, tmp_path / "full-out", replica, PRESET)
    assert lean_report["config"] == str(extracted / "ensemble_config.json")
    assert lean_report["members_used"] == report.members
    np.testing.assert_array_equal(lean_mask, full_mask)


def test_a_missing_member_checkpoint_is_named_and_nothing_is_written(replica, tmp_path):
    config = json.loads(PRESET.read_text())
    config["tasks"]["t2"]["members"][0]["fold"] = 9
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="fold_9"):
        build_lean_tarball(path, "t2", replica, tmp_path / "out" / "model-t2.tar.gz")
    assert list((tmp_path / "out").iterdir()) == []


def test_export_sh_packs_a_lean_task_tarball(replica, tmp_path):
    process = subprocess.run(
        [
            "bash",
            str(ROOT / "export.sh"),
            "--model-only",
            "--task",
            "t2",
            "--config",
            str(PRESET),
            "--weights",
            str(replica),
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "model-t2.tar.gz" in process.stdout and (tmp_path / "model-t2.tar.gz").is_file()
    assert not (tmp_path / "model.tar.gz").exists()
