"""A member's folder as it may be on disk: regular files and folders, bounded, nothing reached outside.

Checked before any file of the member is opened. A model tarball is untrusted: a symbolic link may
point outside the weights folder or at itself, a FIFO named ``plans.json`` would block the reader
for ever, a device would be read without end, and a folder nested thousands of levels deep makes
recursive walks fail with a traceback. Each is a ModelError (exit 3) naming the path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pantherseg.errors import ModelError
from pantherseg.io.files import TreeLimitError, walk_tree


def check_member_folder(folder: Path, weights_root: Path, owner: str) -> None:
    """Refuse links leaving ``weights_root`` or looping, FIFOs, sockets, devices, and unbounded trees."""
    root = Path(weights_root).resolve()
    _check_link(folder, folder, root, owner)
    try:
        for path, _relative, status in walk_tree(folder):
            if stat.S_ISLNK(status.st_mode):
                _check_link(path, path, root, owner)
            elif not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
                raise ModelError(
                    f"{owner}: {path} is {_kind(status.st_mode)}, not a regular file or folder; "
                    f"a model folder holds files only (refused: reading it could block or never end)."
                )
    except TreeLimitError as error:
        raise ModelError(
            f"{owner}: the model folder {error}; refused (a model folder is a few levels deep)."
        ) from error
    except OSError as error:
        raise ModelError(f"{owner}: cannot list {error.filename or folder}: {error.strerror or error}.") from error


def _check_link(path: Path, shown: Path, root: Path, owner: str) -> None:
    try:
        target = path.resolve(strict=True)
        status = os.stat(target)
    except (RuntimeError, OSError) as error:  # RuntimeError: a loop, as pathlib reports it in Python 3.11
        reason = getattr(error, "strerror", None) or "a symbolic link loop"
        raise ModelError(f"{owner}: {shown} cannot be followed ({reason}); refused.") from error
    if target != root and root not in target.parents:
        raise ModelError(f"{owner}: {shown} links to {target}, outside the weights folder {root}; refused.")
    if not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
        raise ModelError(f"{owner}: {shown} leads to {_kind(status.st_mode)}, not a regular file or folder; refused.")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
