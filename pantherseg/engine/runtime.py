"""Which device, precision, backend and thread count a run uses.

- device: ``auto`` is CUDA when torch sees a GPU, else the CPU; on the CPU torch's threads follow the
  process's CPU quota (pantherseg.engine.cpu_quota), not the host's cores;
- precision: ``auto`` is fp16 autocast on CUDA (as nnU-Net) and fp32 on the CPU;
- backend: ``auto`` is the first ready backend of DEFAULT_BACKENDS for the device; the rule that orders
  them, and the evidence, are in docs/speed.md;
- :class:`EngineOptions` carries these choices (and the tile batch size and CPU threads) as one value
  from the caller to :meth:`pantherseg.engine.ensemble.Ensemble.load`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pantherseg.config import BACKENDS as CONFIG_BACKENDS
from pantherseg.config import PRECISIONS as CONFIG_PRECISIONS
from pantherseg.engine.members import Member
from pantherseg.errors import ConfigError, ResourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How the ensemble runs, as chosen by the caller (None: the config's choice).

    Attributes:
        device: "auto" (CUDA if torch sees a GPU), "cpu" or "cuda[:N]".
        precision: "auto", "fp32", "bf16", "fp16", or None for the config's.
        backend: "auto", "torch", "onnxruntime", "openvino", or None for the config's.
        tile_batch_size: tiles per network pass.
        cpu_threads: CPU threads for the networks; None: the process's CPU quota (a worker sharing a
            node with others sets its share).
    """

    device: str = "auto"
    precision: str | None = None
    backend: str | None = None
    tile_batch_size: int = 1
    cpu_threads: int | None = None


def resolve_device(name: str = "auto"):
    """'auto' picks CUDA when torch sees a GPU, else the CPU; 'cuda' without a GPU is an error."""
    import re

    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not re.fullmatch(r"cuda(:[0-9]{1,3})?", name):
        raise ConfigError(f"Device must be auto, cpu or cuda[:N], found '{name}'.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ResourceError(f"Device '{name}' was requested but PyTorch sees no CUDA GPU; use --device cpu or auto.")
    if name == "cpu":
        from pantherseg.engine.cpu_quota import configure_torch_threads

        configure_torch_threads()  # the cgroup CPU quota (docker --cpus), not the host's cores
    return torch.device(name)


def resolve_precision(name: str, device):
    """The autocast dtype for ``name`` on ``device``; None means plain float32."""
    import torch

    if name not in CONFIG_PRECISIONS:
        raise ConfigError(f"Precision must be one of {list(CONFIG_PRECISIONS)}, found {name!r}.")
    if name == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("Precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU.")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def resolve_backend(name: str, device, members: list[Member] | None = None) -> str:
    """'auto' picks the first ready backend of DEFAULT_BACKENDS for the device; unknown names are refused.

    OpenVINO is ready when it is installed and every member has a current converted model
    (``pantherseg export-openvino``), so that auto never spends a case's budget converting."""
    import importlib.util

    if name == "auto":
        choices = DEFAULT_BACKENDS[device.type]
        for candidate in choices[:-1]:
            if importlib.util.find_spec(candidate) is None:
                log.info("backend auto: %s is not installed; using %s", candidate, choices[-1])
                continue
            if candidate == "openvino":
                from pantherseg.engine.openvino_backend import find_current

                unconverted = [m.name for m in members or [] if find_current(m) is None]
                if unconverted:
                    log.info(
                        "backend auto: no current OpenVINO model for %s (run `pantherseg export-openvino`); using %s",
                        ", ".join(unconverted),
                        choices[-1],
                    )
                    continue
            return candidate
        return choices[-1]
    if name not in BACKENDS:
        raise ConfigError(f"Backend must be auto or one of {list(BACKENDS)}, found '{name}'.")
    return name


BACKENDS = tuple(b for b in CONFIG_BACKENDS if b != "auto")
# In order of preference, the first one installed wins. The rule (docs/speed.md): the fastest backend
# whose fp32 masks agree with nnU-Net's own route on >= 99.9% of voxels with trained members (the demo
# zoo, both tasks) and >= 99.5% with random weights (tests/engine/test_fidelity.py, benchmarks/bench_ensemble.py).
DEFAULT_BACKENDS = {"cpu": ("openvino", "torch"), "cuda": ("torch",)}
