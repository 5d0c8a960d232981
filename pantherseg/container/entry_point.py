"""The container's entry point: one grand-challenge job, from ``/input`` to one mask in ``/output``.

``inference.py`` at the repository root (what the image runs, with no arguments) only calls
:func:`run`; the logic is here so that it is tested in process. On the platform it reads
``/input/inputs.json`` (or the folders under ``/input/images/``), picks the task from the input's
interface slug, loads the ensemble from ``/opt/ml/model`` (or the bundled ``weights/`` when that is
absent or empty) and writes exactly one mask to ``/output/images/<output slug>/<input stem>.mha``.

The config travels with the weights: an ``ensemble_config.json`` at the top of the model folder (the
uploaded model tarball) is preferred to the image's, so uploading a new model tarball switches models
without a new image. ``--config`` wins over both; the log says which one was used and why.
Locally the same layout can live anywhere (``--input``, ``--output``). Everything else is
:func:`pantherseg.api.segment`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pantherseg.cli import configure_logging, run_guarded
from pantherseg.options import Parser, RunOptions, add_run_options

GRAND_CHALLENGE_INPUT = Path("/input")
GRAND_CHALLENGE_OUTPUT = Path("/output")
GRAND_CHALLENGE_MODEL = Path("/opt/ml/model")
REPORT_NAME = "run_report.json"
MODEL_CONFIG_NAME = "ensemble_config.json"  # carried by a model tarball, beside its model folders

log = logging.getLogger("pantherseg")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="inference.py", description="Segment the pancreatic tumour of one case in grand-challenge's folder layout."
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=GRAND_CHALLENGE_INPUT,
        help="folder holding inputs.json and images/<slug>/ (default: /input)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=GRAND_CHALLENGE_OUTPUT,
        help="folder receiving images/<output slug>/<stem>.mha (default: /output)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=GRAND_CHALLENGE_MODEL,
        help="model folder (default: /opt/ml/model; the bundled weights/ if that is absent or empty)",
    )
    parser.add_argument("--task", default=None, help="t1 or t2 (default: from the input's interface slug)")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"write the run report JSON here (default: <output>/{REPORT_NAME} when "
        "--output is not grand-challenge's /output; none on the platform)",
    )
    add_run_options(parser)
    return parser.parse_args(argv)


def report_path(args: argparse.Namespace) -> Path | None:
    """Where the run report goes: ``--report``; else ``<output>/run_report.json`` locally; else none
    (on the platform ``/output`` must hold the one mask and nothing the job did not promise)."""
    if args.report is not None:
        return args.report
    if args.output.resolve() != GRAND_CHALLENGE_OUTPUT:
        return args.output / REPORT_NAME
    return None


def run_case(args: argparse.Namespace) -> int:
    from pantherseg.api import segment
    from pantherseg.config import load_config
    from pantherseg.container.grand_challenge import check_output_folder_free, check_single_output, locate_case
    from pantherseg.paths import default_config, default_weights
    from pantherseg.progress import make_progress

    weights = _weights(args.weights, default_weights())
    config = load_config(config_path(args.config, weights, default_config()))
    case = locate_case(args.input, config, task=args.task)
    output_path = case.output_path(args.output)
    report = report_path(args)
    report_dir = None if report is None else report.parent
    if args.preview and report_dir is None:
        log.warning(
            "--preview: no preview is written into grand-challenge's /output (it would be an output the "
            "job does not declare); pass --report FILE to have it written beside the report"
        )
    # Before the networks run: the platform needs exactly one image in this folder at the end.
    check_output_folder_free(output_path.parent, output_path.name)
    log.info("task %s: %s (uploaded as %s)", case.task.name, case.image, case.uploaded_name or "unknown")

    options = RunOptions.from_args(
        args,
        task=case.task.name,
        config=config,
        weights=weights,
        report_dir=report_dir,
        report_name=None if report is None else report.name,
        preview_dir=report_dir if args.preview else None,
    )
    segment(case.image, output_dir=output_path.parent, options=options, progress=make_progress(args.quiet))
    check_single_output(output_path.parent)
    print(output_path)
    return 0


def config_path(flag: Path | None, weights: Path, image_config: Path) -> Path:
    """``--config`` if given; else the model folder's own ensemble_config.json; else the image's. Logged."""
    if flag is not None:
        log.info("ensemble config: %s (--config)", flag)
        return flag
    carried = weights / MODEL_CONFIG_NAME
    if carried.is_file():
        log.info("ensemble config: %s, carried by the model (preferred to the image's %s)", carried, image_config)
        return carried
    log.info(
        "ensemble config: %s, the image's (the model folder %s carries no %s)", image_config, weights, MODEL_CONFIG_NAME
    )
    return image_config


def _weights(requested: Path, bundled: Path) -> Path:
    """The uploaded model folder, or the image's own weights/ when that is absent or empty."""
    from pantherseg.errors import ModelError
    from pantherseg.paths import has_content

    if has_content(requested) or requested == bundled:
        return requested
    if not has_content(bundled):
        raise ModelError(
            f"No model: {requested} is absent or empty and there are no bundled weights at "
            f"{bundled}; on grand-challenge, upload model.tar.gz under the algorithm's Models."
        )
    log.info("%s is absent or empty; using the bundled weights in %s", requested, bundled)
    return bundled


def run(argv: list[str] | None = None) -> int:
    """``inference.py [flags]``: parse, log, run one case; errors become one stderr line and an exit code."""
    args = parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    return run_guarded(run_case, args)
