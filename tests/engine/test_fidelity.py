"""The engine against nnU-Net 2.8's whole route: ``nnUNetPredictor`` per model folder over its folds (fold
logits averaged), then ``nnUNetv2_ensemble`` across folders (tests/nnunet_reference.py).

Random-weight members from the organisers' real plans, a heterogeneous ensemble (two plans, two
preprocessing groups, two folds of one folder with weights 1 and 2, best and final checkpoints,
trainers that are not installed), on the real AMOS MRI (oblique, intensities up to 3.3e6) and on a
synthetic oblique, flipped, anisotropic volume; with the torch backend and with OpenVINO (fp32). The bar
for random weights is 99.5% voxel agreement. Trained weights: the demo zoo's six Task 1 checkpoints in
one release-like folder (they share one plans.json), as the winners' release holds its six folds, against
``nnUNetPredictor(use_folds=(0, ..., 5), checkpoint_name="checkpoint_best.pth")``: 99.9% of voxels and
tumour Dice 0.99 (tests/test_zoo.py and benchmarks/bench_zoo_agreement.py hold the shipped config).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import SimpleITK as sitk

from pantherseg.api import segment

from conftest import AMOS_INPUT, MODEL_A, MODEL_B, ROOT, synthetic_image, tiny_members_t1
from model_factory import config_dict, member
from nnunet_reference import reference_tumour_mask

RANDOM_WEIGHT_AGREEMENT = 0.995
TRAINED_AGREEMENT = 0.999
TRAINED_TUMOUR_DICE = 0.99
sys.path.insert(0, str(ROOT / "resources"))
from release_replica import CHECKPOINT, RELEASE, ZOO_T1, build_replica, zoo_release_folder  # noqa: E402

PRESET = ROOT / "configs" / "panther-release.json"


REFERENCE_MEMBERS = {  # name in tiny_members_t1() -> (model, fold, checkpoint, integer weight)
    "a-f0": (MODEL_A, 0, "checkpoint_final.pth", 1),
    "a-f1": (MODEL_A, 1, "checkpoint_final.pth", 2),
    "b-f0": (MODEL_B, 0, "checkpoint_best.pth", 1),
}


def _reference(image_path, weights, names, work):
    members = [
        (weights / model, fold, checkpoint, weight)
        for model, fold, checkpoint, weight in (REFERENCE_MEMBERS[name] for name in names)
    ]
    return reference_tumour_mask(members, image_path, work)


def _ours(image_path, weights, config_path, out, names, backend=None):
    # No deadline: the budget counts from process start, and a long test session is past 300 s.
    [result] = segment(
        image_path,
        output_dir=out,
        task="t1",
        config=config_path,
        weights=weights,
        device="cpu",
        backend=backend,
        time_budget_s=float("inf"),
    )
    assert result.report.members_used == names
    return sitk.GetArrayFromImage(sitk.ReadImage(str(result.output))), result.report


def test_matches_nnunet_on_real_mri(tiny_weights, tmp_path):
    # The Task 1 plans' members only: the Task 2 plans resample this 39 cm field of view to 1 mm,
    # 60 tiles a member, which the heterogeneous test below covers on a smaller volume.
    members = [m for m in tiny_members_t1() if m["model"] == MODEL_A]
    names = [m["name"] for m in members]
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config_dict(members)))
    image_path = next((AMOS_INPUT / "images" / "abdominal-t1-mri").glob("*.mha"))
    ours, _ = _ours(image_path, tiny_weights, config_path, tmp_path / "ours", names)
    reference = _reference(image_path, tiny_weights, names, tmp_path / "reference")
    agreement = float((ours == reference).mean())
    assert agreement >= RANDOM_WEIGHT_AGREEMENT, agreement
    # Random networks still have to make a non-trivial decision for the comparison to mean anything.
    assert 0.01 < reference.mean() < 0.99


@pytest.fixture(scope="module")
def oblique_case(tiny_weights, tmp_path_factory):
    """A synthetic oblique, flipped, anisotropic volume and nnU-Net's own mask for it (computed once)."""
    work = tmp_path_factory.mktemp("oblique")
    image_path = work / "synthetic.mha"
    sitk.WriteImage(synthetic_image(shape_zyx=(30, 90, 100), seed=3), str(image_path))
    reference = _reference(image_path, tiny_weights, list(REFERENCE_MEMBERS), work / "reference")
    assert 0.01 < reference.mean() < 0.99
    return image_path, reference


def test_matches_nnunet_on_oblique_flipped_volume(tiny_weights, tiny_config, oblique_case, tmp_path):
    image_path, reference = oblique_case
    ours, report = _ours(image_path, tiny_weights, tiny_config, tmp_path / "ours", list(REFERENCE_MEMBERS), "torch")
    assert "(torch," in report.device
    assert float((ours == reference).mean()) >= RANDOM_WEIGHT_AGREEMENT


def test_openvino_matches_nnunet_on_oblique_flipped_volume(tiny_weights, tiny_config, oblique_case, tmp_path):
    pytest.importorskip("openvino")
    image_path, reference = oblique_case
    weights = tmp_path / "weights"  # a copy: the conversions are written beside the checkpoints
    shutil.copytree(tiny_weights, weights)
    ours, report = _ours(image_path, weights, tiny_config, tmp_path / "ours", list(REFERENCE_MEMBERS), "openvino")
    assert "(openvino, float32)" in report.device
    assert float((ours == reference).mean()) >= RANDOM_WEIGHT_AGREEMENT


def _dice(a, b):
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.mark.slow  # about 3 min on 2 idle cores (9 min on a loaded machine): both routes run six members
@pytest.mark.skipif(not ZOO_T1.is_dir(), reason="the demo zoo (weights/) is not in this checkout")
def test_trained_folds_of_one_folder_match_nnunet_predictor_over_its_folds(tmp_path):
    # The zoo's Task 1 ensemble (3 all-rounder + 2 volume + 1 boundary fold) as folds 0-5 of one folder.
    weights = tmp_path / "weights"
    zoo_release_folder(weights)
    model = RELEASE["t1"]
    members = [member(f"fold{f}", model.folder, fold=f, checkpoint=CHECKPOINT) for f in model.folds]
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config_dict(members)))
    image_path = next((AMOS_INPUT / "images" / "abdominal-t1-mri").glob("*.mha"))
    ours, _ = _ours(image_path, weights, config_path, tmp_path / "ours", [m["name"] for m in members], "torch")
    reference = reference_tumour_mask(
        [(weights / model.folder, f, CHECKPOINT, 1) for f in model.folds], image_path, tmp_path / "reference"
    )
    assert reference.sum() > 100  # the comparison needs a tumour to compare
    assert float((ours == reference).mean()) >= TRAINED_AGREEMENT
    assert _dice(ours.astype(bool), reference.astype(bool)) >= TRAINED_TUMOUR_DICE


def test_the_release_preset_on_a_random_replica_matches_nnunet_predictor_over_its_folds(tmp_path):
    # The preset as shipped, on the tiny replica (the release's folders, random weights): six folds of one
    # folder, one predictor in nnU-Net's route. One 64^3 tile per fold keeps it quick; six random networks
    # averaged call little of it tumour, so the bar is on every voxel (the trained test above holds the tumour).
    build_replica(tmp_path / "replica", tasks=("t1",))
    weights = tmp_path / "replica" / "results"
    model = RELEASE["t1"]
    image_path = tmp_path / "case.mha"
    sitk.WriteImage(synthetic_image(shape_zyx=(22, 54, 54), spacing_xyz=(1.1, 1.1, 2.8), seed=4), str(image_path))
    ours, report = _ours(image_path, weights, PRESET, tmp_path / "ours", [f"fold{f}" for f in model.folds], "torch")
    reference = reference_tumour_mask(
        [(weights / model.folder, f, CHECKPOINT, 1) for f in model.folds], image_path, tmp_path / "reference"
    )
    assert reference.sum() > 0
    assert float((ours == reference).mean()) >= RANDOM_WEIGHT_AGREEMENT
