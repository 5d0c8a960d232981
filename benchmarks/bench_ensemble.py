"""End-to-end speed and memory of the engine against nnU-Net 2.8's own route, same machine, same run.

Workload (issue "Speed within the 5-minute budget"): a 6-member Task 1 ensemble built from the
PANTHER organisers' Task 1 plans (full-size PlainConvUNet, random weights) on a 72 x 258 x 318
volume at 3.0 x 1.1875 x 1.1875 mm (the median Task 1 case).

- reference: per member ``nnUNetPredictor`` without mirroring, probabilities saved to .npz, then
  ``nnunetv2.ensembling.ensemble.ensemble_folders`` (what ``nnUNetv2_ensemble`` runs);
- engine: one ``pantherseg.segment`` call per route: the default route (backend and precision
  "auto": OpenVINO fp32 on the CPU when it is installed and the members are converted), OpenVINO
  fp32 / bf16 (bf16 only on CPUs with native bf16), torch fp32, torch bf16 autocast, ONNX Runtime.
  Conversions (ONNX export, OpenVINO IR), done once per model and shipped with it, are outside the
  timed calls: they are written before the runs, and their time is reported apart.

Each route runs in its own process, so the peak RSS figures are that process's (plus, for the
reference, nnU-Net's worker processes, reported separately). Prints a markdown table and writes
JSON next to it.

    python benchmarks/bench_ensemble.py                       # reference + default + OpenVINO bf16
    python benchmarks/bench_ensemble.py --members 2 --routes torch-fp32
    python benchmarks/bench_ensemble.py --routes default,openvino-bf16,torch-fp32,torch-bf16,onnxruntime
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MODEL = "Dataset900_Bench/nnUNetTrainer_DA5Segord0_150epochs__nnUNetPlans__3d_fullres"
SHAPE_ZYX = (72, 258, 318)
SPACING_XYZ = (1.1875, 1.1875, 3.0)


def build_workload(root: Path, members: int) -> tuple[Path, Path, Path]:
    """Model folder, config and image for the benchmark; returns (weights, config, image)."""
    import SimpleITK as sitk

    from conftest import synthetic_image
    from model_factory import config_dict, load_plans, make_model_folder, member

    weights = root / "weights"
    roles = ["all-rounder"] * 3 + ["volume"] * 2 + ["boundary"]
    make_model_folder(weights, MODEL, plans=load_plans("task1"), folds=tuple(range(members)))
    config = root / "ensemble_config.json"
    config.write_text(
        json.dumps(config_dict([member(f"m{f}", MODEL, fold=f, role=roles[f % 6]) for f in range(members)]))
    )
    image = root / "case.mha"
    sitk.WriteImage(
        synthetic_image(shape_zyx=SHAPE_ZYX, spacing_xyz=SPACING_XYZ, seed=0, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)),
        str(image),
        useCompression=True,
    )
    return weights, config, image


def run_reference(weights: Path, members: int, image: Path, work: Path) -> dict:
    from nnunetv2.ensembling.ensemble import ensemble_folders

    from nnunet_reference import predict_member

    timings = {}
    started = time.perf_counter()
    folders = []
    for fold in range(members):
        t = time.perf_counter()
        folders.append(str(predict_member(weights / MODEL, fold, "checkpoint_final.pth", image, work / f"m{fold}")))
        timings[f"member {fold} (load+preprocess+network+export+npz)"] = time.perf_counter() - t
    t = time.perf_counter()
    ensemble_folders(
        folders,
        str(work / "ensemble"),
        save_merged_probabilities=False,
        num_processes=1,
        dataset_json_file_or_dict=str(Path(folders[0]) / "dataset.json"),
        plans_json_file_or_dict=str(Path(folders[0]) / "plans.json"),
    )
    timings["ensemble (load npz, average, write)"] = time.perf_counter() - t
    mask = next((work / "ensemble").glob("case.*"))
    return {"wall_s": time.perf_counter() - started, "timings_s": timings, "mask": str(mask)}


ENGINE_ROUTES = {
    "default": (None, None),
    "torch-fp32": ("torch", "fp32"),
    "torch-bf16": ("torch", "bf16"),
    "onnxruntime": ("onnxruntime", "fp32"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
}


def run_engine(weights: Path, config: Path, image: Path, work: Path, route: str) -> dict:
    from pantherseg.api import segment

    backend, precision = ENGINE_ROUTES[route]
    started = time.perf_counter()
    [result] = segment(
        image,
        output_dir=work,
        config=config,
        weights=weights,
        device="cpu",
        precision=precision,
        backend=backend,
        time_budget_s=float("inf"),
    )
    return {
        "wall_s": time.perf_counter() - started,
        "timings_s": result.report.timings_s,
        "mask": str(result.output),
        "device": result.report.device,
    }


def child(args) -> None:
    """One route in this process; prints a JSON line with its figures and peak RSS."""
    work = Path(args.work)
    weights, config, image = work / "weights", work / "ensemble_config.json", work / "case.mha"
    out = work / f"out-{args.child}"
    if args.child in ("export-onnx", "export-openvino"):
        from pantherseg.cli import main as cli_main

        started = time.perf_counter()
        cli_main([args.child, "--config", str(config), "--weights", str(weights)])
        print(
            "RESULT "
            + json.dumps(
                {
                    "wall_s": time.perf_counter() - started,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
        )
        return
    if args.child == "reference":
        figures = run_reference(weights, args.members, image, out)
    else:
        figures = run_engine(weights, config, image, out, args.child)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures))


def agreement(mask_a: str, mask_b: str) -> float:
    import SimpleITK as sitk

    a = sitk.GetArrayFromImage(sitk.ReadImage(mask_a))
    b = sitk.GetArrayFromImage(sitk.ReadImage(mask_b))
    return float((a == b).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument(
        "--routes",
        default="default,openvino-bf16",
        help=f"engine routes to run, comma-separated, of {list(ENGINE_ROUTES)} (bf16 routes are "
        f"left out on CPUs without native bf16)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_ensemble_cpu.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_workload(work, args.members)
        from pantherseg.engine.openvino_backend import native_bf16

        routes = [r for r in args.routes.split(",") if native_bf16() or not r.endswith("bf16")]
        routes = ([] if args.skip_reference else ["reference"]) + routes
        conversions = {}
        for route, step in (
            ("onnxruntime", "export-onnx"),
            ("openvino", "export-openvino"),
            ("default", "export-openvino"),
        ):
            if any(r.startswith(route) for r in routes) and step not in conversions:
                process = subprocess.run(
                    [sys.executable, __file__, "--child", step, "--work", str(work), "--members", str(args.members)],
                    capture_output=True,
                    text=True,
                )
                line = next((text for text in process.stdout.splitlines() if text.startswith("RESULT ")), None)
                if process.returncode != 0 or line is None:
                    raise SystemExit(f"{step} failed:\n{process.stderr[-3000:]}")
                conversions[step] = json.loads(line[len("RESULT ") :])
                print(f"{step}: {conversions[step]['wall_s']:.1f} s (ahead of time, not in the table)", file=sys.stderr)
        results = {}
        for route in routes:
            command = [sys.executable, __file__, "--child", route, "--work", str(work), "--members", str(args.members)]
            process = subprocess.run(command, capture_output=True, text=True)
            line = next((text for text in process.stdout.splitlines() if text.startswith("RESULT ")), None)
            if process.returncode != 0 or line is None:
                raise SystemExit(f"{route} failed:\n{process.stderr[-3000:]}")
            results[route] = json.loads(line[len("RESULT ") :])
            print(f"{route}: {results[route]['wall_s']:.1f} s", file=sys.stderr)

        import torch
        from machine import cpu_line, describe_cpu

        baseline = results.get("reference")
        cpu = describe_cpu()
        lines = [
            f"Workload: {args.members} members, organisers' Task 1 plans (PlainConvUNet, patch 48x192x224), "
            f"random weights, {SHAPE_ZYX[0]}x{SHAPE_ZYX[1]}x{SHAPE_ZYX[2]} at {SPACING_XYZ[2]}x{SPACING_XYZ[1]}x"
            f"{SPACING_XYZ[0]} mm, CPU: {cpu_line(cpu)}, torch {torch.__version__}.",
            "",
            "| route | wall s | speed-up | peak RSS MB | RSS ratio | mask agreement | split (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for route, figures in results.items():
            speed = baseline["wall_s"] / figures["wall_s"] if baseline else float("nan")
            rss = max(figures["peak_rss_mb"], figures["peak_rss_children_mb"])
            base_rss = max(baseline["peak_rss_mb"], baseline["peak_rss_children_mb"]) if baseline else float("nan")
            agree = agreement(figures["mask"], baseline["mask"]) if baseline else float("nan")
            split = ", ".join(f"{k} {v:.1f}" for k, v in figures["timings_s"].items())
            name = (
                "nnU-Net 2.8 (predictor per member + ensemble_folders)"
                if route == "reference"
                else f"pantherseg ({route}: {figures['device']})"
            )
            lines.append(
                f"| {name} | {figures['wall_s']:.1f} | {speed:.2f}x | {rss:.0f} | {rss / base_rss:.2f} | "
                f"{agree * 100:.3f}% | {split} |"
            )
        lines.append("")
        for route in (r for r in ("default", "torch-fp32") if r in results):
            t = results[route]["timings_s"]
            overhead = sum(v for k, v in t.items() if k not in ("network", "load")) / max(t["network"], 1e-9)
            lines.append(
                f"Engine overhead of {route} (preprocess, export, ensemble, read/write) = {overhead * 100:.1f}% "
                f"of its network time."
            )
        for step, figures in conversions.items():
            lines.append(
                f"Ahead of time, not in the table: `pantherseg {step}` for {args.members} member(s) took "
                f"{figures['wall_s']:.1f} s (peak RSS {figures['peak_rss_mb']:.0f} MB)."
            )
        load = os.getloadavg()
        lines.append(
            f"Machine load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            f"on {os.cpu_count()} CPUs."
        )
        table = "\n".join(lines)
        print(table)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "results": results,
                    "conversions": conversions,
                    "table": table,
                    "members": args.members,
                    "cpu": cpu,
                    "load_average": load,
                    "unix_time": time.time(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
