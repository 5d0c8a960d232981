"""A small cohort for the cohort tests: good cases (two with one name in different subfolders), a
corrupt file and a 2D image, the demo zoo with one member (the shortest ensemble), and the single-process reference masks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.paths import default_config, default_weights

from conftest import synthetic_image

requires_zoo = pytest.mark.skipif(
    not (default_weights() / "README.md").exists() or not default_config().exists(),
    reason="the demo zoo (weights/, ensemble_config.json) is not in this checkout",
)

# One 24 x 80 x 80 tile of the zoo's plans (3 x 2 x 2 mm) per member: about a second per case on 2 cores.
SHAPE_ZYX = (20, 60, 64)
SPACING_XYZ = (2.0, 2.0, 3.0)
GOOD = ["a__same", "b__same", "case0", "case1", "case2", "case3", "case4", "sub__deeper__case5"]
BAD = {"broken": "cannot be read as a medical image", "flat": "expected a 3D volume"}


def write_cohort(root: Path) -> Path:
    """Eight good cases, a corrupt .mha and a 2D image under ``root``; returns ``root``."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    files = [root / f"case{i}.mha" for i in range(5)]
    files += [root / "a" / "same.mha", root / "b" / "same.nii.gz", root / "sub" / "deeper" / "case5.nrrd"]
    for seed, path in enumerate(files):
        sitk.WriteImage(synthetic_image(SHAPE_ZYX, SPACING_XYZ, seed=seed), str(path), useCompression=True)
    (root / "broken.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nthis is not an image header\n")
    sitk.WriteImage(sitk.Image([64, 64], sitk.sitkFloat32), str(root / "flat.mha"))
    return root


def small_config(path: Path, members: int = 1) -> Path:
    """The shipped config with the first ``members`` Task 1 members."""
    raw = json.loads(default_config().read_text())
    raw["tasks"]["t1"]["members"] = raw["tasks"]["t1"]["members"][:members]
    path.write_text(json.dumps(raw))
    return path


def reference_masks(cohort: Path, config: Path, out: Path, *, one_cpu: bool = False) -> dict[str, np.ndarray]:
    """The single-process route (pantherseg.segment) for every good case, by cohort name; with ``one_cpu`` on
    one CPU, as each Ray worker of the tests has (cpus_per_worker=1). The convolutions' sums then add up in the
    same order in both routes, so the masks can be compared voxel for voxel: with 2 threads against 1, a tie at
    one voxel in 76,800 was seen to flip."""
    from pantherseg.api import segment

    names = {cohort / f"case{i}.mha": f"case{i}" for i in range(5)}
    names.update({cohort / "a" / "same.mha": "a__same", cohort / "sub" / "deeper" / "case5.nrrd": "sub__deeper__case5"})
    # b/same clashes with a/same in one segment() call (same stem), so it gets a call of its own.
    groups = [sorted(names), [cohort / "b" / "same.nii.gz"]]
    names[cohort / "b" / "same.nii.gz"] = "b__same"
    masks = {}
    cpus = os.sched_getaffinity(0)
    if one_cpu:
        os.sched_setaffinity(0, {min(cpus)})
    try:
        for index, files in enumerate(groups):
            results = segment(
                files,
                output_dir=out / str(index),
                task="t1",
                config=config,
                weights=default_weights(),
                device="cpu",
                backend="torch",
                time_budget_s=float("inf"),
            )
            masks.update({names[r.input]: read_mask(r.output) for r in results})
    finally:
        os.sched_setaffinity(0, cpus)
    return masks


_REFERENCE: dict[str, dict[str, np.ndarray]] = {}


def shared_reference_masks(tmp_path_factory, *, one_cpu: bool = False) -> dict[str, np.ndarray]:
    """reference_masks() of write_cohort() and small_config(), computed once per test session: the images
    are deterministic (fixed seeds), so the local and the Ray tests compare with the same masks."""
    key = "one-cpu" if one_cpu else "all-cpus"
    if key not in _REFERENCE:
        root = tmp_path_factory.mktemp("reference")
        _REFERENCE[key] = reference_masks(
            write_cohort(root / "cases"), small_config(root / "config.json"), root / "out", one_cpu=one_cpu
        )
    return _REFERENCE[key]


def read_mask(path: Path | str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
