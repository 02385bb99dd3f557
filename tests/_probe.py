"""Bad-input probes for every public callable: one framework, one spec list per module.

A module's robustness test (``tests/test_robustness_<module>.py``) lists a :class:`Case` for every
name in the module's ``__all__`` that can be called: a factory for one *valid* call, and the kind
of each argument worth breaking (:class:`Arg`). :func:`probe_tests` turns the list into pytest
tests that, with hypothesis strategies for each kind of bad input, replace one argument of the
valid call at a time and require

* a ``TypeError`` or ``ValueError``,
* whose message names the argument (or the alias the case gives for it),

and :func:`inventory_test` fails when a public name has neither a case nor a stated reason to be
exempt (constants, registries, dataclasses of results). The classes of bad input are those of
the robustness review: ``None``, Python lists for tensors, wrong dtypes (integer, bool, complex
for floating tensors; floating for indices), wrong rank, empty tensors, NaN/inf entries for
functions that reduce data to a statistic, bools/floats/strings for ints, out-of-range and
non-finite scalars, unknown names, ints passed as generators.

``python -m tests._probe [module ...]`` prints, per module, the share of bad inputs that got a
clear error (the number the closing notes report), without failing.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

__all__ = ["Arg", "Case", "Mutation", "inventory_test", "mutations", "probe_tests", "public_names"]


# ----------------------------------------------------------------------------- argument kinds


@dataclass(frozen=True)
class Arg:
    """What one argument of a valid call is, so the probe knows how to break it.

    Attributes:
        kind: ``"tensor"``, ``"index_tensor"`` (integer ids/labels), ``"mask"`` (bool),
            ``"int"``, ``"real"``, ``"flag"`` (bool), ``"choice"``, ``"generator"``,
            ``"module"``, ``"int_seq"`` (sequence of ints), ``"dtype"``.
        ndim: For tensors, the allowed ranks (a wrong rank must be rejected); empty: not probed.
        finite: For floating tensors: NaN/inf entries must be rejected (functions that reduce data
            to a statistic, a test, a loss or a decision). Elementwise layers leave it False.
        nonempty: For tensors: an empty batch must be rejected (False: it has a defined answer).
        minimum: For ints: the smallest valid value.
        low, high: For reals: the valid range (inclusive unless ``open_low``); None: unbounded.
        open_low: For reals: ``low`` itself is invalid (a positive rate).
        allow_inf: For reals: ``inf`` is valid.
        choices: For choices: the valid names (anything else must be rejected).
        name: The word the error message must contain, if not the parameter's own name.
        optional: ``None`` is a valid value (it selects a default), so it is not probed.
    """

    kind: str
    ndim: tuple[int, ...] = ()
    finite: bool = False
    nonempty: bool = True
    minimum: int = 0
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    allow_inf: bool = False
    choices: tuple[str, ...] = ()
    name: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Mutation:
    """One bad value for one argument: a label for the report and a function of the valid value."""

    label: str
    make: Callable[[Any], Any]


def _set_first(x: torch.Tensor, value: float) -> torch.Tensor:
    y = x.detach().clone()
    y.view(-1)[0] = value
    return y


def mutations(arg: Arg, valid: Any) -> list[Mutation]:
    """Every structural bad value of ``arg`` (deterministic; scalars get hypothesis on top)."""
    out = [] if arg.optional else [Mutation("None", lambda v: None)]
    k = arg.kind
    if k in {"tensor", "index_tensor", "mask"}:
        out.append(Mutation("a Python list", lambda v: v.tolist()))
        if k == "tensor":
            out += [
                Mutation("an int64 tensor", lambda v: v.detach().round().long()),
                Mutation("a bool tensor", lambda v: v.detach() > 0),
                Mutation("a complex tensor", lambda v: torch.complex(v.detach().float(), torch.ones_like(v.detach().float()))),
            ]
        elif k == "index_tensor":
            out.append(Mutation("a float tensor", lambda v: v.double()))
        else:
            out.append(Mutation("a float tensor", lambda v: v.double()))
        if arg.ndim:
            out.append(Mutation("one dimension too many", lambda v: v.unsqueeze(0)))
            if min(arg.ndim) > 0:
                out.append(Mutation("one dimension too few", lambda v: v.reshape(-1)[0] if v.dim() == 1 else v[0]))
        if arg.nonempty:
            out.append(Mutation("an empty batch", lambda v: v[:0]))
        if k == "tensor" and arg.finite:
            out += [
                Mutation("a NaN entry", lambda v: _set_first(v, float("nan"))),
                Mutation("an inf entry", lambda v: _set_first(v, float("inf"))),
            ]
        if k == "index_tensor":
            out.append(Mutation("a negative id", lambda v: _set_first(v, -1)))
            out.append(Mutation("an id far out of range", lambda v: _set_first(v, 10**6)))
    elif k == "int":
        out += [
            Mutation("True", lambda v: True),
            Mutation("a float", lambda v: v + 0.5),
            Mutation("a string", lambda v: str(v)),
            Mutation("below the minimum", lambda v, m=arg.minimum: m - 1),
        ]
    elif k == "real":
        out += [Mutation("a string", lambda v: "0.5"), Mutation("NaN", lambda v: float("nan")), Mutation("True", lambda v: True)]
        if not arg.allow_inf:
            out.append(Mutation("inf", lambda v: float("inf")))
        if arg.low is not None:
            below = arg.low if arg.open_low else arg.low - 1.0
            out.append(Mutation("below the range", lambda v, b=below: b if b == arg.low else b - abs(b) - 1.0))
        if arg.high is not None:
            out.append(Mutation("above the range", lambda v, h=arg.high: h + abs(h) + 1.0))
    elif k == "flag":
        out += [Mutation("a string", lambda v: "yes"), Mutation("an int", lambda v: 2)]
    elif k == "choice":
        out += [Mutation("an unknown name", lambda v: "no-such-name"), Mutation("an int", lambda v: 3)]
    elif k == "generator":
        out.append(Mutation("an int seed", lambda v: 0))
    elif k == "module":
        out.append(Mutation("a function", lambda v: (lambda x: x)))
    elif k == "int_seq":
        out += [
            Mutation("an empty sequence", lambda v: type(v)()),
            Mutation("a 0 entry", lambda v: type(v)([0, *list(v)[1:]])),
            Mutation("a float entry", lambda v: type(v)([1.5, *list(v)[1:]])),
        ]
    elif k == "dtype":
        out += [Mutation("an integer dtype", lambda v: torch.int64), Mutation("a string", lambda v: "float32")]
    else:
        raise ValueError(f"unknown argument kind {k!r}")
    return out


def _scalar_strategy(arg: Arg) -> st.SearchStrategy | None:
    """Random bad scalars for ``int`` and ``real`` arguments (hypothesis, on top of the fixed ones)."""
    if arg.kind == "int":
        return st.one_of(st.integers(max_value=arg.minimum - 1), st.booleans(), st.text(max_size=3),
                         st.floats(allow_nan=True).filter(lambda f: not float(f).is_integer()))
    if arg.kind == "real":
        bad = [st.text(min_size=1, max_size=3), st.just(float("nan"))]
        if arg.low is not None:
            bad.append(st.floats(max_value=arg.low, allow_nan=False, allow_infinity=False).filter(
                lambda f: f < arg.low or (arg.open_low and f == arg.low)))
        if arg.high is not None:
            bad.append(st.floats(min_value=arg.high, allow_nan=False, allow_infinity=False).filter(lambda f: f > arg.high))
        return st.one_of(*bad)
    return None


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One valid call of a public callable and the arguments to break.

    Attributes:
        name: The public name (``"squash"``, ``"VectorQuantizer.forward"``), as listed in ``__all__``.
        call: Builds a fresh valid call: returns ``(fn, kwargs)``; every probed argument is passed
            by keyword so it can be replaced. For a module's ``forward``, ``fn`` is the built module.
        args: Probed arguments by name.
        skip: Mutation labels not to apply, by argument name, each with the reason (a defined
            answer for that input, documented in the function's docstring).
    """

    name: str
    call: Callable[[], tuple[Callable, dict[str, Any]]]
    args: dict[str, Arg]
    skip: dict[str, dict[str, str]] = field(default_factory=dict)

    def bad_calls(self) -> list[tuple[str, str, Mutation]]:
        _, kwargs = self.call()
        out = []
        for arg_name, arg in self.args.items():
            if arg_name not in kwargs:
                raise KeyError(f"case {self.name}: probed argument {arg_name!r} is not in the valid call")
            for m in mutations(arg, kwargs[arg_name]):
                if m.label not in self.skip.get(arg_name, {}):
                    out.append((arg_name, m.label, m))
        return out


def _outcome(case: Case, arg_name: str, value_of: Callable[[Any], Any]) -> tuple[bool, str]:
    """(clear, description): whether the bad call raised a clear error naming the argument."""
    fn, kwargs = case.call()
    kwargs = dict(kwargs)
    kwargs[arg_name] = value_of(kwargs[arg_name])
    word = case.args[arg_name].name or arg_name
    try:
        result = fn(**kwargs)
    except (TypeError, ValueError) as error:
        if word in str(error):
            return True, f"{type(error).__name__}: {error}"
        return False, f"{type(error).__name__} not naming {word!r}: {error}"
    except Exception as error:  # noqa: BLE001 - any other exception is an unclear error
        return False, f"unclear {type(error).__name__}: {error}"
    return False, f"accepted silently, returned {type(result).__name__}"


def probe_tests(cases: Sequence[Case]):
    """Parametrised tests for ``cases``: each structural mutation once, random scalars by hypothesis.

    Use as ``test_bad_input, test_bad_scalars = probe_tests(CASES)`` in a test module.
    """
    fixed = [(c, a, label, m) for c in cases for a, label, m in c.bad_calls()]

    @pytest.mark.parametrize(("case", "arg_name", "label", "mutation"), fixed,
                             ids=[f"{c.name}-{a}-{label}" for c, a, label, _ in fixed])
    def test_bad_input(case: Case, arg_name: str, label: str, mutation: Mutation) -> None:
        clear, what = _outcome(case, arg_name, mutation.make)
        assert clear, f"{case.name}({arg_name}={label}): {what}"

    scalar = [(c, a) for c in cases for a, arg in c.args.items() if _scalar_strategy(arg) is not None]

    @pytest.mark.parametrize(("case", "arg_name"), scalar, ids=[f"{c.name}-{a}" for c, a in scalar])
    def test_bad_scalars(case: Case, arg_name: str) -> None:
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(value=_scalar_strategy(case.args[arg_name]))
        def run(value: Any) -> None:
            clear, what = _outcome(case, arg_name, lambda _: value)
            assert clear, f"{case.name}({arg_name}={value!r}): {what}"

        run()

    return test_bad_input, test_bad_scalars


def public_names(module: str) -> list[str]:
    """The names a module exports."""
    return list(importlib.import_module(module).__all__)


def inventory_test(module: str, cases: Iterable[Case], exempt: dict[str, str]):
    """A test that every public name of ``module`` has a case or a stated reason to be exempt."""
    covered = {c.name.split(".")[0] for c in cases}

    def test_every_public_name_is_probed() -> None:
        missing = [n for n in public_names(module) if n not in covered and n not in exempt]
        stale = [n for n in [*covered, *exempt] if n not in public_names(module)]
        assert not missing, f"{module}: no bad-input case and no exemption for {missing}"
        assert not stale, f"{module}: cases or exemptions for names not in __all__: {stale}"
        assert all(reason.strip() for reason in exempt.values())

    return test_every_public_name_is_probed


# ----------------------------------------------------------------------------- report


def report(modules: Iterable[str]) -> None:
    """Print the clear-error rate per module (for the closing notes); never fails."""
    for test_module in modules:
        cases = importlib.import_module(test_module).CASES
        total = clear = 0
        unclear: list[str] = []
        for case in cases:
            for arg_name, label, m in case.bad_calls():
                ok, what = _outcome(case, arg_name, m.make)
                total += 1
                clear += ok
                if not ok:
                    unclear.append(f"  {case.name}({arg_name}={label}): {what[:140]}")
        rate = clear / total if total else math.nan
        print(f"{test_module}: {clear}/{total} bad inputs get a clear error ({rate:.0%})")
        print("\n".join(unclear[:40]))


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(
        f"tests.{m.name}" for m in pkgutil.iter_modules(["tests"]) if m.name.startswith("test_robustness_")
    )
    report(names)
