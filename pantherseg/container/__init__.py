"""The grand-challenge container: its folder contract and its model upload.

- ``grand_challenge``: find the one input of a job (``inputs.json`` or ``images/<slug>/``) and name
  its one output;
- ``model_tarball``: build, check and verify ``model.tar.gz`` as grand-challenge extracts it
  (``python -m pantherseg.container.model_tarball build|verify|check``);
- ``entry_point``: one job, from ``/input`` to one mask in ``/output``, through ``pantherseg.api.segment``;
  ``inference.py`` at the repository root (what the image runs) only calls its ``run()``.
"""
