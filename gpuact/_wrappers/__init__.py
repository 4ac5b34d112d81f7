"""The wrappers: one module per kind of input that must be unwrapped before a backend can take it
(``dask``: Dask arrays; ``masked``: NumPy masked arrays; ``foreign``: PyTorch, JAX and DLPack
arrays, and bfloat16). Each ``wrap(inner)`` returns the call that unwraps its kind, calls
``inner`` (the layer below) and wraps the result, or passes any other request straight to
``inner``. A wrapper imports only the layers below it, never the entry points or another wrapper.
"""
