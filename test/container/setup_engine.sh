#!/usr/bin/env bash
# Install what the container test needs on a Debian machine with no Docker engine: podman, runc and
# debootstrap from Debian's packages. Does nothing for a tool already on PATH. Needs root.
#
#   test/container/setup_engine.sh
set -euo pipefail

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]} == 0)); then
    exit 0
fi
if ((EUID != 0)) || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_engine.sh: error: ${missing[*]} missing; install them (Debian: apt-get install ${missing[*]}) as root" >&2
    exit 1
fi
echo "== apt-get install ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
