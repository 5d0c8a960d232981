"""pantherseg.dicom.series / geometry: finding, choosing and reading a DICOM series with exact geometry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("pydicom")

from pantherseg.api import collect_inputs  # noqa: E402
from pantherseg.dicom.series import read_series  # noqa: E402
from pantherseg.errors import InputError  # noqa: E402

from dicom_factory import HTJ2K_SYNTAXES, ORIENTATIONS, orient, phantom_case, stored_image, write_series  # noqa: E402


@pytest.fixture(scope="module")
def phantom():
    return phantom_case()


def _same_voxels(dicom_image, expected) -> bool:
    """Every voxel of ``expected`` finds the same value at the same patient position in ``dicom_image``."""
    resampled = sitk.Resample(dicom_image, expected, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    return np.array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(expected))


@pytest.mark.parametrize("kind", sorted(ORIENTATIONS))
def test_geometry_is_exact_for_axial_oblique_and_flipped(kind, phantom, tmp_path):
    image = orient(phantom[0], kind)
    write_series(image, tmp_path / kind)
    series = read_series(tmp_path / kind)
    got, expected = series.volume.sitk_image, stored_image(image)
    assert got.GetSize() == expected.GetSize()
    assert np.allclose(got.GetSpacing(), expected.GetSpacing(), atol=1e-6)
    # The volume is right-handed along the DICOM slice normal: a flipped image comes back z-reversed.
    direction = np.array(got.GetDirection()).reshape(3, 3)
    assert np.isclose(np.linalg.det(direction), 1.0)
    corners = [tuple(int(c) for c in np.array(bits) * (np.array(got.GetSize()) - 1)) for bits in np.ndindex(2, 2, 2)]
    physical = {tuple(np.round(expected.TransformIndexToPhysicalPoint(c), 4)) for c in corners}
    assert {tuple(np.round(got.TransformIndexToPhysicalPoint(c), 4)) for c in corners} == physical
    assert _same_voxels(got, expected)
    assert [str(d.SOPInstanceUID) for d in series.datasets] == [
        str(d.SOPInstanceUID)
        for d in sorted(series.datasets, key=lambda d: float(np.dot(d.ImagePositionPatient, direction[:, 2])))
    ]


def test_several_series_need_a_choice_and_the_error_lists_them(phantom, tmp_path):
    image = orient(phantom[0], "axial")
    write_series(image, tmp_path / "study" / "a", series_description="t2_haste_tra", series_uid="1.2.826.0.1.1")
    write_series(
        image[:, :, :12],
        tmp_path / "study" / "b",
        series_description="t2_haste_cor",
        series_number=4,
        series_uid="1.2.826.0.1.2",
    )
    with pytest.raises(InputError, match="2 image series") as error:
        read_series(tmp_path / "study")
    message = str(error.value)
    assert "--series-uid" in message
    assert (
        "1.2.826.0.1.1 't2_haste_tra' (MR, 25 files)" in message
        and "1.2.826.0.1.2 't2_haste_cor' (MR, 12 files)" in message
    )
    chosen = read_series(tmp_path / "study", series_uid="1.2.826.0.1.2")
    assert chosen.volume.sitk_image.GetSize()[2] == 12 and chosen.description == "t2_haste_cor"
    with pytest.raises(InputError, match="No image series with SeriesInstanceUID 9.9"):
        read_series(tmp_path / "study", series_uid="9.9")


def test_the_only_mr_series_is_taken(phantom, tmp_path):
    image = orient(phantom[0], "axial")
    write_series(image, tmp_path / "study" / "mr", series_uid="1.2.826.0.1.1")
    write_series(image[:, :, :6], tmp_path / "study" / "ct", modality="CT", series_uid="1.2.826.0.1.3")
    assert read_series(tmp_path / "study").uid == "1.2.826.0.1.1"


def test_seg_rtstruct_dicomdir_and_other_files_beside_the_series_are_skipped(phantom, tmp_path):
    from pydicom.fileset import FileSet

    image = orient(phantom[0], "oblique")
    files = write_series(image, tmp_path / "plain")
    fileset = FileSet()
    for path in files:
        fileset.add(str(path))
    fileset.write(tmp_path / "export")  # DICOMDIR plus the files in PT*/ST*/SE* folders
    assert (tmp_path / "export" / "DICOMDIR").is_file()
    (tmp_path / "export" / "README.txt").write_text("exported by a PACS\n")
    (tmp_path / "export" / "notes.dcm").write_bytes(b"\0" * 128 + b"DICMnot really")
    shutil.copy(files[0], tmp_path / "export" / ".hidden-copy.dcm")
    rtstruct = tmp_path / "rt.dcm"
    from pantherseg.dicom.rtstruct import build_rtstruct
    from pantherseg.dicom.seg import Algorithm, build_seg

    series = read_series(tmp_path / "plain")
    mask = np.zeros(series.volume.shape_zyx, dtype=np.uint8)
    mask[10, 20:30, 20:30] = 1
    build_rtstruct(mask, series.datasets, algorithm=Algorithm()).save_as(rtstruct, enforce_file_format=True)
    shutil.copy(rtstruct, tmp_path / "export" / "rtstruct.dcm")
    build_seg(mask, series.datasets, algorithm=Algorithm()).save_as(tmp_path / "export" / "seg.dcm")

    found = read_series(tmp_path / "export")
    assert _same_voxels(found.volume.sitk_image, stored_image(image))
    notes = " | ".join(found.notes)
    assert "DICOMDIR" in notes and "SEG object" in notes and "RTSTRUCT object" in notes
    assert "skipped 1 file(s): not DICOM or unreadable" in notes  # README.txt
    assert "skipped 1 file(s): DICOM object without an image plane" in notes  # notes.dcm
    assert collect_inputs(tmp_path / "export") == [tmp_path / "export"]


def test_a_folder_without_an_image_series_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)
    with pytest.raises(InputError, match="No DICOM image series in .*1 file"):
        read_series(tmp_path / "junk")


def _shift(k_bad, vector):
    def tweak(k, ds):
        if k >= k_bad:
            ds.ImagePositionPatient = [f"{float(v) + d:.6f}" for v, d in zip(ds.ImagePositionPatient, vector)]

    return tweak


@pytest.mark.parametrize(
    "tweak, message",
    [
        (_shift(10, (0, 0, 2.0)), "irregular slice spacing: steps between slices range from 5.000 to 7.000 mm"),
        (_shift(10, (0, 0, 5.0)), "missing slices: the step is 5.000 mm but 1 gap"),
        (
            lambda k, ds: setattr(
                ds,
                "ImagePositionPatient",
                [f"{float(ds.ImagePositionPatient[0]) + 0.8 * k:.4f}", *ds.ImagePositionPatient[1:]],
            ),
            "gantry tilt",
        ),
        (lambda k, ds: k == 3 and setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]), "mixed orientations"),
        (
            lambda k, ds: k == 3
            and setattr(ds, "ImagePositionPatient", [f"{float(v):.4f}" for v in ds.ImagePositionPatient])
            or (k == 4 and setattr(ds, "InstanceNumber", 4)),
            None,
        ),
    ],
)
def test_irregular_stacks_are_refused_saying_what_was_found(phantom, tmp_path, tweak, message):
    image = orient(phantom[0], "axial")
    write_series(image, tmp_path / "s", tweak=tweak)
    if message is None:  # rounded positions and odd instance numbers are fine
        assert read_series(tmp_path / "s").volume.sitk_image.GetSize()[2] == image.GetSize()[2]
        return
    with pytest.raises(InputError, match=message):
        read_series(tmp_path / "s")


def test_duplicate_positions_are_refused(phantom, tmp_path):
    image = orient(phantom[0], "axial")
    write_series(image, tmp_path / "s")
    write_series(image[:, :, :5], tmp_path / "s" / "echo2", series_uid=read_series(tmp_path / "s").uid)
    with pytest.raises(InputError, match="5 slice.s. share a position"):
        read_series(tmp_path / "s")


@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", *HTJ2K_SYNTAXES]
)
def test_jpeg_ls_jpeg_2000_htj2k_and_rle_decode_losslessly(phantom, tmp_path, syntax):
    if syntax in HTJ2K_SYNTAXES:
        pytest.importorskip("imagecodecs", reason="HTJ2K test series are encoded with imagecodecs (OpenJPH)")
    image = orient(phantom[0], "axial")[:, :, :6]
    write_series(image, tmp_path / "s", transfer_syntax=syntax)
    import pydicom

    assert str(pydicom.dcmread(next((tmp_path / "s").iterdir())).file_meta.TransferSyntaxUID) == syntax
    assert _same_voxels(read_series(tmp_path / "s").volume.sitk_image, stored_image(image))


def test_an_unsupported_transfer_syntax_is_refused_before_decoding(phantom, tmp_path):
    import pydicom

    image = orient(phantom[0], "axial")[:, :, :6]
    for path in write_series(image, tmp_path / "s", transfer_syntax="1.2.840.10008.1.2.5"):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264
        ds.save_as(path)
    with pytest.raises(InputError, match=r"transfer syntax MPEG-4 .*\(1.2.840.10008.1.2.4.102\) is not supported"):
        read_series(tmp_path / "s")


@pytest.mark.parametrize("kind", sorted(ORIENTATIONS))
def test_the_geometry_agrees_with_simpleitk_gdcm_series_reader(kind, phantom, tmp_path):
    """An independent reader (GDCM's sorting, SimpleITK's geometry) gives the same grid and voxels."""
    image = orient(phantom[0], kind)
    write_series(image, tmp_path / "s")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    gdcm = reader.Execute()
    ours = read_series(tmp_path / "s").volume.sitk_image
    assert gdcm.GetSize() == ours.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(gdcm, get)(), getattr(ours, get)(), atol=1e-4), get
    assert np.allclose(sitk.GetArrayFromImage(gdcm), sitk.GetArrayFromImage(ours), rtol=1e-6, atol=1e-3)


def test_a_truncated_slice_is_refused_naming_the_file(phantom, tmp_path):
    files = write_series(orient(phantom[0], "axial")[:, :, :6], tmp_path / "s")
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 500])  # the header is intact, the pixel data is not
    with pytest.raises(InputError, match=f"{files[2].name}"):
        read_series(tmp_path / "s")


# --- the attribute table (pantherseg.dicom.attributes) --------------------------------------------


def _rewrite(path, keyword: str, text: str) -> None:
    """Replace an element's value in the file's bytes (explicit VR little endian, short form), as a broken
    exporter writes it: pydicom itself refuses to write an IS of "abc"."""
    import struct

    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    data = path.read_bytes()
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + dictionary_VR(tag).encode()
    at = data.index(head, 132 + 200)  # past the file meta
    length = struct.unpack("<H", data[at + 6 : at + 8])[0]
    value = text.encode() + (b" " if len(text) % 2 else b"")
    path.write_bytes(data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length :])


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("ImagePositionPatient", "0\\0", "has 2 value(s)"),
        ("PixelSpacing", "1\\1\\1", "has 3 value(s)"),
        ("ImageOrientationPatient", "1\\0\\0\\0\\1", "has 5 value(s)"),
        ("NumberOfFrames", "abc", "not a number"),
        ("RescaleSlope", "n/a", "not a number"),
        ("RescaleIntercept", "inf", "expected one number"),
        ("PixelSpacing", "0\\1", "expected 2 numbers in [0.0001, 10000]"),
        ("ImagePositionPatient", "1e300\\0\\0", "expected 3 numbers in"),
    ],
)
def test_header_values_outside_the_table_are_one_line_naming_the_attribute(phantom, tmp_path, name, text, expected):
    def placeholder(k, ds):
        if name not in ds:
            setattr(ds, name, "1")  # a valid value in every slice, so that the rewrite finds it

    files = write_series(orient(phantom[0], "axial")[:, :, :6], tmp_path / "s", tweak=placeholder)
    _rewrite(files[2], name, text)
    with pytest.raises(InputError) as caught:
        read_series(tmp_path / "s")
    message = str(caught.value)
    assert "\n" not in message and name in message and expected in message


def test_a_missing_required_attribute_is_named(phantom, tmp_path):
    def drop(k, ds):
        if k == 1:
            del ds.BitsStored

    write_series(orient(phantom[0], "axial")[:, :, :6], tmp_path / "s", tweak=drop)
    with pytest.raises(InputError, match="BitsStored is missing"):
        read_series(tmp_path / "s")
