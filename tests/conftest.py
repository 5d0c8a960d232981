"""Shared fixtures: tiny real nnU-Net model folders, synthetic images, the bundled samples."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from model_factory import config_dict, load_plans, make_model_folder, member, shrink  # noqa: E402

SAMPLES = ROOT / "test" / "samples"
AMOS_INPUT = SAMPLES / "t1-amos_0540" / "input"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")
    parser.addoption(
        "--container",
        action="store_true",
        default=False,
        help="run the tests marked container against a built image (make container-test)",
    )


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_container = pytest.mark.skip(reason="needs a built image: make container-test")
    for item in items:
        # Markers, not keywords: a test's keywords include its folder names (tests/container/).
        if item.get_closest_marker("slow") and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if item.get_closest_marker("container") and not config.getoption("--container"):
            item.add_marker(skip_container)


@pytest.fixture(autouse=True)
def budget_counts_from_the_test_start(monkeypatch):
    """Each test is a fresh process as far as the time budget is concerned.

    The entry points (``main()``, ``inference.py``'s ``run()``) count the budget from process start, as
    grand-challenge counts from container start. Called in process, that start is the test session's:
    a test that ran after five minutes of others began out of time and skipped members (whether it did
    depended on the order of the files). Subprocess tests are real processes and are unaffected."""
    import time

    from pantherseg.engine import deadline

    started = time.monotonic()
    monkeypatch.setattr(deadline, "seconds_since_process_start", lambda: time.monotonic() - started)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (then back): on two shared cores two threads mostly wait for
    each other. Modules of many tiny predictions use it with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MODEL_A = "Dataset801_Test/nnUNetTrainer_DA5Segord0_150epochs__nnUNetPlans__3d_fullres"
MODEL_B = "Dataset802_Test/nnUNetTrainer_Foo__nnUNetPlans__3d_fullres"


@pytest.fixture
def deep_folder():
    """make(root, levels) -> the deepest of ``levels`` nested folders "d/d/.../d" under ``root``.

    Made one mkdir at a time and removed deepest first at teardown: pathlib's, os.makedirs' and shutil.rmtree's
    recursion would stop first (a tree left behind makes pytest's own temp-folder cleanup crash at exit)."""
    chains: list[list[Path]] = []

    def make(root: Path, levels: int) -> Path:
        chain, path = [], Path(root)
        for _ in range(levels):
            path = path / "d"
            path.mkdir()
            chain.append(path)
        chains.append(chain)
        return path

    yield make
    for chain in chains:
        for folder in reversed(chain):
            for entry in os.scandir(folder):
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
            os.rmdir(folder)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Two real nnU-Net result folders with random weights, from the organisers' Task 1 and Task 2 plans
    (features / 16): two preprocessing groups, best and final checkpoints, an uninstalled trainer."""
    root = tmp_path_factory.mktemp("weights")
    make_model_folder(root, MODEL_A, plans=shrink(load_plans("task1"), divisor=16), folds=(0, 1))
    make_model_folder(
        root,
        MODEL_B,
        plans=shrink(load_plans("task2"), divisor=16),
        folds=(0,),
        checkpoint_name="checkpoint_best.pth",
        trainer_name="nnUNetTrainer_Foo",
        seed=7,
    )
    return root


MICRO_MODEL = "Dataset803_Micro/nnUNetTrainer_Micro__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory) -> tuple[Path, Path]:
    """(weights, config): one real nnU-Net folder from the organisers' Task 2 plans with a 16x32x32 patch,
    one member "micro" for each task. Small images are one tile, so a case takes well under a second (the
    real patch makes it 2-5 s on a shared CPU)."""
    plans = shrink(load_plans("task2"), divisor=16)
    plans["configurations"]["3d_fullres"]["patch_size"] = [16, 32, 32]  # strides divide it; bottleneck 1x2x1
    root = tmp_path_factory.mktemp("micro-weights")
    make_model_folder(root, MICRO_MODEL, plans=plans)
    config = root / "ensemble_config.json"
    config.write_text(json.dumps(config_dict([member("micro", MICRO_MODEL)], [member("micro", MICRO_MODEL)])))
    return root, config


def tiny_members_t1() -> list[dict]:
    return [
        member("a-f0", MODEL_A),
        member("a-f1", MODEL_A, fold=1, weight=2.0, role="volume"),
        member("b-f0", MODEL_B, checkpoint="checkpoint_best.pth", role="boundary"),
    ]


def tiny_members_t2() -> list[dict]:
    return [member("b-f0", MODEL_B, checkpoint="checkpoint_best.pth")]


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "ensemble_config.json"
    path.write_text(json.dumps(config_dict(tiny_members_t1(), tiny_members_t2())))
    return path


def synthetic_image(
    shape_zyx=(24, 64, 72),
    spacing_xyz=(1.2, 1.25, 3.0),
    *,
    seed=0,
    dtype=np.float32,
    direction=(0.99619, 0, 0.08716, 0, -1, 0, -0.08716, 0, 0.99619),
    origin=(10.0, -5.0, 3.0),
    scale=300.0,
):
    """A smooth random volume with a bright blob: oblique, y-flipped, anisotropic by default."""
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    array = gaussian_filter(rng.normal(size=shape_zyx), 2) * 4 + 1
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape_zyx], indexing="ij")
    array += 2 * (zz**2 + yy**2 + xx**2 < 0.2)
    array = (
        (array * scale).astype(dtype)
        if np.issubdtype(dtype, np.floating)
        else np.clip(array * scale, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    )
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def write_gc_input(
    root: Path,
    image,
    *,
    slug="abdominal-t1-mri",
    file_name="9a1c-image.mha",
    uploaded_name="patient_scan.nii.gz",
    inputs_json=True,
) -> Path:
    """Lay ``image`` out as grand-challenge does; returns the input folder."""
    import SimpleITK as sitk

    folder = root / "input"
    (folder / "images" / slug).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / "images" / slug / file_name), useCompression=True)
    if inputs_json:
        (folder / "inputs.json").write_text(
            json.dumps(
                [
                    {
                        "interface": {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"},
                        "image": {"name": uploaded_name},
                    }
                ]
            )
        )
    return folder
