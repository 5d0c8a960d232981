"""pantherseg.engine.runtime: device, precision and backend names are checked, and 'auto' follows the rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pantherseg.engine.runtime import DEFAULT_BACKENDS, resolve_backend, resolve_precision
from pantherseg.errors import PantherError

CPU = torch.device("cpu")
CUDA = SimpleNamespace(type="cuda")  # a stand-in: only .type is read, no GPU needed


@pytest.mark.parametrize("name", ["fp64", "float16", "", "FP32"])
def test_unknown_precision_is_refused_by_name_not_a_key_error(name):
    with pytest.raises(PantherError, match=r"Precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\], found"):
        resolve_precision(name, CPU)


def test_precision_auto_and_fp16_on_the_cpu():
    assert resolve_precision("auto", CPU) is None and resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    assert resolve_precision("auto", CUDA) is torch.float16
    with pytest.raises(PantherError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)


def test_unknown_backend_is_refused_not_run_as_torch():
    with pytest.raises(PantherError, match=r"Backend must be auto or one of .*found 'tensorrt'"):
        resolve_backend("tensorrt", CPU)


def test_the_default_backend_per_device():
    """auto: OpenVINO first on the CPU when ready (docs/speed.md), else torch; torch on CUDA."""
    assert DEFAULT_BACKENDS == {"cpu": ("openvino", "torch"), "cuda": ("torch",)}
    assert resolve_backend("auto", CUDA) == "torch"
    assert resolve_backend("torch", CPU) == "torch"


def test_a_bad_precision_through_the_api_is_one_line(tiny_weights, tiny_config, tmp_path):
    import SimpleITK as sitk

    from conftest import synthetic_image
    from pantherseg import segment

    synthetic_case = tmp_path / "case.mha"
    sitk.WriteImage(synthetic_image(), str(synthetic_case))
    with pytest.raises(PantherError, match=r"Precision must be one of .* found 'fp64'"):
        segment(synthetic_case, output_dir=tmp_path / "out", config=tiny_config, weights=tiny_weights,
                device="cpu", precision="fp64")
