"""The gated units, glu and its GLU variants swiglu, geglu and reglu, forward and backward, on every
backend (the ``be`` fixture), against float64 references written from their definitions
(tests/reference.py GATED), against central differences, and against the compositions PyTorch
and JAX users write (``silu(a) * b``).

Tolerances: the contract's (float16 1e-3, float32 1e-5 / 1e-6, float64 1e-12 / 1e-14), checked
against the float64 reference rounded to the dtype; the finite-difference checks run in float64
with step 1e-6 |x| (truncation and rounding both near 1e-10) away from relu's kink at 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact._contract.ops import GATES
from tests import reference
from tests.reference import assert_close

FLOATS = [np.float16, np.float32, np.float64]
# (public name, kwargs, the gate's name in the op table)
UNITS = [
    ("glu", {}, "glu"),
    ("swiglu", {}, "swiglu"),
    ("geglu", {}, "geglu"),
    ("geglu", {"approximate": True}, "geglu_tanh"),
    ("reglu", {}, "reglu"),
]
IDS = [gate for _, _, gate in UNITS]
SHAPES = [((8,), -1), ((4, 6), 0), ((3, 4, 10), -1), ((2, 6, 3), 1)]


def _inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, shape).astype(dtype)


def test_every_gate_is_tested():
    assert {gate for _, _, gate in UNITS} == set(GATES) == set(reference.GATED)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_forward_against_the_reference(be, name, kwargs, gate, shape, axis, dtype):
    x = _inputs(shape, dtype, seed=20)
    y = getattr(gpuact, name)(be.asarray(x), axis=axis, **kwargs)
    expected = reference.gated(gate, x, axis)
    assert isinstance(y, be.array_type()) and y.shape == expected.shape and y.dtype == dtype
    assert_close(be.to_numpy(y), expected, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_backward_against_the_reference(be, name, kwargs, gate, shape, axis, dtype):
    x = _inputs(shape, dtype, seed=21)
    half = reference.gated(gate, x, axis).shape
    dy = np.random.default_rng(22).uniform(-2, 2, half).astype(dtype)
    dx = getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), axis=axis, **kwargs)
    assert isinstance(dx, be.array_type()) and dx.shape == x.shape and dx.dtype == dtype
    assert_close(be.to_numpy(dx), reference.gated_grad(gate, dy, x, axis), dtype)


@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_backward_against_central_differences(be, name, kwargs, gate):
    rng = np.random.default_rng(23)
    x = rng.uniform(-4, 4, (3, 8))
    x[np.abs(x) < 1e-3] = 0.5  # away from reglu's kink
    dy = rng.normal(0, 1, (3, 4))
    dx = be.to_numpy(getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), **kwargs))

    def loss(v):
        return float((be.to_numpy(getattr(gpuact, name)(be.asarray(v), **kwargs)) * dy).sum())

    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        h = 1e-6 * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (loss(up) - loss(down)) / (2 * h)
    np.testing.assert_allclose(dx, numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_nan_and_infinities_follow_the_product(be, name, kwargs, gate):
    # (gate, value) pairs, laid out in the unit's halves; op(+-inf) is the op's limit, and the
    # product is IEEE's: 0 * inf is NaN
    pairs = [(math.nan, 1.0), (1.0, math.nan), (math.inf, 2.0), (-math.inf, 2.0), (0.5, math.inf), (-3.0, -math.inf)]
    g = np.array([p[0] for p in pairs], np.float32)
    v = np.array([p[1] for p in pairs], np.float32)
    first = GATES[gate].gate_half
    x = np.concatenate([g, v] if first == 0 else [v, g])
    got = be.to_numpy(getattr(gpuact, name)(be.asarray(x), **kwargs))
    expected = reference.gated(gate, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert_close(got, expected, np.float32)


@pytest.mark.parametrize("name", ["swiglu", "geglu", "reglu"])
def test_bad_calls_raise(be, name):
    fn = getattr(gpuact, name)
    with pytest.raises(ValueError, match="odd"):
        fn(be.asarray(np.ones((2, 5), np.float32)))
    with pytest.raises(TypeError, match="two-tensor form"):
        fn(be.asarray(np.ones(4, np.float32)), be.asarray(np.ones(4, np.float32)))
    with pytest.raises(ValueError, match="shape"):
        getattr(gpuact.backward, name)(be.asarray(np.ones(4, np.float32)), be.asarray(np.ones(4, np.float32)))


def test_against_the_torch_and_jax_compositions():
    x = np.random.default_rng(24).normal(0, 2, (5, 16))
    a, b = x[:, :8], x[:, 8:]
    torch = pytest.importorskip("torch")
    ta, tb = torch.tensor(a), torch.tensor(b)
    functional = torch.nn.functional
    np.testing.assert_allclose(gpuact.swiglu(x), (functional.silu(ta) * tb).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gpuact.geglu(x), (functional.gelu(ta) * tb).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        gpuact.geglu(x, approximate=True),
        (functional.gelu(ta, approximate="tanh") * tb).numpy(),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_allclose(gpuact.reglu(x), (functional.relu(ta) * tb).numpy(), rtol=1e-12, atol=1e-14)
    jax = pytest.importorskip("jax")
    # JAX in float32 (its default): within the float32 contract of gpuact's float32 result
    a32, b32, x32 = a.astype(np.float32), b.astype(np.float32), x.astype(np.float32)
    ja, jb = jax.numpy.asarray(a32), jax.numpy.asarray(b32)
    assert_close(gpuact.swiglu(x32), np.asarray(jax.nn.silu(ja) * jb, np.float64), np.float32)
    assert_close(gpuact.geglu(x32), np.asarray(jax.nn.gelu(ja, approximate=False) * jb, np.float64), np.float32)
    assert_close(gpuact.geglu(x32, approximate=True), np.asarray(jax.nn.gelu(ja) * jb, np.float64), np.float32)
