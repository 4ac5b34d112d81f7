// A tiny CPU stand-in for the CUDA execution model, to run gpuact's softmax kernels on the host
// in the tests: each block's threads are std::threads (blocks run one after another, so a
// kernel's `__shared__` arrays can be function statics), __syncthreads is a block-wide barrier,
// and warp shuffles go through a per-warp exchange buffer between two warp barriers.
// Every barrier gives up after GA_SHIM_TIMEOUT_S seconds and ends the process with a message:
// a barrier that not every thread reaches would otherwise hang the test run.
// Limits: blockDim.x a multiple of 32 and <= 1024 (the tests use <= 256); 1-D blocks, 2-D grids.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#ifndef GA_SHIM_TIMEOUT_S
#define GA_SHIM_TIMEOUT_S 30
#endif

#define GA_CPU_SHIM 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

namespace ga_shim {

struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    int n, count = 0;
    unsigned long gen = 0;
    explicit Barrier(int n_) : n(n_) {}
    void wait() {
        std::unique_lock<std::mutex> lock(m);
        const unsigned long g = gen;
        if (++count == n) {
            count = 0;
            ++gen;
            cv.notify_all();
            return;
        }
        if (!cv.wait_for(lock, std::chrono::seconds(GA_SHIM_TIMEOUT_S), [&] { return gen != g; })) {
            std::fprintf(stderr, "cuda_shim: barrier timed out: not every thread reached it\n");
            std::fflush(stderr);
            std::_Exit(99);
        }
    }
};

struct uint3_ { unsigned x, y, z; };

struct Block {
    std::unique_ptr<Barrier> bar;
    std::vector<std::unique_ptr<Barrier>> warp_bars;
    std::vector<unsigned long long> exchange;
    std::vector<unsigned char> smem;
};

struct Ctx {
    uint3_ tid, bid, bdim, gdim;
    Block* blk;
};
inline thread_local Ctx ctx;

template <typename F>
void launch(unsigned grid, unsigned grid_y, unsigned block, size_t smem_bytes, F fn) {
    if (block % 32 != 0 || block > 1024) {
        std::fprintf(stderr, "cuda_shim: blockDim %u is not a multiple of 32 <= 1024\n", block);
        std::_Exit(98);
    }
    for (unsigned by = 0; by < grid_y; ++by)
    for (unsigned b = 0; b < grid; ++b) {
        Block blk;
        blk.bar.reset(new Barrier((int)block));
        for (unsigned w = 0; w < block / 32; ++w) blk.warp_bars.emplace_back(new Barrier(32));
        blk.exchange.assign(block, 0);
        blk.smem.assign(smem_bytes + 16, 0xcd);  // garbage, like real shared memory
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&, t] {
                ctx = Ctx{{t, 0, 0}, {b, by, 0}, {block, 1, 1}, {grid, grid_y, 1}, &blk};
                fn();
            });
        }
        for (auto& th : threads) th.join();
    }
}

template <typename T>
T exchange(T v, int src_of_lane_fn_result, int lane) {
    Block* blk = ctx.blk;
    const int warp = (int)ctx.tid.x / 32;
    unsigned long long* slot = &blk->exchange[warp * 32];
    unsigned long long u = 0;
    std::memcpy(&u, &v, sizeof(T));
    slot[lane] = u;
    blk->warp_bars[warp]->wait();
    T r;
    std::memcpy(&r, &slot[src_of_lane_fn_result], sizeof(T));
    blk->warp_bars[warp]->wait();
    return r;
}

}  // namespace ga_shim

#define threadIdx (ga_shim::ctx.tid)
#define blockIdx (ga_shim::ctx.bid)
#define blockDim (ga_shim::ctx.bdim)
#define gridDim (ga_shim::ctx.gdim)
#define GA_EXTERN_SHARED(name) unsigned char* name = ga_shim::ctx.blk->smem.data()

inline void __syncthreads() { ga_shim::ctx.blk->bar->wait(); }

// CUDA semantics: lanes are split in segments of `width`; a source lane outside the caller's
// segment yields the caller's own value.
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
    const int lane = (int)ga_shim::ctx.tid.x % 32;
    int src = lane ^ lane_mask;
    if (src / width != lane / width) src = lane;
    return ga_shim::exchange(v, src, lane);
}

template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta, int width = 32) {
    const int lane = (int)ga_shim::ctx.tid.x % 32;
    int src = lane + (int)delta;
    if (src / width != lane / width) src = lane;
    return ga_shim::exchange(v, src, lane);
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
template <typename T> inline T __ldg(const T* p) { return *p; }
