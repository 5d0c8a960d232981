"""One tile of the organisers' Task 1 network on this CPU: torch fp32 against the engine's OpenVINO settings.

bench_ensemble.py measures whole cases; the network passes are nearly all of their time, so the
speed-up it can show is bounded by the per-tile ratio printed here. That ratio depends on the CPU's
vector instructions (OpenVINO gains far more with AVX-512 than with AVX2 alone), so the CPU is
printed with it. Routes: torch fp32 (nnU-Net's CPU route), OpenVINO fp32 compiled exactly as the
engine compiles it (``OpenVinoNetwork``), and OpenVINO bf16 where the CPU has native bf16.

    python benchmarks/bench_cpu_tile.py                 # about 2 minutes on 2 cores
    python benchmarks/bench_cpu_tile.py --tiny          # what the tests run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line, describe_cpu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def seconds_per_call(call, repeats: int) -> float:
    call()  # warm-up: first-call allocations, OpenVINO's lazy compilation
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> dict:
    import openvino as ov
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from model_factory import load_plans, shrink
    from pantherseg.engine.openvino_backend import OpenVinoNetwork, native_bf16

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="features / 16 and a 16 x 64 x 64 patch, one repeat")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    plans = load_plans("task1")
    if args.tiny:
        plans = shrink(plans, divisor=16)
        plans["configurations"]["3d_fullres"]["patch_size"] = [16, 64, 64]
    repeats = 1 if args.tiny else args.repeats
    cm = PlansManager(plans).get_configuration("3d_fullres")
    network = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, 1, 3, allow_init=True,
                                     deep_supervision=False).eval()
    tile = torch.randn((1, 1, *cm.patch_size))
    cpu = describe_cpu()
    torch.set_num_threads(cpu["threads"])
    print(f"CPU: {cpu_line(cpu)}; one {'x'.join(map(str, cm.patch_size))} tile of the organisers' Task 1 network")
    timings = {}
    with torch.inference_mode():
        timings["torch fp32"] = seconds_per_call(lambda: network(tile), repeats)
    with torch.no_grad():  # as the engine's convert_member: a dynamic batch axis, weights kept in fp32
        model = ov.convert_model(network, example_input=tile, input=[ov.PartialShape([-1, 1, *cm.patch_size])])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        for precision in ("fp32", "bf16") if native_bf16() else ("fp32",):
            compiled = OpenVinoNetwork(path, precision=precision, threads=cpu["threads"])
            timings[f"OpenVINO {precision}"] = seconds_per_call(lambda: compiled(tile), repeats)
    for route, seconds in timings.items():
        print(f"  {route:<16} {seconds:7.2f} s per tile   {timings['torch fp32'] / seconds:5.2f}x torch fp32")
    figures = {"cpu": cpu, "patch": cm.patch_size, "seconds_per_tile": timings, "unix_time": time.time()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
