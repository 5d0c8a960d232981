"""--help answers at once: no torch, nnU-Net, SimpleITK or matplotlib import on the way."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nnunetv2", "SimpleITK", "matplotlib", "scipy")
CONSOLE_SCRIPT = Path(sys.executable).parent / "pantherseg"

COMMANDS = {
    "python -m pantherseg.cli --help": ([sys.executable, "-m", "pantherseg.cli", "--help"], "predict"),
    "python -m pantherseg.cli predict --help": (
        [sys.executable, "-m", "pantherseg.cli", "predict", "--help"],
        "--preview",
    ),
    "pantherseg predict --help": ([str(CONSOLE_SCRIPT), "predict", "--help"], "--member-outputs"),
    "python inference.py --help": ([sys.executable, str(REPO / "inference.py"), "--help"], "--weights"),
}


def imported_modules(importtime_stderr: str) -> set[str]:
    """Top-level package names from ``python -X importtime`` output ("import time: self | total | name")."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", importtime_stderr, flags=re.M)
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_is_quick_and_imports_nothing_heavy(name):
    command, expected_text = COMMANDS[name]
    if not Path(command[0]).exists():
        pytest.skip(f"{command[0]} is not installed (pip install -e .)")
    if command[0] == sys.executable:
        command = [sys.executable, "-X", "importtime", *command[1:]]
        environment = None
    else:  # a console script: pass -X importtime through the environment
        environment = {"PYTHONPROFILEIMPORTTIME": "1", "PATH": str(Path(sys.executable).parent)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, env=environment)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command's CPU seconds, not the shared cores' wall clock
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    assert result.returncode == 0, result.stderr[-2000:]
    assert expected_text in result.stdout
    heavy = sorted(set(HEAVY) & imported_modules(result.stderr))
    assert heavy == [], f"{name} imported {heavy}"
    assert cpu < 2.0, f"{name} took {cpu:.1f} CPU seconds"
