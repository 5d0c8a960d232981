"""Property: an image file with a mutated header is read exactly, or refused in one line; never more.

Hypothesis starts from a valid 12 x 10 x 8 float32 image whose voxels are all non-zero, written as
``.mha`` (text header, optionally zlib-compressed voxels) or ``.nii`` / ``.nii.gz`` (binary header),
and mutates what a reader trusts: dimensions (0, negative, huge), spacing (0, negative, NaN, 1e300),
the element type, the number of dimensions and components, the compressed size, the data offset,
the data file, and the bytes themselves (cut anywhere, garbage appended, the gzip stream cut).
The contract, tested on ``read_volume`` (the layer every header reaches first):

- a volume with the header's size and finite float32 voxels; when the fields that change the values
  read (element type, data offset, scaling) were kept, none of them zero (a zero means ITK filled missing bytes: a truncated file read as if whole), or
- one ``PantherError`` line with exit code 2 (bad image) or 5 (memory/time);
- nothing written beside the image; each example within 10 s, peak memory within 1 GiB of the start.

Any other exception fails the property. The default run draws 15 examples per format (a second or
two); ``--runslow`` draws 400.
"""

from __future__ import annotations

import gzip
import resource
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantherseg.errors import PantherError
from pantherseg.io.images import read_volume

SIZE_XYZ = (12, 10, 8)
VOXELS = ((np.arange(int(np.prod(SIZE_XYZ)), dtype=np.float32) % 97) + 1).reshape(SIZE_XYZ[::-1])
MAX_GROWTH_BYTES = 1 << 30
SECONDS_PER_EXAMPLE = 10
DIMS = st.one_of(st.integers(-3, 40), st.sampled_from([0, 1, 3, 4, 1 << 15, 2**31 - 1, 1 << 40]))
SPACINGS = st.one_of(st.floats(0.01, 10), st.sampled_from([0.0, -1.0, 1e-300, 1e300, float("nan"), float("inf")]))
FLOAT32S = st.one_of(st.floats(0.01, 10), st.sampled_from([0.0, -1.0, 1e-30, 3e38, float("nan"), float("inf")]))
CUTS = st.one_of(st.none(), st.floats(0.0, 0.999))


def _property(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def check_contract(path: Path, *, type_kept: bool) -> None:
    before = sorted(p.name for p in path.parent.iterdir())
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.process_time()  # CPU seconds of this process, not the shared cores' wall clock
    try:
        volume = read_volume(path)
    except PantherError as error:
        message = str(error)
        assert error.exit_code in (2, 5), message
        assert message and "\n" not in message and len(message) < 2000
    else:
        size = volume.sitk_image.GetSize()
        assert volume.data.shape == (1, *size[::-1]) and volume.data.dtype == np.float32
        assert np.isfinite(volume.data).all()
        if type_kept:
            assert np.count_nonzero(volume.data == 0) == 0, "zero-filled voxels: a short file was read as whole"
    assert time.process_time() - started < SECONDS_PER_EXAMPLE
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before < MAX_GROWTH_BYTES
    assert sorted(p.name for p in path.parent.iterdir()) == before


# --- MetaImage -------------------------------------------------------------------------------------


@st.composite
def metaimages(draw) -> tuple[bytes, bool]:
    """(file bytes, element type kept) of a mutated .mha."""
    compressed = draw(st.booleans())
    payload = VOXELS.astype("<f4").tobytes()
    if compressed:
        payload = zlib.compress(payload, draw(st.integers(1, 9)))
    fields = {
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": str(compressed),
        "TransformMatrix": "1 0 0 0 1 0 0 0 1",
        "Offset": "0 0 0",
        "ElementSpacing": "1 1 2",
        "DimSize": " ".join(map(str, SIZE_XYZ)),
        "ElementType": "MET_FLOAT",
    }
    if compressed:
        fields["CompressedDataSize"] = str(len(payload))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(
            st.sampled_from(
                [
                    "NDims",
                    "ElementSpacing",
                    "DimSize",
                    "ElementType",
                    "CompressedDataSize",
                    "ElementNumberOfChannels",
                    "TransformMatrix",
                    "HeaderSize",
                ]
            )
        )
        if key in ("ElementSpacing", "TransformMatrix"):
            count = 9 if key == "TransformMatrix" else draw(st.integers(1, 4))
            fields[key] = " ".join(repr(draw(SPACINGS)) for _ in range(count))
        elif key == "DimSize":
            fields[key] = " ".join(str(draw(DIMS)) for _ in range(draw(st.integers(1, 4))))
        elif key == "ElementType":
            fields[key] = draw(
                st.sampled_from(
                    ["MET_UCHAR", "MET_SHORT", "MET_DOUBLE", "MET_LONG_LONG", "MET_NONE", "MET_FLOAT_ARRAY", "bogus"]
                )
            )
        else:
            fields[key] = str(draw(DIMS))
    fields["ElementDataFile"] = draw(
        st.sampled_from(["LOCAL"] * 6 + ["../outside.raw", "/dev/zero", "missing.raw", "LIST", "x%03d.raw 1 3 1"])
    )
    header = "".join(f"{k} = {v}\n" for k, v in fields.items()).encode()
    data = header + payload
    cut = draw(CUTS)
    if cut is not None:
        data = data[: len(header) + int(cut * len(payload))]
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.binary(min_size=1, max_size=256))
    return data, fields["ElementType"] == "MET_FLOAT"


def _run_mha(tmp_path, drawn) -> None:
    data, type_kept = drawn
    folder = tmp_path / f"case-{time.monotonic_ns()}"
    folder.mkdir()
    (tmp_path / "outside.raw").write_bytes(VOXELS.tobytes())
    path = folder / "image.mha"
    path.write_bytes(data)
    check_contract(path, type_kept=type_kept)


@_property(15)
@given(drawn=metaimages())
def test_mutated_metaimage_headers_are_read_or_refused_in_one_line(tmp_path, drawn):
    _run_mha(tmp_path, drawn)


@pytest.mark.slow
@_property(400)
@given(drawn=metaimages())
def test_many_mutated_metaimage_headers_are_read_or_refused_in_one_line(tmp_path, drawn):
    _run_mha(tmp_path, drawn)


# --- NIfTI -----------------------------------------------------------------------------------------

# (offset, struct format) of the NIfTI-1 header fields a reader trusts (little endian).
NIFTI_FIELDS = {
    "dim": (40, "8h"),
    "datatype": (70, "h"),
    "bitpix": (72, "h"),
    "pixdim": (76, "8f"),
    "vox_offset": (108, "f"),
    "scl_slope": (112, "f"),
    "qform_code": (252, "h"),
    "sform_code": (254, "h"),
    "srow_x": (280, "4f"),
    "sizeof_hdr": (0, "i"),
}


@pytest.fixture(scope="module")
def nifti_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("nifti") / "base.nii"
    image = sitk.GetImageFromArray(VOXELS)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


@st.composite
def niftis(draw, base: bytes) -> tuple[bytes, bool, bool]:
    """(file bytes, element type kept, gzip) of a mutated .nii / .nii.gz."""
    data = bytearray(base)
    type_kept = True
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(NIFTI_FIELDS)))
        offset, fmt = NIFTI_FIELDS[name]
        count = struct.calcsize("<" + fmt) // struct.calcsize("<" + fmt[-1])
        if fmt[-1] == "f":
            values = [draw(FLOAT32S) for _ in range(count)]
        elif name == "dim":
            values = [draw(st.integers(-3, 8))] + [max(-(2**15), min(2**15 - 1, draw(DIMS))) for _ in range(count - 1)]
        else:
            values = [
                draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 348, 512, 540, 1024, 2304, -1]))
                for _ in range(count)
            ]
        type_kept &= name not in ("datatype", "bitpix", "vox_offset", "scl_slope")  # these change the values read
        data[offset : offset + struct.calcsize("<" + fmt)] = struct.pack("<" + fmt, *values)
    cut = draw(CUTS)
    if cut is not None:
        data = data[: 352 + int(cut * (len(data) - 352))]
    compressed = draw(st.booleans())
    out = gzip.compress(bytes(data), compresslevel=1) if compressed else bytes(data)
    if compressed and draw(st.integers(0, 4)) == 0:
        out = out[: draw(st.integers(10, len(out) - 1))]  # the gzip stream itself cut
    return out, type_kept, compressed


def _run_nifti(tmp_path, drawn) -> None:
    data, type_kept, compressed = drawn
    folder = tmp_path / f"case-{time.monotonic_ns()}"
    folder.mkdir()
    path = folder / ("image.nii.gz" if compressed else "image.nii")
    path.write_bytes(data)
    check_contract(path, type_kept=type_kept)


@_property(15)
@given(data=st.data())
def test_mutated_nifti_headers_are_read_or_refused_in_one_line(tmp_path, nifti_bytes, data):
    _run_nifti(tmp_path, data.draw(niftis(nifti_bytes)))


@pytest.mark.slow
@_property(400)
@given(data=st.data())
def test_many_mutated_nifti_headers_are_read_or_refused_in_one_line(tmp_path, nifti_bytes, data):
    _run_nifti(tmp_path, data.draw(niftis(nifti_bytes)))
