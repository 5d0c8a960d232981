"""Measure the built image: sizes, how the stand-in base differs, and the cold start split by stage.

    python test/container/measure.py [--image pantherseg] [--standin TAG] [--cpus N] [--json FILE]

Sizes: the image unpacked (the engine's own figure) and as the grand-challenge upload
(``save | gzip -c``, counted as it streams, nothing written). Cold start: one Task 1 phantom case
run as grand-challenge runs it, from ``run`` to exit, split into container start (a container that
runs ``true``), loading the members and the case itself (both from the run report, lazy imports of
torch and nnU-Net included), and the rest: interpreter start, the entry point's own imports, reading
inputs.json, teardown. Separately, all Python imports of the run wherever they happen
(``-X importtime``, top-level imports summed), which overlap the stages above.
Prints a table; --json also writes the figures. DOCKER picks the engine (default podman).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("DOCKER", "podman")
SAMPLE = ROOT / "test" / "samples" / "t1-phantom" / "input"


def engine(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, check=True, **kwargs)


def image_size(tag: str) -> int:
    return int(engine("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def upload_size(tag: str) -> tuple[int, float]:
    """Bytes of ``save TAG | gzip -c`` (level 6, as gzip's default), and the seconds it took."""
    started = time.perf_counter()
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip container
    total = 0
    with subprocess.Popen([ENGINE, "save", tag], stdout=subprocess.PIPE) as save:
        while chunk := save.stdout.read(1 << 20):
            total += len(compressor.compress(chunk))
    if save.returncode != 0:
        raise SystemExit(f"measure.py: error: {ENGINE} save {tag} failed with exit {save.returncode}")
    total += len(compressor.flush())
    return total, time.perf_counter() - started


def in_image(tag: str, script: str) -> str:
    return engine("run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c", script).stdout.strip()


CONTENT_PROBE = """
import glob, importlib.metadata as m, sys, torch
cuda_libs = glob.glob('/usr/**/libcudart.so*', recursive=True) + glob.glob('/opt/**/libcudart.so*', recursive=True)
print(sys.version.split()[0], torch.__version__, torch.version.cuda, len(list(m.distributions())), len(cuda_libs))
"""


def content(tag: str) -> dict:
    python, torch, cuda, distributions, cuda_libs = in_image(tag, CONTENT_PROBE).split()
    return {
        "python": python,
        "torch": torch,
        "torch_cuda": cuda,
        "python_distributions": int(distributions),
        "libcudart_files": int(cuda_libs),
    }


def sandbox(cpus: str, output: Path, model: Path) -> list[str]:
    return [
        "run",
        "--rm",
        "--platform=linux/amd64",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--memory",
        "16g",
        "--memory-swap",
        "16g",
        "--cpus",
        cpus,
        "--shm-size",
        "8g",
        "--volume",
        f"{SAMPLE}:/input:ro",
        "--volume",
        f"{output}:/output",
        "--volume",
        f"{model}:/opt/ml/model:ro",
    ]


def container_start_s(tag: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        engine("run", "--rm", "--network", "none", "--read-only", "--entrypoint", "true", tag)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")


def top_level_import_s(stderr: str) -> float:
    """Sum of the cumulative times of imports made at top level (no indentation in -X importtime)."""
    total_us = 0
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match and not match.group(2).startswith(" "):
            total_us += int(match.group(1))
    return total_us / 1e6


def cold_start(tag: str, cpus: str) -> dict:
    start_s = container_start_s(tag)
    with tempfile.TemporaryDirectory() as work:
        output, model = Path(work) / "output", ROOT / "weights"
        output.mkdir()
        output.chmod(0o777)
        started = time.perf_counter()
        run = subprocess.run(
            [
                ENGINE,
                *sandbox(cpus, output, model),
                "--entrypoint",
                "python",
                tag,
                "-X",
                "importtime",
                "inference.py",
                "--report",
                "/output/report.json",
            ],
            capture_output=True,
            text=True,
        )
        total_s = time.perf_counter() - started
        if run.returncode != 0:
            raise SystemExit(f"measure.py: error: the timed run failed: {run.stderr.strip().splitlines()[-1]}")
        timings = json.loads((output / "report.json").read_text())["timings_s"]
    load_s = timings.pop("load")
    case_s = sum(timings.values())
    return {
        "total_s": total_s,
        "container_start_s": start_s,
        "load_members_s": load_s,
        "case_s": case_s,
        "case_stages_s": timings,
        "start_imports_and_rest_s": total_s - start_s - load_s - case_s,
        "all_python_imports_s": top_level_import_s(run.stderr),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="pantherseg")
    parser.add_argument("--standin", default="localhost/pantherseg-base-standin:torch2.13.0-cpu")
    parser.add_argument("--cpus", default=str(min(4, os.cpu_count() or 1)))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    unpacked, base = image_size(args.image), image_size(args.standin)
    upload, save_s = upload_size(args.image)
    figures = {
        "engine": ENGINE,
        "image": args.image,
        "base": args.standin,
        "cpus": args.cpus,
        "image_unpacked_bytes": unpacked,
        "base_unpacked_bytes": base,
        "added_by_dockerfile_bytes": unpacked - base,
        "upload_gzip_bytes": upload,
        "save_gzip_s": save_s,
        "image_content": content(args.image),
        "cold_start": cold_start(args.image, args.cpus),
    }
    gb = 1e9
    print(
        f"image {args.image}: {unpacked / gb:.2f} GB unpacked ({base / gb:.2f} GB stand-in base + "
        f"{(unpacked - base) / gb:.2f} GB from the Dockerfile); upload (save | gzip) {upload / gb:.2f} GB "
        f"in {save_s:.0f} s"
    )
    print(f"content: {figures['image_content']}")
    cold = figures["cold_start"]
    print(
        f"cold start, Task 1 phantom, --cpus {args.cpus}: {cold['total_s']:.1f} s = container start "
        f"{cold['container_start_s']:.1f} + loading members {cold['load_members_s']:.1f} + the case "
        f"{cold['case_s']:.1f} + Python start, entry-point imports and teardown "
        f"{cold['start_imports_and_rest_s']:.1f}; all imports of the run (overlapping) "
        f"{cold['all_python_imports_s']:.1f}"
    )
    print("  the case: " + ", ".join(f"{k} {v:.1f}" for k, v in cold["case_stages_s"].items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
