"""pantherseg.io.files: the one atomic writer and the one file hash."""

from __future__ import annotations

import hashlib

import pytest

from pantherseg.io.files import atomic_file, file_sha256, write_text_atomically


def test_a_completed_block_renames_the_file_into_place(tmp_path):
    target = tmp_path / "new" / "folder" / "out.txt"
    with atomic_file(target, suffix=".txt") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.partial-") and tmp.suffix == ".txt"
        tmp.write_text("whole")
        assert not target.exists()
    assert target.read_text() == "whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_a_failed_block_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt  # what SIGTERM becomes in the entry points
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_two_writers_into_one_folder_never_share_a_temporary_name(tmp_path):
    with atomic_file(tmp_path / "a") as first, atomic_file(tmp_path / "a") as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "a").read_text() == "1"  # the outer block finishes last


def test_text_and_hash(tmp_path):
    path = write_text_atomically(tmp_path / "r.json", "{}\n")
    assert path.read_text(encoding="utf-8") == "{}\n"
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 10_000)  # several read blocks
    assert file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing")


def test_cached_hash_is_read_once_and_again_after_the_file_changes(tmp_path, monkeypatch):
    from pantherseg.io import files

    path = tmp_path / "checkpoint.pth"
    path.write_bytes(b"a" * 10)
    reads = []
    real = files.file_sha256
    monkeypatch.setattr(files, "file_sha256", lambda p: reads.append(p) or real(p))
    first = files.cached_file_sha256(path)
    assert files.cached_file_sha256(path) == first and len(reads) == 1
    path.write_bytes(b"b" * 11)  # other size: hashed again
    assert files.cached_file_sha256(path) == hashlib.sha256(b"b" * 11).hexdigest() and len(reads) == 2
