"""Untrusted DICOM files read with bounds: which files, how many bytes, and how big a decoded frame.

A DICOM folder from an upload or a PACS export may hold anything. Before pydicom or a decoder
allocates memory, this module knows how much it will take and refuses what is beyond bounds, with
one ``InputError`` line naming the file:

- Files (:func:`folder_files`): a bounded walk (depth :data:`MAX_DEPTH`, :data:`MAX_FILES` entries,
  links to folders not followed); a link leading outside the folder, a FIFO, a device or a socket is
  refused, never opened and never skipped silently.
- Bytes (:func:`read_dicom`): a file larger than its slice can be (:func:`max_file_bytes`, within the
  memory this process may use) is refused before it is read; elements above :data:`DEFER_BYTES` are
  not loaded while the headers are scanned (pydicom's ``defer_size``), so a header claiming a 3 GB
  element allocates nothing. A Deflated Explicit VR Little Endian dataset (pydicom inflates it whole,
  unbounded) is inflated here with ``max_length``: more than the bound, or a damaged stream, is refused.
- Frames (:func:`check_declared_frame`): an encapsulated frame's codestream declares its own size
  (JPEG and JPEG-LS in their SOF segment, JPEG 2000 in its SIZ marker); the decoders allocate what the
  codestream says, not what Rows and Columns say. It must agree with Rows x Columns x SamplesPerPixel,
  which passed the voxel cap and the memory check, before the decoder runs. RLE frames are sized by
  Rows and Columns themselves. Each slice is then decoded on its own, one frame at a time.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

from pantherseg.errors import InputError
from pantherseg.io.files import resolves_inside

MAX_DEPTH = 16
MAX_FILES = 100_000
DEFER_BYTES = 1 << 20  # elements above 1 MiB stay on disk while headers are scanned
HEADER_ALLOWANCE = 16 << 20  # a slice's non-pixel elements (private tags, icons, overlays) may take this much
DEFLATED = "1.2.840.10008.1.2.1.99"
ENCAPSULATED_JPEG = (
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
)
# JPEG 2000 and High-Throughput JPEG 2000: both codestreams start with SOC and the SIZ header the size check reads.
ENCAPSULATED_J2K = (
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
)
# JPEG start-of-frame markers (ITU T.81 B.1.1.3): C0-CF but C4 (DHT), C8 (JPG) and CC (DAC); F7: JPEG-LS SOF55.
_SOF_MARKERS = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}


def unreadable_errors() -> tuple[type[BaseException], ...]:
    """What pydicom raises on hostile bytes: its own errors and the built-in ones its converters let through
    (a wrong value length, an unknown character set, an unparsable number, a short file...)."""
    import pydicom.errors

    return (
        pydicom.errors.InvalidDicomError,
        pydicom.errors.BytesLengthException,
        OSError,
        ValueError,
        TypeError,
        EOFError,
        KeyError,
        AttributeError,
        IndexError,
        OverflowError,
        LookupError,
        struct.error,
        NotImplementedError,
        RecursionError,
    )


def folder_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The regular files under ``folder`` (hidden entries skipped), sorted, and notes on what was not followed."""
    folder = Path(folder)
    found, notes = [], []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        depth = len(here.relative_to(folder).parts)
        if depth > MAX_DEPTH:
            raise InputError(
                f"{folder}: folders nest deeper than {MAX_DEPTH} levels (at {here}); a DICOM export "
                f"is a few levels deep. Refused."
            )
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted([*files, *(d for d in dirs if (here / d).is_symlink())]):
            if name.startswith("."):
                continue
            path = here / name
            kind = _entry_kind(path, folder)
            if kind == "folder link":
                dirs.remove(name)
                notes.append(f"link to a folder not followed: {path.relative_to(folder)}")
            elif kind == "file":
                found.append(path)
            if len(found) > MAX_FILES:
                raise InputError(f"{folder}: more than {MAX_FILES} files; a DICOM series has at most a few thousand.")
    return sorted(found), notes


def _entry_kind(path: Path, folder: Path) -> str:
    """``file`` or ``folder link``; InputError for a link out of ``folder`` or a file that is not regular."""
    if path.is_symlink() and not resolves_inside(path, folder):
        raise InputError(
            f"{path} is a link to {os.path.realpath(path)}, outside the input folder {folder}; "
            f"refused (an input folder must not make the run read other files)."
        )
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise InputError(f"{path} cannot be inspected: {error.strerror} (a broken link?).") from error
    if stat.S_ISDIR(mode):
        return "folder link"
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{path} is not a regular file (a FIFO, device or socket); refused before opening it: "
            f"a DICOM folder holds files only."
        )
    return "file"


def max_file_bytes(pixel_bytes: int) -> int:
    """The most a file holding ``pixel_bytes`` of native pixel data may weigh, capped by available memory."""
    from pantherseg.io.host_memory import USABLE_FRACTION, available_bytes

    bound = pixel_bytes + HEADER_ALLOWANCE
    available = available_bytes()
    return bound if available is None else min(bound, int(available * USABLE_FRACTION))


def read_dicom(path: Path, *, max_bytes: int, pixels: bool, source: str):
    """``path`` as a pydicom dataset (headers only unless ``pixels``), within ``max_bytes`` on disk and inflated."""
    import pydicom

    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"{source}: {path.name} is {size / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB "
            f"its slice can take; refused before reading it (an element claiming gigabytes?)."
        )
    meta = pydicom.filereader.read_file_meta_info(path)
    if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
        dataset = _read_deflated(path, meta, max_bytes=max_bytes, pixels=pixels, source=source)
    else:
        dataset = pydicom.dcmread(path, defer_size=DEFER_BYTES, stop_before_pixels=not pixels)
    return converted(dataset)


def converted(dataset):
    """``dataset`` with every loaded top-level value converted now, so that a value pydicom cannot convert
    (a UL of 10 bytes, an unknown character set) fails here, as an unreadable file, not at a later use.
    Deferred (large) values stay on disk."""
    for tag in list(dataset.keys()):
        if dataset.get_item(tag).value is not None or tag == 0x7FE00010:
            dataset[tag]
    return dataset


def _read_deflated(path: Path, meta, *, max_bytes: int, pixels: bool, source: str):
    """PS3.5 A.5: everything after the file meta is one raw deflate stream; inflate at most ``max_bytes``."""
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.tag import Tag

    if "FileMetaInformationGroupLength" not in meta:
        raise InputError(f"{source}: {path.name} is deflated but its file meta has no group length; refused.")
    start = 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)
    with open(path, "rb") as handle:
        preamble = handle.read(128)
        handle.seek(start)
        zipped = handle.read()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(zipped, max_bytes)
    except zlib.error as error:
        raise InputError(f"{source}: {path.name}: its deflated dataset is damaged ({error}).") from error
    if inflater.unconsumed_tail:
        raise InputError(
            f"{source}: {path.name}: its deflated dataset inflates beyond {max_bytes / 2**20:.0f} MiB "
            f"({len(zipped) / 2**20:.1f} MiB on disk), more than its slice can take; refused while "
            f"inflating (a zip bomb?)."
        )
    if not inflater.eof:
        raise InputError(
            f"{source}: {path.name}: its deflated dataset ends before the end of its deflate stream (truncated)."
        )
    stop = None if pixels else (lambda tag, vr, length: tag == Tag(0x7FE0, 0x0010))
    dataset = read_dataset(
        DicomBytesIO(body),
        is_implicit_VR=False,
        is_little_endian=True,
        defer_size=None if pixels else DEFER_BYTES,
        stop_when=stop,
    )
    return FileDataset(
        str(path), dataset, preamble=preamble, file_meta=meta, is_implicit_VR=False, is_little_endian=True
    )


def check_declared_frame(dataset, path: Path, source: str) -> None:
    """An encapsulated frame's codestream must declare Rows x Columns x SamplesPerPixel (before decoding)."""
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if syntax not in ENCAPSULATED_JPEG + ENCAPSULATED_J2K:
        return
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    except (StopIteration, ValueError, KeyError, struct.error) as error:
        raise InputError(
            f"{source}: {path.name}: its encapsulated pixel data holds no readable frame ({error or 'empty'})."
        ) from error
    declared = _jpeg_size(frame) if syntax in ENCAPSULATED_JPEG else _j2k_size(frame)
    expected = (int(dataset.Rows), int(dataset.Columns), int(dataset.get("SamplesPerPixel", 1) or 1))
    if declared != expected:
        shown = "no frame header" if declared is None else "%d x %d x %d" % declared
        raise InputError(
            f"{source}: {path.name}: its compressed frame declares {shown} (rows x columns x samples) "
            f"but the header says {'%d x %d x %d' % expected}; refused before decoding (the decoder "
            f"would allocate what the codestream claims)."
        )


def _jpeg_size(frame: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG or JPEG-LS start-of-frame segment; None if none comes first."""
    position = 2 if frame[:2] == b"\xff\xd8" else None
    while position is not None and position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return None
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack(">H", frame[position + 2 : position + 4])[0]
        if marker in _SOF_MARKERS and position + 10 <= len(frame):
            rows, columns = struct.unpack(">HH", frame[position + 5 : position + 9])
            return rows, columns, frame[position + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


def _j2k_size(frame: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG 2000 SIZ marker (codestream or JP2 file)."""
    at = frame.find(b"\xff\x4f\xff\x51")
    if at < 0 or at + 42 > len(frame):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", frame[at + 8 : at + 24])
    components = struct.unpack(">H", frame[at + 40 : at + 42])[0]
    return ysiz - yosiz, xsiz - xosiz, components
