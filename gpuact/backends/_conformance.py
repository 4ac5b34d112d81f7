"""mypy's check that each backend module implements ``gpuact.backends.protocol.Backend``: a
module assigned to a Protocol-typed name is checked member by member (names, keywords, arity).
Nothing imports this module at run time, and it imports nothing then."""

from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    from gpuact.backends import cupy_backend, numba_backend, numpy_backend
    from gpuact.backends.protocol import Backend

    _numpy: Backend = numpy_backend
    _cupy: Backend = cupy_backend
    _numba: Backend = numba_backend
