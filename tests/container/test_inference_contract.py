"""inference.py run exactly as grand-challenge runs the container.

A read-only /input (inputs.json whose image name differs from the file's), a read-only model
folder, a read-only code tree and HOME, no network, an empty writable output folder and /tmp.
Needs `unshare` with user namespaces (present on the project's machines); skipped elsewhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import synthetic_image, write_gc_input
from sandbox import last_stderr_line, requires_sandbox, run_like_grand_challenge

OUTPUT_SLUG = "pancreatic-tumor-segmentation"


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@requires_sandbox
@pytest.mark.parametrize("task,slug", [("t1", "abdominal-t1-mri"), ("t2", "abdominal-t2-mri")])
def test_one_mask_with_input_geometry(task, slug, tiny_weights, tiny_config, tmp_path):
    image = synthetic_image(shape_zyx=(20, 60, 64), seed=11)
    input_dir = write_gc_input(
        tmp_path / "in", image, slug=slug, file_name="1.2.840-scan.mha", uploaded_name="patient 7 baseline.nii.gz"
    )
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
