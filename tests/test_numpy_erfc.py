"""The NumPy path's own erfc (for gelu): its coefficients re-derived, its accuracy on a dense grid."""

from __future__ import annotations

import numpy as np
import pytest

import gpuact
from gpuact.backends.numpy_backend import formulas

special = pytest.importorskip("scipy.special")  # in the test extras: the truth for erfc
chebyshev = np.polynomial.chebyshev


def _fit(degree):
    """The fit the committed tables come from: g(u) = log(erfcx(x)) - log(t), t = 1/(1 + x/2), u = 2t - 1."""
    k = np.arange(4000)
    u = np.cos(np.pi * (k + 0.5) / 4000)
    u = u[u > -0.99999]
    t = (u + 1) / 2
    x = 2 / t - 2
    g = np.log(special.erfcx(x)) - np.log(t)
    return chebyshev.cheb2poly(chebyshev.chebfit(u, g, degree))[::-1]


@pytest.mark.parametrize("table,degree", [(formulas.ERFC_G32, 10), (formulas.ERFC_G64, 22)])
def test_committed_coefficients_are_the_fit(table, degree):
    np.testing.assert_allclose(table, _fit(degree), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float32, 1e-5, 1e-6), (np.float64, 1e-12, 1e-14)])
def test_gelu_against_scipy_on_a_dense_grid(dtype, rtol, atol):
    x = np.concatenate([np.linspace(-40, 40, 200001), -np.logspace(-8, 3, 2000), np.logspace(-8, 3, 2000)])
    x = x.astype(dtype)
    exact = 0.5 * x.astype(np.float64) * special.erfc(-x.astype(np.float64) / np.sqrt(2))
    np.testing.assert_allclose(gpuact.gelu(x), exact.astype(dtype), rtol=rtol, atol=atol)
