"""Numba CUDA kernels for gpuact's Numba backend (``gpuact.backends.numba_backend``).

``scalar``  the scalar math of every elementwise activation, written once as device functions
            (and the compensated, online softmax sums the reductions share);
``kernels`` kernel factories closing over them (elementwise, softmax, glu, sparsemax, prelu),
            each returning the plain Python function and its signature, so that the same
            source is compiled for a GPU, compiled to PTX in CI, or run by the CUDA simulator;
``plan``    how softmax and sparsemax are laid out over blocks, in pure Python.

Importing ``scalar`` or ``kernels`` imports numba; ``plan`` does not. Only
``gpuact.backends.numba_backend`` imports them.
"""
