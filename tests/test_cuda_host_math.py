"""The kernels' elementwise math (kernels/gpuact_math.cuh), compiled for the host with g++ -O2
(no fast-math), against the NumPy backend, element by element, float32 and float64.

The very functions the CUDA kernels inline are called here; only the math library underneath
differs (glibc here, CUDA's libdevice there; both document <= 2-4 ulp for these functions).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from gpuact._contract.ops import ELEMENTWISE_OPS  # noqa: E402
from gpuact.backends import numpy_backend  # noqa: E402
from tests import reference  # noqa: E402
from tests.cuda_shim import gpuact_cuda_build as build

pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]

INF = math.inf
# parameter sets per op (canonical order of gpuact._contract.ops), several where the code branches
PARAMS = reference.with_derivative_ops(
    {
        "relu": [
            (0.0, 0.0, -INF, INF),
            (0.0, 0.0, 0.0, 6.0),
            (0.1, 0.5, 0.0, 6.0),
            (0.3, -1.0, -INF, INF),
            (0.0, 2.0, -INF, INF),
        ],
        "elu": [(1.0,), (0.5,)],
        "celu": [(1.0,), (2.0,)],
        "leaky_relu": [(0.2,), (0.0,)],
        "hard_shrink": [(0.5,), (0.0,)],
        "soft_shrink": [(0.5,), (2.0,)],
        "threshold": [(1.0, -5.0), (-1.0, 0.0)],
        "squareplus": [(4.0,), (0.0,), (0.5,)],
    }
)

# Ulp bounds, host (glibc) vs NumPy; each library function is within ~1-2 ulp of the true value
# on both sides, so a single call differs by <= 2-4 ulp:
#   default 4: one libm call (exp, expm1, tanh, log1p, hypot) plus a few correctly rounded +,*,/;
#   gelu 64: the reference's erfc (SciPy/cephes) computes 1 - erf(z) for |z| < 1 in float64 and
#     loses up to ~50 ulp there (relative 1e-14, far inside the contract's float64 rtol 1e-12); glibc's
#     erfc is within 1 ulp. In float32 SciPy evaluates in double and rounds: both within 4 ulp;
#   mish / softplus / log_sigmoid 8: log1p(exp(.)) chains two calls, then tanh / an add.
# Where a result comes from cancelling terms (tanh_shrink = x - tanh(x) near 0, log_sigmoid and
# softplus near where max(x,0) and the log1p term cancel, gelu_tanh around 0), an ulp bound of
# the *result* says nothing; there an absolute bound of a few ulp of the operands applies:
# ABS_EPS x eps x max(1, |x|). Everything else must be within its ulp bound.
# The derivative ops d_silu, d_gelu and d_gelu_tanh compute a first derivative with a zero (silu'
# near -1.28, gelu' near -0.75), where Phi(x) + x phi(x) (or its sigmoid twin) cancels: absolute
# bounds. d_gelu 16: Phi(x) as the sum's larger term carries gelu's erfc difference (above).
ULPS = {"gelu": 64, "mish": 8, "softplus": 8, "log_sigmoid": 8, "gelu_tanh": 8, "d_gelu": 64, "d_gelu_tanh": 8}
ABS_EPS = {
    "tanh_shrink": 4,
    "gelu_tanh": 4,
    "log_sigmoid": 2,
    "softplus": 2,
    "mish": 4,
    "silu": 2,
    "gelu": 4,
    "d_silu": 2,
    "d_gelu": 16,
    "d_gelu_tanh": 4,
}

EDGE = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    1.0,
    -1.0,
    20.0,
    -20.0,
    88.0,
    -88.0,
    89.0,
    -89.0,
    1e4,
    -1e4,
    1e5,
    -1e5,
    INF,
    -INF,
    math.nan,
    0.5,
    -0.5,
    0.49999997,
    0.50000006,
    2.0,
    -2.0,
    3.0,
    -3.0,
    6.0,
    6.0000005,
    -6.0,
    1.0000001,
    0.99999994,
    -0.99999994,
    -1.0000001,
    5.0,
    4.9999995,
    709.0,
    -709.0,
    710.0,
    -745.0,
    1e-30,
    -1e-30,
    1e-40,
    3e38,
    -3e38,
    1e300,
    -1e300,
]


def _inputs(dtype):
    rng = np.random.default_rng(1234)
    finfo = np.finfo(dtype)
    edge = np.array([v for v in EDGE if not np.isfinite(v) or abs(v) <= float(finfo.max)], dtype=np.float64)
    random = np.concatenate(
        [
            rng.normal(0, 3, 4000),
            rng.uniform(-100, 100, 2000),
            rng.standard_cauchy(1000) * 10,
            np.linspace(-12, 12, 2001),
        ]
    )
    return np.concatenate([edge, random]).astype(dtype)


HOST_SOURCE_HEAD = '#include "gpuact_math.cuh"\n#include "gpuact_grad.cuh"\n'


def _host_source() -> str:
    lines = [HOST_SOURCE_HEAD]
    for op in ELEMENTWISE_OPS:
        for ctype, tag in (("float", "f32"), ("double", "f64")):
            lines.append(
                f'extern "C" void host_{op}_{tag}(const {ctype}* x, {ctype}* y, long n, '
                f"double p0, double p1, double p2, double p3) {{\n"
                f"  for (long i = 0; i < n; ++i) y[i] = ga::{op}<{ctype}>(x[i], ({ctype})p0, ({ctype})p1, "
                f"({ctype})p2, ({ctype})p3);\n}}\n"
            )
    return "".join(lines)


@pytest.fixture(scope="session")
def host_lib(tmp_path_factory):
    so = build.build_shared(_host_source(), tmp_path_factory.mktemp("gpuact_host_math"), std="c++17")
    return ctypes.CDLL(str(so))


def _host_call(lib, op, x, params):
    tag = "f32" if x.dtype == np.float32 else "f64"
    fn = getattr(lib, f"host_{op}_{tag}")
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long] + [ctypes.c_double] * 4
    y = np.empty_like(x)
    p = tuple(params) + (0.0,) * (4 - len(params))
    fn(x.ctypes.data, y.ctypes.data, x.size, *p)
    return y


def _ulp_distance(a, b):
    """Ulps between same-dtype finite values (via the ordered integer representation)."""
    itype = np.int32 if a.dtype == np.float32 else np.int64
    ia = a.view(itype).astype(np.int64)
    ib = b.view(itype).astype(np.int64)
    big = np.int64(np.iinfo(itype).min)
    ia = np.where(ia < 0, big - ia, ia)
    ib = np.where(ib < 0, big - ib, ib)
    return np.abs(ia - ib)


def _cases():
    for op in ELEMENTWISE_OPS:
        for params in PARAMS.get(op, [()]):
            for dtype in (np.float32, np.float64):
                yield pytest.param(op, params, dtype, id=f"{op}-{params}-{np.dtype(dtype).name}")


# against the ufunc formulas: the compiled CPU kernels share this very math and prove nothing here
@pytest.mark.usefixtures("numpy_ufunc_path")
@pytest.mark.parametrize("op, params, dtype", list(_cases()))
def test_host_math_matches_numpy(host_lib, op, params, dtype):
    x = _inputs(dtype)
    got = _host_call(host_lib, op, x, params)
    want = numpy_backend.elementwise(op, x, params, None, np.dtype(dtype))
    # NaN exactly where NumPy has NaN
    nan_mismatch = np.isnan(got) != np.isnan(want)
    assert not nan_mismatch.any(), (
        f"NaN differs at x={x[nan_mismatch][:8]}: got {got[nan_mismatch][:8]}, want {want[nan_mismatch][:8]}"
    )
    # infinities exactly
    fin = np.isfinite(want)
    inf_mismatch = ~fin & ~np.isnan(want) & (got != want)
    assert not inf_mismatch.any(), f"inf differs at x={x[inf_mismatch][:8]}: got {got[inf_mismatch][:8]}"
    assert np.isfinite(got[fin]).all(), f"non-finite result where NumPy is finite at x={x[fin & ~np.isfinite(got)][:8]}"
    g, w, xs = got[fin], want[fin], x[fin]
    ulps = _ulp_distance(g, w)
    # zeros of either sign are the same value
    ulps = np.where((g == 0) & (w == 0), 0, ulps)
    bound = ULPS.get(op, 4)
    eps = np.finfo(dtype).eps
    scale = np.maximum(1.0, np.abs(np.where(np.isfinite(xs), xs, 1.0).astype(np.float64)))
    abs_ok = np.abs(g.astype(np.float64) - w) <= ABS_EPS.get(op, 0) * eps * scale
    bad = (ulps > bound) & ~abs_ok
    worst = np.argmax(ulps[bad]) if bad.any() else 0
    assert not bad.any(), (
        f"{op}{params} {np.dtype(dtype).name}: {bad.sum()} values beyond {bound} ulp; worst at "
        f"x={xs[bad][worst]!r}: got {g[bad][worst]!r}, want {w[bad][worst]!r} ({ulps[bad].max()} ulp)"
    )
