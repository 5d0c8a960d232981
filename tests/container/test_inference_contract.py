"""inference.py run exactly as grand-challenge runs the container.

A read-only /input (inputs.json whose image name differs from the file's), a read-only model
folder, a read-only code tree and HOME, no network, an empty writable output folder and /tmp.
Needs `unshare` with user namespaces (present on the project's machines); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, synthetic_image, write_gc_input

OUTPUT_SLUG = "pancreatic-tumor-segmentation"


def _sandbox_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rmn", "true"], capture_output=True)
    return probe.returncode == 0


requires_sandbox = pytest.mark.skipif(not _sandbox_available(), reason="unshare -rmn (user namespaces) unavailable")


def run_like_grand_challenge(tmp_path: Path, input_dir: Path, model_dir: Path, config: Path,
                             extra: list[str] = ()) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Run inference.py in a sandbox; returns (process, output folder, tmp folder)."""
    output_dir = tmp_path / "output"
    tmp_dir = tmp_path / "tmp"
    home = tmp_path / "home"
    for folder in (output_dir, tmp_dir, home):
        folder.mkdir()
    read_only = [input_dir, model_dir, config.parent, home, ROOT]
    mounts = " && ".join(f"mount --bind '{p}' '{p}' && mount -o remount,bind,ro '{p}'" for p in read_only)
    command = [sys.executable, "inference.py", "--input", str(input_dir), "--output", str(output_dir),
               "--weights", str(model_dir), "--config", str(config), "--device", "cpu",
               "--report", str(tmp_dir / "run_report.json"), *extra]
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp_dir), "PYTHONDONTWRITEBYTECODE": "1",
           "MPLCONFIGDIR": str(tmp_dir / "mpl")}
    process = subprocess.run(
        ["unshare", "-rmn", "sh", "-c", f"{mounts} && exec \"$@\"", "sandbox", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return process, output_dir, tmp_dir


def last_stderr_line(process: subprocess.CompletedProcess) -> str:
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@requires_sandbox
@pytest.mark.parametrize("task,slug", [("t1", "abdominal-t1-mri"), ("t2", "abdominal-t2-mri")])
def test_one_mask_with_input_geometry(task, slug, tiny_weights, tiny_config, tmp_path):
    image = synthetic_image(shape_zyx=(20, 60, 64), seed=11)
    input_dir = write_gc_input(tmp_path / "in", image, slug=slug, file_name="1.2.840-scan.mha",
                               uploaded_name="patient 7 baseline.nii.gz")
    process, output_dir, tmp_dir = run_like_grand_challenge(tmp_path, input_dir, tiny_weights, tiny_config)

    assert process.returncode == 0, process.stderr[-2000:]
    outputs = all_files(output_dir)
    assert outputs == [output_dir / "images" / OUTPUT_SLUG / "1.2.840-scan.mha"]
    mask = sitk.ReadImage(str(outputs[0]))
    assert mask.GetSize() == image.GetSize()
    assert np.allclose(mask.GetSpacing(), image.GetSpacing())
    assert np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert np.allclose(mask.GetDirection(), image.GetDirection())
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}
    # Only the report (asked for in tmp) and nothing else was left behind.
    report = json.loads((tmp_dir / "run_report.json").read_text())
    assert report["task"] == task and report["weights"] == str(tiny_weights)
    assert process.stdout.strip().endswith(str(outputs[0]))


@requires_sandbox
def test_input_without_inputs_json_uses_the_image_folder(tiny_weights, tiny_config, tmp_path):
    input_dir = write_gc_input(tmp_path / "in", synthetic_image(shape_zyx=(16, 48, 48)), inputs_json=False)
    process, output_dir, _ = run_like_grand_challenge(tmp_path, input_dir, tiny_weights, tiny_config)
    assert process.returncode == 0, process.stderr[-2000:]
    assert len(all_files(output_dir)) == 1


@requires_sandbox
@pytest.mark.parametrize("layout", ["no image", "two images"])
def test_broken_input_fails_with_one_line_and_no_mask(layout, tiny_weights, tiny_config, tmp_path):
    input_dir = write_gc_input(tmp_path / "in", synthetic_image(shape_zyx=(16, 48, 48)))
    folder = input_dir / "images" / "abdominal-t1-mri"
    if layout == "no image":
        for path in folder.iterdir():
            path.unlink()
    else:
        shutil.copy(next(folder.iterdir()), folder / "second.mha")
    process, output_dir, _ = run_like_grand_challenge(tmp_path, input_dir, tiny_weights, tiny_config)
    assert process.returncode != 0
    line = last_stderr_line(process)
    assert line.startswith("pantherseg error:") and "abdominal-t1-mri" in line, line
    assert ("expected exactly one" in line) if layout == "two images" else ("No image" in line)
    assert all_files(output_dir) == []


@requires_sandbox
def test_empty_model_folder_without_bundled_weights_names_the_fix(tiny_config, tmp_path, monkeypatch):
    input_dir = write_gc_input(tmp_path / "in", synthetic_image(shape_zyx=(16, 48, 48)))
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    monkeypatch.setenv("PANTHERSEG_WEIGHTS", str(tmp_path / "no-bundled-weights"))
    process, output_dir, _ = run_like_grand_challenge(tmp_path, input_dir, empty_model, tiny_config)
    assert process.returncode == 3
    assert "upload model.tar.gz under the algorithm's Models" in last_stderr_line(process)
    assert all_files(output_dir) == []
