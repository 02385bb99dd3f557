"""Timing and bookkeeping shared by the benchmark cases.

Every case times all of its implementations in *interleaved rounds*: round 1 times kexue, then
each peer, then the machine limit (a copy or a matrix multiply of known size), round 2 does the
same in a rotated order, and so on. A ratio is computed within each round and the reported ratio
is the median over rounds, with the smallest and largest round as its spread. Drifts in machine
speed (other processes, frequency changes) then hit kexue and its peers alike.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

THREADS = 2
ROUNDS = 5  # interleaved rounds per case (>= 3)
BUDGET = 0.25  # seconds of calls per implementation per round


@dataclass
class Bench:
    """What a case needs: the machine limits, how many rounds, how long per implementation."""

    limits: dict
    rounds: int = ROUNDS
    budget: float = BUDGET
    quick: bool = False  # smallest problem of each case only, fewer rounds


@dataclass
class Timing:
    """One implementation of one case: median seconds per call over rounds, its spread and rates."""

    impl: str
    seconds: float
    spread: tuple[float, float]  # (fastest round, slowest round), seconds per call
    gb_per_s: float | None = None  # nominal bytes moved / seconds
    gflop_per_s: float | None = None  # nominal floating-point operations / seconds
    note: str = ""


@dataclass
class Result:
    """One case: every implementation timed in the same rounds, ratios to kexue's, limit fraction."""

    case: str
    problem: str
    reference: str  # the kexue impl the ratios are relative to
    timings: list[Timing] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)  # median over rounds of t_impl / t_reference
    ratio_spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # min, max over rounds
    limit: str = ""  # what the machine's limit means for this case, if any
    limit_fraction: float | None = None  # median over rounds of kexue's rate / the limit's rate
    limit_fraction_spread: tuple[float, float] | None = None
    bound: str = ""  # "memory" or "compute": which limit the kexue implementation runs into
    bound_reason: str = ""
    rounds: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _calls_per_block(fn: Callable[[], object], target: float = 2e-3) -> int:
    t = time.perf_counter()
    fn()
    once = time.perf_counter() - t
    return max(1, min(1000, int(target / max(once, 1e-9))))


def _one_round(fn: Callable[[], object], budget: float, per_block: int) -> float:
    """Median seconds per call over blocks of ``per_block`` calls, for about ``budget`` seconds (>= 1 block)."""
    blocks = []
    start = time.perf_counter()
    while not blocks or time.perf_counter() - start < budget:
        t = time.perf_counter()
        for _ in range(per_block):
            fn()
        blocks.append((time.perf_counter() - t) / per_block)
    return statistics.median(blocks)


def interleaved(impls: dict[str, Callable[[], object]], rounds: int = ROUNDS,
                budget: float = BUDGET) -> dict[str, list[float]]:
    """Seconds per call of each implementation in each of ``rounds`` interleaved rounds.

    Each implementation is warmed up once, then every round times each of them for about
    ``budget`` seconds, the order rotated by one place from round to round.
    """
    torch.set_num_threads(THREADS)
    names = list(impls)
    per_block = {name: _calls_per_block(impls[name]) for name in names}  # also the warm-up
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(_one_round(impls[name], budget, per_block[name]))
    return seconds


def _median_spread(values: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(values), (min(values), max(values))


def summarise(
    case: str,
    problem: str,
    reference: str,
    seconds: dict[str, list[float]],
    *,
    names: list[str] | None = None,
    bytes_moved: dict[str, float] | None = None,
    flops: dict[str, float] | None = None,
    limit_impl: str | None = None,
    limit: str = "",
    bound: str = "",
    bound_reason: str = "",
) -> Result:
    """Build a [`Result`][benchmarks.harness.Result] from per-round seconds (ratios within rounds).

    ``bytes_moved`` / ``flops`` give each implementation's nominal work (for the rates); the
    limit fraction compares kexue's rate with ``limit_impl``'s in the same round (bytes if both
    have them, else flops).
    """
    names = names or list(seconds)
    bytes_moved, flops = bytes_moved or {}, flops or {}
    rounds = len(seconds[reference])
    timings, ratios, spread = [], {}, {}
    for name in names:
        med, sp = _median_spread(seconds[name])
        timings.append(Timing(
            name, med, sp,
            gb_per_s=bytes_moved[name] / med / 1e9 if name in bytes_moved else None,
            gflop_per_s=flops[name] / med / 1e9 if name in flops else None,
        ))
        per_round = [a / b for a, b in zip(seconds[name], seconds[reference], strict=True)]
        ratios[name], spread[name] = _median_spread(per_round)
    fraction = fraction_spread = None
    if limit_impl is not None:
        work = bytes_moved if reference in bytes_moved and limit_impl in bytes_moved else flops
        per_round = [(work[reference] / tr) / (work[limit_impl] / tl)
                     for tr, tl in zip(seconds[reference], seconds[limit_impl], strict=True)]
        fraction, fraction_spread = _median_spread(per_round)
    return Result(case, problem, reference, timings, ratios, spread, limit, fraction, fraction_spread,
                  bound, bound_reason, rounds)


def classify(flops: float, bytes_moved: float, limits: dict) -> tuple[str, str]:
    """Memory- or compute-bound, from arithmetic intensity against the machine's balance point."""
    intensity = flops / bytes_moved
    balance = limits["gemm_gflop_per_s"] / limits["copy_gb_per_s"]
    kind = "memory" if intensity < balance else "compute"
    return kind, (f"{intensity:.2g} flop/byte against a machine balance of {balance:.2g} flop/byte "
                  f"(GEMM GFLOP/s over copy GB/s)")


def copy_bandwidth(numel: int = 32 * 4096 * 128 * 2, rounds: int = 3) -> float:
    """GB/s of copying a float32 tensor into a preallocated one (read + write counted), median of rounds."""
    src = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    dst = torch.empty_like(src)
    t = statistics.median(interleaved({"copy": lambda: dst.copy_(src)}, rounds)["copy"])
    return 2 * src.numel() * src.element_size() / t / 1e9


def gemm_throughput(n: int = 2048, rounds: int = 3) -> float:
    """GFLOP/s of a float32 n×n by n×n matrix multiply into a preallocated output, median of rounds."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    t = statistics.median(interleaved({"mm": lambda: torch.mm(a, b, out=out)}, rounds)["mm"])
    return 2 * n**3 / t / 1e9


def sharing_probe(repeats: int = 5, blocks: int = 16) -> float:
    """How expensive it is for one thread to read what the other thread has just written.

    Each block is a 1024×512 float32 matrix product on two threads (MKL gives each thread half of
    the rows), and the calling thread then reads half of the rows with NumPy's argmin: in loop A
    the half it wrote itself, in loop B the half the other thread wrote. Returns the median over
    ``repeats`` interleaved pairs of time(B) / time(A). About 1.05 in this machine's normal state and
    about 1.9 in its other state (see the Performance page), where data moves slowly between the
    two cores.
    """
    import numpy as np

    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(blocks * 1024, 64, generator=g), torch.randn(512, 64, generator=g)
    e2, ct = c.pow(2).sum(1), c.t()
    scores = torch.empty(1024, 512)
    index = np.empty(512, dtype=np.int64)

    def loop(rows: slice) -> float:
        t0 = time.perf_counter()
        for b in range(blocks):
            torch.addmm(e2, x[b * 1024:(b + 1) * 1024], ct, beta=1.0, alpha=-2.0, out=scores)
            np.argmin(scores.numpy()[rows], axis=1, out=index)
        return time.perf_counter() - t0

    own, other = slice(0, 512), slice(512, 1024)
    loop(own), loop(other)  # warm up
    return statistics.median(loop(other) / loop(own) for _ in range(repeats))


def fit_slope(sizes: list[float], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) against log(size) (None with fewer than two points)."""
    pts = [(math.log(s), math.log(t)) for s, t in zip(sizes, seconds, strict=True) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


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
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
