"""JAX arrays: eager round trips (a JAX array back), and gpuact.jax under jit, grad and vmap,
against jax.nn where the semantics agree."""

from __future__ import annotations

import numpy as np
import pytest

import gpuact
from gpuact import activations

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import gpuact.jax as gj  # noqa: E402

CALLS = [
    (name, {"threshold": 0.5, "default_value": -1.0} if name == "threshold" else {}) for name in activations.__all__
]


def _x(shape=(6, 8), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 2, shape).astype(np.float32))


@pytest.mark.parametrize("name,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_eager_arrays_come_back_as_jax_arrays(name, kwargs):
    x = _x()
    y = getattr(gpuact, name)(x, **kwargs)
    assert isinstance(y, jax.Array) and y.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(y), getattr(gpuact, name)(np.asarray(x), **kwargs))
    with pytest.raises(TypeError, match="immutable"):
        getattr(gpuact, name)(x, out=jnp.zeros_like(x), **kwargs)


@pytest.mark.parametrize("name,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_jit_and_grad_call_gpuact(name, kwargs):
    x = _x((4, 6), seed=1)
    fn = getattr(gj, name)
    y = jax.jit(lambda a: fn(a, **kwargs))(x)
    np.testing.assert_array_equal(np.asarray(y), getattr(gpuact, name)(np.asarray(x), **kwargs))
    w = _x(y.shape, seed=2)
    g = jax.grad(lambda a: (fn(a, **kwargs) * w).sum())(x)
    want = getattr(gpuact.backward, name)(np.asarray(w), np.asarray(x), **kwargs)
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-6, atol=1e-7)


PARITY = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
    "tanh": jnp.tanh,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "hard_tanh": jax.nn.hard_tanh,
    "log_sigmoid": jax.nn.log_sigmoid,
    "celu": jax.nn.celu,
}


@pytest.mark.parametrize("name", list(PARITY))
def test_values_and_gradients_match_jax_nn(name):
    x = _x((5, 9), seed=3)
    x = jnp.where(jnp.abs(x) < 0.05, x + 0.1, x)  # off relu's kink
    x = jnp.where(jnp.abs(jnp.abs(x) - 1) < 0.05, x + 0.1, x)  # off hard_tanh's
    fn = getattr(gj, name)
    np.testing.assert_allclose(np.asarray(fn(x)), np.asarray(PARITY[name](x)), rtol=1e-5, atol=1e-6)
    w = _x((5, 9), seed=4)
    np.testing.assert_allclose(
        np.asarray(jax.grad(lambda a: (fn(a) * w).sum())(x)),
        np.asarray(jax.grad(lambda a: (PARITY[name](a) * w).sum())(x)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_bias_gradient_axis_and_vmap():
    x, b = _x((5, 7), seed=5), _x((7,), seed=6)
    gb = jax.grad(lambda c: gj.gelu(x, bias=c).sum())(b)
    want = jax.grad(lambda c: jax.nn.gelu(x + c, approximate=False).sum())(b)
    np.testing.assert_allclose(np.asarray(gb), np.asarray(want), rtol=1e-5, atol=1e-6)
    s = jax.jit(lambda a: gj.softmax(a, axis=0))(x)
    np.testing.assert_allclose(np.asarray(s), np.asarray(jax.nn.softmax(x, axis=0)), rtol=1e-5, atol=1e-6)
    v = jax.vmap(gj.softmax)(x)
    np.testing.assert_allclose(np.asarray(v), np.asarray(jax.nn.softmax(x)), rtol=1e-5, atol=1e-6)


def test_the_kernels_read_and_write_the_arrays_memory(monkeypatch):
    # zero-copy both ways on the CPU: the NumPy path gets the JAX array's own buffer, and the JAX
    # array returned wraps the NumPy path's result buffer
    from gpuact.backends import numpy_backend

    seen = {}
    real = numpy_backend.elementwise

    def recording(op, x, *args, **kwargs):
        y = real(op, x, *args, **kwargs)
        seen["x"], seen["y"] = x.__array_interface__["data"][0], y.__array_interface__["data"][0]
        return y

    monkeypatch.setattr(numpy_backend, "elementwise", recording)
    x = _x((64, 64))
    y = gpuact.silu(x)
    assert seen["x"] == x.unsafe_buffer_pointer() and seen["y"] == y.unsafe_buffer_pointer()
