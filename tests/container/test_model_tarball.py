"""The two uploads: model.tar.gz (pantherseg.container.model_tarball, export.sh --model-only) and the image step.

grand-challenge extracts the model tarball with ``tarfile.extractall(filter="data")``; every
tarball written here is extracted the same way and compared with the folder it came from.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from pantherseg.container.model_tarball import build_model_tarball, human_size, main, scan_weights, verify_model_tarball
from pantherseg.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
EXPORT_SH = REPO / "export.sh"
REAL_WEIGHTS = REPO / "weights"
REAL_WEIGHTS_QUICK_LIMIT = 200 * 1024 * 1024  # larger real weights are packed only with --runslow


def make_weights(root: Path) -> dict[str, bytes]:
    """A small folder shaped like an ensemble: two members, a nested fold, a binary checkpoint."""
    files = {
        "ensemble_config.json": b'{"members": ["allrounder", "volume"]}\n',
        "allrounder/plans.json": b'{"configurations": {}}\n',
        "allrounder/dataset.json": b'{"labels": {"background": 0, "tumour": 1, "pancreas": 2}}\n',
        "allrounder/fold_0/checkpoint_best.pth": os.urandom(64 * 1024),
        "volume/fold_1/checkpoint_final.pth": os.urandom(32 * 1024),
        "volume/notes with spaces.txt": b"names may hold spaces\n",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def extract_like_grand_challenge(tarball: Path, destination: Path) -> dict[str, bytes]:
    with tarfile.open(tarball, "r:gz") as tar:
        members = tar.getmembers()
        tar.extractall(destination, filter="data")
    for member in members:
        assert member.isfile(), f"{member.name} is not a regular file"
        assert not PurePosixPath(member.name).is_absolute() and ".." not in PurePosixPath(member.name).parts
        assert not member.name.startswith("./")
    return {m.name: (destination / m.name).read_bytes() for m in members}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_export(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(EXPORT_SH), *args],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def path_without_docker(folder: Path) -> str:
    """A PATH (one folder of symlinks) with every command of the current PATH except docker."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name == "docker" or (folder / entry.name).exists():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (folder / entry.name).symlink_to(entry.path)
    return str(folder)


# ---------------------------------------------------------------------------------------------
# The module


def test_tarball_holds_the_folder_as_relative_regular_files(tmp_path):
    files = make_weights(tmp_path / "weights")
    report = build_model_tarball(tmp_path / "weights", tmp_path / "out" / "model.tar.gz")
    assert report.files == {name: len(content) for name, content in files.items()}
    assert extract_like_grand_challenge(report.path, tmp_path / "extracted") == files
    assert verify_model_tarball(report.path, expected=report).sha256 == report.sha256


def test_packing_twice_is_safe_and_gives_the_same_bytes(tmp_path):
    make_weights(tmp_path / "weights")
    output = tmp_path / "model.tar.gz"
    first = sha256(build_model_tarball(tmp_path / "weights", output).path)
    second = sha256(build_model_tarball(tmp_path / "weights", output).path)
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar.gz", "weights"], "a partial file was left behind"


@pytest.mark.parametrize("target_inside", [False, True], ids=["link-out-of-folder", "link-inside-folder"])
def test_a_symlink_is_refused_with_a_clear_message(tmp_path, target_inside):
    make_weights(tmp_path / "weights")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for upload")
    target = tmp_path / "weights" / "ensemble_config.json" if target_inside else secret
    (tmp_path / "weights" / "allrounder" / "fold_0" / "linked.pth").symlink_to(target)
    with pytest.raises(ModelError) as caught:
        build_model_tarball(tmp_path / "weights", tmp_path / "model.tar.gz")
    message = str(caught.value)
    assert "allrounder/fold_0/linked.pth" in message and "symlink" in message
    assert ("OUTSIDE" in message) != target_inside
    assert not (tmp_path / "model.tar.gz").exists()


def test_a_symlinked_folder_is_refused(tmp_path):
    make_weights(tmp_path / "weights")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "weights" / "extra_member").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ModelError, match="extra_member .*symlink .*OUTSIDE"):
        scan_weights(tmp_path / "weights")


@pytest.mark.parametrize("problem", ["missing", "empty", "file"])
def test_an_unusable_weights_folder_is_refused(tmp_path, problem):
    weights = tmp_path / "weights"
    if problem == "empty":
        (weights / "only" / "folders").mkdir(parents=True)
    elif problem == "file":
        weights.write_text("not a folder")
    with pytest.raises(ModelError, match=str(weights)):
        build_model_tarball(weights, tmp_path / "model.tar.gz")


def test_the_tarball_may_not_be_written_into_the_weights_folder(tmp_path):
    make_weights(tmp_path / "weights")
    with pytest.raises(ModelError, match="inside the weights folder"):
        build_model_tarball(tmp_path / "weights", tmp_path / "weights" / "model.tar.gz")


def _tarball_with(path: Path, member: tarfile.TarInfo, content: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("plans.json")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        member.size = len(content) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    "name, kind, expected",
    [
        ("/opt/ml/model/evil.pth", tarfile.REGTYPE, "absolute path"),
        ("../evil.pth", tarfile.REGTYPE, "climbs out"),
        ("link.pth", tarfile.SYMTYPE, "a link"),
    ],
)
def test_verify_rejects_what_the_data_filter_rejects(tmp_path, name, kind, expected):
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind == tarfile.SYMTYPE:
        member.linkname = "/etc/passwd"
    tarball = _tarball_with(tmp_path / "bad.tar.gz", member, b"x")
    with pytest.raises(ModelError, match=expected):
        verify_model_tarball(tarball)


def test_verify_accepts_a_tarball_made_with_tar_dash_c(tmp_path):
    # The organisers' template: tar -czf model.tar.gz -C model .  ("./" names, folder entries)
    files = make_weights(tmp_path / "weights")
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "weights", arcname=".")
    assert set(verify_model_tarball(tarball).files) == set(files)


def test_verify_notices_a_file_that_differs_from_the_packed_one(tmp_path):
    make_weights(tmp_path / "weights")
    report = build_model_tarball(tmp_path / "weights", tmp_path / "model.tar.gz")
    report.sha256["allrounder/plans.json"] = "0" * 64
    with pytest.raises(ModelError, match="allrounder/plans.json .*differs"):
        verify_model_tarball(report.path, expected=report)


def test_command_line_exit_codes(tmp_path, capsys):
    make_weights(tmp_path / "weights")
    assert main(["build", "--weights", str(tmp_path / "weights"), "--output", str(tmp_path / "m.tar.gz")]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "m.tar.gz")]) == 0
    assert main(["check", "--weights", str(tmp_path / "weights")]) == 0
    assert main(["check", "--weights", str(tmp_path / "nothing")]) == ModelError.exit_code
    assert "does not exist" in capsys.readouterr().err


def test_human_size():
    assert [human_size(n) for n in (0, 1023, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


# ---------------------------------------------------------------------------------------------
# export.sh


def test_export_model_only_from_another_folder_twice(tmp_path):
    files = make_weights(tmp_path / "weights")
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    digests = []
    for _ in range(2):
        result = run_export("--model-only", "--weights", "../weights", "--output", "../upload", cwd=cwd)
        assert result.returncode == 0, result.stderr
        digests.append(sha256(tmp_path / "upload" / "model.tar.gz"))
    assert digests[0] == digests[1]
    assert "Models" in result.stdout and "model.tar.gz" in result.stdout and "Containers" not in result.stdout
    assert extract_like_grand_challenge(tmp_path / "upload" / "model.tar.gz", tmp_path / "x") == files
    assert [p.name for p in (tmp_path / "upload").iterdir()] == ["model.tar.gz"]


def test_export_skip_image_variable_is_the_same_as_model_only(tmp_path):
    make_weights(tmp_path / "weights")
    env = dict(os.environ, SKIP_IMAGE="1", WEIGHTS_DIR=str(tmp_path / "weights"), EXPORT_DIR=str(tmp_path / "up"))
    result = run_export(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "up" / "model.tar.gz").is_file()


def test_export_refuses_a_symlink_out_of_the_weights_folder(tmp_path):
    make_weights(tmp_path / "weights")
    (tmp_path / "weights" / "stolen").symlink_to("/etc/hostname")
    result = run_export(
        "--model-only", "--weights", str(tmp_path / "weights"), "--output", str(tmp_path / "up"), cwd=tmp_path
    )
    assert result.returncode != 0
    assert "stolen" in result.stderr and "symlink to /etc/hostname (OUTSIDE the weights folder)" in result.stderr
    assert not (tmp_path / "up" / "model.tar.gz").exists()


def test_export_without_docker_says_so_before_packing(tmp_path):
    make_weights(tmp_path / "weights")
    env = dict(os.environ, PATH=path_without_docker(tmp_path / "bin"))
    env.pop("SKIP_IMAGE", None)
    result = run_export("--weights", str(tmp_path / "weights"), "--output", str(tmp_path / "up"), cwd=tmp_path, env=env)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert "docker not found" in last_line and "--model-only" in last_line
    assert not (tmp_path / "up").exists(), "nothing should be written when the image step cannot run"


def test_export_with_docker_saves_the_image_next_to_the_model(tmp_path):
    make_weights(tmp_path / "weights")
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text('#!/usr/bin/env bash\nif [[ "$1" == save ]]; then printf "image %s" "$2"; fi\nexit 0\n')
    docker.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{path_without_docker(tmp_path / 'bin')}")
    env.pop("SKIP_IMAGE", None)
    result = run_export(
        "my/tag:1", "--weights", str(tmp_path / "weights"), "--output", str(tmp_path / "up"), cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    images = sorted((tmp_path / "up").glob("my_tag_1_*.tar.gz"))
    assert len(images) == 1, sorted(p.name for p in (tmp_path / "up").iterdir())
    assert gzip.decompress(images[0].read_bytes()) == b"image my/tag:1"
    assert "Containers" in result.stdout and "Models" in result.stdout
    assert not list((tmp_path / "up").glob("*.partial"))


def test_the_real_weights_folder_packs_cleanly(tmp_path, request):
    if not REAL_WEIGHTS.is_dir() or not any(REAL_WEIGHTS.iterdir()):
        pytest.skip("no weights/ in this checkout")
    total = sum(p.stat().st_size for p in REAL_WEIGHTS.rglob("*") if p.is_file() and not p.is_symlink())
    if total > REAL_WEIGHTS_QUICK_LIMIT and not request.config.getoption("--runslow", default=False):
        pytest.skip(f"weights/ holds {human_size(total)}: packed only with --runslow")
    report = build_model_tarball(REAL_WEIGHTS, tmp_path / "model.tar.gz")
    verify_model_tarball(report.path, expected=report)
    assert set(report.files) == set(scan_weights(REAL_WEIGHTS))


def test_a_symlinked_weights_folder_itself_is_packed_by_its_contents(tmp_path):
    files = make_weights(tmp_path / "real-weights")
    (tmp_path / "weights").symlink_to(tmp_path / "real-weights", target_is_directory=True)
    report = build_model_tarball(tmp_path / "weights", tmp_path / "model.tar.gz")
    assert extract_like_grand_challenge(report.path, tmp_path / "x") == files
