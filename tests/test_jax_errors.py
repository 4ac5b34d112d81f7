"""gpuact.jax checks its arguments when the function is traced, with plain gpuact's error: no bad
input reaches the callback (where it would surface at run time as an opaque JaxRuntimeError).
Each case is lowered from shapes alone (jax.ShapeDtypeStruct), so nothing can run."""

from __future__ import annotations

import numpy as np
import pytest

import gpuact

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import gpuact.jax as gj  # noqa: E402


def _plain_error(call):
    with pytest.raises(Exception) as info:
        call()
    return info.type, str(info.value)


def _spec(shape, dtype=np.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


# (the gpuact.jax call, its operands' shapes and dtypes, the same call on NumPy arrays through plain gpuact)
CASES = {
    "bias does not broadcast": (
        lambda a, b: gj.gelu(a, bias=b),
        [_spec((2, 4)), _spec((3,))],
        lambda: gpuact.gelu(np.ones((2, 4), np.float32), bias=np.ones(3, np.float32)),
    ),
    "bias of more dimensions": (
        lambda a, b: gj.softmax(a, bias=b),
        [_spec((2, 4)), _spec((3, 2, 4))],
        lambda: gpuact.softmax(np.ones((2, 4), np.float32), bias=np.ones((3, 2, 4), np.float32)),
    ),
    "complex bias": (
        lambda a, b: gj.relu(a, bias=b),
        [_spec((2, 4)), _spec((4,), np.complex64)],
        lambda: gpuact.relu(np.ones((2, 4), np.float32), bias=np.ones(4, np.complex64)),
    ),
    "NaN bias number": (
        lambda a: gj.relu(a, bias=float("nan")),
        [_spec((2, 4))],
        lambda: gpuact.relu(np.ones((2, 4), np.float32), bias=float("nan")),
    ),
    "odd glu axis": (
        lambda a: gj.glu(a),
        [_spec((2, 5))],
        lambda: gpuact.glu(np.ones((2, 5), np.float32)),
    ),
    "odd glu axis 0": (
        lambda a: gj.glu(a, axis=0),
        [_spec((3, 4))],
        lambda: gpuact.glu(np.ones((3, 4), np.float32), axis=0),
    ),
    "glu axis out of range": (
        lambda a: gj.glu(a, axis=2),
        [_spec((2, 4))],
        lambda: gpuact.glu(np.ones((2, 4), np.float32), axis=2),
    ),
    "softmax of a 0-d array": (
        lambda a: gj.softmax(a),
        [_spec(())],
        lambda: gpuact.softmax(np.float32(1.0)),
    ),
    "log_softmax axis out of range": (
        lambda a: gj.log_softmax(a, axis=(0, 3)),
        [_spec((2, 4))],
        lambda: gpuact.log_softmax(np.ones((2, 4), np.float32), axis=(0, 3)),
    ),
    "softmax empty axis tuple": (
        lambda a: gj.softmax(a, axis=()),
        [_spec((2, 4))],
        lambda: gpuact.softmax(np.ones((2, 4), np.float32), axis=()),
    ),
    "sparsemax two axes": (
        lambda a: gj.sparsemax(a, axis=(0, 1)),
        [_spec((2, 4))],
        lambda: gpuact.sparsemax(np.ones((2, 4), np.float32), axis=(0, 1)),
    ),
    "float axis": (
        lambda a: gj.softmax(a, axis=1.0),
        [_spec((2, 4))],
        lambda: gpuact.softmax(np.ones((2, 4), np.float32), axis=1.0),
    ),
    "NaN parameter": (
        lambda a: gj.elu(a, alpha=float("nan")),
        [_spec((2, 4))],
        lambda: gpuact.elu(np.ones((2, 4), np.float32), alpha=float("nan")),
    ),
    "NaN NumPy parameter": (
        lambda a: gj.leaky_relu(a, negative_slope=np.float32("nan")),
        [_spec((2, 4))],
        lambda: gpuact.leaky_relu(np.ones((2, 4), np.float32), negative_slope=np.float32("nan")),
    ),
    "celu alpha 0": (
        lambda a: gj.celu(a, alpha=0.0),
        [_spec((2, 4))],
        lambda: gpuact.celu(np.ones((2, 4), np.float32), alpha=0.0),
    ),
    "negative squareplus b": (
        lambda a: gj.squareplus(a, b=-1),
        [_spec((2, 4))],
        lambda: gpuact.squareplus(np.ones((2, 4), np.float32), b=-1),
    ),
    "relu alpha and negative_slope": (
        lambda a: gj.relu(a, alpha=0.0, negative_slope=0.1),
        [_spec((2, 4))],
        lambda: gpuact.relu(np.ones((2, 4), np.float32), alpha=0.0, negative_slope=0.1),
    ),
    "gelu approximate not a bool": (
        lambda a: gj.gelu(a, approximate=1),
        [_spec((2, 4))],
        lambda: gpuact.gelu(np.ones((2, 4), np.float32), approximate=1),
    ),
    "string parameter": (
        lambda a: gj.elu(a, alpha="1"),
        [_spec((2, 4))],
        lambda: gpuact.elu(np.ones((2, 4), np.float32), alpha="1"),
    ),
    "array parameter": (
        lambda a: gj.elu(a, alpha=np.ones(2)),
        [_spec((2, 4))],
        lambda: gpuact.elu(np.ones((2, 4), np.float32), alpha=np.ones(2)),
    ),
    "complex x": (
        lambda a: gj.tanh(a),
        [_spec((2, 4), np.complex64)],
        lambda: gpuact.tanh(np.ones((2, 4), np.complex64)),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_at_trace_time_with_plain_gpuacts_error(case):
    call, specs, plain = CASES[case]
    kind, message = _plain_error(plain)
    with pytest.raises(kind) as info:
        jax.jit(call).lower(*specs)  # traced and lowered from shapes only: nothing runs
    assert str(info.value) == message


def test_the_same_errors_eagerly_and_under_grad_and_vmap():
    x = jnp.ones((2, 5))
    message = "glu splits axis -1 in two halves; its length 5 is odd"
    with pytest.raises(ValueError, match=message):
        gj.glu(x)
    with pytest.raises(ValueError, match=message):
        jax.grad(lambda a: gj.glu(a).sum())(x)
    with pytest.raises(ValueError, match="glu splits axis -1 in two halves; its length 5 is odd"):
        jax.vmap(gj.glu)(jnp.ones((3, 2, 5)))  # the example's shape is checked, not the batch's
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) does not broadcast to x's shape \(2, 4\)"):
        jax.vmap(lambda a, b: gj.gelu(a, bias=b))(jnp.ones((5, 2, 4)), jnp.ones((5, 3)))


@pytest.mark.parametrize(
    "alpha", [np.float32(0.2), np.float64(0.2), np.array(0.2), np.array(0.2, np.float32), 0.2, jnp.float32(0.2)]
)
def test_0d_numpy_and_concrete_jax_parameters_are_numbers(alpha):
    x = jnp.asarray(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4))
    want = gpuact.elu(np.asarray(x), alpha=float(np.asarray(alpha)))
    np.testing.assert_array_equal(np.asarray(gj.elu(x, alpha=alpha)), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a: gj.elu(a, alpha=alpha))(x)), want)
    g = jax.grad(lambda a: gj.elu(a, alpha=alpha).sum())(x)
    want = gpuact.backward.elu(np.ones((3, 4), np.float32), np.asarray(x), float(np.asarray(alpha)))
    np.testing.assert_array_equal(np.asarray(g), want)
    # and the axis as a NumPy integer, as plain gpuact takes it
    np.testing.assert_array_equal(
        np.asarray(gj.softmax(x, axis=np.int64(0))), gpuact.softmax(np.asarray(x), axis=np.int64(0))
    )


def test_a_traced_parameter_says_it_must_be_a_python_number():
    x = jnp.ones((2, 4))
    with pytest.raises(TypeError, match=r"gpuact.jax.elu: alpha must be a Python number, fixed when the function"):
        jax.jit(lambda a, al: gj.elu(a, alpha=al)).lower(x, 1.0)
    with pytest.raises(TypeError, match="threshold must be a Python number.*traced JAX value"):
        jax.vmap(lambda t: gj.threshold(x, threshold=t, default_value=0.0))(jnp.ones(3))
    with pytest.raises(TypeError, match="axis must be a Python int or a tuple of ints"):
        jax.jit(lambda a, ax: gj.softmax(a, axis=ax)).lower(x, 0)
    with pytest.raises(TypeError, match="alpha must be a Python number"):
        jax.grad(lambda al: gj.elu(x, alpha=al).sum())(1.0)
    # marked static, the same parameter is a number at trace time
    y = jax.jit(lambda a, al: gj.elu(a, alpha=al), static_argnums=1)(x - 2, 0.5)
    np.testing.assert_array_equal(np.asarray(y), gpuact.elu(np.ones((2, 4), np.float32) - 2, alpha=0.5))


def test_nan_default_value_is_a_parameter_like_any_other():
    # threshold's default_value may be NaN (it is only copied out): allowed, and one cached function
    x = jnp.asarray(np.array([[-1.0, 2.0]], np.float32))
    gj.threshold(x, 0.5, float("nan"))
    before = gj._function.cache_info().currsize
    y = gj.threshold(x, 0.5, float("nan"))
    assert gj._function.cache_info().currsize == before
    np.testing.assert_array_equal(np.asarray(y), [[np.nan, 2.0]])
