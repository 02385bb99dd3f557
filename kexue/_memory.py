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

Even 2 MiB pages must be faulted in and zeroed by the kernel, and on a virtual machine that
returns freed memory to its host the cost varies from run to run: on the machine of the
Performance page, writing 64 MiB into fresh memory took 2-8 ms more than writing it into memory
already mapped, which took 3-4 ms. A layer that computes a large output on every step can avoid
it with a ``ReusableBuffer``: it hands out the same memory again once no tensor uses it any more.
"""

from __future__ import annotations

import sys
import weakref

import numpy as np
import torch
from torch import Tensor

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
                 torch.complex64: np.complex64, torch.complex128: np.complex128}
LARGE = 32 << 20  # bytes: glibc's largest mmap threshold; smaller buffers are recycled by malloc
_ALIGN = 64


def _aligned_view(raw: np.ndarray, nbytes: int, npdtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """The 64-byte-aligned array of ``shape`` inside the byte buffer ``raw`` (``nbytes + 64`` long)."""
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + nbytes].view(npdtype).reshape(shape)


def _numpy_backed(nbytes: int, npdtype: type, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(raw, array)``: a new byte buffer ``raw`` and the aligned ``array`` of ``shape`` viewing it."""
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    return raw, _aligned_view(raw, nbytes, npdtype, shape)


def _request(x: Tensor, shape: tuple[int, ...] | None, dtype: torch.dtype | None) -> tuple[tuple[int, ...], torch.dtype, object, int]:
    shape = tuple(x.shape) if shape is None else tuple(shape)
    dtype = x.dtype if dtype is None else dtype
    npdtype = _NUMPY_DTYPES.get(dtype)
    nbytes = dtype.itemsize
    for s in shape:
        nbytes *= s
    if npdtype is None or x.device.type != "cpu" or nbytes < LARGE or not sys.platform.startswith("linux"):
        npdtype = None
    return shape, dtype, npdtype, nbytes


def fresh_like(x: Tensor, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised contiguous tensor like ``x`` (or of ``shape`` / ``dtype``), on ``x``'s device.

    Large CPU buffers (>= 32 MiB, a dtype NumPy has, on Linux) come from NumPy's allocator, which
    backs them with 2 MiB pages; anything else comes from ``torch.empty``.
    """
    shape, dtype, npdtype, nbytes = _request(x, shape, dtype)
    if npdtype is None:
        return torch.empty(shape, dtype=dtype, device=x.device)
    return torch.from_numpy(_numpy_backed(nbytes, npdtype, shape)[1])


class ReusableBuffer:
    """The memory of the last large output it handed out, handed out again once no tensor uses it.

    ``take`` works like ``fresh_like``; for a large CPU buffer it first looks at the buffer it
    returned last time. The tensor it returned holds (through its storage)
    the only strong reference to a NumPy array viewing that memory; this object keeps a weak
    reference to that array. When every tensor and view sharing the storage is gone (including
    any that autograd saved for a backward pass), the array is gone too, and the memory is free
    to be written again. Otherwise a new buffer is allocated and becomes the remembered one. So a
    layer that owns a ``ReusableBuffer`` and makes a 64 MiB output per training step writes into
    the same, already mapped, memory every step, at the price of holding that memory while the
    layer lives (like a cached weight). Not thread-safe: one owner, one thread.

    Copies (``copy.deepcopy``, pickling) start empty: the memory is never shared between owners.
    """

    def __init__(self) -> None:
        self._raw: np.ndarray | None = None  # the bytes, kept while this object lives
        self._user: weakref.ref | None = None  # the array a tensor's storage holds

    def take(self, x: Tensor, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """An uninitialised contiguous tensor like ``x``: the remembered memory if it is idle and the right size."""
        shape, dtype, npdtype, nbytes = _request(x, shape, dtype)
        if npdtype is None:
            return torch.empty(shape, dtype=dtype, device=x.device)
        raw = self._raw
        if raw is not None and raw.nbytes == nbytes + _ALIGN and self._user is not None and self._user() is None:
            array = _aligned_view(raw, nbytes, npdtype, shape)
        else:
            raw, array = _numpy_backed(nbytes, npdtype, shape)
        self._raw, self._user = raw, weakref.ref(array)
        return torch.from_numpy(array)

    def __deepcopy__(self, memo: dict) -> ReusableBuffer:
        return ReusableBuffer()

    def __reduce__(self) -> tuple:
        return ReusableBuffer, ()
