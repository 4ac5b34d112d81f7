"""TEMPORARY: the old name of gpuact._entry, while gpuact._dask is being fixed."""

from gpuact._contract.checks import as_param, result_dtype, single_axis  # noqa: F401
from gpuact._contract.checks import softmax_axes as _softmax_axes  # noqa: F401
from gpuact._entry import *  # noqa: F403
from gpuact._entry import numpy_elementwise  # noqa: F401
