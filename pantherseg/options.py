"""The run options shared by ``pantherseg predict``, its cohort route and ``inference.py``: each flag
is declared once here, and mapped once.

Only argparse at import: ``--help`` must not import torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``pantherseg predict`` and ``inference.py``."""
    from pantherseg.config import BACKENDS

    parser.add_argument("--config", type=Path, default=None,
                        help="ensemble_config.json (default: the one shipped next to the package)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available, else CPU), cpu, or cuda[:N] (default: auto)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="seconds per case before members are skipped (default: the config's "
                             "time_budget_s, 300; 0 disables the deadline)")
    parser.add_argument("--tile-batch-size", type=int, default=1, metavar="N",
                        help="tiles per network pass (default: 1)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                        help="network arithmetic (default: the config's, auto = fp16 autocast on CUDA, "
                             "fp32 on the CPU; bf16 is about 3x faster on CPUs with AMX)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run the networks with PyTorch, ONNX Runtime or OpenVINO (CPU only) (default: the "
                             "config's, auto = OpenVINO on the CPU if installed, else torch; torch on CUDA)")
    parser.add_argument("--preview", action="store_true",
                        help="also write <case>.preview.png: three slices with the mask overlaid")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def budget_from_flag(value: float | None) -> float | None:
    if value is None:
        return None
    return float("inf") if value == 0 else value
