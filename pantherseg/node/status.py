"""``pantherseg node-status --spool DIR``: what a node has done and is doing, from its journal.

JSON (``--json``, for monitors) or a table (for people): the node's state (from ``SPOOL/node.json`` and
whether its process is alive), job counts per state, the spool disk, the latest jobs with their timings
and reasons, and the latest refusals. Reading never changes the journal.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from pantherseg.errors import InputError
from pantherseg.node.journal import Journal
from pantherseg.node.spool import Spool


def node_status(spool_root: Path | str, *, limit: int = 20) -> dict:
    spool = Spool(spool_root)
    if not spool.journal_path.is_file():
        raise InputError(
            f"No node journal at {spool.journal_path}: expected the --spool folder of a 'pantherseg serve-dicom' node."
        )
    journal = Journal(spool.journal_path)
    try:
        node = _node_file(spool.root)
        disk = spool.disk()
        jobs = [_job_row(job) for job in journal.jobs(limit=limit)]
        return {
            "node": node,
            "jobs": journal.counts(),
            "studies": journal.studies(),
            "spool": {
                "path": str(spool.root),
                "disk_used_percent": round(disk.used_percent, 1),
                "disk_free_bytes": disk.free,
            },
            "latest_jobs": jobs,
            "latest_refusals": journal.refusals(limit),
        }
    finally:
        journal.close()


def _node_file(root: Path) -> dict:
    from pantherseg.node.service import STATUS_FILE

    path = root / STATUS_FILE
    try:
        node = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "unknown (no node.json)"}
    if node.get("state") == "running" and not _alive(node.get("pid")):
        node["state"] = "not running (its process is gone: it crashed or was killed)"
    return node


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _job_row(job) -> dict:
    row = job.as_dict()
    if job.finished_at is not None and job.last_instance_at is not None and job.state == "sent":
        row["last_instance_to_sent_s"] = round(job.finished_at - job.last_instance_at, 3)
    return row


def format_status(status: dict) -> str:
    node = status["node"]
    address = node.get("address")
    lines = [
        f"node: {node.get('state')}"
        + (f", {node.get('ae_title')} on {address[0]}:{address[1]}" if address else "")
        + (f", pid {node['pid']}" if "pid" in node else ""),
        "jobs: "
        + ", ".join(f"{state} {count}" for state, count in status["jobs"].items())
        + f"; studies {status['studies']}",
        f"spool: {status['spool']['path']} ({status['spool']['disk_used_percent']}% of its disk used)",
    ]
    if status["latest_jobs"]:
        lines.append("")
        lines.append(
            f"{'job':>5}  {'state':<10}  {'instances':>9}  {'received':<19}  {'s to sent':>9}  series / reason"
        )
        for job in status["latest_jobs"]:
            seconds = job.get("last_instance_to_sent_s")
            lines.append(
                f"{job['id']:>5}  {job['state']:<10}  {job['instances']:>9}  {_when(job['received_at']):<19}  "
                f"{'' if seconds is None else f'{seconds:.1f}':>9}  {job['series_uid']}"
                + (f": {job['reason']}" if job.get("reason") and job["state"] == "failed" else "")
            )
    if status["latest_refusals"]:
        lines.append("")
        lines.append("refused:")
        for refusal in status["latest_refusals"]:
            lines.append(
                f"  {_when(refusal['at'])}  {refusal['what']} {refusal['status']} from "
                f"{refusal['calling_ae'] or '?'}@{refusal['address'] or '?'}: {refusal['reason']}"
            )
    return "\n".join(lines)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
