"""The tumour mask as a binary DICOM-SEG (highdicom), referencing the source series.

One segment, "Pancreatic tumour": category SCT 49755003 Morphologically Abnormal Structure, type
SCT 108369006 Neoplasm, anatomic region SCT 15776009 Pancreas; algorithm type AUTOMATIC with the
algorithm identification (name, version, family "Artificial Intelligence", and the ensemble
members as parameters). Frames are the source slices that hold tumour (highdicom omits empty
frames); each frame references its source image, and the SEG shares the series' Study and Frame of
Reference. Missing type 2 patient/study attributes are written empty; the pixel measures (slice
thickness and spacing) are the measured step between slice positions; the character set is UTF-8
(``pantherseg.dicom.sources``). An empty mask still gives a valid SEG: highdicom then encodes every frame, all empty
(docs/dicom.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from pantherseg import __version__
from pantherseg.dicom.sources import OUTPUT_CHARACTER_SET, slice_step, writer_sources

log = logging.getLogger(__name__)

SEGMENT_LABEL = "Pancreatic tumour"
MANUFACTURER = "pantherseg"
MODEL_NAME = "PANTHER nnU-Net v2 ensemble"


@dataclass(frozen=True)
class Algorithm:
    """What produced the mask: written into the SEG's algorithm identification and the RTSTRUCT."""

    name: str = "pantherseg"
    version: str = __version__
    task: str = "t1"
    members: tuple[str, ...] = field(default_factory=tuple)
    # The case's quality control (pantherseg.engine.quality, docs/quality.md): score in [0, 1], review flag.
    quality_score: float | None = None
    quality_review: bool | None = None

    def parameters(self) -> dict[str, str]:
        parameters = {"task": self.task, "ensemble_members": ",".join(self.members) or "none"}
        if self.quality_score is not None:
            parameters["quality_score"] = f"{self.quality_score:.4f}"
        if self.quality_review is not None:
            parameters["quality_review"] = "true" if self.quality_review else "false"
        return parameters


def new_instance(algorithm: Algorithm, series_number: int) -> dict:
    """What every object this product writes says of itself (highdicom's keywords): new series and instance
    UIDs, and the equipment (manufacturer, model, the algorithm's version)."""
    from pydicom.uid import generate_uid

    return {
        "series_instance_uid": generate_uid(),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": MODEL_NAME,
        "software_versions": algorithm.version,
        "device_serial_number": "1",
    }


def build_seg(mask_zyx: np.ndarray, datasets: list, *, algorithm: Algorithm, series_number: int = 901):
    """A highdicom ``Segmentation`` of ``mask_zyx`` (z index k = ``datasets[k]``, sorted along the normal)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid
    from pydicom.valuerep import format_number_as_ds

    if mask_zyx.shape != (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)):
        raise ValueError(
            f"mask shape {mask_zyx.shape} does not match {len(datasets)} slices of "
            f"{datasets[0].Rows} x {datasets[0].Columns}"
        )
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        version=algorithm.version,
        family=codes.cid7162.ArtificialIntelligence,
        source="PANTHER 2025 winning method, arXiv 2508.21775",
        parameters=algorithm.parameters(),
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        anatomic_regions=[codes.SCT.Pancreas],
        tracking_id="pancreatic-tumour",
        tracking_uid=generate_uid(),
    )
    source = datasets[0]
    # highdicom copies the pixel measures of the first source image; the copies carry the measured step between
    # positions instead of the source's SpacingBetweenSlices/SliceThickness, which may disagree with them (readers
    # such as dcmqi rebuild the volume from these measures).
    step = format_number_as_ds(slice_step(datasets))
    sources = writer_sources(datasets)
    for copy in sources:
        copy.SpacingBetweenSlices = copy.SliceThickness = step
    seg = hd.seg.Segmentation(
        source_images=sources,
        specific_character_set=OUTPUT_CHARACTER_SET,
        pixel_array=np.ascontiguousarray(mask_zyx, dtype=bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        **new_instance(algorithm, series_number),
        series_description=f"{SEGMENT_LABEL} ({algorithm.name} {algorithm.version})"[:64],
        content_label="TUMOUR",
        content_description=f"{algorithm.name} {algorithm.task} ensemble"[:64],
        content_creator_name=None,
    )
    log.debug("SEG of series %s: %d frame(s)", source.SeriesInstanceUID, int(seg.NumberOfFrames))
    return seg
