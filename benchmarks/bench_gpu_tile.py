"""One tile of the winners' network on a GPU, under the settings that could make the network passes faster.

bench_gpu.py measures the whole case; this script isolates the network pass (ResEnc-L, 192^3 patch,
random weights, inference mode) and times it per setting: cuDNN's autotuner off/on, the
channels-last-3d memory format, tiles batched two at a time, fp16 against bf16 autocast. Each line
prints milliseconds per tile, TFLOP/s and the ratio against the first line (the engine's settings
as of this script), measured in the same process.

    python benchmarks/bench_gpu_tile.py                        # on a CUDA machine, about a minute
    python benchmarks/bench_gpu_tile.py --tiny --device cpu    # what the tests run
"""

from __future__ import annotations

import argparse
import time

import winners

VARIANTS = (  # name, cudnn.benchmark, channels_last_3d, tiles per batch, autocast dtype
    ("engine today (fp16)", False, False, 1, "float16"),
    ("cudnn.benchmark", True, False, 1, "float16"),
    ("cudnn.benchmark + channels_last_3d", True, True, 1, "float16"),
    ("cudnn.benchmark, 2 tiles per batch", True, False, 2, "float16"),
    ("cudnn.benchmark, bf16", True, False, 1, "bfloat16"),
)


def time_variant(network, patch, *, device, cudnn_benchmark, channels_last, batch, dtype, repeats) -> float:
    """Seconds per tile, after warm-up passes (the autotuner's search happens there)."""
    import torch

    torch.backends.cudnn.benchmark = cudnn_benchmark
    net = network.to(memory_format=torch.channels_last_3d) if channels_last else network.to(
        memory_format=torch.contiguous_format)
    x = torch.randn((batch, 1, *patch), device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last_3d)
    cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=getattr(torch, dtype), enabled=cuda):
        for _ in range(3):
            net(x)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if cuda:
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats / batch


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    from model_factory import network_from_plans

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="features / 16 and a 64^3 patch, one repeat")
    args = parser.parse_args(argv)
    plans, dataset = (winners.load_winner_plans(divisor=16, patch=(64, 64, 64)) if args.tiny
                      else winners.load_winner_plans())
    repeats = 1 if args.tiny else args.repeats
    num_classes = len(dataset["labels"])
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    network = network_from_plans(plans, num_classes).to(args.device).eval()
    flops = winners.tile_flops(plans, num_classes)
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}, one {'x'.join(map(str, patch))} tile = {flops / 1e12:.2f} TFLOP")
    rows = []
    for label, cudnn_benchmark, channels_last, batch, dtype in VARIANTS:
        seconds = time_variant(network, patch, device=args.device, cudnn_benchmark=cudnn_benchmark,
                               channels_last=channels_last, batch=batch, dtype=dtype, repeats=repeats)
        rows.append({"variant": label, "ms_per_tile": seconds * 1e3, "tflops": flops / seconds / 1e12,
                     "speed_up": rows[0]["ms_per_tile"] / (seconds * 1e3) if rows else 1.0})
        print(f"  {label:<40} {seconds * 1e3:8.1f} ms per tile  {flops / seconds / 1e12:7.1f} TFLOP/s  "
              f"{rows[-1]['speed_up']:.2f}x", flush=True)
    torch.backends.cudnn.benchmark = False
    return rows


if __name__ == "__main__":
    main()
