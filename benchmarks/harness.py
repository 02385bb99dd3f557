"""Timing and bookkeeping shared by the benchmark cases."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils import benchmark

THREADS = 2


@dataclass
class Timing:
    """One implementation of one case: median seconds per call and derived rates."""

    impl: str
    seconds: float
    gb_per_s: float | None = None
    gflop_per_s: float | None = None
    note: str = ""


@dataclass
class Result:
    """One case: the shape of the problem, every implementation timed, and the reference one."""

    case: str
    problem: str
    reference: str  # the impl the ratios are relative to (kexue's)
    timings: list[Timing] = field(default_factory=list)
    limit: str = ""  # what the machine's limit means for this case, if any
    limit_fraction: float | None = None  # kexue's rate / machine limit

    def ratios(self) -> dict[str, float]:
        """Seconds of each implementation divided by kexue's (> 1: kexue is faster)."""
        ref = next(t.seconds for t in self.timings if t.impl == self.reference)
        return {t.impl: t.seconds / ref for t in self.timings}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = self.ratios()
        return d


def median_seconds(fn: Callable[[], object], min_run_time: float = 1.0) -> float:
    """Median wall time of ``fn()`` over repeated blocks, after a warm-up call, with 2 threads."""
    torch.set_num_threads(THREADS)
    fn()  # warm-up (allocations, lazy initialisation, compilation)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=THREADS)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def copy_bandwidth(numel: int = 32 * 4096 * 128 * 2) -> float:
    """GB/s of copying a float32 tensor into a preallocated one (read + write counted)."""
    src = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / t / 1e9


def gemm_throughput(n: int = 2048) -> float:
    """GFLOP/s of a float32 n×n by n×n matrix multiply into a preallocated output."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    t = median_seconds(lambda: torch.mm(a, b, out=out))
    return 2 * n**3 / t / 1e9


def machine() -> dict:
    """A description of the machine and software the numbers were measured on."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": THREADS,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
