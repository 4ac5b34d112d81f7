// gpuact: the derivatives of the elementwise activations, written once for device and host.
//
// Every function is  T ga::grad_<op>(T x, T p0, T p1, T p2, T p3) = f'(x), with the op's canonical
// parameters as in gpuact_math.cuh; a backward kernel computes dx = dy * f'(x) in one pass.
//
// Rules (gpuact.backward's docstrings state them to the user):
//  * At a kink (a point where the derivative jumps) the derivative is the one from the left,
//    f'(k-): relu'(0) = 0, leaky_relu'(0) = slope, relu6'(6) = 1, hard_tanh'(-1) = 0, ...
//  * NaN in gives NaN. At x = +-inf the derivative is its mathematical limit (sigmoid'(+-inf) = 0,
//    softplus'(inf) = 1, silu'(inf) = 1, gelu'(-inf) = 0, mish'(inf) = 1, elu'(-inf) = 0, ...),
//    where autodiff of the forward formula often gives inf * 0 = NaN: factors that go to 0 are
//    never multiplied by an infinite x (x is clamped where the derivative is already exact).
//  * Stable forms: e = exp(-|t|) never overflows; 1 - sigmoid and 1 - tanh**2 are never formed by
//    cancellation (sigmoid' = e / (1 + e)**2, tanh' = 4 e2 / (1 + e2)**2 with e2 = exp(-2|x|)), so
//    tiny derivatives keep their relative accuracy.
// Needs gpuact_math.cuh first.
#ifndef GPUACT_GRAD_CUH
#define GPUACT_GRAD_CUH

namespace ga {

#define GA_GRAD(name) template <typename T> GA_HD T grad_##name(T x, T p0, T p1, T p2, T p3)
#define GA_UNUSED (void)p0; (void)p1; (void)p2; (void)p3
#define GA_NAN_OR(value) ((x != x) ? x : (value))
// |x| beyond this: the derivatives below are exact constants (0 or 1) in every float format
#define GA_GRAD_SAT T(1.0e4)

// sigmoid'(t) = e / (1 + e)**2 with e = exp(-|t|) (symmetric in t)
template <typename T> GA_HD T sigmoid_grad_core(T t) {
    T e = exp_negative_(-abs_(t));
    T r = T(1) / (T(1) + e);
    return e * r * r;
}
// sech(x)**2 = 4 e2 / (1 + e2)**2 with e2 = exp(-2|x|): tanh' without 1 - tanh**2's cancellation
template <typename T> GA_HD T sech2(T x) {
    T e2 = exp_negative_(T(-2) * abs_(x));
    T r = T(1) / (T(1) + e2);
    return T(4) * e2 * r * r;
}
// the left derivative of clamp(x, lo, hi): 1 on (lo, hi], else 0
template <typename T> GA_HD T clamp_grad(T x, T lo, T hi) { return (x > lo && x <= hi) ? T(1) : T(0); }

// relu(alpha, threshold, lo, hi) = clamp(x if x > t else 0, lo, hi) - alpha * max(t - x, 0)
GA_GRAD(relu) {
    T d = (x > p1) ? clamp_grad(x, p2, p3) : T(0);
    if (p0 != T(0)) d = d + ((x <= p1) ? p0 : T(0));
    return GA_NAN_OR(d);
}
GA_GRAD(sigmoid) { GA_UNUSED; return sigmoid_grad_core(x); }
GA_GRAD(softplus) { GA_UNUSED; return sigmoid_core(x); }
GA_GRAD(log_sigmoid) { GA_UNUSED; return sigmoid_core(-x); }
GA_GRAD(softsign) {
    GA_UNUSED;
    T r = T(1) / (abs_(x) + T(1));  // 0 at +-inf
    return r * r;
}
GA_GRAD(tanh) { GA_UNUSED; return sech2(x); }
// max(x, 0) + alpha expm1(min(x, 0) / divisor): 1 above 0, (alpha / divisor) e**(x / divisor) up to 0
template <typename T> GA_HD T elu_grad_core(T x, T alpha, T divisor) {
    T below = (alpha / divisor) * exp_(min_(x, T(0)) / divisor);
    return GA_NAN_OR((x > T(0)) ? T(1) : below);
}
GA_GRAD(elu) { GA_UNUSED; return elu_grad_core(x, p0, T(1)); }
GA_GRAD(selu) { GA_UNUSED; return elu_grad_core(x, selu_alpha<T>(), T(1)) * selu_scale<T>(); }
// celu is x for x >= 0: at 0 the left derivative e**0 = 1 equals the right one
GA_GRAD(celu) { GA_UNUSED; return elu_grad_core(x, p0, p0); }
GA_GRAD(exponential) { GA_UNUSED; return exp_(x); }
GA_GRAD(linear) { GA_UNUSED; return GA_NAN_OR(T(1)); }
GA_GRAD(relu6) { GA_UNUSED; return GA_NAN_OR(clamp_grad(x, T(0), T(6))); }
// x if x >= 0 else slope x: the left derivative at 0 is the slope
GA_GRAD(leaky_relu) { GA_UNUSED; return GA_NAN_OR((x > T(0)) ? T(1) : p0); }
// (x s(x))' = s(x) (1 + x s(-x)); x clamped to +-1e4, where the derivative is exactly 0 or 1
GA_GRAD(silu) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    T e = exp_negative_(-abs_(u));  // s(u) and s(-u) from one exp and one division
    T r = T(1) / (T(1) + e);
    T s_pos = u >= T(0) ? r : e * r;
    T s_neg = u >= T(0) ? e * r : r;
    return s_pos * (T(1) + u * s_neg);
}
// (x Phi(x))' = Phi(x) + x phi(x)
// Phi(x) from the tail Phi(-|x|), phi(x) = e**(-x**2 / 2) / sqrt(2 pi)
GA_GRAD(gelu) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    T gauss;
    T tail = normal_tail_gauss_(u, gauss);
    T cdf = u < T(0) ? tail : T(1) - tail;  // NaN: 1 - NaN
    return cdf + u * gauss * T(0.39894228040143267793994605993438);  // 1 / sqrt(2 pi)
}
// (x s(2z))' = s(2z) + x s'(2z) 2 z', z = sqrt(2/pi) (x + 0.044715 x**3)
GA_GRAD(gelu_tanh) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    T t = (u * u * T(0.044715) + T(1)) * u * T(1.5957691216057307117597842397375);  // 2z
    T dt = (u * u * T(0.134145) + T(1)) * T(1.5957691216057307117597842397375);     // (2z)'
    return sigmoid_core(t) + u * sigmoid_grad_core(t) * dt;
}
// relu6(x + 3) / 6: 1/6 on (-3, 3]
GA_GRAD(hard_sigmoid) { GA_UNUSED; return GA_NAN_OR((x > T(-3) && x <= T(3)) ? T(1) / T(6) : T(0)); }
// x hard_sigmoid(x): hard_sigmoid(x) + x / 6 on (-3, 3]
GA_GRAD(hard_silu) {
    GA_UNUSED;
    T inside = (x > T(-3) && x <= T(3)) ? x / T(6) : T(0);
    return GA_NAN_OR(hard_sigmoid_core(x) + inside);
}
// (x tanh(sp(x)))' = tanh(sp) + x sech(sp)**2 s(x), sp = softplus(x)
GA_GRAD(mish) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    T sp = max_(u, T(0)) + log1p_exp_neg_abs(u);
    return tanh_(sp) + u * sech2(sp) * sigmoid_core(u);
}
GA_GRAD(hard_tanh) { GA_UNUSED; return GA_NAN_OR(clamp_grad(x, T(-1), T(1))); }
// both shrinks are x outside [-t, t] (1 there, and from the left at -t), constant inside
GA_GRAD(hard_shrink) { GA_UNUSED; return GA_NAN_OR((x > p0 || x <= -p0) ? T(1) : T(0)); }
GA_GRAD(soft_shrink) { GA_UNUSED; return GA_NAN_OR((x > p0 || x <= -p0) ? T(1) : T(0)); }
// 1 - tanh'(x) = tanh(x)**2
GA_GRAD(tanh_shrink) {
    GA_UNUSED;
    T t = tanh_(x);
    return t * t;
}
GA_GRAD(threshold) { GA_UNUSED; return GA_NAN_OR((x > p0) ? T(1) : T(0)); }
// ((x + s) / 2)' = (1 + x / s) / 2, s = hypot(x, sqrt b): for x < 0 as b / (2 s (s - x)) (no
// cancellation); 1 at +inf; with b = 0 it is relu's, 0 from the left at 0.
GA_GRAD(squareplus) {
    GA_UNUSED;
    if (p0 == T(0)) return GA_NAN_OR((x > T(0)) ? T(1) : T(0));
    T s = hypot_(x, p0);
    T below = p0 * (p0 / (s * (s - x))) * T(0.5);
    T above = (x == s) ? T(1) : T(0.5) + T(0.5) * (x / s);  // x == s: +inf, or so large that s rounds to x
    return (x < T(0)) ? below : above;
}
// 0 up to -1, (x + 1) / 2 on (-1, 1), 1 from 1 on: continuous, no kink
GA_GRAD(sparse_plus) {
    GA_UNUSED;
    T mid = (x + T(1)) * T(0.5);
    return GA_NAN_OR((x >= T(1)) ? T(1) : ((x <= T(-1)) ? T(0) : mid));
}
GA_GRAD(sparse_sigmoid) { GA_UNUSED; return GA_NAN_OR((x > T(-1) && x <= T(1)) ? T(0.5) : T(0)); }

// ---- second derivatives -------------------------------------------------------------------------
//
// The derivative op d_<op> (gpuact._contract.ops.SECOND_DERIVATIVE_OPS) is x -> f'(x) as an op of its
// own, with <op>'s parameters; its derivative grad_d_<op> is f''(x), so the ordinary backward kernel
// of d_<op> computes dy * f''(x). The rules are the first derivative's: the derivative from
// the left at a kink (piecewise-linear ops have f'' = 0 everywhere, elu's at 0 is alpha), NaN in
// gives NaN, the limit at +-inf (0 for all of these), stable forms, x clamped where f'' is already 0.
#define GA_DERIVATIVE_OP(name)                                            \
    template <typename T> GA_HD T d_##name(T x, T p0, T p1, T p2, T p3) { \
        return grad_##name(x, p0, p1, p2, p3);                            \
    }
GA_DERIVATIVE_OP(relu)
GA_DERIVATIVE_OP(relu6)
GA_DERIVATIVE_OP(leaky_relu)
GA_DERIVATIVE_OP(sigmoid)
GA_DERIVATIVE_OP(tanh)
GA_DERIVATIVE_OP(silu)
GA_DERIVATIVE_OP(gelu)
GA_DERIVATIVE_OP(gelu_tanh)
GA_DERIVATIVE_OP(softplus)
GA_DERIVATIVE_OP(elu)
GA_DERIVATIVE_OP(selu)
#undef GA_DERIVATIVE_OP

GA_GRAD(d_relu) { GA_UNUSED; return GA_NAN_OR(T(0)); }
GA_GRAD(d_relu6) { GA_UNUSED; return GA_NAN_OR(T(0)); }
GA_GRAD(d_leaky_relu) { GA_UNUSED; return GA_NAN_OR(T(0)); }
// s'' = s' (1 - 2 s) = -tanh(t / 2) s': no 1 - 2 s cancellation near 0
GA_GRAD(d_sigmoid) { GA_UNUSED; return -tanh_(x * T(0.5)) * sigmoid_grad_core(x); }
// tanh'' = -2 tanh sech**2
GA_GRAD(d_tanh) { GA_UNUSED; return T(-2) * tanh_(x) * sech2(x); }
// (x s(x))'' = s'(x) (2 + x (1 - 2 s(x))) = s'(x) (2 - x tanh(x / 2))
GA_GRAD(d_silu) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    return sigmoid_grad_core(u) * (T(2) - u * tanh_(u * T(0.5)));
}
// (x Phi(x))'' = phi(x) (2 - x**2)
GA_GRAD(d_gelu) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    T u2 = u * u;
    return exp_negative_(u2 * T(-0.5)) * T(0.39894228040143267793994605993438) * (T(2) - u2);
}
// x (1 + tanh(z)) / 2, z = c (x + k x**3): f'' = sech(z)**2 (z' + x (z'' - 2 tanh(z) z'**2) / 2)
GA_GRAD(d_gelu_tanh) {
    GA_UNUSED;
    T u = clip_(x, -GA_GRAD_SAT, GA_GRAD_SAT);
    T z = (u * u * T(0.044715) + T(1)) * u * T(0.79788456080286535587989211986876);  // sqrt(2 / pi)
    T dz = (u * u * T(0.134145) + T(1)) * T(0.79788456080286535587989211986876);  // 3 k = 0.134145
    T ddz = u * T(0.21406444881780074632901625683959);  // 6 k sqrt(2 / pi)
    return sech2(z) * (dz + u * (ddz - T(2) * tanh_(z) * dz * dz) * T(0.5));
}
GA_GRAD(d_softplus) { GA_UNUSED; return sigmoid_grad_core(x); }
// 0 above 0, alpha e**x up to 0 (the left derivative at 0)
GA_GRAD(d_elu) { GA_UNUSED; return GA_NAN_OR((x > T(0)) ? T(0) : p0 * exp_negative_(min_(x, T(0)))); }
GA_GRAD(d_selu) {
    GA_UNUSED;
    return GA_NAN_OR((x > T(0)) ? T(0) : (selu_scale<T>() * selu_alpha<T>()) * exp_negative_(min_(x, T(0))));
}

#undef GA_GRAD
#undef GA_UNUSED
#undef GA_NAN_OR
#undef GA_GRAD_SAT

}  // namespace ga

#endif  // GPUACT_GRAD_CUH
