#!/usr/bin/env python
"""grand-challenge.org entry point of the PANTHER tumour-segmentation container.

On the platform it runs with no arguments: it reads /input/inputs.json (or the folders under
/input/images/), picks the task from the input's interface slug (abdominal-t1-mri -> t1,
abdominal-t2-mri -> t2), loads the ensemble from /opt/ml/model (or the bundled weights/ when that
is absent or empty) and writes exactly one mask to
/output/images/pancreatic-tumor-segmentation/<input stem>.mha.

Locally the same layout can live anywhere:
    python inference.py --input test/samples/t1-phantom/input --output output/
Everything else is pantherseg.segment(); this file only maps the folder layout onto it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # runnable from a checkout or /opt/app without installing the package

from pantherseg.cli import add_run_options, budget_from_flag, configure_logging, run_guarded  # noqa: E402

GRAND_CHALLENGE_INPUT = Path("/input")
GRAND_CHALLENGE_OUTPUT = Path("/output")
GRAND_CHALLENGE_MODEL = Path("/opt/ml/model")

log = logging.getLogger("pantherseg")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segment the pancreatic tumour of one case in grand-challenge's folder layout.")
    parser.add_argument("--input", type=Path, default=GRAND_CHALLENGE_INPUT,
                        help="folder holding inputs.json and images/<slug>/ (default: /input)")
    parser.add_argument("--output", type=Path, default=GRAND_CHALLENGE_OUTPUT,
                        help="folder receiving images/<output slug>/<stem>.mha (default: /output)")
    parser.add_argument("--weights", type=Path, default=GRAND_CHALLENGE_MODEL,
                        help="model folder (default: /opt/ml/model; the bundled weights/ if that is absent or empty)")
    parser.add_argument("--task", default=None, help="t1 or t2 (default: from the input's interface slug)")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="write the run report JSON here (default: <output>/run_report.json when "
                             "--output is not grand-challenge's /output; none on the platform)")
    add_run_options(parser)
    return parser.parse_args(argv)


def run_case(args: argparse.Namespace) -> int:
    from pantherseg.api import segment
    from pantherseg.config import load_config
    from pantherseg.errors import ModelError
    from pantherseg.container.grand_challenge import check_output_folder_free, check_single_output, locate_case
    from pantherseg.paths import default_config, default_weights, has_content
    from pantherseg.progress import make_progress

    config = load_config(args.config or default_config())
    case = locate_case(args.input, config, task=args.task)
    weights = args.weights if has_content(args.weights) else default_weights()
    if weights != args.weights:
        if not has_content(weights):
            raise ModelError(f"No model: {args.weights} is absent or empty and there are no bundled weights at "
                             f"{weights}; on grand-challenge, upload model.tar.gz under the algorithm's Models.")
        log.info("%s is absent or empty; using the bundled weights in %s", args.weights, weights)
    output_path = case.output_path(args.output)
    local_mode = args.output.resolve() != GRAND_CHALLENGE_OUTPUT
    report_dir = report_name = None
    if args.report is not None or local_mode:
        report_path = args.report or args.output / "run_report.json"
        report_dir, report_name = report_path.parent, report_path.name
    # Before the networks run: the platform needs exactly one image in this folder at the end.
    check_output_folder_free(output_path.parent, output_path.name)
    log.info("task %s: %s (uploaded as %s)", case.task.name, case.image, case.uploaded_name or "unknown")

    segment(
        case.image, output_dir=output_path.parent, task=case.task.name, config=config, weights=weights,
        device=args.device, report_dir=report_dir, preview_dir=report_dir if args.preview else None,
        time_budget_s=budget_from_flag(args.time_budget), tile_batch_size=args.tile_batch_size,
        precision=args.precision, backend=args.backend, progress=make_progress(args.quiet), report_name=report_name,
        budget_from_process_start=True,
    )
    check_single_output(output_path.parent)
    print(output_path)
    return 0


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    return run_guarded(run_case, args)


if __name__ == "__main__":
    raise SystemExit(run())
