"""Find the image series in a DICOM folder, choose one, and read it into the engine's ``Volume``.

Rules (docs/dicom.md):
- Every file under the folder is looked at. Files that are not DICOM Part 10, a DICOMDIR, and
  DICOM objects without an image plane (SEG, RTSTRUCT, reports, presentation states...) are
  skipped and counted in a note; a series is a SeriesInstanceUID whose files are images.
- One image series: it is used. Several: the one given by ``series_uid``; else the only MR series;
  else a refusal listing every series (UID, description, modality, number of files).
- The slices must form one regular grid (``geometry.stack_geometry``): mixed orientations, gantry
  tilt, irregular spacing and missing slices are refused, never resampled.
- Pixel data: uncompressed, RLE, JPEG (libjpeg), JPEG-LS (pyjpegls), JPEG 2000 and HTJ2K (openjpeg)
  transfer syntaxes are decoded; any other is refused before any pixel is decoded. Stored values go
  through RescaleSlope / RescaleIntercept to float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pantherseg.dicom import INSTALL_HINT, is_dicom_file
from pantherseg.dicom.attributes import header_values
from pantherseg.dicom.geometry import MIN_SLICES, SliceGeometry, stack_geometry
from pantherseg.dicom.reading import (
    DEFER_BYTES,
    check_declared_frame,
    converted,
    folder_files,
    max_file_bytes,
    read_dicom,
    unreadable_errors,
)
from pantherseg.dicom.sources import check_sources
from pantherseg.errors import InputError
from pantherseg.io.host_memory import MAX_VOXELS
from pantherseg.io.images import Volume, volume_from_image

log = logging.getLogger(__name__)

DECODABLE_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    # High-Throughput JPEG 2000 (openjpeg): what AWS HealthImaging, grand-challenge's image store, serves.
    "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K Lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
}
# The largest slice a series may hold: MAX_VOXELS over the fewest slices, 64-bit samples.
MAX_SLICE_PIXEL_BYTES = (MAX_VOXELS // MIN_SLICES) * 8
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Header tags the scan needs; the pixel data is read only for the chosen series.
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


@dataclass
class SeriesSummary:
    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)
    headers: list = field(default_factory=list, repr=False)  # pydicom Datasets without pixel data

    def describe(self) -> str:
        return f"{self.uid} '{self.description}' ({self.modality or 'no modality'}, {len(self.files)} files)"


@dataclass
class DicomSeries:
    """The chosen series: its datasets in z order (index k = the volume's slice k) and the volume."""

    folder: Path
    uid: str
    description: str
    datasets: list  # pydicom Datasets, sorted along the slice normal
    volume: Volume
    notes: list[str] = field(default_factory=list)


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise InputError(f"Reading DICOM needs the dicom extra: {INSTALL_HINT}.") from None
    return pydicom


def scan_folder(folder: Path) -> tuple[dict[str, SeriesSummary], list[str]]:
    """The image series under ``folder`` by SeriesInstanceUID, and notes on what was skipped.

    Files are found by ``reading.folder_files`` (links out, FIFOs and devices refused) and their
    headers read within ``reading.max_file_bytes`` of the largest slice a series may hold."""
    pydicom = _pydicom()
    folder = Path(folder)
    series: dict[str, SeriesSummary] = {}
    skipped: dict[str, int] = {}
    paths, notes = folder_files(folder)
    bound = max_file_bytes(MAX_SLICE_PIXEL_BYTES)
    for path in paths:
        try:
            header = (
                read_dicom(path, max_bytes=bound, pixels=False, source=folder.name)
                if is_dicom_file(path)
                else converted(pydicom.dcmread(path, stop_before_pixels=True, defer_size=DEFER_BYTES))
            )
            kind = _non_image_kind(header)
        except unreadable_errors():
            skipped["not DICOM or unreadable"] = skipped.get("not DICOM or unreadable", 0) + 1
            continue
        if kind is not None:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid:
            skipped["image without SeriesInstanceUID"] = skipped.get("image without SeriesInstanceUID", 0) + 1
            continue
        entry = series.setdefault(
            uid,
            SeriesSummary(
                uid=uid, description=str(header.get("SeriesDescription", "")), modality=str(header.get("Modality", ""))
            ),
        )
        entry.files.append(path)
        entry.headers.append(header)
    notes += [f"skipped {count} file(s): {kind}" for kind, count in sorted(skipped.items())]
    if not series:
        found = "; ".join(notes) or "no files"
        raise InputError(f"No DICOM image series in {folder} ({len(paths)} file(s) looked at; {found}).")
    return series, notes


def _non_image_kind(header) -> str | None:
    """Why a DICOM object is not a slice of an image series, or None if it is one."""
    meta = getattr(header, "file_meta", None)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in header:
        return "DICOMDIR"
    modality = str(header.get("Modality", ""))
    if modality in ("SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG"):
        return f"{modality} object (not an image series)"
    if _frames(header) > 1:
        return "multi-frame image (enhanced or 4D objects are not supported; export classic single-frame slices)"
    if any(tag not in header for tag in _GEOMETRY_TAGS):
        return "DICOM object without an image plane (no position, orientation or pixel spacing)"
    return None


def _frames(header) -> int:
    """NumberOfFrames as the scan sees it; a value that is not a number is left to the attribute table."""
    try:
        return int(str(header.get("NumberOfFrames", 1) or 1).strip())
    except ValueError:
        return 1


def choose_series(series: dict[str, SeriesSummary], folder: Path, series_uid: str | None = None) -> SeriesSummary:
    """The series to segment (rules in the module docstring)."""
    listing = "; ".join(s.describe() for s in series.values())
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"No image series with SeriesInstanceUID {series_uid} in {folder}; found: {listing}.")
        return series[series_uid]
    if len(series) == 1:
        return next(iter(series.values()))
    mr = [s for s in series.values() if s.modality == "MR"]
    if len(mr) == 1:
        log.info("%s: %d image series; using the only MR series %s", folder, len(series), mr[0].describe())
        return mr[0]
    raise InputError(f"{len(series)} image series in {folder}; choose one with --series-uid: {listing}.")


def read_series(folder: Path | str, *, series_uid: str | None = None) -> DicomSeries:
    """Find, choose and read one series of ``folder``; the volume has the exact DICOM geometry."""
    import SimpleITK as sitk

    from pantherseg.io.host_memory import check_image_fits, check_voxel_count

    _pydicom()  # the install hint, before anything is read, when the extra is missing
    folder = Path(folder)
    series, notes = scan_folder(folder)
    chosen = choose_series(series, folder, series_uid)
    source = f"{folder.name} (series {chosen.uid})"
    if len(series) > 1:
        notes.append(f"series {chosen.uid} chosen among {len(series)}")

    values = [header_values(h, path, source) for h, path in zip(chosen.headers, chosen.files)]
    geometry = stack_geometry([_slice_geometry(v) for v in values], source=source)
    _check_pixels_decodable(chosen.headers, values[0], source)
    check_voxel_count(geometry.size_xyz, source=source)  # before any pixel is decoded, like an .mha header
    pixel_bytes = _native_bytes(values[0])
    # Per voxel: the stored value kept in its dataset, the float32 plane, the stacked array and ITK's copy.
    check_image_fits(
        geometry.size_xyz, -(-pixel_bytes // (geometry.size_xyz[0] * geometry.size_xyz[1])) + 8, source=source
    )

    datasets, planes = [], []
    for index in geometry.order:
        path = chosen.files[index]
        try:
            dataset = read_dicom(path, max_bytes=max_file_bytes(pixel_bytes), pixels=True, source=source)
        except unreadable_errors() as error:
            raise InputError(
                f"{source}: {path.name} cannot be read (truncated or corrupt?): {' '.join(str(error).split())[:200]}"
            ) from error
        check_declared_frame(dataset, path, source)
        planes.append(_decode(dataset, path, source, values[index]))
        datasets.append(dataset)
    array = np.stack(planes)  # (z, y, x): z along the slice normal, y down the columns, x along the rows
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(geometry.origin_xyz)
    image.SetSpacing(geometry.spacing_xyz)
    image.SetDirection(geometry.direction)
    volume = volume_from_image(image, source=source)
    volume.notes.extend(notes)
    log.info(
        "%s: %d slices, %s x %s x %s voxels at %s mm",
        source,
        len(datasets),
        *geometry.size_xyz,
        tuple(round(s, 4) for s in geometry.spacing_xyz),
    )
    return DicomSeries(
        folder=folder, uid=chosen.uid, description=chosen.description, datasets=datasets, volume=volume, notes=notes
    )


def check_dicom_sources(series: DicomSeries, formats, *, roi_name: str | None = None) -> None:
    """Before the prediction: what a requested DICOM-SEG or RTSTRUCT needs of ``series`` (``sources.check_sources``)."""
    check_sources(series.datasets, formats, roi_name=roi_name, source=f"{series.folder.name} (series {series.uid})")


def _slice_geometry(values: dict[str, tuple]) -> SliceGeometry:
    return SliceGeometry(
        position=values["ImagePositionPatient"],
        orientation=values["ImageOrientationPatient"],
        pixel_spacing=values["PixelSpacing"],
        rows=values["Rows"][0],
        columns=values["Columns"][0],
    )


def _native_bytes(values: dict[str, tuple]) -> int:
    """What one decoded slice takes: Rows x Columns x SamplesPerPixel x BitsAllocated (rounded up to bytes)."""
    bits = values["Rows"][0] * values["Columns"][0] * values["SamplesPerPixel"][0] * values["BitsAllocated"][0]
    return (bits + 7) // 8


def _check_pixels_decodable(headers: list, values: dict[str, tuple], source: str) -> None:
    syntaxes = sorted({str(h.file_meta.get("TransferSyntaxUID", "")) for h in headers})
    refused = [uid for uid in syntaxes if uid not in DECODABLE_TRANSFER_SYNTAXES]
    if refused:
        from pydicom.uid import UID

        names = ", ".join(f"{UID(uid).name} ({uid})" if uid else "none" for uid in refused)
        raise InputError(
            f"{source}: transfer syntax {names} is not supported; supported are uncompressed, RLE, "
            f"JPEG, JPEG-LS, JPEG 2000 and HTJ2K. Decompress the series first (e.g. dcmdjpeg, gdcmconv --raw)."
        )
    if values["SamplesPerPixel"][0] != 1:  # the attribute table allows 1 only; kept for the message
        raise InputError(
            f"{source}: expected greyscale slices, found {values['SamplesPerPixel'][0]} samples per pixel."
        )


def _decode(dataset, path: Path, source: str, values: dict[str, tuple]) -> np.ndarray:
    """One slice's stored values -> float32 with the modality rescale applied."""
    try:
        stored = dataset.pixel_array
    except (RuntimeError, ImportError, *unreadable_errors()) as error:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "?")
        reason = " ".join(str(error).split())[:300]
        compressed = getattr(syntax, "is_compressed", False)
        advice = f" If a decoder is missing: {INSTALL_HINT}." if compressed else ""
        raise InputError(
            f"{source}: the pixel data of {path.name} ({getattr(syntax, 'name', syntax)}) cannot be "
            f"decoded (truncated or corrupt?): {reason}.{advice}"
        ) from error
    if stored.ndim != 2:
        raise InputError(f"{source}: {path.name} holds pixel data of shape {stored.shape}, expected one 2D slice.")
    slope, intercept = values["RescaleSlope"][0], values["RescaleIntercept"][0]
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)
