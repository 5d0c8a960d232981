"""Loading nnU-Net checkpoints without running pickled code.

nnU-Net itself calls ``torch.load(..., weights_only=False)``, so a checkpoint from a model tarball
could execute anything. Here checkpoints are read with ``weights_only=True``: only tensors,
containers, numbers, strings, ``torch.device`` and the few numpy scalar types that nnU-Net's
training log stores are accepted. Anything else (e.g. a ``__reduce__`` that calls ``os.system``) is
refused before it runs.

Decoding is bounded before it starts (:func:`check_archive`): a checkpoint is a zip archive, and
``torch.load`` allocates each member's declared size and inflates into it. So the central directory
is read first and the checkpoint refused when a member, or all of them, would unpack beyond
:data:`MAX_MEMBER_BYTES` / :data:`MAX_INFLATED_BYTES`, or a compressed member claims more than
:data:`MAX_RATIO` times its compressed size (``torch.save`` stores members uncompressed: a deflated
``data.pkl`` of 10 GiB in a 12.5 MB file is a bomb, refused in milliseconds). Compressed members
within the bounds are inflated once, counting, and refused if they hold more than they declare.

Tensor types (:func:`check_state_dict_fits`): each tensor must have the shape of the network's and
a type that holds the same numbers: float32 as stored; float16 and bfloat16 are widened to float32
explicitly (exact; noted in the log); float64, integers, booleans and complex numbers in place of a
float parameter are refused, as are integer buffers of another type. Non-finite weights are refused
when the network is built (:func:`check_finite`).
"""

from __future__ import annotations

import logging
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import ModelError, one_line
from pantherseg.io.files import CHUNK_BYTES, cached_file_sha256

log = logging.getLogger(__name__)

# A ResEnc-L checkpoint is about 0.8 GB (weights plus optimizer state); one tensor of it about 40 MB.
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 16 << 30
# What compressed members (torch.save writes none) may inflate to in all, and by how much each.
MAX_INFLATED_BYTES = 1 << 30
MAX_RATIO = 100
MAX_ARCHIVE_MEMBERS = 100_000
# The pickle is unpickled into memory whole: nnU-Net's is tens of KB (the training log included).
MAX_PICKLE_BYTES = 256 << 20
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")


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

    check_archive(path, owner=owner)
    try:
        with torch.serialization.safe_globals(_numpy_types_in_nnunet_logs()):
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"the object '{blocked.group(1)}'" if blocked else "objects other than tensors and numbers"
        raise ModelError(
            f"{owner}: checkpoint {path} was refused: it contains {what}, which could run code when "
            f"loaded. Expected plain weights (torch.save of tensors and numbers); re-save the state dict."
        ) from error
    except FileNotFoundError:
        raise ModelError(f"{owner}: checkpoint not found: expected a file at {path}.") from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise ModelError(
            f"{owner}: {path} is not a readable PyTorch checkpoint (truncated or another file type?): "
            f"{one_line(str(error), default=type(error).__name__)}."
        ) from error

    if not isinstance(raw, dict):
        raise ModelError(f"{owner}: checkpoint {path} holds a {type(raw).__name__}, expected a dict.")
    # nnU-Net checkpoints keep the weights under 'network_weights'; a bare state dict is accepted too.
    state_dict = raw.get("network_weights", raw)
    if (
        not isinstance(state_dict, dict)
        or not state_dict
        or not all(isinstance(v, torch.Tensor) for v in state_dict.values())
    ):
        raise ModelError(
            f"{owner}: checkpoint {path} has no network weights: expected a 'network_weights' dict of tensors."
        )
    init_args = raw.get("init_args") if isinstance(raw.get("init_args"), dict) else {}
    mirroring = raw.get("inference_allowed_mirroring_axes")
    if mirroring is not None and not (
        isinstance(mirroring, (tuple, list))
        and len(set(mirroring)) == len(mirroring)
        and all(a in (0, 1, 2) and not isinstance(a, bool) for a in mirroring)
    ):
        raise ModelError(
            f"{owner}: checkpoint {path}: 'inference_allowed_mirroring_axes' must be distinct spatial "
            f"axes among 0, 1, 2, found {one_line(repr(mirroring))[:120]}."
        )
    return Checkpoint(
        path=path,
        state_dict=state_dict,
        trainer_name=raw.get("trainer_name") if isinstance(raw.get("trainer_name"), str) else None,
        configuration=init_args.get("configuration") if isinstance(init_args.get("configuration"), str) else None,
        mirroring_axes=tuple(mirroring) if mirroring is not None else None,
    )


def check_archive(path: Path, *, owner: str) -> None:
    """Refuse a checkpoint whose zip members would unpack beyond the bounds, from its central directory."""
    refuse = _refuser(path, owner)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_ARCHIVE_MEMBERS:
                raise refuse(f"it has {len(members)} archive members (at most {MAX_ARCHIVE_MEMBERS})")
            total = inflated = 0
            for info in members:
                total += info.file_size
                if info.file_size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                    raise refuse(
                        f"member {info.filename} declares {info.file_size} bytes ({total} so far; at most "
                        f"{MAX_MEMBER_BYTES} each, {MAX_TOTAL_BYTES} in all)"
                    )
                if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
                    raise refuse(
                        f"its pickle {info.filename} declares {info.file_size} bytes (at most {MAX_PICKLE_BYTES})"
                    )
                if info.compress_type == zipfile.ZIP_STORED:
                    if info.file_size != info.compress_size:
                        raise refuse(
                            f"stored member {info.filename} declares {info.file_size} bytes but "
                            f"occupies {info.compress_size}"
                        )
                    continue
                if info.compress_type != zipfile.ZIP_DEFLATED:
                    raise refuse(
                        f"member {info.filename} uses compression method {info.compress_type} "
                        f"(torch.save stores members; only deflate is read besides)"
                    )
                inflated += info.file_size
                if inflated > MAX_INFLATED_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1):
                    raise refuse(
                        f"compressed member {info.filename} inflates {info.compress_size} bytes to "
                        f"{info.file_size} (at most {MAX_RATIO} times, {MAX_INFLATED_BYTES} bytes in all): "
                        f"a decompression bomb"
                    )
            with open(path, "rb") as handle:
                for info in members:
                    if info.compress_type == zipfile.ZIP_DEFLATED:
                        _inflate_counting(handle, info, refuse)
    except zipfile.BadZipFile:
        return  # not a zip (a legacy torch.save, text): torch.load says what it is
    except (OSError, EOFError, struct.error, zlib.error) as error:
        raise refuse(f"its archive cannot be read ({one_line(str(error), default=type(error).__name__)})") from error


def _inflate_counting(handle, info: zipfile.ZipInfo, refuse) -> None:
    """Inflate one deflated member in blocks, never producing more than one byte beyond its declared size."""
    handle.seek(info.header_offset)
    header = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    if header[0] != 0x04034B50:
        raise refuse(f"member {info.filename} has no local header where the directory says")
    handle.seek(header[9] + header[10], 1)
    decompressor = zlib.decompressobj(-15)
    left, produced = info.compress_size, 0
    while left > 0 and not decompressor.eof:
        block = handle.read(min(CHUNK_BYTES, left))
        if not block:
            raise refuse(f"member {info.filename} is truncated")
        left -= len(block)
        while block:
            budget = info.file_size - produced + 1
            produced += len(decompressor.decompress(block, budget))
            if produced > info.file_size:
                raise refuse(f"member {info.filename} inflates to more than the {info.file_size} bytes it declares")
            block = decompressor.unconsumed_tail
    if produced != info.file_size:
        raise refuse(f"member {info.filename} inflates to {produced} bytes, not the {info.file_size} it declares")


def _refuser(path: Path, owner: str):
    def refuse(reason: str) -> ModelError:
        return ModelError(f"{owner}: checkpoint {path} was refused before decoding: {reason}.")

    return refuse


FLOAT_TYPES_WIDENED = ("float16", "bfloat16")


def check_state_dict_fits(expected: dict, checkpoint: Checkpoint, *, owner: str, network: str) -> None:
    """Every tensor of ``expected`` (the network's state dict on the meta device) is in the checkpoint with
    its shape and a type that holds its numbers; float16/bfloat16 ones are widened to float32 in place."""

    found = checkpoint.state_dict
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k} {list(found[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    wrong_type, widened = [], []
    for key, want in expected.items():
        if key not in found or found[key].dtype == want.dtype:
            continue
        have = found[key].dtype
        if want.is_floating_point() and str(have).removeprefix("torch.") in FLOAT_TYPES_WIDENED:
            widened.append(key)
        else:
            wrong_type.append(
                f"{key} is {str(have).removeprefix('torch.')}, expected {str(want.dtype).removeprefix('torch.')}"
            )
    if missing or unexpected or mismatched or wrong_type:
        details = []
        if mismatched:
            details.append(
                f"{len(mismatched)} tensor(s) of the wrong shape (checkpoint vs plans), e.g. {mismatched[0]}"
            )
        if wrong_type:
            details.append(
                f"{len(wrong_type)} tensor(s) of the wrong type, e.g. {wrong_type[0]} (float32 weights; "
                f"float16 and bfloat16 are widened)"
            )
        if missing:
            details.append(f"{len(missing)} missing, e.g. '{missing[0]}'")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected, e.g. '{unexpected[0]}'")
        raise ModelError(
            f"{owner}: checkpoint {checkpoint.path} does not fit the network in its plans.json "
            f"({network}): " + "; ".join(details) + "."
        )
    for key in widened:
        found[key] = found[key].to(expected[key].dtype)
    if widened:
        log.info("%s: %d half-precision tensor(s) of %s widened to float32", owner, len(widened), checkpoint.path)


def check_finite(state_dict: dict, *, owner: str, path: Path) -> None:
    """Refuse weights holding NaN or infinity: they make every probability NaN and the mask silently empty."""
    import torch

    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(
                f"{owner}: checkpoint {path} holds non-finite weights (NaN or infinity) in '{key}'; "
                f"refused: the network would predict NaN everywhere."
            )


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint file, read once per process (:func:`cached_file_sha256`).

    The ONNX and OpenVINO backends store it in their converted graphs and compare it on loading, so a
    graph converted from other weights is never run."""
    return cached_file_sha256(path)
