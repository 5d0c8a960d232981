#!/usr/bin/env bash
# The container test, all of it, on a fresh Debian machine without Docker (make container-test):
#   1. podman, runc and debootstrap from Debian's packages if missing (setup_engine.sh);
#   2. a stand-in for the base image, since Docker Hub is out of reach (build_standin.sh);
#   3. the image from the Dockerfile with build.sh (DOCKER=podman, the stand-in as BASE_IMAGE,
#      TORCH_CUDA=none so that the self-check expects its CPU torch);
#   4. one sample through test/run_docker.sh with podman (the script users run);
#   5. pytest -m container: the samples, bad inputs and stopping, each run as grand-challenge runs a
#      job, with model.tar.gz made by export.sh and extracted with tarfile filter="data";
#   6. measure.py: image sizes (unpacked, docker save | gzip) and the cold start, split by stage.
#
#   test/container/run.sh [--skip-build] [--skip-measure] [-- PYTEST ARGS]
#
# Needs root (rootful podman) and about 10 GB of disk. PYTHON (default .venv/bin/python) runs the
# tests; IMAGE (default pantherseg) names the image. Takes about 30 minutes on 2 cores, most of it
# the sample runs on the CPU.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$repo/test/container"
image="${IMAGE:-pantherseg}"
standin="localhost/pantherseg-base-standin:torch2.13.0-cpu"
python="${PYTHON:-$repo/.venv/bin/python}"
build=1
measure=1
pytest_args=()
while (($#)); do
    case "$1" in
        --skip-build) build=0 ;;
        --skip-measure) measure=0 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "run.sh: error: unknown option $1 (expected --skip-build, --skip-measure or -- PYTEST ARGS)" >&2; exit 1 ;;
    esac
    shift
done

# podman settings for this machine kind (runc, ulimits); nothing of it reaches the Docker path.
export CONTAINERS_CONF="$here/containers.conf"
export DOCKER=podman

"$here/setup_engine.sh"
if ((build)); then
    "$here/build_standin.sh" "$standin" >/dev/null
    "$repo/build.sh" "$image" -- \
        --build-arg "BASE_IMAGE=$standin" --build-arg TORCH_CUDA=none \
        --volume /etc/ssl/certs:/etc/ssl/certs:ro
fi

cpus=$(($(nproc) < 4 ? $(nproc) : 4))
echo "== test/run_docker.sh --cpu $image t2 (podman, --memory 16g, --cpus $cpus)" >&2
DOCKER_MEMORY=16g DOCKER_CPUS="$cpus" OUTPUT_ROOT="$repo/work/container-test/run_docker" \
    "$repo/test/run_docker.sh" --cpu "$image" t2

echo "== pytest -m container" >&2
PANTHERSEG_IMAGE="$image" DOCKER_MEMORY=16g DOCKER_CPUS="$cpus" \
    "$python" -m pytest -q -m container --container -p no:cacheprovider \
    "$repo/tests/container/test_container_image.py" ${pytest_args[@]+"${pytest_args[@]}"}

if ((measure)); then
    "$python" "$here/measure.py" --image "$image" --standin "$standin" --cpus "$cpus" \
        --json "$repo/work/container-test/measurements.json"
fi
