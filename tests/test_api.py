"""The public surface: registry, layers, argument errors, dtype rules, import discipline, doctests."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys

import numpy as np
import pytest

import gpuact
import gpuact.activations
import gpuact.backward
import gpuact.layers
import gpuact.registry
from gpuact import layers

KERAS3_NAMES = [
    "relu",
    "sigmoid",
    "softmax",
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
    "log_softmax",
    "log_sigmoid",
    "celu",
    "glu",
    "hard_tanh",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
    "threshold",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
]
# not in Keras: the GLU variants of today's transformer MLPs (docs/activations.rst says so)
GLU_VARIANTS = ["swiglu", "geglu", "reglu"]
PUBLIC_NAMES = KERAS3_NAMES + GLU_VARIANTS


def test_the_public_names_are_keras_s_and_the_glu_variants():
    assert set(gpuact.activations.__all__) == set(PUBLIC_NAMES) | {"swish", "hard_swish"}


@pytest.mark.parametrize("module", [gpuact.activations, gpuact.registry, gpuact.layers, gpuact.backward])
def test_doctests(module):
    # Examples print 5 significant digits: the last ulp of exp or tanh differs between CPUs' SIMD paths.
    with np.printoptions(precision=5):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_every_function_has_math_in_its_docstring():
    for name in PUBLIC_NAMES:
        for module in (gpuact, gpuact.backward):
            doc = getattr(module, name).__doc__
            assert doc and ">>>" in doc, f"{module.__name__}.{name}"


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_get_serialize_deserialize_round_trip(name):
    fn = gpuact.get(name)
    assert fn is getattr(gpuact, name)
    assert gpuact.serialize(fn) == name
    assert gpuact.deserialize(name) is fn
    assert gpuact.get(fn) is fn


def test_registry_aliases_none_and_errors():
    assert gpuact.get("swish") is gpuact.silu and gpuact.serialize(gpuact.swish) == "silu"
    assert gpuact.get("hard_swish") is gpuact.hard_silu and gpuact.serialize(gpuact.hard_swish) == "hard_silu"
    assert gpuact.get(None) is gpuact.linear
    assert gpuact.get({"class_name": "elu", "config": {}}) is gpuact.elu

    def custom(x):
        return x

    assert gpuact.get(custom) is custom
    for bad in ("no_such_activation", 42, 1.5):
        with pytest.raises(ValueError, match=repr(bad) if isinstance(bad, str) else str(bad)):
            gpuact.get(bad)
    with pytest.raises(ValueError):
        gpuact.deserialize("nope")
    with pytest.raises(ValueError):
        gpuact.serialize(custom)


# --- layers -----------------------------------------------------------------------------------

LAYER_CASES = [
    (layers.Activation("tanh"), lambda x: np.tanh(x)),
    (
        layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.5),
        lambda x: gpuact.relu(x, alpha=0.1, max_value=6.0, threshold=0.5),
    ),
    (layers.LeakyReLU(), lambda x: np.where(x >= 0, x, 0.3 * x)),
    (layers.LeakyReLU(alpha=0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    (layers.ELU(alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    (layers.ThresholdedReLU(theta=1.0), lambda x: np.where(x > 1.0, x, 0.0)),
    (layers.Softmax(axis=0), lambda x: gpuact.softmax(x, axis=0)),
    (layers.PReLU(np.float32(0.25)), lambda x: np.where(x > 0, x, 0.25 * x)),
]


@pytest.mark.parametrize("layer,expected", LAYER_CASES, ids=lambda v: type(v).__name__)
def test_layers_compute_and_round_trip_config(layer, expected):
    x = np.linspace(-4, 8, 24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_allclose(layer(x), expected(x), rtol=1e-6, atol=1e-7)
    clone = type(layer).from_config(layer.get_config())
    np.testing.assert_array_equal(clone(x), layer(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: layers.ReLU(max_value=-1.0),
        lambda: layers.ReLU(negative_slope=-0.1),
        lambda: layers.ReLU(threshold=-1.0),
        lambda: layers.ReLU(negative_slope=None),
        lambda: layers.ReLU(threshold=None),
        lambda: layers.LeakyReLU(negative_slope=-0.3),
        lambda: layers.LeakyReLU(negative_slope=None),
        lambda: layers.ThresholdedReLU(theta=-1.0),
        lambda: layers.ThresholdedReLU(theta=None),
        lambda: layers.ELU(alpha=None),
        lambda: layers.PReLU(None),
        lambda: layers.PReLU(np.ones(3), shared_axes=[0]),
        lambda: layers.Softmax(axis=None),
        lambda: layers.Activation("not_an_activation"),
    ],
)
def test_invalid_layer_arguments_raise_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_prelu_shared_axes():
    x = np.linspace(-3, 3, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    alpha = np.full((1, 4), 0.5, np.float32)
    y = layers.PReLU(alpha, shared_axes=[1])(x)
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.5 * x))
    with pytest.raises(ValueError):
        layers.PReLU(np.full((3, 4), 0.5, np.float32), shared_axes=[1])(x)


# --- errors (docs/contract.rst: "Errors for bad input") ---------------------------------------

X = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1 + 2j]),
        np.array(["a", "b"]),
        np.array([object()], dtype=object),
        [1 + 1j],
        "text",
    ],
    ids=["complex", "str_array", "object", "complex_list", "string"],
)
def test_unsupported_dtypes_raise_type_error_naming_them(bad):
    with pytest.raises(TypeError, match="dtype"):
        gpuact.relu(bad)


def test_python_scalars_and_sequences():
    y = gpuact.relu([1.0, -2.0])
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_array_equal(y, [1.0, 0.0])
    assert gpuact.sigmoid(0.0).shape == () and gpuact.sigmoid(0.0) == 0.5
    assert gpuact.relu([1, -2]).dtype == np.float32  # integers compute in float32
    assert gpuact.relu([True, False]).dtype == np.float32


def test_dtypes_are_kept():
    for dtype in (np.float16, np.float32, np.float64):
        assert gpuact.gelu(X.astype(dtype)).dtype == dtype
        assert gpuact.softmax(X.astype(dtype)).dtype == dtype


@pytest.mark.parametrize(
    "call,shape",
    [
        (lambda out: gpuact.relu(X, out=out), (3, 4)),
        (lambda out: gpuact.softmax(X, axis=0, out=out), (3, 4)),
        (lambda out: gpuact.glu(X, out=out), (3, 2)),
    ],
    ids=["relu", "softmax", "glu"],
)
def test_rejected_out_is_left_untouched(call, shape):
    wrong_shape = np.full(shape[::-1] if shape[0] != shape[1] else (9,), 7.0, np.float32)
    wrong_dtype = np.full(shape, 7.0, np.float64)
    for out, exc in [(wrong_shape, ValueError), (wrong_dtype, TypeError)]:
        before = out.copy()
        with pytest.raises(exc):
            call(out)
        np.testing.assert_array_equal(out, before)
    with pytest.raises(TypeError):
        call([[0.0] * shape[1]] * shape[0])  # not an array of the input's kind


def test_argument_errors():
    with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else ValueError):
        gpuact.softmax(X, axis=2)
    with pytest.raises(ValueError):
        gpuact.softmax(X, axis=(0, -2))  # repeated
    with pytest.raises((ValueError, IndexError)):
        gpuact.log_softmax(X, axis=-3)
    with pytest.raises(ValueError):
        gpuact.glu(np.ones((3, 5), np.float32))  # odd axis
    with pytest.raises(TypeError):
        gpuact.relu(X, alpha=0.1, negative_slope=0.2)
    with pytest.raises(TypeError):
        gpuact.relu(X, slope=0.1)
    with pytest.raises(TypeError):
        gpuact.sigmoid(X, axis=0)
    with pytest.raises(TypeError):
        gpuact.softmax(X, axis=1.5)
    with pytest.raises(TypeError):
        gpuact.elu(X, alpha="big")
    with pytest.raises(ValueError):
        gpuact.relu(X, backend="tpu")
    with pytest.raises(ValueError):
        gpuact.softmax(X, axis=())


def test_forcing_an_unusable_gpu_backend_raises_runtime_error():
    from tests.conftest import backend_unusable

    for name in ("cupy", "numba"):
        if backend_unusable(name) is None:
            continue
        with pytest.raises(RuntimeError, match=name):
            gpuact.relu(X, backend=name)


def test_backend_numpy_forced():
    np.testing.assert_array_equal(gpuact.relu(X, backend="numpy"), np.maximum(X, 0))


# --- import discipline (docs/contract.rst: "Array kinds and dispatch") -------------------------


def test_numpy_use_imports_neither_cupy_nor_numba():
    code = (
        "import sys, numpy as np, gpuact, gpuact.layers\n"
        "gpuact.relu([1.0]); gpuact.softmax(np.ones((2, 3))); gpuact.gelu(np.ones(4, np.float16))\n"
        "gpuact.layers.Softmax()(np.ones(3), mask=np.ones(3, bool)); gpuact.get('swish')\n"
        "bad = [m for m in ('cupy', 'numba', 'numba_cuda') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_limits_are_exact_not_nan():
    assert gpuact.relu(np.float32([-math.inf]), threshold=0.5)[0] == 0.0
    assert gpuact.relu(np.float32([math.nan]))[0] != gpuact.relu(np.float32([math.nan]))[0]
