"""One tile of the organisers' Task 1 network on this CPU: torch fp32 against the engine's OpenVINO settings.

bench_ensemble.py measures whole cases; the network passes are nearly all of their time, so the
speed-up it can show is bounded by the per-tile ratio printed here. That ratio depends on the CPU's
vector instructions (OpenVINO gains far more with AVX-512 than with AVX2 alone), so the CPU is
printed with it. Routes: torch fp32 (nnU-Net's CPU route), OpenVINO fp32 compiled exactly as the
engine compiles it (``OpenVinoNetwork``), and OpenVINO bf16 where the CPU has native bf16.
``--alternatives`` adds two ways of running OpenVINO fp32 that the engine does not use (docs/speed.md
says why): two tiles per inference, and THROUGHPUT mode with one single-threaded stream per thread and
as many tiles in flight.

    python benchmarks/bench_cpu_tile.py                 # about 2 minutes on 2 cores
    python benchmarks/bench_cpu_tile.py --alternatives  # about 4 minutes on 2 cores
    python benchmarks/bench_cpu_tile.py --tiny --alternatives   # what the tests run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line, describe_cpu, fp32_peak, peak_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def seconds_per_call(call, repeats: int) -> float:
    call()  # warm-up: first-call allocations, OpenVINO's lazy compilation
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


def alternatives(path: Path, tile, threads: int, repeats: int) -> dict[str, float]:
    """Seconds per tile of OpenVINO fp32 run in two ways the engine does not: 2 tiles per inference
    (the engine's compiled model, a batch of two), and THROUGHPUT mode with one single-threaded stream
    per thread and as many tiles in flight (an asynchronous queue)."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints
    import torch

    from pantherseg.engine.openvino_backend import OpenVinoNetwork

    engine = OpenVinoNetwork(path, precision="fp32", threads=threads)
    pair = torch.cat([tile, tile])
    figures = {"OpenVINO fp32, 2 tiles per inference": seconds_per_call(lambda: engine(pair), repeats) / 2}
    streams = max(1, threads)
    compiled = ov.Core().compile_model(
        str(path),
        "CPU",
        {
            hints.inference_precision: ov.Type.f32,
            hints.execution_mode: hints.ExecutionMode.ACCURACY,
            hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
            props.num_streams: streams,
            props.inference_num_threads: threads,
        },
    )
    queue = ov.AsyncInferQueue(compiled, streams)
    array = tile.numpy()

    def in_flight():
        for _ in range(streams):
            queue.start_async({0: array})
        queue.wait_all()

    figures[f"OpenVINO fp32, THROUGHPUT, {streams} streams"] = seconds_per_call(in_flight, repeats) / streams
    return figures


def main(argv: list[str] | None = None) -> dict:
    import openvino as ov
    import torch

    from pantherseg.engine.openvino_backend import OpenVinoNetwork, native_bf16

    from model_factory import load_plans, network_from_plans, shrink

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="features / 16 and a 16 x 64 x 64 patch, one repeat")
    parser.add_argument(
        "--alternatives",
        action="store_true",
        help="also OpenVINO fp32 with 2 tiles per inference, and in THROUGHPUT mode",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    plans = load_plans("task1")
    if args.tiny:
        plans = shrink(plans, divisor=16)
        plans["configurations"]["3d_fullres"]["patch_size"] = [16, 64, 64]
    repeats = 1 if args.tiny else args.repeats
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    network = network_from_plans(plans, 3).eval()
    tile = torch.randn((1, 1, *patch))
    cpu = describe_cpu()
    torch.set_num_threads(cpu["threads"])
    print(f"CPU: {cpu_line(cpu)}; one {'x'.join(map(str, patch))} tile of the organisers' Task 1 network")
    timings = {}
    with torch.inference_mode():
        timings["torch fp32"] = seconds_per_call(lambda: network(tile), repeats)
    with torch.no_grad():  # as the engine's convert_member: a dynamic batch axis, weights kept in fp32
        model = ov.convert_model(network, example_input=tile, input=[ov.PartialShape([-1, 1, *patch])])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        for precision in ("fp32", "bf16") if native_bf16() else ("fp32",):
            compiled = OpenVinoNetwork(path, precision=precision, threads=cpu["threads"])
            timings[f"OpenVINO {precision}"] = seconds_per_call(lambda compiled=compiled: compiled(tile), repeats)
        if args.alternatives:
            timings.update(alternatives(path, tile, cpu["threads"], repeats))
    from winners import tile_flops

    flops = tile_flops(plans, 3)
    peak = fp32_peak(threads=cpu["threads"])
    print(f"  one tile = {flops / 1e9:.1f} GFLOP; {peak_line(peak)}")
    gflops = {route: flops / seconds / 1e9 for route, seconds in timings.items()}
    for route, seconds in timings.items():
        share = f" = {gflops[route] / peak['gflops'] * 100:4.1f}% of peak" if peak["gflops"] else ""
        print(
            f"  {route:<40} {seconds:7.2f} s per tile   {timings['torch fp32'] / seconds:5.2f}x torch fp32   "
            f"{gflops[route]:7.1f} GFLOP/s{share}"
        )
    figures = {
        "cpu": cpu,
        "patch": patch,
        "seconds_per_tile": timings,
        "gflop_per_tile": flops / 1e9,
        "gflops": gflops,
        "fp32_peak": peak,
        "unix_time": time.time(),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
