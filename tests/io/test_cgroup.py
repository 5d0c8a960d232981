"""pantherseg.io.cgroup: /proc/self/cgroup lines, v1 and v2, as the memory and CPU limits read them."""

from __future__ import annotations

from pathlib import Path

from pantherseg.io.cgroup import cgroup_entries, controller_folders


def test_v1_and_v2_lines_and_their_ancestors(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text(
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/init.scope\n0::/job/step\n"
        "not a cgroup line\n"
    )
    entries = cgroup_entries(proc)
    assert [(e.hierarchy, e.controllers, e.unified) for e in entries] == [
        ("12", ("memory",), False),
        ("4", ("cpu", "cpuacct"), False),
        ("1", ("name=systemd",), False),
        ("0", (), True),
    ]
    assert entries[3].with_ancestors() == [Path("job/step"), Path("job"), Path(".")]
    assert entries[0].path == Path("docker/abc")


def test_no_file_is_no_cgroups(tmp_path):
    assert cgroup_entries(tmp_path / "missing") == []


def test_controller_folders_cover_ancestors_mounts_and_roots(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n")
    root = tmp_path / "cg"
    cpu = controller_folders("cpu", root, proc)
    assert (root / "cpu,cpuacct" / "docker" / "abc", 1) in cpu and (root / "cpu" / "docker", 1) in cpu
    # Own cgroup, ancestors, then the roots (where a container without a cgroup namespace has its own), once each.
    assert controller_folders("memory", root, proc) == [
        (root / "memory" / "docker" / "abc", 1),
        (root / "memory" / "docker", 1),
        (root / "memory", 1),
        (root, 2),
    ]
