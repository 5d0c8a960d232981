"""The node's two commands, ``serve-dicom`` and ``node-status``: their flags, and flags -> one call.

Only the standard library at import (``pantherseg --help`` stays quick). Each ``serve-dicom`` flag sets the
``node.json`` key of the same name (:data:`pantherseg.node.config.FLAG_KEYS` lists those named differently);
a flag not given leaves the file's value.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_node_commands(commands) -> None:
    serve = commands.add_parser(
        "serve-dicom",
        help="run a DICOM node: MR series in by C-STORE, SEG/RTSTRUCT out to PACS (pantherseg[dicom])",
        description="A DICOM SCP that spools MR series, segments each complete series with the ensemble (loaded once) "
        "and sends the results to the configured destinations. Flags override --node-config's keys. "
        "See docs/dicom-node.md.",
    )
    serve.add_argument(
        "--node-config",
        type=Path,
        default=None,
        metavar="node.json",
        help="the node's settings as JSON (same keys as these flags; flags win)",
    )
    serve.add_argument("--ae-title", default=None, help="this node's AE title (default PANTHERSEG)")
    serve.add_argument("--port", type=int, default=None, help="TCP port to listen on (default 11112)")
    serve.add_argument("--bind", default=None, metavar="HOST", help="address to listen on (default 0.0.0.0)")
    serve.add_argument(
        "--allow-ae",
        action="append",
        default=None,
        metavar="AE[@HOST]",
        help="a calling AE title allowed to send (optionally only from HOST); repeatable; required",
    )
    serve.add_argument(
        "--send-to",
        action="append",
        default=None,
        metavar="DEST",
        help="where results go: AE@HOST:PORT[?outputs=seg,rtstruct,sr&tls=yes] or a DICOMweb URL; repeatable; required",
    )
    serve.add_argument(
        "--spool",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for received instances, jobs, results, dead letters and the journal; required",
    )
    serve.add_argument("--task", default=None, help="task of the ensemble config: t1 or t2 (default t1)")
    serve.add_argument(
        "--series-timeout",
        type=float,
        default=None,
        metavar="S",
        help="a series is complete after S seconds without an instance (default 10)",
    )
    serve.add_argument(
        "--no-complete-on-release",
        dest="complete_on_release",
        action="store_const",
        const=False,
        default=None,
        help="do not take a series at association release; wait for the timeout",
    )
    serve.add_argument(
        "--outputs",
        nargs="+",
        default=None,
        metavar="FORMAT",
        help="result formats: dicom-seg, rtstruct, sr (default: dicom-seg rtstruct)",
    )
    serve.add_argument("--weights", type=Path, default=None, help="weights root (default: weights/)")
    serve.add_argument("--config", type=Path, default=None, help="ensemble_config.json (default: the shipped one)")
    serve.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default auto)")
    serve.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="S",
        help="seconds per series before members are skipped (default: the ensemble config's)",
    )
    serve.add_argument("--roi-name", default=None, help="the RTSTRUCT's ROI name")
    serve.add_argument("--max-instances-per-association", type=int, default=None, metavar="N")
    serve.add_argument("--max-series-bytes", type=int, default=None, metavar="BYTES")
    serve.add_argument(
        "--max-disk-use-percent",
        type=float,
        default=None,
        metavar="P",
        help="refuse stores when the spool's disk is fuller than this (default 90)",
    )
    serve.add_argument(
        "--min-free-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="refuse stores that would leave less free (default 1 GiB)",
    )
    serve.add_argument("--tls-cert", type=Path, default=None, metavar="PEM", help="TLS: this node's certificate")
    serve.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="TLS: its private key")
    serve.add_argument(
        "--tls-ca", type=Path, default=None, metavar="PEM", help="TLS: require callers' certificates signed by this CA"
    )
    serve.add_argument("--retries", type=int, default=None, help="delivery retries per destination (default 5)")
    serve.add_argument(
        "--backoff",
        type=float,
        default=None,
        metavar="S",
        help="first wait before a retry, doubled each time (default 2)",
    )
    serve.add_argument("--backoff-max", type=float, default=None, metavar="S", help="longest wait (default 300)")
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=None,
        metavar="S",
        help="on SIGTERM, how long the current job may take to finish before it is requeued (default 30)",
    )
    serve.add_argument(
        "--keep-received",
        action="store_const",
        const=True,
        default=None,
        help="keep a series' instances after its results were delivered",
    )
    verbosity = serve.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=serve_dicom)

    status = commands.add_parser(
        "node-status",
        help="what a DICOM node did and is doing (its journal)",
        description="Job counts per state, the latest jobs with timings and reasons, and "
        "the latest refusals, read from SPOOL/journal.sqlite.",
    )
    status.add_argument("--spool", type=Path, required=True, metavar="DIR", help="the node's --spool folder")
    status.add_argument("--json", action="store_true", help="JSON for monitors instead of a table")
    status.add_argument("--limit", type=int, default=20, metavar="N", help="latest jobs and refusals shown")
    status.set_defaults(handler=node_status_command, quiet=False, verbose=False)


def node_config_from_args(args: argparse.Namespace):
    from pantherseg.node.config import FLAG_KEYS, KEYS, load_node_config

    flags = {FLAG_KEYS.get(name, name): value for name, value in vars(args).items()}
    overrides = {key: flags.get(key) for key in KEYS}
    return load_node_config(args.node_config, overrides)


def serve_dicom(args: argparse.Namespace) -> int:
    from pantherseg.node.service import NodeService

    config = node_config_from_args(args)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    return NodeService(config, log_level=level).run()


def node_status_command(args: argparse.Namespace) -> int:
    import json

    from pantherseg.node.status import format_status, node_status

    status = node_status(args.spool, limit=max(1, args.limit))
    sys.stdout.write((json.dumps(status, indent=2) if args.json else format_status(status)) + "\n")
    return 0
