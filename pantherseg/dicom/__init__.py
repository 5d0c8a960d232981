"""DICOM in, DICOM-SEG, RTSTRUCT and SR out: local features behind the ``pantherseg[dicom]`` extra.

The grand-challenge path reads and writes ``.mha`` only and never imports this package's heavy
modules: this file imports nothing but the standard library, so ``collect_inputs`` can ask whether
a folder holds DICOM files without loading pydicom.

Modules, one job each:
- ``geometry``: a stack of slices -> origin, spacing and direction, or a refusal saying what was found;
- ``series``: find the series in a folder, choose one, read it into the engine's ``Volume``;
- ``seg``: the mask as a binary DICOM-SEG (highdicom);
- ``rtstruct``: the mask as an RT Structure Set (highdicom's SOPClass base, the RT modules built here);
- ``sr``: the tumour volume as a DICOM SR measurement report (TID 1500, highdicom.sr), referencing the
  DICOM-SEG's segment and the source series;
- ``writing``: one case's DICOM objects, written atomically in order (the SR after its SEG).
See docs/dicom.md.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_QUICK_DEPTH = 16
INSTALL_HINT = "pip install 'pantherseg[dicom]' (pydicom, highdicom, pylibjpeg, pyjpegls)"


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``. Reads 132 bytes, nothing else."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM Part 10 regular file under ``folder`` (hidden entries skipped, links not followed), sorted.

    A quick look only (how ``collect_inputs`` recognises a DICOM folder); ``series.scan_folder`` is the
    bounded walk that refuses links out of the folder, FIFOs and devices with a line."""
    return sorted(_dicom_files(Path(folder)))


def _dicom_files(folder: Path):
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(root, d)))
        if len(Path(root).relative_to(folder).parts) >= MAX_QUICK_DEPTH:
            dirs[:] = []
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and _regular(path) and is_dicom_file(path):
                yield path


def _regular(path: Path) -> bool:
    """A regular file, links followed (a link out is refused later, with a line); a FIFO is never opened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """A folder holding at least one DICOM Part 10 regular file (links to folders are not followed)."""
    path = Path(path)
    return path.is_dir() and next(_dicom_files(path), None) is not None
