"""The benchmark's case list, inputs, float64 references and tolerances.

One source for the ``gpuact-bench`` CLI and the pytest-benchmark suites in ``bench/``: a *case* is
one op on one array (dtype, shape, axis); the harness times it on every backend and checks every
result against a NumPy float64 reference first.

Inputs are uniform in [-8, 8] (both branches of every activation, no overflow in float16), drawn
with a fixed seed, so every backend sees the same values.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# The seed's nine (the tf.keras 2 reference page), then three of Keras 3's, then two GLU variants.
DEFAULT_OPS = (
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
    "selu",
    "elu",
    "exponential",
    "gelu",
    "silu",
    "log_softmax",
    "swiglu",
    "geglu",
    "linear-gelu-linear",
)
QUICK_OPS = ("relu", "sigmoid", "gelu", "softmax")
SOFTMAX_OPS = ("softmax", "log_softmax")
# The GLU variants (not in Keras): x of (rows, 2 * GATED_UNITS), split along the last axis into the
# gate a and the value b, op(a) * b of (rows, GATED_UNITS); a peer computes it as its users write
# it, silu(a) * b (gelu exact for geglu). Their gradient rows take dy of the output's shape.
GATE_ACTIVATION = {"swiglu": "silu", "geglu": "gelu"}  # the activation of each one's gate
GATED_OPS = tuple(GATE_ACTIVATION)
GATED_UNITS = 4096
ALL_OPS = DEFAULT_OPS

# Training rows. "<op>:grad" is gpuact.backward.<op>(dy, x) (a peer: its autodiff of the op);
# "gelu+bias" is gpuact.gelu(x, bias=b), the fused bias, and "gelu(x+bias)" the same value computed
# add-then-activate (x + b, then gelu), the baseline the fusion is measured against; ":grad" of
# both likewise. The bias runs along the last axis of (rows, BIAS_UNITS) arrays, as after a
# Dense layer.
GRAD = ":grad"
BIAS_OPS = ("gelu+bias", "gelu(x+bias)")
BIAS_UNITS = 4096
QUICK_GRAD_OPS = ("relu", "gelu", "softmax")

# The compiled-model row, a training row only: "linear-gelu-linear:grad" is one step of
# Linear(MODEL_UNITS, MODEL_UNITS) -> gelu -> Linear(MODEL_UNITS, MODEL_UNITS) under torch.compile,
# forward and backward, its result the gradient at the model's input (dy given at its output).
# gpuact-torch's model uses gpuact.torch.gelu, the torch peer's torch.nn.functional.gelu; the
# other backends skip it. The weights are fixed (model_weights), so the float64 reference checks
# both. One size per dtype (the smallest training rung): its time is mostly the two matmuls.
MODEL_OP = "linear-gelu-linear"
MODEL_UNITS = 256
MODEL_BACKENDS = ("gpuact-torch", "torch")


def grad_of(op: str) -> str:
    return op + GRAD


def is_grad(op: str) -> bool:
    return op.endswith(GRAD)


def base_op(op: str) -> str:
    """The activation a case's op name is about: ``softmax:grad`` -> ``softmax``, the bias rows -> gelu."""
    op = op[: -len(GRAD)] if is_grad(op) else op
    return "gelu" if op in BIAS_OPS else op


def is_bias(op: str) -> bool:
    return (op[: -len(GRAD)] if is_grad(op) else op) in BIAS_OPS


def is_softmax(op: str) -> bool:
    return base_op(op) in SOFTMAX_OPS


def is_model(op: str) -> bool:
    return base_op(op) == MODEL_OP


def is_gated(op: str) -> bool:
    return base_op(op) in GATED_OPS


DTYPES = ("float16", "bfloat16", "float32", "float64")
try:  # NumPy's bfloat16 (and its name, "bfloat16") come with ml_dtypes
    import ml_dtypes  # noqa: F401
except ImportError:  # pragma: no cover - the bfloat16 rows then say what is missing
    pass


def have_bfloat16() -> bool:
    try:
        np.dtype("bfloat16")
    except TypeError:
        return False
    return True


# Size ladders: every other power of two (4x a rung), so a default run stays short.
CPU_SIZES = tuple(2**k for k in range(10, 25, 2))  # 2**10 ... 2**24
GPU_SIZES = tuple(2**k for k in range(10, 29, 2))  # 2**10 ... 2**28
QUICK_CPU_SIZES = (2**10, 2**14, 2**18)
QUICK_GPU_SIZES = (2**10, 2**16, 2**20, 2**24)

# Softmax rows: row lengths along the last axis and along axis 0.
SOFTMAX_ROWS = (32, 1024, 4096, 65536)
QUICK_SOFTMAX_ROWS = (32, 4096)
SOFTMAX_AXES = (-1, 0)
# Softmax shapes multiply the case count by 8, so each (row length, axis) gets at most this many
# sizes of the ladder: its smallest, largest and middle rung that hold at least one row.
SOFTMAX_MAX_SIZES = 3
# ... and on the CPU no softmax case above this many elements (the default run stays under 3 minutes
# on 2 cores); the GPU takes its whole ladder.
SOFTMAX_CPU_MAX = 2**22

# Training rows (gradients, the fused bias): fewer sizes than the forward ladders.
TRAIN_CPU_SIZES = (2**18, 2**22)
TRAIN_GPU_SIZES = (2**20, 2**24, 2**26)
QUICK_TRAIN_CPU_SIZES = (2**16,)
QUICK_TRAIN_GPU_SIZES = (2**20,)
TRAIN_ROWS = (1024, 65536)
QUICK_TRAIN_ROWS = (1024,)

INPUT_LOW, INPUT_HIGH = -8.0, 8.0

# Above this many elements the check compares a deterministic sample (whole slices for softmax).
CHECK_FULL_MAX = 1 << 20

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class Case:
    op: str
    dtype: str
    shape: tuple[int, ...]
    axis: int | None  # the softmax family's, and the gated units' split axis (-1)

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def bytes_moved(self) -> int:
        """Input read once plus output written once (a gradient: x and dy read, dx written; the
        bias vector is too small to count). A gated unit's output (and dy) is half of x."""
        if is_gated(self.op):
            return (5 if is_grad(self.op) else 3) * self.elements * self.itemsize // 2
        return (3 if is_grad(self.op) else 2) * self.elements * self.itemsize

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The one array a case's function takes: x, or x and dy stacked (``(2, *shape)``), or for
        the bias rows x (and dy) as rows with the bias as one more row (see ``split_input``)."""
        if is_bias(self.op):
            rows, units = self.shape
            return ((2 * rows if is_grad(self.op) else rows) + 1, units)
        return (2, *self.shape) if is_grad(self.op) else self.shape

    @property
    def input_elements(self) -> int:
        return math.prod(self.input_shape)

    @property
    def row_length(self) -> int | None:
        return None if self.axis is None else self.shape[self.axis]

    @property
    def label(self) -> str:
        """Short text for tables and test ids: ``2**20`` or ``1024x1024/ax-1``."""
        if self.axis is None:
            return size_label(self.elements)
        return f"{'x'.join(map(str, self.shape))}/ax{self.axis}"

    def key(self):
        return (self.op, self.dtype, self.shape, self.axis)


def size_label(n: int) -> str:
    k = int(n).bit_length() - 1
    return f"2**{k}" if n == 1 << k else str(n)


# ---------------------------------------------------------------------------------------------
# Parsing and building the case list


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"2**10,2**20,4096"`` or an exponent range ``"10:24"`` / ``"10:24:2"`` (inclusive)."""
    sizes: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(\d+):(\d+)(?::(\d+))?", item)
        if m:
            lo, hi, step = int(m[1]), int(m[2]), int(m[3] or 1)
            if step <= 0 or lo > hi:
                raise ValueError(f"bad exponent range {item!r}: use LO:HI[:STEP] with LO <= HI")
            sizes.extend(2**k for k in range(lo, hi + 1, step))
            continue
        m = re.fullmatch(r"2\s*\*\*\s*(\d+)", item)
        if m:
            sizes.append(2 ** int(m[1]))
            continue
        try:
            value = int(float(item)) if re.fullmatch(r"[\d.]+[eE]\d+", item) else int(item)
        except ValueError:
            raise ValueError(f"bad size {item!r}: use an integer, 2**K or an exponent range LO:HI[:STEP]") from None
        sizes.append(value)
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"sizes must be positive integers; got {text!r}")
    return tuple(sorted(set(sizes)))


def parse_list(text: str, allowed, what: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ValueError(f"unknown {what} {', '.join(bad) or text!r}; choose from {', '.join(allowed)}")
    return items


def softmax_sizes(sizes, row_length: int, limit: int = SOFTMAX_MAX_SIZES) -> list[int]:
    """Rungs of the ladder that hold at least one row, thinned to ``limit`` (ends and middle)."""
    fit = [n for n in sorted(sizes) if n >= row_length]
    if len(fit) <= limit:
        return fit
    if limit == 1:
        return [fit[-1]]
    picks = {round(i * (len(fit) - 1) / (limit - 1)) for i in range(limit)}
    return [fit[i] for i in sorted(picks)]


def split_input(op: str, a):
    """``(x, dy, bias)`` of a case's input (dy and bias None where the case has none): views."""
    if is_bias(op):
        if is_grad(op):
            rows = (a.shape[0] - 1) // 2
            return a[:rows], a[rows : 2 * rows], a[-1]
        return a[:-1], None, a[-1]
    if is_grad(op):
        # a gated unit's dy has the output's shape: the first half of the stacked row
        return a[0], (a[1][..., : a.shape[-1] // 2] if is_gated(op) else a[1]), None
    return a, None, None


def build_training_cases(
    ops=DEFAULT_OPS,
    dtypes=("float32",),
    sizes=CPU_SIZES,
    rows=SOFTMAX_ROWS,
    axes=SOFTMAX_AXES,
    softmax_limit=1,
    softmax_max=None,
    bias=True,
) -> list[Case]:
    """The backward rows (``<op>:grad``) of ``ops`` and, with ``bias``, the fused-bias rows
    (forward and backward, fused and add-then-activate) at the sizes holding a whole bias row."""
    cases = build_cases(tuple(grad_of(op) for op in ops), dtypes, sizes, rows, axes, softmax_limit, softmax_max)
    if MODEL_OP in ops:
        n = max(min(sizes), MODEL_UNITS)
        cases += [Case(grad_of(MODEL_OP), dtype, (n // MODEL_UNITS, MODEL_UNITS), None) for dtype in dtypes]
    if bias:
        for dtype in dtypes:
            for n in sorted(sizes):
                if n >= BIAS_UNITS:
                    for op in BIAS_OPS:
                        for name in (op, grad_of(op)):
                            cases.append(Case(name, dtype, (n // BIAS_UNITS, BIAS_UNITS), None))
    return cases


def build_cases(
    ops=DEFAULT_OPS,
    dtypes=("float32",),
    sizes=CPU_SIZES,
    rows=SOFTMAX_ROWS,
    axes=SOFTMAX_AXES,
    softmax_limit=SOFTMAX_MAX_SIZES,
    softmax_max=None,
) -> list[Case]:
    """Every case of the run, in the order they are timed (op, dtype, size).

    Softmax-family ops take the sizes at most ``softmax_max`` (when given; all sizes if none is
    that small), thinned by ``softmax_sizes``.
    """
    cases: list[Case] = []
    if softmax_max is not None and any(n <= softmax_max for n in sizes):
        softmax_ladder = [n for n in sizes if n <= softmax_max]
    else:
        softmax_ladder = list(sizes)
    for op in ops:
        if is_model(op):
            continue  # built by build_training_cases: a training row only
        for dtype in dtypes:
            if is_softmax(op):
                for row_length in rows:
                    for n in softmax_sizes(softmax_ladder, row_length, softmax_limit):
                        for axis in axes:
                            outer = n // row_length
                            shape = (outer, row_length) if axis == -1 else (row_length, outer)
                            cases.append(Case(op, dtype, shape, axis))
            elif is_gated(op):
                width = 2 * GATED_UNITS
                for n in sorted(sizes):
                    if n >= width:
                        cases.append(Case(op, dtype, (n // width, width), -1))
            else:
                for n in sorted(sizes):
                    cases.append(Case(op, dtype, (n,), None))
    return cases


# ---------------------------------------------------------------------------------------------
# Inputs


def make_case_input(case: Case, seed: int = 0) -> np.ndarray:
    """A case's input (``Case.input_shape``): x uniform in [INPUT_LOW, INPUT_HIGH], dy and the bias
    uniform in [-1, 1]."""
    a = make_input(case.input_shape, case.dtype, seed)
    _, dy, bias = split_input(case.op, a)
    for part in (dy, bias):
        if part is not None:
            part *= 1.0 / INPUT_HIGH
    return a


def make_input(shape, dtype, seed: int = 0) -> np.ndarray:
    """Uniform in [INPUT_LOW, INPUT_HIGH], of the case's dtype (float16 rounded from float32)."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    compute = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    x = rng.random(n, dtype=compute)
    x *= INPUT_HIGH - INPUT_LOW
    x += INPUT_LOW
    return x.astype(dtype, copy=False).reshape(shape)


# ---------------------------------------------------------------------------------------------
# float64 references (the definitions of the API reference, docs/reference/)


def _erfc(z: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erfc
    except ImportError:
        return np.vectorize(math.erfc, otypes=[np.float64])(z)
    return erfc(z)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softmax(x, axis, log=False):
    z = x - np.max(x, axis=axis, keepdims=True)
    s = np.sum(np.exp(z), axis=axis, keepdims=True)
    return z - np.log(s) if log else np.exp(z) / s


REFERENCES: dict[str, Callable[[Any], Any]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "softplus": lambda x: np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))),
    "softsign": lambda x: x / (np.abs(x) + 1.0),
    "tanh": np.tanh,
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "exponential": np.exp,
    "gelu": lambda x: 0.5 * x * _erfc(-x / math.sqrt(2.0)),
    "silu": lambda x: x * _sigmoid(x),
}


def _gelu_grad(x):
    return 0.5 * _erfc(-x / math.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


# f'(x) of the elementwise ops, float64 (softmax-type gradients are in reference())
GRAD_REFERENCES: dict[str, Callable[[Any], Any]] = {
    "relu": lambda x: (x > 0).astype(np.float64),
    "sigmoid": lambda x: _sigmoid(x) * _sigmoid(-x),
    "softplus": _sigmoid,
    "softsign": lambda x: 1.0 / (1.0 + np.abs(x)) ** 2,
    "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
    "selu": lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
    "elu": lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))),
    "exponential": np.exp,
    "gelu": _gelu_grad,
    "silu": lambda x: _sigmoid(x) * (1.0 + x * _sigmoid(-x)),
}


def _gated_reference(op, x, dy, axis):
    """swiglu / geglu of x's halves (gate first), or with ``dy`` their gradient ``[da, db]``."""
    act = GATE_ACTIVATION[op]
    a, b = np.split(x, 2, axis=axis)
    if dy is None:
        return REFERENCES[act](a) * b
    return np.concatenate([dy * b * GRAD_REFERENCES[act](a), dy * REFERENCES[act](a)], axis=axis)


def model_weights(units: int = MODEL_UNITS) -> tuple[np.ndarray, ...]:
    """The model row's ``(w1, b1, w2, b2)``, float64, fixed: uniform in +-1/sqrt(units), as
    torch.nn.Linear draws them."""
    rng = np.random.default_rng(20)
    bound = 1.0 / math.sqrt(units)
    return tuple(rng.uniform(-bound, bound, shape) for shape in ((units, units), (units,), (units, units), (units,)))


def _model_reference(x, dy):
    """The model row's gradient at its input: ``dx = ((dy w2) * gelu'(x w1^T + b1)) w1``."""
    w1, b1, w2, _ = model_weights()
    shape = x.shape
    h = x.reshape(-1, MODEL_UNITS) @ w1.T + b1
    dh = (dy.reshape(-1, MODEL_UNITS) @ w2) * _gelu_grad(h)
    return (dh @ w1).reshape(shape)


def reference(op: str, x: np.ndarray, axis=None, dtype=None) -> np.ndarray:
    """The float64 result of case op ``op`` on its input ``x`` (converted to float64 first). The
    add-then-activate rows add in the case's ``dtype`` (where given), as they compute: in bfloat16
    that rounding alone is up to 2**-9 of the sum."""
    x = np.asarray(x, dtype=np.float64)
    x, dy, bias = split_input(op, x)
    if is_model(op):
        return _model_reference(x, dy)
    if bias is not None:
        x = x + bias
        if dtype is not None and not op.startswith("gelu+bias"):
            x = x.astype(dtype).astype(np.float64)
    base = base_op(op)
    axis = -1 if axis is None else axis
    with np.errstate(all="ignore"):
        if base in GATED_OPS:
            return _gated_reference(base, x, dy, axis)
        if dy is None:
            if base in SOFTMAX_OPS:
                return _softmax(x, axis, log=base == "log_softmax")
            return REFERENCES[base](x)
        if base == "softmax":
            y = _softmax(x, axis)
            return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))
        if base == "log_softmax":
            return dy - _softmax(x, axis) * np.sum(dy, axis=axis, keepdims=True)
        return dy * GRAD_REFERENCES[base](x)


# ---------------------------------------------------------------------------------------------
# Tolerances and the check

# docs/contract.rst ("Accuracy"), for gpuact's own paths.
# bfloat16: one rounding of the float32 result, 8 significant bits (2**-8 = 3.9e-3 relative).
GPUACT_TOLERANCE = {
    "float16": (1e-3, 1e-3),
    "bfloat16": (8e-3, 1e-6),
    "float32": (1e-5, 1e-6),
    "float64": (1e-12, 1e-14),
}
# Peers (TensorFlow, PyTorch, JAX, naive expressions) are not held to gpuact's contract: XLA and
# cuDNN use approximate exp/tanh/erf and the naive formulas round in the input dtype, so they are
# checked 10x (float16), 10x/10x (float32) and 1000x (float64) looser. A peer outside even these
# is computing something else and is reported wrong.
# A peer's bfloat16 (a PyTorch or NumPy expression rounding each step to 8 bits) gets 5e-2.
PEER_TOLERANCE = {
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 1e-2),
    "float32": (1e-4, 1e-5),
    "float64": (1e-9, 1e-11),
}


def tolerance(dtype: str, gpuact: bool) -> tuple[float, float]:
    """(rtol, atol) for a result of ``dtype``; gpuact's own paths get the contract's."""
    return (GPUACT_TOLERANCE if gpuact else PEER_TOLERANCE)[str(np.dtype(dtype))]


def check_slices(case: Case, limit: int = CHECK_FULL_MAX):
    """The part of a case's flat C-order array that the check compares.

    Returns ``None`` (compare everything) when the case has at most ``limit`` elements, else an
    index array into the array viewed as 2-D: rows of ``(n // chunk, chunk)`` for elementwise ops,
    or whole softmax slices (rows for axis -1, columns for axis 0). Chosen evenly spaced, with the
    first and last always included.
    """
    n = case.elements
    if n <= limit:
        return None
    if case.axis is None:
        chunk = 4096
        count = n // chunk
    else:
        chunk = case.row_length  # type: ignore[assignment]  # an int: the case has an axis
        count = n // chunk
    take = max(2, min(count, limit // chunk))
    return np.unique(np.linspace(0, count - 1, take).round().astype(np.int64))


def sample_input(case: Case, a, slices):
    """A case's input (``Case.input_shape``) restricted to the checked slices, in the input's
    layout (so ``reference`` takes it): each of x and dy sampled as ``sample_view`` does, the bias
    row kept whole (bias cases have BIAS_UNITS = the sampled chunk, so rows stay aligned)."""
    if slices is None:
        return a
    xp = sys.modules["cupy"] if type(a).__module__.startswith("cupy") else np
    x, dy, bias = split_input(case.op, a)
    if bias is not None:
        parts = [sample_view(case, x, slices)] + ([] if dy is None else [sample_view(case, dy, slices)])
        return xp.concatenate(parts + [bias.reshape(1, -1)])
    if dy is not None:
        return xp.stack([sample_view(case, a[0], slices), sample_view(case, a[1], slices)])
    return sample_view(case, a, slices)


def sample_view(case: Case, a, slices):
    """``a`` (NumPy or CuPy, the case's shape) restricted to the checked slices, same axis layout."""
    if slices is None:
        return a
    if case.axis is None:
        return a.reshape(-1, 4096)[slices]
    if case.axis == -1:
        return a[slices]
    return a[:, slices]


def compare(case: Case, got: np.ndarray, x_sample: np.ndarray, gpuact: bool):
    """(ok, message) for ``got`` against the float64 reference computed from ``x_sample``."""
    got = np.asarray(got)
    axis = None if case.axis is None else case.axis
    ref = reference(case.op, x_sample, axis=axis, dtype=case.dtype)
    if is_bias(case.op) and ref.shape != got.shape:
        ref = ref.reshape(got.shape)
    if got.shape != ref.shape:
        return False, f"shape {got.shape}, expected {ref.shape}"
    if np.dtype(got.dtype) != np.dtype(case.dtype):
        return False, f"dtype {got.dtype}, expected {case.dtype}"
    rtol, atol = tolerance(case.dtype, gpuact)
    g = got.astype(np.float64)
    with np.errstate(all="ignore"):
        err = np.abs(g - ref)
        bad = ~(err <= atol + rtol * np.abs(ref))  # NaN counts as bad
    nbad = int(np.count_nonzero(bad))
    if nbad == 0:
        return True, ""
    i = int(np.flatnonzero(bad.reshape(-1))[0])
    return False, (
        f"{nbad} of {bad.size} checked values outside rtol={rtol:g} atol={atol:g}; "
        f"first: got {g.reshape(-1)[i]!r}, expected {ref.reshape(-1)[i]!r}"
    )
