"""The winners' release at full size, on a replica (resources/release_replica.py, random ResEnc-L weights).

Steps (each printed with its figure; ``--steps`` picks some):

- ``build``: the full-size Task 1 replica (six 0.8 GB checkpoints) and its release zip: sizes;
- ``load``: peak memory (max RSS of a child process) while loading and building the six members;
- ``lean``: the lean Task 1 model tarball: sizes before and after, extraction time with filter="data";
- ``export``: what the shared export saves: one member's export (resample, softmax, uncrop) of a median
  Task 1 case against the fold sum that replaces it, times the five exports a six-fold folder no longer does;
- ``member``: CPU time of one full-size member on a median Task 1 case (72 x 258 x 318 at 3.0 x 1.19 x 1.19
  mm, 18 tiles of 192^3 at 1 mm): long (about 10 min on 2 cores).

    python benchmarks/bench_release.py --work /tmp/release --steps build load lean export
    nice python benchmarks/bench_release.py --work /tmp/release --steps member
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "resources"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PRESET = ROOT / "configs" / "panther-release.json"
MEDIAN_T1_ZYX = (72, 258, 318)
MEDIAN_T1_SPACING_ZYX = (3.0, 1.19, 1.19)


def _mib(n: float) -> str:
    return f"{n / 1024**2:.0f} MiB"


def build(work: Path) -> None:
    from release_replica import build_replica

    started = time.perf_counter()
    [archive] = build_replica(work, tasks=("t1",), size="full").values()
    files = sorted((work / "results").rglob("checkpoint_best.pth"))
    print(
        f"build: {len(files)} checkpoints of {_mib(files[0].stat().st_size)} each "
        f"({_mib(sum(f.stat().st_size for f in files))}); zip {archive.name} {_mib(archive.stat().st_size)}; "
        f"{time.perf_counter() - started:.0f} s"
    )


def load(work: Path) -> None:
    code = (
        "import resource, torch; from pantherseg.config import load_config; "
        "from pantherseg.engine.members import load_members, build_network; "
        f"ms = load_members(load_config('{PRESET}').task('t1'), '{work / 'results'}'); "
        "[build_network(m, torch.device('cpu')) for m in ms]; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    started = time.perf_counter()
    peak_kib = int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT)}
        ).stdout.split()[-1]
    )
    print(
        f"load: six full-size members loaded and built on the CPU: peak RSS {_mib(peak_kib * 1024)}, "
        f"{time.perf_counter() - started:.0f} s"
    )


def lean(work: Path) -> None:
    from pantherseg.container.lean_model import build_lean_tarball, extraction_seconds

    started = time.perf_counter()
    report = build_lean_tarball(PRESET, "t1", work / "results", work / "model-t1.tar.gz")
    built = time.perf_counter() - started
    print(
        f"lean: {_mib(report.full_bytes)} of full checkpoints -> {_mib(report.lean_bytes)} unpacked, "
        f"{_mib(report.tarball_bytes)} packed (built in {built:.0f} s); extraction with filter='data' "
        f"{extraction_seconds(report.tarball):.1f} s"
    )


def export(work: Path) -> None:
    import numpy as np
    import torch
    from release_replica import build_replica
    from winners import abdomen_like_image

    from pantherseg.config import load_config
    from pantherseg.engine.members import load_members
    from pantherseg.engine.preprocessing import preprocess
    from pantherseg.engine.to_image_space import logits_to_probabilities
    from pantherseg.engine.weighted_mean import FoldLogits, WeightedMean
    from pantherseg.io.images import volume_from_image

    tiny = work / "tiny"
    build_replica(tiny, tasks=("t1",))  # plans as the full size's but for the features: the same export
    members = load_members(load_config(PRESET).task("t1"), tiny / "results")
    volume = volume_from_image(abdomen_like_image(MEDIAN_T1_ZYX, MEDIAN_T1_SPACING_ZYX), source="median.mha")
    case = preprocess(volume, members[0])
    shape = (3, *case.data.shape[1:])
    per_member, per_fold = [], []
    for _ in range(3):
        # Before: each member exported, then added to the image-space mean.
        logits, mean = torch.randn(shape), WeightedMean()
        mean.add(logits_to_probabilities(torch.randn(shape), members[0], case.properties), 1.0)
        started = time.perf_counter()
        mean.add(logits_to_probabilities(logits, members[0], case.properties), 1.0)
        per_member.append(time.perf_counter() - started)
        # Now: each further fold added to its folder's logit sum (and the sum divided once).
        first, second, sums = torch.randn(shape), torch.randn(shape), FoldLogits()
        sums.add(first, 1.0)
        started = time.perf_counter()
        sums.add(second, 1.0)
        sums.mean()
        per_fold.append(time.perf_counter() - started)
        del logits, mean, first, second, sums
    old, new = float(np.median(per_member)), float(np.median(per_fold))
    print(
        f"export: logits {list(shape)} -> image {list(MEDIAN_T1_ZYX)}: a member's export and image-space mean "
        f"{old:.2f} s; a fold added to its folder's logit sum {new:.2f} s; a six-fold folder: 5 x {old:.2f} s "
        f"replaced by 5 x {new:.2f} s, net {5 * (old - new):+.1f} s per case (five-fold Task 2: "
        f"{4 * (old - new):+.1f} s)"
    )


def member(work: Path) -> None:
    import SimpleITK as sitk
    from winners import abdomen_like_image

    from pantherseg.api import segment

    config = json.loads(PRESET.read_text())
    config["tasks"] = {"t1": {**config["tasks"]["t1"], "members": config["tasks"]["t1"]["members"][:1]}}
    config_path = work / "one-member.json"
    config_path.write_text(json.dumps(config))
    image = work / "median.mha"
    sitk.WriteImage(abdomen_like_image(MEDIAN_T1_ZYX, MEDIAN_T1_SPACING_ZYX), str(image))
    started = time.perf_counter()
    [result] = segment(
        image,
        output_dir=work / "member-out",
        task="t1",
        config=config_path,
        weights=work / "results",
        device="cpu",
        backend="torch",
        time_budget_s=float("inf"),
    )
    print(
        f"member: one full-size member, median Task 1 case, CPU torch fp32: {time.perf_counter() - started:.0f} s "
        f"wall, CPU {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.0f} s; stages {result.report.timings_s}"
    )


STEPS = {"build": build, "load": load, "lean": lean, "export": export, "member": member}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=["build", "load", "lean", "export"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from machine import cpu_line, describe_cpu

    print(cpu_line(describe_cpu()))
    for step in args.steps:
        STEPS[step](args.work)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
