"""Loading nnU-Net checkpoints without running pickled code.

nnU-Net itself calls ``torch.load(..., weights_only=False)``, so a checkpoint from a model tarball
could execute anything. Here checkpoints are read with ``weights_only=True``: only tensors,
containers, numbers, strings, ``torch.device`` and the few numpy scalar types that nnU-Net's
training log stores are accepted. Anything else (e.g. a ``__reduce__`` that calls ``os.system``) is
refused before it runs.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import ModelError, one_line
from pantherseg.io.files import cached_file_sha256


@dataclass
class Checkpoint:
    """What inference needs from an nnU-Net checkpoint."""

    path: Path
    state_dict: dict
    trainer_name: str | None
    configuration: str | None
    mirroring_axes: tuple[int, ...] | None


def _numpy_types_in_nnunet_logs() -> list:
    """The numpy scalar types nnU-Net's trainer pickles into 'logging' and '_best_ema'."""
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    return [
        core.multiarray.scalar,
        numpy.dtype,
        numpy.dtypes.Float64DType,
        numpy.dtypes.Float32DType,
        numpy.dtypes.Int64DType,
    ]


def load_checkpoint(path: Path, *, owner: str) -> Checkpoint:
    """Read ``path`` safely; ``owner`` (e.g. "member 'allrounder-f0'") prefixes every error."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_types_in_nnunet_logs()):
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"the object '{blocked.group(1)}'" if blocked else "objects other than tensors and numbers"
        raise ModelError(
            f"{owner}: checkpoint {path} was refused: it contains {what}, which could run code when "
            f"loaded. Expected plain weights (torch.save of tensors and numbers); re-save the state dict."
        ) from None
    except FileNotFoundError:
        raise ModelError(f"{owner}: checkpoint not found: expected a file at {path}.") from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise ModelError(
            f"{owner}: {path} is not a readable PyTorch checkpoint (truncated or another file type?): "
            f"{one_line(str(error), default=type(error).__name__)}."
        ) from None

    if not isinstance(raw, dict):
        raise ModelError(f"{owner}: checkpoint {path} holds a {type(raw).__name__}, expected a dict.")
    # nnU-Net checkpoints keep the weights under 'network_weights'; a bare state dict is accepted too.
    state_dict = raw.get("network_weights", raw)
    if not isinstance(state_dict, dict) or not state_dict or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ModelError(
            f"{owner}: checkpoint {path} has no network weights: expected a 'network_weights' dict of tensors."
        )
    init_args = raw.get("init_args") if isinstance(raw.get("init_args"), dict) else {}
    mirroring = raw.get("inference_allowed_mirroring_axes")
    return Checkpoint(
        path=path,
        state_dict=state_dict,
        trainer_name=raw.get("trainer_name") if isinstance(raw.get("trainer_name"), str) else None,
        configuration=init_args.get("configuration") if isinstance(init_args.get("configuration"), str) else None,
        mirroring_axes=tuple(mirroring) if isinstance(mirroring, (tuple, list)) and all(
            isinstance(a, int) and not isinstance(a, bool) for a in mirroring) else None,
    )


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint file, read once per process (:func:`cached_file_sha256`).

    The ONNX and OpenVINO backends store it in their converted graphs and compare it on loading, so a
    graph converted from other weights is never run."""
    return cached_file_sha256(path)
