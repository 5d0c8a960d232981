#!/usr/bin/env bash
# Write the two grand-challenge uploads into one folder, and check them before saying they are ready.
#
#   ./export.sh [--model-only] [--output DIR] [--weights DIR] [--task t1|t2 --config FILE] [TAG]
#
#   TAG_<timestamp>.tar.gz  the container image (docker save TAG | gzip): upload it under the
#                           algorithm's Containers
#   model.tar.gz            the weights folder, relative paths and regular files only, verified to
#                           extract under tarfile's filter="data" as grand-challenge does: upload it
#                           under the algorithm's Models; it is extracted to /opt/ml/model/
#
# --task T --config FILE: a lean model-T.tar.gz instead of model.tar.gz: only the members task T of
#                           FILE uses, their checkpoints without optimizer and grad-scaler state (the
#                           network weights' hash is checked unchanged), and FILE's task T as the
#                           tarball's own ensemble_config.json, which the entry point prefers to the
#                           image's: a new model tarball switches models without a new image
# TAG defaults to "pantherseg". --output (or EXPORT_DIR) defaults to <repo>/export; --weights (or
# WEIGHTS_DIR) to <repo>/weights. --model-only (or SKIP_IMAGE=1) skips the image: no Docker needed.
# DOCKER picks the container engine (default docker; DOCKER=podman works too).
# PYTHON picks the interpreter (default: <repo>/.venv/bin/python, else python3).
# Works from any folder; safe to run again (model.tar.gz is replaced, each image export gets a new
# timestamp).
set -euo pipefail

usage() {
    # The comment block at the top of this file.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

fail() {
    echo "export.sh: error: $*" >&2
    exit 1
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docker="${DOCKER:-docker}"
tag="pantherseg"
skip_image="${SKIP_IMAGE:-0}"
output="${EXPORT_DIR:-$repo/export}"
weights="${WEIGHTS_DIR:-$repo/weights}"
task=""
config=""

while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --model-only) skip_image=1 ;;
        --output)
            (($# >= 2)) || fail "--output needs a folder"
            output="$2"; shift ;;
        --weights)
            (($# >= 2)) || fail "--weights needs a folder"
            weights="$2"; shift ;;
        --task)
            (($# >= 2)) || fail "--task needs t1 or t2"
            task="$2"; shift ;;
        --config)
            (($# >= 2)) || fail "--config needs an ensemble_config.json"
            config="$2"; shift ;;
        -*) fail "unknown option $1 (see ./export.sh --help)" ;;
        *) tag="$1" ;;
    esac
    shift
done

if [[ -n "$task" && -z "$config" ]] || [[ -z "$task" && -n "$config" ]]; then
    fail "--task and --config go together (a lean tarball packs one task of one config)"
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
command -v "$python" >/dev/null 2>&1 || fail "Python interpreter '$python' not found: set PYTHON"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

# Check Docker before the (possibly long) model step, so a missing engine fails at once.
if [[ "$skip_image" != 1 ]]; then
    command -v "$docker" >/dev/null 2>&1 \
        || fail "$docker not found on PATH: install Docker (or podman with DOCKER=podman) to export the image, or run with --model-only (SKIP_IMAGE=1) for model.tar.gz alone"
    "$docker" info >/dev/null 2>&1 \
        || fail "cannot reach the container engine ('$docker info' failed): start Docker, or run with --model-only (SKIP_IMAGE=1) for model.tar.gz alone"
    "$docker" image inspect "$tag" >/dev/null 2>&1 \
        || fail "image $tag not found: build it first with ./build.sh $tag"
fi

mkdir -p "$output"
output="$(cd "$output" && pwd)"

model_name="model.tar.gz"
if [[ -n "$task" ]]; then
    model_name="model-$task.tar.gz"
    echo "== $model_name (lean: task $task of $config) from $weights" >&2
    "$python" -m pantherseg.container.lean_model --task "$task" --config "$config" \
        --weights "$weights" --output "$output/$model_name" \
        || fail "$model_name was not written (see the line above)"
else
    echo "== model.tar.gz from $weights" >&2
    "$python" -m pantherseg.container.model_tarball build \
        --weights "$weights" --output "$output/model.tar.gz" \
        || fail "model.tar.gz was not written (see the line above)"
fi

image_file=""
if [[ "$skip_image" != 1 ]]; then
    safe_tag="$(printf '%s' "$tag" | tr '/:@' '___')"
    image_file="$output/${safe_tag}_$(date +%Y%m%d_%H%M%S).tar.gz"
    partial="$image_file.partial"
    trap 'rm -f "$partial"' EXIT
    compressor=(gzip -c)
    if command -v pigz >/dev/null 2>&1; then compressor=(pigz -c); fi
    echo "== $(basename "$image_file") from image $tag ($docker save | ${compressor[0]}: minutes for a multi-GB image)" >&2
    "$docker" save "$tag" | "${compressor[@]}" >"$partial" \
        || fail "$docker save $tag failed"
    mv -f "$partial" "$image_file"
    trap - EXIT
fi

size_of() {
    "$python" -c 'import os, sys; from pantherseg.container.model_tarball import human_size; print(human_size(os.path.getsize(sys.argv[1])))' "$1"
}

echo
echo "Ready to upload (folder $output):"
if [[ -n "$image_file" ]]; then
    echo "  $(basename "$image_file")  $(size_of "$image_file")"
    echo "      -> grand-challenge: your algorithm > Containers > upload a container image"
fi
echo "  $model_name  $(size_of "$output/$model_name")"
echo "      -> grand-challenge: your algorithm > Models > upload a model (extracted to /opt/ml/model/)"
echo "Then, in the algorithm's settings, select a GPU and enough memory for its jobs (both easy to"
echo "forget), make the new image and model the active ones, and try one case before submitting."
