"""The DICOM node in a row of series: latency from the last instance stored to the results in the PACS, and memory.

Real parts on loopback: Debian's Orthanc (the PACS, throw-away config and storage, as the tests start it),
``pantherseg serve-dicom`` as its own process with the shipped demo zoo (Task 2, the first ``--members``
members) on the CPU, and dcmtk's ``storescu`` as the scanner. The series are Task 2 phantoms (seeds 1000, ...;
64 x 56 x 25 voxels at 2.5 x 2.5 x 5 mm, as tests/node use), written before the clock starts.

Per series, one after another: storescu sends it (one association; the release completes the series), and the
latency runs from storescu's exit (the last instance stored and acknowledged) until Orthanc holds every result
(polled every 0.1 s over its REST API). After each series the resident memory (VmRSS) of the node's main process
and of its worker process is read from /proc. Flat means no leak: the script reports the first, last and largest
figure and the least-squares slope over the second half of the run, in MiB per 100 series.

    python benchmarks/bench_dicom_node.py --series 5                # the whole Task 2 zoo: latency
    python benchmarks/bench_dicom_node.py --series 50 --members 1   # memory over 50 series in a row

Writes benchmarks/results/bench_dicom_node_<members>m_<series>s.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "node"))


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_100(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index, times 100."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return 100 * num / den


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--members", type=int, default=5, help="the first N members of the zoo's Task 2 ensemble")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from node_harness import NodeProcess, free_port, phantom_series, storescu
    from orthanc import OrthancServer

    work = Path(tempfile.mkdtemp(prefix="bench-dicom-node-"))
    config = json.loads((ROOT / "ensemble_config.json").read_text())
    config["tasks"]["t2"]["members"] = config["tasks"]["t2"]["members"][: args.members]
    config_path = work / "ensemble_config.json"
    config_path.write_text(json.dumps(config))
    folders = []
    for index in range(args.series):
        folder = work / "series" / f"{index:03d}"
        phantom_series(folder, seed=1000 + index)
        folders.append(folder)

    pacs = OrthancServer(work / "orthanc").start()
    node = NodeProcess(
        work / "spool",
        free_port(),
        [
            "--allow-ae",
            "SCANNER",
            "--send-to",
            f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
            "--task",
            "t2",
            "--weights",
            str(ROOT / "weights"),
            "--config",
            str(config_path),
            "--series-timeout",
            "30",
            "--outputs",
            "dicom-seg",
            "rtstruct",
        ],
        work / "node.log",
    )
    rows = []
    try:
        started = time.monotonic()
        node.start()
        start_s = time.monotonic() - started
        status = json.loads((node.spool / "node.json").read_text())
        expected = 0
        for index, folder in enumerate(folders):
            sent = storescu(node.port, [folder])
            if sent.returncode != 0:
                raise SystemExit(f"storescu failed on series {index}: {sent.stderr.strip()}")
            stored_at = time.monotonic()
            expected += 2
            while len(pacs.instances()) < expected:
                if time.monotonic() - stored_at > 600:
                    raise SystemExit(f"series {index}: no results in Orthanc after 600 s; {node.log_tail()}")
                time.sleep(0.1)
            latency = time.monotonic() - stored_at
            rows.append(
                {
                    "series": index,
                    "latency_s": round(latency, 3),
                    "node_rss_mib": rss_mib(status["pid"]),
                    "worker_rss_mib": rss_mib(status["worker_pid"]),
                }
            )
            print(
                f"series {index:3d}: {latency:6.2f} s to results; RSS node {rows[-1]['node_rss_mib']:.0f} MiB, "
                f"worker {rows[-1]['worker_rss_mib']:.0f} MiB",
                flush=True,
            )
        node.process.send_signal(signal.SIGTERM)
        exit_code = node.process.wait(timeout=120)
    finally:
        node.ensure_stopped()
        pacs.stop()
        shutil.rmtree(work, ignore_errors=True)

    latencies = [row["latency_s"] for row in rows]
    worker = [row["worker_rss_mib"] for row in rows]
    main_rss = [row["node_rss_mib"] for row in rows]
    half = len(rows) // 2
    summary = {
        "series": len(rows),
        "members": args.members,
        "node_start_s": round(start_s, 2),
        "exit_code": exit_code,
        "latency_s": {
            "median": round(statistics.median(latencies), 2),
            "min": min(latencies),
            "max": max(latencies),
            "first": latencies[0],
        },
        "worker_rss_mib": {
            "first": worker[0],
            "last": worker[-1],
            "max": max(worker),
            "slope_second_half_per_100_series": round(slope_per_100(worker[half:]), 2),
        },
        "node_rss_mib": {
            "first": main_rss[0],
            "last": main_rss[-1],
            "max": max(main_rss),
            "slope_second_half_per_100_series": round(slope_per_100(main_rss[half:]), 2),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "rows": rows,
    }
    print(
        f"\n{len(rows)} series, {args.members} member(s): latency median {summary['latency_s']['median']} s "
        f"(min {min(latencies)}, max {max(latencies)}); worker RSS {worker[0]:.0f} -> {worker[-1]:.0f} MiB "
        f"(max {max(worker):.0f}, slope {summary['worker_rss_mib']['slope_second_half_per_100_series']} MiB/100 "
        f"series); node RSS {main_rss[0]:.0f} -> {main_rss[-1]:.0f} MiB; SIGTERM exit {exit_code}"
    )
    out = args.json or ROOT / "benchmarks" / "results" / f"bench_dicom_node_{args.members}m_{len(rows)}s.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
