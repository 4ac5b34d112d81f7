"""The bottom layer: the op table (``ops``), the call families and the request that travels down
the layers (``calls``), and argument validation (``checks``). It imports nothing of gpuact above it.
"""
