"""Running members through OpenVINO on the CPU.

Each member's torch network (built from its plans and checkpoint) is converted once with
``ov.convert_model`` (input: a batch of patches of the plans' patch size; the batch axis is dynamic)
and saved as OpenVINO IR next to its checkpoint, ``<checkpoint>.openvino.xml`` + ``.bin``, with the
weights kept in float32 (``ov.save_model`` would store them in float16 by default) and the
checkpoint's SHA-256 and the network's description in the model's runtime info, so a stale
conversion (checkpoint or plans changed) is never used. When the file is missing or stale and the
weights folder is read-only (grand-challenge's /opt/ml/model), the conversion goes to a cache folder
under the temporary directory. ``pantherseg export-openvino`` writes the files ahead of time so they
can ship in the model tarball and no case spends its budget converting.

The IR is compiled for the CPU with an explicit inference precision: f32, or bf16 only on CPUs with
native bfloat16 (AVX512-BF16 or AMX). OpenVINO picks bf16 by itself on such CPUs when no hint is
given (this project's build machine is one); here it never does so silently. The thread count is
the process's CPU quota (pantherseg.engine.cpu_quota), not the host's cores.

The :class:`OpenVinoBackend` builds an :class:`OpenVinoNetwork` per member: tensor in, tensor out.
Compiling happens on the first call; :meth:`OpenVinoNetwork.release` frees the compiled model (and its
activation buffers) once the member is done, so only one member's buffers are held at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from pantherseg.engine.checkpoint import checkpoint_sha256
from pantherseg.engine.members import Member, build_network
from pantherseg.errors import ModelError, ResourceError

log = logging.getLogger(__name__)

CHECKSUM_KEY = ["pantherseg", "checkpoint_sha256"]
NETWORK_KEY = ["pantherseg", "network_sha256"]
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # pantherseg name -> OpenVINO inference precision
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INSTALL_HINT = "install it with `pip install 'pantherseg[openvino]'` (openvino 2026.4.1) or use --backend torch"


def is_available() -> bool:
    """Whether the openvino package can be imported (it is an optional extra, not in the GPU image)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def ir_path(member: Member) -> Path:
    return member.checkpoint.path.with_suffix(".openvino.xml")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on CPUs with bfloat16 instructions (AVX512-BF16 or AMX-BF16)."""
    return bool(cpu_flags(cpuinfo) & set(BF16_FLAGS))


def check_precision(precision: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The OpenVINO precision for ``precision`` ('fp32', 'bf16'); refuses bf16 without native support."""
    if precision not in PRECISIONS:
        raise ResourceError(f"The OpenVINO backend runs fp32 or bf16, not '{precision}'; use --precision fp32.")
    if precision == "bf16" and not native_bf16(cpuinfo):
        raise ResourceError(
            "Precision bf16 with OpenVINO needs a CPU with native bfloat16 (AVX512-BF16 or AMX, cpuinfo flags "
            f"{' or '.join(BF16_FLAGS)}); this CPU has neither, and emulated bf16 is slower than fp32: use "
            "--precision fp32."
        )
    return PRECISIONS[precision]


def network_sha256(member: Member) -> str:
    """What the IR's graph depends on besides the weights: architecture, patch size, classes."""
    cm = member.configuration_manager
    description = {
        "class": cm.network_arch_class_name,
        "kwargs": cm.network_arch_init_kwargs,
        "patch": list(member.patch_size),
        "classes": member.label_manager.num_segmentation_heads,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def convert_member(member: Member, path: Path) -> Path:
    """Convert ``member``'s network (fp32, CPU) to OpenVINO IR at ``path`` (.xml; .bin beside it); atomic."""
    import openvino as ov

    network = build_network(member, torch.device("cpu"))
    example = torch.zeros((1, 1, *member.patch_size), dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.stem}.partial-", dir=path.parent))
    try:
        with torch.inference_mode(False), torch.no_grad():
            model = ov.convert_model(
                network, example_input=example, input=[ov.PartialShape([-1, 1, *member.patch_size])]
            )
        model.set_rt_info(checkpoint_sha256(member.checkpoint.path), CHECKSUM_KEY)
        model.set_rt_info(network_sha256(member), NETWORK_KEY)
        ov.save_model(model, str(staging / path.name), compress_to_fp16=False)
        # The .bin first: the .xml names the checksum, so an .xml in place always has its weights.
        os.replace(staging / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(staging / path.name, path)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ModelError(f"{member.describe()}: OpenVINO could not convert the network: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: converted to OpenVINO IR at %s", member.describe(), path)
    return path


def _is_current(path: Path, member: Member) -> bool:
    import openvino as ov

    if not path.is_file() or not path.with_suffix(".bin").is_file():
        return False
    try:
        model = ov.Core().read_model(str(path))
        stored = (model.get_rt_info(CHECKSUM_KEY).astype(str), model.get_rt_info(NETWORK_KEY).astype(str))
    except RuntimeError:  # unreadable, truncated, or without our keys: convert again
        return False
    return stored == (checkpoint_sha256(member.checkpoint.path), network_sha256(member))


def _cached_path(member: Member, cache_dir: Path | None) -> Path:
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "pantherseg-openvino"
    return cache_dir / checkpoint_sha256(member.checkpoint.path)[:16] / ir_path(member).name


def find_current(member: Member, cache_dir: Path | None = None) -> Path | None:
    """The member's current IR, beside the checkpoint or in the cache; None if there is none."""
    if not is_available():
        return None
    for path in (ir_path(member), _cached_path(member, cache_dir)):
        if _is_current(path, member):
            return path
    return None


def find_or_convert(member: Member, cache_dir: Path | None = None) -> Path:
    """The member's current IR: beside the checkpoint, else in the cache, else converted now."""
    current = find_current(member, cache_dir)
    if current is not None:
        return current
    beside = ir_path(member)
    target = beside if os.access(beside.parent, os.W_OK) else _cached_path(member, cache_dir)
    log.warning(
        "%s: no current OpenVINO IR; converting now to %s (run `pantherseg export-openvino` ahead of "
        "time to keep this out of a case's budget)",
        member.describe(),
        target,
    )
    return convert_member(member, target)


class OpenVinoNetwork:
    """A compiled OpenVINO model that behaves like the torch network: (B, 1, *patch) -> (B, classes, *patch)."""

    def __init__(self, path: Path, *, precision: str = "fp32", threads: int | None = None):
        self.path = Path(path)
        self.precision = check_precision(precision)
        self.threads = threads
        self._compiled = None

    def compile(self):
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        from pantherseg.engine.cpu_quota import available_cpus

        wanted = ov.Type.f32 if self.precision == "f32" else ov.Type.bf16
        config = {
            hints.inference_precision: wanted,  # explicit: never OpenVINO's own bf16 choice
            hints.execution_mode: hints.ExecutionMode.ACCURACY
            if self.precision == "f32"
            else hints.ExecutionMode.PERFORMANCE,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
            props.inference_num_threads: self.threads or available_cpus(),
        }
        compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        actual = compiled.get_property(hints.inference_precision)
        if actual != wanted:
            raise ModelError(f"OpenVINO compiled {self.path.name} in {actual}, not the requested {wanted}.")
        self._compiled = compiled
        return compiled

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        compiled = self._compiled or self.compile()
        array = np.ascontiguousarray(tiles.detach().float().cpu().numpy())
        logits = compiled(array)[compiled.output(0)]  # a copy, not the request's buffer
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(tiles.device)

    def release(self) -> None:
        """Free the compiled model; the next call compiles it again."""
        self._compiled = None

    def set_threads(self, threads: int) -> None:
        self.threads, self._compiled = threads, None  # the thread count is fixed when it compiles


class OpenVinoBackend:
    """OpenVINO models of the members' weights, converted at load time if missing or stale, compiled on
    first use."""

    name = "openvino"

    def __init__(
        self, members: list[Member], device: torch.device, precision: str = "fp32", cache_dir: Path | None = None
    ):
        if device.type != "cpu":
            raise ResourceError(
                f"The OpenVINO backend runs on the CPU only, not on {device}; use --backend torch "
                f"for the GPU or --device cpu."
            )
        check_precision(precision)
        if not is_available():
            raise ResourceError(f"The OpenVINO backend was requested but openvino is not installed: {INSTALL_HINT}.")
        self.precision = precision
        self.paths = {member.name: find_or_convert(member, cache_dir) for member in members}

    def build(self, member: Member) -> OpenVinoNetwork:
        return OpenVinoNetwork(self.paths[member.name], precision=self.precision)
