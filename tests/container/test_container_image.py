"""The built image, run the way grand-challenge runs a job (``make container-test``; marker ``container``).

Every run here uses grand-challenge's sandbox: no network, a read-only root file system with an
empty tmpfs at /tmp, /input read-only, the model tarball extracted with ``tarfile`` and
``filter="data"`` (as the platform does) read-only at /opt/ml/model, /output the only other
writable folder, the image's own non-root user, and the memory and CPUs of grand-challenge's
smallest GPU instance (16 GB, 4 vCPUs; fewer CPUs where the machine has fewer).

Environment: DOCKER (the engine, default podman), PANTHERSEG_IMAGE (default pantherseg).
The image must be built first (test/container/run.sh does it all).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "test" / "samples"
ENGINE = os.environ.get("DOCKER", "podman")
IMAGE = os.environ.get("PANTHERSEG_IMAGE", "pantherseg")
OUTPUT_SLUG = "pancreatic-tumor-segmentation"
# grand-challenge's smallest GPU instance (T4): 16 GB of RAM, 4 vCPUs.
MEMORY = os.environ.get("DOCKER_MEMORY", "16g")
CPUS = os.environ.get("DOCKER_CPUS", str(min(4, os.cpu_count() or 1)))
CASE_TIMEOUT_S = 900


@pytest.fixture(scope="session", autouse=True)
def image_exists():
    if shutil.which(ENGINE) is None:
        pytest.fail(f"{ENGINE} not found: run make container-test (it installs podman and builds the image)")
    found = subprocess.run([ENGINE, "image", "inspect", IMAGE], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"image {IMAGE} not found: run make container-test (or ./build.sh {IMAGE})")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """weights/ packed by export.sh, then extracted as grand-challenge extracts the model tarball."""
    export = tmp_path_factory.mktemp("export")
    subprocess.run(
        ["bash", str(ROOT / "export.sh"), "--model-only", "--output", str(export)],
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    model = tmp_path_factory.mktemp("model")
    with tarfile.open(export / "model.tar.gz") as tarball:
        tarball.extractall(model, filter="data")
    # Readable by the image's user (uid 10001), as on the platform; writable by nobody.
    for path in [model, *model.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return model


def writable_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # the container's user is not the caller, as /output on the platform
    return path


def run_command(input_dir: Path, output_dir: Path, model: Path | None, name: str | None = None) -> list[str]:
    command = [
        ENGINE,
        "run",
        "--rm",
        "--platform=linux/amd64",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--memory",
        MEMORY,
        "--memory-swap",
        MEMORY,
        "--cpus",
        CPUS,
        "--shm-size",
        "8g",
        "--volume",
        f"{input_dir}:/input:ro",
        "--volume",
        f"{output_dir}:/output",
    ]
    if model is not None:
        command += ["--volume", f"{model}:/opt/ml/model:ro"]
    if name is not None:
        command += ["--name", name]
    return [*command, IMAGE]


def run_like_grand_challenge(
    input_dir: Path, output_dir: Path, model: Path | None, arguments: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    writable_folder(output_dir)
    return subprocess.run(
        [*run_command(input_dir, output_dir, model), *arguments], capture_output=True, text=True, timeout=CASE_TIMEOUT_S
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def the_one_mask(output_dir: Path) -> Path:
    produced = list((output_dir / "images" / OUTPUT_SLUG).iterdir())
    assert len(produced) == 1 and produced[0].suffix == ".mha", produced
    return produced[0]


def python_route_mask(sample_input: Path, tmp_path: Path) -> Path:
    """The same case through inference.py on this machine's Python, with the bundled weights.

    The image has no OpenVINO (a GPU image), so its auto backend on the CPU is torch in fp32; the
    test environment has the openvino extra, whose auto choice would differ: name the image's route.
    """
    output = tmp_path / "python-route"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "inference.py"),
            "--input",
            str(sample_input),
            "--output",
            str(output),
            "--weights",
            str(ROOT / "weights"),
            "--device",
            "cpu",
            "--backend",
            "torch",
            "--precision",
            "fp32",
            *NO_DEADLINE,
            "--quiet",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=CASE_TIMEOUT_S,
    )
    return the_one_mask(output)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 2.0 * float(np.logical_and(a, b).sum()) / float(total) if total else 1.0


# Both routes run every member: on a busy machine the 300 s budget could skip a member in one route and
# not in the other, and the masks would differ for that reason alone.
NO_DEADLINE = ("--time-budget", "0")


@pytest.mark.parametrize("sample,min_dice", [("t1-phantom", 0.8), ("t2-phantom", 0.4)])
def test_phantom_mask_equals_the_python_route_and_finds_the_tumour(sample, min_dice, model_dir, tmp_path):
    sample_input = SAMPLES / sample / "input"
    result = run_like_grand_challenge(sample_input, tmp_path / "out", model_dir, NO_DEADLINE)
    assert result.returncode == 0, last_line(result.stderr)
    mask_path = the_one_mask(tmp_path / "out")
    assert files_under(tmp_path / "out") == [mask_path], "only the mask may be written to /output"

    mask = sitk.ReadImage(str(mask_path))
    reference = sitk.ReadImage(str(python_route_mask(sample_input, tmp_path)))
    for attribute in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(mask, attribute)() == getattr(reference, attribute)()
    ours, theirs = sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(reference)
    differing = int((ours != theirs).sum())
    assert differing == 0, (
        f"{differing} of {ours.size} voxels differ from the Python route "
        f"({int(ours.sum())} vs {int(theirs.sum())} tumour voxels); was the image built from this tree?"
    )

    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(next((SAMPLES / sample / "ground-truth").glob("*.mha")))))
    assert dice(sitk.GetArrayFromImage(mask) == 1, truth == 1) >= min_dice


def test_real_amos_mri_gives_a_well_formed_mask(model_dir, tmp_path):
    sample_input = SAMPLES / "t1-amos_0540" / "input"
    result = run_like_grand_challenge(sample_input, tmp_path / "out", model_dir)
    assert result.returncode == 0, last_line(result.stderr)
    mask = sitk.ReadImage(str(the_one_mask(tmp_path / "out")))
    image = sitk.ReadImage(str(next((sample_input / "images" / "abdominal-t1-mri").glob("*.mha"))))
    assert mask.GetSize() == image.GetSize() and mask.GetDirection() == image.GetDirection()
    assert np.allclose(mask.GetSpacing(), image.GetSpacing()) and np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}


# ---------------------------------------------------------------------------------------------
# Bad inputs (docs/robustness.md): documented exit code, one `pantherseg error:` line, nothing written


def t1_case(folder: Path, images: dict[str, object], inputs_json: object | None = "default") -> Path:
    """A grand-challenge /input folder with the given files in images/abdominal-t1-mri/."""
    slug_dir = folder / "images" / "abdominal-t1-mri"
    slug_dir.mkdir(parents=True)
    for name, content in images.items():
        if isinstance(content, sitk.Image):
            sitk.WriteImage(content, str(slug_dir / name))
        else:
            (slug_dir / name).write_bytes(content)
    if inputs_json == "default":
        inputs_json = [
            {
                "interface": {"slug": "abdominal-t1-mri", "relative_path": "images/abdominal-t1-mri"},
                "image": {"name": "case.mha"},
            }
        ]
    if isinstance(inputs_json, (list, dict)):
        (folder / "inputs.json").write_text(json.dumps(inputs_json))
    elif isinstance(inputs_json, str):
        (folder / "inputs.json").write_text(inputs_json)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def volume(shape_zyx=(24, 40, 40), seed=0) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).normal(100, 20, shape_zyx).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 3.0))
    return image


BAD_INPUTS = {
    "no image for the slug": (lambda d: t1_case(d, {}), 2),
    "two images for the slug": (lambda d: t1_case(d, {"a.mha": volume(), "b.mha": volume(seed=1)}), 2),
    "text with an .mha suffix": (lambda d: t1_case(d, {"case.mha": b"this is not an image\n"}), 2),
    "2D image": (lambda d: t1_case(d, {"case.mha": sitk.GetImageFromArray(np.ones((64, 64), np.float32))}), 2),
    "inputs.json not JSON": (lambda d: t1_case(d, {"case.mha": volume()}, inputs_json="{not json"), 2),
    "inputs.json names an unknown slug": (
        lambda d: t1_case(
            d,
            {"case.mha": volume()},
            inputs_json=[
                {"interface": {"slug": "chest-ct", "relative_path": "images/abdominal-t1-mri"}, "image": {"name": "x"}}
            ],
        ),
        2,
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_with_one_line_its_exit_code_and_no_output(case, model_dir, tmp_path):
    make, exit_code = BAD_INPUTS[case]
    result = run_like_grand_challenge(make(tmp_path / "input"), tmp_path / "out", model_dir)
    assert result.returncode == exit_code, result.stderr[-2000:]
    assert last_line(result.stderr).startswith("pantherseg error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path / "out") == []


def test_no_uploaded_model_names_the_fix(tmp_path):
    empty_model = writable_folder(tmp_path / "model")
    empty_model.chmod(0o555)
    result = run_like_grand_challenge(SAMPLES / "t1-phantom" / "input", tmp_path / "out", empty_model)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "model.tar.gz" in last_line(result.stderr)
    assert files_under(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------
# Stopping a running container


def start_and_wait_for_prediction(tmp_path: Path, model: Path, name: str) -> tuple[subprocess.Popen, list[str]]:
    """Start the AMOS case detached from this thread's reads; return once a member has started."""
    output = writable_folder(tmp_path / "out")
    process = subprocess.Popen(
        run_command(SAMPLES / "t1-amos_0540" / "input", output, model, name=name),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line)
            if " tiles" in line:  # "member <name>: <n> tiles": the networks are running
                started.set()

    threading.Thread(target=read, daemon=True).start()
    if not started.wait(timeout=300):
        process.kill()
        pytest.fail("the container never started predicting:\n" + "".join(lines[-20:]))
    return process, lines


@pytest.mark.parametrize("grace_s,exit_code", [(10, 130), (0, 137)])
def test_stopping_a_running_container_leaves_no_mask(grace_s, exit_code, model_dir, tmp_path):
    """``stop`` sends SIGTERM, then SIGKILL after the grace period: 130 within it, 137 (killed) at 0 s."""
    name = f"pantherseg-stop-{uuid.uuid4().hex[:8]}"
    process, lines = start_and_wait_for_prediction(tmp_path, model_dir, name)
    time.sleep(1.0)
    subprocess.run([ENGINE, "stop", "--time", str(grace_s), name], capture_output=True, timeout=120)
    returncode = process.wait(timeout=120)
    time.sleep(0.5)  # the reader thread drains the last lines
    assert returncode == exit_code, "".join(lines[-5:])
    if exit_code == 130:
        assert last_line("".join(lines)).startswith("pantherseg error: interrupted")
    assert not list((tmp_path / "out").rglob("*.mha")), "a stopped run must not leave a mask"


def test_sigterm_reaches_the_entry_point_as_pid_1(model_dir, tmp_path):
    """The entry point is PID 1 in the container: SIGTERM only works because it installs a handler."""
    name = f"pantherseg-term-{uuid.uuid4().hex[:8]}"
    process, lines = start_and_wait_for_prediction(tmp_path, model_dir, name)
    subprocess.run([ENGINE, "kill", "--signal", str(int(signal.SIGTERM)), name], capture_output=True, timeout=60)
    assert process.wait(timeout=120) == 130, "".join(lines[-5:])
