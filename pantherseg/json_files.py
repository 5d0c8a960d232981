"""Reading a JSON file that came from someone else: one bounded, strict reader for all of them.

Configs, plans.json and dataset.json of an uploaded model, grand-challenge's inputs.json, run reports
found in an output folder, a DICOM node's node.json: every untrusted JSON file the package reads goes
through :func:`read_json_object`, so each gets the same limits and the same one-line refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

# Untrusted JSON (configs, model files, grand-challenge's inputs.json) is small: a winners' plans.json is 20 KB.
MAX_JSON_BYTES = 16 << 20
# No number the package reads needs more digits; Python's own limit (4300) is a setting, not a contract.
MAX_JSON_DIGITS = 40


def read_json_object(
    path: Path | str,
    *,
    error: type,
    what: str,
    missing: str | None = None,
    max_bytes: int = MAX_JSON_BYTES,
    top: type = dict,
):
    """Decode the JSON file ``path`` (a ``top`` value, an object by default) from an untrusted source.

    Every failure is ``error`` (a PantherError class) with one line that starts with ``what`` and the path:
    a missing file (``missing`` replaces the start of that message), a FIFO, device or folder (refused
    from its status, before anything is read: opening a FIFO to read would wait for a writer), more than
    ``max_bytes``, text that is not UTF-8 or not JSON, integers of more than
    :data:`MAX_JSON_DIGITS` digits, brackets nested too deeply, and a top-level value of another type."""
    import os
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{missing or what + ' not found'}: expected a JSON file at {path}.") from None
    except OSError as failure:
        raise error(f"{what} {path} cannot be read: {failure.strerror or failure}.") from failure
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(status.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(status.st_mode)
                else "a device or socket"
            )
            raise error(f"{what} {path} is {kind}, expected a regular JSON file; refused.")
        if status.st_size > max_bytes:
            raise error(
                f"{what} {path} is {status.st_size} bytes, more than the {max_bytes} a JSON file of this "
                f"kind may have; refused."
            )
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = None
            data = handle.read(max_bytes + 1)
    except OSError as failure:
        raise error(f"{what} {path} cannot be read: {failure.strerror or failure}.") from failure
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{what} {path} grew beyond {max_bytes} bytes while being read; refused.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"{what} {path} is not UTF-8 text: {failure.reason} at byte {failure.start}.") from failure
    try:
        value = json.loads(text, parse_int=_bounded_int)  # NaN and Infinity decode: schemas refuse them
    except json.JSONDecodeError as failure:
        raise error(
            f"{what} {path} is not valid JSON: {failure.msg} at line {failure.lineno}, column {failure.colno}."
        ) from failure
    except (ValueError, RecursionError) as failure:
        reason = "it is nested too deeply" if isinstance(failure, RecursionError) else str(failure).split(";")[0]
        raise error(f"{what} {path} cannot be decoded: {reason}.") from failure
    if not isinstance(value, top):
        expected = "a JSON object" if top is dict else f"a JSON {top.__name__}"
        raise error(f"{what} {path} must hold {expected}, found {type(value).__name__}.")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_JSON_DIGITS})")
    return int(text)
