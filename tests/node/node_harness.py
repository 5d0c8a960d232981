"""Helpers for the node's tests: small MR series, dcmtk's storescu/echoscu, a node process, waiting on its journal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from dicom_factory import orient, phantom_case, write_series  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DCMTK = shutil.which("storescu") is not None and shutil.which("echoscu") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_series(
    folder: Path,
    *,
    slices: int = 4,
    modality: str = "MR",
    sop_class: str | None = None,
    series_uid: str | None = None,
    tweak=None,
) -> list[Path]:
    """A few 8 x 8 MR slices (enough for the SCP; not for the networks)."""
    image = sitk.GetImageFromArray(np.arange(slices * 64, dtype=np.float32).reshape(slices, 8, 8))
    image.SetSpacing((1.0, 1.0, 2.0))

    def change(k, ds):
        if sop_class is not None:
            ds.SOPClassUID = sop_class
            ds.file_meta.MediaStorageSOPClassUID = sop_class
        if tweak is not None:
            tweak(k, ds)

    return write_series(image, folder, modality=modality, series_uid=series_uid, tweak=change)


def phantom_series(folder: Path, *, seed: int = 1000, kind: str = "axial", **kwargs):
    """A demo-zoo-sized Task 2 phantom as an MR series: (files, the image as written, its tumour)."""
    image, tumour = phantom_case(seed=seed, task="t2", voxel_scale=2.5)
    image = orient(image, kind)
    return write_series(image, folder, **kwargs), image, orient(tumour, kind)


def storescu(
    port: int, paths, *, calling: str = "SCANNER", called: str = "PANTHERSEG", timeout: float = 120, extra=()
) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending ``paths`` (files or folders) in one association."""
    files = [str(p) for p in paths]
    return subprocess.run(
        [
            "storescu",
            "-aet",
            calling,
            "-aec",
            called,
            "-to",
            "30",
            "-ta",
            "30",
            "-td",
            "30",
            *extra,
            "+sd",
            "127.0.0.1",
            str(port),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def echoscu(port: int, *, calling: str = "SCANNER", called: str = "PANTHERSEG") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "-to", "10", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def jobs(spool: Path) -> list[dict]:
    """The journal's jobs, oldest first (read in a fresh connection, as node-status does)."""
    from pantherseg.node.journal import Journal

    if not (spool / "journal.sqlite").exists():
        return []
    journal = Journal(spool / "journal.sqlite")
    try:
        return [job.as_dict() for job in reversed(journal.jobs())]
    finally:
        journal.close()


class NodeProcess:
    """``pantherseg serve-dicom`` as a real process (its own session, so a kill reaches its worker too)."""

    def __init__(self, spool: Path, port: int, args: list[str], log: Path):
        self.spool, self.port, self.args, self.log = Path(spool), port, args, Path(log)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "NodeProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pantherseg",
                    "serve-dicom",
                    "--spool",
                    str(self.spool),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--device",
                    "cpu",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        status = self.spool / "node.json"

        def listening():
            if self.process.poll() is not None:
                raise AssertionError(f"the node exited with {self.process.returncode}: {self.log_tail()}")
            try:
                state = json.loads(status.read_text())
                return state["state"] == "running" and state["pid"] == self.process.pid
            except (OSError, ValueError, KeyError):
                return False

        wait_for(listening, timeout, "the node to listen")
        return self

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM, as systemd or Kubernetes stop a service; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to the node and its worker at once (a power cut, an OOM kill of the container)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
