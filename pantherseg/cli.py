"""``pantherseg`` command line: flags in, one API call, errors out as one line and an exit code.

Nothing heavy is imported at module level, so ``pantherseg --help`` answers at once.

Exit codes: 0 success; 1 other PantherError (e.g. the output cannot be written); 2 bad input image
or layout (also argparse usage errors); 3 bad model; 4 bad config or run setting (device, precision,
backend); 5 out of memory or time;
130 interrupted (SIGTERM or Ctrl-C; a second SIGTERM changes nothing). docs/robustness.md lists each case.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from pantherseg import __version__
from pantherseg.io.formats import OUTPUT_FORMATS
from pantherseg.options import Parser, add_run_options, integer, number

log = logging.getLogger("pantherseg")


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not when the handler was made.

    Why: a caller that runs main() in-process and swaps sys.stderr (pytest's capture, a notebook)
    would otherwise leave the root logger writing to a closed stream ("I/O operation on closed file").
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if not verbose:
        # nnU-Net and friends are chatty at INFO; their warnings still show.
        for name in ("nnunetv2", "matplotlib", "PIL", "highdicom"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_guarded(function, *args, **kwargs) -> int:
    """Call ``function``; turn PantherError/SIGTERM/Ctrl-C into one stderr line and an exit code.

    The first SIGTERM interrupts the work (exit 130, as Ctrl-C does); later ones, and any that arrive
    once the outcome is decided, are only noted, so two SIGTERMs close together still end as one line
    and exit 130 rather than a KeyboardInterrupt traceback or death by a signal. The line says which
    outputs were completed (mask and report both written) before the interruption, if any.
    """
    from pantherseg.errors import PantherError, ResourceError

    terminated = []
    deciding = []

    def on_signal(signum, frame):
        # Some libraries wrap whatever an import raises (pydoc.locate in nnU-Net's network builder
        # turns it into ErrorDuringImport), so the flag, not the exception type, says what happened.
        terminated.append(signum)
        if len(terminated) == 1 and not deciding:
            raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = function(*args, **kwargs)
        deciding.append(True)
    except (Exception, KeyboardInterrupt) as error:
        deciding.append(True)
        if terminated or isinstance(error, KeyboardInterrupt):
            print(f"pantherseg error: {_interrupted_message()}", file=sys.stderr)
            return 130
        if isinstance(error, PantherError):
            if error.__cause__ is not None:  # with -v, what the library said (debug: hidden otherwise)
                log.debug("%s was caused by:", type(error).__name__, exc_info=error.__cause__)
            print(f"pantherseg error: {error}", file=sys.stderr)
            return error.exit_code
        if isinstance(error, MemoryError):
            print("pantherseg error: out of memory; try a machine with more RAM or a smaller image.", file=sys.stderr)
            return ResourceError.exit_code
        raise
    return int(result or 0)


def _interrupted_message() -> str:
    from pantherseg.run_state import cohort_summary, completed_outputs

    cohort = cohort_summary()
    if cohort is not None:  # Ray workers write in other processes: the cohort report knows what finished
        return f"interrupted: {cohort}."
    done = completed_outputs()
    if not done:
        return "interrupted before the mask was complete; no mask was written."
    return (
        f"interrupted after {len(done)} complete output(s) with their reports (last: {done[-1]}); "
        f"nothing partial was left."
    )


def _predict(args: argparse.Namespace) -> int:
    from pantherseg.cohort.options import wants_cohort

    if wants_cohort(args):
        return _predict_cohort(args)
    from pantherseg.api import segment
    from pantherseg.progress import make_progress

    options = _run_options(args, report_dir=None if args.no_report else args.output, stop_on_error=False)
    results = segment(args.input, output_dir=args.output, options=options, progress=make_progress(args.quiet))
    failed = [r for r in results if r.error]
    for result in results:
        if result.output is not None:
            print(result.output)
    if failed:
        print(
            f"pantherseg error: {len(failed)} of {len(results)} case(s) failed: "
            + "; ".join(f"{r.input.name}: {r.error}" for r in failed),
            file=sys.stderr,
        )
        return 1
    return 0


def _run_options(args: argparse.Namespace, **fields):
    """The run options ``pantherseg predict``'s flags give, in both routes."""
    from pantherseg.options import RunOptions

    return RunOptions.from_args(
        args,
        task=args.task,
        weights=args.weights,
        member_outputs_dir=args.member_outputs,
        preview_dir=args.output if args.preview else None,
        output_formats=args.output_format,
        series_uid=args.series_uid,
        roi_name=args.roi_name,
        **fields,
    )


def _predict_cohort(args: argparse.Namespace) -> int:
    """``pantherseg predict`` in the cohort route: prints each mask path; exit 1 if any case failed."""
    from pantherseg.cohort.cases import check_part
    from pantherseg.cohort.progress import make_cohort_progress
    from pantherseg.cohort.report import report_stem
    from pantherseg.cohort.run import run_cohort
    from pantherseg.errors import InputError

    if args.no_report:
        raise InputError("--no-report cannot be used in the cohort route: the run reports are what resuming reads.")
    if args.part_id and args.num_parts is None:
        raise InputError("--part-id needs --num-parts.")
    num_parts = args.num_parts or 1
    check_part(num_parts, args.part_id)  # before the inputs are searched
    ray_options = None
    if args.ray is not None:
        from pantherseg.cohort.ray_runner import RayOptions

        ray_options = RayOptions(
            address=None if args.ray == "local" else args.ray,
            workers=args.ray_workers,
            cpus_per_worker=args.ray_cpus_per_worker,
            max_retries=args.max_retries,
            gpus_per_worker=args.ray_gpus_per_worker,
        )
    if not args.verbose:
        # One line per case comes from the cohort's progress; the per-case detail is in the reports.
        logging.getLogger("pantherseg.api").setLevel(logging.WARNING)
    report = run_cohort(
        args.input,
        output_dir=args.output,
        options=_run_options(args),
        num_parts=num_parts,
        part_id=args.part_id,
        resume=not args.overwrite,
        ray=ray_options,
        progress=make_cohort_progress(args.quiet),
    )
    for row in sorted(report.rows, key=lambda r: r.name):
        if row.output is not None:
            print(row.output)
    stem = report_stem(args.output, (args.part_id, num_parts))
    print(f"{report.summary()}; report: {stem}.csv", file=sys.stderr)
    failed = report.failed
    if failed:
        print(
            f"pantherseg error: {len(failed)} of {len(report.rows)} case(s) failed (see {stem}.csv): "
            + "; ".join(f"{row.name}: {row.error}" for row in failed[:3])
            + ("; ..." if len(failed) > 3 else ""),
            file=sys.stderr,
        )
        return 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pantherseg.evaluation.folders import evaluate, format_table

    result = evaluate(args.pred, args.gt, xyz_spacing_order=args.xyz_spacing, json_path=args.json, csv_path=args.csv)
    print(format_table(result))
    return 0


def _select(args: argparse.Namespace) -> int:
    import json

    from pantherseg.config import load_config
    from pantherseg.errors import InputError
    from pantherseg.evaluation.select_files import (
        costs_from_json,
        costs_from_reports,
        load_validation_cases,
        selected_config,
    )
    from pantherseg.evaluation.selection import (
        format_comparison,
        ranking_objective,
        select_ensemble,
        weighted_objective,
    )
    from pantherseg.paths import default_config

    base = load_config(args.config or default_config())
    members = [m.name for m in base.task(args.task).members]
    cases = load_validation_cases(args.member_outputs, args.gt, members, base.task(args.task).tumor_label)
    if args.costs is not None:
        costs = costs_from_json(args.costs, members)
    else:
        costs = costs_from_reports(args.reports or args.member_outputs, members)
    budget = args.budget if args.budget is not None else base.time_budget_s - base.export_reserve_s
    objective = ranking_objective
    if args.objective:
        try:
            weights = {k: float(v) for k, v in (item.split("=") for item in args.objective.split(","))}
        except ValueError:
            raise InputError(f"--objective must look like dice=1,hd95=0.5, found '{args.objective}'.") from None
        objective = weighted_objective(weights)
    result = select_ensemble(cases, costs, budget, objective=objective, max_steps=args.max_steps)
    args.out.write_text(json.dumps(selected_config(base, args.task, result), indent=2) + "\n")
    print(f"{len(cases)} validation case(s), budget {budget:.1f} s per case")
    print(format_comparison(result))
    print(f"wrote {args.out}")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from pantherseg.config import load_config
    from pantherseg.engine.members import load_members
    from pantherseg.engine.onnx_backend import export_member, onnx_path
    from pantherseg.paths import default_config, default_weights

    config = load_config(args.config or default_config())
    tasks = [args.task] if args.task else list(config.tasks)
    for task in tasks:
        for member in load_members(config.task(task), args.weights or default_weights()):
            print(export_member(member, onnx_path(member)))
    return 0


def _export_openvino(args: argparse.Namespace) -> int:
    from pantherseg.config import load_config
    from pantherseg.engine.members import load_members
    from pantherseg.engine.openvino_backend import INSTALL_HINT, convert_member, ir_path, is_available
    from pantherseg.errors import ResourceError
    from pantherseg.paths import default_config, default_weights

    if not is_available():
        raise ResourceError(f"openvino is not installed: {INSTALL_HINT}.")
    config = load_config(args.config or default_config())
    tasks = [args.task] if args.task else list(config.tasks)
    for task in tasks:
        for member in load_members(config.task(task), args.weights or default_weights()):
            print(convert_member(member, ir_path(member)))
    return 0


def _install_weights(args: argparse.Namespace) -> int:
    from pantherseg.container.install_weights import config_hint, format_report, install_archives, shipped_presets

    report = install_archives(args.archives, args.to, replace=args.replace)
    print("\n".join(format_report(report) + config_hint(report, shipped_presets())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pantherseg",
        description="PANTHER pancreatic tumour segmentation with a heterogeneous nnU-Net v2 ensemble.",
    )
    parser.add_argument("--version", action="version", version=f"pantherseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="segment a file or a folder of .mha/.nii.gz cases (one model load for all)",
        description="Write one uint8 tumour mask <case>.mha per input image, plus <case>.report.json.",
    )
    predict.add_argument(
        "-i",
        "--input",
        type=Path,
        nargs="+",
        required=True,
        help="image file(s) or folder(s) of images (.mha, .nii.gz, .nii, .mhd, .nrrd), or a "
        "folder of DICOM files (one case; see --series-uid)",
    )
    predict.add_argument("-o", "--output", type=Path, required=True, help="output folder for the masks")
    predict.add_argument(
        "--task", default="t1", help="task of the config: t1 (T1 diagnostic MRI) or t2 (T2 MR-Linac) (default: t1)"
    )
    predict.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights root the config's model folders are relative to (default: weights/)",
    )
    predict.add_argument(
        "--member-outputs",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each member's probabilities (one component per class) to "
        "DIR/<member>/<case>.mha and its own mask to DIR/<member>/masks/ "
        "(input for 'pantherseg select')",
    )
    predict.add_argument("--no-report", action="store_true", help="do not write <case>.report.json")
    predict.add_argument(
        "--output-format",
        nargs="+",
        default=["mha"],
        metavar="FORMAT",
        choices=OUTPUT_FORMATS,
        help="one or more of mha, nii.gz, dicom-seg, rtstruct, sr (these three need a DICOM input "
        "folder and pantherseg[dicom]; sr, the tumour volume as a TID 1500 report, needs "
        "dicom-seg too; see docs/dicom.md), uncertainty (beside a mask: "
        "<case>.uncertainty.mha, float32 per-voxel entropy; docs/quality.md) (default: mha)",
    )
    predict.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="the SeriesInstanceUID to segment when a DICOM folder holds several series",
    )
    predict.add_argument(
        "--roi-name", default=None, metavar="NAME", help="the RTSTRUCT's ROI name (default: Pancreatic tumour)"
    )
    add_run_options(predict)
    from pantherseg.cohort.options import add_cohort_options

    add_cohort_options(predict)
    predict.set_defaults(handler=_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="challenge metrics (Dice, surface Dice@5mm, HD95, MASD, volume RMSE) of masks vs truth",
        description="Compare prediction folder(s) with a ground-truth folder using the PANTHER challenge metrics.",
    )
    evaluate.add_argument(
        "--pred", type=Path, nargs="+", required=True, help="prediction folder(s); several give a leaderboard"
    )
    evaluate.add_argument("--gt", type=Path, required=True, help="ground-truth folder")
    evaluate.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    evaluate.add_argument("--csv", type=Path, default=None, help="write per-case figures to this CSV file")
    evaluate.add_argument(
        "--xyz-spacing",
        action="store_true",
        help="reproduce the public script's defect: pass SimpleITK (x,y,z) spacing "
        "against (z,y,x) arrays, to compare with published numbers",
    )
    evaluate.set_defaults(handler=_evaluate, quiet=False, verbose=False)

    select = commands.add_parser(
        "select",
        help="choose members and weights on labelled cases within a time budget; writes a config",
        description="Greedy forward ensemble selection with replacement (Caruana et al. 2004) on per-member "
        "probability maps from 'pantherseg predict --member-outputs', scored with the challenge "
        "metrics; writes an ensemble_config.json and prints the chosen ensemble against every "
        "single member and against all members.",
    )
    select.add_argument(
        "--member-outputs",
        type=Path,
        required=True,
        metavar="DIR",
        help="DIR/<member>/<case>.mha probability maps (per class, or tumour only)",
    )
    select.add_argument("--gt", type=Path, required=True, help="ground-truth tumour masks, <case>.mha")
    select.add_argument("--out", type=Path, required=True, help="where to write the new ensemble_config.json")
    select.add_argument("--task", default="t1", help="task whose members are chosen from (default: t1)")
    select.add_argument(
        "--config",
        type=Path,
        default=None,
        help="base config: its members are the candidates (default: the shipped one)",
    )
    select.add_argument(
        "--reports",
        type=Path,
        default=None,
        metavar="DIR",
        help="run reports (<case>.report.json) giving each member's seconds per case "
        "(default: look in --member-outputs)",
    )
    select.add_argument(
        "--costs",
        type=Path,
        default=None,
        metavar="JSON",
        help="member -> seconds per case, e.g. measured on the target GPU (overrides --reports)",
    )
    select.add_argument(
        "--budget",
        type=number(above=True),
        default=None,
        metavar="SECONDS",
        help="seconds per case for all chosen members together (default: the config's "
        "time_budget_s minus export_reserve_s)",
    )
    select.add_argument(
        "--objective",
        default=None,
        metavar="METRIC=W,...",
        help="weighted objective instead of the challenge ranking, e.g. dice=1,hd95=0.5 "
        "(metrics: dice, surface_dice, hd95, masd, volume_rmse)",
    )
    select.add_argument("--max-steps", type=integer(1, 1000), default=10, help="members added at most (default: 10)")
    select.set_defaults(handler=_select, quiet=False, verbose=False)

    export_onnx = commands.add_parser(
        "export-onnx",
        help="export every member's network to ONNX next to its checkpoint (for --backend onnxruntime)",
        description="Writes fold_N/<checkpoint>.onnx (patch-size input, dynamic batch, the checkpoint's SHA-256 in "
        "its metadata) for each member, so the model tarball can carry them.",
    )
    export_onnx.add_argument("--task", default=None, help="only this task (default: all tasks of the config)")
    export_onnx.add_argument("--config", type=Path, default=None, help="ensemble_config.json (default: shipped)")
    export_onnx.add_argument("--weights", type=Path, default=None, help="weights root (default: weights/)")
    export_onnx.set_defaults(handler=_export_onnx, quiet=False, verbose=False)

    export_openvino = commands.add_parser(
        "export-openvino",
        help="convert every member's network to OpenVINO IR next to its checkpoint (for --backend openvino)",
        description="Writes fold_N/<checkpoint>.openvino.xml and .bin (float32 weights, patch-size input, dynamic "
        "batch, the checkpoint's SHA-256 in the model's runtime info) for each member, so the model "
        "tarball can carry them and no case spends its time budget converting.",
    )
    export_openvino.add_argument("--task", default=None, help="only this task (default: all tasks of the config)")
    export_openvino.add_argument("--config", type=Path, default=None, help="ensemble_config.json (default: shipped)")
    export_openvino.add_argument("--weights", type=Path, default=None, help="weights root (default: weights/)")
    export_openvino.set_defaults(handler=_export_openvino, quiet=False, verbose=False)

    install = commands.add_parser(
        "install-weights",
        help="install downloaded nnU-Net model archives (.zip, .tar.gz) into a weights folder",
        description="Checks every archive (names, links, sizes, CRCs, nnU-Net's pretrained-model layout) before "
        "writing anything, extracts beside the target and moves the model folders in only when all "
        "archives extracted cleanly; prints the folders, folds, checkpoints with sizes and SHA-256, "
        "and the shipped preset to use.",
    )
    install.add_argument("archives", type=Path, nargs="+", metavar="ARCHIVE", help="the downloaded archive(s)")
    install.add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="WEIGHTS_ROOT",
        help="the weights folder (created if absent); pass it as --weights when predicting",
    )
    install.add_argument("--replace", action="store_true", help="replace model folders the target already holds")
    install.set_defaults(handler=_install_weights, quiet=False, verbose=False)
    from pantherseg.node.commands import add_node_commands  # serve-dicom, node-status (standard library only)

    add_node_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    return run_guarded(args.handler, args)


if __name__ == "__main__":
    raise SystemExit(main())
