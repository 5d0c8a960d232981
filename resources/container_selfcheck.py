"""Build-time check of the container's Python stack (run by the Dockerfile, then deleted).

Fails the build, with one line naming what was expected and what was found, when pip replaced the
base image's torch, when torch is not the build ``--torch-cuda`` names, when torchvision does not
match torch, or when onnxruntime-gpu lacks its CUDA provider. No GPU is needed.

``--torch-cuda 12`` (the default; the real pytorch/pytorch CUDA 12.6 base) requires a CUDA 12 build
of torch 2.13.0 and an importable torchvision. ``--torch-cuda none`` is only for the CPU stand-in
base used where Docker Hub cannot be reached: it requires the CPU build instead, checks
torchvision's installed version without importing it (PyPI's torchvision is a CUDA build that does
not import beside a CPU torch; the engine never imports it), and prints that it did so.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

TORCH_VERSION = "2.13.0"
TORCHVISION_VERSION = "0.28.0"


def check(torch_cuda: str) -> list[str]:
    import nnunetv2  # noqa: F401  (import errors are build failures too)
    import onnxruntime
    import SimpleITK  # noqa: F401
    import surface_distance  # noqa: F401
    import torch

    problems = []
    if torch.__version__.split("+")[0] != TORCH_VERSION:
        problems.append(f"torch {TORCH_VERSION} expected, found {torch.__version__} (pip replaced the base's torch)")
    found_cuda = torch.version.cuda
    if torch_cuda == "none":
        print(
            "self-check: stand-in base (TORCH_CUDA=none): requiring the CPU build of torch; "
            "torchvision checked by version only, not imported"
        )
        if found_cuda is not None:
            problems.append(f"a CPU build of torch expected (TORCH_CUDA=none), found CUDA {found_cuda}")
        vision = metadata.version("torchvision")
    else:
        if not (found_cuda or "").startswith(f"{torch_cuda}."):
            problems.append(f"a CUDA {torch_cuda} build of torch expected, found CUDA {found_cuda}")
        try:
            import torchvision
        except (ImportError, RuntimeError) as error:  # a torchvision built for another torch raises here
            problems.append(f"torchvision that imports beside torch {torch.__version__} expected, found: {error}")
            vision = metadata.version("torchvision")
        else:
            vision = torchvision.__version__
    if vision.split("+")[0] != TORCHVISION_VERSION:
        problems.append(f"torchvision {TORCHVISION_VERSION} expected, found {vision}")
    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        problems.append(f"onnxruntime-gpu with CUDAExecutionProvider expected, found providers {providers}")
    print(
        f"self-check: torch {torch.__version__} (CUDA {found_cuda}), torchvision {vision}, "
        f"onnxruntime {onnxruntime.__version__} {providers}, Python {sys.version.split()[0]}"
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-cuda", default="12", help="CUDA major version torch must be built for, or 'none'")
    args = parser.parse_args(argv)
    if args.torch_cuda != "none" and not args.torch_cuda.isdigit():
        parser.error(f"--torch-cuda must be a CUDA major version such as 12, or none; got {args.torch_cuda!r}")
    problems = check(args.torch_cuda)
    for problem in problems:
        print(f"self-check failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
