"""gpuact.torch's operators (``torch.ops.gpuact.*``): opcheck, second derivatives (exact or
refused, never silently wrong), bias forms, the backward's bfloat16 rule, and PyTorch's lazy
negation bit on every entry point. CPU tensors; compiled models are in test_torch_compile.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpuact
from gpuact import activations, layers
from gpuact._contract.ops import SECOND_DERIVATIVE_OPS

torch = pytest.importorskip("torch")
import gpuact.torch as gt  # noqa: E402


def _x(shape=(4, 6), dtype=torch.float64, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _negated(values) -> torch.Tensor:
    """A float32 tensor equal to ``values`` that carries PyTorch's negative bit: its storage holds
    ``-values`` (the imaginary part of a conjugate view)."""
    values = torch.as_tensor(values, dtype=torch.float32)
    t = torch.complex(torch.zeros_like(values), -values).conj().imag
    assert t.is_neg() and torch.equal(t.resolve_neg(), values)
    return t


# ---- opcheck -------------------------------------------------------------------------------------


def _opcheck_samples():
    r = lambda *shape, grad=True: _x(shape, seed=len(shape) + shape[-1]).requires_grad_(grad)  # noqa: E731
    ops = torch.ops.gpuact
    return [
        ("elementwise-bias", ops.elementwise, (r(3, 4), r(4), "gelu_tanh", [])),
        ("elementwise-params", ops.elementwise, (r(3, 4), None, "relu", [0.1, 0.0, 0.0, 6.0])),
        ("elementwise_backward", ops.elementwise_backward, (r(3, 4), r(3, 4), r(4), "silu", [])),
        # an op with no second derivative: only dy may require grad
        ("elementwise_backward-mish", ops.elementwise_backward, (r(3, 4), r(3, 4, grad=False), None, "mish", [])),
        ("softmax", ops.softmax, (r(3, 4), r(4), [-1], False)),
        ("softmax_backward", ops.softmax_backward, (r(3, 4), r(3, 4), r(3, 1), [0, 1], False)),
        ("log_softmax_backward", ops.softmax_backward, (r(3, 4), r(3, 4), None, [0], True)),
        ("glu", ops.glu, (r(3, 4), 1, "glu")),
        ("glu_backward", ops.glu_backward, (r(3, 2), r(3, 4, grad=False), -1, "glu")),
        ("glu-swiglu", ops.glu, (r(3, 4), 1, "swiglu")),
        ("glu_backward-geglu_tanh", ops.glu_backward, (r(3, 2), r(3, 4, grad=False), -1, "geglu_tanh")),
        ("glu-reglu", ops.glu, (r(4, 3), 0, "reglu")),
        ("gated-swiglu", ops.gated, (r(3, 4), r(3, 4), "swiglu")),
        ("gated_backward-geglu", ops.gated_backward, (r(3, 4), r(3, 4, grad=False), r(3, 4, grad=False), "geglu")),
        ("sparsemax", ops.sparsemax, (r(3, 4), -1)),
        ("sparsemax_backward", ops.sparsemax_backward, (r(3, 4), r(3, 4, grad=False), 0)),
    ]


OPCHECK = _opcheck_samples()


def test_opcheck_covers_every_operator():
    assert {op for _, op, _ in OPCHECK} == set(gt.OPS)


@pytest.mark.parametrize("name,op,args", OPCHECK, ids=[s[0] for s in OPCHECK])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


# ---- second derivatives --------------------------------------------------------------------------

SECOND_ORDER = [
    ("relu", {}),
    ("relu", {"negative_slope": 0.1, "max_value": 3.0, "threshold": -0.5}),
    ("relu6", {}),
    ("leaky_relu", {}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("gelu", {}),
    ("gelu", {"approximate": True}),
    ("silu", {}),
    ("swish", {}),
    ("softplus", {}),
    ("elu", {"alpha": 0.7}),
    ("selu", {}),
    ("softmax", {}),
    ("softmax", {"axis": (0, 1)}),
    ("log_softmax", {}),
    ("log_softmax", {"axis": 0}),
]
KINKS = {"relu": (0.0, 3.0, -0.5), "relu6": (0.0, 6.0), "leaky_relu": (0.0,), "elu": (0.0,), "selu": (0.0,)}


def _off_kinks(name, x):
    for k in KINKS.get(name, ()):
        x = torch.where((x - k).abs() < 0.05, x + 0.1, x)
    return x


@pytest.mark.parametrize("name,kwargs", SECOND_ORDER, ids=[f"{n}-{'-'.join(k)}" for n, k in SECOND_ORDER])
def test_gradgradcheck(name, kwargs):
    fn = getattr(gt, name)
    x = _off_kinks(name, _x((3, 5), seed=1)).requires_grad_(True)
    b = _x((5,), seed=2, scale=0.01).requires_grad_(True)  # small: keeps x + b off the kinks
    assert torch.autograd.gradgradcheck(lambda a, c: fn(a, bias=c, **kwargs), (x, b))


def test_a_gradient_penalty_through_gelu_matches_torch():
    # the case: create_graph=True, then a backward through the gradient into the weights
    torch.manual_seed(0)
    x = torch.randn(16, 8, dtype=torch.float64)
    grads = []
    for act in (gt.gelu, torch.nn.functional.gelu):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)).double()
        inp = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model[1](act(model[0](inp))).sum(), inp, create_graph=True)
        g.pow(2).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


NO_SECOND_ORDER = [
    (name, {"threshold": 0.5, "default_value": -1.0} if name == "threshold" else {})
    for name in activations.__all__
    if getattr(activations, name).__name__ not in (*SECOND_DERIVATIVE_OPS, "softmax", "log_softmax")
    and name not in ("gelu",)
]


def test_every_function_is_in_one_list():
    # a new activation must be given a second derivative or be checked to refuse one
    assert {n for n, _ in SECOND_ORDER} | {n for n, _ in NO_SECOND_ORDER} == set(activations.__all__)


@pytest.mark.parametrize("name,kwargs", NO_SECOND_ORDER, ids=[n for n, _ in NO_SECOND_ORDER])
def test_a_second_derivative_that_is_not_implemented_raises_naming_the_op(name, kwargs):
    fn = getattr(gt, name)
    x = _x((4, 6), seed=3).requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x, **kwargs).sum(), x, create_graph=True)
    op = getattr(activations, name).__name__
    with pytest.raises(NotImplementedError, match=rf"gpuact\.torch\.{op}: the second derivative"):
        g.pow(2).sum().backward()


@pytest.mark.parametrize("name,kwargs", [("gelu", {}), ("gelu", {"approximate": True}), ("silu", {}), ("elu", {})])
def test_a_third_derivative_raises_naming_the_op(name, kwargs):
    x = _x((4, 6), seed=6).requires_grad_(True)
    (g,) = torch.autograd.grad(getattr(gt, name)(x, **kwargs).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
    shown = "gelu(approximate=True)" if kwargs else name
    with pytest.raises(NotImplementedError, match=rf"gpuact\.torch\.{re.escape(shown)}: the third derivative"):
        gg.pow(2).sum().backward()


def test_the_second_derivative_runs_gpuact_s_derivative_op(monkeypatch):
    # the double backward of an elementwise op is the backward operator of its derivative op
    # d_<op>, the shared math's f'', not a composition of torch functions
    seen = []
    real = gpuact._entry.elementwise_grad
    monkeypatch.setattr(gpuact._entry, "elementwise_grad", lambda op, *a, **k: seen.append(op) or real(op, *a, **k))
    x = _x((4, 6), seed=7).requires_grad_(True)
    (g,) = torch.autograd.grad(gt.gelu(x).sum(), x, create_graph=True)
    g.pow(2).sum().backward()
    assert "d_gelu" in seen


def test_the_gradient_in_dy_alone_is_given_where_x_needs_none():
    # dx is linear in dy: differentiating it in dy needs no second derivative of the op
    x = _x((4, 6), seed=4)
    ops = torch.ops.gpuact
    backwards = {
        "mish": lambda dy: ops.elementwise_backward(dy, x, None, "mish", []),
        "sparsemax": lambda dy: ops.sparsemax_backward(dy, x, -1),
        "glu": lambda dy: ops.glu_backward(dy, x, -1, "glu"),
        "swiglu": lambda dy: ops.glu_backward(dy, x, -1, "swiglu"),
    }
    for name, backward in backwards.items():
        dy = _x((4, 3) if name in ("glu", "swiglu") else (4, 6), seed=5).requires_grad_(True)
        assert torch.autograd.gradcheck(backward, (dy,)), name
        assert torch.autograd.gradgradcheck(backward, (dy,)), name


# ---- the public functions: parameters and bias ---------------------------------------------------

WITH_PARAMETERS = [
    ("relu", {"alpha": 0.1, "max_value": 4.0, "threshold": 0.5}),
    ("relu", {"negative_slope": 0.3}),
    ("elu", {"alpha": 0.5}),
    ("leaky_relu", {"negative_slope": 0.05}),
    ("gelu", {"approximate": True}),
    ("celu", {"alpha": 2.0}),
    ("hard_shrink", {"threshold": 1.0}),
    ("soft_shrink", {"threshold": 1.0}),
    ("threshold", {"threshold": 0.5, "default_value": float("nan")}),
    ("squareplus", {"b": 2.0}),
    ("softmax", {"axis": (0, 1)}),
    ("log_softmax", {"axis": 0}),
    ("glu", {"axis": 0}),
    ("sparsemax", {"axis": (0,)}),
]


@pytest.mark.parametrize("name,kwargs", WITH_PARAMETERS, ids=[f"{n}-{'-'.join(k)}" for n, k in WITH_PARAMETERS])
def test_parameters_reach_the_kernel_as_plain_gpuact_passes_them(name, kwargs):
    x = _x((4, 6), torch.float32, seed=6)
    torch.testing.assert_close(getattr(gt, name)(x, **kwargs), getattr(gpuact, name)(x, **kwargs), equal_nan=True)


def test_bad_parameters_raise_plain_gpuacts_errors():
    x = _x((4, 6), torch.float32)
    with pytest.raises(TypeError, match="both alpha and negative_slope"):
        gt.relu(x, alpha=0.1, negative_slope=0.2)
    with pytest.raises(ValueError, match="celu needs alpha != 0"):
        gt.celu(x, alpha=0.0)
    with pytest.raises(TypeError, match="approximate must be a bool"):
        gt.gelu(x, approximate="tanh")
    with pytest.raises(TypeError, match="axis must be an int"):
        gt.softmax(x, axis=1.0)
    with pytest.raises(np.exceptions.AxisError):
        gt.softmax(x, axis=2)
    with pytest.raises(ValueError, match="odd"):
        gt.glu(x[:, :5])
    with pytest.raises(ValueError, match="does not broadcast"):
        gt.gelu(x, bias=torch.ones(4))
    with pytest.raises(TypeError, match="bias"):
        gt.glu(x, bias=1.0)  # glu and sparsemax take no bias, as in plain gpuact
    with pytest.raises(TypeError, match="takes a torch.Tensor"):
        gt.gelu(np.ones(3), bias=1.0)


@pytest.mark.parametrize("bias", [0.5, 1, np.float32(0.5), np.linspace(-1, 1, 6), [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
def test_a_number_or_array_bias_is_taken_like_plain_gpuact(bias):
    x = _x((4, 6), torch.float32).requires_grad_(True)
    y = gt.gelu(x, bias=bias)
    torch.testing.assert_close(y, gpuact.gelu(x.detach(), bias=bias))
    y.sum().backward()
    dx = gpuact.backward.gelu(torch.ones(4, 6), x.detach(), bias=bias)
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(gt.softmax(x, bias=bias), gpuact.softmax(x.detach(), bias=bias))


def test_a_bias_tensor_gets_its_gradient_in_its_dtype():
    x = _x((4, 6), torch.float32).requires_grad_(True)
    b = torch.zeros((1, 6), dtype=torch.float64, requires_grad=True)
    gt.softmax(x, bias=b).pow(2).sum().backward()
    assert b.grad.dtype == torch.float64 and b.grad.shape == (1, 6)
    torch.testing.assert_close(b.grad.float(), x.grad.sum(0, keepdim=True))


# ---- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dy,x,want",
    [
        (torch.float32, torch.bfloat16, torch.float32),
        (torch.float64, torch.bfloat16, torch.float64),
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.float32, torch.float32),
        (torch.float32, torch.float16, torch.float32),
    ],
)
def test_the_backward_dtype_is_the_wider_one_for_bfloat16_as_for_float16(dy, x, want):
    xs = torch.tensor([-1.0, 0.5, 2.0]).to(x)
    dys = torch.full((3,), 1 / 3).to(dy)
    got = gpuact.backward.linear(dys, xs)
    assert got.dtype == want
    torch.testing.assert_close(got.double(), dys.double(), rtol=0, atol=0)  # 1/3 kept in dy's precision
    assert gpuact.backward.softmax(dys, xs).dtype == want
    assert torch.ops.gpuact.elementwise_backward(dys, xs, None, "silu", []).dtype == want
    if want != torch.bfloat16:
        with pytest.raises(TypeError, match="out is bfloat16; the result has dtype"):
            gpuact.backward.linear(dys, xs, out=torch.empty(3, dtype=torch.bfloat16))


def test_bfloat16_trains_through_gpuact_torch():
    x = _x((4, 6), torch.bfloat16).requires_grad_(True)
    y = gt.silu(x, bias=0.25)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16


# ---- PyTorch's negative bit -------------------------------------------------------------------------

VALUES = [[-1.0, 2.0, -3.0, 4.0], [0.5, -0.5, 1.5, -2.5]]


def test_negated_views_are_read_as_their_values_by_every_forward():
    x = _negated(VALUES)
    plain = x.resolve_neg()
    for name in ("relu", "gelu", "softmax", "log_softmax", "sparsemax", "glu"):
        torch.testing.assert_close(getattr(gpuact, name)(x), getattr(gpuact, name)(plain), msg=name)
        torch.testing.assert_close(getattr(gt, name)(x), getattr(gpuact, name)(plain), msg=name)
    np.testing.assert_array_equal(gpuact.relu(_negated([-1.0, 2.0, -3.0])).numpy(), [0.0, 2.0, 0.0])
    torch.testing.assert_close(layers.PReLU(alpha=0.5)(x), layers.PReLU(alpha=0.5)(plain))
    bias = _negated([0.5, -1.0, 0.0, 2.0])
    torch.testing.assert_close(gpuact.silu(plain, bias=bias), gpuact.silu(plain, bias=bias.resolve_neg()))
    torch.testing.assert_close(gt.softmax(plain, bias=bias), gpuact.softmax(plain, bias=bias.resolve_neg()))
    out = torch.empty(2, 4)
    assert gpuact.tanh(x, out=out) is out
    torch.testing.assert_close(out, torch.tanh(plain))


def test_negated_views_are_read_as_their_values_by_every_backward():
    x, dy = _negated(VALUES), _negated([[1.0, -2.0, 3.0, 0.5], [-1.0, 0.25, 2.0, 1.0]])
    px, pdy = x.resolve_neg(), dy.resolve_neg()
    for name in ("relu", "gelu", "softmax", "log_softmax", "sparsemax"):
        f = getattr(gpuact.backward, name)
        want = f(pdy, px)
        torch.testing.assert_close(f(dy, x), want, msg=name)
        torch.testing.assert_close(f(pdy, x), want, msg=name)
        torch.testing.assert_close(f(dy, px), want, msg=name)
    half = _negated([[1.0, -2.0], [3.0, 0.5]])
    torch.testing.assert_close(gpuact.backward.glu(half, x), gpuact.backward.glu(half.resolve_neg(), px))
    torch.testing.assert_close(layers.PReLU(alpha=0.5).backward(dy, x), layers.PReLU(alpha=0.5).backward(pdy, px))
    a = x.clone().requires_grad_(True)
    gt.gelu(a).backward(dy)
    torch.testing.assert_close(a.grad, gpuact.backward.gelu(pdy, px))


def test_an_out_with_the_negative_bit_is_refused():
    x = torch.tensor([-1.0, 2.0, -3.0])
    out = _negated([0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="negative or conjugate bit"):
        gpuact.relu(x, out=out)
    with pytest.raises(TypeError, match="negative or conjugate bit"):
        gpuact.backward.relu(x, x, out=out)
    with pytest.raises(TypeError, match="negative or conjugate bit"):
        gpuact.softmax(out, out=out)
    assert torch.equal(out.resolve_neg(), torch.zeros(3))  # nothing written
