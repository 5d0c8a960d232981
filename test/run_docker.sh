#!/usr/bin/env bash
# Run the container on the sample cases the way grand-challenge runs it, and check its output.
#
#   test/run_docker.sh [--cpu] [TAG] [t1|t2|all|SAMPLE]
#
# TAG defaults to "pantherseg" (./build.sh); a lone t1, t2 or all selects cases. The cases (default: all):
#   t1   test/samples/t1-phantom/input and test/samples/t1-amos_0540/input
#   t2   test/samples/t2-phantom/input
#   SAMPLE  any folder test/samples/SAMPLE/input (SAMPLES_DIR replaces test/samples)
# Each case runs as one job: --network none, a read-only root file system with an empty tmpfs as
# /tmp, /input read-only, the weights folder read-only at /opt/ml/model, the image's own non-root
# user; only /tmp and /output are writable. Afterwards there must be exactly one .mha in
# OUTPUT/images/pancreatic-tumor-segmentation/; its path is printed.
#
# --cpu (or PANTHERSEG_CPU=1) runs without --gpus all, for machines with no NVIDIA GPU (slow).
# Environment: WEIGHTS_DIR (default: <repo>/weights; not mounted if absent or empty, then the image
# needs baked weights), OUTPUT_ROOT (default: <repo>/work/docker-run; one folder per case, emptied
# first), SHM_SIZE (default 8g: grand-challenge gives half the RAM), DOCKER_MEMORY (e.g. 16g, to
# mimic the memory limit of the instance chosen on grand-challenge), DOCKER_CPUS (e.g. 4, a T4
# instance's vCPUs), DOCKER (the engine: docker, or podman).
# MODEL_DIR mounts that folder at /opt/ml/model instead of WEIGHTS_DIR (e.g. model.tar.gz extracted).
# Works from any folder; safe to run again.
set -euo pipefail

usage() {
    # The comment block at the top of this file.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

fail() {
    echo "run_docker.sh: error: $*" >&2
    exit 1
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
docker="${DOCKER:-docker}"
output_slug="pancreatic-tumor-segmentation"
tag="pantherseg"
selection="all"
cpu="${PANTHERSEG_CPU:-0}"
positional=()

while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --cpu) cpu=1 ;;
        -*) fail "unknown option $1 (see test/run_docker.sh --help)" ;;
        *) positional+=("$1") ;;
    esac
    shift
done
if ((${#positional[@]} > 2)); then
    fail "too many arguments: ${positional[*]} (expected [TAG] [t1|t2|all|SAMPLE])"
fi
if ((${#positional[@]} == 1)) && [[ "${positional[0]}" =~ ^(t1|t2|all)$ ]]; then
    selection="${positional[0]}"  # "test/run_docker.sh t1": a case selection, not a tag
elif ((${#positional[@]} >= 1)); then
    tag="${positional[0]}"
    if ((${#positional[@]} == 2)); then selection="${positional[1]}"; fi
fi

command -v "$docker" >/dev/null 2>&1 \
    || fail "$docker not found on PATH: install Docker Engine (or Docker Desktop, or podman with DOCKER=podman) to run the container"
"$docker" info >/dev/null 2>&1 \
    || fail "cannot reach the container engine ('$docker info' failed): start Docker, or check that your user may use it (docker group)"
"$docker" image inspect "$tag" >/dev/null 2>&1 \
    || fail "image $tag not found: build it first with ./build.sh $tag"

gpu_args=(--gpus all)
if [[ "$cpu" == 1 ]]; then
    gpu_args=()
    echo "Running WITHOUT a GPU (--cpu): expect minutes per case, far slower than on grand-challenge." >&2
else
    command -v nvidia-smi >/dev/null 2>&1 \
        || fail "nvidia-smi not found: this machine has no NVIDIA driver. Run with --cpu (or PANTHERSEG_CPU=1) to test without a GPU"
    nvidia-smi -L >/dev/null 2>&1 \
        || fail "nvidia-smi found no usable NVIDIA GPU. Run with --cpu (or PANTHERSEG_CPU=1) to test without a GPU"
fi

samples_dir="${SAMPLES_DIR:-$repo/test/samples}"
case "$selection" in
    all) samples=(t1-phantom t2-phantom t1-amos_0540) ;;
    t1) samples=(t1-phantom t1-amos_0540) ;;
    t2) samples=(t2-phantom) ;;
    *) samples=("$selection") ;;
esac
for sample in "${samples[@]}"; do
    [[ -d "$samples_dir/$sample/input" ]] || fail "sample input folder $samples_dir/$sample/input not found"
done

weights="${MODEL_DIR:-${WEIGHTS_DIR:-$repo/weights}}"
weight_args=()
if [[ -d "$weights" ]] && [[ -n "$(ls -A "$weights" 2>/dev/null)" ]]; then
    weights="$(cd "$weights" && pwd)"
    weight_args=(--volume "$weights:/opt/ml/model:ro")
else
    echo "No weights at $weights: nothing mounted at /opt/ml/model; the image must have baked weights (./build.sh --bake-weights)." >&2
fi

output_root="${OUTPUT_ROOT:-$repo/work/docker-run}"
mkdir -p "$output_root"
output_root="$(cd "$output_root" && pwd)"
memory_args=()
if [[ -n "${DOCKER_MEMORY:-}" ]]; then
    memory_args=(--memory "$DOCKER_MEMORY" --memory-swap "$DOCKER_MEMORY")
fi
if [[ -n "${DOCKER_CPUS:-}" ]]; then
    memory_args+=(--cpus "$DOCKER_CPUS")
fi

current_output=""

give_back_output() {
    # Files the container wrote belong to its user (uid 10001); hand them to the caller so that they
    # can be read and removed. Runs as root inside a throw-away container: local testing only.
    local folder="$1"
    [[ -d "$folder" ]] || return 0
    "$docker" run --rm --platform=linux/amd64 --network none --user 0:0 --entrypoint chown \
        --volume "$folder:/output" "$tag" -R "$(id -u):$(id -g)" /output >/dev/null 2>&1 || true
}

cleanup() {
    if [[ -n "$current_output" ]]; then give_back_output "$current_output"; fi
}
trap cleanup EXIT

fresh_output() {
    local folder="$1"
    if [[ -e "$folder" ]] && ! rm -rf "$folder" 2>/dev/null; then
        give_back_output "$folder"
        rm -rf "$folder" || fail "cannot empty $folder (left by an earlier run): remove it by hand"
    fi
    mkdir -p "$folder"
    # The container's user is not the caller: let it write here, as grand-challenge's /output allows.
    chmod 0777 "$folder"
}

failures=0
results=()
for sample in "${samples[@]}"; do
    input="$(cd "$samples_dir/$sample/input" && pwd)"
    output="$output_root/$sample"
    fresh_output "$output"
    current_output="$output"

    echo "== $sample: $docker run $tag (input $input, output $output)" >&2
    start=$SECONDS
    status=0
    "$docker" run --rm \
        --platform=linux/amd64 \
        ${gpu_args[@]+"${gpu_args[@]}"} \
        --network none \
        --read-only \
        --tmpfs /tmp \
        --shm-size "${SHM_SIZE:-8g}" \
        ${memory_args[@]+"${memory_args[@]}"} \
        --volume "$input:/input:ro" \
        --volume "$output:/output" \
        ${weight_args[@]+"${weight_args[@]}"} \
        "$tag" || status=$?
    seconds=$((SECONDS - start))

    give_back_output "$output"
    current_output=""

    if ((status != 0)); then
        hint=""
        if ((status == 137)); then hint=" (killed: out of memory, as grand-challenge reports exit 137)"; fi
        echo "FAIL $sample: the container exited with $status$hint after ${seconds}s" >&2
        results+=("FAIL $sample (exit $status)")
        failures=$((failures + 1))
        continue
    fi

    produced=()
    if [[ -d "$output/images/$output_slug" ]]; then
        while IFS= read -r -d '' file; do produced+=("$file"); done \
            < <(find "$output/images/$output_slug" -mindepth 1 -maxdepth 1 -print0)
    fi
    if ((${#produced[@]} != 1)) || [[ "${produced[0]}" != *.mha ]] || [[ ! -f "${produced[0]}" ]]; then
        echo "FAIL $sample: expected exactly one .mha in $output/images/$output_slug, found ${#produced[@]} entries: ${produced[*]-none}" >&2
        results+=("FAIL $sample (output)")
        failures=$((failures + 1))
        continue
    fi
    echo "OK   $sample in ${seconds}s: ${produced[0]}"
    results+=("OK   $sample (${seconds}s)")
done

printf 'Summary:\n' >&2
printf '  %s\n' "${results[@]}" >&2
if ((failures > 0)); then
    echo "run_docker.sh: $failures of ${#samples[@]} cases failed" >&2
    exit 1
fi
