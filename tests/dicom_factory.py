"""Build small DICOM MR series from the phantoms, and read RTSTRUCT contours back onto a grid.

``write_series`` turns any SimpleITK image into classic single-frame MR Image Storage files with
the tags a scanner writes (patient, study, series, frame of reference, equipment, MR acquisition,
image plane, pixel, VOI LUT, SOP common). Stored values are uint16 with RescaleSlope/Intercept;
``stored_image`` gives the float image a DICOM reader must reconstruct, so tests can compare
routes exactly. ``orient`` imposes an axial, oblique or flipped (left-handed, slices stored
feet-first) geometry on a phantom without touching its voxels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "resources"))

from phantoms import LABELS, make_phantom  # noqa: E402

STORED_MAX = 4095


def _rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


ORIENTATIONS = {
    "axial": np.eye(3),
    "oblique": _rotation(18.0, -12.0, 25.0),
    # Left-handed: the image's z axis runs against the DICOM slice normal, so the slices are stored
    # feet-first and a reader must reverse them.
    "flipped": _rotation(0.0, 0.0, 8.0) @ np.diag([1.0, 1.0, -1.0]),
}


def phantom_case(seed: int = 1000, task: str = "t2", voxel_scale: float = 2.5):
    """A small phantom: (image float32, tumour mask uint8) on the same grid."""
    image, label = make_phantom(seed, task, voxel_scale=voxel_scale)
    tumour = sitk.GetImageFromArray((sitk.GetArrayFromImage(label) == LABELS["tumor"]).astype(np.uint8))
    tumour.CopyInformation(image)
    return image, tumour


def orient(image, kind: str, origin=(-61.5, -40.25, 102.0)):
    """The same voxels with ``kind``'s direction matrix and a fixed origin."""
    out = sitk.Image(image)
    out.SetDirection(tuple(float(v) for v in ORIENTATIONS[kind].ravel()))
    out.SetOrigin(origin)
    return out


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters that parses back to exactly the float we use."""
    return f"{value:.10g}"


def quantise(image):
    """(stored uint16 array (z,y,x), slope, intercept) with slope/intercept as exact short decimals."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    low, high = float(array.min()), float(array.max())
    intercept = float(_ds(low))
    slope = float(_ds(max(high - intercept, 1e-6) / STORED_MAX))
    stored = np.clip(np.round((array - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def stored_image(image):
    """The float32 image a reader reconstructs from ``write_series(image)``: stored * slope + intercept."""
    stored, slope, intercept = quantise(image)
    out = sitk.GetImageFromArray((stored.astype(np.float64) * slope + intercept).astype(np.float32))
    out.CopyInformation(image)
    return out


# High-Throughput JPEG 2000: lossless, lossless with RPCL progression, and possibly lossy (what AWS HealthImaging,
# grand-challenge's image store, serves); encoded here with OpenJPH (imagecodecs, test-only), decoded by openjpeg.
HTJ2K_SYNTAXES = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")


def write_series(
    image,
    folder: Path,
    *,
    series_description: str = "t2_haste_tra_mbh",
    series_number: int = 3,
    modality: str = "MR",
    study_uid: str | None = None,
    frame_uid: str | None = None,
    series_uid: str | None = None,
    transfer_syntax: str | None = None,
    tweak=None,
) -> list[Path]:
    """Write ``image`` as one DICOM series, a file per slice (names in shuffled order); returns the files.

    ``tweak(k, dataset)`` may change slice k's dataset before it is written (tests break geometry with it).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored, slope, intercept = quantise(image)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    row, column = direction[:, 0], direction[:, 1]
    normal = np.cross(row, column)
    spacing = image.GetSpacing()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    names = np.random.default_rng(abs(hash(series_uid)) % 2**32).permutation(stored.shape[0])
    paths = []
    for k in range(stored.shape[0]):
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k)))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"IM{names[k]:05d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = ("20250612",) * 4
        ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = ("101500", "102033", "102041.5", "102041.5")
        ds.AccessionNumber = "ACC0042"
        ds.Modality = modality
        ds.Manufacturer = "SIEMENS"
        ds.InstitutionName = "Phantom Hospital"
        ds.ReferringPhysicianName = "Referring^Doctor"
        ds.StationName = "MRLINAC01"
        ds.StudyDescription = "MR Pancreas"
        ds.SeriesDescription = series_description
        ds.ManufacturerModelName = "MAGNETOM Vida"
        ds.PatientName = "Phantom^Pancreas"
        ds.PatientID = "PANTHER-0042"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.PatientAge = "065Y"
        ds.BodyPartExamined = "PANCREAS"
        ds.ScanningSequence = ["SE"]
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = ["PFP"]
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "1400", "95", 128
        ds.MagneticFieldStrength, ds.ImagingFrequency, ds.ImagedNucleus = "1.5", "63.6", "1H"
        ds.NumberOfAverages, ds.FlipAngle, ds.PatientPosition = "1", "160", "HFS"
        ds.SoftwareVersions = "syngo MR XA31"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *column)]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(intercept), _ds(slope), "US"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        if tweak is not None:
            tweak(k, ds)
        if transfer_syntax in HTJ2K_SYNTAXES:  # pydicom has no HTJ2K encoder: OpenJPH's, through imagecodecs
            import imagecodecs
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([imagecodecs.htj2k_encode(np.ascontiguousarray(stored[k]))])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        elif transfer_syntax is not None and transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def rasterise_rtstruct(rtstruct, datasets) -> np.ndarray:
    """RTSTRUCT contours -> a (z, y, x) mask on the grid of ``datasets`` (sorted along the normal).

    Independent of the writer: each contour point is projected onto its referenced slice's pixel
    grid, and pixels whose centre is inside are set with the even-odd rule (holes are nested contours).
    """
    from skimage.draw import polygon

    by_uid = {str(ds.SOPInstanceUID): k for k, ds in enumerate(datasets)}
    shape = (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns))
    mask = np.zeros(shape, dtype=bool)
    for roi in rtstruct.ROIContourSequence:
        for contour in getattr(roi, "ContourSequence", []):
            k = by_uid[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            ds = datasets[k]
            orientation = np.array(ds.ImageOrientationPatient, dtype=float)
            origin = np.array(ds.ImagePositionPatient, dtype=float)
            row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
            points = np.array(contour.ContourData, dtype=float).reshape(-1, 3) - origin
            columns = points @ orientation[:3] / column_spacing
            rows = points @ orientation[3:] / row_spacing
            rr, cc = polygon(rows, columns, shape=shape[1:])
            plane = np.zeros(shape[1:], dtype=bool)
            plane[rr, cc] = True
            mask[k] ^= plane
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


# Explicit VR little endian: these VRs have a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def element_bytes(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian data element, its value padded to an even length."""
    import struct

    value = value + (b"\0" if vr in ("OB", "UI", "UN") else b" ") * (len(value) % 2)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("latin-1")[:2].ljust(2)
    if vr.encode("latin-1")[:2] in _LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", min(len(value), 0xFFFF)) + value[:0xFFFF]


def set_element(path: Path, tag: int, vr: str | None, value: bytes | None) -> None:
    """Replace, insert (in tag order) or, with ``value`` None, delete a top-level element of an explicit VR
    little endian file, as bytes: any VR, any value, whatever pydicom would refuse to write."""
    import struct

    data = Path(path).read_bytes()
    group_length = struct.unpack("<I", data[140:144])[0]
    at = 144 + group_length
    while at + 8 <= len(data):
        found = struct.unpack("<HH", data[at : at + 4])
        found = found[0] << 16 | found[1]
        element_vr = data[at + 4 : at + 6]
        if element_vr in _LONG_VRS:
            length, header = struct.unpack("<I", data[at + 8 : at + 12])[0], 12
        else:
            length, header = struct.unpack("<H", data[at + 6 : at + 8])[0], 8
        end = at + header + (0 if length == 0xFFFFFFFF else length)
        if found >= tag or length == 0xFFFFFFFF:
            break
        at = end
    else:
        found, end = None, at
    replaced = end if found == tag else at
    new = b"" if value is None else element_bytes(tag, vr, value)
    Path(path).write_bytes(data[:at] + new + data[replaced:])
