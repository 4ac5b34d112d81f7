// gpuact: the CPU kernels behind the NumPy path, for float32 and float64 contiguous arrays.
// (gpuact/backends/_native.py routes float32 here, and the float64 ops whose math needs no C
// library call: scalar libm exp/tanh in double is slower than NumPy's SIMD loops.)
//
// The math is gpuact_math.cuh's, the same templates the CUDA kernels use, compiled for the host
// with GA_HOST_SIMD so that float32 exp, expm1, log1p, tanh and erfc are gpuact_host_simd.h's
// vectorizable versions. Each op is one fused pass (input read once, output written once), where
// NumPy needs a ufunc pass per step. Threads are the caller's: gpuact/backends/_native.py calls
// these on disjoint ranges from its thread pool (ctypes drops the GIL for the call).
//
// Built by hatch_build.py when the package is installed:
//   c++ -O3 -fno-math-errno -fno-trapping-math -fopenmp-simd -fPIC -shared -std=c++17
// never with -ffast-math: the NaN and inf rules need IEEE semantics, and its start-up code would
// set flush-to-zero for the whole process. -fopenmp-simd only enables the `omp simd` pragmas (no
// OpenMP runtime). On x86-64 Linux every exported loop is cloned for x86-64-v4 (AVX-512),
// x86-64-v3 (AVX2 + FMA) and the baseline, and the loader picks the clone the CPU supports (GCC
// target_clones), so a wheel built on one x86-64 machine runs on any other.
#define GA_HOST_SIMD 1
#include "gpuact_math.cuh"

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define GA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GA_CLONES
#endif

#define GA_EXPORT extern "C" __attribute__((visibility("default")))

// Bumped whenever an export is added or changes; gpuact/backends/_native.py refuses another.
GA_EXPORT int ga_cpu_abi_version() { return 2; }

namespace {

// y may be x itself (out=x): element i is read once, before it is written, and no other element
// is touched in between, so there is no dependence between iterations. ivdep says so to GCC, which
// would otherwise add a run-time overlap check and take its scalar loop for exactly that case.
// Partly overlapping x and y are never passed (gpuact/backends/numpy_backend.py copies x first).
template <typename T, T (*Op)(T, T, T, T, T)>
GA_HD void elementwise_loop(const T* x, T* y, int64_t n, T p0, T p1, T p2, T p3) {
#pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) y[i] = Op(x[i], p0, p1, p2, p3);
}

// Softmax of `rows` contiguous rows of `length` (y may not alias x): the row max, then
// y = exp(x - max) summed in the same pass, then the scaling. `omp simd reduction` (compiled with
// -fopenmp-simd: the pragmas only, no OpenMP runtime) lets GCC keep vector partial maxima and
// sums, which it may not do on its own without reassociation flags. The max may ignore a NaN;
// that changes nothing, since the NaN still reaches the row's sum and so every output of the row,
// as with NumPy's max.
template <typename T>
GA_HD void softmax_rows(const T* x, T* y, int64_t rows, int64_t length, int log) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * length;
        T* yr = y + r * length;
        T m = -__builtin_inf();
#pragma omp simd reduction(max : m)
        for (int64_t k = 0; k < length; ++k) m = xr[k] > m ? xr[k] : m;
        // The next row streams in while this one is computed on from L1; left to the hardware
        // prefetcher, the max pass of every row would wait on memory with the vector units idle.
        if (r + 1 < rows && length <= 16384)
            for (int64_t k = 0; k < length; k += int64_t(64 / sizeof(T))) __builtin_prefetch(xr + length + k);
        T s = T(0);
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < length; ++k) {
            T e = ga::exp_nonpositive_(T(xr[k] - m));
            yr[k] = e;
            s += e;
        }
        if (log) {
            // one scalar log a row: the C library's, not simd::log, whose selects cost more than the
            // whole row for short rows (rows of 32: 1.67 against 0.95 ns an element)
            T log_s = std::log(s);
#pragma omp simd
            for (int64_t k = 0; k < length; ++k) yr[k] = T(xr[k] - m) - log_s;
        } else {
            T inv = T(1) / s;
#pragma omp simd
            for (int64_t k = 0; k < length; ++k) yr[k] *= inv;
        }
    }
}

// Softmax along the middle axis of a contiguous (outer, length, inner) array, inner > 1: a
// work unit is one outer index and `width` neighbouring columns, whose maxima and sums are
// vectors along inner (contiguous in memory), so every loop below vectorizes without gathers.
// Units [u0, u1) of outer * ceil(inner / width) are done; the threads take disjoint ranges.
// NaN and -inf behave as in softmax_rows, column by column.
const int64_t kMaxColumnWidth = 256;

template <typename T>
GA_HD void softmax_columns(const T* x, T* y, int64_t length, int64_t inner, int64_t width, int64_t u0,
                           int64_t u1, int log) {
    width = width < 1 ? 1 : (width > kMaxColumnWidth ? kMaxColumnWidth : width);
    const int64_t chunks = (inner + width - 1) / width;
    T m[kMaxColumnWidth], s[kMaxColumnWidth];
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
        for (int64_t j = 0; j < w; ++j) s[j] = T(0);
        for (int64_t l = 0; l < length; ++l) {
            const T* xl = xo + l * inner;
            T* yl = yo + l * inner;
#pragma omp simd
            for (int64_t j = 0; j < w; ++j) {
                T e = ga::exp_nonpositive_(T(xl[j] - m[j]));
                yl[j] = e;
                s[j] += e;
            }
        }
        if (log) {
            for (int64_t j = 0; j < w; ++j) s[j] = ga::log_(s[j]);
            for (int64_t l = 0; l < length; ++l) {
                const T* xl = xo + l * inner;
                T* yl = yo + l * inner;
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) yl[j] = T(xl[j] - m[j]) - s[j];
            }
        } else {
            for (int64_t j = 0; j < w; ++j) s[j] = T(1) / s[j];
            for (int64_t l = 0; l < length; ++l) {
                T* yl = yo + l * inner;
#pragma omp simd
                for (int64_t j = 0; j < w; ++j) yl[j] *= s[j];
            }
        }
    }
}

}  // namespace

#define GA_CPU_OP(name)                                                                                   \
    GA_EXPORT GA_CLONES void ga_cpu_##name##_f32(const float* x, float* y, int64_t n, float p0, float p1,  \
                                                 float p2, float p3) {                                    \
        elementwise_loop<float, ga::name<float>>(x, y, n, p0, p1, p2, p3);                                \
    }                                                                                                     \
    GA_EXPORT GA_CLONES void ga_cpu_##name##_f64(const double* x, double* y, int64_t n, double p0,        \
                                                 double p1, double p2, double p3) {                       \
        elementwise_loop<double, ga::name<double>>(x, y, n, p0, p1, p2, p3);                              \
    }

// every op of gpuact._ops.ELEMENTWISE_PARAMS (tests/test_native_cpu.py checks the list)
GA_CPU_OP(relu)
GA_CPU_OP(sigmoid)
GA_CPU_OP(softplus)
GA_CPU_OP(log_sigmoid)
GA_CPU_OP(softsign)
GA_CPU_OP(tanh)
GA_CPU_OP(elu)
GA_CPU_OP(selu)
GA_CPU_OP(celu)
GA_CPU_OP(exponential)
GA_CPU_OP(linear)
GA_CPU_OP(relu6)
GA_CPU_OP(leaky_relu)
GA_CPU_OP(silu)
GA_CPU_OP(gelu_tanh)
GA_CPU_OP(gelu)
GA_CPU_OP(hard_sigmoid)
GA_CPU_OP(hard_silu)
GA_CPU_OP(mish)
GA_CPU_OP(hard_tanh)
GA_CPU_OP(hard_shrink)
GA_CPU_OP(soft_shrink)
GA_CPU_OP(tanh_shrink)
GA_CPU_OP(threshold)
GA_CPU_OP(squareplus)
GA_CPU_OP(sparse_plus)
GA_CPU_OP(sparse_sigmoid)

GA_EXPORT GA_CLONES void ga_cpu_softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t length, int log) {
    softmax_rows<float>(x, y, rows, length, log);
}
GA_EXPORT GA_CLONES void ga_cpu_softmax_rows_f64(const double* x, double* y, int64_t rows, int64_t length,
                                                 int log) {
    softmax_rows<double>(x, y, rows, length, log);
}
GA_EXPORT GA_CLONES void ga_cpu_softmax_columns_f32(const float* x, float* y, int64_t length, int64_t inner,
                                                    int64_t width, int64_t u0, int64_t u1, int log) {
    softmax_columns<float>(x, y, length, inner, width, u0, u1, log);
}
