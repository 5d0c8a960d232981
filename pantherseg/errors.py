"""The one error type users see.

Every failure a user can cause or fix (a bad image, a bad model folder, a bad config, a folder
layout that does not match grand-challenge's) is raised as a ``PantherError`` whose message is a
single line: what was expected, what was found, and where. The command line prints that line as
the last line of stderr and exits non-zero; anything else is a bug and keeps its traceback.
"""


class PantherError(Exception):
    """A problem with the user's input, models or configuration. The message is one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputError(PantherError):
    """The image or the grand-challenge input layout cannot be used."""

    exit_code = 2


class ModelError(PantherError):
    """An ensemble member (folder, plans, dataset.json or checkpoint) cannot be used."""

    exit_code = 3


class ConfigError(PantherError):
    """ensemble_config.json is malformed or names something that does not exist, or a run setting (device,
    precision, backend) is not one this machine can use."""

    exit_code = 4


class OutputError(PantherError):
    """The mask or its report cannot be written (read-only or full disk, a folder in the way)."""

    exit_code = 1


class ResourceError(PantherError):
    """The case cannot be processed within the memory or time available."""

    exit_code = 5


def one_line(text: str, *, last: bool = False, default: str = "unknown error") -> str:
    """One stripped, non-blank line of a library's multi-line message, for a one-line PantherError.

    The first line by default (what went wrong, as torch and Ray put it first); ``last=True`` for a
    traceback, which ends with the exception itself. ``default`` when there is no such line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return default
    return lines[-1] if last else lines[0]


def short_repr(value: object, limit: int = 120) -> str:
    """A bounded repr of a value an error line refuses: nested or huge values (untrusted JSON) show their
    start, never the whole (nor a RecursionError), and the text is cut to ``limit`` characters."""
    import reprlib

    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxlist, bounded.maxtuple, bounded.maxdict = 3, 8, 8, 8
    bounded.maxstring = bounded.maxother = max(limit, 12)
    text = bounded.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
