"""pantherseg.cohort.ray_runner.plan_workers: how many Ray actors, with which resources (no Ray needed)."""

from __future__ import annotations

import logging

import pytest

from pantherseg.cohort.ray_runner import RayOptions, plan_workers
from pantherseg.cohort.worker import CohortSettings
from pantherseg.config import EnsembleConfig
from pantherseg.errors import ResourceError
from pantherseg.options import RunOptions


def settings(device="auto") -> CohortSettings:
    return CohortSettings(
        options=RunOptions(config=EnsembleConfig(tasks={}), weights="/w", device=device), output_dir="/o", run_hash="h"
    )


def test_one_worker_per_gpu_with_the_node_cpus_shared_and_cuda_as_its_device():
    plan = plan_workers({"GPU": 4, "CPU": 32}, {"GPU": 4, "CPU": 32}, settings(), RayOptions(), cases=100)
    assert plan.workers == 4
    assert plan.actor_options["num_gpus"] == 1 and plan.actor_options["num_cpus"] == 8
    assert plan.settings.options.device == "cuda" and plan.settings.log_level == logging.WARNING


def test_half_a_gpu_per_worker_puts_two_workers_on_each_gpu():
    plan = plan_workers(
        {"GPU": 2, "CPU": 16}, {"GPU": 2, "CPU": 16}, settings(), RayOptions(gpus_per_worker=0.5), cases=100
    )
    assert plan.workers == 4 and plan.actor_options["num_gpus"] == 0.5 and plan.actor_options["num_cpus"] == 4


def test_cpu_nodes_get_a_worker_per_group_of_cores_with_that_many_threads():
    plan = plan_workers({"CPU": 18}, {"CPU": 18}, settings(), RayOptions(), cases=100)
    assert plan.workers == 4 and plan.actor_options == {"num_cpus": 4, "max_restarts": 3, "max_task_retries": 0}
    assert plan.settings.options.cpu_threads == 4
    plan = plan_workers({"CPU": 2}, {"CPU": 2}, settings(), RayOptions(cpus_per_worker=1, max_retries=0), cases=100)
    assert plan.workers == 2 and plan.settings.options.cpu_threads == 1 and plan.actor_options["max_restarts"] == 1
    # --device cpu on a GPU cluster: CPU workers.
    plan = plan_workers({"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}, settings("cpu"), RayOptions(), cases=100)
    assert "num_gpus" not in plan.actor_options and plan.workers == 2


def test_never_more_workers_than_cases():
    assert plan_workers({"CPU": 64}, {"CPU": 64}, settings(), RayOptions(cpus_per_worker=1), cases=3).workers == 3


def test_a_worker_that_fits_on_no_node_is_refused_up_front():
    with pytest.raises(ResourceError, match=r"needs \{'num_cpus': 16\} but the largest node has"):
        plan_workers({"CPU": 32}, {"CPU": 8}, settings(), RayOptions(cpus_per_worker=16), cases=10)
    with pytest.raises(ResourceError, match="--ray-gpus-per-worker must be in"):
        plan_workers({"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}, settings(), RayOptions(gpus_per_worker=2), cases=10)


def test_without_ray_installed_the_flag_says_how_to_install_it(monkeypatch):
    import sys

    from pantherseg.cohort import ray_runner

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(
        ResourceError, match=r"--ray needs Ray, which is not installed: pip install 'pantherseg\[ray\]'"
    ):
        ray_runner._import_ray()
