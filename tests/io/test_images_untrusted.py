"""Images from anywhere: headers that point elsewhere, claim too much, or hold impossible geometry.

Each is refused by ``read_volume`` in one line before the voxels are read (or decompressed); the
files are a few hundred bytes written by hand, so the whole module takes about a second.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.engine import memory_estimate
from pantherseg.errors import InputError, ResourceError
from pantherseg.io import host_memory
from pantherseg.io.images import read_volume, volume_from_image

VOXELS_8 = np.arange(512, dtype="<f4").tobytes()


def header(
    path: Path,
    *,
    data_file="LOCAL",
    size=(8, 8, 8),
    element_type="MET_FLOAT",
    matrix="1 0 0 0 1 0 0 0 1",
    offset="0 0 0",
    spacing="1 1 1",
    compressed=False,
    extra="",
) -> Path:
    text = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"CompressedData = {compressed}\n{extra}TransformMatrix = {matrix}\nOffset = {offset}\n"
        f"ElementSpacing = {spacing}\nDimSize = {' '.join(map(str, size))}\nElementType = {element_type}\n"
        f"ElementDataFile = {data_file}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(path: Path, error=InputError) -> str:
    with pytest.raises(error) as caught:
        read_volume(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_detached_header_beside_its_voxels_is_read(tmp_path):
    (tmp_path / "case.raw").write_bytes(VOXELS_8)
    volume = read_volume(header(tmp_path / "case.mhd", data_file="case.raw"))
    assert volume.shape_zyx == (8, 8, 8) and float(volume.data.max()) == 511


@pytest.mark.parametrize("target", ["../secret.raw", "{outside}", "sub/../../secret.raw"])
def test_data_file_outside_the_image_folder_is_refused(tmp_path, target):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(VOXELS_8)
    path = header(tmp_path / "images" / "case.mhd", data_file=target.format(outside=secret))
    assert "outside the image's folder" in refused(path)


def test_data_file_linking_outside_the_image_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(VOXELS_8)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "case.raw").symlink_to(secret)
    assert "outside the image's folder" in refused(header(tmp_path / "images" / "case.mha", data_file="case.raw"))


def test_fifo_as_data_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "voxels.raw"
    os.mkfifo(fifo)
    path = header(tmp_path / "case.mha", data_file="voxels.raw")
    outcome = {}

    def read():
        try:
            read_volume(path)
        except InputError as error:
            outcome["error"] = str(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # unblock the reader (a FIFO open for read waits for a writer), then fail
        os.close(os.open(fifo, os.O_RDWR))
        pytest.fail("reading an image whose data file is a FIFO blocked")
    assert "not a regular file" in outcome.get("error", ""), outcome


def test_folder_as_data_file_is_refused(tmp_path):
    (tmp_path / "voxels").mkdir()
    assert "not a regular file" in refused(header(tmp_path / "case.mhd", data_file="voxels"))


@pytest.mark.parametrize("data_file", ["LIST", "slice%03d.raw 1 8 1"])
def test_multi_file_data_is_refused(tmp_path, data_file):
    assert "list or pattern" in refused(header(tmp_path / "case.mhd", data_file=data_file))


def test_nrrd_detached_data_file_outside_is_refused(tmp_path):
    (tmp_path / "secret.raw").write_bytes(VOXELS_8)
    path = tmp_path / "images" / "case.nrrd"
    path.parent.mkdir()
    path.write_text(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 8 8 8\nencoding: raw\nendian: little\ndata file: ../secret.raw\n\n"
    )
    assert "outside the image's folder" in refused(path)


def test_zlib_bomb_is_refused_from_its_header_without_decompressing(tmp_path, monkeypatch):
    """1100^3 uint8 voxels claimed by a few hundred bytes; even with 1 TB free it is not decompressed."""
    monkeypatch.setattr(host_memory, "available_bytes", lambda: 1 << 40)
    executed = []
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: executed.append(1))
    payload = zlib.compress(bytes(1 << 20), 9)
    path = header(
        tmp_path / "bomb.mha",
        size=(1100, 1100, 1100),
        element_type="MET_UCHAR",
        compressed=True,
        extra=f"CompressedDataSize = {len(payload)}\n",
    )
    path.write_bytes(path.read_bytes() + payload)
    message = refused(path, ResourceError)
    assert "claims 1.33e+09 voxels" in message and "before reading or decompressing" in message
    assert executed == []


@pytest.mark.parametrize("matrix, what", [("1 0.5 0 0 1 0 0 0 1", "sheared"), ("2 0 0 0 2 0 0 0 2", "scaled")])
def test_sheared_or_scaled_direction_is_refused(tmp_path, matrix, what):
    path = tmp_path / "case.mha"
    header(path, matrix=matrix)
    path.write_bytes(path.read_bytes() + VOXELS_8)
    message = refused(path)
    assert "sheared or scaled" in message and "orthonormal" in message


def test_nifti_whose_sform_holds_nan_is_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    image = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    image.header["sform_code"], image.header["qform_code"] = 1, 0
    path = tmp_path / "nan.nii"
    nib.save(image, path)
    data = bytearray(path.read_bytes())
    data[280:296] = struct.pack("<4f", float("nan"), 0, 0, float("nan"))  # srow_x
    path.write_bytes(bytes(data))
    message = refused(path)
    assert "NaN or infinite" in message and "sform" in message


@pytest.mark.parametrize("where", ["origin", "direction"])
def test_non_finite_geometry_in_memory_is_refused(where):
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    if where == "origin":
        image.SetOrigin((float("inf"), 0.0, 0.0))
    else:
        image.SetDirection((float("nan"), 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InputError, match="NaN or infinite"):
        volume_from_image(image, source="memory")


def test_absurd_spacing_gives_a_short_memory_message(tiny_weights, monkeypatch):
    from pantherseg.config import parse_config
    from pantherseg.engine.members import load_members

    from conftest import MODEL_A
    from model_factory import config_dict, member

    members = load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), tiny_weights)
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32) + 1
    image.SetSpacing((1e300, 1e300, 1e300))
    volume = volume_from_image(image, source="absurd.mha")
    ensemble = SimpleNamespace(
        members=members,
        num_classes=2,
        device=SimpleNamespace(type="cpu"),
        tile_batch_size=1,
        config=SimpleNamespace(tile_step_size=0.5),
    )
    monkeypatch.setattr(host_memory, "available_bytes", lambda: 16 * 1024**3)
    with pytest.raises(ResourceError) as caught:
        memory_estimate.check_prediction_fits(volume, ensemble)
    assert len(str(caught.value)) < 600, str(caught.value)
    assert "1e+300" in str(caught.value)


def test_tile_count_matches_nnunet_and_enters_the_estimate(tiny_weights):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    from pantherseg.engine.sliding_window import count_tiles

    for shape, patch, step in [
        ((90, 200, 240), (64, 112, 160), 0.5),
        ((64, 64, 64), (64, 64, 64), 0.1),
        ((300, 420, 420), (192, 192, 192), 0.1),
    ]:
        steps = compute_steps_for_sliding_window(shape, patch, step)
        assert count_tiles(shape, patch, step) == int(np.prod([len(s) for s in steps]))
    from pantherseg.config import parse_config
    from pantherseg.engine.members import load_members

    from conftest import MODEL_A
    from model_factory import config_dict, member

    members = load_members(parse_config(config_dict([member("a-f0", MODEL_A)])).task("t1"), tiny_weights)
    kwargs = dict(
        shape_zyx=(80, 300, 300), spacing_zyx=(3.0, 1.0, 1.0), source_bytes_per_voxel=4, members=members, num_classes=2
    )
    coarse = memory_estimate.estimate_prediction(**kwargs, tile_step_size=0.5).total
    fine = memory_estimate.estimate_prediction(**kwargs, tile_step_size=1e-4).total
    assert fine > coarse + 1e9  # a tiny step means millions of tiles: counted, not ignored


# --- every promised voxel byte present (pantherseg.io.voxel_bytes) ----------------------------------


def _nifti(tmp_path: Path, suffix: str) -> tuple[Path, np.ndarray]:
    array = (np.arange(16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16) % 97) + 1
    path = tmp_path / f"case{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=suffix.endswith(".gz"))
    return path, array


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_truncated_nifti_is_refused_not_zero_filled(tmp_path, suffix):
    """ITK reads both cut files with exit 0, half the voxels zero; here they are refused in one line."""
    path, _ = _nifti(tmp_path, suffix)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    message = refused(path)
    assert "truncated" in message and path.name in message


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_whole_nifti_reads_exactly(tmp_path, suffix):
    path, array = _nifti(tmp_path, suffix)
    assert np.array_equal(read_volume(path).data[0], array)


def test_a_damaged_gzip_stream_is_refused(tmp_path):
    path, _ = _nifti(tmp_path, ".nii.gz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # inside the deflate stream
    path.write_bytes(bytes(data))
    assert "gzip stream" in refused(path) or "truncated" in refused(path)


def test_a_gzip_bomb_is_inflated_no_further_than_the_header_promises(tmp_path, monkeypatch):
    """A 16^3 float header followed by 64 MiB more zeros in the stream: the check stops within its first 1 MiB block."""
    import gzip

    from pantherseg.io import voxel_bytes

    path, _ = _nifti(tmp_path, ".nii")
    raw = path.read_bytes()
    reads = []
    real_open = gzip.open

    def counting_open(*args, **kwargs):
        stream = real_open(*args, **kwargs)
        real_read = stream.read
        stream.read = lambda n=-1: reads.append(n) or real_read(n)
        return stream

    monkeypatch.setattr(voxel_bytes.gzip, "open", counting_open)
    bomb = tmp_path / "bomb.nii.gz"
    with real_open(bomb, "wb", compresslevel=1) as out:
        out.write(raw)
        for _ in range(64):
            out.write(bytes(1 << 20))
    read_volume(bomb)
    assert len(reads) <= 2


def test_an_image_linked_from_outside_its_folder_is_refused(tmp_path):
    path, _ = _nifti(tmp_path, ".nii.gz")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "case.nii.gz").symlink_to(path)
    assert "outside its folder" in refused(inputs / "case.nii.gz")
