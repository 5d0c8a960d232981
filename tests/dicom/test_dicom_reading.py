"""pantherseg.dicom.reading: untrusted DICOM files read within bounds (files, bytes, decoded frames).

Each case here was a probe that killed the run (137, no line) or read files it should not; each is
now one ``InputError``/``ResourceError`` line, raised before the big allocation would happen.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("pydicom")

import pydicom  # noqa: E402

from pantherseg.dicom import reading  # noqa: E402
from pantherseg.dicom import series as series_module
from pantherseg.dicom.series import read_series  # noqa: E402
from pantherseg.errors import InputError, ResourceError  # noqa: E402

from dicom_factory import orient, phantom_case, write_series  # noqa: E402

JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_2000 = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.202"  # lossless with RPCL progression: what AWS HealthImaging stores


@pytest.fixture(scope="module")
def small():
    return orient(phantom_case()[0], "axial")[:, :, :6]


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""

    def refuse(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(refuse))


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- which files -----------------------------------------------------------------------------------


def test_a_slice_linked_from_outside_the_folder_is_refused(small, tmp_path):
    files = write_series(small, tmp_path / "s")
    outside = tmp_path / "elsewhere.dcm"
    files[0].rename(outside)
    files[0].symlink_to(outside)
    with pytest.raises(InputError, match="outside the input folder") as caught:
        read_series(tmp_path / "s")
    assert files[0].name in _one_line(caught)


@pytest.mark.parametrize("kind", ["fifo", "device link"])
def test_fifos_and_devices_among_the_slices_are_refused_without_opening_them(small, tmp_path, kind):
    write_series(small, tmp_path / "s")
    special = tmp_path / "s" / "IM99999.dcm"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        special.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="outside the input folder|not a regular file") as caught:
        read_series(tmp_path / "s")
    assert "IM99999.dcm" in _one_line(caught)


def test_a_link_to_a_folder_inside_is_not_followed_and_noted(small, tmp_path):
    write_series(small, tmp_path / "s" / "a")
    (tmp_path / "s" / "b").symlink_to(tmp_path / "s" / "a")
    result = read_series(tmp_path / "s")
    assert result.volume.shape_zyx[0] == 6
    assert any("link to a folder not followed" in note for note in result.notes)


def test_a_walk_deeper_than_the_bound_is_refused(tmp_path):
    deep = tmp_path / "s"
    for _ in range(reading.MAX_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(InputError, match="deeper than"):
        read_series(tmp_path / "s")


# --- how many bytes --------------------------------------------------------------------------------


def test_a_file_with_a_3_gb_element_is_refused_before_reading(small, tmp_path, no_decoding):
    """A private OB element of 3 GB after the pixel data; the file is sparse, so the test writes 2 KB."""
    files = write_series(small, tmp_path / "s")
    with open(files[3], "ab") as handle:
        handle.write(struct.pack("<HH2sHI", 0x7FE1, 0x0010, b"OB", 0, 3 << 30))
    os.truncate(files[3], files[3].stat().st_size + (3 << 30))
    with pytest.raises(InputError, match="MiB, more than") as caught:
        read_series(tmp_path / "s")
    assert files[3].name in _one_line(caught)


def test_an_element_claiming_3_gb_in_a_small_file_allocates_nothing(small, tmp_path):
    """The claim alone (the file is short): headers are read with defer_size, the slice is refused as corrupt."""
    files = write_series(small, tmp_path / "s")
    data = files[3].read_bytes()
    at = data.index(struct.pack("<HH", 0x7FE0, 0x0010))
    files[3].write_bytes(data[:at] + struct.pack("<HH2sHI", 0x0029, 0x1010, b"OB", 0, 3 << 30) + data[at:])
    with pytest.raises(InputError) as caught:
        read_series(tmp_path / "s")
    assert files[3].name in _one_line(caught)


def _deflated_file(path, inflated_mb: int) -> None:
    """A Deflated Explicit VR Little Endian MR slice whose dataset inflates to ``inflated_mb`` MiB."""
    template = pydicom.dcmread(next(path.parent.glob("IM*.dcm")))
    template.file_meta.TransferSyntaxUID = reading.DEFLATED
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, template.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    del template.PixelData
    write_dataset(body, template)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [
        deflate.compress(body.getvalue()),
        deflate.compress(struct.pack("<HH2sHI", 0x7FE1, 0x0010, b"OB", 0, inflated_mb << 20)),
    ]
    block = bytes(1 << 20)
    chunks += [deflate.compress(block) for _ in range(inflated_mb)]
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + b"".join(chunks) + deflate.flush())


def test_a_deflate_bomb_beside_a_valid_series_is_refused_while_inflating(small, tmp_path, monkeypatch):
    """200 KB on disk inflating to 200 MiB, against a bound of 16 + 2 MiB: pydicom alone inflates it all."""
    monkeypatch.setattr(series_module, "MAX_SLICE_PIXEL_BYTES", 2 << 20)
    write_series(small, tmp_path / "s")
    bomb = tmp_path / "s" / "bomb.dcm"
    _deflated_file(bomb, 200)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InputError, match="inflates beyond") as caught:
        read_series(tmp_path / "s")
    assert "bomb.dcm" in _one_line(caught)


def test_a_deflated_series_within_bounds_reads_exactly(small, tmp_path):
    write_series(small, tmp_path / "plain")
    for path in write_series(small, tmp_path / "deflated"):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = reading.DEFLATED  # pydicom deflates the dataset when it saves
        ds.save_as(path, enforce_file_format=True)
    plain, deflated = read_series(tmp_path / "plain"), read_series(tmp_path / "deflated")
    assert str(deflated.datasets[0].file_meta.TransferSyntaxUID) == reading.DEFLATED
    assert np.array_equal(plain.volume.data, deflated.volume.data)


# --- how big a decoded frame -----------------------------------------------------------------------


def test_five_jpeg_ls_slices_of_8192_squared_are_refused_before_decoding(small, tmp_path, no_decoding):
    """21 KB on disk claiming 5 x 8192^2 voxels: the voxel cap (2^28, as for .mha) refuses it from the headers."""
    image = small[:, :, :5]
    for path in write_series(image, tmp_path / "s", transfer_syntax=JPEG_LS):
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 8192
        ds.save_as(path)
    with pytest.raises(ResourceError, match="before reading or decompressing") as caught:
        read_series(tmp_path / "s")
    assert "3.36e+08 voxels" in _one_line(caught)


@pytest.mark.parametrize(
    "syntax, marker", [(JPEG_LS, b"\xff\xf7"), (JPEG_2000, b"\xff\x4f\xff\x51"), (HTJ2K, b"\xff\x4f\xff\x51")]
)
def test_a_codestream_claiming_more_than_rows_and_columns_is_refused_before_decoding(
    small, tmp_path, no_decoding, syntax, marker
):
    """Rows and Columns stay 64 x 80; every codestream's own header says 8192 x 8192 (what a decoder allocates)."""
    if syntax == HTJ2K:
        pytest.importorskip("imagecodecs", reason="HTJ2K test series are encoded with imagecodecs (OpenJPH)")
    for path in write_series(small, tmp_path / "s", transfer_syntax=syntax):
        data = bytearray(path.read_bytes())
        at = data.index(marker, data.index(struct.pack("<HH", 0x7FE0, 0x0010)))
        if syntax == JPEG_LS:  # SOF55: length, precision, then rows and columns
            data[at + 5 : at + 9] = struct.pack(">HH", 8192, 8192)
        else:  # SIZ: Lsiz, Rsiz, then Xsiz and Ysiz
            data[at + 8 : at + 16] = struct.pack(">II", 8192, 8192)
        path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="declares 8192 x 8192 x 1") as caught:
        read_series(tmp_path / "s")
    assert "refused before decoding" in _one_line(caught)


@pytest.mark.parametrize("syntax", [JPEG_LS, JPEG_2000, HTJ2K])
def test_the_declared_frame_size_of_real_codestreams_is_accepted(small, tmp_path, syntax):
    if syntax == HTJ2K:
        pytest.importorskip("imagecodecs", reason="HTJ2K test series are encoded with imagecodecs (OpenJPH)")
    files = write_series(small, tmp_path / "s", transfer_syntax=syntax)
    ds = pydicom.dcmread(files[0])
    reading.check_declared_frame(ds, files[0], "s")


def test_a_baseline_jpeg_frame_header_is_read():
    """A JPEG written by an independent encoder (Pillow): its SOF0 gives rows, columns and components."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((37, 53), dtype=np.uint8)).save(buffer, format="JPEG")
    assert reading._jpeg_size(buffer.getvalue()) == (37, 53, 1)
    assert reading._jpeg_size(b"\xff\xd8\xff\xda\x00\x02") is None  # a scan before any frame header
