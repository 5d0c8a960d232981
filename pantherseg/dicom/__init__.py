"""DICOM in, DICOM-SEG and RTSTRUCT out: local features behind the ``pantherseg[dicom]`` extra.

The grand-challenge path reads and writes ``.mha`` only and never imports this package's heavy
modules: this file imports nothing but the standard library, so ``collect_inputs`` can ask whether
a folder holds DICOM files without loading pydicom.

Modules, one job each:
- ``geometry``: a stack of slices -> origin, spacing and direction, or a refusal saying what was found;
- ``series``: find the series in a folder, choose one, read it into the engine's ``Volume``;
- ``seg``: the mask as a binary DICOM-SEG (highdicom);
- ``rtstruct``: the mask as an RT Structure Set (a small writer on pydicom);
- ``writing``: atomic writes of DICOM objects.
See docs/dicom.md.
"""

from __future__ import annotations

from pathlib import Path

DICOM_OUTPUT_FORMATS = ("dicom-seg", "rtstruct")
INSTALL_HINT = "pip install 'pantherseg[dicom]' (pydicom, highdicom, pylibjpeg, pyjpegls)"


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``. Reads 132 bytes, nothing else."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM Part 10 file under ``folder`` (any depth, hidden entries skipped), sorted."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_file() and is_dicom_file(path):
            found.append(path)
    return found


def is_dicom_folder(path: Path) -> bool:
    """A folder holding at least one DICOM Part 10 file (at any depth)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for candidate in path.rglob("*"):
        if candidate.is_file() and not candidate.name.startswith(".") and is_dicom_file(candidate):
            return True
    return False
