"""The node's spool folder: every received instance on disk, durably, before its C-STORE is acknowledged.

Layout (docs/dicom-node.md, "What is written where"):

    SPOOL/journal.sqlite                                  the journal (pantherseg.node.journal)
    SPOOL/tmp/                                            instances being written (same file system)
    SPOOL/incoming/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm   instances of series still arriving
    SPOOL/jobs/<job id>/input/<SOPInstanceUID>.dcm       a completed series, moved here in one rename
    SPOOL/jobs/<job id>/output/                           its SEG, RTSTRUCT (and SR) and the run report
    SPOOL/dead-letter/                                    results no destination took (pantherseg.node.sender)

An instance is written to ``tmp/`` (write, fsync), renamed into its series folder and the folder fsynced, so a
crash leaves either the whole file or none. UIDs name folders and files, so they are checked against the
UID grammar (PS3.5 9.1: digits in dot-separated components, no leading zeros, at most 64 characters) before
they touch a path: nothing like ``..``, ``/`` or a NUL byte can get through.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import InputError, ResourceError

UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
UID_MAX = 64
SUFFIX = ".dcm"


def check_uid(value: object, what: str) -> str:
    """``value`` if it is a valid DICOM UID, else an InputError naming ``what`` and the value found."""
    text = value if isinstance(value, str) else None
    if text is not None:
        text = text.rstrip("\0 ")  # a UI value may be padded to even length with a NUL
    if text is None or len(text) > UID_MAX or not UID.fullmatch(text):
        shown = repr(value)[:80]
        raise InputError(
            f"{what} must be a DICOM UID (digits and dots, no leading zeros, at most {UID_MAX} "
            f"characters), found {shown}."
        )
    return text


@dataclass(frozen=True)
class DiskState:
    total: int
    used: int
    free: int

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used / self.total if self.total else 100.0


class Spool:
    """The folders under ``root``; thread-safe for one process (the node's SCP and completion threads)."""

    def __init__(self, root: Path | str, *, max_disk_use_percent: float = 90.0, min_free_bytes: int = 0):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.incoming = self.root / "incoming"
        self.jobs = self.root / "jobs"
        self.dead_letter = self.root / "dead-letter"
        self.journal_path = self.root / "journal.sqlite"
        self.max_disk_use_percent = max_disk_use_percent
        self.min_free_bytes = min_free_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def create(self) -> "Spool":
        """Make the folders (owner-only: they hold patient data); clear half-written temporaries."""
        for folder in (self.root, self.tmp, self.incoming, self.jobs, self.dead_letter):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp.iterdir():  # a crash mid-write: never acknowledged, the sender resends it
            if leftover.is_file():
                leftover.unlink()
        _fsync_dir(self.root)
        return self

    # --- limits -----------------------------------------------------------------------------------------
    def disk(self) -> DiskState:
        usage = shutil.disk_usage(self.root)
        return DiskState(total=usage.total, used=usage.used, free=usage.free)

    def check_room(self, incoming_bytes: int) -> None:
        """ResourceError if storing ``incoming_bytes`` more would cross the watermark (refuse new stores)."""
        disk = self.disk()
        after_used = disk.used + incoming_bytes
        percent = 100.0 * after_used / disk.total if disk.total else 100.0
        if percent > self.max_disk_use_percent:
            raise ResourceError(
                f"spool disk {percent:.1f}% used after this instance, above the watermark of "
                f"{self.max_disk_use_percent:g}% (max_disk_use_percent; {self.root})"
            )
        if disk.free - incoming_bytes < self.min_free_bytes:
            raise ResourceError(
                f"spool disk would have {max(disk.free - incoming_bytes, 0)} bytes free, less "
                f"than the {self.min_free_bytes} bytes kept free (min_free_bytes; {self.root})"
            )

    # --- paths --------------------------------------------------------------------------------------------
    def series_folder(self, study_uid: str, series_uid: str) -> Path:
        return self.incoming / check_uid(study_uid, "StudyInstanceUID") / check_uid(series_uid, "SeriesInstanceUID")

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.series_folder(study_uid, series_uid) / (check_uid(sop_uid, "SOPInstanceUID") + SUFFIX)

    def job_folder(self, job_id: int) -> Path:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
            raise ValueError(f"job id must be a positive integer, not {job_id!r}")
        return self.jobs / str(job_id)

    def job_input(self, job_id: int) -> Path:
        return self.job_folder(job_id) / "input"

    def job_output(self, job_id: int) -> Path:
        return self.job_folder(job_id) / "output"

    def series_lock(self, series_uid: str) -> threading.Lock:
        """One lock per series: a store into its folder and the move of the folder never overlap."""
        with self._locks_lock:
            return self._locks.setdefault(series_uid, threading.Lock())

    # --- writing --------------------------------------------------------------------------------------------
    def write_temporary(self, data: bytes) -> Path:
        """``data`` in ``tmp/`` written and fsynced; the caller renames it into place with :meth:`place`."""
        path = self.tmp / f"{uuid.uuid4().hex}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return path

    def place(self, temporary: Path, study_uid: str, series_uid: str, sop_uid: str) -> tuple[Path, int]:
        """Rename a written temporary to its instance path (replacing a resent copy); fsync the folders.

        Returns (path, bytes of the copy it replaced, 0 if none). Call with :meth:`series_lock` held."""
        target = self.instance_path(study_uid, series_uid, sop_uid)
        created = _make_dirs(target.parent, stop=self.incoming)
        replaced = target.stat().st_size if target.exists() else 0
        os.replace(temporary, target)
        _fsync_dir(target.parent)
        for folder in created:
            _fsync_dir(folder.parent)
        return target, replaced

    def take_series(self, study_uid: str, series_uid: str, job_id: int) -> Path:
        """Move a series' folder to ``jobs/<job_id>/input`` (one rename); call with its series lock held."""
        source = self.series_folder(study_uid, series_uid)
        target = self.job_input(job_id)
        if target.exists():  # taken before a crash, the journal not yet updated
            return target
        if not source.is_dir():
            raise InputError(f"series {series_uid}: no received instances in {source}")
        _make_dirs(target.parent, stop=self.jobs)
        os.rename(source, target)
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)
        try:
            source.parent.rmdir()  # the study folder, when it held only this series
            _fsync_dir(self.incoming)
        except OSError:
            pass
        return target

    def incoming_instances(self):
        """(study, series, sop, path, bytes) of every instance file under ``incoming/`` (for start-up checks)."""
        for study in sorted(self.incoming.iterdir()):
            if not study.is_dir() or not UID.fullmatch(study.name):
                continue
            for series in sorted(study.iterdir()):
                if not series.is_dir() or not UID.fullmatch(series.name):
                    continue
                for path in sorted(series.iterdir()):
                    sop = path.name[: -len(SUFFIX)]
                    if path.is_file() and path.name.endswith(SUFFIX) and UID.fullmatch(sop):
                        yield study.name, series.name, sop, path, path.stat().st_size

    def remove_job_input(self, job_id: int) -> None:
        shutil.rmtree(self.job_input(job_id), ignore_errors=True)


def _make_dirs(folder: Path, *, stop: Path) -> list[Path]:
    """mkdir -p up to ``stop`` (owner-only); returns the folders created, outermost first."""
    missing = []
    current = folder
    while current != stop and not current.exists():
        missing.append(current)
        current = current.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
            created.append(path)
        except FileExistsError:
            pass
    return created


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
