"""pantherseg.engine.runtime: device, precision and backend names are checked, and 'auto' follows the rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pantherseg.engine.runtime import resolve_backend, resolve_device, resolve_precision
from pantherseg.errors import ConfigError, ResourceError

CPU = torch.device("cpu")
CUDA = SimpleNamespace(type="cuda")  # a stand-in: only .type is read, no GPU needed


@pytest.mark.parametrize("name", ["fp64", "float16", "", "FP32"])
def test_unknown_precision_is_refused_by_name_not_a_key_error(name):
    with pytest.raises(ConfigError, match=r"Precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\], found"):
        resolve_precision(name, CPU)


def test_precision_auto_and_fp16_on_the_cpu():
    assert resolve_precision("auto", CPU) is None and resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    assert resolve_precision("auto", CUDA) is torch.float16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)


def test_unknown_backend_is_refused_not_run_as_torch():
    with pytest.raises(ConfigError, match=r"Backend must be auto or one of .*found 'tensorrt'"):
        resolve_backend("tensorrt", CPU)


def test_the_default_backend_per_device():
    """auto: OpenVINO first on the CPU when ready (docs/speed.md; tests/engine/test_openvino_backend.py), torch on CUDA."""
    assert resolve_backend("auto", CUDA) == "torch"
    assert resolve_backend("torch", CPU) == "torch"


def test_a_bad_precision_through_the_api_is_one_line(tiny_weights, tiny_config, tmp_path):
    import SimpleITK as sitk

    from pantherseg import segment

    from conftest import synthetic_image

    synthetic_case = tmp_path / "case.mha"
    sitk.WriteImage(synthetic_image(), str(synthetic_case))
    with pytest.raises(ConfigError, match=r"Precision must be one of .* found 'fp64'"):
        segment(
            synthetic_case,
            output_dir=tmp_path / "out",
            config=tiny_config,
            weights=tiny_weights,
            device="cpu",
            precision="fp64",
        )


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda0", ""])
def test_an_unknown_device_is_a_config_error_with_its_exit_code(name):
    with pytest.raises(ConfigError, match=f"Device must be auto, cpu or cuda\\[:N\\], found '{name}'") as raised:
        resolve_device(name)
    assert raised.value.exit_code == 4


def test_cuda_without_a_gpu_is_a_resource_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ResourceError, match="PyTorch sees no CUDA GPU") as raised:
        resolve_device("cuda:1")
    assert raised.value.exit_code == 5
