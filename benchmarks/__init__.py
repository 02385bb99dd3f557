"""Benchmarks of kexue against maintained peer libraries (``make bench``; not part of ``make test``).

Every case times kexue and its peers on the same inputs in the same process, after checking
that they agree, with ``torch.utils.benchmark`` (2 threads, warm-up, median of repeats). The
machine's own limits are measured in the same run (copy bandwidth, GEMM throughput) so a
result can be read as a fraction of what the hardware allows. ``python -m benchmarks`` writes
``benchmarks/results.json``, which the Performance page of the site renders.
"""
