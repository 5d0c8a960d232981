#!/usr/bin/env bash
# Build the grand-challenge container image (linux/amd64).
#
#   ./build.sh [--bake-weights] [TAG] [-- EXTRA DOCKER BUILD ARGS]
#
# TAG defaults to "pantherseg". --bake-weights (or BAKE_WEIGHTS=true) copies weights/ into the
# image at /opt/app/weights for local runs without a model mount; leave it off for grand-challenge,
# where the weights go up separately as model.tar.gz (./export.sh).
# DOCKER picks the container engine (default docker; DOCKER=podman works too: the build arguments and
# flags used here are common to both).
# Works from any folder; safe to run again (Docker reuses cached layers).
set -euo pipefail

usage() {
    # The comment block at the top of this file.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

fail() {
    echo "build.sh: error: $*" >&2
    exit 1
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docker="${DOCKER:-docker}"
tag="pantherseg"
bake="${BAKE_WEIGHTS:-false}"
extra=()

while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --bake-weights) bake=true ;;
        --) shift; extra=("$@"); break ;;
        -*) fail "unknown option $1 (see ./build.sh --help)" ;;
        *) tag="$1" ;;
    esac
    shift
done

case "$bake" in
    true | false) ;;
    *) fail "BAKE_WEIGHTS must be true or false, not '$bake'" ;;
esac

command -v "$docker" >/dev/null 2>&1 \
    || fail "$docker not found on PATH: install Docker Engine (or Docker Desktop, or podman with DOCKER=podman) to build the image"
"$docker" info >/dev/null 2>&1 \
    || fail "cannot reach the container engine ('$docker info' failed): start Docker, or check that your user may use it (docker group)"

if [[ "$bake" == true ]]; then
    python="${PYTHON:-}"
    if [[ -z "$python" ]]; then
        if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
    fi
    # Docker copies a symlink as a link: dangling in the image if it points out of weights/.
    [[ ! -L "$repo/weights" ]] \
        || fail "weights/ is a symlink, which Docker cannot copy into the image: make it a real folder (or use the model tarball)"
    PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pantherseg.container.model_tarball check --weights "$repo/weights" \
        || fail "weights/ cannot be baked into the image (see the line above)"
fi

echo "Building $tag (linux/amd64, weights baked in: $bake) from $repo" >&2
DOCKER_BUILDKIT=1 "$docker" build \
    --platform=linux/amd64 \
    --build-arg "BAKE_WEIGHTS=$bake" \
    --file "$repo/Dockerfile" \
    --tag "$tag" \
    ${extra[@]+"${extra[@]}"} \
    "$repo"

size="$("$docker" image inspect --format '{{.Size}}' "$tag" 2>/dev/null || echo "")"
if [[ "$size" =~ ^[0-9]+$ ]]; then
    echo "Built $tag: $((size / 1000000)) MB unpacked. Next: test/run_docker.sh $tag, then ./export.sh $tag" >&2
else
    echo "Built $tag. Next: test/run_docker.sh $tag, then ./export.sh $tag" >&2
fi
