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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segmented:
    """One series' results: output format -> written file, and the run report (dict, as the API wrote it)."""

    paths: dict[str, Path]
    report: dict
    seconds: float


class Segmenter:
    """Holds the loaded ensemble; :meth:`segment` writes one series' DICOM outputs into a folder."""

    def __init__(self, *, task: str, outputs: tuple[str, ...], weights: Path | None = None,
                 config: Path | None = None, device: str = "auto", time_budget_s: float | None = None,
                 roi_name: str | None = None):
        from pantherseg.api import Ensemble
        from pantherseg.config import load_config
        from pantherseg.paths import default_config, default_weights

        self.config = load_config(config or default_config())
        self.weights = Path(weights) if weights is not None else default_weights()
        self.outputs = tuple(outputs)
        self.time_budget_s = time_budget_s
        self.roi_name = roi_name
        self.ensemble = Ensemble.load(config=self.config, task=task, weights=self.weights, device=device)
        self.ensemble.keep_networks = True  # series after series: build each network once

    def describe(self) -> dict:
        ensemble = self.ensemble
        return {"task": ensemble.task.name, "members": [m.name for m in ensemble.members],
                "device": f"{ensemble.device} ({ensemble.backend}, {ensemble.autocast_dtype or 'float32'})",
                "load_s": round(ensemble.load_s, 3), "outputs": list(self.outputs)}

    def segment(self, folder: Path, output_dir: Path, *, name: str) -> Segmented:
        """Segment the one series in ``folder``; write ``<name>.<format>`` and ``<name>.report.json`` into
        ``output_dir``. Raises PantherError (one line) for a series that cannot be segmented."""
        from pantherseg.api import RunOptions, segment_case
        from pantherseg.io.outputs import check_output_formats

        started = time.perf_counter()
        formats = check_output_formats(self.outputs, [folder])
        output_dir.mkdir(parents=True, exist_ok=True)
        result = segment_case(self.ensemble, folder, output_dir=output_dir, name=name, weights=self.weights,
                              config=self.config, time_budget_s=self.time_budget_s, report_dir=output_dir,
                              options=RunOptions(output_formats=formats, roi_name=self.roi_name))
        written = [Path(p) for p in result.report["output"]["paths"]]
        if len(written) != len(formats):
            raise InputError(f"series in {folder}: expected {len(formats)} output file(s) ({', '.join(formats)}), "
                             f"the run wrote {len(written)}")
        return Segmented(paths=dict(zip(formats, written)), report=result.report,
                         seconds=time.perf_counter() - started)
