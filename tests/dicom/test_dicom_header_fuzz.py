"""Property: a DICOM series with mutated headers is read exactly, or refused in one line; never more.

Hypothesis takes a small phantom series (6 slices of 24 x 28, ``dicom_factory.write_series``) and
rewrites one to three elements as bytes (``dicom_factory.set_element``): the tags the reader uses
(image plane, pixel description, rescale, UIDs, character set, pixel data), with their own VR or
another one, a value count from 0 to 7, numbers that are huge, negative, NaN or not numbers, raw
bytes, or the element deleted. The contract, tested on ``read_series`` (the reading layer: the
networks add nothing to what a header can do):

- a volume whose shape is the series' (slices x Rows x Columns) with finite float32 voxels, or
- one ``PantherError`` line with exit code 2 (bad image) or 5 (memory/time), naming the problem;
- nothing written into the folder; each example within 10 s, the process's peak memory within 1 GiB
  of where it started.

Any other exception (a traceback) fails the property. The default run draws 12 examples (a few
seconds); ``--runslow`` draws 400.
"""

from __future__ import annotations

import resource
import shutil
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pydicom")

from pantherseg.dicom.series import read_series  # noqa: E402
from pantherseg.errors import PantherError  # noqa: E402

from dicom_factory import orient, phantom_case, set_element, write_series  # noqa: E402

# tag -> its VR in the data dictionary
TAGS = {
    0x00280010: "US",
    0x00280011: "US",
    0x00200032: "DS",
    0x00200037: "DS",
    0x00280030: "DS",
    0x00280008: "IS",
    0x00281053: "DS",
    0x00281052: "DS",
    0x00280100: "US",
    0x00280101: "US",
    0x00280102: "US",
    0x00280103: "US",
    0x00280002: "US",
    0x00280004: "CS",
    0x0020000E: "UI",
    0x00080016: "UI",
    0x00080060: "CS",
    0x00080005: "CS",
    0x7FE00010: "OW",
}
OTHER_VRS = ["US", "SS", "UL", "FD", "FL", "DS", "IS", "LO", "CS", "UN", "OB", "SQ", "UI"]
NUMBERS = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "abc", "1e300", "-0", "nan", "0x10", " 1 ", "1,5", "3.4e38"]),
)
MAX_GROWTH_BYTES = 1 << 30
SECONDS_PER_EXAMPLE = 10


@pytest.fixture(scope="module")
def base_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "s"
    write_series(orient(phantom_case()[0], "axial")[:24, :28, :6], folder)
    return folder


@st.composite
def values(draw, vr: str) -> bytes | None:
    """Bytes for an element of ``vr``: well-typed numbers or text of any count, raw bytes, or None (deleted)."""
    kind = draw(st.sampled_from(["typed", "typed", "text", "raw", "delete"]))
    count = draw(st.integers(0, 7))
    if kind == "delete":
        return None
    if kind == "raw":
        return draw(st.binary(max_size=64))
    if kind == "typed" and vr in ("US", "SS", "UL", "FD", "FL"):
        fmt = {"US": "H", "SS": "h", "UL": "I", "FD": "d", "FL": "f"}[vr]
        element = {
            "H": st.integers(0, 2**16 - 1),
            "h": st.integers(-(2**15), 2**15 - 1),
            "I": st.integers(0, 2**32 - 1),
            "d": st.floats(width=64),
            "f": st.floats(width=32),
        }[fmt]
        return struct.pack("<" + fmt * count, *draw(st.lists(element, min_size=count, max_size=count)))
    tokens = draw(st.lists(NUMBERS if kind == "typed" else st.text(max_size=12), min_size=count, max_size=count))
    return "\\".join(tokens).encode("utf-8", "surrogatepass")


@st.composite
def mutations(draw) -> list[tuple[str, int, str, bytes | None]]:
    """One to three (which slices, tag, VR, value) rewrites."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        tag = draw(st.sampled_from(sorted(TAGS)))
        vr = TAGS[tag] if draw(st.integers(0, 3)) else draw(st.sampled_from(OTHER_VRS))
        out.append((draw(st.sampled_from(["one", "all"])), tag, vr, draw(values(vr))))
    return out


def check_contract(folder, base_series) -> None:
    before = sorted(p.name for p in folder.rglob("*"))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.process_time()  # CPU seconds of this process, not the shared cores' wall clock
    try:
        series = read_series(folder)
    except PantherError as error:
        message = str(error)
        assert error.exit_code in (2, 5), message
        assert message and "\n" not in message and len(message) < 2000
    else:
        rows, columns = int(series.datasets[0].Rows), int(series.datasets[0].Columns)
        assert series.volume.data.shape == (1, len(series.datasets), rows, columns)
        assert series.volume.data.dtype == np.float32 and np.isfinite(series.volume.data).all()
    assert time.process_time() - started < SECONDS_PER_EXAMPLE
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before < MAX_GROWTH_BYTES
    assert sorted(p.name for p in folder.rglob("*")) == before


def _property(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def _run(base_series, tmp_path, changes) -> None:
    folder = tmp_path / f"case-{time.monotonic_ns()}"
    shutil.copytree(base_series, folder)
    files = sorted(folder.iterdir())
    for which, tag, vr, value in changes:
        for path in files if which == "all" else files[2:3]:
            set_element(path, tag, vr, value)
    try:
        check_contract(folder, base_series)
    finally:
        shutil.rmtree(folder)


@_property(12)
@given(changes=mutations())
def test_mutated_dicom_headers_are_read_or_refused_in_one_line(base_series, tmp_path, changes):
    _run(base_series, tmp_path, changes)


@pytest.mark.slow
@_property(400)
@given(changes=mutations())
def test_many_mutated_dicom_headers_are_read_or_refused_in_one_line(base_series, tmp_path, changes):
    _run(base_series, tmp_path, changes)
