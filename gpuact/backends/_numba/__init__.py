"""Numba CUDA kernels for gpuact's Numba backend (``gpuact.backends.numba_backend``).

``scalar``  the scalar math of every elementwise activation, written once as device functions;
``kernels`` kernel factories closing over them (elementwise, softmax, glu, sparsemax, prelu),
            each returning the plain Python function and its signature, so that the same
            source is compiled for a GPU, compiled to PTX in CI, or run by the CUDA simulator.

Importing this package imports numba; only ``gpuact.backends.numba_backend`` does.
"""
