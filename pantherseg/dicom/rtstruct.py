"""The tumour mask as an RT Structure Set, on highdicom's SOP class base.

:class:`RTStructureSet` is a ``highdicom.SOPClass``: the base writes the SOP Common, General
Equipment and the series attributes, and copies the patient and study of the source series with
``copy_patient_and_study_information``, driven by the standard's own module tables (the Patient,
General Study, Patient Study and Clinical Trial modules of the source image's IOD), as highdicom's
SEG does; the Frame of Reference module is copied the same way. Only the RT-specific modules are
built here, each by a small function: Structure Set (:func:`structure_set_module`), ROI Contour
(:func:`roi_contour_module`) and RT ROI Observations (:func:`rt_roi_observations_module`).

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

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage

from pantherseg.dicom.seg import Algorithm, new_instance
from pantherseg.dicom.sources import OUTPUT_CHARACTER_SET, check_roi_name, writer_sources

log = logging.getLogger(__name__)

STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the referenced-study SOP class RT objects use
DEFAULT_ROI_NAME = "Pancreatic tumour"
ROI_COLOUR = [255, 64, 0]
ROI_NUMBER = 1


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
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - (points[:, 1] - before[:, 1]) * (
        after[:, 0] - points[:, 0]
    )
    return points[np.abs(cross) > 1e-9]


def to_patient(points_rc: np.ndarray, dataset) -> np.ndarray:
    """(row, column) pixel coordinates on ``dataset``'s slice -> patient (x, y, z) mm."""
    orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
    origin = np.array(dataset.ImagePositionPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    return (
        origin
        + np.outer(points_rc[:, 1] * column_spacing, orientation[:3])
        + np.outer(points_rc[:, 0] * row_spacing, orientation[3:])
    )


class RTStructureSet(hd.SOPClass):
    """An RT Structure Set of one ROI: the contours of ``mask_zyx`` (z index k = ``source_images[k]``)."""

    def __init__(
        self,
        mask_zyx: np.ndarray,
        source_images: list,
        *,
        algorithm: Algorithm,
        roi_name: str = DEFAULT_ROI_NAME,
        series_number: int = 902,
    ):
        if mask_zyx.shape != (len(source_images), int(source_images[0].Rows), int(source_images[0].Columns)):
            raise ValueError(
                f"mask shape {mask_zyx.shape} does not match {len(source_images)} slices of "
                f"{source_images[0].Rows} x {source_images[0].Columns}"
            )
        roi_name = check_roi_name(roi_name)
        source = writer_sources(source_images[:1])[0]  # type 2 patient/study attributes present, maybe empty
        super().__init__(
            study_instance_uid=source.StudyInstanceUID,
            **new_instance(algorithm, series_number),
            sop_class_uid=RTStructureSetStorage,
            modality="RTSTRUCT",
            transfer_syntax_uid=ExplicitVRLittleEndian,
            patient_id=source.PatientID,
            patient_name=source.PatientName,
            patient_birth_date=source.PatientBirthDate,
            patient_sex=source.PatientSex,
            accession_number=source.AccessionNumber,
            study_id=source.StudyID,
            study_date=source.StudyDate,
            study_time=source.StudyTime,
            referring_physician_name=source.ReferringPhysicianName,
            series_description=f"{roi_name} ({algorithm.name} {algorithm.version})"[:64],
            specific_character_set=OUTPUT_CHARACTER_SET,  # UTF-8: source values decoded by pydicom, names any text
        )
        self.copy_patient_and_study_information(source)
        self._copy_root_attributes_of_module(source, "Frame of Reference")
        if "PositionReferenceIndicator" not in self:
            self.PositionReferenceIndicator = ""  # type 2
        self.OperatorsName = ""  # RT Series, type 2
        date, time = self.InstanceCreationDate, self.InstanceCreationTime
        self.update(structure_set_module(source_images, roi_name=roi_name, algorithm=algorithm, date=date, time=time))
        self.update(roi_contour_module(mask_zyx, source_images))
        self.update(rt_roi_observations_module())
        self.ApprovalStatus = "UNAPPROVED"  # Approval module: a clinician reviews it


def _image_reference(dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    return item


def structure_set_module(source_images: list, *, roi_name: str, algorithm: Algorithm, date, time) -> Dataset:
    """Structure Set module (PS3.3 C.8.8.5): labels, the referenced frame/study/series/images, the one ROI."""
    source = source_images[0]
    module = Dataset()
    module.StructureSetLabel = "PANTHER"
    module.StructureSetName = f"{algorithm.name} {algorithm.task}"[:64]
    members = ",".join(algorithm.members) or "none"
    module.StructureSetDescription = f"Automatic, unreviewed; ensemble members: {members}"[:1024]
    module.StructureSetDate, module.StructureSetTime = date, time

    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ContourImageSequence = Sequence([_image_reference(d) for d in source_images])
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = source.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    module.ReferencedFrameOfReferenceSequence = Sequence([frame])

    roi = Dataset()
    roi.ROINumber = ROI_NUMBER
    roi.ReferencedFrameOfReferenceUID = source.FrameOfReferenceUID
    roi.ROIName = roi_name
    roi.ROIDescription = f"{algorithm.name} {algorithm.version} {algorithm.task} ensemble"[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"{algorithm.name} {algorithm.version}"[:64]
    module.StructureSetROISequence = Sequence([roi])
    return module


def roi_contour_module(mask_zyx: np.ndarray, source_images: list) -> Dataset:
    """ROI Contour module (PS3.3 C.8.8.6): per slice, one CLOSED_PLANAR contour per boundary, in patient mm."""
    contours = []
    for k, dataset in enumerate(source_images):
        if not mask_zyx[k].any():
            continue
        for polygon in slice_contours(mask_zyx[k]):
            item = Dataset()
            item.ContourImageSequence = Sequence([_image_reference(dataset)])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(polygon)
            item.ContourNumber = len(contours) + 1
            item.ContourData = [f"{v:.4f}" for v in to_patient(polygon, dataset).ravel()]
            contours.append(item)
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = ROI_COLOUR
    roi_contour.ReferencedROINumber = ROI_NUMBER
    if contours:
        roi_contour.ContourSequence = Sequence(contours)
    module = Dataset()
    module.ROIContourSequence = Sequence([roi_contour])
    log.debug("RTSTRUCT of series %s: %d contour(s)", source_images[0].SeriesInstanceUID, len(contours))
    return module


def rt_roi_observations_module() -> Dataset:
    """RT ROI Observations module (PS3.3 C.8.8.8): the ROI is a GTV, its interpreter not named (type 2)."""
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = ROI_NUMBER
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    module = Dataset()
    module.RTROIObservationsSequence = Sequence([observation])
    return module


def build_rtstruct(
    mask_zyx: np.ndarray,
    datasets: list,
    *,
    algorithm: Algorithm,
    roi_name: str = DEFAULT_ROI_NAME,
    series_number: int = 902,
) -> RTStructureSet:
    """The RT Structure Set of ``mask_zyx`` (z index k = ``datasets[k]``)."""
    return RTStructureSet(mask_zyx, datasets, algorithm=algorithm, roi_name=roi_name, series_number=series_number)
