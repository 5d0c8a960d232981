"""Trained-member evidence for the backend and precision defaults: the demo zoo against nnU-Net's route.

For each task, the shipped ensemble (``ensemble_config.json``, trained members in ``weights/``) segments
the bundled sample(s) through ``pantherseg.segment`` with each engine route (torch fp32 / bf16,
OpenVINO fp32 / bf16, ...), and nnU-Net 2.8's own route (``nnUNetPredictor`` per member, probabilities
to .npz, ``ensemble_folders``) segments the same images; the table gives each route's tumour-mask
agreement with nnU-Net's, and its network seconds. Random weights (many near-ties) are a poor judge
of reduced precision; trained members are the evidence docs/speed.md asks for before a reduced
precision may become a default.

    python benchmarks/bench_zoo_agreement.py                     # both tasks, all routes, ~10 min on 2 cores
    python benchmarks/bench_zoo_agreement.py --tasks t2 --routes openvino-fp32
    python benchmarks/bench_zoo_agreement.py --device cuda --routes torch-fp16,torch-fp32   # on a GPU

With ``--device cuda`` nnU-Net's route runs on the GPU too, as nnU-Net runs there by default (everything
on the device, fp16 autocast).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SAMPLES = {"t1": ["t1-phantom", "t1-amos_0540"], "t2": ["t2-phantom"]}
ROUTES = {
    "torch-fp32": ("torch", "fp32"),
    "torch-bf16": ("torch", "bf16"),
    "torch-fp16": ("torch", "fp16"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "onnxruntime": ("onnxruntime", "fp32"),
}


def sample_images(task: str) -> list[Path]:
    images = []
    for sample in SAMPLES[task]:
        images.extend(sorted((ROOT / "test" / "samples" / sample / "input" / "images").glob("*/*.mha")))
    return images


def reference_masks(task: str, images: list[Path], work: Path, device: str = "cpu") -> dict[str, "object"]:
    """nnU-Net's own route for the shipped ensemble of ``task``: {image name: (z, y, x) uint8 mask}."""
    from pantherseg.config import load_config
    from pantherseg.paths import default_config, default_weights

    from nnunet_reference import reference_tumour_mask

    spec = load_config(default_config()).task(task)
    members = []
    for m in spec.members:
        if m.weight != int(m.weight):
            raise SystemExit(f"nnU-Net's route repeats folders for weights; {m.name} has weight {m.weight}")
        members.append((default_weights() / m.model, m.fold, m.checkpoint, int(m.weight)))
    return {
        image.name: reference_tumour_mask(
            members, image, work / image.stem, tumor_label=spec.tumor_label, device=device
        )
        for image in images
    }


def route_masks(task: str, images: list[Path], work: Path, route: str, device: str = "cpu") -> tuple[dict, float]:
    """{image name: mask} of one engine route, and its network seconds summed over the images."""
    import SimpleITK as sitk

    from pantherseg.api import segment

    backend, precision = ROUTES[route]
    results = segment(
        images,
        output_dir=work / route,
        task=task,
        device=device,
        backend=backend,
        precision=precision,
        time_budget_s=float("inf"),
    )
    masks = {r.input.name: sitk.GetArrayFromImage(sitk.ReadImage(str(r.output))) for r in results}
    return masks, sum(r.report.timings_s["network"] for r in results)


def agreement(masks: dict, reference: dict) -> float:
    import numpy as np

    same = sum(int((masks[k] == reference[k]).sum()) for k in reference)
    return same / sum(int(np.prod(v.shape)) for v in reference.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="t1,t2")
    parser.add_argument(
        "--routes",
        default="torch-fp32,torch-bf16,openvino-fp32,openvino-bf16",
        help=f"comma-separated, of {list(ROUTES)}",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU routes (torch-fp16, torch-fp32)")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "zoo_agreement_cpu.json",
        help="where the figures go (the shipped ones: zoo_agreement_cpu_t1.json, _t2.json)",
    )
    args = parser.parse_args()
    import torch

    from pantherseg.engine.openvino_backend import native_bf16

    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for task in args.tasks.split(","):
            images = sample_images(task)
            started = time.perf_counter()
            reference = reference_masks(task, images, work / f"reference-{task}", args.device)
            raw[f"{task}/reference"] = {
                "wall_s": time.perf_counter() - started,
                "tumour_voxels": int(sum(int(m.sum()) for m in reference.values())),
            }
            for route in args.routes.split(","):
                if route.endswith("bf16") and args.device == "cpu" and not native_bf16():
                    rows.append(f"| {task} | {route} | - | - | not run: this CPU has no native bf16 |")
                    continue
                masks, network_s = route_masks(task, images, work / task, route, args.device)
                share = agreement(masks, reference)
                raw[f"{task}/{route}"] = {
                    "agreement": share,
                    "network_s": network_s,
                    "tumour_voxels": int(sum(int(m.sum()) for m in masks.values())),
                }
                rows.append(
                    f"| {task} | {route} | {share * 100:.4f}% | {network_s:.1f} | "
                    f"{raw[f'{task}/{route}']['tumour_voxels']} vs {raw[f'{task}/reference']['tumour_voxels']} |"
                )
                print(rows[-1], file=sys.stderr)
    where = (
        torch.cuda.get_device_name(torch.device(args.device))
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    header = [
        f"Demo zoo (trained members), shipped ensembles, samples {SAMPLES}; {where} (nnU-Net's route on "
        f"the same device), torch {torch.__version__}.",
        "",
        "| task | route | mask agreement with nnU-Net's route | network s | tumour voxels (route vs nnU-Net) |",
        "|---|---|---|---|---|",
    ]
    table = "\n".join(header + rows)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": raw, "table": table, "unix_time": time.time()}, indent=2))


if __name__ == "__main__":
    main()
