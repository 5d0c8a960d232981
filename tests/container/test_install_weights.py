"""pantherseg install-weights: the release replica installs; every kind of hostile archive is refused whole.

Each refusal test checks the same three things: a ModelError naming the problem, a target exactly as it
was before (a file already in it, nothing added), and no staging folder left beside it.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pantherseg.cli import main
from pantherseg.config import load_config
from pantherseg.container import install_weights
from pantherseg.container.install_weights import install_archives
from pantherseg.engine.members import load_members
from pantherseg.errors import ModelError

from conftest import ROOT

sys.path.insert(0, str(ROOT / "resources"))
from release_replica import CHECKPOINT, RELEASE, build_replica  # noqa: E402

PRESET = ROOT / "configs" / "panther-release.json"
MODEL = "Dataset777_Test/nnUNetTrainer__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> dict[str, Path]:
    """The tiny replica's two release zips: {task: zip}."""
    return build_replica(tmp_path_factory.mktemp("replica"))


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_release_replica_installs_and_the_preset_loads_against_it(replica, tmp_path, capsys):
    target = tmp_path / "weights"
    assert main(["install-weights", str(replica["t1"]), str(replica["t2"]), "--to", str(target)]) == 0
    printed = capsys.readouterr().out
    config = load_config(PRESET)
    for task, model in RELEASE.items():
        folder = target / model.folder
        assert sorted(p.name for p in folder.glob("fold_*")) == [f"fold_{f}" for f in model.folds]
        for fold in model.folds:
            checkpoint = folder / f"fold_{fold}" / CHECKPOINT
            assert f"fold_{fold}/{CHECKPOINT}" in printed
            assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in printed
        assert f"{model.folder} (from {model.archive_name}): folds {', '.join(map(str, model.folds))}" in printed
        members = load_members(config.task(task), target)  # validates files, labels, checkpoint vs plans
        assert [m.spec.fold for m in members] == list(model.folds)
        assert {m.spec.weight for m in members} == {1.0} and not config.use_mirroring
    assert f"config to use: {PRESET} (tasks t1, t2)" in printed
    assert config.tile_step_size == 0.5


def test_a_tar_gz_of_the_same_layout_installs(replica, tmp_path):
    with zipfile.ZipFile(replica["t2"]) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    tarball = _tar(tmp_path / "t2.tar.gz", [(name, data) for name, data in files.items()])
    report = install_archives([tarball], tmp_path / "weights")
    assert _tree(tmp_path / "weights") == files
    assert [f.folds for f in report.folders] == [[str(f) for f in RELEASE["t2"].folds]]


def test_installing_next_to_other_models_keeps_them_and_refuses_to_overwrite(replica, tmp_path):
    target = tmp_path / "weights"
    (target / "Dataset900_Mine").mkdir(parents=True)
    (target / "Dataset900_Mine" / "notes.txt").write_text("mine")
    install_archives([replica["t1"]], target)
    assert (target / "Dataset900_Mine" / "notes.txt").read_text() == "mine"
    before = _tree(target)
    with pytest.raises(ModelError, match="--replace"):
        install_archives([replica["t1"]], target)
    assert _tree(target) == before
    install_archives([replica["t1"]], target, replace=True)
    assert _tree(target) == before


def test_a_failed_move_restores_the_replaced_folders(replica, tmp_path, monkeypatch):
    target = tmp_path / "weights"
    install_archives([replica["t1"]], target)
    (target / "Dataset900_Mine").mkdir()
    before = _tree(target)
    real_rename = install_weights.os.rename
    calls = []

    def failing_rename(source, destination):
        calls.append(destination)
        if len(calls) == 3:  # the old t1 aside, the new t1 in, then the new t2 (absent before) fails
            raise OSError(28, "No space left on device")
        return real_rename(source, destination)

    monkeypatch.setattr(install_weights.os, "rename", failing_rename)
    with pytest.raises(ModelError, match="restored"):
        install_archives([replica["t1"], replica["t2"]], target, replace=True)
    monkeypatch.undo()
    assert _tree(target) == before and len(calls) >= 3
    assert _leftovers(tmp_path) == []


# --- hostile archives: each built from a valid minimal model folder plus one bad entry -----------------

BASE = [
    (f"{MODEL}/plans.json", b"{}"),
    (f"{MODEL}/dataset.json", b"{}"),
    (f"{MODEL}/fold_0/checkpoint_best.pth", b"weights" * 100),
]


def _zip(path: Path, entries, *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for entry in entries:
            if isinstance(entry, zipfile.ZipInfo):
                archive.writestr(entry, b"x")
            else:
                archive.writestr(entry[0], entry[1])
    return path


def _zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def _tar(path: Path, entries) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                archive.addfile(info, io.BytesIO(entry[1]))
    return path


def _tar_info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _corrupt_crc(path: Path) -> Path:
    """A stored zip whose checkpoint's bytes are changed after its CRC was written."""
    _zip(path, BASE, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    at = data.index(b"weights" * 100)
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path) -> Path:
    _tar(path, BASE)
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _encrypted(path: Path) -> Path:
    """A zip whose last member is flagged encrypted (zipfile writes no encryption: the flag is set afterwards)."""
    _zip(path, [*BASE, (f"{MODEL}/secret.json", b"{}")])
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 0x1
    path.write_bytes(bytes(data))
    return path


def _not_an_archive(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


def _understated_size(path: Path) -> Path:
    """A zip whose central directory says its checkpoint is 10 bytes: the data behind it is 700."""
    _zip(path, BASE, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the last central-directory record: the checkpoint
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


HOSTILE = {
    "absolute-name": (lambda p: _zip(p, [*BASE, ("/tmp/evil.txt", b"x")]), "absolute"),
    "dot-dot": (lambda p: _zip(p, [*BASE, (f"{MODEL}/../../../evil.txt", b"x")]), "climbs out"),
    "windows-drive": (lambda p: _zip(p, [*BASE, ("C:/evil.txt", b"x")]), "absolute"),
    "backslash": (lambda p: _zip(p, [*BASE, (f"{MODEL}\\..\\evil.txt", b"x")]), "backslash"),
    "zip-symlink": (lambda p: _zip(p, [*BASE, _zip_info(f"{MODEL}/fold_1", stat.S_IFLNK | 0o777)]), "symbolic link"),
    "zip-fifo": (lambda p: _zip(p, [*BASE, _zip_info(f"{MODEL}/pipe", stat.S_IFIFO | 0o644)]), "special file"),
    "zip-encrypted": (_encrypted, "encrypted"),
    "tar-symlink": (lambda p: _tar(p, [*BASE, _tar_info(f"{MODEL}/fold_1", tarfile.SYMTYPE, "/etc")]), "a link"),
    "tar-hardlink": (lambda p: _tar(p, [*BASE, _tar_info(f"{MODEL}/x", tarfile.LNKTYPE, "/etc/passwd")]), "a link"),
    "tar-device": (lambda p: _tar(p, [*BASE, _tar_info(f"{MODEL}/dev", tarfile.CHRTYPE)]), "special file"),
    "tar-fifo": (lambda p: _tar(p, [*BASE, _tar_info(f"{MODEL}/fifo", tarfile.FIFOTYPE)]), "special file"),
    "duplicate-name": (lambda p: _tar(p, [*BASE, BASE[2]]), "twice"),
    "file-where-a-folder-is-needed": (
        lambda p: _zip(p, [*BASE, (f"{MODEL}/fold_0/checkpoint_best.pth/x", b"x")]),
        "to be a folder",
    ),
    "outside-a-dataset-folder": (lambda p: _zip(p, [*BASE, ("README.txt", b"x")]), "DatasetNNN_Name"),
    "no-model-folder": (lambda p: _zip(p, [("Dataset777_Test/notes.txt", b"x")]), "no nnU-Net model folder"),
    "no-checkpoint": (lambda p: _zip(p, BASE[:2]), "no fold_N/checkpoint"),
    "no-dataset-json": (lambda p: _zip(p, [BASE[0], BASE[2]]), "no dataset.json"),
    "bad-crc": (_corrupt_crc, "CRC"),
    "size-understated": (_understated_size, "corrupt|more bytes"),
    "truncated-tar-gz": (_truncated, "not a readable"),
    "not-an-archive": (_not_an_archive, "not a readable"),
}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".install-" in p.name]


def _refused(archives: list[Path], tmp_path: Path, pattern: str) -> None:
    target = tmp_path / "weights"
    (target / "Dataset900_Mine").mkdir(parents=True, exist_ok=True)
    (target / "Dataset900_Mine" / "notes.txt").write_text("mine")
    before = _tree(target)
    with pytest.raises(ModelError, match=pattern):
        install_archives(archives, target)
    assert _tree(target) == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_and_changes_nothing(case, tmp_path):
    build, pattern = HOSTILE[case]
    suffix = ".tar.gz" if case.startswith(("tar-", "duplicate", "truncated")) else ".zip"
    archive = build(tmp_path / f"{case}{suffix}")
    _refused([archive], tmp_path, pattern)


def test_a_hostile_second_archive_stops_the_first_too(replica, tmp_path):
    # The first archive alone is fine; with a corrupt one after it, neither is installed.
    _refused([replica["t1"], _corrupt_crc(tmp_path / "bad.zip")], tmp_path, "CRC")


@pytest.mark.parametrize(
    "bound,value,pattern",
    [
        ("MAX_ENTRIES", 3, "more than 3 entries"),
        ("MAX_FILE_BYTES", 100, "declares 700 bytes"),
        ("MAX_TOTAL_BYTES", 100, "unpack to"),
    ],
)
def test_counts_and_sizes_are_bounded_before_anything_is_written(bound, value, pattern, tmp_path, monkeypatch):
    monkeypatch.setattr(install_weights, bound, value)
    _refused([_zip(tmp_path / "big.zip", [*BASE, (f"{MODEL}/fold_0/debug.json", b"{}")])], tmp_path, pattern)


def test_the_same_model_folder_in_two_archives_is_refused(tmp_path):
    first, second = _zip(tmp_path / "a.zip", BASE), _tar(tmp_path / "b.tar.gz", BASE)
    _refused([first, second], tmp_path, "in both")


def test_a_linked_dataset_folder_in_the_target_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "weights"
    target.mkdir()
    (target / "Dataset777_Test").symlink_to(outside)
    with pytest.raises(ModelError, match="symbolic link"):
        install_archives([_zip(tmp_path / "ok.zip", BASE)], target)
    assert list(outside.iterdir()) == []


def test_the_command_line_refusal_is_one_line_and_exit_code_3(tmp_path, capsys):
    archive = _zip(tmp_path / "evil.zip", [*BASE, ("/tmp/evil.txt", b"x")])
    assert main(["install-weights", str(archive), "--to", str(tmp_path / "weights")]) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("pantherseg error: ") and "absolute" in last
    assert not (tmp_path / "weights").exists()


def test_a_folder_the_presets_do_not_name_gets_member_lines(tmp_path, capsys):
    archive = _zip(tmp_path / "mine.zip", BASE)
    assert main(["install-weights", str(archive), "--to", str(tmp_path / "weights")]) == 0
    printed = capsys.readouterr().out
    assert "no shipped preset names these folders" in printed
    assert json.loads(printed.splitlines()[-1].strip()) == {
        "name": "fold0",
        "model": MODEL,
        "fold": 0,
        "checkpoint": "checkpoint_best.pth",
    }
