"""The process's control groups, as ``/proc/self/cgroup`` lists them (for its memory and CPU limits).

Each line is ``hierarchy:controllers:path``: hierarchy ``0`` with no controllers is cgroup v2 (one
unified tree); any other line is a v1 hierarchy for the controllers it names (``cpu,cpuacct``,
``memory``). The path is relative to where that hierarchy is mounted, usually ``/sys/fs/cgroup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")


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
        entries.append(CgroupEntry(hierarchy, tuple(c for c in controllers.split(",") if c),
                                   Path(relative.lstrip("/"))))
    return entries
