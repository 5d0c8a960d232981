#!/usr/bin/env bash
# Build a local stand-in for the Dockerfile's base image (pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime)
# on a machine that cannot reach Docker Hub: Debian bookworm (Python 3.11) by debootstrap, imported
# into podman, plus torch 2.13.0 (CPU build). See Standin.Containerfile for what matches and what
# differs from the real base.
#
#   test/container/build_standin.sh [TAG]
#
# TAG defaults to localhost/pantherseg-base-standin:torch2.13.0-cpu. Needs root, podman, runc and
# debootstrap (test/container/setup_engine.sh installs them); reuses an existing root file system
# image. DEBIAN_MIRROR (default http://deb.debian.org/debian) and WHEELS_DIR (default /opt/wheels,
# which must hold torch-2.13.0+cpu-cp311-*.whl) adjust it.
set -euo pipefail

fail() {
    echo "build_standin.sh: error: $*" >&2
    exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tag="${1:-localhost/pantherseg-base-standin:torch2.13.0-cpu}"
rootfs_image="localhost/pantherseg-standin-rootfs:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
wheels="${WHEELS_DIR:-/opt/wheels}"

((EUID == 0)) || fail "run as root (debootstrap and rootful podman need it)"
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: run test/container/setup_engine.sh first"
done
compgen -G "$wheels/torch-2.13.0+cpu-cp311-*.whl" >/dev/null \
    || fail "no torch-2.13.0+cpu wheel for Python 3.11 in $wheels: set WHEELS_DIR to a folder holding one"

if ! podman image exists "$rootfs_image"; then
    rootfs="$(mktemp -d /var/tmp/pantherseg-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    echo "== debootstrap Debian bookworm (Python 3.11) into $rootfs" >&2
    debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; fail "debootstrap failed (log above)"; }
    rm -f "$rootfs.log"
    # Smaller and reproducible: no package lists or caches in the image.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    echo "== podman import -> $rootfs_image" >&2
    tar -C "$rootfs" -c . | podman import --change 'CMD ["python"]' - "$rootfs_image" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi

echo "== podman build $tag (torch 2.13.0+cpu from $wheels)" >&2
podman build \
    --platform=linux/amd64 \
    --volume /etc/ssl/certs:/etc/ssl/certs:ro \
    --volume "$wheels:/opt/wheels:ro" \
    --build-arg "ROOTFS_IMAGE=$rootfs_image" \
    --file "$here/Standin.Containerfile" \
    --tag "$tag" \
    "$here" >&2
echo "$tag"
