"""What the DICOM writers need of the source series, checked before the prediction runs.

A SEG or RTSTRUCT copies the patient and study of its source and references each source image.
Anonymisers drop type 2 attributes (PatientBirthDate, PatientID, StudyID, AccessionNumber, ...);
those are written empty, as the standard allows (:data:`TYPE_2_COPIED`, :func:`writer_sources`).
What cannot be made up is checked by :func:`check_sources` before any network runs, so that a
case is refused in one line instead of failing after its whole prediction:

- the UIDs the references are made of (:data:`TYPE_1_REQUIRED`), FrameOfReferenceUID included: a
  SEG or RTSTRUCT must share its images' frame of reference to be placed on them, and a generated
  one would say the opposite (decision documented in docs/dicom.md);
- the ROI name (an LO value: text without backslash or control characters).

Both writers declare ``SpecificCharacterSet`` ISO_IR 192 (UTF-8, :data:`OUTPUT_CHARACTER_SET`):
pydicom decodes the source's values, whatever their character set (``\\ISO 2022 IR 87`` included),
and every name can then be written without a raw byte or a ``?``.
"""

from __future__ import annotations

import unicodedata

from pantherseg.errors import InputError

# Type 2 attributes of the Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1) modules both writers copy.
TYPE_2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# Type 1 in every source image and needed for the references.
TYPE_1_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "FrameOfReferenceUID")
OUTPUT_CHARACTER_SET = "ISO_IR 192"
LO_MAX_CHARACTERS = 64


def check_sources(datasets: list, formats, *, roi_name: str | None = None, source: str = "the series") -> None:
    """Raise InputError if a requested DICOM output could not be written for ``datasets``."""
    if not any(f in ("dicom-seg", "rtstruct") for f in formats):
        return
    for name in TYPE_1_REQUIRED:
        lacking = [k for k, dataset in enumerate(datasets) if not str(dataset.get(name, "") or "").strip()]
        if lacking:
            raise InputError(
                f"{source}: {len(lacking)} of {len(datasets)} slices have no {name} (type 1 in the "
                f"image's IOD), which a DICOM-SEG or RTSTRUCT must reference; refused before the "
                f"prediction. Fix the export, or ask for mha / nii.gz only."
            )
    if "rtstruct" in formats and roi_name is not None:
        check_roi_name(roi_name)


def check_roi_name(name: str) -> str:
    """``name`` as an ROIName (LO, UTF-8): non-empty, no backslash or control character, valid text."""
    if not name.strip():
        raise InputError("--roi-name is empty; give the structure a name.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"--roi-name {name!r} is not valid text (a raw byte the terminal's encoding could not "
            f"decode?); give it in UTF-8."
        ) from None
    bad = [c for c in name if c == "\\" or unicodedata.category(c) in ("Cc", "Cf", "Cs")]
    if bad:
        raise InputError(
            f"--roi-name {name!r} holds {bad[0]!r}: a DICOM LO value cannot hold backslashes or control characters."
        )
    if len(name) > LO_MAX_CHARACTERS:
        raise InputError(f"--roi-name has {len(name)} characters; a DICOM ROIName holds at most {LO_MAX_CHARACTERS}.")
    return name


def writer_sources(datasets: list) -> list:
    """Copies of ``datasets`` (sharing their elements) with missing type 2 attributes present and empty."""
    from pydicom.dataset import Dataset

    copies = []
    for dataset in datasets:
        copy = Dataset()
        for element in dataset:
            copy.add(element)
        copy.file_meta = dataset.file_meta
        copy.preamble = getattr(dataset, "preamble", None)
        for name in TYPE_2_COPIED:
            if name not in copy:
                setattr(copy, name, "")
        copies.append(copy)
    return copies


def slice_step(datasets: list) -> float:
    """The measured distance between slices (mm): first to last position along the normal, over the steps."""
    import numpy as np

    orientation = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    first, last = (np.array([float(v) for v in d.ImagePositionPatient]) for d in (datasets[0], datasets[-1]))
    return float(abs((last - first) @ normal) / max(1, len(datasets) - 1))
