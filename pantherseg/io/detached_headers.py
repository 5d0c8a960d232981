"""Image headers that name another file for their voxels: checked as text before SimpleITK reads them.

A MetaImage header (``.mha``/``.mhd``) ends with ``ElementDataFile = <file>`` and an NRRD header may
say ``data file: <file>``; ITK opens whatever is named, relative to the header or absolute. An image
from an untrusted upload could so make the run read ``/etc/shadow``-like files as voxels, or block
forever on a FIFO (a probe blocked 150 s, outside the time budget). So, before ITK sees the file:

- the header text is read with a bound (:data:`MAX_HEADER_BYTES`) and parsed here;
- a named data file must resolve (links followed) to a path inside the image's own folder, and be a
  regular file when it exists (not a FIFO, device, socket or folder);
- multi-file forms (MetaImage ``LIST`` and ``%d`` patterns, NRRD ``LIST``/``%``) are refused.

MetaImage headers are also checked field by field (:data:`METAIMAGE_FIELDS`) before ITK parses them:
ITK's MetaIO trusts ``NDims`` to size fixed arrays (``NDims = 32768`` crashes the process, found by
``tests/io/test_image_header_fuzz.py``), so counts and ranges are enforced here first.

``LOCAL`` (voxels after the header, the usual ``.mha``) needs nothing. A missing data file is
reported by :func:`require_data_file` only after the header's size checks, so an impossible image
is refused for its size first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pantherseg.errors import InputError

MAX_HEADER_BYTES = 64 * 1024


# MetaImage fields ITK sizes arrays or reads bytes by: (kind, values: an int or "NDims", low, high).
METAIMAGE_FIELDS = {
    "ndims": (int, 1, 1, 8),
    "dimsize": (int, "NDims", 1, 2**31 - 1),
    "elementspacing": (float, "NDims", -1e300, 1e300),
    "elementsize": (float, "NDims", -1e300, 1e300),
    "offset": (float, "NDims", -1e300, 1e300),
    "position": (float, "NDims", -1e300, 1e300),
    "origin": (float, "NDims", -1e300, 1e300),
    "transformmatrix": (float, "NDims^2", -1e300, 1e300),
    "rotation": (float, "NDims^2", -1e300, 1e300),
    "orientation": (float, "NDims^2", -1e300, 1e300),
    "elementnumberofchannels": (int, 1, 1, 64),
    "compresseddatasize": (int, 1, 0, 2**63 - 1),
    "headersize": (int, 1, -1, 2**31 - 1),
}


def check_metaimage_header(path: Path) -> None:
    """Raise InputError unless every field of :data:`METAIMAGE_FIELDS` in ``path``'s header has the right
    count of numbers within range; ``NDims`` first (the others are counted by it)."""
    fields = {}
    for line in _header_lines(path, lambda line: line.split("=", 1)[0].strip().lower() == "elementdatafile"):
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() in METAIMAGE_FIELDS:
            fields[key.strip().lower()] = value.split()
    if "ndims" not in fields:
        return  # not a MetaImage header ITK would accept; it says so itself
    ndims = _numbers(path, "NDims", fields["ndims"], METAIMAGE_FIELDS["ndims"], 1)[0]
    for key, rule in METAIMAGE_FIELDS.items():
        if key in fields and key != "ndims":
            count = {"NDims": ndims, "NDims^2": ndims * ndims}.get(rule[1], rule[1])
            _numbers(path, key, fields[key], rule, count)


def _numbers(path: Path, key: str, words: list[str], rule, count: int) -> list:
    kind, _, low, high = rule
    try:
        values = [kind(word) for word in words]
    except ValueError:
        values = None
    if values is None or len(values) != count or not all(low <= v <= high for v in values):
        shown = " ".join(words[:12])[:120] or "nothing"
        raise InputError(
            f"{path.name}: the MetaImage header's {key} is {shown!r}; expected {count} "
            f"{'integer' if kind is int else 'number'}(s) in [{low:g}, {high:g}]. Not a valid image "
            f"header; refused before it is parsed."
        )
    return values


def data_file(path: Path) -> Path | None:
    """The file holding ``path``'s voxels if its header names another one, checked; None otherwise.

    Raises InputError for a data file outside the image's folder, one that is not a regular file,
    a multi-file list or pattern, or a header that does not end within MAX_HEADER_BYTES.
    """
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        check_metaimage_header(path)
        target = _metaimage_data_file(path)
    elif name.endswith(".nrrd") or name.endswith(".nhdr"):
        target = _nrrd_data_file(path)
    else:
        return None
    if target is None:
        return None
    if target.upper() == "LIST" or "%" in target or (" " in target.strip() and _looks_like_pattern(target)):
        raise InputError(
            f"{path.name}: the header names a list or pattern of data files ({target[:80]!r}); "
            f"only one file holding all voxels is supported."
        )
    folder = path.parent.resolve()
    resolved = (path.parent / target).resolve()
    if folder not in resolved.parents:
        raise InputError(
            f"{path.name}: the header's data file {target[:200]!r} lies outside the image's folder "
            f"{folder}; refused (a header must not make the run read other files)."
        )
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        return resolved
    except OSError as error:
        raise InputError(
            f"{path.name}: the header's data file {resolved.name} cannot be inspected: {error.strerror}."
        ) from error
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{path.name}: the header's data file {resolved.name} is not a regular file (a FIFO, "
            f"device, socket or folder); refused before reading it."
        )
    return resolved


def require_data_file(path: Path, target: Path | None) -> None:
    """Raise InputError if the data file named by the header does not exist."""
    if target is not None and not target.exists():
        raise InputError(
            f"{path.name}: the header's data file {target.name} was not found next to it; "
            f"copy the voxel file beside the header."
        )


def metaimage_fields(path: Path) -> tuple[dict[str, str], int]:
    """A MetaImage header's fields (lower-case keys, raw values) and the byte offset where its voxels
    would start if ``LOCAL`` (just after the ``ElementDataFile`` line)."""
    fields, offset = {}, 0
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 1)
    for raw in head.split(b"\n"):
        offset += len(raw) + 1
        key, sep, value = raw.decode("latin-1").partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            return fields, offset
    return fields, len(head)


def _header_lines(path: Path, stop) -> list[str]:
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 1)
    lines = []
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").rstrip("\r")
        lines.append(line)
        if stop(line):
            return lines
    if len(head) > MAX_HEADER_BYTES:
        raise InputError(
            f"{path.name}: the image header does not end within its first {MAX_HEADER_BYTES // 1024} "
            f"KiB; not a valid image header."
        )
    return lines


def _metaimage_data_file(path: Path) -> str | None:
    def is_last(line: str) -> bool:
        return line.split("=", 1)[0].strip().lower() == "elementdatafile"

    for line in _header_lines(path, is_last):
        if is_last(line):
            value = line.split("=", 1)[1].strip() if "=" in line else ""
            return None if value.upper() == "LOCAL" else value
    return None  # no ElementDataFile: ITK refuses the file itself


def _nrrd_data_file(path: Path) -> str | None:
    found = None
    for line in _header_lines(path, lambda line: line == ""):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("data file", "datafile"):
            found = value.strip().lstrip("=").strip()
    return found


def _looks_like_pattern(value: str) -> bool:
    """NRRD and MetaImage patterns are '<format> <min> <max> <step>'."""
    parts = value.split()
    return len(parts) >= 3 and all(p.lstrip("-").isdigit() for p in parts[1:])
