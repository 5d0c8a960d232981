"""How a run segments: :class:`RunOptions`, and the command-line flags that fill it.

``pantherseg predict``, its cohort route and ``inference.py`` share the run flags: each is declared
once (:func:`add_run_options`) and mapped once (:meth:`RunOptions.from_args`); each entry point adds
only what is its own (the task, where reports go). :func:`pantherseg.api.segment` takes a RunOptions,
or the same fields as keywords.

Only the standard library at import: ``--help`` must not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from pantherseg.config import EnsembleConfig
    from pantherseg.engine.runtime import EngineOptions


@dataclass(frozen=True)
class RunOptions:
    """Everything :func:`pantherseg.api.segment` needs besides the inputs and the output folder.

    Attributes:
        task: a task name of the config ("t1", "t2").
        config: an ``ensemble_config.json`` path or a parsed config (default: the shipped one).
        weights: the weights root the config's member folders are relative to (default: ``weights/``).
        device: "auto" (CUDA if available), "cpu" or "cuda[:N]".
        time_budget_s: seconds per case (the first case counts from the call, model loading included);
            default from the config; ``float('inf')`` disables the deadline.
        tile_batch_size: tiles per network pass.
        precision: "auto", "fp32", "bf16" or "fp16" (default: the config's, normally auto = fp16 on
            CUDA, fp32 on the CPU).
        backend: "auto", "torch", "onnxruntime" or "openvino" (default: the config's; see docs/speed.md).
        output_formats: one or more of "mha", "nii.gz", "dicom-seg", "rtstruct", "sr", "uncertainty"
            (pantherseg.io.outputs); the DICOM ones need DICOM folder inputs and the ``pantherseg[dicom]`` extra,
            and "sr" needs "dicom-seg" too (docs/dicom.md).
        series_uid: the SeriesInstanceUID to segment in a DICOM folder holding several series.
        roi_name: the RTSTRUCT's ROI name (default "Pancreatic tumour").
        report_dir: where ``<stem>.report.json`` run reports go; None writes none.
        report_name: the report's file name in ``report_dir`` (default ``<stem>.report.json``; one input only).
        member_outputs_dir: if set, each member's probabilities (float32, one vector component per
            class) are written to ``<dir>/<member name>/<stem>.mha`` (the input ``pantherseg select``
            needs) and the member's own mask (its argmax) to ``<dir>/<member name>/masks/<stem>.mha``.
        preview_dir: if set, also write ``<dir>/<stem>.preview.png`` (three orthogonal slices through the
            tumour, or the image centre, with the mask overlaid).
        stop_on_error: raise at the first bad case; False logs it, goes on, and returns it with ``error`` set.
        budget_from_process_start: the first case's budget counts from process start instead of the call,
            as grand-challenge counts from container start (the entry points set it; a long-lived process
            such as a notebook or a server must not, or its later calls would start out of time).
        cpu_threads: CPU threads for the networks (default: the process's CPU quota); a cohort worker
            sharing a node sets its share.
    """

    task: str = "t1"
    config: "Path | str | EnsembleConfig | None" = None
    weights: Path | str | None = None
    device: str = "auto"
    time_budget_s: float | None = None
    tile_batch_size: int = 1
    precision: str | None = None
    backend: str | None = None
    output_formats: Sequence[str] = ("mha",)
    series_uid: str | None = None
    roi_name: str | None = None
    report_dir: Path | str | None = None
    report_name: str | None = None
    member_outputs_dir: Path | str | None = None
    preview_dir: Path | str | None = None
    stop_on_error: bool = True
    budget_from_process_start: bool = False
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        """The numbers a caller of the API may pass wrong, refused as the flags are (ConfigError, exit 4)."""
        from pantherseg.errors import ConfigError

        batch = self.tile_batch_size
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_TILE_BATCH:
            raise ConfigError(f"tile_batch_size must be an integer in [1, {MAX_TILE_BATCH}], found {batch!r}.")
        budget = self.time_budget_s
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or math.isnan(budget) or budget <= 0
        ):
            raise ConfigError(
                f"time_budget_s must be a positive number of seconds (inf: no deadline) or None, found {budget!r}."
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **fields) -> "RunOptions":
        """The flags of :func:`add_run_options` (``--time-budget 0`` is no deadline) as options; an entry
        point's own settings come as ``fields``. Both entry points count the budget from process start."""
        mapped = {
            "config": args.config,
            "device": args.device,
            "time_budget_s": budget_from_flag(args.time_budget),
            "tile_batch_size": args.tile_batch_size,
            "precision": args.precision,
            "backend": args.backend,
            "budget_from_process_start": True,
        }
        return cls(**{**mapped, **fields})

    def engine_options(self) -> "EngineOptions":
        """How the ensemble runs: device, precision, backend, tile batch size, CPU threads."""
        from pantherseg.engine.runtime import EngineOptions

        return EngineOptions(
            device=self.device,
            precision=self.precision,
            backend=self.backend,
            tile_batch_size=self.tile_batch_size,
            cpu_threads=self.cpu_threads,
        )

    def but(self, **fields) -> "RunOptions":
        """A copy with ``fields`` changed; an unknown name is a TypeError naming it."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown run option(s) {unknown}; see pantherseg.options.RunOptions")
        return dataclasses.replace(self, **fields)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``pantherseg predict`` and ``inference.py``."""
    from pantherseg.config import BACKENDS

    parser.add_argument(
        "--config", type=Path, default=None, help="ensemble_config.json (default: the one shipped next to the package)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available, else CPU), cpu, or cuda[:N] (default: auto)"
    )
    parser.add_argument(
        "--time-budget",
        type=number(minimum=0),
        default=None,
        metavar="SECONDS",
        help="seconds per case before members are skipped (default: the config's "
        "time_budget_s, 300; 0 disables the deadline)",
    )
    parser.add_argument(
        "--tile-batch-size",
        type=integer(1, MAX_TILE_BATCH),
        default=1,
        metavar="N",
        help="tiles per network pass (default: 1)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=None,
        help="network arithmetic (default: the config's, auto = fp16 autocast on CUDA, "
        "fp32 on the CPU; bf16 is about 3x faster on CPUs with AMX)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="run the networks with PyTorch, ONNX Runtime or OpenVINO (CPU only) (default: the "
        "config's, auto = OpenVINO on the CPU if installed, else torch; torch on CUDA)",
    )
    parser.add_argument(
        "--preview", action="store_true", help="also write <case>.preview.png: three slices with the mask overlaid"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")


# Tiles per network pass: nnU-Net runs one; 64 of ResEnc-L's 192^3 already needs hundreds of GB.
MAX_TILE_BATCH = 64


class Parser(argparse.ArgumentParser):
    """argparse with this product's error line: a usage mistake ends, like every other refusal, with one
    ``pantherseg error: ...`` line on stderr (the line grand-challenge shows) and exit 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"pantherseg error: {message}\n")


def integer(minimum: int, maximum: int | None = None):
    """An argparse ``type=``: an integer in [minimum, maximum]; anything else is a usage error (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bound = f"in [{minimum}, {maximum}]" if maximum is not None else f"of at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, found {text!r}")
        return value

    return parse


def number(*, minimum: float = 0.0, above: bool = False, maximum: float = 1e9):
    """An argparse ``type=``: a finite number >= ``minimum`` (> with ``above``) and <= ``maximum``; no NaN, no inf."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value > maximum or (value <= minimum if above else value < minimum):
            low = f"more than {minimum:g}" if above else f"at least {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {low} and at most {maximum:g}, found {text!r}")
        return value

    return parse


def budget_from_flag(value: float | None) -> float | None:
    if value is None:
        return None
    return float("inf") if value == 0 else value
