# PANTHER pancreatic-tumour segmentation: the grand-challenge.org algorithm container.
#
# Build: ./build.sh [TAG]            (needs BuildKit, the default since Docker 23)
#        ./build.sh --bake-weights   (copies weights/ to /opt/app/weights, for local use only)
# Run:   test/run_docker.sh [TAG]    (the way grand-challenge runs it: no network, read-only /input)
#
# Base: the official PyTorch runtime image, torch 2.13.0 (installed as 2.13.0+cu126), CUDA 12.6,
# cuDNN 9; its Python is marked externally managed (PEP 668), hence --break-system-packages below.
# CUDA 12.6 runs on grand-challenge's T4 (sm_75) and A10G (sm_86) with any driver >= 525.
# The tag is public and referenced, with the same digest, by many projects; to lock it further,
# append @sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4 (the digest those
# projects record; check it with `docker buildx imagetools inspect` before relying on it).
#
# Expected size (estimate, not measured here: no Docker engine on the build machines): about 9 GB
# unpacked (base image about 7.5 GB, runtime dependencies about 1.5 GB) and about 4 GB as the
# `docker save | gzip` upload. Weights are not in the image; they go up separately as model.tar.gz.

# BAKE_WEIGHTS=true copies weights/ into the image (final stage "weights-true"); only the stage
# that is used is built, so the default build never reads weights/.
ARG BAKE_WEIGHTS=false

# The base image. Keep the default for every image that leaves this machine. The container test on
# machines without Docker Hub passes a local stand-in (test/container/build_standin.sh) together
# with TORCH_CUDA=none; see docs/container.md for how the two differ.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

# DL3029: grand-challenge runs linux/amd64 only. Naming the platform here means a build on an
# arm64 machine (Apple silicon) still produces the image the platform can run.
# DL3006: the tag is in BASE_IMAGE above, which hadolint cannot see through.
# hadolint ignore=DL3029,DL3006
FROM --platform=linux/amd64 ${BASE_IMAGE} AS runtime

# The CUDA major version the self-check below requires of torch: 12 on the real base. "none" is only
# for the CPU stand-in base: the check then requires a CPU build instead, and says so in the log.
ARG TORCH_CUDA=12

# Nothing writes outside /tmp at run time (the only writable folder on grand-challenge, and empty
# at start), nothing tries the network (there is none), and Python output is not buffered, so the
# last line of stderr (what grand-challenge shows on failure) is always there.
# nnU-Net's nnUNet_raw/_preprocessed/_results are deliberately unset: inference loads every member
# from an explicit folder and nnU-Net 2.8 only needs them for training.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    TORCH_HOME=/tmp/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton \
    CUDA_CACHE_PATH=/tmp/nv-compute-cache \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    nnUNet_compile=false

# The user grand-challenge runs as (it rejects an image whose USER is empty, root or 0).
# A fixed numeric id, so that USER below is numeric and the run scripts can rely on it.
RUN groupadd --gid 10001 user \
    && useradd --uid 10001 --gid user --create-home --home-dir /home/user \
        --shell /usr/sbin/nologin --no-log-init user

WORKDIR /opt/app

# Dependencies first: this layer is rebuilt only when requirements.txt changes, not on every code
# change. The check after it fails the build if pip replaced the base image's torch, if torch is not
# the CUDA build TORCH_CUDA names, if torchvision's build does not match torch (it would raise at
# import), or if onnxruntime-gpu has no CUDA provider. No GPU is needed for these checks.
COPY requirements.txt /opt/app/requirements.txt
COPY resources/container_selfcheck.py /opt/app/container_selfcheck.py
RUN python -m pip install --no-cache-dir --break-system-packages --requirement /opt/app/requirements.txt \
    && python /opt/app/container_selfcheck.py --torch-cuda "${TORCH_CUDA}" \
    && rm /opt/app/container_selfcheck.py

# The code: only what inference needs at run time (resources/ and tests/ stay out, see .dockerignore).
COPY --chown=user:user pyproject.toml ensemble_config.json inference.py /opt/app/
COPY --chown=user:user pantherseg /opt/app/pantherseg

# Default: no weights in the image. grand-challenge mounts the uploaded model tarball at /opt/ml/model.
FROM runtime AS weights-false

# Local use only: inference.py falls back to /opt/app/weights when /opt/ml/model is absent or empty.
FROM runtime AS weights-true
COPY --chown=user:user weights /opt/app/weights

# DL3006: this FROM names one of the two stages above, picked by the BAKE_WEIGHTS build argument,
# not an image from a registry; there is no tag to pin.
# hadolint ignore=DL3006
FROM weights-${BAKE_WEIGHTS} AS final
USER 10001:10001
ENTRYPOINT ["python", "inference.py"]
