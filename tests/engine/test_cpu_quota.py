"""Thread counts follow the cgroup CPU quota (fake cgroup trees), not the host's cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from pantherseg.engine.cpu_quota import available_cpus, cpu_quota


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_docker_cpus_4_on_a_64_core_host(tmp_path):
    # docker --cpus 4 with a cgroup namespace: /proc/self/cgroup says "0::/", cpu.max at the root.
    _write(tmp_path / "proc", "0::/\n")
    _write(tmp_path / "cg" / "cpu.max", "400000 100000\n")
    assert cpu_quota(tmp_path / "cg", tmp_path / "proc") == 4.0
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=64) == 4


def test_cgroup_v2_nested_limit_and_unlimited_leaf(tmp_path):
    _write(tmp_path / "proc", "0::/kubepods/pod1/ctr\n")
    _write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    _write(tmp_path / "cg" / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")  # 2.5 CPUs on the pod
    _write(tmp_path / "cg" / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000\n")
    assert cpu_quota(tmp_path / "cg", tmp_path / "proc") == 2.5
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=16) == 2  # fractions round down


def test_cgroup_v1_cfs_quota(tmp_path):
    _write(tmp_path / "proc", "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n1:cpuset:/\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert cpu_quota(tmp_path / "cg", tmp_path / "proc") == 3.0
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=32) == 3


def test_cgroup_v1_host_path_absent_inside_the_container_uses_the_mount_root(tmp_path):
    _write(tmp_path / "proc", "3:cpu,cpuacct:/docker/0123abcd\n")
    _write(tmp_path / "cg" / "cpu" / "cpu.cfs_quota_us", "200000\n")
    _write(tmp_path / "cg" / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=8) == 2


@pytest.mark.parametrize("quota,period", [("-1", "100000"), ("0", "100000"), ("garbage", "100000"), ("5", "0")])
def test_no_or_unreadable_quota_means_the_affinity(tmp_path, quota, period):
    _write(tmp_path / "proc", "2:cpu:/\n")
    _write(tmp_path / "cg" / "cpu" / "cpu.cfs_quota_us", quota)
    _write(tmp_path / "cg" / "cpu" / "cpu.cfs_period_us", period)
    assert cpu_quota(tmp_path / "cg", tmp_path / "proc") is None
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=6) == 6


def test_affinity_caps_a_larger_quota_and_a_tiny_quota_still_gets_one_thread(tmp_path):
    _write(tmp_path / "proc", "0::/\n")
    _write(tmp_path / "cg" / "cpu.max", "800000 100000\n")
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=2) == 2
    _write(tmp_path / "cg" / "cpu.max", "50000 100000\n")
    assert available_cpus(tmp_path / "cg", tmp_path / "proc", affinity=2) == 1


def test_missing_files_mean_no_quota(tmp_path):
    assert cpu_quota(tmp_path / "nothing", tmp_path / "no-proc") is None
    assert available_cpus(tmp_path / "nothing", tmp_path / "no-proc", affinity=3) == 3


def test_this_machine_gives_a_sane_count():
    assert 1 <= available_cpus() <= 4096
