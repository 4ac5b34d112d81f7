// gpuact: the CPU kernels behind the NumPy path, for float32 and float64 contiguous arrays, and the
// small Python extension module (gpuact._gpuact_cpu) through which gpuact/backends/_native.py calls
// them. (_native.py routes float32 here, and the float64 ops whose math needs no C library call:
// scalar libm exp/tanh in double is slower than NumPy's SIMD loops.)
//
// The math is gpuact_math.cuh's, the same templates the CUDA kernels use, compiled for the host
// with GA_HOST_SIMD so that float32 exp, expm1, log1p, tanh and gelu are gpuact_host_simd.h's
// vectorizable versions. Each op is one fused pass (input read once, output written once), where
// NumPy needs a ufunc pass per step. Threads: most entry points run on the caller's thread, which
// _native.py's callers give disjoint ranges from their thread pool, and the module releases the GIL
// for any range worth it. The elementwise passes (unary, unary_bias, grad, grad_bias) take an
// optional last argument, a thread count, and then cut their range among the module's own threads
// (SplitPool below), which wait for work spinning for a while before they sleep: a Python pool
// thread takes 50-200 us to wake on a VM, the time of a whole pass over a few MiB.
//
// The entry points take Python buffers, not raw addresses: the buffer protocol checks that an
// output is writeable and every range lies inside its buffers, so a wrong call raises instead of
// writing elsewhere, and a call costs a fraction of a microsecond (ctypes took about 3).
//
// Built by hatch_build.py when the package is installed:
//   c++ -O3 -fno-math-errno -fno-trapping-math -fopenmp-simd -fPIC -shared -std=c++17 -I<Python.h>
// never with -ffast-math: the NaN and inf rules need IEEE semantics, and its start-up code would
// set flush-to-zero for the whole process. -fopenmp-simd only enables the `omp simd` pragmas (no
// OpenMP runtime). On x86-64 Linux every loop is cloned for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 +
// FMA) and the baseline, and the loader picks the clone the CPU supports (GCC target_clones), so a
// wheel built on one x86-64 machine runs on any other. On Python >= 3.11 the module uses only the
// stable ABI (Py_LIMITED_API), so one build serves every later Python too.
// Python.h first, as the C API asks (it may set feature macros the C++ headers read).
#ifdef GA_LIMITED_API
#define Py_LIMITED_API GA_LIMITED_API  // hatch_build.py: 0x030B0000 on Python >= 3.11
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define GA_HOST_SIMD 1
#include "gpuact_math.cuh"
#include "gpuact_grad.cuh"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define GA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GA_CLONES
#endif

// Bumped whenever an entry point is added or changes; gpuact/backends/_native.py refuses another.
const int kAbiVersion = 10;  // 10: the gated rows on the module's threads (gated, gated_grad take threads)

namespace {

// bfloat16 storage, computed in float: widened exactly (the bits shifted up), narrowed to nearest
// even with NaN kept a quiet NaN of its sign (ml_dtypes' and CUDA's cvt.rn.bf16.f32 rounding),
// element by element inside the loops, so that a bfloat16 array is one pass with no float32 copy of
// it.
GA_HD float bf16_to_float(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
GA_HD uint16_t float_to_bf16(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return uint16_t(nan ? ((u >> 16) | 0x40u) : rounded);
}

// Storage <-> compute in the loops below: float and double as they are, bfloat16 bits (uint16_t)
// widened and rounded as above.
GA_HD float widen(float v) { return v; }
GA_HD double widen(double v) { return v; }
GA_HD float widen(uint16_t h) { return bf16_to_float(h); }
GA_HD float narrow_to(float v, const float*) { return v; }
GA_HD double narrow_to(double v, const double*) { return v; }
GA_HD uint16_t narrow_to(float v, const uint16_t*) { return float_to_bf16(v); }

// y may be x itself (out=x): element i is read once, before it is written, and no other element
// is touched in between, so there is no dependence between iterations. ivdep says so to GCC, which
// would otherwise add a run-time overlap check and take its scalar loop for exactly that case.
// Partly overlapping x and y are never passed (gpuact/backends/numpy_backend/ copies x first).
template <typename S, typename T, T (*Op)(T, T, T, T, T)>
GA_HD void elementwise_loop(const S* x, S* y, int64_t n, T p0, T p1, T p2, T p3) {
#pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) y[i] = narrow_to(Op(widen(x[i]), p0, p1, p2, p3), y);
}

// The row pieces softmax_rows and log_softmax_short_rows share: the same loops, so the same bits.
template <typename T> GA_HD T row_max(const T* xr, int64_t length) {
    T m = -__builtin_inf();
#pragma omp simd reduction(max : m)
    for (int64_t k = 0; k < length; ++k) m = xr[k] > m ? xr[k] : m;
    return m;
}
// log_softmax's result: y = (x - max) - log(sum)
template <typename T> GA_HD void row_log_softmax(const T* xr, T* yr, int64_t length, T m, T log_s) {
#pragma omp simd
    for (int64_t k = 0; k < length; ++k) yr[k] = T(xr[k] - m) - log_s;
}

// log_softmax of short rows (up to kShortRow values), kShortRowBlock rows at a time: the rows'
// maxima and sums first, then their logs, then the results. The scalar log a row, waited on before
// its row could be written, cost rows of 32 a third more than softmax (10.5 ns a row, one thread);
// the block's logs are independent calls that overlap. The same operations in the same order as
// softmax_rows below, so the same bits; the block stays in L1 for the last pass. Interleaved, one
// thread: rows of 32 5.03 -> 4.17 ms, of 64 3.50 -> 3.29 ms (2**22 values); rows of 256 were slower
// on two threads (1.23 -> 1.40 ms), so longer rows keep the row-by-row loop.
const int64_t kShortRow = 64;
const int64_t kShortRowBlock = 16;
template <typename T>
GA_HD void log_softmax_short_rows(const T* x, T* y, int64_t rows, int64_t length) {
    for (int64_t r0 = 0; r0 < rows; r0 += kShortRowBlock) {
        const int64_t block = rows - r0 < kShortRowBlock ? rows - r0 : kShortRowBlock;
        T maxima[kShortRowBlock];
        double sums[kShortRowBlock];
        T logs[kShortRowBlock];
        for (int64_t j = 0; j < block; ++j) {
            const T* xr = x + (r0 + j) * length;
            const T m = row_max(xr, length);
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (int64_t k = 0; k < length; ++k) s += double(ga::exp_nonpositive_(T(xr[k] - m)));
            maxima[j] = m;
            sums[j] = s;
        }
        for (int64_t j = 0; j < block; ++j) logs[j] = T(std::log(sums[j]));
        for (int64_t j = 0; j < block; ++j)
            row_log_softmax(x + (r0 + j) * length, y + (r0 + j) * length, length, maxima[j], logs[j]);
    }
}

// Softmax of `rows` contiguous rows of `length` (y may not alias x): the row max, then
// y = exp(x - max) summed in the same pass, then the scaling. `omp simd reduction` (compiled with
// -fopenmp-simd: the pragmas only, no OpenMP runtime) lets GCC keep vector partial maxima and
// sums, which it may not do on its own without reassociation flags. The max may ignore a NaN;
// that changes nothing, since the NaN still reaches the row's sum and so every output of the row,
// as with NumPy's max. The sum is accumulated in double whatever T is: a float32 sum of 2**25
// terms drifts by ~1e-4 relative (and stops growing at 2**24 ones), where the documented
// tolerance holds for any length only with the wider accumulator. It also makes the result
// independent of the order of the terms in practice (the vector width of the machine's clone, or
// the column kernels' order): a float32 partial sum first was a fifth faster and broke that.
template <typename T>
GA_HD void softmax_rows(const T* x, T* y, int64_t rows, int64_t length, int log) {
    if (log && length <= kShortRow) {
        log_softmax_short_rows(x, y, rows, length);
        return;
    }
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * length;
        T* yr = y + r * length;
        const T m = row_max(xr, length);
        // The next row streams in while this one is computed on from L1; left to the hardware
        // prefetcher, the max pass of every row would wait on memory with the vector units idle.
        if (r + 1 < rows && length <= 16384)
            for (int64_t k = 0; k < length; k += int64_t(64 / sizeof(T))) __builtin_prefetch(xr + length + k);
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < length; ++k) {
            T e = ga::exp_nonpositive_(T(xr[k] - m));
            yr[k] = e;
            s += double(e);
        }
        if (log) {
            // one scalar log a row: the C library's, not simd::log, whose selects cost more than the
            // whole row for short rows (rows of 32: 1.67 against 0.95 ns an element)
            row_log_softmax(xr, yr, length, m, T(std::log(s)));
        } else {
            T inv = T(1.0 / s);
#pragma omp simd
            for (int64_t k = 0; k < length; ++k) yr[k] *= inv;
        }
    }
}

// Softmax along the middle axis of a contiguous (outer, length, inner) array, inner > 1: a
// work unit is one outer index and `width` neighbouring columns, whose maxima and sums are
// vectors along inner (contiguous in memory), so every loop below vectorizes without gathers.
// Units [u0, u1) of outer * ceil(inner / width) are done; the threads take disjoint ranges.
// NaN and -inf behave as in softmax_rows, column by column; sums are in double, as there.
const int64_t kMaxColumnWidth = 256;

template <typename T>
GA_HD void softmax_columns(const T* x, T* y, int64_t length, int64_t inner, int64_t width, int64_t u0,
                           int64_t u1, int log) {
    width = width < 1 ? 1 : (width > kMaxColumnWidth ? kMaxColumnWidth : width);
    const int64_t chunks = (inner + width - 1) / width;
    T m[kMaxColumnWidth], f[kMaxColumnWidth];
    double s[kMaxColumnWidth];
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t o = u / chunks, j0 = (u % chunks) * width;
        const int64_t w = inner - j0 < width ? inner - j0 : width;
        const T* xo = x + o * length * inner + j0;
        T* yo = y + o * length * inner + j0;
        for (int64_t j = 0; j < w; ++j) m[j] = -__builtin_inf();
        for (int64_t l = 0; l < length; ++l) {
            const T* xl = xo + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) m[j] = xl[j] > m[j] ? xl[j] : m[j];
        }
        for (int64_t j = 0; j < w; ++j) s[j] = 0.0;
        for (int64_t l = 0; l < length; ++l) {
            const T* xl = xo + l * inner;
            T* yl = yo + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) {
                T e = ga::exp_nonpositive_(T(xl[j] - m[j]));
                yl[j] = e;
                s[j] += double(e);
            }
        }
        if (log) {
            for (int64_t j = 0; j < w; ++j) f[j] = T(std::log(s[j]));
            for (int64_t l = 0; l < length; ++l) {
                const T* xl = xo + l * inner;
                T* yl = yo + l * inner;
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) yl[j] = T(xl[j] - m[j]) - f[j];
            }
        } else {
            for (int64_t j = 0; j < w; ++j) f[j] = T(1.0 / s[j]);
            for (int64_t l = 0; l < length; ++l) {
                T* yl = yo + l * inner;
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) yl[j] *= f[j];
            }
        }
    }
}

// Softmax along the middle axis of a contiguous (outer, length, inner) array whose rows (inner
// values) are long: the threads take ranges of whole rows, not of columns, so that every pass
// streams through memory (a unit of columns reads row segments a whole row apart, a page each for
// rows of 4 KiB, and its writes ran at a quarter of a contiguous pass's speed). Two phases per
// outer index: each chunk of the rows keeps every column's running max m and sum s of e**(x - m)
// (column_stats), the chunks' (m, s) are merged, then each chunk's rows are written (column_write).
// column_stats goes block by block of kColumnBlock rows: the block's max first (from L1), s
// rescaled by e**(m_old - m_new) where the max moved, then the block's exps added. NaN and -inf
// columns behave as in softmax_columns; sums are in double.
const int64_t kColumnBlock = 16;

template <typename T>
GA_HD void column_stats(const T* x, int64_t inner, int64_t l0, int64_t l1, T* m, double* s, T* bm) {
    for (int64_t j = 0; j < inner; ++j) {
        m[j] = -__builtin_inf();
        s[j] = 0.0;
    }
    for (int64_t b0 = l0; b0 < l1; b0 += kColumnBlock) {
        const int64_t b1 = b0 + kColumnBlock < l1 ? b0 + kColumnBlock : l1;
        for (int64_t j = 0; j < inner; ++j) bm[j] = m[j];
        for (int64_t l = b0; l < b1; ++l) {
            const T* xl = x + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < inner; ++j) bm[j] = xl[j] > bm[j] ? xl[j] : bm[j];
        }
        // an unchanged max (-inf or +inf against itself too) keeps s as it is
#pragma omp simd
        for (int64_t j = 0; j < inner; ++j) {
            s[j] *= double(bm[j] == m[j] ? T(1) : ga::exp_nonpositive_(T(m[j] - bm[j])));
            m[j] = bm[j];
        }
        for (int64_t l = b0; l < b1; ++l) {
            const T* xl = x + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < inner; ++j) s[j] += double(ga::exp_nonpositive_(T(xl[j] - m[j])));
        }
    }
}

// rows [l0, l1): y = e**(x - m) * f, f = 1 / s (log: y = x - m - f, f = log s)
template <typename T>
GA_HD void column_write(const T* x, T* y, int64_t inner, int64_t l0, int64_t l1, const T* m, const T* f, int log) {
    for (int64_t l = l0; l < l1; ++l) {
        const T* xl = x + l * inner;
        T* yl = y + l * inner;
        if (log) {
#pragma omp simd
            for (int64_t j = 0; j < inner; ++j) yl[j] = T(xl[j] - m[j]) - f[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < inner; ++j) yl[j] = ga::exp_nonpositive_(T(xl[j] - m[j])) * f[j];
        }
    }
}

// Sparsemax of `rows` contiguous rows of `length` (y may be x): the Euclidean projection of each row
// onto the probability simplex, max(z - tau, 0) with z = x - max(x) (shift-invariant) and tau the
// number that makes the row sum to 1. tau lies in [-1, 0]. Each pass over the row evaluates, at two
// points t (the current lower bound `lo` of tau and the midpoint towards the upper bound), the
// sum S and count C of the z above t; f(t) = S - t C is the row's sum at t, decreasing in t. Then
//   * Michelot's step g(t) = (S - 1) / C never overshoots: t <= g(t) <= tau for t <= tau, and
//     g(t) = tau exactly once {z > t} is the support, so the exact formula ends the search;
//   * the midpoint halves [lo, hi] (f(mid) >= 1 means tau >= mid, and g(mid) is then a better lo),
//     which bounds the number of passes by the float's bits however the values lie.
// The search stops when a Michelot step removes nothing from the support: then g(t) is tau. Sums
// are in double. A row holding NaN, or whose max is not finite (+inf, or all -inf), is NaN.
template <typename T>
GA_HD void sparsemax_rows(const T* x, T* y, int64_t rows, int64_t length) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * length;
        T* yr = y + r * length;
        T m = -__builtin_inf();
        bool nan = false;
        for (int64_t k = 0; k < length; ++k) {
            nan = nan || xr[k] != xr[k];
            m = xr[k] > m ? xr[k] : m;
        }
        if (nan || !(m > -__builtin_inf() && m < __builtin_inf())) {
            for (int64_t k = 0; k < length; ++k) yr[k] = T(__builtin_nan(""));
            continue;
        }
        double lo = -1.0, hi = 0.0, tau = -1.0;
        int64_t last_count = -1;  // the support size the last Michelot step started from
        for (int pass = 0; pass < 200; ++pass) {
            const double mid = 0.5 * (lo + hi);
            double s_lo = 0.0, s_mid = 0.0;
            int64_t c_lo = 0, c_mid = 0;
            for (int64_t k = 0; k < length; ++k) {
                const double z = double(T(xr[k] - m));
                if (z > lo) {
                    s_lo += z;
                    ++c_lo;
                    if (z > mid) {
                        s_mid += z;
                        ++c_mid;
                    }
                }
            }
            if (c_lo == last_count) {  // the step from the previous point removed nothing: lo is tau
                tau = lo;
                break;
            }
            if (c_mid > 0 && s_mid - mid * double(c_mid) >= 1.0) {
                last_count = c_mid;
                tau = lo = (s_mid - 1.0) / double(c_mid);
            } else {
                hi = mid;
                last_count = c_lo;
                tau = lo = (s_lo - 1.0) / double(c_lo);
            }
        }
        const T t = T(tau);
        for (int64_t k = 0; k < length; ++k) {
            const T v = T(xr[k] - m) - t;
            yr[k] = v > T(0) ? v : T(0);
        }
    }
}

// ---- training: the fused bias and the backward passes ------------------------------------------

// y = op(x + b) for contiguous x, y whose elements [start, stop) are taken in rows of nb, b being
// the (contiguous) trailing-axes bias: row by row, so the inner loop reads b contiguously and
// vectorizes, and the index wraps once a row instead of a modulo per element.
template <typename T, T (*Op)(T, T, T, T, T)>
GA_HD void bias_loop(const T* x, const T* b, T* y, int64_t start, int64_t stop, int64_t nb, T p0, T p1, T p2,
                     T p3) {
    for (int64_t i = start; i < stop;) {
        const int64_t c = i % nb;
        const int64_t m = (stop - i < nb - c) ? stop - i : nb - c;
        const T* xi = x + i;
        const T* bc = b + c;
        T* yi = y + i;
#pragma GCC ivdep
        for (int64_t k = 0; k < m; ++k) yi[k] = Op(T(xi[k] + bc[k]), p0, p1, p2, p3);
        i += m;
    }
}

// A gated unit, y = op(g) * v, over rows of `half` elements: row r reads g at g_off + r * in_stride
// (v at v_off + r * in_stride) and writes y at y_off + r * out_stride. The halves of a contiguous x
// split along an axis are such rows (in_stride: the split axis's length times the trailing ones),
// and so are two whole arrays (one row). y never aliases g or v (the caller copies first).
template <typename S, typename T, T (*Op)(T, T, T, T, T)>
GA_HD void gated_rows(const S* g, const S* v, S* y, int64_t g_off, int64_t v_off, int64_t y_off, int64_t in_stride,
                      int64_t out_stride, int64_t row0, int64_t row1, int64_t half, T p0, T p1, T p2, T p3) {
    for (int64_t r = row0; r < row1; ++r) {
        const S* gr = g + g_off + r * in_stride;
        const S* vr = v + v_off + r * in_stride;
        S* yr = y + y_off + r * out_stride;
#pragma GCC ivdep
        for (int64_t k = 0; k < half; ++k) yr[k] = narrow_to(widen(vr[k]) * Op(widen(gr[k]), p0, p1, p2, p3), yr);
    }
}

// Its backward in one pass: dg = (dy v) op'(g) and dv = op(g) dy, dy laid out as y, dg and dv as g
// and v (the halves of dx, or two arrays).
template <typename S, typename T, T (*Op)(T, T, T, T, T), T (*Grad)(T, T, T, T, T)>
GA_HD void gated_grad_rows(const S* dy, const S* g, const S* v, S* dg, S* dv, int64_t g_off, int64_t v_off,
                           int64_t y_off, int64_t in_stride, int64_t out_stride, int64_t row0, int64_t row1,
                           int64_t half, T p0, T p1, T p2, T p3) {
    for (int64_t r = row0; r < row1; ++r) {
        const S* dyr = dy + y_off + r * out_stride;
        const S* gr = g + g_off + r * in_stride;
        const S* vr = v + v_off + r * in_stride;
        S* dgr = dg + g_off + r * in_stride;
        S* dvr = dv + v_off + r * in_stride;
#pragma GCC ivdep
        for (int64_t k = 0; k < half; ++k) {
            const T d = widen(dyr[k]), a = widen(gr[k]);
            dgr[k] = narrow_to(T(d * widen(vr[k])) * Grad(a, p0, p1, p2, p3), dgr);
            dvr[k] = narrow_to(Op(a, p0, p1, p2, p3) * d, dvr);
        }
    }
}

// dx = dy * f'(x) (dx may be dy or x itself: element k is read before it is written)
template <typename S, typename T, T (*Grad)(T, T, T, T, T)>
GA_HD void grad_loop(const S* dy, const S* x, S* dx, int64_t n, T p0, T p1, T p2, T p3) {
#pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) dx[i] = narrow_to(widen(dy[i]) * Grad(widen(x[i]), p0, p1, p2, p3), dx);
}

// dx = dy * f'(x + b), b as in bias_loop
template <typename T, T (*Grad)(T, T, T, T, T)>
GA_HD void grad_bias_loop(const T* dy, const T* x, const T* b, T* dx, int64_t start, int64_t stop, int64_t nb, T p0,
                          T p1, T p2, T p3) {
    for (int64_t i = start; i < stop;) {
        const int64_t c = i % nb;
        const int64_t m = (stop - i < nb - c) ? stop - i : nb - c;
        const T* dyi = dy + i;
        const T* xi = x + i;
        const T* bc = b + c;
        T* dxi = dx + i;
#pragma GCC ivdep
        for (int64_t k = 0; k < m; ++k) dxi[k] = dyi[k] * Grad(T(xi[k] + bc[k]), p0, p1, p2, p3);
        i += m;
    }
}

// The softmax backward of `rows` contiguous rows, the forward recomputed in the row (in cache):
// softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - softmax(x) sum(dy). y is written into
// dx first and overwritten in the last pass. Sums in double, as the forward. Rows whose max is not
// finite (all -inf, +inf, NaN) give NaN, as the forward does.
template <typename T>
// `e` is a row of scratch (length values): each exp(x - max) is computed once and read back from
// it (in cache) by the later passes, which recomputed it before. dx may be x or dy itself.
GA_HD void softmax_grad_rows(const T* dy, const T* x, T* dx, int64_t rows, int64_t length, int log, T* e) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * length;
        const T* dyr = dy + r * length;
        T* dxr = dx + r * length;
        T m = -__builtin_inf();
#pragma omp simd reduction(max : m)
        for (int64_t k = 0; k < length; ++k) m = xr[k] > m ? xr[k] : m;
        double s = 0.0, sdy = 0.0;
#pragma omp simd reduction(+ : s, sdy)
        for (int64_t k = 0; k < length; ++k) {
            e[k] = ga::exp_nonpositive_(T(xr[k] - m));
            s += double(e[k]);
            sdy += double(dyr[k]);
        }
        if (!(m > -__builtin_inf() && m < __builtin_inf())) s = __builtin_nan("");
        const T inv = T(1.0 / s);
        if (log) {
            const T scale = T(sdy / s);
#pragma omp simd
            for (int64_t k = 0; k < length; ++k) dxr[k] = dyr[k] - e[k] * scale;
        } else {
            double dot = 0.0;
#pragma omp simd reduction(+ : dot)
            for (int64_t k = 0; k < length; ++k) dot += double(dyr[k]) * double(e[k] * inv);
            const T d = T(dot);
#pragma omp simd
            for (int64_t k = 0; k < length; ++k) dxr[k] = (e[k] * inv) * (dyr[k] - d);
        }
    }
}

// The softmax backward along the middle axis of contiguous (outer, length, inner) arrays, inner > 1,
// in the column kernel's work units (see softmax_columns): per column the max, sum(exp) and
// sum(dy) or sum(dy exp) as vectors along inner, then dx; four passes over a unit's (length, width)
// block, which a thread keeps to itself.
template <typename T>
GA_HD void softmax_grad_columns(const T* dy, const T* x, T* dx, int64_t length, int64_t inner, int64_t width,
                                int64_t u0, int64_t u1, int log) {
    width = width < 1 ? 1 : (width > kMaxColumnWidth ? kMaxColumnWidth : width);
    const int64_t chunks = (inner + width - 1) / width;
    T m[kMaxColumnWidth], f[kMaxColumnWidth], d[kMaxColumnWidth];
    double s[kMaxColumnWidth], t[kMaxColumnWidth];
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t o = u / chunks, j0 = (u % chunks) * width;
        const int64_t w = inner - j0 < width ? inner - j0 : width;
        const int64_t base = o * length * inner + j0;
        const T* xo = x + base;
        const T* dyo = dy + base;
        T* dxo = dx + base;
        for (int64_t j = 0; j < w; ++j) {
            m[j] = -__builtin_inf();
            s[j] = 0.0;
            t[j] = 0.0;
        }
        for (int64_t l = 0; l < length; ++l) {
            const T* xl = xo + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) m[j] = xl[j] > m[j] ? xl[j] : m[j];
        }
        for (int64_t l = 0; l < length; ++l) {
            const T* xl = xo + l * inner;
            const T* dyl = dyo + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) {
                const T e = ga::exp_nonpositive_(T(xl[j] - m[j]));
                s[j] += double(e);
                t[j] += log ? double(dyl[j]) : double(dyl[j]) * double(e);
            }
        }
        for (int64_t j = 0; j < w; ++j) {
            if (!(m[j] > -__builtin_inf() && m[j] < __builtin_inf())) s[j] = __builtin_nan("");
            f[j] = T(1.0 / s[j]);   // y = exp(x - m) f
            d[j] = T(t[j] / s[j]);  // log_softmax: sum(dy) / s; softmax: sum(dy y)
        }
        for (int64_t l = 0; l < length; ++l) {
            const T* xl = xo + l * inner;
            const T* dyl = dyo + l * inner;
            T* dxl = dxo + l * inner;
            if (log) {
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) dxl[j] = dyl[j] - ga::exp_nonpositive_(T(xl[j] - m[j])) * d[j];
            } else {
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) {
                    const T y = ga::exp_nonpositive_(T(xl[j] - m[j])) * f[j];
                    dxl[j] = y * (dyl[j] - d[j]);
                }
            }
        }
    }
}

// The sparsemax backward of `rows` contiguous rows: the support (y > 0) recomputed as the forward
// does (sparsemax_rows into dx first), then dx = s (dy - mean of dy over the support).
template <typename T>
GA_HD void sparsemax_grad_rows(const T* dy, const T* x, T* dx, int64_t rows, int64_t length) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* dyr = dy + r * length;
        T* dxr = dx + r * length;
        sparsemax_rows<T>(x + r * length, dxr, 1, length);
        double sum = 0.0;
        int64_t count = 0;
        bool nan = false;
        for (int64_t k = 0; k < length; ++k) {
            nan = nan || dxr[k] != dxr[k];
            if (dxr[k] > T(0)) {
                sum += double(dyr[k]);
                ++count;
            }
        }
        const T mean = T(count ? sum / double(count) : 0.0);
        for (int64_t k = 0; k < length; ++k)
            dxr[k] = nan ? T(__builtin_nan("")) : (dxr[k] > T(0) ? T(dyr[k] - mean) : T(0));
    }
}

}  // namespace


// ---- the entry points ----------------------------------------------------------------------------
// One function per (op, dtype) with the instruction-set clones, collected in a table the module
// indexes: gpuact/backends/_native.py reads the names once and keeps the indices.

// Each op in float32 and float64: forward, forward with a bias, backward, backward with a bias.
#define GA_CPU_TYPED(name, T, tag)                                                                        \
    GA_CLONES static void name##_##tag(const T* x, T* y, int64_t n, double p0, double p1, double p2,      \
                                       double p3) {                                                       \
        elementwise_loop<T, T, ga::name<T>>(x, y, n, T(p0), T(p1), T(p2), T(p3));                            \
    }                                                                                                     \
    GA_CLONES static void name##_bias_##tag(const T* x, const T* b, T* y, int64_t start, int64_t stop,    \
                                            int64_t nb, double p0, double p1, double p2, double p3) {     \
        bias_loop<T, ga::name<T>>(x, b, y, start, stop, nb, T(p0), T(p1), T(p2), T(p3));                  \
    }                                                                                                     \
    GA_CLONES static void name##_grad_##tag(const T* dy, const T* x, T* dx, int64_t n, double p0,        \
                                            double p1, double p2, double p3) {                            \
        grad_loop<T, T, ga::grad_##name<T>>(dy, x, dx, n, T(p0), T(p1), T(p2), T(p3));                       \
    }                                                                                                     \
    GA_CLONES static void name##_grad_bias_##tag(const T* dy, const T* x, const T* b, T* dx, int64_t start, \
                                                 int64_t stop, int64_t nb, double p0, double p1, double p2, \
                                                 double p3) {                                             \
        grad_bias_loop<T, ga::grad_##name<T>>(dy, x, b, dx, start, stop, nb, T(p0), T(p1), T(p2), T(p3)); \
    }
// ...and on bfloat16 storage, forward and backward (a bias goes through float32 blocks)
#define GA_CPU_BF16(name)                                                                                 \
    GA_CLONES static void name##_bf16(const uint16_t* x, uint16_t* y, int64_t n, double p0, double p1,    \
                                      double p2, double p3) {                                             \
        elementwise_loop<uint16_t, float, ga::name<float>>(x, y, n, float(p0), float(p1), float(p2),     \
                                                           float(p3));                                    \
    }                                                                                                     \
    GA_CLONES static void name##_grad_bf16(const uint16_t* dy, const uint16_t* x, uint16_t* dx, int64_t n, \
                                           double p0, double p1, double p2, double p3) {                  \
        grad_loop<uint16_t, float, ga::grad_##name<float>>(dy, x, dx, n, float(p0), float(p1), float(p2), \
                                                           float(p3));                                    \
    }
#define GA_CPU_OP(name) GA_CPU_TYPED(name, float, f32) GA_CPU_TYPED(name, double, f64) GA_CPU_BF16(name)

// every op of gpuact._contract.ops.OPS, the derivative ops d_<op> last (tests/test_op_table.py
// checks the list)
#define GA_CPU_OPS(X)                                                                                     \
    X(relu) X(sigmoid) X(softplus) X(log_sigmoid) X(softsign) X(tanh) X(elu) X(selu) X(celu)              \
    X(exponential) X(linear) X(relu6) X(leaky_relu) X(silu) X(gelu_tanh) X(gelu) X(hard_sigmoid)          \
    X(hard_silu) X(mish) X(hard_tanh) X(hard_shrink) X(soft_shrink) X(tanh_shrink) X(threshold)           \
    X(squareplus) X(sparse_plus) X(sparse_sigmoid) X(d_relu) X(d_relu6) X(d_leaky_relu) X(d_sigmoid)      \
    X(d_tanh) X(d_silu) X(d_gelu) X(d_gelu_tanh) X(d_softplus) X(d_elu) X(d_selu)

GA_CPU_OPS(GA_CPU_OP)

// The ops a gated unit's gate applies (gpuact._contract.ops.GATES), on float32 and bfloat16 storage:
// forward and backward over rows (gated_rows, gated_grad_rows).
#define GA_CPU_GATE_OPS(X) X(sigmoid) X(silu) X(gelu) X(gelu_tanh) X(relu)
#define GA_CPU_GATE_TYPED(name, S, tag)                                                                   \
    GA_CLONES static void name##_gated_##tag(const S* g, const S* v, S* y, int64_t g_off, int64_t v_off,  \
                                             int64_t y_off, int64_t in_stride, int64_t out_stride,        \
                                             int64_t row0, int64_t row1, int64_t half, double p0,         \
                                             double p1, double p2, double p3) {                           \
        gated_rows<S, float, ga::name<float>>(g, v, y, g_off, v_off, y_off, in_stride, out_stride, row0,  \
                                              row1, half, float(p0), float(p1), float(p2), float(p3));    \
    }                                                                                                     \
    GA_CLONES static void name##_gated_grad_##tag(const S* dy, const S* g, const S* v, S* dg, S* dv,      \
                                                  int64_t g_off, int64_t v_off, int64_t y_off,            \
                                                  int64_t in_stride, int64_t out_stride, int64_t row0,    \
                                                  int64_t row1, int64_t half, double p0, double p1,       \
                                                  double p2, double p3) {                                 \
        gated_grad_rows<S, float, ga::name<float>, ga::grad_##name<float>>(                               \
            dy, g, v, dg, dv, g_off, v_off, y_off, in_stride, out_stride, row0, row1, half, float(p0),    \
            float(p1), float(p2), float(p3));                                                             \
    }
#define GA_CPU_GATE(name) GA_CPU_GATE_TYPED(name, float, f32) GA_CPU_GATE_TYPED(name, uint16_t, bf16)
GA_CPU_GATE_OPS(GA_CPU_GATE)

GA_CLONES static void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t length, int log) {
    softmax_rows<float>(x, y, rows, length, log);
}
GA_CLONES static void softmax_rows_f64(const double* x, double* y, int64_t rows, int64_t length, int log) {
    softmax_rows<double>(x, y, rows, length, log);
}
// bfloat16 rows: each row widened into `buf` (2 * length floats, in cache), the float32 row
// kernel, its result rounded once to nearest even
GA_CLONES static void softmax_rows_bf16(const uint16_t* x, uint16_t* y, int64_t rows, int64_t length, int log,
                                        float* buf) {
    float* res = buf + length;
    for (int64_t r = 0; r < rows; ++r) {
        const uint16_t* xr = x + r * length;
        uint16_t* yr = y + r * length;
        for (int64_t k = 0; k < length; ++k) buf[k] = bf16_to_float(xr[k]);
        softmax_rows<float>(buf, res, 1, length, log);
        for (int64_t k = 0; k < length; ++k) yr[k] = float_to_bf16(res[k]);
    }
}
GA_CLONES static void softmax_columns_f32(const float* x, float* y, int64_t length, int64_t inner, int64_t width,
                                          int64_t u0, int64_t u1, int log) {
    softmax_columns<float>(x, y, length, inner, width, u0, u1, log);
}
GA_CLONES static void softmax_columns_f64(const double* x, double* y, int64_t length, int64_t inner,
                                          int64_t width, int64_t u0, int64_t u1, int log) {
    softmax_columns<double>(x, y, length, inner, width, u0, u1, log);
}

GA_CLONES static void column_stats_f32(const float* x, int64_t inner, int64_t l0, int64_t l1, float* m, double* s,
                                       float* bm) {
    column_stats<float>(x, inner, l0, l1, m, s, bm);
}
GA_CLONES static void column_stats_f64(const double* x, int64_t inner, int64_t l0, int64_t l1, double* m, double* s,
                                       double* bm) {
    column_stats<double>(x, inner, l0, l1, m, s, bm);
}
GA_CLONES static void column_write_f32(const float* x, float* y, int64_t inner, int64_t l0, int64_t l1,
                                       const float* m, const float* f, int log) {
    column_write<float>(x, y, inner, l0, l1, m, f, log);
}
GA_CLONES static void column_write_f64(const double* x, double* y, int64_t inner, int64_t l0, int64_t l1,
                                       const double* m, const double* f, int log) {
    column_write<double>(x, y, inner, l0, l1, m, f, log);
}
GA_CLONES static void sparsemax_rows_f32(const float* x, float* y, int64_t rows, int64_t length) {
    sparsemax_rows<float>(x, y, rows, length);
}
GA_CLONES static void sparsemax_rows_f64(const double* x, double* y, int64_t rows, int64_t length) {
    sparsemax_rows<double>(x, y, rows, length);
}

GA_CLONES static void softmax_grad_rows_f32(const float* dy, const float* x, float* dx, int64_t rows, int64_t length,
                                            int log, float* e) {
    softmax_grad_rows<float>(dy, x, dx, rows, length, log, e);
}
GA_CLONES static void softmax_grad_rows_f64(const double* dy, const double* x, double* dx, int64_t rows,
                                            int64_t length, int log, double* e) {
    softmax_grad_rows<double>(dy, x, dx, rows, length, log, e);
}
// bfloat16 rows of the softmax backward: dy's and x's rows widened into `buf` (4 * length floats:
// those two, the result and the row kernel's scratch), the float32 row kernel, its result rounded once
GA_CLONES static void softmax_grad_rows_bf16(const uint16_t* dy, const uint16_t* x, uint16_t* dx, int64_t rows,
                                             int64_t length, int log, float* buf) {
    float *bdy = buf, *bx = buf + length, *bdx = buf + 2 * length, *e = buf + 3 * length;
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t off = r * length;
        for (int64_t k = 0; k < length; ++k) {
            bdy[k] = bf16_to_float(dy[off + k]);
            bx[k] = bf16_to_float(x[off + k]);
        }
        softmax_grad_rows<float>(bdy, bx, bdx, 1, length, log, e);
        for (int64_t k = 0; k < length; ++k) dx[off + k] = float_to_bf16(bdx[k]);
    }
}
GA_CLONES static void sparsemax_grad_rows_f32(const float* dy, const float* x, float* dx, int64_t rows,
                                              int64_t length) {
    sparsemax_grad_rows<float>(dy, x, dx, rows, length);
}
GA_CLONES static void sparsemax_grad_rows_f64(const double* dy, const double* x, double* dx, int64_t rows,
                                              int64_t length) {
    sparsemax_grad_rows<double>(dy, x, dx, rows, length);
}

GA_CLONES static void softmax_grad_columns_f32(const float* dy, const float* x, float* dx, int64_t length,
                                               int64_t inner, int64_t width, int64_t u0, int64_t u1, int log) {
    softmax_grad_columns<float>(dy, x, dx, length, inner, width, u0, u1, log);
}
GA_CLONES static void softmax_grad_columns_f64(const double* dy, const double* x, double* dx, int64_t length,
                                               int64_t inner, int64_t width, int64_t u0, int64_t u1, int log) {
    softmax_grad_columns<double>(dy, x, dx, length, inner, width, u0, u1, log);
}

template <typename T> struct UnaryFns {
    void (*forward)(const T*, T*, int64_t, double, double, double, double);
    void (*forward_bias)(const T*, const T*, T*, int64_t, int64_t, int64_t, double, double, double, double);
    void (*grad)(const T*, const T*, T*, int64_t, double, double, double, double);
    void (*grad_bias)(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, double, double, double, double);
};
struct Bfloat16Fns {
    void (*forward)(const uint16_t*, uint16_t*, int64_t, double, double, double, double);
    void (*grad)(const uint16_t*, const uint16_t*, uint16_t*, int64_t, double, double, double, double);
};
struct UnaryEntry {
    const char* name;
    UnaryFns<float> f32;
    UnaryFns<double> f64;
    Bfloat16Fns bf16;
};
#define GA_CPU_ENTRY(name)                                                                                \
    {#name,                                                                                               \
     {name##_f32, name##_bias_f32, name##_grad_f32, name##_grad_bias_f32},                                 \
     {name##_f64, name##_bias_f64, name##_grad_f64, name##_grad_bias_f64},                                 \
     {name##_bf16, name##_grad_bf16}},
const UnaryEntry kUnary[] = {GA_CPU_OPS(GA_CPU_ENTRY)};
const int kUnaryCount = int(sizeof(kUnary) / sizeof(kUnary[0]));

template <typename S> struct GateFns {
    void (*forward)(const S*, const S*, S*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                    double, double, double, double);
    void (*grad)(const S*, const S*, const S*, S*, S*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                 int64_t, int64_t, double, double, double, double);
};
struct GateEntry {
    const char* name;
    GateFns<float> f32;
    GateFns<uint16_t> bf16;
};
#define GA_CPU_GATE_ENTRY(name) {#name, {name##_gated_f32, name##_gated_grad_f32}, {name##_gated_bf16, name##_gated_grad_bf16}},
const GateEntry kGate[] = {GA_CPU_GATE_OPS(GA_CPU_GATE_ENTRY)};
const int kGateCount = int(sizeof(kGate) / sizeof(kGate[0]));

// ---- the module's threads -----------------------------------------------------------------------------

namespace {

// Workers that help with one pass at a time. run(helpers, part) calls part(0) on the caller and
// part(k) on each worker k - 1 (k <= helpers) that joins before the caller's part(0) returns; a
// pass's parts share its work out dynamically (chunks taken from a shared counter, see run_parts),
// so the caller alone finishes whatever no worker took, and a worker still asleep when the work is
// done is not waited for (a worker takes 50-200 us to wake on a VM, the time of a whole pass over a
// few hundred thousand elements). A worker that finishes spins on the pass counter for kSpin before
// it sleeps on the condition variable, so back-to-back passes (a training step, a benchmark loop)
// find it awake, as OpenMP's threads do. One pass at a time: a second caller that finds the pool busy
// runs its pass alone. After fork() the child starts with no workers (the parent's do not exist
// there) and makes new ones.
class SplitPool {
public:
    static SplitPool& get() {
        static SplitPool* pool = [] {
            pthread_atfork(nullptr, nullptr, [] { SplitPool::get().forget_workers(); });
            return new SplitPool();  // never destroyed: its detached workers outlive any exit path
        }();
        return *pool;
    }

    // false (nothing run) when another pass holds the pool
    bool run(int helpers, const std::function<void(int)>& part) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        grow(helpers);
        part_ = &part;
        helpers_ = helpers;
        caller_cpu_.store(current_cpu(), std::memory_order_relaxed);
        joined_.store(0, std::memory_order_release);  // open; a worker that joins sees part_ above
        {
            std::lock_guard<std::mutex> lock(sleep_);
            pass_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        part(0);
        // closed: no worker joins from now on; those that did are finishing their last chunk
        joined_.fetch_or(kClosed, std::memory_order_acq_rel);
        while ((joined_.load(std::memory_order_acquire) & ~kClosed) != 0) relax();
        return true;
    }

private:
    static constexpr std::chrono::microseconds kSpin{300};
    static constexpr int kClosed = 1 << 30;

    static void relax() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#else
        std::this_thread::yield();
#endif
    }

    static int current_cpu() {
#if defined(__linux__)
        return sched_getcpu();
#else
        return -1;
#endif
    }

    // A worker woken from its sleep is often queued on the CPU of the thread that woke it, the caller,
    // which is busy with its own part: the two then share one core until the scheduler's load balancing
    // moves one of them, milliseconds later (a whole pass at 2x the time; measured on a 2-vCPU VM after
    // the pool slept 0.3 s, in most passes). A worker that finds itself on the caller's CPU leaves it
    // now: its affinity without that CPU moves it, and the affinity it had is given back at once.
    static void move_off(int cpu) {
#if defined(__linux__)
        if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getcpu() != cpu) return;
        cpu_set_t allowed;
        if (pthread_getaffinity_np(pthread_self(), sizeof allowed, &allowed) != 0) return;
        if (!CPU_ISSET(cpu, &allowed) || CPU_COUNT(&allowed) < 2) return;
        cpu_set_t others = allowed;
        CPU_CLR(cpu, &others);
        if (pthread_setaffinity_np(pthread_self(), sizeof others, &others) == 0)
            pthread_setaffinity_np(pthread_self(), sizeof allowed, &allowed);
#else
        (void)cpu;
#endif
    }

    void grow(int want) {
        while (int(workers_) < want) {
            const int k = int(workers_++);
            std::thread([this, k, seen = pass_.load()] { work(k, seen); }).detach();
        }
    }

    void forget_workers() {
        // the child of a fork: the workers were the parent's; the locks may have been held there
        new (&busy_) std::mutex();
        new (&sleep_) std::mutex();
        new (&wake_) std::condition_variable();
        joined_.store(kClosed);  // a pass the parent was in the middle of is not the child's
        workers_ = 0;
    }

    void work(int k, uint64_t seen) {
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + kSpin;
            uint64_t pass;
            while ((pass = pass_.load(std::memory_order_acquire)) == seen) {
                if (std::chrono::steady_clock::now() > until) {
                    std::unique_lock<std::mutex> lock(sleep_);
                    wake_.wait(lock, [&] { return pass_.load(std::memory_order_acquire) != seen; });
                }
                relax();
            }
            seen = pass;
            int joined = joined_.load(std::memory_order_acquire);
            while (!(joined & kClosed) &&
                   !joined_.compare_exchange_weak(joined, joined + 1, std::memory_order_acq_rel)) {
            }
            if (joined & kClosed) continue;  // the pass is over (or closing): nothing left to help with
            if (k < helpers_) {
                move_off(caller_cpu_.load(std::memory_order_relaxed));
                (*part_)(k + 1);
            }
            joined_.fetch_sub(1, std::memory_order_release);
        }
    }

    std::mutex busy_, sleep_;
    std::condition_variable wake_;
    std::atomic<uint64_t> pass_{0};
    std::atomic<int> joined_{kClosed};
    std::atomic<int> caller_cpu_{-1};
    const std::function<void(int)>* part_ = nullptr;
    int helpers_ = 0;
    size_t workers_ = 0;
};

// Elements per unit of a split: whole cache lines of any dtype, as _native.py's ranges are.
const int64_t kSplitUnit = 1024;

// Chunks a participant of a pass takes, about, when all take part: enough that a worker that joins
// late leaves its share to the others, few enough that the shared counter costs nothing.
const int64_t kChunksPerPart = 16;

// job(k, lo, hi) over [start, stop) in whole units of `unit` items: on this thread (k = 0), or in
// chunks taken in turn by this thread and up to threads - 1 of the pool's (k their participant
// index, below threads: a participant's scratch slot); alone when the pool is busy with another
// caller's pass.
template <typename Job> void run_parts(int64_t start, int64_t stop, int64_t threads, int64_t unit, const Job& job) {
    const int64_t units = (stop - start + unit - 1) / unit;
    const int parts = int(threads < units ? threads : units);
    if (parts > 1) {
        const int64_t per = units / (parts * kChunksPerPart);
        const int64_t chunk = (per > 1 ? per : 1) * unit;
        std::atomic<int64_t> next{start};
        const std::function<void(int)> part = [&](int k) {
            for (int64_t lo; (lo = next.fetch_add(chunk, std::memory_order_relaxed)) < stop;)
                job(k, lo, lo + chunk < stop ? lo + chunk : stop);
        };
        if (SplitPool::get().run(parts - 1, part)) return;
    }
    job(0, start, stop);
}

// job(lo, hi) over [start, stop) in whole units of kSplitUnit elements (see run_parts)
template <typename Job> void run_split(int64_t start, int64_t stop, int64_t threads, const Job& job) {
    run_parts(start, stop, threads, kSplitUnit, [&](int, int64_t lo, int64_t hi) { job(lo, hi); });
}

}  // namespace

// ---- the Python module -------------------------------------------------------------------------------

namespace {

// The most threads a split pass takes (_native.py passes the NumPy path's thread count).
const int64_t kMaxSplit = 64;

// Below this many elements a call keeps the GIL: releasing and taking it back costs more.
const int64_t kReleaseGilFrom = 16384;

// A contiguous buffer of float32 ('f') or float64 ('d') in native byte order, released on scope exit.
struct Buffer {
    Py_buffer view;
    bool held = false;
    ~Buffer() {
        if (held) PyBuffer_Release(&view);
    }
    // 0 on success; -1 with a Python exception set
    int get(PyObject* obj, char type, bool writable, const char* what) {
        if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
            return -1;
        held = true;
        const char* f = view.format ? view.format : "B";
        if (*f == '@' || *f == '=' || *f == '<') ++f;  // numpy writes native float32 as "f" (or "<f")
        const Py_ssize_t itemsize = type == 'f' ? 4 : (type == 'd' ? 8 : 2);  // 'H': bfloat16's bits
        if (f[0] != type || f[1] != '\0' || view.itemsize != itemsize) {
            PyErr_Format(PyExc_TypeError, "%s must be a contiguous native %s buffer", what,
                         type == 'f' ? "float32" : (type == 'd' ? "float64" : "uint16 (bfloat16 bits)"));
            return -1;
        }
        return 0;
    }
    int64_t size() const { return int64_t(view.len / view.itemsize); }
    void* data() const { return view.buf; }
};

bool as_int64(PyObject* o, int64_t& v) {
    v = PyLong_AsLongLong(o);
    return !(v == -1 && PyErr_Occurred());
}

bool as_double(PyObject* o, double& v) {
    v = PyFloat_AsDouble(o);
    return !(v == -1.0 && PyErr_Occurred());
}

bool check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char* name) {
    if (nargs == want) return true;
    PyErr_Format(PyExc_TypeError, "%s takes %d arguments (%d given)", name, int(want), int(nargs));
    return false;
}

// An elementwise pass's optional last argument (args[at], when given): how many threads to cut its
// range among, 1 to kMaxSplit.
bool split_threads(PyObject* const* args, Py_ssize_t nargs, Py_ssize_t at, int64_t& threads) {
    threads = 1;
    if (nargs <= at) return true;
    if (!as_int64(args[at], threads)) return false;
    if (threads < 1 || threads > kMaxSplit) {
        PyErr_SetString(PyExc_ValueError, "threads must be 1 to 64");
        return false;
    }
    return true;
}

bool check_nargs_split(Py_ssize_t nargs, Py_ssize_t want, const char* name) {
    if (nargs == want || nargs == want + 1) return true;
    PyErr_Format(PyExc_TypeError, "%s takes %d or %d arguments (%d given)", name, int(want), int(want + 1), int(nargs));
    return false;
}

bool check_range(int64_t start, int64_t stop, int64_t size) {
    if (0 <= start && start <= stop && stop <= size) return true;
    PyErr_SetString(PyExc_IndexError, "range outside the buffers");
    return false;
}

// unary(index, type, x, y, start, stop, p0, p1, p2, p3[, threads]): y[start:stop] = op(x[start:stop]);
// type ord('f'), ord('d'), or ord('H') for bfloat16 bits (uint16 buffers) computed in float32.
// y may be x itself; it must not partly overlap it (the caller copies first).
PyObject* unary(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 10, "unary")) return nullptr;
    int64_t index, start, stop, threads;
    double p[4];
    if (!as_int64(args[0], index) || !as_int64(args[4], start) || !as_int64(args[5], stop) ||
        !split_threads(args, nargs, 10, threads))
        return nullptr;
    for (int k = 0; k < 4; ++k)
        if (!as_double(args[6 + k], p[k])) return nullptr;
    if (index < 0 || index >= kUnaryCount) {
        PyErr_SetString(PyExc_IndexError, "no such kernel");
        return nullptr;
    }
    const int64_t type = PyLong_AsLongLong(args[1]);
    if (type != 'f' && type != 'd' && type != 'H') {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "type must be ord('f'), ord('d') or ord('H')");
        return nullptr;
    }
    Buffer x, y;
    if (x.get(args[2], char(type), false, "x") < 0 || y.get(args[3], char(type), true, "y") < 0) return nullptr;
    if (!check_range(start, stop, x.size()) || !check_range(start, stop, y.size())) return nullptr;
    const int64_t n = stop - start;
    PyThreadState* saved = n >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_split(start, stop, threads, [&](int64_t lo, int64_t hi) {
        if (type == 'H')
            kUnary[index].bf16.forward(static_cast<const uint16_t*>(x.data()) + lo,
                                       static_cast<uint16_t*>(y.data()) + lo, hi - lo, p[0], p[1], p[2], p[3]);
        else if (type == 'f')
            kUnary[index].f32.forward(static_cast<const float*>(x.data()) + lo, static_cast<float*>(y.data()) + lo,
                                      hi - lo, p[0], p[1], p[2], p[3]);
        else
            kUnary[index].f64.forward(static_cast<const double*>(x.data()) + lo,
                                      static_cast<double*>(y.data()) + lo, hi - lo, p[0], p[1], p[2], p[3]);
    });
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// The index and type of an op (args[0], args[1]) and its parameters (the 4 arguments from args[at]);
// bfloat16 bits ('H') where `bf16` allows them.
bool op_args(PyObject* const* args, Py_ssize_t at, int64_t& index, int64_t& type, double* p, bool bf16 = false) {
    if (!as_int64(args[0], index) || !as_int64(args[1], type)) return false;
    for (int k = 0; k < 4; ++k)
        if (!as_double(args[at + k], p[k])) return false;
    if (index < 0 || index >= kUnaryCount) {
        PyErr_SetString(PyExc_IndexError, "no such kernel");
        return false;
    }
    if (type != 'f' && type != 'd' && !(bf16 && type == 'H')) {
        PyErr_SetString(PyExc_ValueError, bf16 ? "type must be ord('f'), ord('d') or ord('H')"
                                               : "type must be ord('f') or ord('d')");
        return false;
    }
    return true;
}

// unary_bias(index, type, x, b, y, start, stop, p0..p3[, threads]): y[i] = op(x[i] + b[i % len(b)]).
PyObject* unary_bias(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 11, "unary_bias")) return nullptr;
    int64_t index, type, start, stop, threads;
    double p[4];
    if (!op_args(args, 7, index, type, p) || !as_int64(args[5], start) || !as_int64(args[6], stop) ||
        !split_threads(args, nargs, 11, threads))
        return nullptr;
    Buffer x, b, y;
    if (x.get(args[2], char(type), false, "x") < 0 || b.get(args[3], char(type), false, "bias") < 0 ||
        y.get(args[4], char(type), true, "y") < 0)
        return nullptr;
    if (!check_range(start, stop, x.size()) || !check_range(start, stop, y.size()) || b.size() < 1) return nullptr;
    PyThreadState* saved = stop - start >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_split(start, stop, threads, [&](int64_t lo, int64_t hi) {
        if (type == 'f')
            kUnary[index].f32.forward_bias(static_cast<const float*>(x.data()), static_cast<const float*>(b.data()),
                                           static_cast<float*>(y.data()), lo, hi, b.size(), p[0], p[1], p[2], p[3]);
        else
            kUnary[index].f64.forward_bias(static_cast<const double*>(x.data()), static_cast<const double*>(b.data()),
                                           static_cast<double*>(y.data()), lo, hi, b.size(), p[0], p[1], p[2], p[3]);
    });
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// grad(index, type, dy, x, dx, start, stop, p0..p3[, threads]): dx = dy * f'(x) on [start, stop); type
// as unary's, bfloat16 bits included.
PyObject* grad(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 11, "grad")) return nullptr;
    int64_t index, type, start, stop, threads;
    double p[4];
    if (!op_args(args, 7, index, type, p, true) || !as_int64(args[5], start) || !as_int64(args[6], stop) ||
        !split_threads(args, nargs, 11, threads))
        return nullptr;
    Buffer dy, x, dx;
    if (dy.get(args[2], char(type), false, "dy") < 0 || x.get(args[3], char(type), false, "x") < 0 ||
        dx.get(args[4], char(type), true, "dx") < 0)
        return nullptr;
    if (!check_range(start, stop, dy.size()) || !check_range(start, stop, x.size()) ||
        !check_range(start, stop, dx.size()))
        return nullptr;
    const int64_t n = stop - start;
    PyThreadState* saved = n >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_split(start, stop, threads, [&](int64_t lo, int64_t hi) {
        if (type == 'H')
            kUnary[index].bf16.grad(static_cast<const uint16_t*>(dy.data()) + lo,
                                    static_cast<const uint16_t*>(x.data()) + lo, static_cast<uint16_t*>(dx.data()) + lo,
                                    hi - lo, p[0], p[1], p[2], p[3]);
        else if (type == 'f')
            kUnary[index].f32.grad(static_cast<const float*>(dy.data()) + lo, static_cast<const float*>(x.data()) + lo,
                                   static_cast<float*>(dx.data()) + lo, hi - lo, p[0], p[1], p[2], p[3]);
        else
            kUnary[index].f64.grad(static_cast<const double*>(dy.data()) + lo,
                                   static_cast<const double*>(x.data()) + lo, static_cast<double*>(dx.data()) + lo,
                                   hi - lo, p[0], p[1], p[2], p[3]);
    });
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// grad_bias(index, type, dy, x, b, dx, start, stop, p0..p3[, threads]): dx = dy * f'(x + b[i % len(b)]).
PyObject* grad_bias(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 12, "grad_bias")) return nullptr;
    int64_t index, type, start, stop, threads;
    double p[4];
    if (!op_args(args, 8, index, type, p) || !as_int64(args[6], start) || !as_int64(args[7], stop) ||
        !split_threads(args, nargs, 12, threads))
        return nullptr;
    Buffer dy, x, b, dx;
    if (dy.get(args[2], char(type), false, "dy") < 0 || x.get(args[3], char(type), false, "x") < 0 ||
        b.get(args[4], char(type), false, "bias") < 0 || dx.get(args[5], char(type), true, "dx") < 0)
        return nullptr;
    if (!check_range(start, stop, dy.size()) || !check_range(start, stop, x.size()) ||
        !check_range(start, stop, dx.size()) || b.size() < 1)
        return nullptr;
    PyThreadState* saved = stop - start >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_split(start, stop, threads, [&](int64_t lo, int64_t hi) {
        if (type == 'f')
            kUnary[index].f32.grad_bias(static_cast<const float*>(dy.data()), static_cast<const float*>(x.data()),
                                        static_cast<const float*>(b.data()), static_cast<float*>(dx.data()), lo, hi,
                                        b.size(), p[0], p[1], p[2], p[3]);
        else
            kUnary[index].f64.grad_bias(static_cast<const double*>(dy.data()), static_cast<const double*>(x.data()),
                                        static_cast<const double*>(b.data()), static_cast<double*>(dx.data()), lo, hi,
                                        b.size(), p[0], p[1], p[2], p[3]);
    });
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// rows_grad(kind, type, dy, x, dx, row0, row1, length, log[, threads]): the softmax (kind 0) or sparsemax
// (kind 1) backward of rows [row0, row1) of (rows, length) arrays; the softmax one on bfloat16
// bits too (type ord('H')).
PyObject* rows_grad(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 9, "rows_grad")) return nullptr;
    int64_t kind, type, row0, row1, length, log, threads;
    if (!as_int64(args[0], kind) || !as_int64(args[1], type) || !as_int64(args[5], row0) ||
        !as_int64(args[6], row1) || !as_int64(args[7], length) || !as_int64(args[8], log) ||
        !split_threads(args, nargs, 9, threads))
        return nullptr;
    // bfloat16 bits ('H'): the softmax backward only
    if ((type != 'f' && type != 'd' && !(type == 'H' && kind == 0)) || length < 1 || (kind != 0 && kind != 1)) {
        PyErr_SetString(PyExc_ValueError, "rows_grad: bad kind, type or length");
        return nullptr;
    }
    Buffer dy, x, dx;
    if (dy.get(args[2], char(type), false, "dy") < 0 || x.get(args[3], char(type), false, "x") < 0 ||
        dx.get(args[4], char(type), true, "dx") < 0)
        return nullptr;
    const int64_t rows = x.size() / length;
    if (x.size() != dy.size() || x.size() != dx.size() || !check_range(row0, row1, rows)) return nullptr;
    // each part's scratch for the softmax rows: a row of exps (bfloat16: and its rows widened, 4 rows
    // of floats)
    const size_t part_bytes = kind != 0 ? 0 : size_t(length) * (type == 'H' ? 4 * sizeof(float) : (type == 'f' ? 4 : 8));
    char* raw = part_bytes ? static_cast<char*>(std::malloc(part_bytes * size_t(threads))) : nullptr;
    if (part_bytes && raw == nullptr) return PyErr_NoMemory();
    PyThreadState* saved = (row1 - row0) * length >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_parts(row0, row1, threads, 1, [&](int k, int64_t r0, int64_t r1) {
        const int64_t off = r0 * length, count = r1 - r0;
        void* scratch = raw + k * part_bytes;
        if (type == 'H') {
            softmax_grad_rows_bf16(static_cast<const uint16_t*>(dy.data()) + off,
                                   static_cast<const uint16_t*>(x.data()) + off,
                                   static_cast<uint16_t*>(dx.data()) + off, count, length, int(log),
                                   static_cast<float*>(scratch));
        } else if (type == 'f') {
            const float *pdy = static_cast<const float*>(dy.data()) + off,
                        *px = static_cast<const float*>(x.data()) + off;
            float* pdx = static_cast<float*>(dx.data()) + off;
            if (kind == 0) softmax_grad_rows_f32(pdy, px, pdx, count, length, int(log), static_cast<float*>(scratch));
            else sparsemax_grad_rows_f32(pdy, px, pdx, count, length);
        } else {
            const double *pdy = static_cast<const double*>(dy.data()) + off,
                         *px = static_cast<const double*>(x.data()) + off;
            double* pdx = static_cast<double*>(dx.data()) + off;
            if (kind == 0) softmax_grad_rows_f64(pdy, px, pdx, count, length, int(log), static_cast<double*>(scratch));
            else sparsemax_grad_rows_f64(pdy, px, pdx, count, length);
        }
    });
    if (saved) PyEval_RestoreThread(saved);
    std::free(raw);
    Py_RETURN_NONE;
}

// softmax_rows(type, x, y, row0, row1, length, log[, threads]): rows [row0, row1) of a (rows, length)
// array, shared among `threads` of the module's threads.
PyObject* py_softmax_rows(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 7, "softmax_rows")) return nullptr;
    int64_t type, row0, row1, length, log, threads;
    if (!as_int64(args[0], type) || !as_int64(args[3], row0) || !as_int64(args[4], row1) ||
        !as_int64(args[5], length) || !as_int64(args[6], log) || !split_threads(args, nargs, 7, threads))
        return nullptr;
    if ((type != 'f' && type != 'd' && type != 'H') || length < 1) {
        PyErr_SetString(PyExc_ValueError, "softmax_rows: bad type or length");
        return nullptr;
    }
    Buffer x, y;
    if (x.get(args[1], char(type), false, "x") < 0 || y.get(args[2], char(type), true, "y") < 0) return nullptr;
    const int64_t rows = x.size() / length;
    if (x.size() != y.size() || !check_range(row0, row1, rows)) return nullptr;
    // bfloat16: each part's two rows of floats
    const size_t part_floats = 2 * size_t(length);
    float* buf = nullptr;
    if (type == 'H' && (buf = static_cast<float*>(std::malloc(sizeof(float) * part_floats * size_t(threads)))) == nullptr)
        return PyErr_NoMemory();
    PyThreadState* saved = (row1 - row0) * length >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_parts(row0, row1, threads, 1, [&](int k, int64_t r0, int64_t r1) {
        if (type == 'H')
            softmax_rows_bf16(static_cast<const uint16_t*>(x.data()) + r0 * length,
                              static_cast<uint16_t*>(y.data()) + r0 * length, r1 - r0, length, int(log),
                              buf + k * part_floats);
        else if (type == 'f')
            softmax_rows_f32(static_cast<const float*>(x.data()) + r0 * length,
                             static_cast<float*>(y.data()) + r0 * length, r1 - r0, length, int(log));
        else
            softmax_rows_f64(static_cast<const double*>(x.data()) + r0 * length,
                             static_cast<double*>(y.data()) + r0 * length, r1 - r0, length, int(log));
    });
    if (saved) PyEval_RestoreThread(saved);
    std::free(buf);
    Py_RETURN_NONE;
}

// softmax_columns(type, x, y, length, inner, width, u0, u1, log): work units [u0, u1) of a contiguous
// (outer, length, inner) array (see softmax_columns above).
PyObject* py_softmax_columns(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 9, "softmax_columns")) return nullptr;
    int64_t type, length, inner, width, u0, u1, log;
    if (!as_int64(args[0], type) || !as_int64(args[3], length) || !as_int64(args[4], inner) ||
        !as_int64(args[5], width) || !as_int64(args[6], u0) || !as_int64(args[7], u1) || !as_int64(args[8], log))
        return nullptr;
    if ((type != 'f' && type != 'd') || length < 1 || inner < 1 || width < 1 || width > kMaxColumnWidth) {
        PyErr_SetString(PyExc_ValueError, "softmax_columns: bad type or shape");
        return nullptr;
    }
    Buffer x, y;
    if (x.get(args[1], char(type), false, "x") < 0 || y.get(args[2], char(type), true, "y") < 0) return nullptr;
    const int64_t slice = length * inner;
    const int64_t outer = x.size() / slice;
    const int64_t units = outer * ((inner + width - 1) / width);
    if (x.size() != y.size() || x.size() != outer * slice || !check_range(u0, u1, units)) return nullptr;
    PyThreadState* saved = (u1 - u0) * width * length >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    if (type == 'f')
        softmax_columns_f32(static_cast<const float*>(x.data()), static_cast<float*>(y.data()), length, inner, width,
                            u0, u1, int(log));
    else
        softmax_columns_f64(static_cast<const double*>(x.data()), static_cast<double*>(y.data()), length, inner,
                            width, u0, u1, int(log));
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// The merge of the chunks' (m, s) of each column and the factor the write takes: the largest m,
// the sum of each chunk's s rescaled to it, f = 1 / s (log: log s).
template <typename T>
void merge_column_parts(int parts, int64_t inner, const T* m, const double* s, T* mm, T* f, int log) {
    for (int64_t j = 0; j < inner; ++j) {
        T top = m[j];
        for (int k = 1; k < parts; ++k) top = m[k * inner + j] > top ? m[k * inner + j] : top;
        double sum = 0.0;
        for (int k = 0; k < parts; ++k) {
            const T mk = m[k * inner + j];
            sum += s[k * inner + j] * double(mk == top ? T(1) : ga::exp_nonpositive_(T(mk - top)));
        }
        mm[j] = top;
        f[j] = log ? T(std::log(sum)) : T(1.0 / sum);
    }
}

// The rows of each slab cut into chunks of whole blocks, each with its own slot of partial (m, s),
// taken in turn by this thread and the pool's (see run_parts): the chunks' partials merged, then
// the chunks' rows written the same way.
template <typename T, typename Stats, typename Write>
void softmax_columns_split(const T* x, T* y, int64_t outer, int64_t length, int64_t inner, int log, int64_t threads,
                           T* scratch, double* sums, Stats stats, Write write) {
    const int64_t blocks = (length + kColumnBlock - 1) / kColumnBlock;
    const int parts = int(threads < blocks ? threads : blocks);
    const int64_t most = parts > 1 ? parts * kChunksPerPart : 1;
    const int64_t rows_per = (blocks + most - 1) / most * kColumnBlock;
    const int64_t chunks = (length + rows_per - 1) / rows_per;
    T *m = scratch, *bm = scratch + chunks * inner, *mm = bm + chunks * inner, *f = mm + inner;
    for (int64_t o = 0; o < outer; ++o) {
        const T* xo = x + o * length * inner;
        T* yo = y + o * length * inner;
        std::atomic<int64_t> next{0};
        const std::function<void(int)> gather = [&](int) {
            for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
                const int64_t l0 = c * rows_per, l1 = l0 + rows_per < length ? l0 + rows_per : length;
                stats(xo, inner, l0, l1, m + c * inner, sums + c * inner, bm + c * inner);
            }
        };
        if (parts < 2 || !SplitPool::get().run(parts - 1, gather)) gather(0);
        merge_column_parts<T>(int(chunks), inner, m, sums, mm, f, log);
        next.store(0, std::memory_order_relaxed);
        const std::function<void(int)> scatter = [&](int) {
            for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
                const int64_t l0 = c * rows_per, l1 = l0 + rows_per < length ? l0 + rows_per : length;
                write(xo, yo, inner, l0, l1, mm, f, log);
            }
        };
        if (parts < 2 || !SplitPool::get().run(parts - 1, scatter)) scatter(0);
    }
}

// softmax_columns_split(type, x, y, length, inner, log, threads): softmax along the middle axis of
// a contiguous (outer, length, inner) array, the rows shared among `threads` of the module's
// threads (see column_stats); y must not overlap x.
PyObject* py_softmax_columns_split(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 7, "softmax_columns_split")) return nullptr;
    int64_t type, length, inner, log, threads;
    if (!as_int64(args[0], type) || !as_int64(args[3], length) || !as_int64(args[4], inner) ||
        !as_int64(args[5], log) || !split_threads(args, nargs, 6, threads))
        return nullptr;
    if ((type != 'f' && type != 'd') || length < 1 || inner < 1) {
        PyErr_SetString(PyExc_ValueError, "softmax_columns_split: bad type or shape");
        return nullptr;
    }
    Buffer x, y;
    if (x.get(args[1], char(type), false, "x") < 0 || y.get(args[2], char(type), true, "y") < 0) return nullptr;
    const int64_t slice = length * inner;
    const int64_t outer = x.size() / slice;
    if (x.size() != y.size() || x.size() != outer * slice) {
        PyErr_SetString(PyExc_ValueError, "softmax_columns_split: x and y must hold (outer, length, inner) values");
        return nullptr;
    }
    const size_t item = type == 'f' ? sizeof(float) : sizeof(double);
    // per chunk (at most kChunksPerPart a thread): m and bm (items) and s (doubles); then the merged m
    // and f (items)
    const size_t count = size_t(threads) * size_t(kChunksPerPart) * size_t(inner);
    void* raw = std::malloc(count * (2 * item + sizeof(double)) + 2 * size_t(inner) * item);
    if (raw == nullptr) return PyErr_NoMemory();
    double* sums = static_cast<double*>(raw);
    void* scratch = sums + count;
    PyThreadState* saved = x.size() >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    if (type == 'f')
        softmax_columns_split<float>(static_cast<const float*>(x.data()), static_cast<float*>(y.data()), outer, length,
                                     inner, int(log), threads, static_cast<float*>(scratch), sums, column_stats_f32,
                                     column_write_f32);
    else
        softmax_columns_split<double>(static_cast<const double*>(x.data()), static_cast<double*>(y.data()), outer,
                                      length, inner, int(log), threads, static_cast<double*>(scratch), sums,
                                      column_stats_f64, column_write_f64);
    if (saved) PyEval_RestoreThread(saved);
    std::free(raw);
    Py_RETURN_NONE;
}

// sparsemax_rows(type, x, y, row0, row1, length): rows [row0, row1) of a (rows, length) array; y may be x.
PyObject* py_sparsemax_rows(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 6, "sparsemax_rows")) return nullptr;
    int64_t type, row0, row1, length;
    if (!as_int64(args[0], type) || !as_int64(args[3], row0) || !as_int64(args[4], row1) ||
        !as_int64(args[5], length))
        return nullptr;
    if ((type != 'f' && type != 'd') || length < 1) {
        PyErr_SetString(PyExc_ValueError, "sparsemax_rows: bad type or length");
        return nullptr;
    }
    Buffer x, y;
    if (x.get(args[1], char(type), false, "x") < 0 || y.get(args[2], char(type), true, "y") < 0) return nullptr;
    const int64_t rows = x.size() / length;
    if (x.size() != y.size() || !check_range(row0, row1, rows)) return nullptr;
    PyThreadState* saved = (row1 - row0) * length >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    if (type == 'f')
        sparsemax_rows_f32(static_cast<const float*>(x.data()) + row0 * length,
                           static_cast<float*>(y.data()) + row0 * length, row1 - row0, length);
    else
        sparsemax_rows_f64(static_cast<const double*>(x.data()) + row0 * length,
                           static_cast<double*>(y.data()) + row0 * length, row1 - row0, length);
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// columns_grad(type, dy, x, dx, length, inner, width, u0, u1, log): the softmax backward along the
// middle axis of contiguous (outer, length, inner) arrays, work units [u0, u1).
PyObject* columns_grad(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 10, "columns_grad")) return nullptr;
    int64_t type, length, inner, width, u0, u1, log;
    if (!as_int64(args[0], type) || !as_int64(args[4], length) || !as_int64(args[5], inner) ||
        !as_int64(args[6], width) || !as_int64(args[7], u0) || !as_int64(args[8], u1) || !as_int64(args[9], log))
        return nullptr;
    if ((type != 'f' && type != 'd') || length < 1 || inner < 1 || width < 1 || width > kMaxColumnWidth) {
        PyErr_SetString(PyExc_ValueError, "columns_grad: bad type or shape");
        return nullptr;
    }
    Buffer dy, x, dx;
    if (dy.get(args[1], char(type), false, "dy") < 0 || x.get(args[2], char(type), false, "x") < 0 ||
        dx.get(args[3], char(type), true, "dx") < 0)
        return nullptr;
    const int64_t slice = length * inner;
    const int64_t outer = x.size() / slice;
    const int64_t units = outer * ((inner + width - 1) / width);
    if (x.size() != dy.size() || x.size() != dx.size() || x.size() != outer * slice || !check_range(u0, u1, units))
        return nullptr;
    PyThreadState* saved = (u1 - u0) * width * length >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    if (type == 'f')
        softmax_grad_columns_f32(static_cast<const float*>(dy.data()), static_cast<const float*>(x.data()),
                                 static_cast<float*>(dx.data()), length, inner, width, u0, u1, int(log));
    else
        softmax_grad_columns_f64(static_cast<const double*>(dy.data()), static_cast<const double*>(x.data()),
                                 static_cast<double*>(dx.data()), length, inner, width, u0, u1, int(log));
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

PyObject* abi_version(PyObject*, PyObject*) { return PyLong_FromLong(kAbiVersion); }

// The names of a table's entries, a tuple in index order.
template <typename Entry> PyObject* names_of(const Entry* table, int count) {
    PyObject* names = PyTuple_New(count);
    if (!names) return nullptr;
    for (int i = 0; i < count; ++i) {
        PyObject* name = PyUnicode_FromString(table[i].name);
        if (!name) {
            Py_DECREF(names);
            return nullptr;
        }
        PyTuple_SetItem(names, i, name);
    }
    return names;
}

PyObject* unary_names(PyObject*, PyObject*) { return names_of(kUnary, kUnaryCount); }

// bfloat16 <-> float32 on raw bits (bf16_to_float, float_to_bf16: the loops' own rounding).
// Vectorizable loops, one clone per instruction set.
GA_CLONES static void bf16_widen(const uint16_t* s, float* d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
}
GA_CLONES static void bf16_narrow(const float* s, uint16_t* d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);
}

// bfloat16(direction, src, dst, start, stop): direction 0 widens uint16 bits into float32, 1
// narrows float32 into uint16 bits, on [start, stop).
PyObject* bfloat16(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 5, "bfloat16")) return nullptr;
    int64_t direction, start, stop;
    if (!as_int64(args[0], direction) || !as_int64(args[3], start) || !as_int64(args[4], stop)) return nullptr;
    if (direction != 0 && direction != 1) {
        PyErr_SetString(PyExc_ValueError, "direction must be 0 (widen) or 1 (narrow)");
        return nullptr;
    }
    Buffer src, dst;
    const char in = direction == 0 ? 'H' : 'f', out = direction == 0 ? 'f' : 'H';
    if (src.get(args[1], in, false, "src") < 0 || dst.get(args[2], out, true, "dst") < 0) return nullptr;
    if (!check_range(start, stop, src.size()) || !check_range(start, stop, dst.size())) return nullptr;
    const int64_t n = stop - start;
    PyThreadState* saved = n >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    if (direction == 0)
        bf16_widen(static_cast<const uint16_t*>(src.data()) + start, static_cast<float*>(dst.data()) + start, n);
    else
        bf16_narrow(static_cast<const float*>(src.data()) + start, static_cast<uint16_t*>(dst.data()) + start, n);
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

PyObject* gate_names(PyObject*, PyObject*) { return names_of(kGate, kGateCount); }

// Whether rows [row0, row1) of `half` elements from `off` at `stride` lie inside a buffer of `size`.
bool rows_inside(int64_t off, int64_t stride, int64_t row0, int64_t row1, int64_t half, int64_t size) {
    if (off < 0 || stride < 0 || half < 0 || row0 < 0 || row1 < row0) return false;
    return row1 == row0 || off + (row1 - 1) * stride + half <= size;
}

// The gate's index and type (args[0], args[1]) and the layout ints from args[first] on:
// g_off, v_off, y_off, in_stride, out_stride, row0, row1, half; the 4 parameters after them.
bool gate_args(PyObject* const* args, Py_ssize_t first, int64_t& index, int64_t& type, int64_t* layout, double* p) {
    if (!as_int64(args[0], index) || !as_int64(args[1], type)) return false;
    for (int k = 0; k < 8; ++k)
        if (!as_int64(args[first + k], layout[k])) return false;
    for (int k = 0; k < 4; ++k)
        if (!as_double(args[first + 8 + k], p[k])) return false;
    if (index < 0 || index >= kGateCount) {
        PyErr_SetString(PyExc_IndexError, "no such gate");
        return false;
    }
    if (type != 'f' && type != 'H') {
        PyErr_SetString(PyExc_ValueError, "type must be ord('f') or ord('H')");
        return false;
    }
    return true;
}

bool gate_layout_error() {
    PyErr_SetString(PyExc_IndexError, "rows outside the buffers");
    return false;
}

// rows(offset, r0, r1, count): the gated rows [r0, r1) from `offset` elements into each row, `count`
// of them, over rows [row0, row1) of `half` elements shared among `threads`: whole rows (a unit
// of about kSplitUnit elements), or, for one row (the two-tensor form is one row of every
// element), its elements. Each element is computed alone, so any split gives the same bits.
template <typename Rows>
void run_gated_rows(int64_t row0, int64_t row1, int64_t half, int64_t threads, const Rows& rows) {
    if (row1 - row0 == 1) {
        run_split(0, half, threads, [&](int64_t lo, int64_t hi) { rows(lo, row0, row1, hi - lo); });
        return;
    }
    const int64_t unit = half >= kSplitUnit ? 1 : (half > 0 ? kSplitUnit / half : kSplitUnit);
    run_parts(row0, row1, threads, unit, [&](int, int64_t r0, int64_t r1) { rows(0, r0, r1, half); });
}

// gated(index, type, g, v, y, g_off, v_off, y_off, in_stride, out_stride, row0, row1, half, p0..p3
// [, threads]): y = op(g) * v over rows (see gated_rows); g and v may be one buffer, y another.
PyObject* gated(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 17, "gated")) return nullptr;
    int64_t index, type, l[8], threads;
    double p[4];
    if (!gate_args(args, 5, index, type, l, p) || !split_threads(args, nargs, 17, threads)) return nullptr;
    Buffer g, v, y;
    if (g.get(args[2], char(type), false, "g") < 0 || v.get(args[3], char(type), false, "v") < 0 ||
        y.get(args[4], char(type), true, "y") < 0)
        return nullptr;
    const int64_t g_off = l[0], v_off = l[1], y_off = l[2], in_stride = l[3], out_stride = l[4], row0 = l[5],
                  row1 = l[6], half = l[7];
    if (!rows_inside(g_off, in_stride, row0, row1, half, g.size()) ||
        !rows_inside(v_off, in_stride, row0, row1, half, v.size()) ||
        !rows_inside(y_off, out_stride, row0, row1, half, y.size()))
        return gate_layout_error(), nullptr;
    PyThreadState* saved = (row1 - row0) * half >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_gated_rows(row0, row1, half, threads, [&](int64_t at, int64_t r0, int64_t r1, int64_t count) {
        if (type == 'H')
            kGate[index].bf16.forward(static_cast<const uint16_t*>(g.data()), static_cast<const uint16_t*>(v.data()),
                                      static_cast<uint16_t*>(y.data()), g_off + at, v_off + at, y_off + at, in_stride,
                                      out_stride, r0, r1, count, p[0], p[1], p[2], p[3]);
        else
            kGate[index].f32.forward(static_cast<const float*>(g.data()), static_cast<const float*>(v.data()),
                                     static_cast<float*>(y.data()), g_off + at, v_off + at, y_off + at, in_stride,
                                     out_stride, r0, r1, count, p[0], p[1], p[2], p[3]);
    });
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

// gated_grad(index, type, dy, g, v, dg, dv, g_off, v_off, y_off, in_stride, out_stride, row0, row1,
// half, p0..p3[, threads]): dg = (dy v) op'(g), dv = op(g) dy over rows, dy laid out as y, dg and dv
// as g and v (dg and dv may be one buffer, dx, with g and v's offsets).
PyObject* gated_grad(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs_split(nargs, 19, "gated_grad")) return nullptr;
    int64_t index, type, l[8], threads;
    double p[4];
    if (!gate_args(args, 7, index, type, l, p) || !split_threads(args, nargs, 19, threads)) return nullptr;
    Buffer dy, g, v, dg, dv;
    if (dy.get(args[2], char(type), false, "dy") < 0 || g.get(args[3], char(type), false, "g") < 0 ||
        v.get(args[4], char(type), false, "v") < 0 || dg.get(args[5], char(type), true, "dg") < 0 ||
        dv.get(args[6], char(type), true, "dv") < 0)
        return nullptr;
    const int64_t g_off = l[0], v_off = l[1], y_off = l[2], in_stride = l[3], out_stride = l[4], row0 = l[5],
                  row1 = l[6], half = l[7];
    if (!rows_inside(g_off, in_stride, row0, row1, half, g.size()) ||
        !rows_inside(v_off, in_stride, row0, row1, half, v.size()) ||
        !rows_inside(g_off, in_stride, row0, row1, half, dg.size()) ||
        !rows_inside(v_off, in_stride, row0, row1, half, dv.size()) ||
        !rows_inside(y_off, out_stride, row0, row1, half, dy.size()))
        return gate_layout_error(), nullptr;
    PyThreadState* saved = (row1 - row0) * half >= kReleaseGilFrom ? PyEval_SaveThread() : nullptr;
    run_gated_rows(row0, row1, half, threads, [&](int64_t at, int64_t r0, int64_t r1, int64_t count) {
        if (type == 'H')
            kGate[index].bf16.grad(static_cast<const uint16_t*>(dy.data()), static_cast<const uint16_t*>(g.data()),
                                   static_cast<const uint16_t*>(v.data()), static_cast<uint16_t*>(dg.data()),
                                   static_cast<uint16_t*>(dv.data()), g_off + at, v_off + at, y_off + at, in_stride,
                                   out_stride, r0, r1, count, p[0], p[1], p[2], p[3]);
        else
            kGate[index].f32.grad(static_cast<const float*>(dy.data()), static_cast<const float*>(g.data()),
                                  static_cast<const float*>(v.data()), static_cast<float*>(dg.data()),
                                  static_cast<float*>(dv.data()), g_off + at, v_off + at, y_off + at, in_stride,
                                  out_stride, r0, r1, count, p[0], p[1], p[2], p[3]);
    });
    if (saved) PyEval_RestoreThread(saved);
    Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"bfloat16", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(bfloat16)), METH_FASTCALL,
     "bfloat16(direction, src, dst, start, stop)"},
    {"abi_version", abi_version, METH_NOARGS, "The version of these entry points."},
    {"gate_names", gate_names, METH_NOARGS, "The gates' ops, in the order gated() indexes them."},
    {"gated", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(gated)), METH_FASTCALL,
     "gated(index, type, g, v, y, g_off, v_off, y_off, in_stride, out_stride, row0, row1, half, p0, p1, p2, p3"
     "[, threads])"},
    {"gated_grad", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(gated_grad)), METH_FASTCALL,
     "gated_grad(index, type, dy, g, v, dg, dv, g_off, v_off, y_off, in_stride, out_stride, row0, row1, half, "
     "p0, p1, p2, p3[, threads])"},
    {"unary_names", unary_names, METH_NOARGS, "The elementwise ops, in the order unary() indexes them."},
    {"unary", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(unary)), METH_FASTCALL,
     "unary(index, type, x, y, start, stop, p0, p1, p2, p3)"},
    {"softmax_rows", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(py_softmax_rows)),
     METH_FASTCALL, "softmax_rows(type, x, y, row0, row1, length, log); type ord('H'): bfloat16 bits"},
    {"softmax_columns_split",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(py_softmax_columns_split)), METH_FASTCALL,
     "Softmax along the middle axis of long rows, the rows shared among the module's threads."},
    {"softmax_columns", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(py_softmax_columns)),
     METH_FASTCALL, "softmax_columns(type, x, y, length, inner, width, u0, u1, log)"},
    {"sparsemax_rows", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(py_sparsemax_rows)),
     METH_FASTCALL, "sparsemax_rows(type, x, y, row0, row1, length)"},
    {"unary_bias", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(unary_bias)), METH_FASTCALL,
     "unary_bias(index, type, x, b, y, start, stop, p0, p1, p2, p3)"},
    {"grad", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(grad)), METH_FASTCALL,
     "grad(index, type, dy, x, dx, start, stop, p0, p1, p2, p3)"},
    {"grad_bias", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(grad_bias)), METH_FASTCALL,
     "grad_bias(index, type, dy, x, b, dx, start, stop, p0, p1, p2, p3)"},
    {"rows_grad", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(rows_grad)), METH_FASTCALL,
     "rows_grad(kind, type, dy, x, dx, row0, row1, length, log)"},
    {"columns_grad", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(columns_grad)), METH_FASTCALL,
     "columns_grad(type, dy, x, dx, length, inner, width, u0, u1, log)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_gpuact_cpu", "gpuact's compiled CPU kernels", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__gpuact_cpu(void) { return PyModule_Create(&kModule); }
