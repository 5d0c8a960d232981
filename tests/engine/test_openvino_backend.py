"""The OpenVINO backend against the torch backend on the same members; conversion cache; precision."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

from pantherseg.cli import main  # noqa: E402
from pantherseg.config import load_config  # noqa: E402
from pantherseg.engine.ensemble import Ensemble  # noqa: E402
from pantherseg.engine.openvino_backend import (  # noqa: E402
    CHECKSUM_KEY,
    OpenVinoNetwork,
    check_precision,
    find_current,
    find_or_convert,
    ir_path,
    native_bf16,
)
from pantherseg.engine.runtime import (
    EngineOptions,
    resolve_backend,  # noqa: E402
)
from pantherseg.errors import PantherError, ResourceError  # noqa: E402
from pantherseg.io.images import volume_from_image  # noqa: E402

from conftest import MODEL_A, synthetic_image  # noqa: E402
from model_factory import config_dict, member  # noqa: E402


@pytest.fixture(scope="module")
def converted(tiny_weights, tmp_path_factory):
    """A writable copy of the tiny weights, one member converted by `pantherseg export-openvino` (shared)."""
    root = tmp_path_factory.mktemp("ov")
    weights = root / "weights"
    shutil.copytree(tiny_weights, weights)
    config = root / "config.json"
    config.write_text(json.dumps(config_dict([member("a-f0", MODEL_A)])))
    assert main(["export-openvino", "--config", str(config), "--weights", str(weights)]) == 0
    ensemble = Ensemble.load(
        config=load_config(config), task="t1", weights=weights, engine=EngineOptions(device="cpu", backend="openvino")
    )
    return weights, config, ensemble


def test_export_command_writes_beside_the_checkpoint_and_masks_match_torch(converted):
    weights, config, ov_ensemble = converted
    [network] = [ov_ensemble.network(m) for m in ov_ensemble.members]
    assert isinstance(network, OpenVinoNetwork) and network.path == ir_path(ov_ensemble.members[0])
    assert network.path.with_suffix(".bin").stat().st_size > 0
    torch_ensemble = Ensemble.load(
        config=load_config(config), task="t1", weights=weights, engine=EngineOptions(device="cpu", backend="torch")
    )

    tiles = torch.randn((2, 1, *torch_ensemble.members[0].patch_size))
    with torch.inference_mode():
        expected = torch_ensemble.network(torch_ensemble.members[0])(tiles)
    got = network(tiles)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # Not bit-equal: OpenVINO's instance norm takes the variance in one pass (E[x^2] - E[x]^2), which
    # loses digits where a channel's mean is large against its spread; these random, shrunk networks
    # (4-channel stages, perturbed norms) show it most: about 0.2% of the logits' range at worst.
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) < 0.005 * scale
    assert float((got - expected).abs().mean()) < 5e-4 * scale

    volume = volume_from_image(synthetic_image(shape_zyx=(24, 70, 80), seed=4))
    a = torch_ensemble.predict(volume).mask
    b = ov_ensemble.predict(volume).mask
    assert float((a == b).mean()) >= 0.995  # the fidelity bar for random weights
    assert 0 < a.mean() < 1


def test_compiled_precision_is_explicit(converted):
    import openvino.properties.hint as hints

    _, _, ensemble = converted
    network = ensemble.network(ensemble.members[0])
    compiled = network.compile()
    # OpenVINO's own default on this project's build CPU (AVX512-BF16) is bf16; ours must be f32.
    assert str(compiled.get_property(hints.inference_precision)) == "<Type: 'float32'>"
    network.release()
    assert network._compiled is None
    if native_bf16():
        bf16 = OpenVinoNetwork(network.path, precision="bf16").compile()
        assert str(bf16.get_property(hints.inference_precision)) == "<Type: 'bfloat16'>"


def test_bf16_is_refused_without_native_support(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not native_bf16(cpuinfo)
    with pytest.raises(ResourceError, match="native bfloat16.*--precision fp32"):
        check_precision("bf16", cpuinfo)
    assert check_precision("fp32", cpuinfo) == "f32"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16\n")
    assert native_bf16(cpuinfo) and check_precision("bf16", cpuinfo) == "bf16"
    with pytest.raises(ResourceError, match="fp32 or bf16"):
        check_precision("fp16", cpuinfo)


def test_stale_conversion_is_detected_and_read_only_weights_use_the_cache(converted, tmp_path, monkeypatch):
    import openvino as ov

    from pantherseg.engine import openvino_backend

    _, _, ensemble = converted
    [member] = ensemble.members
    path = ir_path(member)
    cache = tmp_path / "cache"
    saved = tmp_path / "saved"
    saved.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy2(path.with_suffix(suffix), saved / path.with_suffix(suffix).name)
    assert find_current(member, cache_dir=cache) == path
    model = ov.Core().read_model(str(path))
    model.set_rt_info("stale", CHECKSUM_KEY)  # as if the checkpoint had changed since the conversion
    # Written aside and renamed: the weights are memory-mapped, so writing over them in place would crash.
    ov.save_model(model, str(tmp_path / path.name), compress_to_fp16=False)
    del model
    for suffix in (".xml", ".bin"):
        (tmp_path / path.name).with_suffix(suffix).replace(path.with_suffix(suffix))
    try:
        assert find_current(member, cache_dir=cache) is None

        targets = []
        monkeypatch.setattr(openvino_backend, "convert_member", lambda m, target: targets.append(target) or target)
        assert find_or_convert(member, cache_dir=cache) == path  # writable: converted again beside the checkpoint
        monkeypatch.setattr(openvino_backend.os, "access", lambda *_: False)  # /opt/ml/model is read-only
        cached = find_or_convert(member, cache_dir=cache)
        assert cache in cached.parents and targets == [path, cached]

        # A current conversion in the cache is used as it is.
        cached.parent.mkdir(parents=True)
        for suffix in (".xml", ".bin"):
            shutil.copy2(saved / path.with_suffix(suffix).name, cached.with_suffix(suffix))
        assert find_current(member, cache_dir=cache) == cached
    finally:
        for suffix in (".xml", ".bin"):  # the other tests share this conversion
            (saved / path.with_suffix(suffix).name).replace(path.with_suffix(suffix))


def test_auto_backend_rule(converted, tiny_weights, monkeypatch, caplog):
    _, _, ensemble = converted
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, ensemble.members) == "openvino"
    assert resolve_backend("auto", cuda, ensemble.members) == "torch"
    # Members without a current conversion: auto does not convert inside a case's budget.
    _, config, _ = converted
    unconverted = Ensemble.load(
        config=load_config(config), task="t1", weights=tiny_weights, engine=EngineOptions(device="cpu", backend="torch")
    ).members
    with caplog.at_level(logging.INFO, logger="pantherseg.engine.runtime"):
        assert resolve_backend("auto", cpu, unconverted) == "torch"
    assert "export-openvino" in caplog.text
    # OpenVINO not installed: the next backend, with one log line.
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "openvino" else real_find_spec(name))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pantherseg.engine.runtime"):
        assert resolve_backend("auto", cpu, ensemble.members) == "torch"
    assert [r.getMessage() for r in caplog.records] == ["backend auto: openvino is not installed; using torch"]


def test_unknown_backend_and_openvino_on_a_gpu_are_refused():
    with pytest.raises(PantherError, match="Backend must be auto or one of.*found 'tensorrt'"):
        resolve_backend("tensorrt", torch.device("cpu"))
    from pantherseg.engine.openvino_backend import OpenVinoBackend

    with pytest.raises(ResourceError, match="CPU only"):
        OpenVinoBackend([], torch.device("cuda"))


def test_released_network_recompiles_and_gives_the_same_logits(converted):
    _, _, ensemble = converted
    network = ensemble.network(ensemble.members[0])
    tiles = torch.randn((1, 1, *ensemble.members[0].patch_size))
    first = network(tiles)
    network.release()
    np.testing.assert_array_equal(network(tiles).numpy(), first.numpy())
