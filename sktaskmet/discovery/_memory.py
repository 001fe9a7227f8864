"""How many networks of an ensemble fit in device memory at once.

A training step of an ensemble member holds, per member,

* its parameters, their gradients and Adam's two moments: ``4 P`` numbers for ``P``
  parameters (plus its buffers);
* the activations of one minibatch kept for the backward pass and their gradients: about
  ``2 A b`` numbers, where ``A`` is the number of values all layers output for one sample
  and ``b`` the batch size;
* its own copy of the minibatch: ``b`` samples.

:func:`member_bytes` computes this estimate *before* anything is allocated on the device
(``A`` is counted on the meta device, which allocates nothing), and :func:`plan_chunks`
splits the labelings into groups whose networks fit in the memory budget, so that
``labelings x members`` that exceed a GPU train chunk after chunk instead of failing.
"""

import math
import os

import torch

__all__ = ["member_bytes", "available_memory", "plan_chunks"]

# Fraction of the free memory the ensembles plan for: the allocator's fragmentation, the
# framework's workspaces and the estimate's own slack take the rest.
MEMORY_FRACTION = 0.8


def _activation_count(module, input_shape):
    """Number of values that the leaf layers of ``module`` output for one sample."""
    meta = module.to("meta")
    total = 0

    def count(_, __, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in meta.modules() if not list(m.children())]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    try:
        meta.eval()  # one sample cannot give batch statistics; the sizes are the same
        dtype = next((p.dtype for p in meta.parameters()), torch.float32)
        meta(torch.empty((1, *input_shape), device="meta", dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return total


def member_bytes(build, input_shape, batch_size, dtype):
    """Estimated bytes of device memory one ensemble member needs to train.

    Parameters
    ----------
    build : callable
        Zero-argument builder of one network.
    input_shape : tuple of int
        Shape of one sample.
    batch_size : int
    dtype : torch.dtype

    Returns
    -------
    int
    """
    with torch.device("meta"):
        module = build()
    itemsize = torch.empty((), dtype=dtype).element_size()
    n_params = sum(p.numel() for p in module.parameters())
    n_buffers = sum(b.numel() for b in module.buffers())
    n_activations = _activation_count(module, input_shape)
    n_values = 4 * n_params + n_buffers + batch_size * (2 * n_activations + math.prod(input_shape))
    return int(n_values * itemsize)


def available_memory(device):
    """Free memory of ``device`` in bytes (free GPU memory, or available RAM on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no bound known
        return 2**62


def plan_chunks(n_tasks, n_models, bytes_per_member, memory_limit, n_workers=1):
    """Split labelings ``0 .. n_tasks - 1`` into consecutive chunks that fit in memory.

    Parameters
    ----------
    n_tasks, n_models : int
        Labelings, and networks per labeling (a labeling's networks stay together).
    bytes_per_member : int
        From :func:`member_bytes`.
    memory_limit : int
        Bytes one chunk may use.
    n_workers : int, default=1
        At least this many chunks (when there are as many labelings), so that every
        worker of a parallel backend gets one.

    Returns
    -------
    list of range
        Labelings of each chunk.

    Raises
    ------
    MemoryError
        If the networks of a single labeling do not fit.
    """
    per_task = bytes_per_member * n_models
    fitting = memory_limit // per_task
    if fitting < 1:
        raise MemoryError(
            f"The {n_models} networks of one labeling need about {per_task / 2**20:.1f} MiB "
            f"to train, more than the {memory_limit / 2**20:.1f} MiB available "
            "(memory_limit, or the device's free memory); lower batch_size, use a smaller "
            "module, or raise memory_limit."
        )
    n_chunks = max(math.ceil(n_tasks / fitting), min(int(n_workers), n_tasks))
    size = math.ceil(n_tasks / n_chunks)
    return [range(start, min(start + size, n_tasks)) for start in range(0, n_tasks, size)]
