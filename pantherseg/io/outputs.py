"""The formats a mask can be written in, and writing them: ``--output-format``.

``mha`` and ``nii.gz`` hold the uint8 {0, 1} mask with the input's geometry (SimpleITK);
``dicom-seg``, ``rtstruct`` and ``sr`` need a DICOM series as input, since they reference its images
(pantherseg.dicom, the ``pantherseg[dicom]`` extra, imported only when asked for); ``sr`` (the tumour
volume as a TID 1500 measurement report) references the DICOM-SEG's segment, so it needs
``dicom-seg`` in the same call and is written after it; ``uncertainty``
is written beside a mask: the per-voxel normalised entropy of the ensemble's mean probabilities,
float32 in [0, 1], with the input's geometry (docs/quality.md). Every file is written atomically.
File names: ``<stem>.mha``, ``<stem>.nii.gz``, ``<stem>.seg.dcm``, ``<stem>.rtstruct.dcm``,
``<stem>.sr.dcm``, ``<stem>.uncertainty.mha``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from pantherseg.errors import InputError
from pantherseg.io.formats import DICOM_FORMATS, MAP_FORMATS, OUTPUT_FORMATS, SUFFIXES
from pantherseg.io.images import mask_image, write_image_atomically


def output_path(output_dir: Path, stem: str, output_format: str) -> Path:
    return Path(output_dir) / f"{stem}{SUFFIXES[output_format]}"


def output_paths(output_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Where ``formats`` write for ``stem``, in order (the first is the mask)."""
    return [output_path(output_dir, stem, output_format) for output_format in formats]


def check_output_formats(formats: Sequence[str], inputs: Sequence[Path]) -> tuple[str, ...]:
    """Known formats, no repeats; the DICOM ones only for DICOM folder inputs. Raises InputError."""
    formats = tuple(dict.fromkeys(formats))  # keeps the order, drops repeats
    if not formats:
        raise InputError(f"--output-format needs at least one of {', '.join(OUTPUT_FORMATS)}.")
    unknown = [f for f in formats if f not in OUTPUT_FORMATS]
    if unknown:
        raise InputError(f"Unknown output format(s) {unknown}; choose from {', '.join(OUTPUT_FORMATS)}.")
    masks = [f for f in formats if f not in MAP_FORMATS]
    if not masks:
        raise InputError(
            f"{', '.join(formats)} is written beside a mask; add one of "
            f"{', '.join(f for f in OUTPUT_FORMATS if f not in MAP_FORMATS)}."
        )
    formats = (*masks, *(f for f in formats if f in MAP_FORMATS))  # the first output is always a mask
    if any(f in DICOM_FORMATS for f in formats):
        import importlib.util

        from pantherseg.dicom import INSTALL_HINT, is_dicom_folder

        missing = [name for name in ("pydicom", "highdicom", "skimage") if importlib.util.find_spec(name) is None]
        if missing:
            raise InputError(f"dicom-seg and rtstruct need {', '.join(missing)}: {INSTALL_HINT}.")

        not_dicom = [p.name for p in inputs if not is_dicom_folder(p)]
        if not_dicom:
            raise InputError(
                f"dicom-seg and rtstruct reference the images of a DICOM series, but {not_dicom} "
                f"{'is' if len(not_dicom) == 1 else 'are'} not a DICOM folder; use mha or nii.gz there."
            )
        from pantherseg.dicom.writing import order_dicom_formats

        formats = order_dicom_formats(formats)  # sr needs dicom-seg, written before it
    return formats


class WrittenFiles:
    """The files one case writes, each named (:meth:`add`) before it is written, so that a failure can
    remove them all, also one that was only half written when the failure came."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, path: Path | str) -> Path:
        path = Path(path)
        self.paths.append(path)
        return path


@contextmanager
def outputs_all_or_none() -> Iterator[WrittenFiles]:
    """``with outputs_all_or_none() as written:`` a case's outputs exist together or not at all: if the
    block raises (or SIGTERM interrupts it), every file named in ``written`` is removed, then the error
    goes on."""
    written = WrittenFiles()
    try:
        yield written
    except BaseException:  # SIGTERM arrives as KeyboardInterrupt: the half-written case goes too
        for path in reversed(written.paths):
            path.unlink(missing_ok=True)
        raise


def write_outputs(
    formats: Sequence[str],
    mask_zyx: np.ndarray,
    reference,
    output_dir: Path,
    stem: str,
    *,
    written: WrittenFiles,
    dicom_series=None,
    algorithm=None,
    roi_name: str | None = None,
    voxel_mm3: float | None = None,
    uncertainty: Callable[[], np.ndarray] | None = None,
) -> tuple[list[Path], list[str]]:
    """Write ``mask_zyx`` in each of ``formats`` (each path added to ``written`` first); returns the paths
    (in that order) and notes for the run report.

    ``uncertainty``: gives the (z, y, x) float32 map the ``uncertainty`` format writes; called only
    when that format is asked for. ``voxel_mm3``: the voxel volume the SR's tumour volume is counted in
    (the run report's). Call it inside :func:`outputs_all_or_none`.
    """
    paths, notes = [], []
    dicom_writer = None
    for output_format in formats:
        path = written.add(output_path(output_dir, stem, output_format))
        if output_format in DICOM_FORMATS:
            if dicom_series is None:
                raise InputError(f"{output_format} needs a DICOM series as input.")
            if dicom_writer is None:  # one per case: the SR references the SEG it wrote before
                from pantherseg.dicom.writing import DicomWriter

                dicom_writer = DicomWriter(
                    mask_zyx, dicom_series.datasets, algorithm=algorithm, roi_name=roi_name, voxel_mm3=voxel_mm3
                )
            path, more = dicom_writer.write(output_format, path)
            notes.extend(more)
        elif output_format == "uncertainty":
            if uncertainty is None:
                raise ValueError("the uncertainty format needs the ensemble's map")
            write_image_atomically(float_image(uncertainty(), reference), path)
        else:
            write_image_atomically(mask_image(mask_zyx, reference), path)
        paths.append(path)
    return paths, notes


def float_image(map_zyx: np.ndarray, reference) -> object:
    """A float32 SimpleITK image of ``map_zyx`` with the reference's size, spacing, origin and direction."""
    import SimpleITK as sitk

    expected = tuple(reversed(reference.GetSize()))
    if map_zyx.shape != expected:
        raise ValueError(f"map shape {map_zyx.shape} (z,y,x) does not match the image {expected}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(map_zyx, dtype=np.float32))
    image.CopyInformation(reference)
    return image
