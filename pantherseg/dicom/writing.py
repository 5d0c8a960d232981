"""Write the mask as DICOM-SEG or RTSTRUCT next to the other outputs, atomically.

A DICOM object is first written to a hidden temporary file in the target folder, synced, and
renamed over the target only when complete; on any error the temporary file is removed, so a
reader never sees a partial object.

What the source must hold is checked before the prediction (``sources.check_sources``); should the
library still refuse to build the object (highdicom raises ValueError, AttributeError... for what it
finds non-conformant), the case fails with one ``OutputError`` line and the run goes on with its next
case, instead of stopping on a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pantherseg.dicom.seg import Algorithm
from pantherseg.errors import OutputError, PantherError
from pantherseg.io.files import atomic_file

log = logging.getLogger(__name__)

def save_atomically(dataset, path: Path) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


def write_dicom_output(output_format: str, mask_zyx: np.ndarray, datasets: list, path: Path, *,
                       algorithm: Algorithm, roi_name: str | None = None) -> tuple[Path, list[str]]:
    """Build and write one DICOM object of ``mask_zyx``; returns its path and notes for the run report."""
    try:
        dataset, notes = _build(output_format, mask_zyx, datasets, algorithm=algorithm, roi_name=roi_name)
    except PantherError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        raise OutputError(f"{path.name}: the {output_format} object could not be built from the source series: "
                          f"{type(error).__name__}: {' '.join(str(error).split())[:300]}") from None
    for note in notes:
        log.warning("%s: %s", path.name, note)
    try:
        return save_atomically(dataset, path), notes
    except (OSError, ValueError) as error:  # ValueError: pydicom refusing a value while encoding it
        raise OutputError(f"Cannot write {path}: {getattr(error, 'strerror', None) or error}.") from None


def _build(output_format: str, mask_zyx: np.ndarray, datasets: list, *, algorithm: Algorithm,
           roi_name: str | None) -> tuple[object, list[str]]:
    notes = []
    empty = not mask_zyx.any()
    if output_format == "dicom-seg":
        from pantherseg.dicom.seg import build_seg

        dataset = build_seg(mask_zyx, datasets, algorithm=algorithm)
        if empty:
            notes.append("empty mask: the DICOM-SEG holds the tumour segment with every frame empty")
    elif output_format == "rtstruct":
        from pantherseg.dicom.rtstruct import DEFAULT_ROI_NAME, build_rtstruct

        dataset = build_rtstruct(mask_zyx, datasets, algorithm=algorithm, roi_name=roi_name or DEFAULT_ROI_NAME)
        if empty:
            notes.append("empty mask: the RTSTRUCT declares the ROI with no contours")
    else:
        raise ValueError(f"not a DICOM output format: {output_format!r}")
    return dataset, notes
