"""The tumour volume as a DICOM SR measurement report (TID 1500), referencing the DICOM-SEG's segment.

A Comprehensive 3D SR (highdicom.sr) whose content is one TID 1500 Measurement Report:
- observation context: the observer is a device, the algorithm (name ``pantherseg``, its version,
  manufacturer and model as in the SEG; a device UID derived from name and version, so every report
  of one release names the same device);
- procedure reported: LN 25056-3 "MRI unspecified body region" (CID 100);
- one TID 1411 volumetric measurement group for the tumour: tracking identifier = the SEG segment's
  own (``pancreatic-tumour`` and its TrackingUID, so SR and SEG name one finding), the referenced
  segment = segment 1 of the written DICOM-SEG with the source series it was derived from (highdicom's
  ``ReferencedSegment.from_segmentation`` cannot be used: it looks for the segment number per frame,
  and highdicom's own single-segment SEG keeps it in the shared functional groups), finding
  SCT 108369006 Neoplasm in category SCT 49755003 Morphologically Abnormal Structure, finding site SCT
  15776009 Pancreas, the algorithm identification (members as parameters), and the measurements:
  * SCT 118565006 Volume in ml (UCUM ``ml``): tumour voxels x voxel volume / 1000, the same figure
    as the run report's ``tumor_volume_mm3`` / 1000 (the caller passes the voxel volume it uses);
  * the case's quality score (docs/quality.md) as a numeric measurement, unit UCUM ``1`` (no units),
    and the review flag as a qualitative evaluation (SCT Yes / No). The standard has no concept for
    either, so both are named by the private coding scheme :data:`CODING_SCHEME` ("99" designators
    are the standard's private ones), declared in the Coding Scheme Identification Sequence.
- evidence: every image of the source series and the SEG (Current Requested Procedure Evidence).

The patient and study are copied from the source series by highdicom (its module tables), with
missing type 2 attributes written empty (``sources.writer_sources``); the character set is UTF-8.
The report is COMPLETE (it holds every measurement made), PRELIMINARY and UNVERIFIED: nobody has
reviewed it. An empty mask gives a report with volume 0 ml referencing the (empty) segment: "no
tumour found" is a measurement the reader must see, not a missing object (docs/dicom.md).
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pantherseg.dicom.seg import MANUFACTURER, MODEL_NAME, SEGMENT_LABEL, Algorithm, new_instance
from pantherseg.dicom.sources import OUTPUT_CHARACTER_SET, slice_step, writer_sources

log = logging.getLogger(__name__)

CODING_SCHEME = "99PANTHERSEG"
QUALITY_SCORE = hd.sr.CodedConcept("QSCORE", CODING_SCHEME, "Segmentation quality score")
REVIEW_RECOMMENDED = hd.sr.CodedConcept("REVIEW", CODING_SCHEME, "Review recommended")
MILLILITER = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
SEGMENT_NUMBER = 1


def voxel_volume_mm3(datasets: list) -> float:
    """The volume of one voxel of the series (mm3): PixelSpacing and the measured step between slices."""
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    return row_spacing * column_spacing * slice_step(datasets)


def tumour_volume_ml(mask_zyx: np.ndarray, voxel_mm3: float) -> float:
    return int(np.count_nonzero(mask_zyx)) * voxel_mm3 / 1000.0


def build_sr(
    mask_zyx: np.ndarray,
    datasets: list,
    segmentation,
    *,
    algorithm: Algorithm,
    voxel_mm3: float | None = None,
    series_number: int = 903,
) -> hd.sr.Comprehensive3DSR:
    """The measurement report of ``mask_zyx`` (z index k = ``datasets[k]``), whose SEG is ``segmentation``.

    ``voxel_mm3``: the voxel volume the run report uses (default: from the datasets' headers)."""
    if mask_zyx.shape != (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)):
        raise ValueError(
            f"mask shape {mask_zyx.shape} does not match {len(datasets)} slices of "
            f"{datasets[0].Rows} x {datasets[0].Columns}"
        )
    if str(segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID) != str(datasets[0].SeriesInstanceUID):
        raise ValueError(
            f"the SEG references series {segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID}, "
            f"not the source series {datasets[0].SeriesInstanceUID}"
        )
    volume_ml = tumour_volume_ml(mask_zyx, voxel_volume_mm3(datasets) if voxel_mm3 is None else voxel_mm3)
    sources = writer_sources(datasets)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_device_observer(algorithm)),
        procedure_reported=codes.cid100.MRIUnspecifiedBodyRegion,
        imaging_measurements=[_tumour_group(segmentation, datasets[0].SeriesInstanceUID, algorithm, volume_ml)],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, segmentation],
        content=report[0],
        **new_instance(algorithm, series_number),
        series_description=f"{SEGMENT_LABEL} volume ({algorithm.name} {algorithm.version})"[:64],
        is_complete=True,
        is_final=False,
        is_verified=False,
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=CODING_SCHEME, name="pantherseg measurement codes", responsible_organization=MANUFACTURER
            )
        ],
        specific_character_set=OUTPUT_CHARACTER_SET,
    )
    log.debug("SR of series %s: tumour volume %.4f ml", datasets[0].SeriesInstanceUID, volume_ml)
    return sr


def _device_observer(algorithm: Algorithm) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algorithm.name, algorithm.version]),  # one release, one device UID
            name=algorithm.name,
            manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME,
        ),
    )


def _tumour_group(
    segmentation, source_series_uid: str, algorithm: Algorithm, volume_ml: float
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    segment = segmentation.SegmentSequence[SEGMENT_NUMBER - 1]
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        family=codes.cid7162.ArtificialIntelligence,
        parameters=[f"{key}={value}" for key, value in algorithm.parameters().items()],
    )
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Volume, value=float(volume_ml), unit=MILLILITER, algorithm_id=algorithm_id)
    ]
    evaluations = []
    if algorithm.quality_score is not None:
        measurements.append(
            hd.sr.Measurement(
                name=QUALITY_SCORE, value=float(algorithm.quality_score), unit=NO_UNITS, algorithm_id=algorithm_id
            )
        )
    if algorithm.quality_review is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=REVIEW_RECOMMENDED, value=codes.SCT.Yes if algorithm.quality_review else codes.SCT.No
            )
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=segment.TrackingUID, identifier=segment.TrackingID),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=SEGMENT_NUMBER,
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
        ),
        finding_type=codes.SCT.Neoplasm,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Pancreas)],
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )
