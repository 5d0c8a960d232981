"""A lean, per-task model tarball: only the task's members, checkpoints without their training state.

An nnU-Net checkpoint carries what training needs to resume: the optimizer state (SGD momentum, as large
as the weights again), the grad scaler and the training log. Inference reads none of it, yet
grand-challenge extracts the whole model tarball before every job, inside the job's time. The lean
tarball holds, for one task of a config:

- each member's model folder with ``plans.json`` and ``dataset.json``;
- each member's checkpoint with only ``network_weights``, ``init_args``, ``trainer_name``,
  ``inference_allowed_mirroring_axes`` and ``current_epoch`` (a hash of the network weights is
  computed before and after and must be equal);
- ``ensemble_config.json``: the config with that task alone, which the entry point prefers to the
  image's (pantherseg.container.entry_point), so the upload switches models without a new image.

OpenVINO or ONNX conversions are left out: they record the full checkpoint's SHA-256, so after
stripping they would be stale (run ``pantherseg export-openvino`` on the lean folder to add them).
Command line (``export.sh --task t1 --config FILE`` runs it)::

    python -m pantherseg.container.lean_model --task t1 --config configs/panther-release.json \\
        --weights WEIGHTS_ROOT --output export/model-t1.tar.gz
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import ModelError, PantherError

log = logging.getLogger(__name__)

KEPT_KEYS = ("network_weights", "init_args", "trainer_name", "inference_allowed_mirroring_axes", "current_epoch")
MODEL_CONFIG_NAME = "ensemble_config.json"


@dataclass
class LeanReport:
    tarball: Path
    members: list[str]
    full_bytes: int  # the members' files as they were (plans, dataset.json, full checkpoints)
    lean_bytes: int  # the same files in the lean folder, unpacked
    tarball_bytes: int
    weight_hashes: dict[str, str]  # checkpoint path in the tarball -> network weights' hash (unchanged)


def weights_hash(state_dict: dict) -> str:
    """SHA-256 over the network weights' names, dtypes, shapes and bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load(path: Path) -> dict:
    import torch

    from pantherseg.engine.checkpoint import _numpy_types_in_nnunet_logs

    try:
        with torch.serialization.safe_globals(_numpy_types_in_nnunet_logs()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        OSError,
        EOFError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
    ) as error:
        raise ModelError(f"{path} cannot be read as a plain nnU-Net checkpoint: {str(error)[:200]}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("network_weights"), dict):
        raise ModelError(f"{path} has no 'network_weights' dict: not an nnU-Net checkpoint")
    return raw


def strip_checkpoint(source: Path, destination: Path) -> str:
    """Write ``destination`` with only KEPT_KEYS of ``source``; returns the (checked) weights hash."""
    import torch

    raw = _load(source)
    before = weights_hash(raw["network_weights"])
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: raw[key] for key in KEPT_KEYS if key in raw}, destination)
    del raw
    after = weights_hash(_load(destination)["network_weights"])
    if after != before:
        raise ModelError(f"{destination}: the stripped checkpoint's weights differ from {source}'s; not packed")
    return after


def build_lean_folder(config_path: Path, task: str, weights: Path, folder: Path) -> tuple[list[str], int, dict]:
    """The lean folder for ``task``: (member names, full bytes, {checkpoint name: weights hash})."""
    from pantherseg.config import load_config, parse_config

    config = load_config(config_path)
    spec = config.task(task)
    full = 0
    hashes = {}
    for member in spec.members:
        source = weights / member.model
        for name in ("plans.json", "dataset.json"):
            if not (folder / member.model / name).exists():
                if not (source / name).is_file():
                    raise ModelError(f"{member.describe()}: missing {source / name}")
                (folder / member.model).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, folder / member.model / name)
                full += (source / name).stat().st_size
        relative = f"{member.model}/fold_{member.fold}/{member.checkpoint}"
        if not (weights / relative).is_file():
            raise ModelError(f"{member.describe()}: checkpoint not found: expected {weights / relative}")
        if relative not in hashes:
            hashes[relative] = strip_checkpoint(weights / relative, folder / relative)
            full += (weights / relative).stat().st_size
            log.info(
                "%s: %.1f MiB -> %.1f MiB",
                relative,
                (weights / relative).stat().st_size / 1024**2,
                (folder / relative).stat().st_size / 1024**2,
            )
    alone = config.to_dict()
    alone["tasks"] = {task: alone["tasks"][task]}
    parse_config(alone)  # still a valid config
    (folder / MODEL_CONFIG_NAME).write_text(json.dumps(alone, indent=2) + "\n")
    return [m.name for m in spec.members], full, hashes


def build_lean_tarball(config_path: Path, task: str, weights: Path, output: Path) -> LeanReport:
    """The lean tarball for ``task`` at ``output``, built and verified (extracted with filter="data")."""
    from pantherseg.container.model_tarball import build_model_tarball, verify_model_tarball

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lean-model-", dir=output.parent) as scratch:
        folder = Path(scratch) / "model"
        members, full, hashes = build_lean_folder(Path(config_path), task, Path(weights), folder)
        built = build_model_tarball(folder, output)
        verify_model_tarball(built.path, expected=built)
    return LeanReport(
        tarball=output,
        members=members,
        full_bytes=full,
        lean_bytes=built.total_bytes,
        tarball_bytes=output.stat().st_size,
        weight_hashes=hashes,
    )


def extraction_seconds(tarball: Path) -> float:
    """Seconds to extract ``tarball`` as grand-challenge does (``extractall(filter="data")``), beside it."""
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=Path(tarball).parent) as scratch:
        started = time.perf_counter()
        with tarfile.open(tarball, "r:gz") as archive:
            archive.extractall(scratch, filter="data")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from pantherseg.container.model_tarball import human_size
    from pantherseg.options import Parser

    parser = Parser(
        prog="python -m pantherseg.container.lean_model",
        description="Pack one task's members, without training state, as a model tarball.",
    )
    parser.add_argument("--task", required=True, help="the config's task, e.g. t1 or t2")
    parser.add_argument("--config", type=Path, required=True, help="the ensemble_config.json naming the members")
    parser.add_argument("--weights", type=Path, required=True, help="the weights root the members are under")
    parser.add_argument("--output", type=Path, required=True, help="the .tar.gz to write")
    parser.add_argument("--time-extraction", action="store_true", help="also time extraction with filter='data'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = build_lean_tarball(args.config, args.task, args.weights, args.output)
        print(
            f"{report.tarball}: task {args.task}, {len(report.members)} members; "
            f"{human_size(report.full_bytes)} of full checkpoints -> {human_size(report.lean_bytes)} unpacked, "
            f"{human_size(report.tarball_bytes)} packed; network weights unchanged (hash checked)"
        )
        if args.time_extraction:
            print(f"extraction with filter='data': {extraction_seconds(report.tarball):.1f} s")
    except PantherError as error:
        print(f"pantherseg error: {error}", file=sys.stderr)
        return error.exit_code
    except ImportError as error:  # export.sh may run a Python without the project's dependencies
        print(
            f"pantherseg error: the lean tarball reads checkpoints with torch, which this Python lacks "
            f"({error}); run it with the project's environment (export.sh: set PYTHON)",
            file=sys.stderr,
        )
        return 1
    except OSError as error:
        print(f"pantherseg error: {error.strerror or error} ({error.filename})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
