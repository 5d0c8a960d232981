"""The tumour mask as an RT Structure Set: a small writer on pydicom.

Why not rt-utils: its contour-to-patient transform assumes what axial CT gives (docs/dicom.md has
the round-trip measurements on oblique and flipped MR series). Here every contour is computed on
its own slice's pixel grid and mapped with that slice's ImagePositionPatient and
ImageOrientationPatient, which is exact for any orientation.

Contents: one ROI (name settable, RTROIInterpretedType GTV, generated AUTOMATIC), referenced to the
series' Frame of Reference UID; the referenced study, series and every image of the series (Contour
Image Sequence); per slice holding tumour, one CLOSED_PLANAR contour per boundary (outer outlines
and holes alike: planning systems combine nested contours of one ROI by the even-odd rule), each
referencing its slice's SOP Instance UID. Contours follow the voxel edges (marching squares at
0.5 on the binary slice), with collinear points dropped. An empty mask writes the ROI with no
contours (a valid, empty structure set). ApprovalStatus is UNAPPROVED: a clinician reviews it.
"""

from __future__ import annotations

import datetime
import logging

import numpy as np

from pantherseg.dicom.seg import MANUFACTURER, MODEL_NAME, Algorithm
from pantherseg.dicom.sources import OUTPUT_CHARACTER_SET, TYPE_2_COPIED, check_roi_name

log = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the referenced-study SOP class RT objects use
DEFAULT_ROI_NAME = "Pancreatic tumour"
ROI_COLOUR = [255, 64, 0]
_OPTIONAL_COPIED = ("IssuerOfPatientID", "PatientAge", "StudyDescription")


def slice_contours(plane: np.ndarray) -> list[np.ndarray]:
    """The boundaries of a binary 2D slice as (row, column) polygons in pixel units, not closed."""
    from skimage.measure import find_contours

    padded = np.pad(plane.astype(np.float32), 1)
    polygons = []
    for contour in find_contours(padded, 0.5):
        points = contour[:-1] - 1.0  # find_contours closes the loop by repeating the first point
        points = _drop_collinear(points)
        if len(points) >= 3:
            polygons.append(points)
    return polygons


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    before = np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) \
        - (points[:, 1] - before[:, 1]) * (after[:, 0] - points[:, 0])
    return points[np.abs(cross) > 1e-9]


def to_patient(points_rc: np.ndarray, dataset) -> np.ndarray:
    """(row, column) pixel coordinates on ``dataset``'s slice -> patient (x, y, z) mm."""
    orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
    origin = np.array(dataset.ImagePositionPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    return (origin + np.outer(points_rc[:, 1] * column_spacing, orientation[:3])
            + np.outer(points_rc[:, 0] * row_spacing, orientation[3:]))


def build_rtstruct(mask_zyx: np.ndarray, datasets: list, *, algorithm: Algorithm, roi_name: str = DEFAULT_ROI_NAME,
                   series_number: int = 902):
    """A pydicom ``FileDataset`` RT Structure Set of ``mask_zyx`` (z index k = ``datasets[k]``)."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    if mask_zyx.shape != (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)):
        raise ValueError(f"mask shape {mask_zyx.shape} does not match {len(datasets)} slices of "
                         f"{datasets[0].Rows} x {datasets[0].Columns}")
    roi_name = check_roi_name(roi_name)
    source = datasets[0]
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("rtstruct.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = OUTPUT_CHARACTER_SET  # UTF-8: source values are decoded by pydicom, names any text
    ds.StudyInstanceUID = source.StudyInstanceUID
    for tag in TYPE_2_COPIED:
        setattr(ds, tag, source.get(tag, ""))  # type 2 attributes: empty when the source has none
    for tag in _OPTIONAL_COPIED:
        if tag in source:
            setattr(ds, tag, source.get(tag))
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{roi_name} ({algorithm.name} {algorithm.version})"[:64]
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID  # the Frame of Reference module of the IOD
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    ds.Manufacturer, ds.ManufacturerModelName = MANUFACTURER, MODEL_NAME
    ds.SoftwareVersions = algorithm.version
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "PANTHER"
    ds.StructureSetName = f"{algorithm.name} {algorithm.task}"[:64]
    ds.StructureSetDescription = (f"Automatic, unreviewed; ensemble members: {','.join(algorithm.members) or 'none'}")[:1024]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ApprovalStatus = "UNAPPROVED"

    def image_reference(dataset) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = dataset.SOPClassUID
        item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
        return item

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = source.SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence([image_reference(d) for d in datasets])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = source.FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])

    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = source.FrameOfReferenceUID
    roi.ROIName = roi_name
    roi.ROIDescription = f"{algorithm.name} {algorithm.version} {algorithm.task} ensemble"[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"{algorithm.name} {algorithm.version}"[:64]
    ds.StructureSetROISequence = Sequence([roi])

    contours = []
    for k, dataset in enumerate(datasets):
        if not mask_zyx[k].any():
            continue
        for polygon in slice_contours(mask_zyx[k]):
            item = Dataset()
            item.ContourImageSequence = Sequence([image_reference(dataset)])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(polygon)
            item.ContourNumber = len(contours) + 1
            item.ContourData = [f"{v:.4f}" for v in to_patient(polygon, dataset).ravel()]
            contours.append(item)
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = ROI_COLOUR
    roi_contour.ReferencedROINumber = 1
    if contours:
        roi_contour.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([roi_contour])

    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([observation])
    log.debug("RTSTRUCT of series %s: %d contour(s)", source.SeriesInstanceUID, len(contours))
    return ds
