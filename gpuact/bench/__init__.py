"""``gpuact-bench`` (also ``python -m gpuact.bench``): how fast gpuact is, on this machine.

For each activation, dtype and size it times every available backend: gpuact's NumPy path always,
gpuact's CuPy and Numba paths when a GPU is usable, and the peers found installed (TensorFlow's
``tf.keras.activations``, PyTorch, JAX under ``jax.jit``, and the plain NumPy/CuPy expressions).
Every backend and peer is listed as used or skipped, with the reason.

Method
------
* **Correct before fast.** Every result is first compared with a float64 NumPy reference (all
  elements up to 2**20; beyond, a deterministic sample of whole slices). gpuact's paths must meet
  the contract's tolerances (docs/contract.rst, "Accuracy": float32 rtol 1e-5/atol 1e-6, float16
  1e-3, float64 1e-12/1e-14); peers get 10x looser (1000x for float64), since XLA, cuDNN and naive
  formulas use approximate math. A wrong result is reported as wrong (``correct: false``, no time),
  never as a time.
* **CPU.** ``time.perf_counter_ns`` around each call, after a warm-up; samples until at least
  10 runs *and* 0.2 s (``--quick``: 5 runs and 0.02 s), at most 500 runs or 0.5 s per case (then at
  least 3). The median is reported; min, max and every sample are kept in the JSON. CPU inputs are
  not rotated: small sizes run from cache, as they would in a layer.
* **GPU.** CUDA events on the stream the op runs on (``cupy.cuda.Event`` for gpuact and CuPy,
  ``torch.cuda.Event`` for PyTorch), recorded around each call, no host sync between calls; warm-up
  first, then the median of 50 runs (``--gpu-runs``). Inputs rotate among buffers cut from one pool
  of at least twice the L2 size (``cupy.cuda.Device().attributes['L2CacheSize']``), so no timed call
  reads L2-hot input. Outputs are allocated by each call, as in user code. JAX runs on its own
  streams, so it is timed by wall clock from the call to ``block_until_ready``: that includes its
  dispatch, and its small-size times are upper bounds. At small sizes every GPU time includes the
  host's launch latency (the device idles while Python prepares the call); the per-call host
  overhead is measured separately: wall time of 200 back-to-back calls / 200 with one sync at the
  end, for gpuact's CuPy and Numba paths, PyTorch eager and the rest (``overhead`` in the JSON).
* **Bandwidth.** GB/s = (input bytes read + output bytes written) / median time. Each run also
  measures the same machine's copy at every size it uses, the same way (CPU: the fastest of
  ``np.copyto`` and ``np.positive(x, out=y)``, each on one thread and on gpuact's threads; GPU: the
  faster of ``cudaMemcpyAsync`` device-to-device and CuPy's copy kernel), plus one large copy
  (64 MiB on the CPU, up to 1 GiB on the GPU).
  ``frac_of_copy`` is GB/s over the copy **at the same byte size** on the same device;
  ``copy_gbps`` is each device's **peak** copy over the run (``copy_gbps_large`` the large copy).
  A result above 1.1x the same-size copy is physically implausible and is flagged *suspicious*.
* **Softmax** is timed on rows of 32, 1024, 4096 and 65536 along the last axis and along axis 0,
  for up to three sizes of the ladder per row length (its smallest, middle and largest rung that
  hold at least one row; ``--softmax-sizes``), on the CPU only rungs up to 2**22 elements.

JSON (``--json PATH``, schema ``gpuact-bench/1``): ``schema``, ``machine``, ``gpu`` (or null),
``copy_gbps`` ``{"cpu", "gpu"}``, ``results`` (one per case and backend: ``op, dtype, shape, axis,
elements, device, backend, correct, median_s, min_s, max_s, samples_s, gbps, frac_of_copy,
speedup_vs_numpy``, plus ``speedup_vs_torch``, ``speedup_vs_jax``, ``suspicious``, ``error``), and
the extras ``copy``, ``copy_gbps_large``, ``overhead``, ``backends``, ``errors``, ``suspicious``,
``config``, ``method``, ``date``, ``wall_s``.

Exit status: 0, or 1 when one of gpuact's own paths gave a wrong result or raised.
"""

from __future__ import annotations


def main(argv=None) -> int:
    """Entry point of the ``gpuact-bench`` console script."""
    from gpuact.bench.cli import main as _main

    return _main(argv)
