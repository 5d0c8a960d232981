"""Running inference.py as grand-challenge runs the container: the sandbox shared by the contract and zoo tests.

A read-only /input, model folder, code tree and HOME, no network (``unshare -rmn``), an empty writable
output folder and /tmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def _sandbox_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rmn", "true"], capture_output=True)
    return probe.returncode == 0


requires_sandbox = pytest.mark.skipif(not _sandbox_available(), reason="unshare -rmn (user namespaces) unavailable")


def run_like_grand_challenge(
    tmp_path: Path, input_dir: Path, model_dir: Path, config: Path, extra: list[str] = ()
) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Run inference.py in a sandbox; returns (process, output folder, tmp folder)."""
    output_dir = tmp_path / "output"
    tmp_dir = tmp_path / "tmp"
    home = tmp_path / "home"
    for folder in (output_dir, tmp_dir, home):
        folder.mkdir()
    read_only = [input_dir, model_dir, config.parent, home, ROOT]
    mounts = " && ".join(f"mount --bind '{p}' '{p}' && mount -o remount,bind,ro '{p}'" for p in read_only)
    command = [
        sys.executable,
        "inference.py",
        "--input",
        str(input_dir),
        "--output",
        str(output_dir),
        "--weights",
        str(model_dir),
        "--config",
        str(config),
        "--device",
        "cpu",
        "--report",
        str(tmp_dir / "run_report.json"),
        *extra,
    ]
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(tmp_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": str(tmp_dir / "mpl"),
    }
    process = subprocess.run(
        ["unshare", "-rmn", "sh", "-c", f'{mounts} && exec "$@"', "sandbox", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return process, output_dir, tmp_dir


def last_stderr_line(process: subprocess.CompletedProcess) -> str:
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""
