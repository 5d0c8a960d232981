"""The output formats' names and file suffixes (standard library only: ``pantherseg --help`` reads them)."""

OUTPUT_FORMATS = ("mha", "nii.gz", "dicom-seg", "rtstruct", "sr", "uncertainty")
DICOM_FORMATS = ("dicom-seg", "rtstruct", "sr")  # reference the images of a DICOM series
MAP_FORMATS = ("uncertainty",)  # not a mask: written beside one, after the masks
SUFFIXES = {
    "mha": ".mha",
    "nii.gz": ".nii.gz",
    "dicom-seg": ".seg.dcm",
    "rtstruct": ".rtstruct.dcm",
    "sr": ".sr.dcm",
    "uncertainty": ".uncertainty.mha",
}
