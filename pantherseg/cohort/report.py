"""The cohort report: one row per case (CSV and JSON), totals, cases per hour.

Row status:
- ``done``: the mask and its run report were written;
- ``skipped``: a mask made with the same run hash was already there (see resume.py);
- ``error``: the case could not be segmented (unreadable file, wrong dimension, refused geometry,
  out of memory, ...); ``error`` holds the one-line reason; no mask was written;
- ``worker-died``: the worker process died on this case (killed, out of memory) on every one of its
  ``attempts``.

Times per stage (read, preprocess, network, export, ensemble, write) are the case's own, from its run
report; ``seconds`` is the worker's wall time for the case. ``quality_score`` (in [0, 1], 1 = the members
agree; sort on it to read the doubtful cases first), ``review`` and ``review_reasons`` come from the run
report's quality block (docs/quality.md). ``cases_per_hour`` counts done cases over
the cohort's wall time (start of the run to the last case, ensemble loading included).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pantherseg.io.files import write_text_atomically
from pantherseg.run_report import RunReport

STATUSES = ("done", "skipped", "error", "worker-died")
STAGES = ("read", "preprocess", "network", "export", "ensemble", "write")


@dataclass
class CaseRow:
    name: str
    input: str
    status: str
    output: str | None = None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0
    stages_s: dict[str, float] = field(default_factory=dict)
    members_used: list[str] = field(default_factory=list)
    device: str | None = None
    worker: str | None = None
    quality_score: float | None = None
    review: bool | None = None
    review_reasons: list[str] = field(default_factory=list)

    def take_report(self, report: RunReport) -> None:
        """The case's mask, members, device, stage times and quality, from its run report."""
        self.output = report.output.path
        self.members_used = report.members_used
        self.device = report.device
        self.stages_s = {stage: seconds for stage, seconds in report.timings_s.items() if stage != "load"}
        quality = report.quality
        if quality:
            self.quality_score, self.review = quality.get("score"), quality.get("review")
            self.review_reasons = [str(reason) for reason in quality.get("reasons", [])]


@dataclass
class CohortReport:
    run_hash: str
    task: str
    output_dir: str
    runner: str  # "local" or "ray"
    part: tuple[int, int] = (0, 1)  # (part id, number of parts)
    rows: list[CaseRow] = field(default_factory=list)
    wall_s: float = 0.0
    workers: list[dict] = field(default_factory=list)  # per worker: name, device, ensemble load seconds
    worker_deaths: int = 0

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)

    @property
    def failed(self) -> list[CaseRow]:
        return [row for row in self.rows if row.status in ("error", "worker-died")]

    def totals(self) -> dict:
        done = [row for row in self.rows if row.status == "done"]
        stage_s = {stage: round(sum(row.stages_s.get(stage, 0.0) for row in done), 3) for stage in STAGES}
        return {
            "cases": len(self.rows),
            **{status: self.count(status) for status in STATUSES},
            "worker_deaths": self.worker_deaths,
            "wall_s": round(self.wall_s, 3),
            "review": sum(row.review is True for row in self.rows),
            "cases_per_hour": round(len(done) * 3600 / self.wall_s, 1) if done and self.wall_s > 0 else 0.0,
            "case_seconds_mean": round(sum(row.seconds for row in done) / len(done), 3) if done else None,
            "stage_s": stage_s,
        }

    def as_dict(self) -> dict:
        return {
            "run_hash": self.run_hash,
            "task": self.task,
            "output_dir": self.output_dir,
            "runner": self.runner,
            "part": {"id": self.part[0], "of": self.part[1]},
            "workers": self.workers,
            "totals": self.totals(),
            "cases": [asdict(row) for row in sorted(self.rows, key=lambda r: r.name)],
        }

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "name",
                "status",
                "attempts",
                "seconds",
                *(f"{s}_s" for s in STAGES),
                "members_used",
                "device",
                "worker",
                "input",
                "output",
                "error",
                "quality_score",
                "review",
                "review_reasons",
            ]
        )
        for row in sorted(self.rows, key=lambda r: r.name):
            writer.writerow(
                [
                    row.name,
                    row.status,
                    row.attempts,
                    f"{row.seconds:.3f}",
                    *(_seconds(row.stages_s.get(stage)) for stage in STAGES),
                    ";".join(row.members_used),
                    row.device or "",
                    row.worker or "",
                    row.input,
                    row.output or "",
                    row.error or "",
                    "" if row.quality_score is None else f"{row.quality_score:.4f}",
                    "" if row.review is None else str(row.review).lower(),
                    ";".join(row.review_reasons),
                ]
            )
        return buffer.getvalue()

    def write(self, stem: Path | str) -> tuple[Path, Path]:
        """Write ``<stem>.csv`` and ``<stem>.json`` (each atomically); returns both paths."""
        stem = Path(stem)
        csv_path = write_text_atomically(stem.with_name(stem.name + ".csv"), self.csv_text())
        json_path = write_text_atomically(
            stem.with_name(stem.name + ".json"), json.dumps(self.as_dict(), indent=2) + "\n"
        )
        return csv_path, json_path

    def summary(self) -> str:
        totals = self.totals()
        return (
            f"{totals['cases']} case(s): {totals['done']} done, {totals['skipped']} skipped, "
            f"{totals['error'] + totals['worker-died']} failed; {totals['wall_s']:.1f} s, "
            f"{totals['cases_per_hour']:.0f} cases/hour; {totals['review']} flagged for quality review"
        )


def report_stem(output_dir: Path | str, part: tuple[int, int]) -> Path:
    """``cohort_report`` for a whole cohort, ``cohort_report.part-K-of-N`` for part K of N."""
    part_id, num_parts = part
    suffix = "" if num_parts == 1 else f".part-{part_id}-of-{num_parts}"
    return Path(output_dir) / f"cohort_report{suffix}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
