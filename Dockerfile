# gpuact test image.
#
#   GPU host (NVIDIA driver + nvidia-container-toolkit):
#     docker build -t gpuact . && docker run --rm --gpus all gpuact
#   CPU-only host (same image, tests run on the NumPy fallback):
#     docker run --rm gpuact
#
# BASE must be a Debian/Ubuntu-like image. The default, an NVIDIA CUDA 12
# *runtime* image, carries the CUDA 12 user-space libraries that cupy-cuda12x
# loads (cudart, nvrtc, cuBLAS, ...); the driver itself is mounted in by the
# NVIDIA container toolkit when the container is started with --gpus.
# CI builds this same file with --build-arg BASE=<a Debian bookworm image>.
ARG BASE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
FROM ${BASE}

# Extras of pyproject.toml installed into the image.
ARG EXTRAS=cuda12,test

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A private venv, whatever Python layout the base has, and a C++ compiler, which
# `pip install .` below uses to build the NumPy path's compiled kernels
# (hatch_build.py, a Python extension module: it needs Python.h). python3 comes
# from apt only when the base cannot make a venv itself (the CUDA images ship no
# Python at all); python3-dev whenever the base's Python has no headers (Debian's
# python3 package has none).
# DL3008 (pin apt package versions) is ignored: the apt release depends on
# BASE, a build argument; a pin valid for one base (e.g. Ubuntu 24.04) does not
# exist on another (e.g. Debian 12), so the base image tag pins these packages.
# SC2086: ${python_pkgs} is meant to split into package names (or nothing).
# hadolint ignore=DL3008,SC2086
RUN python_pkgs="" \
    && if ! python3 -m venv /tmp/venv-probe >/dev/null 2>&1; then \
        python_pkgs="ca-certificates python3 python3-venv python3-dev"; \
    elif ! python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
        python_pkgs="python3-dev"; \
    fi \
    && rm -rf /tmp/venv-probe \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ ${python_pkgs} \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && python --version \
    && g++ -dumpfullversion \
    && useradd --no-log-init --create-home --uid 10001 --user-group gpuact \
    && install -d -o gpuact -g gpuact /home/gpuact/gpuact

# The tests write caches (.pytest_cache, .hypothesis) here: owned by the user.
WORKDIR /home/gpuact/gpuact

# Dependencies first, from pyproject.toml alone, so that a change to the code
# reuses this layer: uv reads the base dependencies and those of the extras in
# EXTRAS from pyproject.toml (and hatchling, the build backend the last step
# uses without network).
# SC2046 and DL4006: the --extra flags are meant to split into words, and the
# pipe (echo into tr) cannot fail.
COPY pyproject.toml ./
# hadolint ignore=SC2046,DL4006
RUN pip install --no-cache-dir "uv==0.13.9" \
    && uv pip install --no-cache -r pyproject.toml "hatchling>=1.18" \
        $(printf -- '--extra %s ' $(echo "$EXTRAS" | tr ',' ' '))

# The project itself: only what .dockerignore lets through (package, CUDA
# sources, tests, the build hook). No network needed here: dependencies are
# already present. The build hook compiles gpuact/_gpuact_cpu.so in this tree,
# which is where the tests import gpuact from. The build stops here if the hook
# could not compile it (a wheel without it would run, slower, on plain ufuncs).
COPY --chown=10001:10001 . ./
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check \
    && python -c "from gpuact.backends import _native; assert _native.available(), _native.unavailable_reason()"

USER 10001:10001

# README's test command. The pytest header line "gpuact: ..." says whether
# the GPU tests ran or the CPU fallback did; the echo says whether a GPU was
# handed to the container at all.
CMD ["sh", "-c", "if nvidia-smi -L >/dev/null 2>&1; then echo \"container: NVIDIA GPU visible: $(nvidia-smi -L | head -n 1)\"; else echo 'container: no NVIDIA GPU visible (run with --gpus all on a GPU host); expecting the CPU fallback'; fi; exec python -m pytest"]
