"""Networks and the backends that build them.

A :class:`Member` is a frozen description of one fold; it never holds a network. A backend turns a
member into a :class:`Network` (PyTorch, ONNX Runtime or OpenVINO), and the
:class:`~pantherseg.engine.ensemble.Ensemble` owns the name -> network map its backend built, as
MONAI's inferers take the network they run instead of finding it on the data.

Every network is called the same way (a batch of patches in, logits out) and answers the same two
requests: :meth:`Network.release` (free its weights or compiled model: the next call is the
backend's to rebuild) and :meth:`Network.set_threads` (its CPU threads, for workers sharing a node).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from pantherseg.engine.members import Member, build_network

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class Network(Protocol):
    """(B, 1, *patch) float32 tiles -> (B, classes, *patch) logits, on the tiles' device."""

    def __call__(self, tiles: "torch.Tensor") -> "torch.Tensor": ...

    def release(self) -> None:
        """Free what the network holds (weights, compiled model, buffers)."""

    def set_threads(self, threads: int) -> None:
        """Run on at most ``threads`` CPU threads."""


class Backend(Protocol):
    """Builds each member's network; ``name`` is what the run report shows."""

    name: str

    def build(self, member: Member) -> Network: ...


class TorchNetwork:
    """A torch module as a :class:`Network`."""

    def __init__(self, module: "torch.nn.Module"):
        self.module = module

    def __call__(self, tiles: "torch.Tensor") -> "torch.Tensor":
        if self.module is None:
            raise RuntimeError("this network was released; its backend builds a new one")
        return self.module(tiles)

    def release(self) -> None:
        self.module = None

    def set_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # torch's threads are per process: the worker's share


class TorchBackend:
    """The members' own networks, built from their plans and checkpoints on ``device``."""

    name = "torch"

    def __init__(self, device: "torch.device"):
        self.device = device

    def build(self, member: Member) -> TorchNetwork:
        return TorchNetwork(build_network(member, self.device))


class GivenNetworks:
    """Networks the caller supplies (stand-ins in benchmarks and tests; a network served elsewhere): a
    map of member name -> network, or a function of the member that makes one. Torch modules are wrapped
    as :class:`TorchNetwork`. A mapped network that was released stays released: nothing rebuilds it."""

    def __init__(
        self, networks: "Mapping[str, Network | torch.nn.Module] | Callable[[Member], object]", name: str = "given"
    ):
        self.networks = networks
        self.name = name

    def build(self, member: Member) -> Network:
        import torch

        if callable(self.networks):
            network = self.networks(member)
        elif member.name in self.networks:
            network = self.networks[member.name]
        else:
            raise KeyError(f"no network was given for member {member.name!r}")
        return TorchNetwork(network) if isinstance(network, torch.nn.Module) else network


def make_backend(name: str, device: "torch.device", members: list[Member], autocast_dtype):
    """The backend ``name`` ("torch", "onnxruntime", "openvino") for ``members``, and the autocast dtype the
    sliding window should use with it. Exports and conversions it needs happen here, at load time."""
    if name == "torch":
        return TorchBackend(device), autocast_dtype
    if name == "onnxruntime":
        from pantherseg.engine.onnx_backend import OnnxBackend

        if autocast_dtype is not None:
            log.info(
                "ONNX Runtime runs the exported float32 graphs; precision %s applies to torch only", autocast_dtype
            )
        return OnnxBackend(members, device), None
    if name == "openvino":
        from pantherseg.engine.openvino_backend import OpenVinoBackend

        # Compiled in that precision (explicitly f32 or bf16); autocast_dtype stays for the report.
        return OpenVinoBackend(members, device, "bf16" if autocast_dtype is not None else "fp32"), autocast_dtype
    raise ValueError(f"unknown backend {name!r}")
