"""Running members through ONNX Runtime instead of PyTorch.

Each member's network is exported once to ONNX (input: a batch of patches of the plans' patch
size; the batch axis is dynamic) and stored next to its checkpoint as ``<checkpoint>.onnx``, with
the checkpoint's SHA-256 in the model's metadata so a stale export is never used. When the file
is missing or stale and the weights folder is read-only (grand-challenge's /opt/ml/model), the
export goes to a cache folder under the temporary directory instead. ``pantherseg export-onnx``
writes the files ahead of time so that they can ship in the model tarball.

The :class:`OnnxBackend` builds an :class:`OrtNetwork` per member: tensor in, tensor out.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from pantherseg.engine.checkpoint import checkpoint_sha256
from pantherseg.engine.members import Member, build_network
from pantherseg.errors import ResourceError
from pantherseg.io.files import atomic_file

log = logging.getLogger(__name__)

CHECKSUM_KEY = "pantherseg_checkpoint_sha256"
OPSET = 17


def onnx_path(member: Member) -> Path:
    return member.checkpoint.path.with_suffix(".onnx")


def export_member(member: Member, path: Path) -> Path:
    """Export ``member``'s network (fp32, on the CPU) to ``path``; atomic."""
    import onnx

    network = build_network(member, torch.device("cpu"))
    example = torch.zeros((1, 1, *member.patch_size), dtype=torch.float32)
    with atomic_file(path) as tmp:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = CHECKSUM_KEY, checkpoint_sha256(member.checkpoint.path)
        onnx.save(model, str(tmp))
    log.info("%s: exported to %s", member.describe(), path)
    return path


def _is_current(path: Path, member: Member) -> bool:
    import onnx

    if not path.is_file():
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any unreadable file is simply re-exported
        return False
    stored = {p.key: p.value for p in model.metadata_props}.get(CHECKSUM_KEY)
    return stored == checkpoint_sha256(member.checkpoint.path)


def find_or_export(member: Member, cache_dir: Path | None = None) -> Path:
    """The member's current ONNX file: beside the checkpoint, else in the cache, else exported now."""
    beside = onnx_path(member)
    if _is_current(beside, member):
        return beside
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "pantherseg-onnx"
    cached = cache_dir / checkpoint_sha256(member.checkpoint.path)[:16] / beside.name
    if _is_current(cached, member):
        return cached
    target = beside if os.access(beside.parent, os.W_OK) else cached
    log.info("%s: no current ONNX export; exporting to %s", member.describe(), target)
    return export_member(member, target)


class OrtNetwork:
    """An ONNX Runtime session as a :class:`~pantherseg.engine.networks.Network`; the session is opened on
    the first call (and again after :meth:`release` or :meth:`set_threads`)."""

    def __init__(self, path: Path, device: torch.device, threads: int | None = None):
        self.path, self.device, self.threads = path, device, threads
        self._session = None

    def _open(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        # Without this every member's session keeps its own CPU buffer arena at its peak size after
        # its tiles are done: 6 full-size members held 14 GB, 4.7x nnU-Net's peak (benchmark).
        options.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        return self._session

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        session = self._session or self._open()
        array = np.ascontiguousarray(tiles.detach().float().cpu().numpy())
        logits = session.run(["logits"], {"image": array})[0]
        return torch.from_numpy(logits).to(tiles.device)

    def release(self) -> None:
        self._session = None

    def set_threads(self, threads: int) -> None:
        self.threads, self._session = threads, None  # a session's thread pool is fixed when it opens


class OnnxBackend:
    """ONNX Runtime sessions of the members' exported graphs (exported at load time if missing or stale)."""

    name = "onnxruntime"

    def __init__(self, members: list[Member], device: torch.device, cache_dir: Path | None = None):
        import onnxruntime as ort

        if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ResourceError(
                "ONNX Runtime has no CUDA provider here; install onnxruntime-gpu or use --backend torch."
            )
        self.device = device
        self.paths = {member.name: find_or_export(member, cache_dir) for member in members}

    def build(self, member: Member) -> OrtNetwork:
        return OrtNetwork(self.paths[member.name], self.device)
