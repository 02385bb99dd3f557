"""Benchmarks of kexue against maintained peer libraries (``make bench``; not part of ``make test``).

Every case checks that kexue and its peers agree on the same inputs, then times them in the same
process in interleaved rounds (2 threads; each implementation in turn, the order rotated from
round to round), with the machine limit that applies (a copy or a matrix multiply of known size)
timed in the same rounds. Ratios are computed within each round; the reported ratio is the median
over rounds and the spread is the lowest and highest round. Cost curves (time against size, per
implementation in a process with a memory budget) are in :mod:`benchmarks.curves`.
``python -m benchmarks`` writes ``benchmarks/results.json``, which the Performance page renders.
"""
