"""The CPU side of a GPU run: time and host-memory peak of everything but the network passes.

Workload (benchmarks/winners.py): the winners' configuration (ResEnc-L plans, 1 mm, patch 192^3,
3 classes) on the largest Task 1 image (88 x 466 x 570 at 3.0 x 0.69 x 0.69 mm -> 264 x 322 x 393 at
1 mm, 24 tiles per member), 6 members. Each member's network is replaced by a stand-in that returns
logits of the right shape, (B, 3, 192, 192, 192), from two multiply-adds per class, so what is timed
is the engine around the networks: reading, nnU-Net's preprocessing (once: all members share it),
the sliding-window bookkeeping (tile copies, Gaussian-weighted float32 sums), the export (logits
resampled to the image grid, softmax, uncrop), the ensemble mean and writing the mask.

On a GPU the sliding-window sums and the export's resampling run on the device, so the CPU figures
here are an upper bound of the CPU side of a GPU run; grand-challenge's T4 instance has 4 vCPUs and
16 GB (1 GB reserved). The run happens in a child process so that its peak RSS is the engine's own.

    python benchmarks/bench_cpu_side.py                  # 6 members, this machine's CPU quota as threads
    python benchmarks/bench_cpu_side.py --threads 4 --members 6
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import winners

ROOT = winners.ROOT


class StandInNetwork:
    """(B, 1, *patch) -> (B, classes, *patch) logits from two multiply-adds per class; counts its own time."""

    def __init__(self, classes: int, seed: int):
        self.classes, self.seed, self.seconds, self.tiles = classes, seed, 0.0, 0

    def __call__(self, tiles):
        import torch

        started = time.perf_counter()
        logits = torch.cat([tiles * (0.5 + 0.1 * c + 0.01 * self.seed) - 0.2 * c for c in range(self.classes)], 1)
        self.seconds += time.perf_counter() - started
        self.tiles += tiles.shape[0]
        return logits

    def release(self) -> None:  # the Network protocol: nothing to free
        pass

    def set_threads(self, threads: int) -> None:
        pass


def child(work: Path, threads: int | None) -> dict:
    import torch

    from pantherseg.config import load_config
    from pantherseg.engine.ensemble import Ensemble
    from pantherseg.engine.memory_estimate import check_prediction_fits
    from pantherseg.engine.networks import GivenNetworks
    from pantherseg.engine.runtime import EngineOptions
    from pantherseg.io.images import mask_image, read_volume, write_image_atomically

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings = {}
    started = time.perf_counter()
    config = load_config(work / "ensemble_config.json")
    order = [spec.name for spec in config.task("t1").members]
    stand_ins = GivenNetworks(
        lambda member: StandInNetwork(member.label_manager.num_segmentation_heads, order.index(member.name))
    )
    ensemble = Ensemble.load(
        config=config, task="t1", weights=work / "weights", engine=EngineOptions(device="cpu"), backend=stand_ins
    )
    if threads:
        torch.set_num_threads(threads)
    timings["load (validate members)"] = time.perf_counter() - started

    started = time.perf_counter()
    volume = read_volume(work / "case.mha")
    timings["read"] = time.perf_counter() - started
    estimate = check_prediction_fits(volume, ensemble)
    prediction = ensemble.predict(volume)
    for stage in ("preprocess", "export", "ensemble"):
        timings[stage] = prediction.timings_s.get(stage, 0.0)
    stand_in_s = sum(network.seconds for network in ensemble.networks.values())
    timings["sliding-window bookkeeping (tiles, Gaussian sums)"] = prediction.timings_s["network"] - stand_in_s
    started = time.perf_counter()
    write_image_atomically(mask_image(prediction.mask, volume.sitk_image), work / "mask.mha")
    timings["write"] = time.perf_counter() - started
    return {
        "timings_s": timings,
        "cpu_side_s": sum(timings.values()),
        "stand_in_network_s": stand_in_s,
        "tiles": [o.tiles_total for o in prediction.outcomes],
        "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_at_start_mb": rss_start,
        "estimated_peak_mb": estimate.total / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPU quota)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_cpu_side.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.threads)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Features / 32: the checkpoint only has to load; the stand-in replaces the network.
        winners.build_workload(work, members=args.members, divisor=32)
        command = [sys.executable, __file__, "--child", str(work)] + (
            ["--threads", str(args.threads)] if args.threads else []
        )
        started = time.perf_counter()
        process = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
    line = next((text for text in process.stdout.splitlines() if text.startswith("RESULT ")), None)
    if process.returncode != 0 or line is None:
        raise SystemExit(f"the run failed:\n{process.stderr[-3000:]}")
    result = json.loads(line[len("RESULT ") :])
    result["child_wall_s"] = wall
    if any(t != winners.TILES_PER_MEMBER for t in result["tiles"]):
        raise SystemExit(f"expected {winners.TILES_PER_MEMBER} tiles per member, the engine counted {result['tiles']}")
    rows = "\n".join(f"| {stage} | {seconds:.1f} |" for stage, seconds in result["timings_s"].items())
    print(
        f"CPU side of the winners' configuration, {args.members} members x {result['tiles'][0]} tiles, largest "
        f"Task 1 image {winners.LARGEST_T1_ZYX} at {winners.LARGEST_T1_SPACING_ZYX} mm, {result['threads']} "
        f"threads\n\n| stage | s |\n|---|---|\n{rows}\n| **everything but the network passes** | "
        f"**{result['cpu_side_s']:.1f}** |\n\npeak RSS {result['peak_rss_mb']:.0f} MB (of which {result['rss_at_start_mb']:.0f} MB "
        f"interpreter and libraries at start; the engine's own estimate {result['estimated_peak_mb']:.0f} MB); "
        f"stand-in network {result['stand_in_network_s']:.1f} s, not counted"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**result, "members": args.members, "unix_time": time.time()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
