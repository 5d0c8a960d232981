"""Files written whole or not at all, and files hashed: the one way each is done in the package.

Every output (masks, reports, previews, DICOM objects, cohort reports, ONNX graphs, the model
tarball) goes through :func:`atomic_file`: a reader, a crash or a SIGTERM never sees a half-written
file under the final name. Errors are not translated here; each caller says in its own words what
could not be written.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHUNK_BYTES = 1 << 20


@contextmanager
def atomic_file(path: Path | str, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; when the block ends, the file there is
    flushed to disk and renamed over ``path``. On any error (a SIGTERM turned into an exception
    included) the temporary file is removed and ``path`` is left as it was.

    The temporary name is hidden and unique (``.<name>.partial-<pid>-<random><suffix>``), so concurrent
    runs into one folder never share it; ``suffix`` lets a writer that picks its format by the file
    name ending (SimpleITK) see the right one. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomically(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`; OSError if it cannot."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks; OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def cached_file_sha256(path: Path | str) -> str:
    """:func:`file_sha256`, computed once per (path, size, modification time) in this process.

    Member files are hashed by the cohort's run hash and again by the ONNX and OpenVINO backends
    (which store the checkpoint's hash in their converted graphs); a checkpoint of several hundred MB
    is read once for all of them."""
    status = Path(path).stat()
    return _cached_sha256(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


# Model folders are a handful of levels deep (Dataset/Trainer__Plans__Config/fold_N/file); a tree deeper
# than this or with more entries is not one, and walking it (or the paths it makes) has no useful end.
MAX_TREE_DEPTH = 32
MAX_TREE_ENTRIES = 100_000


class TreeLimitError(ValueError):
    """A folder walk met more depth or more entries than it may visit; the message says which."""


def walk_tree(
    root: Path | str, *, max_depth: int = MAX_TREE_DEPTH, max_entries: int = MAX_TREE_ENTRIES
) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every entry under ``root`` as (path, relative POSIX name, ``lstat`` result), parents before children,
    names sorted; links are reported, never followed. Iterative (no recursion limit to hit); raises
    TreeLimitError beyond ``max_depth`` levels or ``max_entries`` entries, OSError if a folder cannot be listed."""
    root = Path(root)
    pending = [(root, "", 0)]
    seen = 0
    while pending:
        folder, prefix, depth = pending.pop()
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        children = []
        for entry in entries:
            seen += 1
            if seen > max_entries:
                raise TreeLimitError(f"{root} holds more than {max_entries} entries")
            relative = f"{prefix}{entry.name}"
            status = entry.stat(follow_symlinks=False)
            yield Path(entry.path), relative, status
            if entry.is_dir(follow_symlinks=False):
                if depth + 1 >= max_depth:
                    raise TreeLimitError(f"{root} is nested more than {max_depth} folders deep (at {relative})")
                children.append((Path(entry.path), f"{relative}/", depth + 1))
        pending.extend(reversed(children))


def resolves_inside(path: Path | str, folder: Path | str) -> bool:
    """Whether ``path``, links followed, names something inside ``folder`` (links followed too).

    Input images and DICOM slices must not be links out of the folder they were found in: a folder
    handed to the run must not make it read other files (``/etc/...``, another case's data)."""
    return Path(folder).resolve() in Path(path).resolve().parents
