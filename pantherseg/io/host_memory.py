"""How much memory this process may still use, and whether an image's voxels can even be read.

A process that runs out of memory on grand-challenge is killed (exit 137, "out of memory") and leaves
no mask and no readable reason. So image reading (``pantherseg.io.images.read_volume``) asks, from the
file header alone and before any voxel is read:

- :func:`check_voxel_count`: no more voxels than any abdominal MRI has (``MAX_VOXELS``);
- :func:`check_image_fits`: the voxels, as read and as float32, fit in :func:`available_bytes`.

The prediction's own peak is estimated once the ensemble is known, on the engine side
(:mod:`pantherseg.engine.memory_estimate`), against the same :func:`available_bytes`.

On grand-challenge the job's memory is also given as ``GRAND_CHALLENGE_COMPONENT_MAX_MEMORY_MB``
(MiB; 0 or absent: no limit), which the platform's SageMaker shim turns into the process's
``RLIMIT_DATA`` (``setrlimit(RLIMIT_DATA, MB * 1024 * 1024)``, read in grand-challenge's
sagemaker-shim). That limit counts the process's data segment (``VmData``: private writable
mappings, not only resident pages), so its headroom is the limit minus ``VmData``.
"""

from __future__ import annotations

import logging
import math
import os
import resource
from pathlib import Path
from typing import Sequence

from pantherseg.errors import ResourceError
from pantherseg.io.cgroup import CGROUP_ROOT, PROC_CGROUP, controller_folders

GB = 1024**3
FLOAT32 = 4
# Only this fraction of the available memory is planned for: allocator overhead, Python objects,
# libraries' own scratch buffers and estimation error need the rest.
USABLE_FRACTION = 0.9

_CGROUP_ROOT = CGROUP_ROOT
_MEMINFO = Path("/proc/meminfo")
_PROC_STATUS = Path("/proc/self/status")
PLATFORM_MEMORY_VARIABLE = "GRAND_CHALLENGE_COMPONENT_MAX_MEMORY_MB"
_PROC_CGROUP = PROC_CGROUP
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number close to 2^63
# 2^28 voxels (e.g. 640^3): 11 times the largest PANTHER training image (88 x 466 x 570).
MAX_VOXELS = 1 << 28


log = logging.getLogger(__name__)


def gb(value: float, decimals: int = 1) -> str:
    """``1.5 GB``; beyond a million GB in powers of ten, so a 1e300 mm spacing does not print 300 digits."""
    value = value / GB
    return f"{value:.{decimals}f} GB" if value < 1e6 else f"{value:.2g} GB"


def distinct_sizes(*values: float) -> list[str]:
    """``values`` (bytes) in GB with the fewest decimals, from 1 to 3, that keep different values looking
    different ("needs 0.33 GB, 0.31 GB usable", never "0.3 GB ... 0.3 GB"); then in MB, then in bytes."""
    formats = [lambda v, d=d: gb(v, d) for d in (1, 2, 3)]
    formats += [lambda v, d=d: f"{v / 1024**2:.{d}f} MB" for d in (1, 3)]
    for format_size in formats:
        texts = [format_size(v) for v in values]
        if len(set(texts)) == len(set(values)):
            return texts
    return [f"{int(v)} bytes" for v in values]


def shortfall(needed: int, available: int, *, purpose: str = "") -> str:
    """ "needs about X<purpose>, but only Y is available (90% of it, Z, is planned for)": figures that
    differ where they differ, and the fraction that explains why X < Y can still be refused."""
    usable = int(available * USABLE_FRACTION)
    needed_text, available_text, usable_text = distinct_sizes(needed, available, usable)
    return (
        f"needs about {needed_text}{purpose}, but only {available_text} is available "
        f"({USABLE_FRACTION:.0%} of it, {usable_text}, is planned for)"
    )


# --- what is available ---------------------------------------------------------------------------


def available_bytes() -> int | None:
    """Bytes this process can still allocate: the smallest of the cgroup's headroom (v2 memory.max,
    v1 memory.limit_in_bytes, minus current usage), /proc/meminfo's MemAvailable and the platform's job
    memory (``GRAND_CHALLENGE_COMPONENT_MAX_MEMORY_MB`` or ``RLIMIT_DATA``, minus ``VmData``); None if unknown."""
    candidates = [
        value for value in (_cgroup_headroom(), _meminfo_available(), _platform_headroom()) if value is not None
    ]
    return min(candidates) if candidates else None


def _platform_headroom() -> int | None:
    """The job's memory as grand-challenge gives it (environment, and the rlimit its shim sets) minus the
    data segment this process already has."""
    limits = [limit for limit in (_platform_limit(), _data_rlimit()) if limit is not None]
    if not limits:
        return None
    return max(0, min(limits) - _data_segment_bytes())


def _platform_limit() -> int | None:
    text = os.environ.get(PLATFORM_MEMORY_VARIABLE, "").strip()
    if not text:
        return None
    try:
        megabytes = int(text)
    except ValueError:
        log.warning("%s=%r is not a whole number of MB; ignored", PLATFORM_MEMORY_VARIABLE, text)
        return None
    return megabytes * 1024**2 if megabytes > 0 else None  # 0: the shim sets no limit


def _data_rlimit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def _data_segment_bytes() -> int:
    """``VmData`` of /proc/self/status: what RLIMIT_DATA is checked against; 0 if unknown."""
    try:
        for line in _PROC_STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """The tightest limit minus usage over this process's cgroup and its ancestors, v2 or v1."""
    headrooms = []
    for folder, limit_name, usage_name in _cgroup_folders():
        limit = _read_int(folder / limit_name)
        if limit is None or limit >= _UNLIMITED:
            continue
        # Page cache counts as usage but is given back under pressure, as docker and the kubelet reckon it.
        usage = (_read_int(folder / usage_name) or 0) - _inactive_file(folder)
        headrooms.append(max(0, limit - max(0, usage)))
    return min(headrooms) if headrooms else None


# The files of a memory limit and of the usage it is checked against, by cgroup version.
_LIMIT_FILES = {2: ("memory.max", "memory.current"), 1: ("memory.limit_in_bytes", "memory.usage_in_bytes")}


def _cgroup_folders():
    """(folder, limit file, usage file) for the process's own cgroup, its ancestors, and the mount roots."""
    return [
        (folder, *_LIMIT_FILES[version]) for folder, version in controller_folders("memory", _CGROUP_ROOT, _PROC_CGROUP)
    ]


def _inactive_file(folder: Path) -> int:
    try:
        for line in (folder / "memory.stat").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(" ")
            if key in ("total_inactive_file", "inactive_file"):
                return int(value)
    except (OSError, ValueError):
        return 0
    return 0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


# --- what is needed ------------------------------------------------------------------------------


def image_read_bytes(voxels: int, bytes_per_voxel: int) -> int:
    """Reading an image: SimpleITK's copy in its pixel type, the float32 copy for nnU-Net, a finite mask."""
    return voxels * (bytes_per_voxel + FLOAT32 + 1)


def check_image_fits(size: Sequence[int], bytes_per_voxel: int, *, source: str) -> None:
    """Refuse, from the header alone, an image whose voxels cannot even be read into memory."""
    available = available_bytes()
    if available is None:
        return
    needed = image_read_bytes(math.prod(int(s) for s in size), bytes_per_voxel)
    if needed > available * USABLE_FRACTION:
        raise ResourceError(
            f"{source}: the image is too large for this machine: its size {list(size)} (x,y,z) "
            f"{shortfall(needed, available, purpose=' just to be read')}; crop or downsample it, or use a machine "
            f"with more RAM."
        )


def check_voxel_count(size: Sequence[int], *, source: str) -> None:
    """Refuse, from the header alone, more voxels than any abdominal MRI has (``MAX_VOXELS``).

    Why a fixed bound besides the memory check: a compressed file can claim a size it does not hold
    (a 1.3 MB zlib bomb claims 1100^3 voxels) and on a large machine the memory check would let it be
    decompressed; and such an image could not be segmented within the time budget anyway.
    """
    voxels = math.prod(int(s) for s in size)
    if voxels > MAX_VOXELS:
        raise ResourceError(
            f"{source}: the header claims {voxels:.3g} voxels (size {list(size)} (x,y,z)), more than the "
            f"{MAX_VOXELS:.3g} this container segments (the largest PANTHER image has 2.3e7); refused before "
            f"reading or decompressing the voxels. Crop or downsample the image."
        )
