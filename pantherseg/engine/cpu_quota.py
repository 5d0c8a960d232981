"""How many CPU threads this process should use: its CPU quota, not the host's core count.

``docker run --cpus 4`` (and grand-challenge's 4-vCPU instances, and Kubernetes CPU limits) do not
hide the host's cores: ``os.cpu_count()`` still says 64, and a library that starts 64 threads on a
4-CPU quota is throttled by the kernel in every scheduling period, which makes convolutions several
times slower, not faster. The quota is a cgroup setting:

- cgroup v2: ``cpu.max`` holds ``"<quota> <period>"`` in microseconds, or ``"max <period>"`` for none;
- cgroup v1: ``cpu.cfs_quota_us`` (``-1`` for none) and ``cpu.cfs_period_us`` in the ``cpu`` controller.

The limit is looked up in the process's own cgroup (from ``/proc/self/cgroup``), each of its ancestors
and the mount root (inside a container the cgroup is usually mounted at the root), and the tightest one
wins. The thread count is ``floor(quota / period)`` (at least 1; a fraction of a CPU cannot keep a thread
busy, extra threads only get throttled together), and never more than the CPUs the process may run on
(``os.sched_getaffinity``, which ``taskset`` and ``docker --cpuset-cpus`` set).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from pantherseg.io.cgroup import CGROUP_ROOT, PROC_CGROUP, controller_folders

log = logging.getLogger(__name__)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota, in CPUs (e.g. 4.0 or 1.5), over the process's cgroups; None if unlimited."""
    quotas = [
        quota
        for folder, version in controller_folders("cpu", cgroup_root, proc_cgroup)
        if (quota := _read_quota(folder, version)) is not None
    ]
    return min(quotas) if quotas else None


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP, affinity: int | None = None
) -> int:
    """Threads to use for compute: min(affinity, floor(quota)), at least 1."""
    affinity = affinity_cpus() if affinity is None else affinity
    quota = cpu_quota(cgroup_root, proc_cgroup)
    if quota is None:
        return affinity
    return max(1, min(affinity, math.floor(quota + 1e-9)))


def _read_quota(folder: Path, version: int) -> float | None:
    try:
        if version == 2:
            fields = (folder / "cpu.max").read_text(encoding="ascii").split()
            if len(fields) < 1 or fields[0] == "max":
                return None
            quota, period = int(fields[0]), int(fields[1]) if len(fields) > 1 else 100_000
        else:
            quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="ascii").strip())
            period = int((folder / "cpu.cfs_period_us").read_text(encoding="ascii").strip())
    except (OSError, ValueError, IndexError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def configure_torch_threads() -> int:
    """Set torch's intra-op threads to the available CPUs; returns the count."""
    import torch

    threads = available_cpus()
    if torch.get_num_threads() != threads:
        log.debug("torch threads: %d -> %d (CPU quota / affinity)", torch.get_num_threads(), threads)
        torch.set_num_threads(threads)
    return threads
