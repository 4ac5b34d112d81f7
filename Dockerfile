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
# (hatch_build.py). python3 comes from apt only when the base cannot make a venv
# itself (the CUDA images ship no Python at all).
# DL3008 (pin apt package versions) is ignored: the apt release depends on
# BASE, a build argument; a pin valid for one base (e.g. Ubuntu 24.04) does not
# exist on another (e.g. Debian 12), so the base image tag pins these packages.
# SC2086: ${python_pkgs} is meant to split into package names (or nothing).
# hadolint ignore=DL3008,SC2086
RUN python_pkgs="" \
    && if ! python3 -m venv /tmp/venv-probe >/dev/null 2>&1; then \
        python_pkgs="ca-certificates python3 python3-venv"; \
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
# reuses this layer. Installs the build backend (build-system.requires), the
# base dependencies and those of the extras in EXTRAS (following extras that
# name the project itself, e.g. "gpuact[cuda12]").
COPY pyproject.toml ./
RUN python -c "import sys; \
t = __import__('tomllib') if sys.version_info >= (3, 11) \
    else __import__('pip._vendor.tomli', fromlist=['loads']); \
from pip._vendor.packaging.requirements import Requirement as R; \
from pip._vendor.packaging.utils import canonicalize_name as cn; \
p = t.load(open('pyproject.toml', 'rb')); \
me = cn(p['project']['name']); \
opt = p['project'].get('optional-dependencies', {}); \
ex = lambda reqs, seen: [y for r in map(R, reqs) for y in ( \
    ex(sum((opt.get(e, []) for e in sorted(r.extras - seen)), []), \
       seen | r.extras) if cn(r.name) == me else [str(r)])]; \
out = (p.get('build-system', {}).get('requires', []) \
       + p['project'].get('dependencies', []) \
       + ex([me + '[' + sys.argv[1] + ']'], set())); \
open('/tmp/requirements.txt', 'w').write(''.join(x + '\n' for x in out))" \
        "$EXTRAS" \
    && cat /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself: only what .dockerignore lets through (package, CUDA
# sources, tests, the build hook). No network needed here: dependencies are
# already present. The build hook compiles gpuact/_gpuact_cpu.so in this tree,
# which is where the tests import gpuact from.
COPY --chown=10001:10001 . ./
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check

USER 10001:10001

# README's test command. The pytest header line "gpuact: ..." says whether
# the GPU tests ran or the CPU fallback did; the echo says whether a GPU was
# handed to the container at all.
CMD ["sh", "-c", "if nvidia-smi -L >/dev/null 2>&1; then echo \"container: NVIDIA GPU visible: $(nvidia-smi -L | head -n 1)\"; else echo 'container: no NVIDIA GPU visible (run with --gpus all on a GPU host); expecting the CPU fallback'; fi; exec python -m pytest"]
