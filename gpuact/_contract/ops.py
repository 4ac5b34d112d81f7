"""The op table shared by every backend: elementwise op names and their parameters, in order.

A public function turns its keyword arguments into these canonical float parameters, so that
a kernel takes them as arguments and a new value never recompiles anything.

``relu`` takes ``(alpha, threshold, lo, hi)``: ``y = clamp(x if x > threshold else 0, lo, hi)
- alpha * max(threshold - x, 0)``, where ``lo, hi = 0, max_value`` when ``max_value`` is given and
``-inf, inf`` (no clip at all) when it is not, as tf.keras does.
``gelu`` is the erf form and ``gelu_tanh`` the tanh approximation. ``squareplus`` takes ``sqrt(b)``,
computed in double precision by the public function, so that no kernel forms ``b`` (which may lie
beyond the float32 range while its square root does not).
"""

ELEMENTWISE_PARAMS: dict[str, tuple[str, ...]] = {
    "relu": ("alpha", "threshold", "lo", "hi"),
    "sigmoid": (),
    "softplus": (),
    "softsign": (),
    "tanh": (),
    "selu": (),
    "elu": ("alpha",),
    "exponential": (),
    "linear": (),
    "relu6": (),
    "leaky_relu": ("negative_slope",),
    "silu": (),
    "gelu": (),
    "gelu_tanh": (),
    "hard_sigmoid": (),
    "hard_silu": (),
    "mish": (),
    "log_sigmoid": (),
    "celu": ("alpha",),
    "hard_tanh": (),
    "hard_shrink": ("threshold",),
    "soft_shrink": ("threshold",),
    "tanh_shrink": (),
    "threshold": ("threshold", "default_value"),
    "squareplus": ("sqrt_b",),
    "sparse_plus": (),
    "sparse_sigmoid": (),
}

ELEMENTWISE_OPS = tuple(ELEMENTWISE_PARAMS)

# selu's constants, exactly as Keras writes them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# Below this, x * sigmoid(x), x * Phi(x), x * tanh(softplus(x)) are 0 in every float format,
# so inputs are clamped here first: -inf then gives 0 (the limit) rather than -inf * 0 = NaN.
NEGATIVE_SATURATION = -1.0e4
