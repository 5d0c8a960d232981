"""The model tarball is uploaded by whoever runs the algorithm: ``verify`` must notice a damaged gzip
stream, refuse a decompression bomb before extracting it, and every error is one
``pantherseg error:`` line (a few small files per test; the module takes about a second).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pantherseg.container.model_tarball import build_model_tarball, main, verify_model_tarball
from pantherseg.errors import ModelError

REPO = Path(__file__).resolve().parents[2]


def weights_folder(root: Path) -> Path:
    folder = root / "weights"
    for index in range(4):
        (folder / f"fold_{index}").mkdir(parents=True)
        (folder / f"fold_{index}" / "checkpoint_final.pth").write_bytes(os.urandom(200_000))
    (folder / "plans.json").write_text("{}")
    return folder


def test_a_tarball_with_bytes_flipped_mid_stream_is_refused(tmp_path):
    tarball = build_model_tarball(weights_folder(tmp_path), tmp_path / "model.tar.gz").path
    data = bytearray(tarball.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    tarball.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt or truncated"):
        verify_model_tarball(tarball)


def test_a_truncated_tarball_is_refused(tmp_path):
    tarball = build_model_tarball(weights_folder(tmp_path), tmp_path / "model.tar.gz").path
    tarball.write_bytes(tarball.read_bytes()[:-8])  # the CRC and size trailer are gone
    with pytest.raises(ModelError, match="corrupt or truncated"):
        verify_model_tarball(tarball)


def test_a_decompression_bomb_is_refused_before_extraction(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "zeros.bin").write_bytes(bytes(8 * 1024 * 1024))  # compresses about 1000-fold
    tarball = build_model_tarball(folder, tmp_path / "bomb.tar.gz").path
    assert tarball.stat().st_size < 100_000
    extracted = []
    monkeypatch.setattr("tarfile.TarFile.extractall", lambda *a, **k: extracted.append(1))
    with pytest.raises(ModelError, match=r"unpacks to more than 1\.0 MiB .*decompression bomb"):
        verify_model_tarball(tarball, max_unpacked_bytes=1024 * 1024)
    assert extracted == []


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pantherseg.container.model_tarball", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_command_line_errors_are_one_prefixed_line(tmp_path):
    weights = weights_folder(tmp_path)
    (tmp_path / "existing").mkdir()
    result = run_cli("build", "--weights", str(weights), "--output", str(tmp_path / "existing"))
    assert result.returncode == ModelError.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pantherseg error: ") and "is a folder" in lines[0]

    (tmp_path / "bomb").mkdir()
    (tmp_path / "bomb" / "zeros.bin").write_bytes(bytes(4 * 1024 * 1024))
    assert main(["build", "--weights", str(tmp_path / "bomb"), "--output", str(tmp_path / "b.tar.gz")]) == 0
    result = run_cli("verify", str(tmp_path / "b.tar.gz"), "--max-unpacked-gib", "0.001")
    assert result.returncode == ModelError.exit_code
    assert result.stderr.strip().splitlines()[-1].startswith("pantherseg error: model tarball")


def test_check_errors_carry_the_prefix(tmp_path, capsys):
    assert main(["check", "--weights", str(tmp_path / "nothing")]) == ModelError.exit_code
    assert capsys.readouterr().err.startswith("pantherseg error: weights folder")


# --- issue 20: bounded in depth and in what extraction writes ------------------------------------------


def _gnu_sparse_tarball(path: Path, realsize: int) -> Path:
    """A GNU sparse member of ``realsize`` bytes holding no data: a hundred-odd bytes once gzipped."""
    import gzip

    block = bytearray(512)
    block[0:9] = b"weights/x"
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = block[136:148] = b"00000000000\0"
    block[156] = ord("S")
    block[257:265] = b"ustar  \0"
    block[483:495] = b"%012o" % realsize
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    path.write_bytes(gzip.compress(bytes(block) + bytes(1024), mtime=0))
    return path


def test_a_tiny_gnu_sparse_tarball_claiming_40_gib_is_refused_before_extraction(tmp_path):
    import tarfile
    import time

    tarball = _gnu_sparse_tarball(tmp_path / "sparse.tar.gz", 40 << 30)
    assert tarball.stat().st_size < 200
    with tarfile.open(tarball) as tar:
        assert tar.getmembers()[0].issparse() and tar.getmembers()[0].size == 40 << 30
    started = time.process_time()  # CPU seconds of this process, not the shared cores' wall clock
    with pytest.raises(ModelError, match="sparse member counts at its extracted size"):
        verify_model_tarball(tarball)
    assert time.process_time() - started < 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparse.tar.gz"]  # no scratch folder left


def test_a_tarball_3000_folders_deep_is_refused_with_one_line(tmp_path):
    import io
    import tarfile

    tarball = tmp_path / "deep.tar.gz"
    with tarfile.open(tarball, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a/" * 3000 + "plans.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ModelError, match="3001 folders deep"):
        verify_model_tarball(tarball)


def test_build_refuses_a_weights_folder_1500_levels_deep(tmp_path, deep_folder):
    folder = weights_folder(tmp_path)
    deep = deep_folder(folder, 1500)
    (deep / "f").write_text("x")
    with pytest.raises(ModelError, match="nested more than 32 folders deep"):
        build_model_tarball(folder, tmp_path / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists()


def test_build_refuses_a_symlink_loop_with_a_line(tmp_path):
    folder = weights_folder(tmp_path)
    os.symlink("loop", folder / "loop")
    with pytest.raises(ModelError, match="symbolic link loop"):
        build_model_tarball(folder, tmp_path / "model.tar.gz")


def test_verify_command_line_refuses_the_sparse_tarball_with_one_line(tmp_path):
    tarball = _gnu_sparse_tarball(tmp_path / "sparse.tar.gz", 40 << 30)
    result = subprocess.run(
        [sys.executable, "-m", "pantherseg.container.model_tarball", "verify", str(tarball)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pantherseg error: ")
