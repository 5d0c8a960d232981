"""Files in and out: images, previews, the output formats, host memory, whole files.

- ``images``: read and check an image (``Volume``), build and write masks with the input's geometry;
- ``detached_headers``: an ``.mhd``/``.nii`` header's data file, checked before SimpleITK reads it;
- ``host_memory``: the memory this process may use, and whether an image can even be read;
- ``formats``: the output formats' names and suffixes (standard library only);
- ``outputs``: writing them (``.mha``, ``.nii.gz``, DICOM-SEG, RTSTRUCT, SR, uncertainty), all or none;
- ``preview``, ``tumour_stats``: a case's picture and its tumour figures (the run report is
  ``pantherseg.run_report``);
- ``files``: the one way a file is written (whole or not at all), and the one file hash.

Nothing here imports the engine: the engine depends on ``io``, not the other way round.
"""
