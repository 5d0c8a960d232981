"""Cohort throughput on this machine: one process against Ray with 2 CPU workers, same cases, same run.

Workload: held-out Task 1 phantoms (resources/phantoms.py, seeds 1000...), each cropped around its
pancreas to at most 128 x 128 x 40 voxels (x, y, z; about 150 x 150 x 120 mm, so a few 24 x 80 x 80
tiles per member at the zoo's 3 x 2 x 2 mm), through the shipped demo zoo (Task 1, the first
``--members`` members), torch fp32 on the CPU, no time budget.

Routes, each in its own process (its imports, Ray start-up and ensemble loading are in its time):
- ``local``: ``pantherseg predict --resume`` route, one process, torch on all CPUs (2 threads here);
- ``ray``:   ``pantherseg predict --ray`` route on a local Ray instance, 2 workers x 1 CPU each.

Figures per route: end to end (process start to exit) and steady state (first case started to last
case finished, what a long cohort converges to), both as cases per hour; the time per stage summed
over cases (how much is not network: the part an overlap of I/O with the network could hide).
Prints a markdown table and writes benchmarks/results/bench_cohort_cpu.json.

    python benchmarks/bench_cohort.py                  # 6 cases, 2 members: a few minutes on 2 cores
    python benchmarks/bench_cohort.py --cases 4 --members 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CROP_XYZ = (128, 128, 40)


def write_cases(folder: Path, count: int) -> list[Path]:
    """``count`` held-out T1 phantoms cropped around the pancreas (geometry kept: origin, direction)."""
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(ROOT / "resources"))
    import phantoms

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in phantoms.TEST_SEEDS["t1"][:count]:
        image, label = phantoms.make_phantom(seed, "t1")
        centre_zyx = np.argwhere(sitk.GetArrayViewFromImage(label) > 0).mean(0).round().astype(int)
        size = [min(c, s) for c, s in zip(CROP_XYZ, image.GetSize())]
        start = [
            int(np.clip(centre_zyx[2 - axis] - size[axis] // 2, 0, image.GetSize()[axis] - size[axis]))
            for axis in range(3)
        ]
        path = folder / f"{phantoms.case_name(seed, 't1')}.mha"
        sitk.WriteImage(sitk.RegionOfInterest(image, size, start), str(path), useCompression=True)
        paths.append(path)
    return paths


def write_config(path: Path, members: int) -> Path:
    from pantherseg.paths import default_config

    raw = json.loads(default_config().read_text())
    raw["tasks"]["t1"]["members"] = raw["tasks"]["t1"]["members"][:members]
    path.write_text(json.dumps(raw))
    return path


def run_route(route: str, cases: Path, config: Path, out: Path, result: Path) -> None:
    """One route in this process; writes its cohort report and case timestamps to ``result``."""
    from pantherseg.cohort.progress import CohortProgress
    from pantherseg.cohort.run import run_cohort

    class Stamps(CohortProgress):
        first_start = last_end = None

        def case_started(self, case, worker):
            self.first_start = self.first_start or time.monotonic()

        def case_finished(self, row):
            self.last_end = time.monotonic()

    stamps = Stamps()
    ray_options = None
    if route == "ray":
        import ray

        from pantherseg.cohort.ray_runner import RayOptions

        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        ray_options = RayOptions(cpus_per_worker=1)
    report = run_cohort(
        cases,
        output_dir=out,
        task="t1",
        config=config,
        device="cpu",
        backend="torch",
        time_budget_s=float("inf"),
        resume=False,
        ray=ray_options,
        progress=stamps,
    )
    result.write_text(json.dumps({"report": report.as_dict(), "steady_s": stamps.last_end - stamps.first_start}))


def measure(route: str, cases: Path, config: Path, work: Path) -> dict:
    result = work / f"{route}.json"
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--route",
            route,
            "--cases-dir",
            str(cases),
            "--config",
            str(config),
            "--out",
            str(work / route),
            "--result",
            str(result),
        ],
        check=True,
    )
    wall = time.monotonic() - started
    data = json.loads(result.read_text())
    totals = data["report"]["totals"]
    done = totals["done"]
    stages = totals["stage_s"]
    return {
        "route": route,
        "workers": len(data["report"]["workers"]),
        "cases_done": done,
        "end_to_end_s": round(wall, 1),
        "end_to_end_cases_per_hour": round(done * 3600 / wall, 1),
        "steady_s": round(data["steady_s"], 1),
        "steady_cases_per_hour": round(done * 3600 / data["steady_s"], 1),
        "case_seconds_mean": totals["case_seconds_mean"],
        "stage_s": stages,
        "network_share": round(stages["network"] / max(1e-9, sum(stages.values())), 3),
        "ensemble_load_s": [w.get("load_s") for w in data["report"]["workers"]],
    }


def agreement(work: Path) -> float:
    """Fraction of voxels on which the two routes' masks agree (different torch thread counts)."""
    import SimpleITK as sitk

    same = total = 0
    for path in sorted((work / "local").glob("*.mha")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "ray" / path.name)))
        same, total = same + int((a == b).sum()), total + a.size
    return same / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_cohort_cpu.json")
    parser.add_argument("--route", choices=("local", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--cases-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.route:
        run_route(args.route, args.cases_dir, args.config, args.out, args.result)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_cohort_") as tmp:
        work = Path(tmp)
        write_cases(work / "cases", args.cases)
        config = write_config(work / "ensemble_config.json", args.members)
        load_before = os.getloadavg()
        routes = [measure(route, work / "cases", config, work) for route in ("local", "ray")]
        load_after = os.getloadavg()
        voxels_agree = agreement(work)
    import ray
    import torch

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "workload": {
            "cases": args.cases,
            "members": args.members,
            "crop_xyz": CROP_XYZ,
            "task": "t1",
            "models": "demo zoo (weights/), torch fp32, CPU, no time budget",
        },
        "routes": routes,
        "mask_voxel_agreement": round(voxels_agree, 6),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.cases} cases, {args.members} member(s); load average {load_before[0]:.1f} -> {load_after[0]:.1f}\n")
    print("| route | workers | end to end s | cases/h end to end | steady s | cases/h steady | network share |")
    print("|---|---|---|---|---|---|---|")
    for r in routes:
        print(
            f"| {r['route']} | {r['workers']} | {r['end_to_end_s']} | {r['end_to_end_cases_per_hour']} | "
            f"{r['steady_s']} | {r['steady_cases_per_hour']} | {r['network_share']:.0%} |"
        )
    print(f"\nmask voxel agreement between routes: {voxels_agree:.4%}; written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
