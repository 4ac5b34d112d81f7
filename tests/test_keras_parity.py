"""Parity with Keras 3 itself, where Keras 3 (with its NumPy backend) is installed.

Keras is not a dependency of gpuact (its NumPy backend pulls in JAX, ~600 MB); the `parity` extra
installs it, and `.ci/run` uses that extra. Inputs are finite: at ±inf and NaN gpuact
deliberately differs where Keras computes `inf * 0` (docs/contract.rst: "Where gpuact differs
from Keras, and why").
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "numpy")
keras = pytest.importorskip("keras")
pytest.importorskip("jax")

import gpuact  # noqa: E402

X = np.concatenate([np.linspace(-12, 12, 481), [-1e4, -88, -20, -1e-7, 0, 1e-7, 20, 88, 1e4]]).astype(np.float32)
NAMES = [
    "relu",
    "sigmoid",
    "softplus",
    "softsign",
    "tanh",
    "selu",
    "elu",
    "exponential",
    "linear",
    "relu6",
    "leaky_relu",
    "silu",
    "gelu",
    "hard_sigmoid",
    "hard_silu",
    "mish",
    "log_sigmoid",
    "celu",
    "hard_tanh",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
]


def _close(ours, theirs):
    if callable(theirs):
        with np.errstate(all="ignore"):  # Keras's own overflow warnings, e.g. celu's expm1(1e4)
            theirs = theirs()
    np.testing.assert_allclose(ours.astype(np.float64), np.asarray(theirs, np.float64), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_matches_keras3(name):
    x = X
    if name == "squareplus":
        x = X[np.abs(X) < 100]  # Keras's x + sqrt(x^2 + b) cancels to 0 at -1e4; gpuact gives b / (2 |x|)
    with np.errstate(all="ignore"):
        theirs = getattr(keras.activations, name)(x)
    _close(getattr(gpuact, name)(x), theirs)


@pytest.mark.parametrize(
    "alpha,max_value,threshold", list(itertools.product([0.0, 0.1, 0.5], [None, 1.0, 6.0, 20.0], [0.0, 0.5, -2.0, 5.0]))
)
def test_relu_parameter_grid_matches_keras3(alpha, max_value, threshold):
    theirs = keras.activations.relu(X, negative_slope=alpha, max_value=max_value, threshold=threshold)
    _close(gpuact.relu(X, alpha=alpha, max_value=max_value, threshold=threshold), theirs)


@pytest.mark.parametrize("shape,axis", [((5, 7), -1), ((5, 7), 0), ((2, 3, 4), 1), ((2, 3, 4), (1, 2))])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_axis_functions_match_keras3(name, shape, axis):
    x = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    _close(getattr(gpuact, name)(x, axis=axis), getattr(keras.activations, name)(x, axis=axis))


def test_sparsemax_matches_keras3_where_keras_is_right():
    # Keras 3 (every backend) computes tau = (sum_{j<=k} cumsum_j - 1) / k where sparsemax needs
    # (cumsum_k - 1) / k: the two agree when one entry is in the support, and Keras's result does
    # not sum to 1 otherwise. gpuact computes the projection itself.
    single = np.array([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]], np.float32)
    _close(gpuact.sparsemax(single), keras.activations.sparsemax(single))
    uniform = np.array([[0.5, 0.5, 0.5]], np.float32)
    assert np.allclose(keras.activations.sparsemax(uniform), 0.0)  # Keras: sums to 0
    _close(gpuact.sparsemax(uniform), np.full((1, 3), 1 / 3))


def test_glu_and_others_with_parameters_match_keras3():
    x = np.random.default_rng(1).normal(0, 3, (4, 6)).astype(np.float32)
    A = keras.activations
    _close(gpuact.glu(x, axis=0), lambda: A.glu(x, axis=0))
    _close(gpuact.celu(X, alpha=2.0), lambda: A.celu(X, alpha=2.0))
    _close(gpuact.elu(X, alpha=0.5), lambda: A.elu(X, alpha=0.5))
    _close(gpuact.leaky_relu(X, negative_slope=0.05), lambda: A.leaky_relu(X, negative_slope=0.05))
    _close(gpuact.gelu(X, approximate=True), lambda: A.gelu(X, approximate=True))
    _close(gpuact.hard_shrink(X, threshold=2.0), lambda: A.hard_shrink(X, threshold=2.0))
    _close(gpuact.soft_shrink(X, threshold=2.0), lambda: A.soft_shrink(X, threshold=2.0))
    _close(gpuact.threshold(X, 1.0, -3.0), lambda: A.threshold(X, 1.0, -3.0))
    small = X[np.abs(X) < 100]  # see test_elementwise_matches_keras3
    _close(gpuact.squareplus(small, b=1.0), lambda: A.squareplus(small, b=1.0))


def test_layers_match_keras3():
    from gpuact import layers

    x = np.random.default_rng(2).normal(0, 3, (3, 8)).astype(np.float32)
    mask = np.random.default_rng(3).random((3, 8)) > 0.3
    _close(layers.Softmax()(x, mask=mask), keras.layers.Softmax()(x, mask=mask))
    _close(
        layers.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.5)(x),
        keras.layers.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.5)(x),
    )
    _close(layers.LeakyReLU()(x), keras.layers.LeakyReLU()(x))
    _close(layers.ELU(alpha=0.7)(x), keras.layers.ELU(alpha=0.7)(x))
    assert gpuact.serialize(gpuact.get("swish")) == keras.activations.serialize(keras.activations.get("swish"))
