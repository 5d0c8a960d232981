"""The winners' configuration on a GPU, in one command: wall time, network share, TFLOP/s, GPU memory.

Workload (benchmarks/winners.py): ResEnc-L plans at 1 mm with a 192^3 patch (3 classes, random
weights), the largest Task 1 image (88 x 466 x 570 at 3.0 x 0.69 x 0.69 mm -> 24 tiles per member),
6 members, fp16 autocast, through ``pantherseg.segment`` as grand-challenge runs it (a single case:
networks built when their member runs and dropped after). Printed: wall time of the call, the
network's share of it, achieved TFLOP/s over the network time (FLOPs of one tile counted by torch's
FlopCounterMode, times the tiles run) against the card's dense fp16 tensor peak, and peak GPU memory.

    python benchmarks/bench_gpu.py                       # on a machine with a CUDA GPU; ~1-3 min
    python benchmarks/bench_gpu.py --members 1 --tile-batch-size 2
    python benchmarks/bench_gpu.py --reference           # also nnU-Net's own route, same device: ratio, agreement
    python benchmarks/bench_gpu.py --tiny --device cpu --precision fp32 --reference   # what the tests run

``--tiny`` shrinks everything (features / 16, patch 64^3, a small image) so the script runs on a CPU
in seconds and cannot rot.
"""

from __future__ import annotations

import argparse
import json
import logging
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


def run(work: Path, *, device: str, precision: str, tile_batch_size: int, plans: dict, num_classes: int) -> dict:
    import torch

    from pantherseg.api import segment

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    [result] = segment(work / "case.mha", output_dir=work / "out", task="t1", config=work / "ensemble_config.json",
                       weights=work / "weights", device=device, precision=precision, backend="torch",
                       tile_batch_size=tile_batch_size, time_budget_s=float("inf"))
    wall = time.perf_counter() - started
    report = result.report
    tiles = sum(o["tiles_done"] for o in report["members"]) if "members" in report else None
    if tiles is None:
        raise SystemExit(f"the run report has no per-member outcomes: {sorted(report)}")
    network_s = report["timings_s"]["network"]
    flops = winners.tile_flops(plans, num_classes) * tiles
    name = torch.cuda.get_device_name(torch.device(device)) if cuda else "CPU"
    key, peak = card_peak(name) if cuda else (None, None)
    achieved = flops / network_s / 1e12
    return {
        "device": name, "precision": precision, "wall_s": wall, "network_s": network_s,
        "network_share": network_s / wall, "timings_s": report["timings_s"], "tiles": tiles,
        "tflop_per_tile": flops / tiles / 1e12, "achieved_tflops": achieved, "peak_key": key, "peak_tflops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "mask": str(result.output),
    }


def run_reference(work: Path, *, device: str, members: int) -> dict:
    """nnU-Net 2.8's own route on the same device and image: ``nnUNetPredictor`` per member (on a GPU with
    everything on the device and fp16 autocast, nnU-Net's defaults there; no mirroring), probabilities to
    .npz, then ``ensemble_folders``, as ``nnUNetv2_ensemble`` does. It runs after the engine, so it finds
    CUDA already initialised: the ratio leans towards nnU-Net, if anything."""
    from nnunet_reference import predict_member
    from nnunetv2.ensembling.ensemble import ensemble_folders

    started = time.perf_counter()
    folders = [str(predict_member(work / "weights" / winners.MODEL, 0, "checkpoint_final.pth", work / "case.mha",
                                  work / "reference" / f"m{index}", device=device)) for index in range(members)]
    ensemble_folders(folders, str(work / "reference" / "ensemble"), save_merged_probabilities=False,
                     num_processes=1, dataset_json_file_or_dict=str(Path(folders[0]) / "dataset.json"),
                     plans_json_file_or_dict=str(Path(folders[0]) / "plans.json"))
    return {"wall_s": time.perf_counter() - started,
            "mask": str(next((work / "reference" / "ensemble").glob("case.*")))}


def tumour_agreement(engine_mask: str, reference_mask: str, tumor_label: int) -> dict:
    """Voxel agreement and Dice of the engine's tumour mask and the tumour label of nnU-Net's segmentation."""
    import SimpleITK as sitk

    ours = sitk.GetArrayFromImage(sitk.ReadImage(engine_mask)) > 0
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(reference_mask)) == tumor_label
    both = int(ours.sum() + theirs.sum())
    return {"voxel_agreement": float((ours == theirs).mean()),
            "tumour_dice": 2 * float((ours & theirs).sum()) / both if both else 1.0}


def format_result(r: dict, members: int) -> str:
    peak = (f"{r['fraction_of_peak'] * 100:.0f}% of the {r['peak_key']}'s {r['peak_tflops']:.0f} TFLOP/s fp16 peak"
            if r["peak_tflops"] else "no peak known for this device (see PEAK_FP16_TFLOPS)")
    memory = (f"{r['peak_gpu_memory_gb']:.2f} GB allocated at peak ({r['peak_gpu_reserved_gb']:.2f} GB reserved)"
              if r["peak_gpu_memory_gb"] is not None else "n/a (not a GPU)")
    split = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items())
    return (f"{r['device']}, {r['precision']}, {members} members, {r['tiles']} tiles of {r['tflop_per_tile']:.2f} TFLOP\n"
            f"  wall time           {r['wall_s']:.1f} s   (split: {split})\n"
            f"  network             {r['network_s']:.1f} s = {r['network_share'] * 100:.0f}% of the wall time\n"
            f"  achieved            {r['achieved_tflops']:.2f} TFLOP/s = {peak}\n"
            f"  peak GPU memory     {memory}"
            + (f"\n  nnU-Net's route     {r['reference']['wall_s']:.1f} s on the same device: the engine is "
               f"{r['reference']['wall_s'] / r['wall_s']:.2f}x faster; tumour masks agree on "
               f"{r['reference']['voxel_agreement'] * 100:.4f}% of voxels (Dice {r['reference']['tumour_dice']:.4f})"
               if "reference" in r else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "fp32", "bf16"))
    parser.add_argument("--members", type=int, default=None, help="default: 6 (1 with --tiny)")
    parser.add_argument("--tile-batch-size", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="a tiny configuration that runs on a CPU in seconds")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN autotune its convolution algorithms (torch.backends.cudnn.benchmark)")
    parser.add_argument("--reference", action="store_true",
                        help="also run nnU-Net's own route on the same device and print the ratio and mask agreement")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if args.cudnn_benchmark:
        import torch

        torch.backends.cudnn.benchmark = True
    divisor, patch = (TINY["divisor"], TINY["patch"]) if args.tiny else (1, None)
    shape = TINY["shape_zyx"] if args.tiny else winners.LARGEST_T1_ZYX
    members = args.members or (TINY["members"] if args.tiny else 6)
    plans, dataset = winners.load_winner_plans(divisor=divisor, patch=patch)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        winners.build_workload(work, members=members, divisor=divisor, patch=patch, shape_zyx=shape)
        result = run(work, device=args.device, precision=args.precision, tile_batch_size=args.tile_batch_size,
                     plans=plans, num_classes=len(dataset["labels"]))
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
        args.json.write_text(json.dumps({**result, "members": members, "tiny": args.tiny,
                                         "unix_time": time.time()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
