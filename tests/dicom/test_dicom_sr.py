"""pantherseg.dicom.sr and the SR in the write order: a TID 1500 report read back by highdicom, dciodvfy clean."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd  # noqa: E402
from pydicom.sr.codedict import codes  # noqa: E402
from test_dicom_outputs import dciodvfy_errors  # noqa: E402

from pantherseg.dicom.seg import Algorithm  # noqa: E402
from pantherseg.dicom.series import read_series  # noqa: E402
from pantherseg.dicom.sr import QUALITY_SCORE, REVIEW_RECOMMENDED, voxel_volume_mm3  # noqa: E402
from pantherseg.dicom.writing import DicomWriter, order_dicom_formats, write_dicom_output  # noqa: E402
from pantherseg.errors import InputError, OutputError  # noqa: E402

from dicom_factory import orient, phantom_case, write_series  # noqa: E402

ALGORITHM = Algorithm(task="t2", members=("allrounder-f0", "volume-f1"), quality_score=0.8312, quality_review=True)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oblique")
    write_series(orient(phantom_case()[0], "oblique")[:, :, :8], folder)
    series = read_series(folder)
    mask = np.zeros(series.volume.shape_zyx, np.uint8)
    mask[2:5, 20:30, 20:34] = 1
    mask[6, 40:44, 10:13] = 1  # a second component on another slice
    return series, mask


def _write_seg_and_sr(series, mask, folder, algorithm=ALGORITHM, voxel_mm3=None):
    writer = DicomWriter(mask, series.datasets, algorithm=algorithm, voxel_mm3=voxel_mm3)
    seg_path, seg_notes = writer.write("dicom-seg", folder / "case.seg.dcm")
    sr_path, sr_notes = writer.write("sr", folder / "case.sr.dcm")
    return seg_path, sr_path, seg_notes + sr_notes


def _volume_group(sr):
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    return groups[0]


def test_the_sr_reads_back_as_a_measurement_report_referencing_the_seg_segment(oblique, tmp_path):
    series, mask = oblique
    voxel_mm3 = float(np.prod(series.volume.spacing_zyx))  # what the run report multiplies by
    seg_path, sr_path, notes = _write_seg_and_sr(series, mask, tmp_path, voxel_mm3=voxel_mm3)
    assert notes == [] and dciodvfy_errors(sr_path) == []  # warnings only: the private coding scheme

    sr, seg = hd.sr.srread(sr_path), hd.seg.segread(seg_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR) and sr.Modality == "SR"
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    source = series.datasets[0]
    assert (sr.StudyInstanceUID, sr.PatientID, str(sr.PatientName)) == (
        source.StudyInstanceUID,
        source.PatientID,
        str(source.PatientName),
    )
    assert sr.SeriesInstanceUID not in (source.SeriesInstanceUID, seg.SeriesInstanceUID)
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")

    group = _volume_group(sr)
    [volume] = group.get_measurements(name=codes.SCT.Volume)
    assert volume.value == mask.sum() * voxel_mm3 / 1000 and volume.unit.value == "ml"
    assert volume.value == pytest.approx(mask.sum() * voxel_volume_mm3(series.datasets) / 1000, rel=1e-9)
    reference = group.referenced_segment
    assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert reference.referenced_sop_class_uid == seg.SOPClassUID and reference.referenced_segment_numbers == [1]
    assert reference.source_series_for_segmentation.value == series.uid
    segment = seg.SegmentSequence[0]
    assert (group.tracking_uid, group.tracking_identifier) == (segment.TrackingUID, segment.TrackingID)
    assert group.finding_type == codes.SCT.Neoplasm
    assert [site.value for site in group.finding_sites] == [codes.SCT.Pancreas]

    [device] = sr.content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert device.observer_identifying_attributes.name == "pantherseg"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    referenced = {str(i.ReferencedSOPInstanceUID) for s in evidence for i in s.ReferencedSOPSequence}
    assert referenced == {str(d.SOPInstanceUID) for d in series.datasets} | {str(seg.SOPInstanceUID)}


def test_the_quality_score_and_review_flag_are_in_the_report_when_known(oblique, tmp_path):
    series, mask = oblique
    _, sr_path, _ = _write_seg_and_sr(series, mask, tmp_path)
    group = _volume_group(hd.sr.srread(sr_path))
    [score] = group.get_measurements(name=QUALITY_SCORE)
    assert score.value == pytest.approx(0.8312) and score.unit.value == "1"
    [review] = group.get_qualitative_evaluations(name=REVIEW_RECOMMENDED)
    assert review.value == codes.SCT.Yes

    unknown = Algorithm(task="t2", members=("allrounder-f0",))
    _, sr_path, _ = _write_seg_and_sr(series, mask, tmp_path / "unknown", algorithm=unknown)
    group = _volume_group(hd.sr.srread(sr_path))
    assert group.get_measurements(name=QUALITY_SCORE) == []
    assert group.get_qualitative_evaluations(name=REVIEW_RECOMMENDED) == []
    assert dciodvfy_errors(sr_path) == []


def test_an_empty_mask_gives_a_zero_volume_report_and_says_so(oblique, tmp_path):
    series, mask = oblique
    seg_path, sr_path, notes = _write_seg_and_sr(series, np.zeros_like(mask), tmp_path)
    assert dciodvfy_errors(sr_path) == [] and any("SR reports a tumour volume of 0 ml" in n for n in notes)
    group = _volume_group(hd.sr.srread(sr_path))
    [volume] = group.get_measurements(name=codes.SCT.Volume)
    assert volume.value == 0.0
    assert group.referenced_segment.referenced_sop_instance_uid == hd.seg.segread(seg_path).SOPInstanceUID


def test_an_sr_needs_the_seg_of_the_same_call():
    assert order_dicom_formats(("sr", "mha", "dicom-seg")) == ("mha", "dicom-seg", "sr")
    assert order_dicom_formats(("dicom-seg", "rtstruct", "sr")) == ("dicom-seg", "sr", "rtstruct")
    assert order_dicom_formats(("mha", "rtstruct")) == ("mha", "rtstruct")
    with pytest.raises(InputError, match="ask for both: --output-format dicom-seg sr") as caught:
        order_dicom_formats(("mha", "sr"))
    assert "\n" not in str(caught.value)


def test_an_sr_without_its_seg_is_refused_by_the_writer(oblique, tmp_path):
    series, mask = oblique
    with pytest.raises(OutputError, match="write dicom-seg first"):
        write_dicom_output("sr", mask, series.datasets, tmp_path / "x.sr.dcm", algorithm=ALGORITHM)
    assert not (tmp_path / "x.sr.dcm").exists()


def test_sr_asked_for_without_dicom_seg_is_refused_before_any_model_loads(oblique):
    from pantherseg.io.outputs import check_output_formats

    series, _ = oblique
    assert check_output_formats(("sr", "dicom-seg"), [series.folder]) == ("dicom-seg", "sr")
    with pytest.raises(InputError, match="sr references the tumour segment"):
        check_output_formats(("mha", "sr"), [series.folder])


def test_an_anonymised_source_with_a_japanese_name_gives_a_valid_utf8_report(tmp_path):
    """Type 2 attributes an anonymiser dropped are written empty; ``\\ISO 2022 IR 87`` names re-encoded as UTF-8."""
    import pydicom

    from pantherseg.dicom.sources import TYPE_2_COPIED

    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"

    def anonymised_japanese(k, ds):
        ds.SpecificCharacterSet, ds.PatientName = ["", "ISO 2022 IR 87"], name
        for attribute in TYPE_2_COPIED[1:]:  # all but PatientName
            delattr(ds, attribute)

    write_series(orient(phantom_case()[0], "axial")[:, :, :8], tmp_path / "s", tweak=anonymised_japanese)
    series = read_series(tmp_path / "s")
    mask = np.zeros(series.volume.shape_zyx, np.uint8)
    mask[2:5, 20:30, 20:34] = 1
    _, sr_path, _ = _write_seg_and_sr(series, mask, tmp_path)
    written = pydicom.dcmread(sr_path)
    assert written.SpecificCharacterSet == "ISO_IR 192" and str(written.PatientName) == name
    assert all(str(written[attribute].value or "") == "" for attribute in TYPE_2_COPIED[1:])
    assert dciodvfy_errors(sr_path) == []
