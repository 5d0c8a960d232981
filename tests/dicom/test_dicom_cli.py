"""``pantherseg predict`` on DICOM folders: same mask as the .mha route, every output format, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom")

from pantherseg.cli import main  # noqa: E402

from conftest import ROOT, synthetic_image  # noqa: E402
from dicom_factory import orient, stored_image, write_series  # noqa: E402


def _small_image():
    """Small enough that the tiny networks of ``tiny_weights`` take a second or two."""
    return synthetic_image(shape_zyx=(10, 32, 40), seed=1)


def _predict(args, tiny_weights, tiny_config, task="t2"):
    """t2 is one tiny member (quick); t1's three members find 'tumour' in the synthetic image."""
    return main(
        [
            "predict",
            *args,
            "--weights",
            str(tiny_weights),
            "--config",
            str(tiny_config),
            "--task",
            task,
            "--device",
            "cpu",
            "--time-budget",
            "0",
            "-q",
        ]
    )


def test_dicom_route_gives_the_same_mask_as_the_mha_route(tiny_weights, tiny_config, tmp_path, capsys):
    image = orient(_small_image(), "oblique")
    write_series(image, tmp_path / "patient" / "MR-series")
    (tmp_path / "mha").mkdir()
    sitk.WriteImage(stored_image(image), str(tmp_path / "mha" / "same-as-mha.mha"))

    # One run, one model load: the DICOM folder and the same image as .mha side by side.
    assert (
        _predict(
            [
                "-i",
                str(tmp_path / "patient" / "MR-series"),
                str(tmp_path / "mha" / "same-as-mha.mha"),
                "-o",
                str(tmp_path / "out"),
                "--output-format",
                "mha",
                "nii.gz",
            ],
            tiny_weights,
            tiny_config,
            task="t1",
        )
        == 0
    )
    out = tmp_path / "out"
    assert capsys.readouterr().out.split() == [str(out / "MR-series.mha"), str(out / "same-as-mha.mha")]

    from_dicom = sitk.ReadImage(str(out / "MR-series.mha"))
    from_mha = sitk.ReadImage(str(out / "same-as-mha.mha"))
    mask = sitk.GetArrayFromImage(from_dicom)
    assert 0 < mask.sum() < mask.size and np.array_equal(mask, sitk.GetArrayFromImage(from_mha))
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(from_dicom, get)(), getattr(from_mha, get)(), atol=1e-5)
    nifti = sitk.ReadImage(str(out / "MR-series.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(nifti), mask)

    report = json.loads((out / "MR-series.report.json").read_text())
    assert [os.path.basename(p) for p in report["output"]["paths"]] == ["MR-series.mha", "MR-series.nii.gz"]
    stats = report["output"]["tumor_statistics"]
    assert stats["volume_ml"] == pytest.approx(report["output"]["tumor_volume_mm3"] / 1000, abs=1e-3)
    mha_stats = json.loads((out / "same-as-mha.report.json").read_text())["output"]["tumor_statistics"]
    assert stats["components"] == mha_stats["components"] >= 1  # spacing differs in the last decimal (DS strings)
    assert stats["largest_component"]["voxels"] == mha_stats["largest_component"]["voxels"]
    assert np.allclose(
        stats["largest_component"]["bounding_box_mm"]["min_xyz"],
        mha_stats["largest_component"]["bounding_box_mm"]["min_xyz"],
        atol=1e-3,
    )


def test_several_series_need_series_uid_then_seg_and_rtstruct_are_written(tiny_weights, tiny_config, tmp_path, capsys):
    image = orient(_small_image(), "axial")
    write_series(image, tmp_path / "study" / "1", series_uid="1.2.826.0.1.11", series_description="t2 tra")
    write_series(image, tmp_path / "study" / "2", series_uid="1.2.826.0.1.12", series_description="t2 tra repeat")
    code = _predict(
        ["-i", str(tmp_path / "study"), "-o", str(tmp_path / "out"), "--output-format", "rtstruct"],
        tiny_weights,
        tiny_config,
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("pantherseg error: 1 of 1 case(s) failed: study: 2 image series")
    assert "1.2.826.0.1.11 't2 tra' (MR, 10 files)" in last and "--series-uid" in last
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    assert (
        _predict(
            [
                "-i",
                str(tmp_path / "study"),
                "-o",
                str(tmp_path / "out"),
                "--output-format",
                "dicom-seg",
                "rtstruct",
                "sr",
                "--series-uid",
                "1.2.826.0.1.12",
                "--roi-name",
                "GTV_auto",
            ],
            tiny_weights,
            tiny_config,
        )
        == 0
    )
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "study.report.json",
        "study.rtstruct.dcm",
        "study.seg.dcm",
        "study.sr.dcm",
    ]
    report = json.loads((out / "study.report.json").read_text())
    assert report["output"]["paths"] == [
        str(out / f"study.{kind}.dcm") for kind in ("seg", "sr", "rtstruct")
    ]  # the SR right after its SEG

    import pydicom

    rt, seg = pydicom.dcmread(out / "study.rtstruct.dcm"), pydicom.dcmread(out / "study.seg.dcm")
    sr = pydicom.dcmread(out / "study.sr.dcm")
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence  # the SR's evidence is the SEG written beside it
    assert rt.StructureSetROISequence[0].ROIName == "GTV_auto"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.826.0.1.12"
    members = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert report["members_used"] == ["b-f0"] and "b-f0" in members
    # The case's quality (docs/quality.md): the score and flag of its run report, in the SEG.
    assert f"quality_score={report['quality']['score']:.4f}" in members
    assert f"quality_review={str(report['quality']['review']).lower()}" in members


def test_dicom_formats_for_a_non_dicom_input_are_refused_before_loading(tiny_weights, tiny_config, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    sitk.WriteImage(_small_image(), str(tmp_path / "in" / "case.mha"))
    code = _predict(
        ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--output-format", "mha", "dicom-seg"],
        tiny_weights,
        tiny_config,
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "dicom-seg and rtstruct reference the images of a DICOM series" in last
    assert not (tmp_path / "out").exists()


def test_the_mha_path_never_imports_the_dicom_modules(tiny_weights, tiny_config, tmp_path):
    (tmp_path / "in").mkdir()
    sitk.WriteImage(orient(_small_image(), "axial"), str(tmp_path / "in" / "case.mha"))
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import inference
from pantherseg.api import segment
segment({str(tmp_path / "in")!r}, output_dir={str(tmp_path / "out")!r}, task="t2", config={str(tiny_config)!r},
        weights={str(tiny_weights)!r}, device="cpu", time_budget_s=float("inf"), output_formats=("mha", "nii.gz"))
# pydicom itself may appear: nibabel (an nnU-Net dependency) imports it when it is installed; the
# grand-challenge image does not install it. Nothing of ours nor highdicom may load.
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("highdicom", "rt_utils") or m.startswith("pantherseg.dicom"))
assert not heavy, heavy
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case.mha", "case.nii.gz"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["oblique", "flipped"])
def test_demo_zoo_on_a_dicom_phantom_series(kind, tmp_path, capsys):
    """The shipped Task 2 zoo (one member, for time) on a phantom stored as DICOM: the same mask as on the
    same image as .mha (on the .mha's own grid for the flipped series), and its RTSTRUCT rasterises back."""
    from pantherseg.dicom.series import read_series
    from pantherseg.paths import default_config, default_weights

    from dicom_factory import dice as dice_of
    from dicom_factory import phantom_case, rasterise_rtstruct

    if not default_config().exists():
        pytest.skip("the demo zoo is not in this checkout")
    config = json.loads(default_config().read_text())
    config["tasks"] = {"t2": dict(config["tasks"]["t2"], members=config["tasks"]["t2"]["members"][:1])}
    (tmp_path / "config.json").write_text(json.dumps(config))
    image = orient(phantom_case(seed=1000, task="t2", voxel_scale=2.0)[0], kind)
    write_series(image, tmp_path / "dicom")
    as_read = read_series(tmp_path / "dicom").volume.sitk_image  # the grid the DICOM route segments on
    sitk.WriteImage(stored_image(image), str(tmp_path / "image.mha"))
    sitk.WriteImage(as_read, str(tmp_path / "as-read.mha"))
    assert (
        main(
            [
                "predict",
                "-i",
                str(tmp_path / "dicom"),
                str(tmp_path / "image.mha"),
                str(tmp_path / "as-read.mha"),
                "-o",
                str(tmp_path / "out"),
                "--task",
                "t2",
                "--config",
                str(tmp_path / "config.json"),
                "--weights",
                str(default_weights()),
                "--device",
                "cpu",
                "--time-budget",
                "0",
                "-q",
            ]
        )
        == 0
    )
    dicom_mask = sitk.ReadImage(str(tmp_path / "out" / "dicom.mha"))
    mask = sitk.GetArrayFromImage(dicom_mask)
    assert mask.sum() * np.prod(dicom_mask.GetSpacing()) / 1000 >= 1.0  # the zoo finds the phantom's tumour
    assert np.array_equal(mask, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "as-read.mha"))))
    mha_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "image.mha")))
    on_mha_grid = sitk.GetArrayFromImage(
        sitk.Resample(
            dicom_mask, sitk.ReadImage(str(tmp_path / "image.mha")), sitk.Transform(), sitk.sitkNearestNeighbor
        )
    )
    if kind == "oblique":  # same voxel order: the network saw the same array
        assert np.array_equal(on_mha_grid, mha_mask)
    else:  # stored feet-first: the network saw the array z-reversed (no mirroring at test time), as it
        # would after any SimpleITK/GDCM conversion; same tumour, not the same voxels (measured Dice 0.855)
        assert dice_of(on_mha_grid, mha_mask) >= 0.8
    assert (
        main(
            [
                "predict",
                "-i",
                str(tmp_path / "dicom"),
                "-o",
                str(tmp_path / "rt"),
                "--output-format",
                "rtstruct",
                "--task",
                "t2",
                "--config",
                str(tmp_path / "config.json"),
                "--weights",
                str(default_weights()),
                "--device",
                "cpu",
                "--time-budget",
                "0",
                "-q",
            ]
        )
        == 0
    )
    import pydicom

    series = read_series(tmp_path / "dicom")
    contours = rasterise_rtstruct(pydicom.dcmread(tmp_path / "rt" / "dicom.rtstruct.dcm"), series.datasets)
    assert dice_of(contours, mask) == 1.0


def test_a_case_whose_dicom_output_cannot_be_made_fails_alone_before_its_prediction(
    tiny_weights, tiny_config, tmp_path, capsys, monkeypatch
):
    """An anonymised series without FrameOfReferenceUID, then a good one: the first is refused in one line
    before its networks run, the second is segmented in the same run."""
    from pantherseg.engine import ensemble as ensemble_module

    image = orient(_small_image(), "axial")
    write_series(image, tmp_path / "in" / "a-no-frame", tweak=lambda k, ds: delattr(ds, "FrameOfReferenceUID"))
    write_series(image, tmp_path / "in" / "b-good", tweak=lambda k, ds: delattr(ds, "PatientBirthDate"))
    predicted = []
    real_predict = ensemble_module.Ensemble.predict
    monkeypatch.setattr(
        ensemble_module.Ensemble,
        "predict",
        lambda self, volume, **kw: predicted.append(volume.source) or real_predict(self, volume, **kw),
    )
    code = _predict(
        [
            "-i",
            str(tmp_path / "in" / "a-no-frame"),
            str(tmp_path / "in" / "b-good"),
            "-o",
            str(tmp_path / "out"),
            "--output-format",
            "dicom-seg",
        ],
        tiny_weights,
        tiny_config,
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "1 of 2 case(s) failed" in last and "no FrameOfReferenceUID" in last
    assert len(predicted) == 1 and predicted[0].startswith("b-good")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b-good.report.json", "b-good.seg.dcm"]


def test_the_sr_carries_the_run_reports_tumour_volume_and_references_the_seg(tiny_weights, tiny_config, tmp_path):
    """``output_formats=("sr", "dicom-seg")`` (the formats ``--output-format`` takes): the SEG is written first,
    then the SR whose volume is the run report's tumor_volume_mm3 / 1000 and whose segment is that SEG's."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from pantherseg import segment
    from pantherseg.dicom.sr import QUALITY_SCORE

    write_series(orient(_small_image(), "oblique"), tmp_path / "MR")
    [result] = segment(
        tmp_path / "MR",
        output_dir=tmp_path / "out",
        report_dir=tmp_path / "out",
        task="t1",
        config=tiny_config,
        weights=tiny_weights,
        device="cpu",
        time_budget_s=float("inf"),
        output_formats=("sr", "dicom-seg"),
    )
    out = tmp_path / "out"
    report = json.loads((out / "MR.report.json").read_text())
    assert (
        report["output"]["paths"]
        == [str(out / "MR.seg.dcm"), str(out / "MR.sr.dcm")]
        == [str(p) for p in [result.output, out / "MR.sr.dcm"]]
    )
    assert report["output"]["tumor_voxels"] > 0
    group = hd.sr.srread(out / "MR.sr.dcm").content.get_volumetric_roi_measurement_groups()[0]
    [volume] = group.get_measurements(name=codes.SCT.Volume)
    # The report rounds to 0.001 mm3; the SR holds the unrounded product of the same voxel count and voxel volume.
    assert volume.value == pytest.approx(report["output"]["tumor_volume_mm3"] / 1000, abs=5e-7)
    assert group.referenced_segment.referenced_sop_instance_uid == hd.seg.segread(out / "MR.seg.dcm").SOPInstanceUID
    [score] = group.get_measurements(name=QUALITY_SCORE)
    assert score.value == pytest.approx(report["quality"]["score"])
