r"""Claims vs reproduction: verdicts from stated rules applied to measured numbers.

Every article page ends with a table that sets each claim of the article against what the page
measured. This module is the only way a page makes that table, so that every verdict on the site
means the same thing:

* A verdict is one of five words, [`VERDICTS`][kexue.experiments.claims.VERDICTS]:
  ``reproduced``, ``partly``, ``not reproduced``, ``inconclusive`` (the measured difference is
  inside the seed noise) and ``not tested``.
* A verdict comes from a **rule**, a small function that takes the measured numbers and returns
  an [`Outcome`][kexue.experiments.claims.Outcome]: the verdict, a reason that names the numbers
  it used, those numbers (``evidence``) and how many seeds they rest on. The reason is written by
  the rule from the same numbers, so it cannot contradict the verdict.
* Training-based numbers enter as [`Seeds`][kexue.experiments.claims.Seeds], one value per seed;
  rules compare means with their standard errors and refuse fewer than three seeds.
* [`claims_table`][kexue.experiments.claims.claims_table] prints the Markdown table, the rules it
  used in words, and a machine-readable copy of the rows
  (``<script type="application/json" class="kx-claims">``) that the articles index and the home
  gallery read.

Examples:
    >>> from kexue.experiments.claims import Claim, Seeds, beats, claims_table, exact
    >>> ours, theirs = Seeds([0.91, 0.93, 0.92]), Seeds([0.88, 0.87, 0.90])
    >>> outcome = beats(ours, theirs, names=("A", "B"))
    >>> outcome.verdict
    'reproduced'
    >>> outcome.reason
    "A 0.920 ± 0.010 vs B 0.883 ± 0.015 (mean ± sd over 3 seeds): A is 0.0367 higher; noise band 2.96 s.e. (Student's t, 3.4 d.f.) of the difference = 0.0312 — outside the noise"
    >>> rows = [Claim("A is more accurate than B", "95% vs 91%", f"{ours:.2f} vs {theirs:.2f}", outcome),
    ...         Claim("The identity holds", "derivation", "float64", exact(3e-16, 1e-12, name="max error"))]
    >>> print(claims_table(rows, page="demo"))  # doctest: +ELLIPSIS
    | Verdict | Claim | Article | Ours | Why |
    |---|---|---|---|---|
    | <span class="kx-verdict" data-verdict="reproduced">reproduced</span> | A is more accurate than B | ...
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from kexue._checks import check_bool

__all__ = [
    "VERDICTS",
    "Seeds",
    "over_seeds",
    "Outcome",
    "exact",
    "at_least",
    "at_most",
    "close_to",
    "beats",
    "ranks",
    "all_of",
    "not_tested",
    "Claim",
    "claims_table",
    "claims_json",
]

VERDICTS: tuple[str, ...] = ("reproduced", "partly", "not reproduced", "inconclusive", "not tested")
"""The five verdict words, and the only ones a claims table accepts."""

MIN_SEEDS = 3
"""Rules refuse `Seeds` with fewer values than this: a verdict that depends on training
rests on at least three seeds."""


# ----------------------------------------------------------------------------- numbers over seeds


def _num(x: float, digits: int = 3) -> str:
    """``x`` with about ``digits`` significant digits, in fixed notation where that reads well."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    mag = math.floor(math.log10(abs(x)))
    if -3 <= mag < 6:
        return f"{x:.{max(0, digits - 1 - mag)}f}"
    return f"{x:.{max(0, digits - 1)}e}"


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(value: object, name: str) -> float:
    value = _finite(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


CONFIDENCE = 0.95
"""Two-sided confidence of the noise band every rule over seeds uses by default."""


def _check_z(z: object) -> float | None:
    """``None`` (Student's t) or a positive finite number of standard errors."""
    return None if z is None else _positive(z, "z")


def _width(z: float | None, df: float) -> tuple[float, str]:
    """How many standard errors a band spans, and how a reason names it.

    ``z=None`` (the default of every rule): the two-sided 95% point of Student's t with ``df``
    degrees of freedom (4.30 for 3 seeds, 2.78 for 5), so the band is a 95% confidence interval
    even with few seeds; a number gives a fixed multiple of the standard error instead.
    """
    if z is not None:
        k = float(z)  # checked by _check_z
        return k, f"{k:g} s.e."
    from scipy.stats import t as student_t  # scipy is a runtime dependency; imported when used

    k = float(student_t.ppf(0.5 + CONFIDENCE / 2, max(df, 1.0)))
    return k, f"{k:.2f} s.e. (Student's t, {df:.2g} d.f.)"


def _welch_df(se_a: float, n_a: int, se_b: float, n_b: int) -> float:
    """Welch–Satterthwaite degrees of freedom of a difference of two means (one side may be exact)."""
    parts = [(se * se, n) for se, n in ((se_a, n_a), (se_b, n_b)) if n > 0]
    if not parts:
        return math.inf
    total = sum(v for v, _ in parts)
    denom = sum(v * v / (n - 1) for v, n in parts)
    if total == 0 or denom == 0:  # no spread at all: any multiple of a zero error is zero
        return float(min(n for _, n in parts) - 1)
    return total * total / denom


def _band_words(z: float | None) -> tuple[str, str]:
    """(tag, band) for a rule's statement: the band the rule compares against, in words."""
    if z is None:
        band = ("t standard errors, t the two-sided 95% point of Student's t with the seeds' degrees "
                "of freedom (4.30 for 3 seeds, 2.78 for 5; Welch's for two independent groups)")
        return "95%", band
    return f"z = {z:g}", f"{z:g} standard errors"


@dataclass(frozen=True)
class Seeds:
    """One measured quantity, once per seed: mean, standard deviation and standard error.

    Build it from the per-seed values (a list, a tuple or a 1-D tensor), or with
    [`over_seeds`][kexue.experiments.claims.over_seeds]. ``format(s, ".2f")`` and f-strings
    print ``mean ± sd``.

    Attributes:
        values: The per-seed values, in seed order.

    Raises:
        ValueError: If there are no values or one is not finite.
    """

    values: tuple[float, ...]

    def __init__(self, values: Iterable[float] | Tensor) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, (Tensor, Iterable)):
            raise TypeError(f"values must be a sequence or 1-D tensor of numbers, got {type(values).__name__}")
        if isinstance(values, Tensor):
            if values.is_complex():
                raise TypeError(f"values must be real numbers, got a {values.dtype} tensor")
            if values.dim() != 1:
                raise ValueError(f"values must be a 1-D tensor (one value per seed), got shape {tuple(values.shape)}")
            values = values.detach().double().tolist()
        vals = tuple(_finite(v if not isinstance(v, Tensor) else v.item(), "values[i]") for v in values)
        if not vals:
            raise ValueError("values must hold at least one measurement, got none")
        object.__setattr__(self, "values", vals)

    @property
    def n(self) -> int:
        """Number of seeds."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return math.fsum(self.values) / self.n

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (``n - 1`` in the denominator; 0 for one seed)."""
        if self.n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def sem(self) -> float:
        """Standard error of the mean, ``std / sqrt(n)``."""
        return self.std / math.sqrt(self.n)

    def scaled(self, factor: float) -> Seeds:
        """The same measurement in other units, e.g. ``acc.scaled(100)`` for percent."""
        return Seeds(v * factor for v in self.values)

    def __format__(self, spec: str) -> str:
        if not spec:
            return f"{_num(self.mean)} ± {_num(self.std)}"
        return f"{format(self.mean, spec)} ± {format(self.std, spec)}"

    def __str__(self) -> str:
        return format(self, "")


def over_seeds(
    measure: Callable[[int], float | Mapping[str, float]], seeds: Sequence[int]
) -> Seeds | dict[str, Seeds]:
    """Run ``measure(seed)`` for each seed and collect the results.

    When several seeds can be trained as one batched model, do that instead and build
    [`Seeds`][kexue.experiments.claims.Seeds] from the per-seed values: three seeds then cost
    about one training run.

    Args:
        measure: A function of the seed returning a number, or a mapping of named numbers.
        seeds: The seeds, e.g. ``(0, 1, 2)``.

    Returns:
        A ``Seeds`` for a number, or a dict of ``Seeds`` (same keys) for a mapping.

    Raises:
        ValueError: If ``seeds`` is empty or the mappings have different keys.
    """
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a sequence of seeds, got {type(seeds).__name__}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed, got none")
    results = [measure(s) for s in seeds]
    if isinstance(results[0], Mapping):
        keys = list(results[0])
        if any(not isinstance(r, Mapping) or list(r) != keys for r in results):
            raise ValueError(f"measure must return the same keys for every seed; first seed gave {keys}")
        return {k: Seeds(r[k] for r in results) for k in keys}
    return Seeds(results)


# ----------------------------------------------------------------------------- outcomes and rules


@dataclass(frozen=True)
class Outcome:
    """What a rule concluded from the numbers.

    Attributes:
        verdict: One of [`VERDICTS`][kexue.experiments.claims.VERDICTS].
        reason: The rule's conclusion in words, naming the numbers it used.
        evidence: The numbers it used, by name.
        seeds: How many seeds the numbers rest on; 0 for deterministic computations.
        rules: The descriptions of the rules that decided, printed once under the table.
    """

    verdict: str
    reason: str
    evidence: Mapping[str, float] = field(default_factory=dict)
    seeds: int = 0
    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError("reason must be a non-empty string")
        for k, v in self.evidence.items():
            _finite(v, f"evidence[{k!r}]")


Number = float | int | Seeds


def _spread(x: Number, name: str) -> tuple[float, float, int]:
    """(mean, standard error, seeds) of a number or of ``Seeds``; a plain number has no error."""
    if isinstance(x, Seeds):
        if x.n < MIN_SEEDS:
            raise ValueError(
                f"{name} rests on {x.n} seed(s); a verdict from training needs at least {MIN_SEEDS}"
            )
        return x.mean, x.sem, x.n
    return _finite(x, name), 0.0, 0


def _mean_sd(mean: float, sd: float, digits: int) -> str:
    """``mean ± sd`` with the sd at the mean's decimals (or one significant digit if that shows 0)."""
    text = _num(mean, digits)
    decimals = len(text.split(".", 1)[1]) if "." in text and "e" not in text else None
    sd_text = f"{sd:.{decimals}f}" if decimals is not None else _num(sd, 2)
    if sd > 0 and float(sd_text) == 0:
        sd_text = _num(sd, 1)
    return f"{text} ± {sd_text}"


def _describe(x: Number, name: str, digits: int) -> str:
    if isinstance(x, Seeds):
        return f"{name} {_mean_sd(x.mean, x.std, digits)}"
    return f"{name} {_num(float(x), digits)}"


def _evidence(x: Number, name: str) -> dict[str, float]:
    if isinstance(x, Seeds):
        ev = {f"{name} (mean)": x.mean, f"{name} (sd)": x.std}
        ev.update({f"{name} (seed {i})": v for i, v in enumerate(x.values)})
        return ev
    return {name: float(x)}


def _seeds_note(n: int) -> str:
    return f" (mean ± sd over {n} seeds)" if n else ""


def exact(error: float, tol: float, *, name: str = "error") -> Outcome:
    """An identity checked numerically: reproduced when the error is at most the tolerance.

    Args:
        error: The measured discrepancy (non-negative), e.g. a max absolute difference in float64.
        tol: The tolerance, e.g. ``1e-12``.
        name: What ``error`` is, for the reason.

    Returns:
        ``reproduced`` if ``error <= tol``, else ``not reproduced``.
    """
    error, tol = _finite(error, "error"), _finite(tol, "tol")
    if error < 0 or tol < 0:
        raise ValueError(f"error and tol must be >= 0, got {error!r} and {tol!r}")
    ok = error <= tol
    return Outcome(
        "reproduced" if ok else "not reproduced",
        f"{name} {error:.1e} {'≤' if ok else '>'} tolerance {tol:.0e}",
        {name: error, "tolerance": tol},
        0,
        ("exact: an identity holds when the computed discrepancy is within the stated tolerance.",),
    )


def _worst_bound(value: Number, bound: float, *, name: str, digits: int, upper: bool) -> Outcome:
    """A bound claimed for every trained network: the worst seed decides."""
    if not isinstance(value, Seeds):
        raise TypeError(f"worst=True compares every seed with the bound: value must be Seeds, got {type(value).__name__}")
    _spread(value, name)  # at least three seeds
    bound = _finite(bound, "bound")
    worst = max(value.values) if upper else min(value.values)
    ok = worst <= bound if upper else worst >= bound
    sign = ("≤" if ok else ">") if upper else ("≥" if ok else "<")
    reason = (f"{name}, worst of {value.n} seeds {_num(worst, digits)} {sign} {_num(bound, digits)} "
              f"(seeds: {' / '.join(_num(v, digits) for v in value.values)})")
    rule = (f"{'at most' if upper else 'at least'}, every seed: a bound claimed for every network holds when "
            "the worst seed meets it; the mean and its noise band do not enter.")
    return Outcome("reproduced" if ok else "not reproduced", reason,
                   {**_evidence(value, name), f"{name} (worst seed)": worst, "bound": bound}, value.n, (rule,))


def _bound(value: Number, bound: float, *, name: str, z: float | None, digits: int, upper: bool,
           worst: bool = False) -> Outcome:
    check_bool(worst, "worst")
    if worst:
        return _worst_bound(value, bound, name=name, digits=digits, upper=upper)
    mean, se, n = _spread(value, name)
    bound, z = _finite(bound, "bound"), _check_z(z)
    k, width = _width(z, n - 1)
    lo, hi = mean - k * se, mean + k * se
    sign = "≤" if upper else "≥"
    if n == 0:
        ok = mean <= bound if upper else mean >= bound
        verdict = "reproduced" if ok else "not reproduced"
        reason = f"{name} {_num(mean, digits)} {sign if ok else ('>' if upper else '<')} {_num(bound, digits)}"
    else:
        if (hi <= bound) if upper else (lo >= bound):
            verdict = "reproduced"
        elif (lo > bound) if upper else (hi < bound):
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        interval = f"mean ± {width} = [{_num(lo, digits)}, {_num(hi, digits)}]"
        where = {"reproduced": "entirely", "not reproduced": "entirely not", "inconclusive": "not entirely"}[verdict]
        reason = (
            f"{_describe(value, name, digits)}{_seeds_note(n)}; {interval} is {where} {sign} {_num(bound, digits)}"
        )
    tag, band = _band_words(z)
    rule = (
        f"{'at most' if upper else 'at least'} ({tag}): a measured value meets a bound when it does; "
        f"over seeds, when mean ± {band} lies on the right side of the bound, "
        "not reproduced when it lies entirely on the wrong side, inconclusive otherwise."
    )
    return Outcome(verdict, reason, {**_evidence(value, name), "bound": bound}, n, (rule,))


def at_least(
    value: Number, bound: float, *, name: str, z: float | None = None, digits: int = 3, worst: bool = False
) -> Outcome:
    """The claim "``value`` is at least ``bound``".

    A plain number is compared directly. For [`Seeds`][kexue.experiments.claims.Seeds] the
    interval mean ± ``z`` standard errors decides: entirely above the bound is ``reproduced``,
    entirely below is ``not reproduced``, straddling it is ``inconclusive``. With ``worst=True``
    the claim is a guarantee for every trained network (e.g. "spectral normalisation makes the
    network 1-Lipschitz"): the lowest seed is compared with the bound, and the row still records
    how many seeds it rests on.

    Args:
        value: The measurement (a number, or ``Seeds`` with at least three values).
        bound: The bound the claim states.
        name: What ``value`` is, for the reason and the evidence.
        z: Width of the interval in standard errors.
        digits: Significant digits in the reason.
        worst: Compare the worst seed instead of the mean's interval (``value`` must be ``Seeds``).
    """
    return _bound(value, bound, name=name, z=z, digits=digits, upper=False, worst=worst)


def at_most(
    value: Number, bound: float, *, name: str, z: float | None = None, digits: int = 3, worst: bool = False
) -> Outcome:
    """The claim "``value`` is at most ``bound``" (the mirror of [`at_least`][kexue.experiments.claims.at_least];
    with ``worst=True`` the highest seed decides)."""
    return _bound(value, bound, name=name, z=z, digits=digits, upper=True, worst=worst)


def close_to(
    value: Number, target: float, tol: float, *, name: str, z: float | None = None, digits: int = 3
) -> Outcome:
    """The claim "``value`` is ``target`` within ``tol``", e.g. the article's number.

    A plain number is within or not. For ``Seeds``: the 95% interval (mean ± Student's t s.e., or
    ± ``z`` s.e. when ``z`` is given) inside
    ``[target - tol, target + tol]`` is ``reproduced``, disjoint from it is ``not reproduced``,
    overlapping its edge is ``inconclusive``.
    """
    mean, se, n = _spread(value, name)
    target, tol, z = _finite(target, "target"), _finite(tol, "tol"), _check_z(z)
    k, width = _width(z, n - 1)
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    lo, hi = mean - k * se, mean + k * se
    if lo >= target - tol and hi <= target + tol:
        verdict = "reproduced"
    elif hi < target - tol or lo > target + tol:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    band = f"[{_num(target - tol, digits)}, {_num(target + tol, digits)}]"
    if n == 0:
        reason = f"{name} {_num(mean, digits)} is {'inside' if verdict == 'reproduced' else 'outside'} {band}"
    else:
        where = {"reproduced": "inside", "not reproduced": "outside", "inconclusive": "across the edge of"}[verdict]
        reason = (
            f"{_describe(value, name, digits)}{_seeds_note(n)}; mean ± {width} "
            f"[{_num(lo, digits)}, {_num(hi, digits)}] lies {where} {band}"
        )
    tag, band = _band_words(z)
    rule = (
        f"close to ({tag}): a value reproduces a number when it lies within the stated tolerance of it; "
        f"over seeds, when all of mean ± {band} does; not reproduced when none of it does."
    )
    return Outcome(verdict, reason, {**_evidence(value, name), "target": target, "tolerance": tol}, n, (rule,))


def beats(
    a: Number,
    b: Number,
    *,
    names: tuple[str, str] = ("A", "B"),
    higher: bool = True,
    margin: float = 0.0,
    z: float | None = None,
    paired: bool = False,
    digits: int = 3,
) -> Outcome:
    r"""The claim "``a`` beats ``b``" (by more than ``margin``), decided against the seed noise.

    With $d = \pm(\bar a - \bar b)$ the difference in the claimed direction and $s$ its standard
    error ($\sqrt{s_a^2 + s_b^2}$, or the standard error of the per-seed differences when
    ``paired``): $d - \text{margin} > t s$ is ``reproduced``, $d - \text{margin} < -t s$ is
    ``not reproduced``, anything in between is ``inconclusive``. $t$ is the two-sided 95% point
    of Student's t with $n - 1$ degrees of freedom when paired and Welch's degrees of freedom
    otherwise (4.30 for three seeds a side), so that "outside the noise" means outside a 95%
    confidence interval even with three seeds; ``z`` replaces it by a fixed multiple. Two plain
    numbers have $s = 0$.

    Args:
        a: The side the claim says is better (number or ``Seeds``).
        b: The other side.
        names: Names of ``a`` and ``b`` for the reason and the evidence.
        higher: True when larger is better (accuracy), False when smaller is (loss, bits/dim).
        margin: How much better the claim says ``a`` is (0 for "better"); a negative margin
            states "``a`` is no worse than ``b`` by more than ``-margin``" (non-inferiority).
        z: A fixed number of standard errors a difference must exceed to count (default: the
            Student's t point above).
        paired: Seeds of ``a`` and ``b`` share data and initialisation: use per-seed differences.
        digits: Significant digits in the reason.
    """
    name_a, name_b = names
    mean_a, se_a, n_a = _spread(a, name_a)
    mean_b, se_b, n_b = _spread(b, name_b)
    margin, z = _finite(margin, "margin"), _check_z(z)
    sign = 1.0 if higher else -1.0
    d = sign * (mean_a - mean_b)
    if paired:
        if not (isinstance(a, Seeds) and isinstance(b, Seeds) and a.n == b.n):
            raise ValueError("paired=True needs Seeds with the same number of values on both sides")
        se = Seeds(x - y for x, y in zip(a.values, b.values, strict=True)).sem
        df = float(a.n - 1)
    else:
        se = math.hypot(se_a, se_b)
        df = _welch_df(se_a, n_a, se_b, n_b)
    n = max(n_a, n_b)
    k, width = _width(z, df) if n else (0.0, "")
    if n == 0:
        verdict = "reproduced" if d > margin else "not reproduced"
    elif d - margin > k * se:
        verdict = "reproduced"
    elif d - margin < -k * se:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    better = "higher" if higher else "lower"
    head = f"{_describe(a, name_a, digits)} vs {_describe(b, name_b, digits)}{_seeds_note(n)}"
    diff = f"{name_a} is {_num(abs(d), digits)} {better if d >= 0 else ('lower' if higher else 'higher')}"
    if margin > 0:
        over = f" (claimed margin {_num(margin, digits)})"
    elif margin < 0:
        over = f" (allowed shortfall {_num(-margin, digits)})"
    else:
        over = ""
    if n == 0:
        reason = f"{head}: {diff}{over}"
    else:
        kind = "paired " if paired else ""
        band = width.replace("s.e.", kind + "s.e.", 1)
        reason = f"{head}: {diff}{over}; noise band {band} of the difference = {_num(k * se, digits)}"
        reason += {
            "reproduced": " — outside the noise",
            "not reproduced": " — outside the noise, against the claim",
            "inconclusive": " — inside the noise",
        }[verdict]
    tag, band = _band_words(z)
    rule = (
        f"beats ({tag}): A beats B when the mean difference over seeds, in the claimed direction and "
        f"beyond any claimed margin, exceeds {band} of the difference; a difference as large the other "
        "way is not reproduced; anything in between is inconclusive. Numbers without seeds are compared "
        "directly."
    )
    evidence = {**_evidence(a, name_a), **_evidence(b, name_b), "difference": d, "standard error": se}
    if n:
        evidence["noise band"] = k * se
    if margin:
        evidence["margin"] = margin
    return Outcome(verdict, reason, evidence, n, (rule,))


def all_of(*outcomes: Outcome, join: str = "; ") -> Outcome:
    """Combine the parts of a compound claim.

    ``reproduced`` when every part is; ``partly`` when some part is reproduced (or partly) and
    some part is not reproduced; ``not reproduced`` when no part is reproduced and some part goes
    against the claim; otherwise ``inconclusive``: a compound whose undecided parts are inside
    the noise is not "partly" reproduced, since those parts may still go either way.
    ``not tested`` parts are not allowed (split the claim instead).
    """
    if not outcomes:
        raise ValueError("all_of needs at least one outcome")
    for o in outcomes:
        if not isinstance(o, Outcome):
            raise TypeError(f"all_of takes Outcomes, got {type(o).__name__}")
        if o.verdict == "not tested":
            raise ValueError("a part of a compound claim is 'not tested': list it as a claim of its own")
    words = {o.verdict for o in outcomes}
    if words == {"reproduced"}:
        verdict = "reproduced"
    elif "partly" in words or {"reproduced", "not reproduced"} <= words:
        verdict = "partly"  # some of the claim holds and some of it does not
    elif "not reproduced" in words and "reproduced" not in words and "inconclusive" not in words:
        verdict = "not reproduced"
    elif words == {"not reproduced", "inconclusive"}:
        verdict = "not reproduced"  # nothing holds; what is measured goes against it
    else:
        verdict = "inconclusive"  # the parts that would decide it are inside the noise
    evidence: dict[str, float] = {}
    for i, o in enumerate(outcomes):
        for k, v in o.evidence.items():
            evidence[k if k not in evidence else f"{k} [{i}]"] = v
    # "(verdict)", not "[verdict]": Markdown would read a bracketed word after "]" as a link reference.
    reason = join.join(f"{o.reason} ({o.verdict})" for o in outcomes) if len(outcomes) > 1 else outcomes[0].reason
    rule = (
        "all of: a compound claim is reproduced when every part is, partly when some parts are reproduced "
        "and some go against it, not reproduced when none is reproduced and some part goes against it, "
        "inconclusive otherwise (parts inside the noise leave it undecided)."
    )
    rules = tuple(dict.fromkeys((rule, *(r for o in outcomes for r in o.rules))))
    return Outcome(verdict, reason, evidence, max(o.seeds for o in outcomes), rules)


def ranks(
    values: Mapping[str, Number],
    order: Sequence[str],
    *,
    higher: bool = True,
    z: float | None = None,
    paired: bool = False,
    digits: int = 3,
) -> Outcome:
    """The claim "``order[0]`` beats ``order[1]`` beats …": each neighbour pair by
    [`beats`][kexue.experiments.claims.beats], combined with [`all_of`][kexue.experiments.claims.all_of]."""
    if len(order) < 2:
        raise ValueError(f"order must name at least two entries, got {list(order)}")
    missing = [k for k in order if k not in values]
    if missing:
        raise ValueError(f"order names {missing}, which are not among values {list(values)}")
    parts = [
        beats(values[x], values[y], names=(x, y), higher=higher, z=z, paired=paired, digits=digits)
        for x, y in itertools.pairwise(order)
    ]
    return all_of(*parts)


def not_tested(why: str) -> Outcome:
    """A claim we did not measure, with the reason (say what would be needed)."""
    if not isinstance(why, str) or not why.strip():
        raise ValueError("why must say why the claim was not tested")
    return Outcome("not tested", why.strip(), {}, 0, ())


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Claim:
    """One row of a claims table.

    Attributes:
        claim: What the article claims, in our words.
        article: What the article reports (a number, or e.g. "argued, no number").
        ours: What we measured, in short.
        outcome: The rule's [`Outcome`][kexue.experiments.claims.Outcome].
        note: Context added to the reason: a string that holds whatever the outcome, or a
            mapping from verdict to string, of which only the entry for the actual verdict is
            shown (so that an explanation can follow the outcome).
    """

    claim: str
    article: str
    ours: str
    outcome: Outcome
    note: str | Mapping[str, str] = ""

    def __post_init__(self) -> None:
        for name in ("claim", "article", "ours"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must be a non-empty string (claim: {self.claim!r})")
        if not isinstance(self.outcome, Outcome):
            raise TypeError(f"outcome must be an Outcome from a rule, got {type(self.outcome).__name__}")
        if isinstance(self.note, Mapping):
            unknown = set(self.note) - set(VERDICTS)
            if unknown:
                raise ValueError(f"note keys must be verdicts {VERDICTS}, got {sorted(unknown)}")

    @property
    def verdict(self) -> str:
        """The outcome's verdict."""
        return self.outcome.verdict

    @property
    def reason(self) -> str:
        """The rule's reason, followed by the note that applies."""
        note = self.note.get(self.verdict, "") if isinstance(self.note, Mapping) else self.note
        return f"{self.outcome.reason}. {note.strip()}" if note and note.strip() else self.outcome.reason

    @property
    def seeds(self) -> int:
        """Seeds behind the numbers (0: deterministic)."""
        return self.outcome.seeds

    @property
    def evidence(self) -> Mapping[str, float]:
        """The numbers the verdict rests on."""
        return self.outcome.evidence

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return {
            "claim": self.claim,
            "article": self.article,
            "ours": self.ours,
            "verdict": self.verdict,
            "reason": self.reason,
            "seeds": self.seeds,
            "evidence": dict(self.evidence),
        }


_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _check_rows(claims: Sequence[Claim], page: str) -> list[Claim]:
    if not isinstance(page, str) or not _SLUG.fullmatch(page):
        raise ValueError(f"page must be the page's slug (lower-case words joined by '-'), got {page!r}")
    rows = list(claims)
    if not rows:
        raise ValueError("claims must hold at least one Claim")
    for i, row in enumerate(rows):
        if not isinstance(row, Claim):
            raise TypeError(f"claims[{i}] must be a Claim, got {type(row).__name__}")
    return rows


def claims_json(claims: Sequence[Claim], *, page: str) -> str:
    """The rows as ``{"page": …, "claims": [...]}`` JSON (the ``kx-claims`` payload)."""
    rows = _check_rows(claims, page)
    payload = {"page": page, "claims": [r.as_dict() for r in rows]}
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, sort_keys=False)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def claims_table(claims: Sequence[Claim], *, page: str) -> str:
    """Markdown for a page's *claims vs reproduction* table, its rules, and its JSON copy.

    Print the result from a fence whose output is Markdown (no ``result`` option). The table's
    first column is the verdict; below the table each rule used is stated once; the last block is
    ``<script type="application/json" class="kx-claims">`` with the rows as data.

    Args:
        claims: The rows, in the order to show.
        page: The page's slug (its file name without ``.md``).

    Returns:
        The Markdown text.

    Raises:
        ValueError: If ``page`` is not a slug or there are no rows.
        TypeError: If a row is not a [`Claim`][kexue.experiments.claims.Claim].
    """
    rows = _check_rows(claims, page)
    lines = [
        "| Verdict | Claim | Article | Ours | Why |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f'<span class="kx-verdict" data-verdict="{r.verdict}">{r.verdict}</span>'
        lines.append(
            f"| {verdict} | {_cell(r.claim)} | {_cell(r.article)} | {_cell(r.ours)} | {_cell(r.reason)} |"
        )
    rules = list(dict.fromkeys(rule for r in rows for rule in r.outcome.rules))
    lines.append("")
    if rules:
        lines.append('<div class="kx-rules" markdown>')
        lines.append("")
        lines.append("**How the verdicts were decided.** " + " ".join(html.escape(x, quote=False) for x in rules))
        lines.append("")
        lines.append("</div>")
        lines.append("")
    data = claims_json(rows, page=page).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    lines.append(f'<script type="application/json" class="kx-claims">{data}</script>')
    return "\n".join(lines) + "\n"
