"""The memory row: what one training step of a LLaMA-style MLP keeps for its backward, with
``gpuact.torch.swiglu`` against the composition ``silu(a) * b`` a PyTorch MLP writes.

The step is ``down(swiglu(up(x)))`` with ``up`` a Linear(hidden, 2 * intermediate) (the gate and
up projections in one matrix, gate first) and ``down`` a Linear(intermediate, hidden), forward
and backward. Two numbers per variant:

* ``saved_bytes``: the bytes autograd keeps between the forward and the backward, counted by
  ``torch.autograd.graph.saved_tensors_hooks`` once per storage (``a`` and ``b`` are views of one
  buffer) and without the parameters. It is the same on every device, and it is what the fused
  backward saves: gpuact keeps ``up(x)`` and recomputes ``silu(a)``, the composition keeps
  ``silu(a)`` as well.
* ``peak_bytes``: on a CUDA device, ``torch.cuda.max_memory_allocated`` over the step less what
  was allocated before it (the weights, the input); None on the CPU, whose allocator keeps no
  statistics.
"""

from __future__ import annotations

# LLaMA-7B's MLP widths; the token count keeps a CPU step near a second
HIDDEN, INTERMEDIATE, TOKENS = 4096, 11008, 128


def _variants():
    import torch.nn.functional as F

    import gpuact.torch as gt

    def composed(u):
        a, b = u.chunk(2, dim=-1)
        return F.silu(a) * b

    return {"gpuact-torch": gt.swiglu, "torch": composed}


def mlp_step_memory(device: str = "cpu", dtype: str = "float32", tokens: int = TOKENS) -> list[dict]:
    """One row per variant: ``{"variant", "device", "dtype", "shape", "saved_bytes", "peak_bytes"}``,
    the shape being ``(tokens, hidden, intermediate)``."""
    import torch

    torch_dtype = getattr(torch, dtype)
    torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    generator = torch.Generator().manual_seed(0)
    up = torch.nn.Linear(HIDDEN, 2 * INTERMEDIATE, bias=False)
    down = torch.nn.Linear(INTERMEDIATE, HIDDEN, bias=False)
    with torch.no_grad():
        for layer in (up, down):
            layer.weight.uniform_(-0.01, 0.01, generator=generator)
    up, down = up.to(torch_device, torch_dtype), down.to(torch_device, torch_dtype)
    parameters = {p.untyped_storage().data_ptr() for p in (up.weight, down.weight)}
    x = torch.randn(tokens, HIDDEN, generator=generator).to(torch_device, torch_dtype).requires_grad_(True)
    rows = []
    for name, swiglu in _variants().items():
        storages: dict[int, int] = {}

        def pack(t, storages=storages):
            storage = t.untyped_storage()
            if storage.data_ptr() not in parameters:
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        cuda = torch_device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = down(swiglu(up(x)))
        y.backward(torch.ones_like(y))
        peak = None
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
        x.grad = up.weight.grad = down.weight.grad = None
        rows.append(
            {
                "variant": name,
                "device": device,
                "dtype": dtype,
                "shape": [tokens, HIDDEN, INTERMEDIATE],
                "saved_bytes": sum(storages.values()),
                "peak_bytes": peak,
            }
        )
    return rows
