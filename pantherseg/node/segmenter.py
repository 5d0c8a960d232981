"""The node's one door into the engine and the API: load the ensemble once, segment one received series.

Every call the DICOM node makes into ``pantherseg.api`` / the engine is in this module, so a change of the
API touches this file only. The worker process (pantherseg.node.worker) builds one :class:`Segmenter` and
calls :meth:`Segmenter.segment` for each job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import InputError
from pantherseg.options import RunOptions
from pantherseg.run_report import RunReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segmented:
    """One series' results: output format -> written file, and its run report."""

    paths: dict[str, Path]
    report: RunReport
    seconds: float


class Segmenter:
    """Holds the loaded ensemble; :meth:`segment` writes one series' DICOM outputs into a folder."""

    def __init__(self, options: RunOptions):
        """``options``: the node's run options (task, config, weights, device, time budget, ROI name, and the
        output formats it sends)."""
        from pantherseg.api import load_ensemble

        self.options = options
        self.ensemble = load_ensemble(self.options, keep_networks=True)  # series after series: built once

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.options.output_formats)

    def describe(self) -> dict:
        ensemble = self.ensemble
        return {
            "task": ensemble.task.name,
            "members": [m.name for m in ensemble.members],
            "device": ensemble.describe_device(),
            "load_s": round(ensemble.load_s, 3),
            "outputs": list(self.outputs),
        }

    def segment(self, folder: Path, output_dir: Path, *, name: str) -> Segmented:
        """Segment the one series in ``folder``; write ``<name>.<format>`` and ``<name>.report.json`` into
        ``output_dir``. Raises PantherError (one line) for a series that cannot be segmented."""
        from pantherseg.api import segment_case
        from pantherseg.io.outputs import output_path

        started = time.perf_counter()
        output_dir.mkdir(parents=True, exist_ok=True)
        result = segment_case(  # checks and orders the formats itself (the SR after its SEG)
            self.ensemble, folder, output_dir=output_dir, name=name, options=self.options.but(report_dir=output_dir)
        )
        paths = {fmt: output_path(output_dir, name, fmt) for fmt in self.outputs}
        written = {Path(p) for p in result.report.output.paths}
        missing = [fmt for fmt, path in paths.items() if path not in written]
        if missing:
            raise InputError(f"series in {folder}: the run wrote no {', '.join(missing)} output")
        return Segmented(paths=paths, report=result.report, seconds=time.perf_counter() - started)
