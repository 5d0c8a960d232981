"""pantherseg.io.host_memory: the platform's job memory (GRAND_CHALLENGE_COMPONENT_MAX_MEMORY_MB) in the checks."""

from __future__ import annotations

import pytest

from pantherseg.errors import ResourceError
from pantherseg.io import host_memory

MIB = 1024**2


@pytest.fixture
def plain_machine(tmp_path, monkeypatch):
    """16 GB available by meminfo, no cgroup limit, no rlimit; VmData 300 MB."""
    (tmp_path / "meminfo").write_text(f"MemAvailable: {16 * 1024**2} kB\n")
    (tmp_path / "status").write_text(f"Name:\tpython\nVmRSS:\t{100 * 1024} kB\nVmData:\t{300 * 1024} kB\n")
    monkeypatch.setattr(host_memory, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(host_memory, "_PROC_STATUS", tmp_path / "status")
    monkeypatch.setattr(host_memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(host_memory, "_data_rlimit", lambda: None)
    monkeypatch.delenv(host_memory.PLATFORM_MEMORY_VARIABLE, raising=False)
    return monkeypatch


def test_without_the_variable_meminfo_decides(plain_machine):
    assert host_memory.available_bytes() == 16 * 1024**3


def test_the_platforms_job_memory_minus_the_data_segment_is_the_limit(plain_machine):
    plain_machine.setenv(host_memory.PLATFORM_MEMORY_VARIABLE, "7168")  # grand-challenge's default job: 7 GB
    assert host_memory.available_bytes() == (7168 - 300) * MIB


@pytest.mark.parametrize("value", ["0", "", "lots", "-5"])
def test_zero_empty_or_malformed_values_set_no_limit(plain_machine, value):
    plain_machine.setenv(host_memory.PLATFORM_MEMORY_VARIABLE, value)
    assert host_memory.available_bytes() == 16 * 1024**3


def test_the_rlimit_the_platforms_shim_sets_counts_too(plain_machine):
    plain_machine.setenv(host_memory.PLATFORM_MEMORY_VARIABLE, "7168")
    plain_machine.setattr(host_memory, "_data_rlimit", lambda: 2048 * MIB)
    assert host_memory.available_bytes() == (2048 - 300) * MIB


def test_an_image_too_large_for_the_job_is_refused_with_distinct_figures(plain_machine):
    plain_machine.setenv(host_memory.PLATFORM_MEMORY_VARIABLE, "700")
    with pytest.raises(
        ResourceError,
        match=r"needs about 0\.37 GB just to be read, but only 0\.39 GB is available "
        r"\(90% of it, 0\.35 GB, is planned for\)",
    ):
        host_memory.check_image_fits((320, 320, 560), 2, source="big.mha")  # 57 M voxels x 7 bytes


def test_the_real_rlimit_is_read():
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    assert host_memory._data_rlimit() == (None if soft == resource.RLIM_INFINITY else soft)
