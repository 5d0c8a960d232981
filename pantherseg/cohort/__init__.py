"""Cohorts: many cases, one ensemble load per worker, resumable, one bad case never stops the rest.

The data flow, one module per step:

    cases.py        list the cohort's image files deterministically, give each a unique output name,
                    split the list for N independent processes (--num-parts / --part-id)
    resume.py       the run hash (config + member weights) and the "already done, skip it" decision
    worker.py       one worker: load the ensemble once, turn each case into a report row (never raises
                    for a bad case)
    local_runner.py the cases one after another in this process
    ray_runner.py   the same worker as Ray actors (one per GPU, or per group of CPU cores); dead
                    workers are replaced and their case retried a bounded number of times
    progress.py     a bar on a terminal, one log line per case elsewhere
    report.py       the cohort report: CSV and JSON rows per case, totals, cases per hour
    run.py          run_cohort(): the steps above in order (what ``pantherseg predict --ray`` calls)

Ray is an optional extra (``pip install pantherseg[ray]``) imported only by ray_runner.py.
"""

from __future__ import annotations

__all__ = ["run_cohort"]


def run_cohort(*args, **kwargs):
    """See :func:`pantherseg.cohort.run.run_cohort` (imported lazily: it pulls in numpy)."""
    from pantherseg.cohort.run import run_cohort as _run_cohort

    return _run_cohort(*args, **kwargs)
