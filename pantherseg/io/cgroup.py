"""The process's control groups, as ``/proc/self/cgroup`` lists them, and the folders that hold their
limits (for the memory check, :mod:`pantherseg.io.host_memory`, and the thread count,
:mod:`pantherseg.engine.cpu_quota`).

Each line is ``hierarchy:controllers:path``: hierarchy ``0`` with no controllers is cgroup v2 (one
unified tree); any other line is a v1 hierarchy for the controllers it names (``cpu,cpuacct``,
``memory``). The path is relative to where that hierarchy is mounted, usually ``/sys/fs/cgroup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 mount points a controller may have besides its own name (and its line's controllers joined by commas).
V1_MOUNT_ALIASES = {"cpu": ("cpu,cpuacct",)}


@dataclass(frozen=True)
class CgroupEntry:
    hierarchy: str
    controllers: tuple[str, ...]
    path: Path  # relative to the hierarchy's mount point

    @property
    def unified(self) -> bool:
        """A cgroup v2 line."""
        return self.hierarchy == "0" and self.controllers == ()

    def with_ancestors(self) -> list[Path]:
        """The cgroup's own path, then each ancestor up to the root (limits are inherited)."""
        return [self.path, *self.path.parents]


def cgroup_entries(proc_cgroup: Path = PROC_CGROUP) -> list[CgroupEntry]:
    """The lines of ``proc_cgroup``; none if it cannot be read (not Linux) or a line is malformed."""
    try:
        lines = proc_cgroup.read_text(encoding="ascii").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, relative = parts
        entries.append(
            CgroupEntry(hierarchy, tuple(c for c in controllers.split(",") if c), Path(relative.lstrip("/")))
        )
    return entries


def controller_folders(
    controller: str, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> list[tuple[Path, int]]:
    """(folder, cgroup version) where a limit of ``controller`` ("cpu", "memory") on this process may be
    set: its own cgroup and each ancestor up to the hierarchy's root (limits are inherited, the tightest
    wins), under each place the hierarchy may be mounted, then every mount root, also when
    ``/proc/self/cgroup`` cannot be read or names no such hierarchy. Inside a container without a cgroup
    namespace the listed path is the host's, which does not exist there, and the container's own cgroup
    is the mount root. Folders that do not exist are the reader's to skip."""
    aliases = V1_MOUNT_ALIASES.get(controller, ())
    roots = [(cgroup_root, 2), (cgroup_root / controller, 1), *((cgroup_root / a, 1) for a in aliases)]
    found: list[tuple[Path, int]] = []
    for entry in cgroup_entries(proc_cgroup):
        if entry.unified:
            bases = [(cgroup_root, 2), (cgroup_root / "unified", 2)]
        elif controller in entry.controllers:
            bases = [(cgroup_root / ",".join(entry.controllers), 1), *roots[1:]]
        else:
            continue
        found += [(base / ancestor, version) for base, version in bases for ancestor in entry.with_ancestors()]
    return list(dict.fromkeys(found + roots))  # without repeats, in order
