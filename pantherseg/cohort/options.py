"""The cohort flags of ``pantherseg predict`` and the handler they select (argparse only at import)."""

from __future__ import annotations

import argparse
import logging
import sys


def add_cohort_options(parser: argparse.ArgumentParser) -> None:
    from pantherseg.options import integer, number

    group = parser.add_argument_group(
        "cohorts", "Any of --ray, --num-parts or --resume selects the cohort route: folders are searched "
                   "recursively, finished cases (same config and weights) are skipped, a bad case is a row of "
                   "OUT/cohort_report.csv/.json and the others go on. See docs/cohort.md.")
    group.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run on Ray (pip install 'pantherseg[ray]'): a local Ray instance with this machine's "
                            "CPUs and GPUs, or the cluster at ADDRESS ('auto', 'ray://HOST:10001')")
    group.add_argument("--ray-workers", type=integer(1), default=None, metavar="N",
                       help="Ray workers, each loading the ensemble once (default: one per GPU; on CPU-only "
                            "clusters, CPUs / --ray-cpus-per-worker)")
    group.add_argument("--ray-cpus-per-worker", type=number(above=True, maximum=4096), default=None, metavar="C",
                       help="CPUs each Ray worker reserves (its torch or OpenVINO threads on CPU nodes) (default: 4 on CPU "
                            "nodes, the node's CPUs per GPU on GPU nodes)")
    group.add_argument("--ray-gpus-per-worker", type=number(maximum=64), default=1.0, metavar="G",
                       help="GPU share of each Ray worker (default: 1); 0.5 puts two workers on each GPU so one "
                            "worker's reading and preprocessing overlap the other's network (needs the GPU memory "
                            "of two ensembles)")
    group.add_argument("--max-retries", type=integer(0, 1000), default=2, metavar="N",
                       help="times a case is retried after its Ray worker died (killed, out of memory) before "
                            "it is reported as failed (default: 2)")
    group.add_argument("--num-parts", type=integer(1, 1_000_000), default=None, metavar="N",
                       help="split the sorted case list into N parts (round-robin) and run only --part-id: "
                            "N independent processes (Slurm array, Kubernetes indexed job) cover it exactly once")
    group.add_argument("--part-id", type=integer(0), default=0, metavar="K", help="this process's part, 0..N-1 (default: 0)")
    group.add_argument("--resume", action="store_true",
                       help="cohort route in this process without splitting (the same as --num-parts 1)")
    group.add_argument("--overwrite", action="store_true",
                       help="in the cohort route, run finished cases again instead of skipping them")


def wants_cohort(args: argparse.Namespace) -> bool:
    return args.ray is not None or args.num_parts is not None or bool(args.part_id) or args.resume


def predict_cohort(args: argparse.Namespace) -> int:
    """``pantherseg predict`` in the cohort route: prints each mask path; exit 1 if any case failed."""
    from pantherseg.cohort.progress import make_cohort_progress
    from pantherseg.cohort.report import report_stem
    from pantherseg.cohort.run import run_cohort
    from pantherseg.errors import InputError
    from pantherseg.options import RunOptions

    if args.member_outputs is not None or args.preview:
        raise InputError("--member-outputs and --preview are not available in the cohort route "
                         "(--ray, --num-parts, --resume); run plain 'pantherseg predict' for them.")
    if list(getattr(args, "output_format", None) or ["mha"]) != ["mha"] or getattr(args, "series_uid", None):
        raise InputError("The cohort route (--ray, --num-parts, --resume) writes .mha masks from image files; "
                         "--output-format and --series-uid (DICOM) need plain 'pantherseg predict'.")
    if args.no_report:
        raise InputError("--no-report cannot be used in the cohort route: the run reports are what resuming reads.")
    if args.part_id and args.num_parts is None:
        raise InputError("--part-id needs --num-parts.")
    if args.num_parts is not None and not 0 <= args.part_id < args.num_parts:
        raise InputError(f"--part-id must be in [0, {args.num_parts - 1}] for --num-parts {args.num_parts}, "
                         f"found {args.part_id}.")
    ray_options = None
    if args.ray is not None:
        from pantherseg.cohort.ray_runner import RayOptions

        if args.max_retries < 0:
            raise InputError(f"--max-retries must be 0 or more, found {args.max_retries}.")
        if args.ray_workers is not None and args.ray_workers < 1:
            raise InputError(f"--ray-workers must be at least 1, found {args.ray_workers}.")
        if args.ray_cpus_per_worker is not None and not args.ray_cpus_per_worker > 0:
            raise InputError(f"--ray-cpus-per-worker must be more than 0, found {args.ray_cpus_per_worker}.")
        ray_options = RayOptions(address=None if args.ray == "local" else args.ray, workers=args.ray_workers,
                                 cpus_per_worker=args.ray_cpus_per_worker, max_retries=args.max_retries,
                                 gpus_per_worker=args.ray_gpus_per_worker)
    if not args.verbose:
        # One line per case comes from the cohort's progress; the per-case detail is in the reports.
        logging.getLogger("pantherseg.api").setLevel(logging.WARNING)
    num_parts = args.num_parts or 1
    options = RunOptions.from_args(args, task=args.task, weights=args.weights)
    report = run_cohort(
        args.input, output_dir=args.output, task=options.task, config=options.config, weights=options.weights,
        device=options.device, tile_batch_size=options.tile_batch_size, precision=options.precision,
        backend=options.backend, time_budget_s=options.time_budget_s, num_parts=num_parts, part_id=args.part_id,
        resume=not args.overwrite, ray=ray_options, progress=make_cohort_progress(args.quiet),
    )
    for row in sorted(report.rows, key=lambda r: r.name):
        if row.output is not None:
            print(row.output)
    stem = report_stem(args.output, (args.part_id, num_parts))
    print(f"{report.summary()}; report: {stem}.csv", file=sys.stderr)
    failed = report.failed
    if failed:
        print(f"pantherseg error: {len(failed)} of {len(report.rows)} case(s) failed (see {stem}.csv): "
              + "; ".join(f"{row.name}: {row.error}" for row in failed[:3]) + ("; ..." if len(failed) > 3 else ""),
              file=sys.stderr)
        return 1
    return 0
