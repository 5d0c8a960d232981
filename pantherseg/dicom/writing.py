"""Write the mask as DICOM-SEG, RTSTRUCT or SR next to the other outputs, atomically.

A DICOM object is first written to a hidden temporary file in the target folder, synced, and
renamed over the target only when complete; on any error the temporary file is removed, so a
reader never sees a partial object.

One case's objects are written by one :class:`DicomWriter`, in the order asked: the SR references
the DICOM-SEG's tumour segment, so it takes the SEG this writer wrote before it.
:func:`order_dicom_formats` (called when the formats are checked, before any model loads) refuses
``sr`` without ``dicom-seg`` and puts ``dicom-seg`` first: an SR that referenced a SEG nobody stored
would point at nothing (docs/dicom.md).

What the source must hold is checked before the prediction (``sources.check_sources``); should the
library still refuse to build the object (highdicom raises ValueError, AttributeError... for what it
finds non-conformant), the case fails with one ``OutputError`` line and the run goes on with its next
case, instead of stopping on a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from pantherseg.dicom.seg import Algorithm
from pantherseg.errors import InputError, OutputError, PantherError
from pantherseg.io.files import atomic_file

log = logging.getLogger(__name__)

SR_FORMAT = "sr"
SEG_FORMAT = "dicom-seg"


def order_dicom_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """``formats`` with ``dicom-seg`` before ``sr``; InputError if ``sr`` comes without ``dicom-seg``."""
    formats = tuple(formats)
    if SR_FORMAT not in formats:
        return formats
    if SEG_FORMAT not in formats:
        raise InputError(
            "--output-format sr references the tumour segment of the case's DICOM-SEG; ask for "
            "both: --output-format dicom-seg sr (found: " + " ".join(formats) + ")."
        )
    rest = [f for f in formats if f != SR_FORMAT]
    return (*rest[: rest.index(SEG_FORMAT) + 1], SR_FORMAT, *rest[rest.index(SEG_FORMAT) + 1 :])


def save_atomically(dataset, path: Path) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


class DicomWriter:
    """The DICOM objects of one case's mask (z index k = ``datasets[k]``), each written with :meth:`write`.

    ``voxel_mm3``: the voxel volume the run report uses for ``tumor_volume_mm3``, so that the SR's
    volume is the report's (default: from the datasets' headers)."""

    def __init__(
        self,
        mask_zyx: np.ndarray,
        datasets: list,
        *,
        algorithm: Algorithm,
        roi_name: str | None = None,
        voxel_mm3: float | None = None,
    ):
        self.mask_zyx, self.datasets, self.algorithm = mask_zyx, datasets, algorithm
        self.roi_name, self.voxel_mm3 = roi_name, voxel_mm3
        self.segmentation = None  # the SEG written by this writer, which the SR references

    def write(self, output_format: str, path: Path) -> tuple[Path, list[str]]:
        """Build and write one object; returns its path and notes for the run report."""
        path = Path(path)
        try:
            dataset, notes = self._build(output_format)
        except PantherError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
            raise OutputError(
                f"{path.name}: the {output_format} object could not be built from the source series: "
                f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            ) from error
        for note in notes:
            log.warning("%s: %s", path.name, note)
        try:
            save_atomically(dataset, path)
        except (OSError, ValueError) as error:  # ValueError: pydicom refusing a value while encoding it
            raise OutputError(f"Cannot write {path}: {getattr(error, 'strerror', None) or error}.") from error
        if output_format == SEG_FORMAT:
            self.segmentation = dataset
        return path, notes

    def _build(self, output_format: str) -> tuple[object, list[str]]:
        notes = []
        empty = not self.mask_zyx.any()
        if output_format == SEG_FORMAT:
            from pantherseg.dicom.seg import build_seg

            dataset = build_seg(self.mask_zyx, self.datasets, algorithm=self.algorithm)
            if empty:
                notes.append("empty mask: the DICOM-SEG holds the tumour segment with every frame empty")
        elif output_format == "rtstruct":
            from pantherseg.dicom.rtstruct import DEFAULT_ROI_NAME, build_rtstruct

            dataset = build_rtstruct(
                self.mask_zyx, self.datasets, algorithm=self.algorithm, roi_name=self.roi_name or DEFAULT_ROI_NAME
            )
            if empty:
                notes.append("empty mask: the RTSTRUCT declares the ROI with no contours")
        elif output_format == SR_FORMAT:
            if self.segmentation is None:
                raise ValueError("the SR references the DICOM-SEG's segment: write dicom-seg first")
            from pantherseg.dicom.sr import build_sr

            dataset = build_sr(
                self.mask_zyx, self.datasets, self.segmentation, algorithm=self.algorithm, voxel_mm3=self.voxel_mm3
            )
            if empty:
                notes.append("empty mask: the SR reports a tumour volume of 0 ml for the empty segment")
        else:
            raise ValueError(f"not a DICOM output format: {output_format!r}")
        return dataset, notes


def write_dicom_output(
    output_format: str,
    mask_zyx: np.ndarray,
    datasets: list,
    path: Path,
    *,
    algorithm: Algorithm,
    roi_name: str | None = None,
) -> tuple[Path, list[str]]:
    """One DICOM-SEG or RTSTRUCT on its own (an SR needs the :class:`DicomWriter` that wrote its SEG)."""
    return DicomWriter(mask_zyx, datasets, algorithm=algorithm, roi_name=roi_name).write(output_format, path)
