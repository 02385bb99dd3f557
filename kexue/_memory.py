"""Fresh output buffers that are cheap to write on Linux (used by the fast paths of kexue.rope and kexue.lipschitz).

glibc's ``malloc`` serves requests of 32 MiB and more (its largest ``mmap`` threshold on 64-bit
systems) with a fresh ``mmap`` each time and returns the memory to the kernel on ``free``. The
first write to each 4 KiB page of such a buffer then faults into the kernel, which zeroes the page:
for a 64 MiB tensor from ``torch.empty`` that costs several times the write itself (on the 2-core
machine of the Performance page, while other jobs ran: ``q.clone()`` took 5-7 times as long as
``q.copy_()`` into an existing buffer; below 32 MiB ``malloc`` recycles freed memory and the two
cost the same). NumPy asks Linux for transparent 2 MiB pages for large arrays
(``madvise(MADV_HUGEPAGE)``, on by default since NumPy 1.22), so the same buffer faults 512 times
less often (``fresh_like(q).copy_(q)`` took 1.7-1.8 times a copy there).
``fresh_like`` allocates buffers of 32 MiB and more on the CPU through NumPy, aligned to 64
bytes, and everything else through ``torch.empty``.

The result is an ordinary tensor; the one difference is that its storage cannot be resized
(``t.resize_`` to a larger size raises), which nothing in kexue does.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
                 torch.complex64: np.complex64, torch.complex128: np.complex128}
LARGE = 32 << 20  # bytes: glibc's largest mmap threshold; smaller buffers are recycled by malloc
_ALIGN = 64


def fresh_like(x: Tensor, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised contiguous tensor like ``x`` (or of ``shape`` / ``dtype``), on ``x``'s device.

    Large CPU buffers (>= 32 MiB, a dtype NumPy has, on Linux) come from NumPy's allocator, which
    backs them with 2 MiB pages; anything else comes from ``torch.empty``.
    """
    shape = tuple(x.shape) if shape is None else tuple(shape)
    dtype = x.dtype if dtype is None else dtype
    npdtype = _NUMPY_DTYPES.get(dtype)
    nbytes = dtype.itemsize
    for s in shape:
        nbytes *= s
    if npdtype is None or x.device.type != "cpu" or nbytes < LARGE or not sys.platform.startswith("linux"):
        return torch.empty(shape, dtype=dtype, device=x.device)
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return torch.from_numpy(raw[start:start + nbytes].view(npdtype).reshape(shape))
