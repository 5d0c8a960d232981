"""The winners' configuration on a GPU, in one command: wall time, network share, TFLOP/s, GPU memory.

Workload (benchmarks/winners.py): ResEnc-L plans at 1 mm with a 192^3 patch (3 classes, random
weights), the largest Task 1 image (88 x 466 x 570 at 3.0 x 0.69 x 0.69 mm -> 24 tiles per member),
6 members, fp16 autocast, through ``pantherseg.segment`` as grand-challenge runs it (a single case:
networks built when their member runs and dropped after). Printed: wall time of the call, the
network's share of it, achieved TFLOP/s over the network time (FLOPs of one tile counted by torch's
FlopCounterMode, times the tiles run) against the card's dense fp16 tensor peak, and peak GPU memory;
each stage's time and share, the sliding window's rate against the bare network pass (one tile on
the device, timed alone after the run), and the device's idle time between tile batches (CUDA events
in the stream; on the CPU the host's own gaps between batches).
``--cpus N`` pins the process to N CPUs (``os.sched_setaffinity``) and sizes torch's threads to them,
as on grand-challenge's g4dn.xlarge (4 vCPUs).

    python benchmarks/bench_gpu.py                       # on a machine with a CUDA GPU; ~1-3 min
    python benchmarks/bench_gpu.py --members 1 --tile-batch-size 2
    python benchmarks/bench_gpu.py --reference           # also nnU-Net's own route, same device: ratio, agreement
    python benchmarks/bench_gpu.py --cpus 4              # the T4 instance's 4 vCPUs (issue 24's measurement)
    python benchmarks/bench_gpu.py --cpus 4 --preprocessing off --reference   # nnU-Net's CPU preprocessing instead
    python benchmarks/bench_gpu.py --tiny --device cpu --precision fp32 --reference   # what the tests run

``--tiny`` shrinks everything (features / 16, patch 64^3, a small image) so the script runs on a CPU
in seconds and cannot rot.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import winners

ROOT = winners.ROOT

# Dense fp16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' datasheets.
PEAK_FP16_TFLOPS = {
    "T4": 65.0,  # sustains about 24 under its 70 W cap (third-party measurements)
    "A10G": 125.0,  # the A10 datasheet's figure; AWS's A10G is the same GA102 part, clocks may differ
    "H100 PCIe": 756.0,
    "H100": 989.4,  # SXM (HBM3); "NVIDIA H100 80GB HBM3"
    "H200": 989.4,
}
TINY = {"divisor": 16, "patch": (64, 64, 64), "shape_zyx": (20, 80, 80), "members": 1}  # one tile


def card_peak(name: str) -> tuple[str | None, float | None]:
    """(table key, peak TFLOP/s) for a torch device name such as 'NVIDIA H100 80GB HBM3'; longest match wins."""
    matches = [key for key in PEAK_FP16_TFLOPS if key.lower() in name.lower()]
    if not matches:
        return None, None
    key = max(matches, key=len)
    return key, PEAK_FP16_TFLOPS[key]


def pin_cpus(count: int) -> list[int]:
    """Pin this process to the first ``count`` CPUs it may use, and size torch's threads to them."""
    import torch

    allowed = sorted(os.sched_getaffinity(0))
    if count > len(allowed):
        raise SystemExit(f"--cpus {count}: only {len(allowed)} CPUs are available to this process")
    chosen = allowed[:count]
    os.sched_setaffinity(0, chosen)
    torch.set_num_threads(count)
    return chosen


class Timelines:
    """Wraps the engine's sliding window so that every member's tile batches are marked on a BatchTimeline."""

    def __init__(self):
        self.timelines = []

    def __enter__(self):
        from pantherseg.engine import sliding_window

        self._module, self._original = sliding_window, sliding_window.predict_logits

        def marked(*args, **kwargs):
            timeline = sliding_window.BatchTimeline(kwargs.get("device", "cpu"))
            self.timelines.append(timeline)
            return self._original(*args, timeline=timeline, **kwargs)

        sliding_window.predict_logits = marked
        return self

    def __exit__(self, *exc):
        self._module.predict_logits = self._original

    def busy_s(self) -> float:
        return sum(t.busy_s() for t in self.timelines)

    def idle_s(self) -> float:
        return sum(t.idle_between_batches_s() for t in self.timelines)

    def gaps(self) -> int:
        return sum(max(0, t.batches - 1) for t in self.timelines)


def bare_pass_s(plans: dict, num_classes: int, *, device: str, precision: str, batch: int, repeats: int) -> float:
    """Seconds per tile of the network alone: one fixed tile batch already on the device, after a warm-up."""
    import torch

    from model_factory import network_from_plans

    network = network_from_plans(plans, num_classes).to(device).eval()
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    tiles = torch.randn((batch, 1, *patch), device=device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        network(tiles)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            network(tiles)
        if cuda:
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats / batch


def run(work: Path, *, device: str, precision: str, tile_batch_size: int, plans: dict, num_classes: int) -> dict:
    import torch

    from pantherseg.api import segment

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with Timelines() as timelines:
        [result] = segment(
            work / "case.mha",
            output_dir=work / "out",
            task="t1",
            config=work / "ensemble_config.json",
            weights=work / "weights",
            device=device,
            precision=precision,
            backend="torch",
            tile_batch_size=tile_batch_size,
            time_budget_s=float("inf"),
        )
    wall = time.perf_counter() - started
    report = result.report
    tiles = sum(o.tiles_done for o in report.members)
    network_s = report.timings_s["network"]
    flops = winners.tile_flops(plans, num_classes) * tiles
    name = torch.cuda.get_device_name(torch.device(device)) if cuda else "CPU"
    key, peak = card_peak(name) if cuda else (None, None)
    achieved = flops / network_s / 1e12
    return {
        "device": name,
        "precision": precision,
        "wall_s": wall,
        "network_s": network_s,
        "network_share": network_s / wall,
        "timings_s": report.timings_s,
        "tiles": tiles,
        "tflop_per_tile": flops / tiles / 1e12,
        "achieved_tflops": achieved,
        "peak_key": key,
        "peak_tflops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "mask": str(result.output),
        "stage_shares": {k: v / wall for k, v in report.timings_s.items()},
        "batches_busy_s": timelines.busy_s(),
        "idle_between_batches_s": timelines.idle_s(),
        "batch_gaps": timelines.gaps(),
    }


def run_reference(work: Path, *, device: str, members: int) -> dict:
    """nnU-Net 2.8's own route on the same device and image: ``nnUNetPredictor`` per member (on a GPU with
    everything on the device and fp16 autocast, nnU-Net's defaults there; no mirroring), probabilities to
    .npz, then ``ensemble_folders``, as ``nnUNetv2_ensemble`` does. It runs after the engine, so it finds
    CUDA already initialised: the ratio leans towards nnU-Net, if anything."""
    from nnunetv2.ensembling.ensemble import ensemble_folders

    from nnunet_reference import predict_member

    started = time.perf_counter()
    folders = [
        str(
            predict_member(
                work / "weights" / winners.MODEL,
                0,
                "checkpoint_final.pth",
                work / "case.mha",
                work / "reference" / f"m{index}",
                device=device,
            )
        )
        for index in range(members)
    ]
    ensemble_folders(
        folders,
        str(work / "reference" / "ensemble"),
        save_merged_probabilities=False,
        num_processes=1,
        dataset_json_file_or_dict=str(Path(folders[0]) / "dataset.json"),
        plans_json_file_or_dict=str(Path(folders[0]) / "plans.json"),
    )
    return {
        "wall_s": time.perf_counter() - started,
        "mask": str(next((work / "reference" / "ensemble").glob("case.*"))),
    }


def tumour_agreement(engine_mask: str, reference_mask: str, tumor_label: int) -> dict:
    """Voxel agreement and Dice of the engine's tumour mask and the tumour label of nnU-Net's segmentation."""
    import SimpleITK as sitk

    ours = sitk.GetArrayFromImage(sitk.ReadImage(engine_mask)) > 0
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(reference_mask)) == tumor_label
    both = int(ours.sum() + theirs.sum())
    return {
        "voxel_agreement": float((ours == theirs).mean()),
        "tumour_dice": 2 * float((ours & theirs).sum()) / both if both else 1.0,
    }


def format_result(r: dict, members: int) -> str:
    peak = (
        f"{r['fraction_of_peak'] * 100:.0f}% of the {r['peak_key']}'s {r['peak_tflops']:.0f} TFLOP/s fp16 peak"
        if r["peak_tflops"]
        else "no peak known for this device (see PEAK_FP16_TFLOPS)"
    )
    memory = (
        f"{r['peak_gpu_memory_gb']:.2f} GB allocated at peak ({r['peak_gpu_reserved_gb']:.2f} GB reserved)"
        if r["peak_gpu_memory_gb"] is not None
        else "n/a (not a GPU)"
    )
    stages = "\n".join(f"    {k:<18}{v:8.2f} s  {r['stage_shares'][k] * 100:5.1f}%" for k, v in r["timings_s"].items())
    idle = r["idle_between_batches_s"]
    rate = (
        f"  sliding window      {r['window_rate_of_bare'] * 100:.0f}% of the bare network pass's rate "
        f"({r['tiles'] / r['network_s']:.2f} tiles/s vs {1 / r['bare_s_per_tile']:.2f} tiles/s for one tile "
        f"already on the device)\n"
        if "bare_s_per_tile" in r
        else ""
    )
    return (
        f"{r['device']}, {r['precision']}, {members} members, {r['tiles']} tiles of {r['tflop_per_tile']:.2f} TFLOP\n"
        f"  wall time           {r['wall_s']:.1f} s; stages (seconds, share of the wall time):\n{stages}\n"
        f"  network             {r['network_s']:.1f} s = {r['network_share'] * 100:.0f}% of the wall time\n"
        + rate
        + f"  idle between tiles  {idle * 1e3:.1f} ms over {r['batch_gaps']} gaps between batches "
        f"({'GPU idle, CUDA events' if r['peak_gpu_memory_gb'] is not None else 'host time between batches'}; "
        f"batches themselves {r['batches_busy_s']:.2f} s)\n"
        f"  achieved            {r['achieved_tflops']:.2f} TFLOP/s = {peak}\n"
        f"  peak GPU memory     {memory}"
        + (
            f"\n  nnU-Net's route     {r['reference']['wall_s']:.1f} s on the same device: the engine is "
            f"{r['reference']['wall_s'] / r['wall_s']:.2f}x faster; tumour masks agree on "
            f"{r['reference']['voxel_agreement'] * 100:.4f}% of voxels (Dice {r['reference']['tumour_dice']:.4f})"
            if "reference" in r
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "fp32", "bf16"))
    parser.add_argument("--members", type=int, default=None, help="default: 6 (1 with --tiny)")
    parser.add_argument("--tile-batch-size", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="a tiny configuration that runs on a CPU in seconds")
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN autotune its convolution algorithms (torch.backends.cudnn.benchmark)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also run nnU-Net's own route on the same device and print the ratio and mask agreement",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="pin the process to this many CPUs and size torch's threads to them (T4 instance: 4)",
    )
    parser.add_argument(
        "--preprocessing",
        choices=("auto", "on", "off"),
        default=None,
        help="PANTHERSEG_DEVICE_PREPROCESSING for the run: auto (on the device if CUDA), on (also on "
        "the CPU), off (nnU-Net's CPU preprocessing)",
    )
    parser.add_argument("--bare-repeats", type=int, default=None, help="bare network passes timed (default 10; 1 tiny)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    import torch

    affinity, threads = os.sched_getaffinity(0), torch.get_num_threads()
    environment = os.environ.get("PANTHERSEG_DEVICE_PREPROCESSING")
    try:
        return _measure(args, pin_cpus(args.cpus) if args.cpus else None)
    finally:  # main() is also called in-process (tests): leave the caller's CPUs and threads as they were
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)
        os.environ.pop("PANTHERSEG_DEVICE_PREPROCESSING", None)
        if environment is not None:
            os.environ["PANTHERSEG_DEVICE_PREPROCESSING"] = environment


def _measure(args, pinned: list[int] | None) -> int:
    import torch

    from pantherseg.engine import device_preprocessing

    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if args.preprocessing:
        os.environ[device_preprocessing.ENVIRONMENT_VARIABLE] = args.preprocessing
    divisor, patch = (TINY["divisor"], TINY["patch"]) if args.tiny else (1, None)
    shape = TINY["shape_zyx"] if args.tiny else winners.LARGEST_T1_ZYX
    members = args.members or (TINY["members"] if args.tiny else 6)
    plans, dataset = winners.load_winner_plans(divisor=divisor, patch=patch)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        winners.build_workload(work, members=members, divisor=divisor, patch=patch, shape_zyx=shape)
        result = run(
            work,
            device=args.device,
            precision=args.precision,
            tile_batch_size=args.tile_batch_size,
            plans=plans,
            num_classes=len(dataset["labels"]),
        )
        result["pinned_cpus"] = pinned
        result["bare_s_per_tile"] = bare_pass_s(
            plans,
            len(dataset["labels"]),
            device=args.device,
            precision=args.precision,
            batch=args.tile_batch_size,
            repeats=args.bare_repeats or (1 if args.tiny else 10),
        )
        result["window_rate_of_bare"] = result["bare_s_per_tile"] * result["tiles"] / result["network_s"]
        if args.reference:
            reference = run_reference(work, device=args.device, members=members)
            reference.update(tumour_agreement(result["mask"], reference["mask"], dataset["labels"]["tumor"]))
            result["reference"] = {k: v for k, v in reference.items() if k != "mask"}
        del result["mask"]  # in a folder that is gone after this block
    if not args.tiny and result["tiles"] != winners.TILES_PER_MEMBER * members:
        raise SystemExit(f"expected {winners.TILES_PER_MEMBER * members} tiles, ran {result['tiles']}")
    print(format_result(result, members))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({**result, "members": members, "tiny": args.tiny, "unix_time": time.time()}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
