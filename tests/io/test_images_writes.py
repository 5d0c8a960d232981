"""Writing the mask and its report: checked before the networks run, one line when it fails late,
and a failed case leaves nothing (mask and report exist together, or neither).

The end-to-end cases use the micro model (one 16x32x32 tile per case) or stop before any model is
loaded, so the module takes a few seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg import api
from pantherseg.errors import OutputError
from pantherseg.io.files import write_text_atomically
from pantherseg.io.images import check_writable, write_image_atomically
from pantherseg.run_report import RunReport

from conftest import synthetic_image, write_gc_input

REPO = Path(__file__).resolve().parents[2]
SLUG = "pancreatic-tumor-segmentation"
DiskUsage = namedtuple("DiskUsage", "total used free")


def mask() -> sitk.Image:
    return sitk.GetImageFromArray(np.ones((4, 5, 6), np.uint8))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def one_line(error: Exception) -> str:
    assert "\n" not in str(error)
    return str(error)


# --- the atomic writers ----------------------------------------------------------------------------


def test_mask_path_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "case.mha").mkdir()
    with pytest.raises(OutputError) as caught:
        write_image_atomically(mask(), tmp_path / "case.mha")
    assert "a folder of that name is in the way" in one_line(caught.value)
    assert files_under(tmp_path) == []


def test_output_folder_under_a_file_is_one_line(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="Cannot write"):
        write_image_atomically(mask(), tmp_path / "blocker" / "case.mha")


def test_full_disk_while_itk_writes_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    real_write = sitk.WriteImage

    def write_then_run_out_of_space(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        raise RuntimeError(
            "Exception thrown in SimpleITK WriteImage: ITK ERROR: MetaImageIO(0x55d): "
            "File cannot be written: No space left on device"
        )

    monkeypatch.setattr(sitk, "WriteImage", write_then_run_out_of_space)
    with pytest.raises(OutputError) as caught:
        write_image_atomically(mask(), tmp_path / "case.mha")
    assert "No space left on device" in one_line(caught.value) and "0x55d" not in str(caught.value)
    assert files_under(tmp_path) == []


def test_concurrent_writers_into_one_folder_never_share_a_temporary_file(tmp_path):
    errors = []

    def write(index: int) -> None:
        try:
            for _ in range(10):
                write_text_atomically(tmp_path / "run_report.json", f'{{"writer": {index}}}')
                write_image_atomically(mask(), tmp_path / "case.mha")
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.mha", "run_report.json"]


# --- the probe before the networks run -------------------------------------------------------------

PROBE_AS_NOBODY = """
import sys
from pantherseg.errors import OutputError
from pantherseg.io.images import check_writable
try:
    check_writable([sys.argv[1]])
except OutputError as error:
    print(error)
    raise SystemExit(3)
"""


def test_read_only_output_folder_is_refused_by_the_probe():
    """Root writes into read-only folders, so as root (CI, containers' build machines) the probe runs as
    'nobody' in a child process: the check must hold for the unprivileged user grand-challenge runs."""
    # Not pytest's tmp_path: its folders are 0700, and 'nobody' has to reach the folder to be refused by it.
    tmp_path = Path(tempfile.mkdtemp(prefix="pantherseg-read-only-"))
    tmp_path.chmod(0o755)
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(OutputError, match="is not writable"):
                check_writable([folder])
            return
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and util-linux's setpriv is missing: no unprivileged user to probe as")
        for parent in tmp_path.parents:  # the path down to the folder must be traversable by 'nobody'
            if parent.stat().st_mode & 0o001 == 0:
                pytest.skip(f"{parent} is not traversable by other users")
        child = subprocess.run(
            [
                setpriv,
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                PROBE_AS_NOBODY,
                str(folder),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        assert child.returncode == 3, child.stderr[-2000:]
        assert "is not writable" in child.stdout
    finally:
        folder.chmod(0o700)
        shutil.rmtree(tmp_path)


def test_probe_refuses_a_full_disk_and_a_folder_in_the_way(tmp_path, monkeypatch):
    (tmp_path / "case.mha").mkdir()
    with pytest.raises(OutputError, match="a folder of that name is in the way"):
        check_writable([tmp_path], [tmp_path / "case.mha"])
    monkeypatch.setattr("shutil.disk_usage", lambda _path: DiskUsage(total=1 << 30, used=(1 << 30) - 4096, free=4096))
    with pytest.raises(OutputError, match="has only 4 KiB free"):
        check_writable([tmp_path / "other"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the probe file is gone


@pytest.fixture
def inference(capsys, monkeypatch):
    """``inference.run(argv)`` in this process, with Ensemble.load made to fail: what refuses first wins."""
    spec = importlib.util.spec_from_file_location("pantherseg_inference_writes", REPO / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handlers, level, sigterm = (
        logging.getLogger().handlers[:],
        logging.getLogger().level,
        signal.getsignal(signal.SIGTERM),
    )

    def call(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = module.run([*argv, "--device", "cpu"])
        return code, capsys.readouterr().err

    yield call
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)


def models_must_not_load(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the models were loaded before the output was checked")

    monkeypatch.setattr("pantherseg.engine.ensemble.Ensemble.load", refuse)


def test_output_folder_already_holding_an_image_is_refused_first(
    tmp_path, inference, monkeypatch, tiny_weights, tiny_config
):
    models_must_not_load(monkeypatch)
    input_dir = write_gc_input(tmp_path, synthetic_image((8, 16, 16)))
    stale = tmp_path / "output" / "images" / SLUG / "older-case.mha"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a previous run's mask")
    code, stderr = inference(
        "--input",
        str(input_dir),
        "--output",
        str(tmp_path / "output"),
        "--weights",
        str(tiny_weights),
        "--config",
        str(tiny_config),
    )
    last = stderr.strip().splitlines()[-1]
    assert code == 1 and last.startswith("pantherseg error: Output folder") and "older-case.mha" in last
    assert files_under(tmp_path / "output") == [stale]


def test_mask_path_that_is_a_folder_is_refused_before_the_networks_run(
    tmp_path, inference, monkeypatch, tiny_weights, tiny_config
):
    models_must_not_load(monkeypatch)
    input_dir = write_gc_input(tmp_path, synthetic_image((8, 16, 16)))
    (tmp_path / "output" / "images" / SLUG / "9a1c-image.mha").mkdir(parents=True)
    code, stderr = inference(
        "--input",
        str(input_dir),
        "--output",
        str(tmp_path / "output"),
        "--weights",
        str(tiny_weights),
        "--config",
        str(tiny_config),
    )
    assert code == 1 and "is a folder" in stderr.strip().splitlines()[-1]


# --- a case that fails after its mask was written --------------------------------------------------


@pytest.mark.parametrize("failure", [OutputError("Cannot write the run report: disk full"), KeyboardInterrupt()])
def test_report_failure_or_sigterm_after_the_mask_leaves_neither(tmp_path, micro_weights, monkeypatch, failure):
    """The mask is renamed into place, then writing the report fails (or SIGTERM arrives): no mask stays."""
    image_path = tmp_path / "case.mha"
    sitk.WriteImage(synthetic_image((8, 16, 16)), str(image_path))

    def fail(*_args, **_kwargs):
        assert (tmp_path / "out" / "case.mha").is_file()  # the mask was complete at this moment
        raise failure

    monkeypatch.setattr(RunReport, "write", fail)
    with pytest.raises(type(failure)):
        api.segment(
            image_path,
            output_dir=tmp_path / "out",
            report_dir=tmp_path / "out",
            task="t2",
            config=micro_weights[1],
            weights=micro_weights[0],
            device="cpu",
        )
    assert files_under(tmp_path / "out") == []


def test_report_failure_after_member_outputs_removes_them_too(tmp_path, micro_weights, monkeypatch):
    """--member-outputs are written after the mask; a case that then fails leaves none of them."""
    image_path = tmp_path / "case.mha"
    sitk.WriteImage(synthetic_image((8, 16, 16)), str(image_path))

    def fail(*_args, **_kwargs):
        assert len(files_under(tmp_path / "members")) == 2  # probabilities and own mask of the one member
        raise OutputError("Cannot write the run report: disk full")

    monkeypatch.setattr(RunReport, "write", fail)
    with pytest.raises(OutputError):
        api.segment(
            image_path,
            output_dir=tmp_path / "out",
            report_dir=tmp_path / "out",
            task="t2",
            config=micro_weights[1],
            weights=micro_weights[0],
            device="cpu",
            member_outputs_dir=tmp_path / "members",
        )
    assert files_under(tmp_path / "out") == [] and files_under(tmp_path / "members") == []
