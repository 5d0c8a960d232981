"""Files in and out: images, run reports, previews, the output formats, host memory, whole files.

- ``images``: read and check an image (``Volume``), build and write masks with the input's geometry;
- ``detached_headers``: an ``.mhd``/``.nii`` header's data file, checked before SimpleITK reads it;
- ``host_memory``: the memory this process may use, and whether an image can even be read;
- ``outputs``: the output formats (``.mha``, ``.nii.gz``, DICOM-SEG, RTSTRUCT), all or none;
- ``report``, ``preview``, ``tumour_stats``: the run report, its picture, its tumour figures;
- ``files``: the one way a file is written (whole or not at all), and the one file hash.

Nothing here imports the engine: the engine depends on ``io``, not the other way round.
"""
