"""pantherseg.cohort.progress: one log line per case off a terminal, a tqdm bar on one."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from pantherseg.cohort.cases import Case
from pantherseg.cohort.progress import BarCohortProgress, CohortProgress, LogCohortProgress, make_cohort_progress
from pantherseg.cohort.report import CaseRow


def test_log_lines_count_cases_and_name_the_worker_and_the_reason(caplog):
    progress = LogCohortProgress()
    with caplog.at_level(logging.INFO, logger="pantherseg"):
        progress.start(2, 5)
        progress.case_retried(Case("b", Path("b.mha")), "node:7", 2, "killed")
        progress.case_finished(CaseRow("a", "a.mha", "done", seconds=12.34, worker="node:7"))
        progress.case_finished(CaseRow("b", "b.mha", "error", error="b.mha: expected a 3D volume", worker="node:8"))
    assert caplog.messages == [
        "cohort: 2 case(s) to run, 5 already done (skipped)",
        "b: worker node:7 died (killed); retrying (attempt 2)",
        "[1/2] a: done in 12.3 s (node:7)",
        "[2/2] b: error b.mha: expected a 3D volume (node:8)",
    ]


def test_the_bar_counts_cases_and_failures(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar = BarCohortProgress()
    bar.start(2, 1)
    bar.case_finished(CaseRow("a", "a.mha", "error", error="bad"))
    bar.case_finished(CaseRow("b", "b.mha", "done"))
    bar.close()
    assert "cohort (1 skipped)" in stream.getvalue() and "2/2" in stream.getvalue() and "failed=1" in stream.getvalue()


def test_quiet_is_silent_and_a_pipe_gets_log_lines(monkeypatch):
    assert type(make_cohort_progress(quiet=True)) is CohortProgress
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert type(make_cohort_progress()) is LogCohortProgress
