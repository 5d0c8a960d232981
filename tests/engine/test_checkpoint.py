"""Checkpoints are decoded within bounds and hold the tensors their network expects (engine/checkpoint.py).

Bombs are refused from the zip central directory before anything inflates; a member that inflates
beyond what it declares is caught while counting; tensors of the wrong type are refused, float16
and bfloat16 widened to float32; NaN weights never reach a mask.
"""

from __future__ import annotations

import resource
import shutil
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch

from pantherseg.config import parse_config
from pantherseg.engine.checkpoint import MAX_RATIO, check_archive
from pantherseg.engine.members import build_network, load_members
from pantherseg.errors import ModelError

from conftest import MODEL_A
from model_factory import config_dict, member


@pytest.fixture
def weights(tiny_weights, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_weights, tmp_path / "weights"))


def checkpoint_of(weights: Path) -> Path:
    return weights / MODEL_A / "fold_0" / "checkpoint_final.pth"


def load(weights: Path):
    return load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), weights)


def refused(weights: Path, *expected: str) -> str:
    with pytest.raises(ModelError) as caught:
        for loaded in load(weights):
            build_network(loaded, torch.device("cpu"))
    message = str(caught.value)
    assert "\n" not in message and "member 'a-f0'" in message and str(checkpoint_of(weights)) in message
    for text in expected:
        assert text in message, message
    return message


def rewrite(path: Path, *, compress: str | None = None, extra: bytes = b"") -> None:
    """Copy the checkpoint's zip with member ``compress`` (a name suffix) deflated and ``extra`` appended to it."""
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as target:
        for info, data in entries:
            if compress and info.filename.endswith(compress):
                target.writestr(info.filename, data + extra, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            else:
                target.writestr(info, data)


def test_a_deflated_pickle_bomb_is_refused_fast_and_small(weights):
    """nnU-Net's torch.load would allocate and inflate the declared size; refused from the directory."""
    rewrite(checkpoint_of(weights), compress="data.pkl", extra=bytes(200 << 20))
    assert checkpoint_of(weights).stat().st_size < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()  # CPU seconds of this process, not the shared cores' wall clock
    refused(weights, "refused before decoding", "data.pkl", "decompression bomb")
    assert time.process_time() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing inflated


def test_a_moderately_compressed_member_within_bounds_loads(weights):
    """Deflate is read (a zip tool may recompress a checkpoint): within the ratio it loads."""
    rewrite(checkpoint_of(weights), compress="data.pkl")
    info = next(i for i in zipfile.ZipFile(checkpoint_of(weights)).infolist() if i.filename.endswith("data.pkl"))
    assert info.compress_type == zipfile.ZIP_DEFLATED and info.file_size < MAX_RATIO * info.compress_size
    assert load(weights)


def _patch_declared_size(path: Path, suffix: str, size: int) -> None:
    """Rewrite the uncompressed size a member declares in both its local and its central header."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    struct.pack_into("<I", data, info.header_offset + 22, size)
    position = data.find(info.filename.encode(), data.find(b"PK\x01\x02"))
    while position != -1 and data[position - 46 : position - 42] != b"PK\x01\x02":
        position = data.find(info.filename.encode(), position + 1)
    assert position != -1
    struct.pack_into("<I", data, position - 46 + 24, size)
    path.write_bytes(bytes(data))


def test_a_member_inflating_beyond_its_declared_size_is_refused(weights):
    path = checkpoint_of(weights)
    rewrite(path, compress="data.pkl")
    _patch_declared_size(path, "data.pkl", 100)
    refused(weights, "refused before decoding", "more than the 100 bytes it declares")


def test_a_stored_member_declaring_more_than_it_holds_is_refused(weights):
    path = checkpoint_of(weights)
    _patch_declared_size(path, "data/0", 3 << 30)
    refused(weights, "refused before decoding", "declares")


def test_check_archive_leaves_other_files_to_torch(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(b"not a zip at all")
    check_archive(path, owner="x")  # no zip: torch.load's own message says what it is


def _resave(path: Path, change) -> None:
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["network_weights"] = {k: change(v) for k, v in checkpoint["network_weights"].items()}
    torch.save(checkpoint, path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.float64, torch.bool])
def test_tensors_of_another_type_are_refused(weights, dtype):
    _resave(checkpoint_of(weights), lambda t: t.to(dtype) if t.is_floating_point() else t)
    refused(weights, "wrong type", str(dtype).removeprefix("torch."))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_widened_to_float32(weights, dtype):
    _resave(checkpoint_of(weights), lambda t: t.to(dtype) if t.is_floating_point() else t)
    loaded = load(weights)[0]
    network = build_network(loaded, torch.device("cpu"))
    assert {p.dtype for p in network.parameters()} == {torch.float32}


def test_nan_weights_are_refused_when_the_network_is_built(weights):
    _resave(checkpoint_of(weights), lambda t: torch.full_like(t, float("nan")) if t.is_floating_point() else t)
    refused(weights, "non-finite weights")


@pytest.mark.parametrize("axes", [(0, 5), (1, 1), ("x",), 3])
def test_mirroring_axes_out_of_range_are_refused(weights, axes):
    path = checkpoint_of(weights)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["inference_allowed_mirroring_axes"] = axes
    torch.save(checkpoint, path)
    refused(weights, "inference_allowed_mirroring_axes")
