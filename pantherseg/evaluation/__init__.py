"""Offline evaluation and ensemble selection on labelled cases (``pantherseg evaluate`` and ``select``).

- ``metrics``: the challenge's metrics per case and their aggregate (DeepMind ``surface-distance``);
- ``folders``: prediction folder(s) against a truth folder, tables, JSON and CSV;
- ``selection``: greedy forward ensemble selection with replacement within a time budget;
- ``select_files``: the files selection reads (member probability maps, run reports, costs) and writes.

Uses only ``pantherseg.errors``, ``pantherseg.config`` and ``pantherseg.io``; never the engine.
"""
