#!/usr/bin/env bash
# Container step of .ci/run: build ./Dockerfile and check inside the image what
# the image adds to the host's test run.
#
# Run from the repository root, as root:   bash .ci/container.sh
#
# The CI machine has no Docker engine and no image registry, so this step
#   1. installs Debian's podman, runc and debootstrap (if missing);
#   2. makes a Debian base image with debootstrap (python3, python3-venv,
#      ca-certificates) from the mirror apt already uses, and podman-imports
#      it. The rootfs tarball is cached in $GPUACT_CI_CACHE (default
#      /var/cache/gpuact-ci), keyed by suite, mirror, ISO week and host CA;
#   3. builds ./Dockerfile with --build-arg BASE=<that image>;
#   4. runs a small, explicit set of tests in the image (FAMILIES below) and
#      fails if one fails or is skipped: .ci/run has already run the whole
#      suite on the same sources, so the image needs only what it adds (the
#      install from .dockerignore's files, the import, the compiled CPU
#      kernels, the dependencies uv resolved): one test per backend and
#      kernel family, on NumPy (compiled and ufunc), on Numba's CUDA simulator
#      and on the CuPy stand-in;
#   5. removes everything again (podman system reset, work folder) on exit.
#
# It never skips: whatever keeps the step from running is an error, with a
# message saying why.
#
# Settings (environment):
#   GPUACT_CI_WORK    work folder, deleted afterwards  (default: .ci-work/container)
#   GPUACT_CI_CACHE   base tarball cache folder        (default: /var/cache/gpuact-ci)
#   GPUACT_CI_MIRROR  Debian mirror for debootstrap    (default: read from apt's sources)
#   GPUACT_CI_SUITE   Debian suite of the base         (default: bookworm)
#   GPUACT_CI_CA      CA bundle the base image trusts  (default: /etc/ssl/certs/ca-certificates.crt)

set -Eeuo pipefail

STEP_START=$SECONDS
say() { printf '==> container: %s\n' "$*"; }
die() { printf '==> container: FAILED: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

SUITE=${GPUACT_CI_SUITE:-bookworm}
WORK=${GPUACT_CI_WORK:-$REPO/.ci-work/container}
CACHE_DIR=${GPUACT_CI_CACHE:-/var/cache/gpuact-ci}
CA_BUNDLE=${GPUACT_CI_CA:-/etc/ssl/certs/ca-certificates.crt}
BASE_IMAGE=localhost/gpuact-ci-base:$SUITE
IMAGE=localhost/gpuact:ci
# Path of the host CA bundle inside the CI base image (a path of its own).
BASE_CA_PATH=/usr/local/share/gpuact-ci/host-ca-bundle.crt

# --- preconditions -----------------------------------------------------------
[[ -f Dockerfile && -f pyproject.toml ]] \
    || die "Dockerfile or pyproject.toml missing in $REPO"
[[ $(id -u) -eq 0 ]] \
    || die "must run as root (debootstrap and podman with overlay storage need it)"
[[ -r $CA_BUNDLE ]] || die "CA bundle $CA_BUNDLE not readable"
case $WORK in
    /*) ;;
    *) die "GPUACT_CI_WORK must be an absolute path, got '$WORK'" ;;
esac

# --- tools -------------------------------------------------------------------
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    say "installing podman runc debootstrap (missing: ${missing[*]})"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: this step needs a Debian host to install podman, runc and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq podman runc debootstrap >/dev/null \
        || die "apt-get install podman runc debootstrap failed"
fi
say "$(podman --version), $(runc --version | sed -n 1p)"

# --- cleanup (always) --------------------------------------------------------
podman_ready=0
cleanup() {
    local rc=$?
    trap - ERR
    set +e
    if ((podman_ready)); then
        podman system reset -f >"$WORK/reset.log" 2>&1 \
            || { echo "==> container: warning: podman system reset failed:"; cat "$WORK/reset.log"; }
    fi
    # Anything still mounted below WORK (debootstrap's /proc, overlay layers)
    # is unmounted before the folder is removed, deepest first.
    if [[ -d $WORK ]]; then
        awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts \
            | sort -r | while read -r m; do umount -l "$m"; done
        rm -rf --one-file-system "$WORK"
        # The default work folder's parent (.ci-work) goes too if now empty.
        [[ -n ${GPUACT_CI_WORK:-} ]] || rmdir "$REPO/.ci-work" 2>/dev/null
    fi
    # Processes this step started (conmon, container processes) must be gone.
    local left
    left=$(pgrep -f -- "$WORK" || true)
    if [[ -n $left ]]; then
        echo "==> container: warning: stopping leftover processes: $left"
        # shellcheck disable=SC2086
        kill $left 2>/dev/null
    fi
    local took=$((SECONDS - STEP_START))
    if ((rc == 0)); then
        say "PASSED: image built and its tests passed inside the container (${took}s)"
    else
        printf '==> container: FAILED (exit %s) after %ss\n' "$rc" "$took" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- podman configuration ----------------------------------------------------
if [[ -d $WORK ]]; then
    say "removing stale work folder $WORK"
    awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts \
        | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$WORK"
fi
mkdir -p "$WORK"

hard_nofile=$(ulimit -Hn)
[[ $hard_nofile == unlimited ]] && hard_nofile=1048576
hard_nproc=$(ulimit -Hu)
[[ $hard_nproc == unlimited ]] && hard_nproc=32768
nproc=$((hard_nproc < 32768 ? hard_nproc : 32768))

# runc: crun fails on this machine's hybrid cgroups. cgroupfs + file events:
# no systemd/journald here. Podman's default ulimits exceed the hard limits
# here and are refused, so the hard limits are used.
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=${hard_nofile}:${hard_nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$WORK/libpod-tmp"
EOF
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf
podman info --format '{{.Store.GraphDriverName}}' >"$WORK/info.log" 2>&1 \
    || { cat "$WORK/info.log" >&2; die "podman cannot start with $CONTAINERS_CONF"; }
podman_ready=1
say "podman storage: $(cat "$WORK/info.log") in $WORK/storage"

# --- base image --------------------------------------------------------------
# The mirror apt already uses for $SUITE (deb822 .sources or one-line .list).
find_mirror() {
    local f
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") \
                    && enabled != "no" && uri != "") { print uri; found = 1; exit }
                types = suites = uri = enabled = ""
            }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "uris:"    { uri = $2 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
    done
    shopt -u nullglob
}
MIRROR=${GPUACT_CI_MIRROR:-$(find_mirror | sed -n 1p)}
[[ -n $MIRROR ]] || die "no apt source for '$SUITE' found in /etc/apt/sources.list{,.d/}; set GPUACT_CI_MIRROR"

cache_key="$SUITE $MIRROR $(date -u +%G-W%V) ca:$(sha256sum <"$CA_BUNDLE" | cut -c1-16)"
if ! mkdir -p "$CACHE_DIR" 2>/dev/null || [[ ! -w $CACHE_DIR ]]; then
    say "cache folder $CACHE_DIR not writable; the base is built in $WORK and not kept"
    CACHE_DIR=$WORK/cache
    mkdir -p "$CACHE_DIR"
fi
BASE_TAR=$CACHE_DIR/$SUITE-base.tar
if [[ -s $BASE_TAR && -f $BASE_TAR.key && $(cat "$BASE_TAR.key") == "$cache_key" ]]; then
    say "base rootfs: cached $BASE_TAR ($cache_key)"
else
    say "base rootfs: debootstrap $SUITE from $MIRROR (python3, python3-venv, ca-certificates)"
    ROOT=$WORK/rootfs
    if ! timeout 1200 debootstrap --variant=minbase \
            --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 40 "$WORK/debootstrap.log" >&2
        die "debootstrap of $SUITE from $MIRROR failed (log above)"
    fi
    # The network goes through a proxy that re-signs TLS: inside this CI base
    # only, trust the host's CA bundle for pip and apt. (The Dockerfile stays
    # free of this; on a normal host it is not needed.)
    install -D -m 0644 "$CA_BUNDLE" "$ROOT$BASE_CA_PATH"
    printf '[global]\ncert = %s\n' "$BASE_CA_PATH" >"$ROOT/etc/pip.conf"
    printf 'Acquire::https::CAInfo "%s";\n' "$BASE_CA_PATH" \
        >"$ROOT/etc/apt/apt.conf.d/99gpuact-ci-host-ca"
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
    tar --one-file-system --numeric-owner -C "$ROOT" -cf "$BASE_TAR.tmp" .
    mv -f "$BASE_TAR.tmp" "$BASE_TAR"
    printf '%s\n' "$cache_key" >"$BASE_TAR.key"
    rm -rf --one-file-system "$ROOT"
    say "base rootfs: saved $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
fi
# SSL_CERT_FILE: uv (the Dockerfile's dependency step) reads no pip.conf; it takes this bundle
podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV SSL_CERT_FILE=$BASE_CA_PATH" \
    --change 'CMD ["/bin/bash"]' \
    "$BASE_TAR" "$BASE_IMAGE" >/dev/null \
    || die "podman import of $BASE_TAR failed"
say "base image: $BASE_IMAGE imported"

# --- build -------------------------------------------------------------------
say "building image $IMAGE from ./Dockerfile (BASE=$BASE_IMAGE)"
t0=$SECONDS
timeout 2400 podman build --network=host --pull=never \
    --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" -f Dockerfile . \
    || die "podman build of ./Dockerfile failed"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
case ${user%%:*} in
    "" | 0 | root) die "image runs as root (USER='$user'); the Dockerfile must set a non-root USER" ;;
esac
say "image built in $((SECONDS - t0))s: $IMAGE, $(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec) , USER $user"

# --- test --------------------------------------------------------------------
# One test per kernel family, {be} standing for the backend's parameter of the
# `be` fixture. Named one by one: pytest fails on an id that no longer exists,
# so a renamed test shows up here instead of silently leaving the set.
FAMILIES=(
    "tests/test_activations.py::test_random_values[{be}-gelu-float32]"
    "tests/test_softmax.py::test_every_axis_float32[{be}-(4, 33)-axis-1-softmax]"
    "tests/test_softmax.py::test_every_axis_float32[{be}-(3, 5, 6)-axis0-log_softmax]"
    "tests/test_softmax.py::test_glu[{be}-shape2--1-float32]"
    "tests/test_softmax.py::test_sparsemax[{be}-shape1--1-float32]"
    "tests/test_backward.py::test_gradient_against_the_hand_derived_reference[{be}-gelu-float32]"
    "tests/test_backward.py::test_softmax_backward[{be}-float32-shape1--1-softmax]"
    "tests/test_backward.py::test_sparsemax_backward[{be}-shape1--1]"
    "tests/test_backward.py::test_glu_backward[{be}-float32-shape1--1]"
    "tests/test_backward.py::test_forward_and_backward_with_a_bias[{be}-float32-(1, 8)]"
)
families() { local f b; for b; do for f in "${FAMILIES[@]}"; do printf '%s\n' "${f//\{be\}/$b}"; done; done; }
mapfile -t NUMPY_TESTS < <(
    printf '%s\n' \
        tests/test_native_cpu.py::test_library_is_built_wherever_a_compiler_is \
        tests/test_native_cpu.py::test_every_op_is_exported \
        tests/test_native_cpu.py::test_public_calls_use_the_compiled_kernels_and_threads \
        tests/test_api.py::test_numpy_use_imports_neither_cupy_nor_numba
    families numpy numpy-ufunc
)
mapfile -t NUMBA_TESTS < <(families numba)
mapfile -t CUPY_TESTS < <(families cupy; echo tests/test_launch_contract.py::test_no_host_synchronisation_inside_gpuact)

# image_tests NAME ENV... -- TESTS...: one pytest in a fresh container, with
# its header (no -q: the "gpuact:" line says which mode ran); -rs lists skips,
# and a skip fails the step (the image has every extra these tests need).
image_tests() {
    local name=$1 envs=() t0=$SECONDS rc=0 header
    shift
    while [[ $1 != -- ]]; do envs+=(-e "$1"); shift; done
    shift
    say "tests in the image, $name: $# tests"
    timeout 900 podman run --rm --network=host --name "gpuact-ci-test-$name" "${envs[@]}" "$IMAGE" \
        python -m pytest -p no:cacheprovider -rs "$@" 2>&1 | tee "$WORK/test-$name.log" || rc=${PIPESTATUS[0]}
    header=$(grep -m 1 '^gpuact:' "$WORK/test-$name.log" || true)
    [[ -n $header ]] || say "warning: no 'gpuact:' line in the pytest header (mode not reported)"
    ((rc == 0)) || die "tests failed in the image ($name, exit $rc, $((SECONDS - t0))s)"
    ! grep -q '^SKIPPED' "$WORK/test-$name.log" || die "tests skipped in the image ($name): see the SKIPPED lines above"
    say "$name: passed in $((SECONDS - t0))s ($header)"
}
t0=$SECONDS
image_tests numpy GPUACT_TEST_BACKENDS=numpy -- "${NUMPY_TESTS[@]}"
image_tests numba-simulator NUMBA_ENABLE_CUDASIM=1 GPUACT_TEST_BACKENDS=numba -- "${NUMBA_TESTS[@]}"
image_tests cupy-standin GPUACT_CUPY_STANDIN=1 GPUACT_TEST_BACKENDS=cupy -- "${CUPY_TESTS[@]}"
say "tests in the image passed in $((SECONDS - t0))s"
