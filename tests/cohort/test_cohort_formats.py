"""The cohort route writes every output format and previews, locally and on Ray (RunOptions carried whole).

A cohort of DICOM series folders gets DICOM-SEG and RTSTRUCT beside the mask, equal to what plain
``pantherseg predict`` writes for the same series; a rerun skips finished cases and a rerun asking for
another format runs them again. On Ray, image files get NIfTI masks, uncertainty maps and previews.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.cli import main

from conftest import synthetic_image

pytest.importorskip("highdicom")

from dicom_factory import orient, stored_image, write_series  # noqa: E402


def _predict(tiny_weights, tiny_config, *args) -> int:
    return main(
        [
            "predict",
            *args,
            "--weights",
            str(tiny_weights),
            "--config",
            str(tiny_config),
            "--task",
            "t1",
            "--device",
            "cpu",
            "--backend",
            "torch",
            "--time-budget",
            "0",
            "-q",
        ]
    )


@pytest.fixture(scope="module")
def dicom_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-cohort") / "cases"
    for index, name in enumerate(("site_a/patient1", "site_b/patient2")):
        image = orient(synthetic_image(shape_zyx=(10, 32, 40), seed=10 + index), "oblique")
        write_series(image, root / name, series_uid=f"1.2.826.0.1.3680043.10.{index + 1}")
    return root


def test_a_dicom_cohort_gets_seg_rtstruct_and_previews_like_plain_predict(
    dicom_cohort, tiny_weights, tiny_config, tmp_path, capsys
):
    formats = ["--output-format", "mha", "dicom-seg", "rtstruct"]
    out = tmp_path / "out"
    assert (
        _predict(tiny_weights, tiny_config, "-i", str(dicom_cohort), "-o", str(out), "--resume", "--preview", *formats)
        == 0
    )
    names = ["site_a__patient1", "site_b__patient2"]
    for name in names:
        for suffix in (".mha", ".seg.dcm", ".rtstruct.dcm", ".preview.png", ".report.json"):
            assert (out / f"{name}{suffix}").is_file(), f"{name}{suffix}"
        report = json.loads((out / f"{name}.report.json").read_text())
        assert [p.rsplit("/", 1)[1] for p in report["output"]["paths"]] == [
            f"{name}.mha",
            f"{name}.seg.dcm",
            f"{name}.rtstruct.dcm",
        ]

    # The same series through plain predict: the same mask, and a DICOM-SEG holding it.
    plain = tmp_path / "plain"
    assert (
        _predict(tiny_weights, tiny_config, "-i", str(dicom_cohort / "site_a" / "patient1"), "-o", str(plain), *formats)
        == 0
    )
    cohort_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "site_a__patient1.mha")))
    np.testing.assert_array_equal(cohort_mask, sitk.GetArrayFromImage(sitk.ReadImage(str(plain / "patient1.mha"))))
    assert cohort_mask.any()
    import highdicom as hd

    from pantherseg.dicom.series import read_series

    series = read_series(dicom_cohort / "site_a" / "patient1")
    seg = hd.seg.segread(out / "site_a__patient1.seg.dcm")
    back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(d.SOPInstanceUID) for d in series.datasets],
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )[..., 0]
    np.testing.assert_array_equal(back.astype(np.uint8), cohort_mask)  # voxel-exact against the .mha route

    capsys.readouterr()
    assert _predict(tiny_weights, tiny_config, "-i", str(dicom_cohort), "-o", str(out), "--resume", *formats) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().err
    # Asking for a format the finished cases lack runs them again.
    assert (
        _predict(tiny_weights, tiny_config, "-i", str(dicom_cohort), "-o", str(out), "--resume", *formats, "nii.gz")
        == 0
    )
    assert "2 done, 0 skipped" in capsys.readouterr().err
    assert all((out / f"{name}.nii.gz").is_file() for name in names)


def test_dicom_formats_for_a_cohort_of_image_files_are_refused_before_loading(
    tiny_weights, tiny_config, tmp_path, capsys
):
    (tmp_path / "cases").mkdir()
    sitk.WriteImage(synthetic_image(shape_zyx=(10, 32, 40), seed=3), str(tmp_path / "cases" / "a.mha"))
    assert (
        _predict(
            tiny_weights,
            tiny_config,
            "-i",
            str(tmp_path / "cases"),
            "-o",
            str(tmp_path / "out"),
            "--resume",
            "--output-format",
            "rtstruct",
        )
        == 2
    )
    assert "reference the images of a DICOM series" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_ray_workers_write_nifti_uncertainty_and_previews(tiny_weights, tiny_config, tmp_path, capsys):
    pytest.importorskip("ray")
    cases = tmp_path / "cases"
    cases.mkdir()
    for index in range(2):
        sitk.WriteImage(
            stored_image(synthetic_image(shape_zyx=(10, 32, 40), seed=20 + index)), str(cases / f"case{index}.mha")
        )
    out = tmp_path / "out"
    assert (
        _predict(
            tiny_weights,
            tiny_config,
            "-i",
            str(cases),
            "-o",
            str(out),
            "--ray",
            "--ray-cpus-per-worker",
            "1",
            "--ray-workers",
            "2",
            "--preview",
            "--output-format",
            "nii.gz",
            "uncertainty",
        )
        == 0
    )
    for index in range(2):
        for suffix in (".nii.gz", ".uncertainty.mha", ".preview.png", ".report.json"):
            assert (out / f"case{index}{suffix}").is_file(), f"case{index}{suffix}"
        assert not (out / f"case{index}.mha").exists()
        entropy = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"case{index}.uncertainty.mha")))
        assert entropy.dtype == np.float32 and 0 <= entropy.min() and entropy.max() <= 1
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "case0.nii.gz"), str(out / "case1.nii.gz")]
