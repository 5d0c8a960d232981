"""``pantherseg install-weights ARCHIVE... --to WEIGHTS_ROOT``: install downloaded nnU-Net model archives.

The archives are nnU-Net's pretrained-model layout (what ``nnUNetv2_export_model_to_zip`` writes and
``nnUNetv2_install_pretrained_model_from_zip`` extracts into ``nnUNet_results``): names
``DatasetNNN_Name/Trainer__Plans__Configuration/...``, each model folder with ``plans.json``,
``dataset.json`` and ``fold_N/checkpoint_*.pth``. ``.zip`` and ``.tar.gz`` (``.tgz``) are read.

A downloaded archive is untrusted, so unlike nnU-Net's ``extractall`` this module:

1. reads every archive's table of contents first (a zip's central directory; a tar.gz is decompressed
   once to list it, which also checks the gzip CRC-32) and refuses, before anything is written: names
   that are absolute, climb out with ``..``, hold backslashes, NUL or empty parts, or are too long;
   anything but regular files and folders (links, devices, FIFOs); encrypted zip members; the same name
   twice, or a file where another entry needs a folder; more than ``MAX_ENTRIES`` entries, a file over
   ``MAX_FILE_BYTES`` or all over ``MAX_TOTAL_BYTES``; names outside ``DatasetNNN_Name/`` folders; model
   folders without plans.json, dataset.json or a checkpoint; a model folder the target already holds
   (unless ``replace``); less free disk space than the files need;
2. extracts into a staging folder beside the target, checking each zip member's CRC-32 and every file's
   size as it is written, and never writing more bytes than a header declared;
3. moves the model folders into the target only when every archive extracted cleanly (a folder that is
   replaced is moved aside first and put back if a later move fails). A failure at any step removes the
   staging folder and leaves the target as it was.

What was installed (model folders, folds, checkpoints with sizes and SHA-256) is returned as an
:class:`InstallReport`; :func:`config_hint` says which shipped preset names those folders.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from pantherseg.errors import ModelError, PantherError
from pantherseg.io.files import CHUNK_BYTES

log = logging.getLogger(__name__)

# Bounds for one install. The winners' release is 11 checkpoints of about 0.8 GB, a few dozen files.
MAX_ENTRIES = 10_000
MAX_FILE_BYTES = 16 * 1024**3
MAX_TOTAL_BYTES = 128 * 1024**3
MAX_NAME_BYTES = 1024
MAX_PART_BYTES = 255
FREE_SPACE_MARGIN_BYTES = 256 * 1024**2
DATASET_FOLDER = re.compile(r"Dataset\d{3}_[A-Za-z0-9][A-Za-z0-9_.-]*")
MODEL_FOLDER = re.compile(r"[A-Za-z0-9_.-]+__[A-Za-z0-9_.-]+__[A-Za-z0-9_.-]+")
CHECKPOINT_NAME = re.compile(r"fold_(\d+|all)/(checkpoint_[A-Za-z0-9_.-]*\.pth)")


@dataclass(frozen=True)
class Entry:
    """One entry of an archive's table of contents."""

    name: str  # relative POSIX name, no trailing slash
    size: int
    is_dir: bool
    key: object = field(default=None, compare=False, repr=False)  # the ZipInfo / TarInfo


@dataclass
class Checkpoint:
    fold: str
    name: str
    size: int
    sha256: str


@dataclass
class ModelFolder:
    path: str  # relative to the weights root
    archive: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def folds(self) -> list[str]:
        return sorted({c.fold for c in self.checkpoints}, key=_fold_order)


@dataclass
class InstallReport:
    target: Path
    folders: list[ModelFolder]
    files: int
    total_bytes: int


class _Archive:
    """A .zip or .tar.gz, read through one interface: its entries, then each file's bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = archive_kind(path)

    def entries(self) -> list[Entry]:
        try:
            return self._zip_entries() if self.kind == "zip" else self._tar_entries()
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise ModelError(
                f"{self.path} is not a readable {self.kind} archive (truncated or corrupt?): {error}"
            ) from error

    def _zip_entries(self) -> list[Entry]:
        entries = []
        with zipfile.ZipFile(self.path) as archive:
            infos = archive.infolist()
            _check_count(self.path, len(infos))
            for info in infos:
                if info.flag_bits & 0x1:
                    raise ModelError(f"{self.path}: {info.filename!r} is encrypted; expected a plain nnU-Net model zip")
                mode = info.external_attr >> 16  # Unix st_mode when the zip was made on Unix; type bits 0 elsewhere
                is_dir = info.is_dir()
                kind = stat.S_IFMT(mode)
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFDIR and not is_dir):
                    raise ModelError(
                        f"{self.path}: {info.filename!r} is {_kind(mode)}, not a regular file or a folder; refused"
                    )
                entries.append(
                    Entry(_clean_name(self.path, info.filename), 0 if is_dir else info.file_size, is_dir, info)
                )
        return entries

    def _tar_entries(self) -> list[Entry]:
        entries = []
        with tarfile.open(self.path, mode="r:*") as archive:
            for info in archive:  # streams through the whole archive: the gzip CRC is checked at its end
                _check_count(self.path, len(entries) + 1)
                if not (info.isreg() or info.isdir()):
                    what = "a link" if info.issym() or info.islnk() else "a device, FIFO or other special file"
                    raise ModelError(f"{self.path}: {info.name!r} is {what}, not a regular file or a folder; refused")
                entries.append(
                    Entry(_clean_name(self.path, info.name), 0 if info.isdir() else info.size, info.isdir(), info)
                )
        return entries

    def files(self, entries: list[Entry]) -> Iterator[tuple[Entry, BinaryIO]]:
        """(entry, stream) for every file entry; a zip member's CRC-32 is checked when its stream ends."""
        wanted = {e.name: e for e in entries if not e.is_dir}
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as archive:
                for entry in wanted.values():
                    with archive.open(entry.key) as stream:
                        yield entry, stream
            return
        with tarfile.open(self.path, mode="r|*") as archive:
            for info in archive:
                entry = wanted.get(_clean_name(self.path, info.name)) if info.isreg() else None
                if entry is not None:
                    yield entry, archive.extractfile(info)


def archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    raise ModelError(f"{path}: expected a .zip or .tar.gz model archive, found '{path.suffix or path.name}'")


def _kind(mode: int) -> str:
    return "a symbolic link" if stat.S_ISLNK(mode) else "a device, FIFO or other special file"


def _check_count(path: Path, count: int) -> None:
    if count > MAX_ENTRIES:
        raise ModelError(
            f"{path} holds more than {MAX_ENTRIES} entries; an nnU-Net model archive holds a few dozen: refused"
        )


def _clean_name(archive: Path, raw: str) -> str:
    """The entry's name as a relative POSIX path, or ModelError saying why it is unsafe."""

    def refuse(why: str) -> ModelError:
        return ModelError(f"{archive}: entry {raw[:200]!r} {why}; refused (nothing was installed)")

    if "\x00" in raw or "\\" in raw:
        raise refuse("holds a NUL or a backslash")
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise refuse(f"is longer than {MAX_NAME_BYTES} bytes")
    if raw.startswith("/") or re.match(r"[A-Za-z]:", raw):
        raise refuse("is an absolute path")
    parts = raw.rstrip("/").split("/")
    if parts[:1] == ["."]:
        parts = parts[1:]
    if not parts or any(p in ("", ".") for p in parts):
        raise refuse("has an empty or '.' part")
    if ".." in parts:
        raise refuse("climbs out of the target with '..'")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES for p in parts):
        raise refuse(f"has a part longer than {MAX_PART_BYTES} bytes")
    return "/".join(parts)


def check_entries(archive: Path, entries: list[Entry]) -> None:
    """Duplicates, file/folder clashes, size bounds and nnU-Net's layout, before anything is written."""
    names: dict[str, Entry] = {}
    for entry in entries:
        if entry.name in names and not (entry.is_dir and names[entry.name].is_dir):
            raise ModelError(f"{archive}: {entry.name!r} appears twice; refused (which copy would be installed?)")
        names[entry.name] = entry
        if entry.size > MAX_FILE_BYTES:
            raise ModelError(
                f"{archive}: {entry.name!r} declares {entry.size} bytes, more than the "
                f"{MAX_FILE_BYTES // 1024**3} GiB a checkpoint may have; refused"
            )
    for entry in entries:
        for parent in PurePosixPath(entry.name).parents:
            if str(parent) != "." and str(parent) in names and not names[str(parent)].is_dir:
                raise ModelError(f"{archive}: {entry.name!r} needs {str(parent)!r} to be a folder, but it is a file")
        first = entry.name.split("/")[0]
        if not DATASET_FOLDER.fullmatch(first) or (not entry.is_dir and "/" not in entry.name):
            raise ModelError(
                f"{archive}: {entry.name!r} is not inside a DatasetNNN_Name/ folder: not nnU-Net's "
                f"pretrained-model layout (DatasetNNN_Name/Trainer__Plans__Configuration/...)"
            )


def model_folders(archive: Path, entries: list[Entry]) -> dict[str, ModelFolder]:
    """The archive's model folders (those holding plans.json), each checked for dataset.json and a checkpoint."""
    files = {e.name for e in entries if not e.is_dir}
    folders = {}
    for name in sorted(files):
        path = PurePosixPath(name)
        if path.name == "plans.json" and len(path.parts) == 3 and MODEL_FOLDER.fullmatch(path.parts[1]):
            folders[str(path.parent)] = ModelFolder(path=str(path.parent), archive=archive)
    if not folders:
        raise ModelError(
            f"{archive} holds no nnU-Net model folder (DatasetNNN_Name/Trainer__Plans__Configuration/"
            f"plans.json); is it a model archive?"
        )
    for folder, model in folders.items():
        if f"{folder}/dataset.json" not in files:
            raise ModelError(f"{archive}: model folder {folder} has no dataset.json")
        for name in sorted(files):
            if name.startswith(folder + "/"):
                match = CHECKPOINT_NAME.fullmatch(name[len(folder) + 1 :])
                if match:
                    model.checkpoints.append(Checkpoint(fold=match.group(1), name=match.group(2), size=0, sha256=""))
        if not model.checkpoints:
            raise ModelError(f"{archive}: model folder {folder} has no fold_N/checkpoint_*.pth")
    return folders


def install_archives(archives: list[Path], target: Path, *, replace: bool = False) -> InstallReport:
    """Install every archive's model folders under ``target``, all or nothing (see the module docstring)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ModelError(f"--to {target} is a file; expected the weights folder (it is created if absent)")
    plan = [_plan(Path(path)) for path in archives]
    folders: dict[str, ModelFolder] = {}
    for archive, _entries, found in plan:
        for name, folder in found.items():
            if name in folders:
                raise ModelError(
                    f"model folder {name} is in both {folders[name].archive} and {archive}; install one of them"
                )
            folders[name] = folder
    linked = [str(target / name.split("/")[0]) for name in folders if (target / name.split("/")[0]).is_symlink()]
    if linked:  # moving a folder into it would write wherever the link points
        raise ModelError(f"{linked[0]} is a symbolic link; install into a folder without links")
    existing = [name for name in folders if (target / name).exists()]
    if existing and not replace:
        raise ModelError(
            f"{target} already holds {existing[0]}; pass --replace to replace it, or install into another folder"
        )
    total = sum(e.size for _, entries, _ in plan for e in entries)
    if total > MAX_TOTAL_BYTES:
        raise ModelError(f"the archives unpack to {total} bytes, more than {MAX_TOTAL_BYTES // 1024**3} GiB; refused")
    parent = target.parent if target.parent != Path("") else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < total + FREE_SPACE_MARGIN_BYTES:
        raise ModelError(
            f"{parent} has {free / 1024**3:.1f} GiB free; the archives need "
            f"{(total + FREE_SPACE_MARGIN_BYTES) / 1024**3:.1f} GiB"
        )

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.install-", dir=parent))
    try:
        files = 0
        for archive, entries, _ in plan:
            files += _extract(_Archive(archive), entries, staging / "new", folders)
        _commit(staging, target, list(folders))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("installed %d model folder(s), %d files, %d bytes into %s", len(folders), files, total, target)
    return InstallReport(target=target, folders=list(folders.values()), files=files, total_bytes=total)


def _plan(path: Path) -> tuple[Path, list[Entry], dict[str, ModelFolder]]:
    if not path.is_file():
        raise ModelError(f"model archive {path} not found: expected a .zip or .tar.gz file")
    archive = _Archive(path)
    entries = archive.entries()
    check_entries(path, entries)
    return path, entries, model_folders(path, entries)


def _extract(archive: _Archive, entries: list[Entry], root: Path, folders: dict[str, ModelFolder]) -> int:
    """Write the archive's files under ``root``; each is size-checked (and CRC-checked for a zip)."""
    checkpoints = {
        f"{folder.path}/fold_{c.fold}/{c.name}": c for folder in folders.values() for c in folder.checkpoints
    }
    written = 0
    for entry in entries:
        if entry.is_dir:
            (root / entry.name).mkdir(parents=True, exist_ok=True)
    try:
        for entry, stream in archive.files(entries):
            digest = _copy_bounded(stream, root / entry.name, entry, archive.path)
            if entry.name in checkpoints:
                checkpoints[entry.name].size, checkpoints[entry.name].sha256 = entry.size, digest
            written += 1
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
        raise ModelError(
            f"{archive.path} is corrupt (a CRC or stream check failed while extracting: {error}); "
            f"download it again; nothing was installed"
        ) from error
    expected = sum(1 for e in entries if not e.is_dir)
    if written != expected:
        raise ModelError(
            f"{archive.path}: {expected - written} file(s) listed in the archive were not found when "
            f"extracting it; nothing was installed"
        )
    return written


def _copy_bounded(stream: BinaryIO, destination: Path, entry: Entry, archive: Path) -> str:
    """Copy exactly ``entry.size`` bytes; returns the SHA-256. More or fewer bytes is a corrupt archive."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    remaining = entry.size
    with open(destination, "xb") as out:  # "x": a name never overwrites a file staged before it
        while block := stream.read(min(CHUNK_BYTES, remaining + 1)):
            if len(block) > remaining:
                raise ModelError(
                    f"{archive}: {entry.name!r} holds more bytes than its header declares ({entry.size}); refused"
                )
            remaining -= len(block)
            digest.update(block)
            out.write(block)
    if remaining:
        raise ModelError(f"{archive}: {entry.name!r} ended {remaining} bytes short of its declared {entry.size}")
    os.chmod(destination, 0o644)
    return digest.hexdigest()


def _commit(staging: Path, target: Path, names: list[str]) -> None:
    """Move each staged model folder into ``target``; on any failure undo the moves already made."""
    created_target = not target.exists()
    if created_target:  # nothing to merge with: the whole staged tree becomes the target in one rename
        os.rename(staging / "new", target)
        return
    aside = staging / "replaced"
    done: list[tuple[Path, Path | None]] = []
    try:
        for name in names:
            destination = target / name
            old = None
            if destination.exists():
                old = aside / name
                old.parent.mkdir(parents=True, exist_ok=True)
                os.rename(destination, old)
            done.append((destination, old))
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging / "new" / name, destination)
    except OSError as error:
        for destination, old in reversed(done):
            if destination.exists():
                shutil.rmtree(destination, ignore_errors=True)
            if old is not None:
                os.rename(old, destination)
        raise ModelError(
            f"installing into {target} failed ({error.strerror or error}); the target was restored"
        ) from error


def config_hint(report: InstallReport, presets: dict[str, Path]) -> list[str]:
    """Lines naming the shipped preset(s) whose members are all installed, else the members to write."""
    from pantherseg.config import load_config

    installed = {(f.path, c.fold, c.name) for f in report.folders for c in f.checkpoints}
    lines = []
    for _name, path in presets.items():
        try:
            config = load_config(path)
        except PantherError:
            continue
        tasks = [
            t
            for t, spec in config.tasks.items()
            if all((m.model, str(m.fold), m.checkpoint) in installed for m in spec.members)
        ]
        if tasks:
            lines.append(f"config to use: {path} (tasks {', '.join(tasks)}) with --weights {report.target}")
    if not lines:
        lines.append("no shipped preset names these folders: list them in an ensemble_config.json, e.g.")
        for folder in report.folders:
            for c in folder.checkpoints:
                lines.append(
                    f'  {{"name": "fold{c.fold}", "model": "{folder.path}", "fold": '
                    f'{c.fold if c.fold.isdigit() else chr(34) + c.fold + chr(34)}, "checkpoint": "{c.name}"}}'
                )
    return lines


def format_report(report: InstallReport) -> list[str]:
    lines = [
        f"installed into {report.target}: {len(report.folders)} model folder(s), {report.files} files, "
        f"{report.total_bytes / 1024**2:.1f} MiB"
    ]
    for folder in report.folders:
        lines.append(f"{folder.path} (from {folder.archive.name}): folds {', '.join(folder.folds)}")
        for c in sorted(folder.checkpoints, key=lambda c: (_fold_order(c.fold), c.name)):
            lines.append(f"  fold_{c.fold}/{c.name}  {c.size / 1024**2:.1f} MiB  sha256 {c.sha256}")
    return lines


def _fold_order(fold: str) -> tuple[int, str]:
    return (int(fold), "") if fold.isdigit() else (1 << 30, fold)


def shipped_presets() -> dict[str, Path]:
    """The presets in the project's ``configs/`` folder, by file name."""
    from pantherseg.paths import PROJECT_ROOT

    return {path.name: path for path in sorted((PROJECT_ROOT / "configs").glob("*.json"))}
