"""The ONNX Runtime backend against the torch backend on the same members."""

from __future__ import annotations

import shutil

import torch

from pantherseg.cli import main
from pantherseg.config import load_config
from pantherseg.engine.ensemble import Ensemble
from pantherseg.engine.onnx_backend import CHECKSUM_KEY, OrtNetwork, find_or_export, onnx_path
from pantherseg.engine.runtime import EngineOptions
from pantherseg.io.images import volume_from_image

from conftest import MODEL_A, synthetic_image


def test_onnx_logits_and_masks_match_torch(tiny_weights, tiny_config, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    config = load_config(tiny_config)
    torch_ensemble = Ensemble.load(
        config=config, task="t1", weights=weights, engine=EngineOptions(device="cpu", backend="torch")
    )
    ort_ensemble = Ensemble.load(
        config=config, task="t1", weights=weights, engine=EngineOptions(device="cpu", backend="onnxruntime")
    )
    assert all(isinstance(ort_ensemble.network(m), OrtNetwork) for m in ort_ensemble.members)
    assert onnx_path(ort_ensemble.members[0]).is_file()  # written beside the checkpoint

    tiles = torch.randn((2, 1, *torch_ensemble.members[0].patch_size))
    with torch.inference_mode():
        expected = torch_ensemble.network(torch_ensemble.members[0])(tiles)
    torch.testing.assert_close(ort_ensemble.network(ort_ensemble.members[0])(tiles), expected, atol=2e-3, rtol=1e-3)

    volume = volume_from_image(synthetic_image(shape_zyx=(24, 70, 80), seed=4))
    a = torch_ensemble.predict(volume).mask
    b = ort_ensemble.predict(volume).mask
    assert float((a == b).mean()) >= 0.995  # the fidelity bar for random weights
    assert 0 < a.mean() < 1


def test_stale_export_is_replaced_and_read_only_weights_use_the_cache(tiny_weights, tiny_config, tmp_path):
    import onnx

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    ensemble = Ensemble.load(
        config=load_config(tiny_config), task="t1", weights=weights, engine=EngineOptions(device="cpu")
    )
    member = next(m for m in ensemble.members if m.spec.model == MODEL_A)
    path = find_or_export(member)
    model = onnx.load(str(path))
    model.metadata_props[0].value = "stale"
    onnx.save(model, str(path))
    path.parent.chmod(0o555)
    try:
        cached = find_or_export(member, cache_dir=tmp_path / "cache")
    finally:
        path.parent.chmod(0o755)
    # Root ignores directory permissions, so either place is right as long as the file is current.
    current = onnx.load(str(cached))
    assert {p.key: p.value for p in current.metadata_props}[CHECKSUM_KEY] != "stale"


def test_export_onnx_command(tiny_weights, tiny_config, tmp_path, capsys):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    assert main(["export-onnx", "--task", "t2", "--config", str(tiny_config), "--weights", str(weights)]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 1 and written[0].endswith("checkpoint_best.onnx")
