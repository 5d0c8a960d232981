"""Build and verify the model tarball that grand-challenge extracts to ``/opt/ml/model/``.

grand-challenge extracts an algorithm's model tarball with Python's ``tarfile`` and
``filter="data"``: absolute names, names that climb out with ``..`` and links that point outside
are refused, and the job fails before ``inference.py`` starts. So the tarball built here holds
only regular files, each under a relative POSIX name, and ``build_model_tarball`` refuses a
weights folder that holds anything else (a symlink above all: it would be stored as a link, or
followed out of the folder). After writing, ``verify_model_tarball`` extracts the tarball the way
the platform does, into a scratch folder, and checks every file against what was packed.

Only the standard library is imported, so ``export.sh --model-only`` and the tests run without
torch or nnU-Net. Command line (used by export.sh and build.sh)::

    python -m pantherseg.container.model_tarball build --weights weights --output export/model.tar.gz
    python -m pantherseg.container.model_tarball verify export/model.tar.gz
    python -m pantherseg.container.model_tarball check --weights weights
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import os
import stat
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pantherseg.errors import ModelError, PantherError
from pantherseg.io.files import (
    CHUNK_BYTES,
    MAX_TREE_DEPTH,
    MAX_TREE_ENTRIES,
    TreeLimitError,
    atomic_file,
    file_sha256,
    walk_tree,
)

log = logging.getLogger(__name__)

# The most ``verify`` extracts: the winners' 11 ResEnc-L checkpoints are about 6 GiB; a 3 MB tarball
# that unpacks to 3 GiB (a decompression bomb) should not fill the disk first.
MAX_UNPACKED_BYTES = 32 * 1024**3


@dataclass(frozen=True)
class TarballReport:
    """What went into (or came out of) a model tarball."""

    path: Path
    files: dict[str, int] = field(default_factory=dict)  # relative POSIX name -> size in bytes
    sha256: dict[str, str] = field(default_factory=dict)  # relative POSIX name -> hex digest

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def tarball_bytes(self) -> int:
        return self.path.stat().st_size


def scan_weights(weights_dir: Path | str) -> list[str]:
    """The relative POSIX names of every regular file under ``weights_dir``, sorted.

    Raises ModelError for a missing or empty folder, and for anything that is not a regular file
    or a folder: symlinks (saying where they point, and whether that is outside the folder),
    FIFOs, sockets, devices.
    """
    root = Path(weights_dir)
    if not root.exists():
        raise ModelError(f"weights folder {root} does not exist: pass the folder that holds the ensemble members")
    if not root.is_dir():
        raise ModelError(
            f"weights folder {root} is a file, not a folder: pass the folder that holds the ensemble members"
        )
    real_root = root.resolve()
    names: list[str] = []
    try:
        for path, relative, status in walk_tree(root):
            if stat.S_ISLNK(status.st_mode):
                raise ModelError(_symlink_message(path, relative, root, real_root))
            if stat.S_ISDIR(status.st_mode):
                continue
            if not stat.S_ISREG(status.st_mode):
                raise ModelError(
                    f"{relative} in weights folder {root} is not a regular file (a FIFO, socket or device): "
                    "the model tarball may hold regular files only; remove it"
                )
            names.append(relative)
    except TreeLimitError as error:
        raise ModelError(f"weights folder {error}: a model folder is a few levels deep; refused") from error
    except OSError as error:
        # A folder that cannot be listed: silently leaving it out would be worse.
        raise ModelError(f"cannot list {error.filename} in the weights folder: {error.strerror}") from error
    if not names:
        raise ModelError(f"weights folder {root} holds no files: there is nothing to upload as a model")
    return sorted(names)


def _symlink_message(path: Path, relative: str, root: Path, real_root: Path) -> str:
    target = os.readlink(path)
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # a loop (pathlib raises RuntimeError for it in Python 3.11)
        resolved = None
    if resolved is None:
        where = "a symbolic link loop"
    elif resolved == real_root or real_root in resolved.parents:
        where = "inside the weights folder"
    else:
        where = "OUTSIDE the weights folder"
    return (
        f"{relative} in weights folder {root} is a symlink to {target} ({where}); grand-challenge extracts the "
        "model tarball with tarfile's 'data' filter, which refuses links that leave the folder, and this "
        "tarball holds regular files only: replace the link with a copy of the file (cp -L) and run again"
    )


def build_model_tarball(weights_dir: Path | str, output: Path | str, *, compresslevel: int = 6) -> TarballReport:
    """Write ``output`` (a .tar.gz) holding every file under ``weights_dir`` under its relative name.

    Members are regular files only, in sorted order, owned by uid/gid 0 with mode 0644 and the
    source file's mtime; the gzip header carries no name or time, so packing the same folder twice
    gives the same bytes. ``output`` is replaced atomically (written beside it, then renamed), so a
    second run, or an interrupted one, never leaves a half-written tarball under the final name.

    Raises ModelError if the folder cannot be packed (see ``scan_weights``) or ``output`` lies
    inside ``weights_dir``.
    """
    root = Path(weights_dir)
    output = Path(output)
    if output.is_dir():
        raise ModelError(f"output {output} is a folder: name the .tar.gz file to write, e.g. {output / 'model.tar.gz'}")
    if not 0 <= compresslevel <= 9:
        raise ModelError(f"compresslevel must be an integer in [0, 9], not {compresslevel}")
    names = scan_weights(root)
    output.parent.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    real_output = output.parent.resolve() / output.name
    if real_root == real_output or real_root in real_output.parents:
        raise ModelError(f"output {output} lies inside the weights folder {root}: write the tarball elsewhere")

    sizes: dict[str, int] = {}
    digests: dict[str, str] = {}
    with atomic_file(output) as partial:
        with (
            open(partial, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0) as compressed,
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in names:
                source = root / name
                info = tarfile.TarInfo(name)
                source_stat = source.stat()
                info.size = source_stat.st_size
                info.mtime = int(source_stat.st_mtime)
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                try:
                    with source.open("rb") as stream:
                        hashing = _HashingReader(stream)
                        tar.addfile(info, hashing)
                except OSError as error:
                    raise ModelError(
                        f"cannot read {name} in weights folder {root}: {error.strerror or error}"
                    ) from error
                sizes[name] = info.size
                digests[name] = hashing.hexdigest()
        os.chmod(partial, 0o644)  # whatever the umask: a tarball to upload should be readable like any other
    log.info("wrote %s: %d files, %d bytes before compression", output, len(names), sum(sizes.values()))
    return TarballReport(path=output, files=sizes, sha256=digests)


class _HashingReader:
    """A read-only file wrapper that hashes what tarfile reads through it."""

    def __init__(self, stream):
        self._stream = stream
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def verify_model_tarball(
    tarball: Path | str, expected: TarballReport | None = None, *, max_unpacked_bytes: int = MAX_UNPACKED_BYTES
) -> TarballReport:
    """Extract ``tarball`` as grand-challenge does (``extractall(filter="data")``) and check it.

    First the whole gzip stream is decompressed without writing anything, which checks its CRC-32
    and length (a corrupt tarball can otherwise extract "cleanly" minus the files after the damage)
    and refuses more than ``max_unpacked_bytes`` of content (a decompression bomb), before extracting.

    Every member must be a regular file or a folder under a relative name without ``..``. With
    ``expected`` (the report of ``build_model_tarball``), the extracted files must be exactly the
    packed ones, with the same sizes and SHA-256 digests. The scratch folder is made next to the
    tarball (the disk that already had room for it) and removed afterwards.

    Raises ModelError describing the first problem found.
    """
    tarball = Path(tarball)
    if not tarball.is_file():
        raise ModelError(f"model tarball {tarball} does not exist")
    if not hasattr(tarfile, "data_filter"):
        raise ModelError(
            f"this Python ({sys.version.split()[0]}) has no tarfile extraction filters; grand-challenge uses "
            "filter='data': verify with Python 3.12+, 3.11.4+ or 3.10.12+"
        )
    _check_stream(tarball, max_unpacked_bytes)
    files: dict[str, int] = {}
    digests: dict[str, str] = {}
    with _scratch_folder(tarball.parent) as scratch:
        destination = Path(scratch)
        try:
            with tarfile.open(tarball, mode="r:gz") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, tarball)
                _check_member_sizes(members, tarball, max_unpacked_bytes)
                tar.extractall(destination, filter="data")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ModelError(f"model tarball {tarball} cannot be extracted with filter='data': {error}") from error
        for member in members:
            if not member.isfile():
                continue
            extracted = destination / member.name
            files[_normalise(member.name)] = extracted.stat().st_size
            digests[_normalise(member.name)] = file_sha256(extracted)
    if not files:
        raise ModelError(f"model tarball {tarball} holds no files")
    if expected is not None:
        _compare(tarball, expected, files, digests)
    return TarballReport(path=tarball, files=files, sha256=digests)


def _check_stream(tarball: Path, max_unpacked_bytes: int) -> None:
    """Read the gzip stream to its end (CRC-32 and size checked there), counting what it unpacks to."""
    unpacked = 0
    try:
        with gzip.open(tarball, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                unpacked += len(chunk)
                if unpacked > max_unpacked_bytes:
                    raise ModelError(
                        f"model tarball {tarball} unpacks to more than {human_size(max_unpacked_bytes)} "
                        f"({human_size(tarball.stat().st_size)} packed): refused as a possible decompression "
                        "bomb; raise --max-unpacked-gib if the weights really are that large"
                    )
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as error:
        raise ModelError(
            f"model tarball {tarball} is corrupt or truncated (the gzip stream fails its integrity check: "
            f"{error}); build or upload it again"
        ) from error


def _scratch_folder(near: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder beside the tarball (room for a copy of it), else in the system temp folder."""
    try:
        return tempfile.TemporaryDirectory(prefix=".verify-model-", dir=near)
    except OSError:
        return tempfile.TemporaryDirectory(prefix="verify-model-")


def _normalise(name: str) -> str:
    return PurePosixPath(name).as_posix().removeprefix("./")


def _check_member(member: tarfile.TarInfo, tarball: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith("/"):
        raise ModelError(f"model tarball {tarball} holds an absolute path {member.name}: pack relative names only")
    if ".." in name.parts:
        raise ModelError(f"model tarball {tarball} holds {member.name}, which climbs out of the folder with '..'")
    if len(name.parts) > MAX_TREE_DEPTH:
        raise ModelError(
            f"model tarball {tarball} holds a member {len(name.parts)} folders deep (at most "
            f"{MAX_TREE_DEPTH}: a model folder is a few levels deep); refused"
        )
    if not (member.isfile() or member.isdir()):
        kind = "a link" if (member.issym() or member.islnk()) else "not a regular file"
        raise ModelError(f"model tarball {tarball} holds {member.name}, which is {kind}: pack regular files only")


def _check_member_sizes(members: list[tarfile.TarInfo], tarball: Path, max_unpacked_bytes: int) -> None:
    """What extraction would write, from the headers: a sparse member counts at its full extracted size (a
    159-byte GNU sparse tarball can claim 40 GiB: the stream check sees 159 bytes, the disk would not)."""
    if len(members) > MAX_TREE_ENTRIES:
        raise ModelError(f"model tarball {tarball} holds {len(members)} members (at most {MAX_TREE_ENTRIES}); refused")
    total = 0
    for member in members:
        total += max(member.size, 0)
        if total > max_unpacked_bytes:
            sparse = " (a sparse member counts at its extracted size)" if member.issparse() else ""
            raise ModelError(
                f"model tarball {tarball} extracts to more than {human_size(max_unpacked_bytes)}: "
                f"{member.name} alone claims {human_size(member.size)}{sparse}; refused as a possible "
                "decompression bomb; raise --max-unpacked-gib if the weights really are that large"
            )


def _compare(tarball: Path, expected: TarballReport, files: dict[str, int], digests: dict[str, str]) -> None:
    missing = sorted(set(expected.files) - set(files))
    extra = sorted(set(files) - set(expected.files))
    if missing or extra:
        raise ModelError(
            f"model tarball {tarball} does not hold the packed file list: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, size in expected.files.items():
        if files[name] != size or (name in expected.sha256 and digests[name] != expected.sha256[name]):
            raise ModelError(
                f"{name} extracted from model tarball {tarball} differs from the packed file "
                "(size or SHA-256): was the weights folder changed while packing? Run again"
            )


def human_size(n_bytes: int) -> str:
    """``1536`` -> ``'1.5 KiB'``; bytes below 1 KiB stay whole, GiB is the largest unit."""
    if n_bytes < 1024:
        return f"{n_bytes} B"
    size = n_bytes / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _parser() -> argparse.ArgumentParser:
    from pantherseg.options import Parser, integer, number  # the standard library only, as this module

    parser = Parser(
        prog="python -m pantherseg.container.model_tarball",
        description="Build, verify or check the model tarball grand-challenge extracts to /opt/ml/model/.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="pack a weights folder into a .tar.gz, then verify it")
    build.add_argument("--weights", type=Path, required=True, help="the folder to pack (becomes /opt/ml/model/)")
    build.add_argument("--output", type=Path, required=True, help="the .tar.gz to write (replaced if present)")
    build.add_argument("--compresslevel", type=integer(0, 9), default=6, help="gzip level 0-9 (default: 6)")
    verify = commands.add_parser("verify", help="check that a .tar.gz extracts with filter='data'")
    verify.add_argument("tarball", type=Path)
    verify.add_argument(
        "--max-unpacked-gib",
        type=number(above=True, maximum=1e6),
        default=MAX_UNPACKED_BYTES / 1024**3,
        help=f"refuse a tarball unpacking to more (default: {MAX_UNPACKED_BYTES // 1024**3})",
    )
    check = commands.add_parser("check", help="check that a weights folder can be packed (no symlinks, not empty)")
    check.add_argument("--weights", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "check":
            names = scan_weights(args.weights)
            print(f"{args.weights}: {len(names)} files, all regular, ready to pack")
        elif args.command == "verify":
            report = verify_model_tarball(args.tarball, max_unpacked_bytes=int(args.max_unpacked_gib * 1024**3))
            print(f"{args.tarball}: {len(report.files)} files extract cleanly with filter='data'")
        else:
            built = build_model_tarball(args.weights, args.output, compresslevel=args.compresslevel)
            verify_model_tarball(built.path, expected=built)
            print(
                f"{built.path}: {len(built.files)} files ({human_size(built.total_bytes)} unpacked, "
                f"{human_size(built.tarball_bytes)} packed); verified: extracts with filter='data' "
                "to exactly the packed files"
            )
    except PantherError as error:
        print(f"pantherseg error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the output's folder unwritable, a full disk: one line, not a traceback
        where = f" ({error.filename})" if error.filename else ""
        print(f"pantherseg error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
