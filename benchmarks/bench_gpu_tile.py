"""One tile of the winners' network on a GPU, under the settings that could make the network passes faster.

bench_gpu.py measures the whole case; this script isolates the network pass (ResEnc-L, 192^3 patch,
random weights, inference mode) and times it per setting: cuDNN's autotuner off/on, the
channels-last-3d memory format, tiles batched two at a time, fp16 against bf16 autocast. Each line
prints milliseconds per tile, TFLOP/s and the ratio against the first line (the engine's settings
as of this script), measured in the same process.

    python benchmarks/bench_gpu_tile.py                        # on a CUDA machine, about a minute
    python benchmarks/bench_gpu_tile.py --tiny --device cpu    # what the tests run
    python benchmarks/bench_gpu_tile.py --compile --cuda-graphs  # opt in: torch.compile and CUDA graphs

Opt-in variants (``--compile``, ``--cuda-graphs``; OPT_IN_VARIANTS), fixed tile shape, fp16 autocast,
cudnn.benchmark on: ``torch.compile`` (inductor, default mode), ``torch.compile(mode="reduce-overhead")``
(inductor with CUDA graphs) and a CUDA graph captured by hand (a static input tile copied in, the
graph replayed). Their compile or capture time is printed on its own line and kept out of the
per-tile figure: if one is ever adopted it must be compiled ahead of time or cached, never inside a
case's budget. They are not used by the engine; no GPU has measured them yet (docs/speed.md).
The CUDA-graph variants need CUDA and are reported as not applicable elsewhere; each variant's
output is compared with the eager network's on the same tile (max abs difference of the logits).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import winners

VARIANTS = (  # name, cudnn.benchmark, channels_last_3d, tiles per batch, autocast dtype
    ("engine today (fp16)", False, False, 1, "float16"),
    ("cudnn.benchmark", True, False, 1, "float16"),
    ("cudnn.benchmark + channels_last_3d", True, True, 1, "float16"),
    ("cudnn.benchmark, 2 tiles per batch", True, False, 2, "float16"),
    ("cudnn.benchmark, bf16", True, False, 1, "bfloat16"),
)


# name, how: "compile" (torch.compile mode), "graph" (CUDA graph by hand); fp16 autocast, cudnn.benchmark on.
OPT_IN_VARIANTS = {
    "compile": [("torch.compile (inductor, default mode)", "compile", "default")],
    "cuda-graphs": [
        ("torch.compile reduce-overhead (CUDA graphs)", "compile", "reduce-overhead"),
        ("CUDA graph captured by hand", "graph", None),
    ],
}


def _autocast(device: str):
    import torch

    cuda = device.startswith("cuda")
    return torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()


def build_opt_in(network, patch, *, device: str, how: str, mode: str | None):
    """(callable taking one tile -> logits, seconds spent compiling or capturing), or None if not applicable."""
    import torch

    cuda = device.startswith("cuda")
    if (how == "graph" or mode == "reduce-overhead") and not cuda:
        return None
    torch.backends.cudnn.benchmark = True
    x = torch.randn((1, 1, *patch), device=device)
    started = time.perf_counter()
    if how == "compile":
        compiled = torch.compile(network, mode=mode)

        def call(tile):
            with torch.inference_mode(), _autocast(device):
                return compiled(tile)

        call(x)
        call(x)  # reduce-overhead records its graph on a later call
    else:
        static = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode(), _autocast(device):
            for _ in range(3):
                network(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph), _autocast(device):
            output = network(static)

        def call(tile):
            static.copy_(tile)
            graph.replay()
            return output

    if cuda:
        torch.cuda.synchronize()
    return call, time.perf_counter() - started


def time_call(call, patch, *, device: str, repeats: int) -> tuple[float, float]:
    """(seconds per tile, a tile to compare the variant's output with the eager network's on) for an opt-in variant."""
    import torch

    x = torch.randn((1, 1, *patch), device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        call(x)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats, x


def time_variant(network, patch, *, device, cudnn_benchmark, channels_last, batch, dtype, repeats) -> float:
    """Seconds per tile, after warm-up passes (the autotuner's search happens there)."""
    import torch

    torch.backends.cudnn.benchmark = cudnn_benchmark
    net = (
        network.to(memory_format=torch.channels_last_3d)
        if channels_last
        else network.to(memory_format=torch.contiguous_format)
    )
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
    parser.add_argument("--compile", action="store_true", help="also torch.compile (opt in; compiles first)")
    parser.add_argument("--cuda-graphs", action="store_true", help="also CUDA graphs (opt in; CUDA only)")
    args = parser.parse_args(argv)
    plans, dataset = (
        winners.load_winner_plans(divisor=16, patch=(64, 64, 64)) if args.tiny else winners.load_winner_plans()
    )
    repeats = 1 if args.tiny else args.repeats
    num_classes = len(dataset["labels"])
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    network = network_from_plans(plans, num_classes).to(args.device).eval()
    flops = winners.tile_flops(plans, num_classes)
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}, one {'x'.join(map(str, patch))} tile = {flops / 1e12:.2f} TFLOP")
    rows = []
    for label, cudnn_benchmark, channels_last, batch, dtype in VARIANTS:
        seconds = time_variant(
            network,
            patch,
            device=args.device,
            cudnn_benchmark=cudnn_benchmark,
            channels_last=channels_last,
            batch=batch,
            dtype=dtype,
            repeats=repeats,
        )
        rows.append(
            {
                "variant": label,
                "ms_per_tile": seconds * 1e3,
                "tflops": flops / seconds / 1e12,
                "speed_up": rows[0]["ms_per_tile"] / (seconds * 1e3) if rows else 1.0,
            }
        )
        print(
            f"  {label:<40} {seconds * 1e3:8.1f} ms per tile  {flops / seconds / 1e12:7.1f} TFLOP/s  "
            f"{rows[-1]['speed_up']:.2f}x",
            flush=True,
        )
    opt_in = [
        v
        for key, chosen in (("compile", args.compile), ("cuda-graphs", args.cuda_graphs))
        if chosen
        for v in OPT_IN_VARIANTS[key]
    ]
    for label, how, mode in opt_in:
        built = build_opt_in(network, patch, device=args.device, how=how, mode=mode)
        if built is None:
            print(f"  {label:<40} not applicable on {args.device}")
            rows.append({"variant": label, "applicable": False})
            continue
        call, setup_s = built
        seconds, x = time_call(call, patch, device=args.device, repeats=repeats)
        with torch.inference_mode(), _autocast(args.device):
            difference = float((call(x).float() - network(x).float()).abs().max())
        rows.append(
            {
                "variant": label,
                "applicable": True,
                "ms_per_tile": seconds * 1e3,
                "tflops": flops / seconds / 1e12,
                "speed_up": rows[0]["ms_per_tile"] / (seconds * 1e3),
                "setup_s": setup_s,
                "max_abs_difference": difference,
            }
        )
        print(
            f"  {label:<40} {seconds * 1e3:8.1f} ms per tile  {flops / seconds / 1e12:7.1f} TFLOP/s  "
            f"{rows[-1]['speed_up']:.2f}x   (compile/capture {setup_s:.1f} s, outside the timing; "
            f"logits differ from eager by at most {difference:.2g})",
            flush=True,
        )
    torch.backends.cudnn.benchmark = False
    return rows


if __name__ == "__main__":
    main()
