"""The cohort on a local Ray instance with 2 CPUs (pantherseg.cohort.ray_runner): two workers, each
loading the ensemble once; bad cases are error rows; masks equal the single-process route; a rerun
skips every finished case; a worker killed in the middle of a case is replaced and the case retried.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from pantherseg.cohort.progress import CohortProgress
from pantherseg.cohort.run import run_cohort
from pantherseg.paths import default_weights

from cohort_fixtures import BAD, GOOD, read_mask, requires_zoo, shared_reference_masks, small_config, write_cohort

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pantherseg[ray]'")
pytestmark = requires_zoo


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return write_cohort(root / "cases"), small_config(root / "config.json")


def run_on_ray(cohort, out, progress=None, max_retries=2):
    from pantherseg.cohort.ray_runner import RayOptions

    cases, config = cohort
    return run_cohort(
        cases,
        output_dir=out,
        config=config,
        weights=default_weights(),
        device="cpu",
        backend="torch",
        time_budget_s=float("inf"),
        ray=RayOptions(cpus_per_worker=1, max_retries=max_retries),
        progress=progress,
    )


@pytest.fixture(scope="module")
def first_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "masks"
    return out, run_on_ray(cohort, out)


def test_two_workers_share_the_cohort_and_bad_cases_are_error_rows(first_run):
    out, report = first_run
    assert {row.name: row.status for row in report.rows} == {
        **dict.fromkeys(GOOD, "done"),
        **dict.fromkeys(BAD, "error"),
    }
    assert all(BAD[row.name] in row.error for row in report.failed)
    assert len(report.workers) == 2 and all("cpu" in w["device"] for w in report.workers)
    assert {row.worker for row in report.rows} <= {w["worker"] for w in report.workers}
    assert report.runner == "ray" and report.worker_deaths == 0
    assert (out / "cohort_report.csv").is_file()


def test_masks_equal_the_single_process_route(first_run, tmp_path_factory):
    out, _ = first_run
    reference = shared_reference_masks(tmp_path_factory, one_cpu=True)  # each worker has one CPU
    for name in GOOD:
        np.testing.assert_array_equal(read_mask(out / f"{name}.mha"), reference[name], err_msg=name)
    assert any(mask.any() for mask in reference.values())


@pytest.mark.slow  # the default run checks resuming in test_cohort_local.py; the skip decision is the same code
def test_a_rerun_skips_every_finished_case(first_run, cohort):
    out, _ = first_run
    again = run_on_ray(cohort, out)
    assert {row.name for row in again.rows if row.status == "skipped"} == set(GOOD)
    assert {row.name for row in again.rows if row.status == "error"} == set(BAD)


class KillOneWorker(CohortProgress):
    """SIGKILLs the worker that starts the third case, shortly after it started (mid-case)."""

    def __init__(self):
        self.started = 0
        self.killed_pid = None
        self.retried = []

    def case_started(self, case, worker):
        self.started += 1
        if self.started == 3:
            self.killed_pid = int(worker.rsplit(":", 1)[1])
            threading.Timer(0.3, os.kill, (self.killed_pid, signal.SIGKILL)).start()

    def case_retried(self, case, worker, attempt, reason):
        self.retried.append((case.name, attempt))


def test_a_killed_worker_is_replaced_and_the_cohort_completes(cohort, tmp_path):
    killer = KillOneWorker()
    report = run_on_ray(cohort, tmp_path / "masks", progress=killer)
    assert killer.killed_pid is not None
    assert report.worker_deaths == 1 and len(killer.retried) == 1
    status = {row.name: row.status for row in report.rows}
    assert status == {**dict.fromkeys(GOOD, "done"), **dict.fromkeys(BAD, "error")}
    [retried] = [row for row in report.rows if row.attempts == 2]
    assert retried.name == killer.retried[0][0] and not retried.worker.endswith(f":{killer.killed_pid}")
    assert all((tmp_path / "masks" / f"{name}.mha").is_file() for name in GOOD)
    assert not list((tmp_path / "masks").glob(".*partial*"))  # no half-written file left by the dead worker


class KillWhoeverRunsCase0(CohortProgress):
    """SIGKILLs the worker of every attempt at case0: a case that always kills its worker (like an OOM)."""

    def __init__(self):
        self.kills = 0

    def case_started(self, case, worker):
        if case.name == "case0":
            self.kills += 1
            # At once: the case is in flight on that actor; a timer let the (now faster) case finish first.
            os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)


@pytest.mark.slow
def test_a_case_that_always_kills_its_worker_is_retried_a_bounded_number_of_times_then_reported(cohort, tmp_path):
    killer = KillWhoeverRunsCase0()
    report = run_on_ray(cohort, tmp_path / "masks", progress=killer, max_retries=2)
    [row] = [row for row in report.rows if row.name == "case0"]
    assert row.status == "worker-died" and row.attempts == 3 and "died on each of 3 attempts" in row.error
    assert killer.kills == 3 and report.worker_deaths == 3
    assert {r.name for r in report.rows if r.status == "done"} == set(GOOD) - {"case0"}
    assert not (tmp_path / "masks" / "case0.mha").exists()


def test_a_worker_that_cannot_load_the_ensemble_stops_the_cohort_with_its_one_line_error(cohort, tmp_path, capsys):
    from pantherseg.cli import main

    cases, config = cohort
    code = main(
        [
            "predict",
            "-i",
            str(cases),
            "-o",
            str(tmp_path),
            "--config",
            str(config),
            "--device",
            "tpu",
            "--ray",
            "--ray-cpus-per-worker",
            "1",
            "-q",
        ]
    )
    assert code == 4  # a device mistake is a ConfigError (docs/robustness.md)
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "pantherseg error: Device must be auto, cpu or cuda[:N], found 'tpu'."
    )
    assert not list(tmp_path.glob("*.mha"))


@pytest.mark.slow
def test_a_worker_constructor_that_crashes_is_not_restarted_forever(tmp_path):
    from pantherseg.cohort.cases import Case
    from pantherseg.cohort.ray_runner import RayOptions, run_ray
    from pantherseg.cohort.worker import CohortSettings
    from pantherseg.config import EnsembleConfig
    from pantherseg.errors import ResourceError
    from pantherseg.options import RunOptions

    # A task entry of None: AttributeError in the worker's constructor, never in the driver.
    broken = CohortSettings(
        options=RunOptions(config=EnsembleConfig(tasks={"t1": None}), weights=default_weights(), device="cpu"),
        output_dir=str(tmp_path),
        run_hash="h",
    )
    with pytest.raises(ResourceError, match="A Ray worker could not load the ensemble: AttributeError: 'NoneType'"):
        run_ray([Case("a", tmp_path / "a.mha")], broken, RayOptions(cpus_per_worker=1), CohortProgress(), [])
