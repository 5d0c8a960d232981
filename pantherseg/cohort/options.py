"""The cohort flags of ``pantherseg predict`` and whether they select the cohort route (argparse only)."""

from __future__ import annotations

import argparse


def add_cohort_options(parser: argparse.ArgumentParser) -> None:
    from pantherseg.options import integer, number

    group = parser.add_argument_group(
        "cohorts",
        "Any of --ray, --num-parts or --resume selects the cohort route: folders are searched "
        "recursively, finished cases (same config and weights) are skipped, a bad case is a row of "
        "OUT/cohort_report.csv/.json and the others go on. See docs/cohort.md.",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray (pip install 'pantherseg[ray]'): a local Ray instance with this machine's "
        "CPUs and GPUs, or the cluster at ADDRESS ('auto', 'ray://HOST:10001')",
    )
    group.add_argument(
        "--ray-workers",
        type=integer(1),
        default=None,
        metavar="N",
        help="Ray workers, each loading the ensemble once (default: one per GPU; on CPU-only "
        "clusters, CPUs / --ray-cpus-per-worker)",
    )
    group.add_argument(
        "--ray-cpus-per-worker",
        type=number(above=True, maximum=4096),
        default=None,
        metavar="C",
        help="CPUs each Ray worker reserves (its torch or OpenVINO threads on CPU nodes) (default: 4 on CPU "
        "nodes, the node's CPUs per GPU on GPU nodes)",
    )
    group.add_argument(
        "--ray-gpus-per-worker",
        type=number(maximum=64),
        default=1.0,
        metavar="G",
        help="GPU share of each Ray worker (default: 1); 0.5 puts two workers on each GPU so one "
        "worker's reading and preprocessing overlap the other's network (needs the GPU memory "
        "of two ensembles)",
    )
    group.add_argument(
        "--max-retries",
        type=integer(0, 1000),
        default=2,
        metavar="N",
        help="times a case is retried after its Ray worker died (killed, out of memory) before "
        "it is reported as failed (default: 2)",
    )
    group.add_argument(
        "--num-parts",
        type=integer(1, 1_000_000),
        default=None,
        metavar="N",
        help="split the sorted case list into N parts (round-robin) and run only --part-id: "
        "N independent processes (Slurm array, Kubernetes indexed job) cover it exactly once",
    )
    group.add_argument(
        "--part-id", type=integer(0), default=0, metavar="K", help="this process's part, 0..N-1 (default: 0)"
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="cohort route in this process without splitting (the same as --num-parts 1)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="in the cohort route, run finished cases again instead of skipping them",
    )


def wants_cohort(args: argparse.Namespace) -> bool:
    return args.ray is not None or args.num_parts is not None or bool(args.part_id) or args.resume
