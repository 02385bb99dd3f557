"""Bad input to kexue.rope and kexue.experiments.rope (issue 22), plus the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests at the end pin the robustness review's findings for these modules.
"""

from __future__ import annotations

import math

import pytest
import torch

from kexue import rope
from kexue.experiments import rope as X
from tests._probe import Arg, Case, inventory_test, probe_tests

D, SEQ = 8, 6


def _theta(d: int = D) -> torch.Tensor:
    return rope.frequencies(d, 100.0)


def _x() -> torch.Tensor:
    return torch.randn(2, SEQ, D, generator=torch.Generator().manual_seed(0))


def _tables():
    return rope.rope_tables(torch.arange(SEQ), _theta(), torch.float32)


def _model() -> X.TinyRoPELM:
    return X.TinyRoPELM(16, width=16, heads=2, layers=1, seeds=(0, 1))  # head_dim 8: 4 frequencies; 2 members


def _tokens() -> torch.Tensor:
    return torch.randint(16, (2, 9), generator=torch.Generator().manual_seed(0))


SCALING = {"d": Arg("int", minimum=2), "base": Arg("real", low=1.0, open_low=True), "k": Arg("real", low=1.0)}
POSITIONS_SKIP = {
    "a float tensor": "positions may be fractional (documented: integer or float)",
    "an id far out of range": "any non-negative position is valid",
}
ANY_RANK = {"one dimension too many": "a leading batch dimension is valid (documented: (..., seq, d))",
            "one dimension too few": "(seq, d) without batch dimensions is valid"}

CASES = [
    *(Case(f"{name}_inv_freq", lambda name=name: (getattr(rope, f"{name}_inv_freq"), {"d": D, "base": 100.0, "k": 2.0}),
           {**SCALING, "d": Arg("int", minimum=4 if name == "ntk" else 2)})
      for name in ("default", "pi", "ntk_old", "ntk", "fixed")),
    Case("mixed_inv_freq", lambda: (rope.mixed_inv_freq, {"d": D, "base": 100.0, "k": 2.0, "b": 0.625}),
         {**SCALING, "b": Arg("real", low=0.0, high=1.0)}),
    Case("dynamic_inv_freq", lambda: (rope.dynamic_inv_freq, {"d": D, "base": 100.0, "k": 2.0, "seq_len": 40,
                                                              "train_len": 20}),
         {**SCALING, "d": Arg("int", minimum=4), "seq_len": Arg("int", minimum=1), "train_len": Arg("int", minimum=1)}),
    Case("frequencies", lambda: (rope.frequencies, {"d": D, "base": 100.0, "method": "ntk", "k": 2.0}),
         {**SCALING, "d": Arg("int", minimum=4), "method": Arg("choice")}),
    Case("rope_angles", lambda: (rope.rope_angles, {"positions": torch.arange(SEQ), "inv_freq": _theta()}),
         {"positions": Arg("index_tensor", nonempty=False), "inv_freq": Arg("tensor", ndim=(1,))},
         skip={"positions": POSITIONS_SKIP}),
    *(Case(name, lambda name=name: (getattr(rope, name), {"x": _x(), "positions": torch.arange(SEQ),
                                                          "inv_freq": _theta(), "layout": "half"}),
           {"x": Arg("tensor", ndim=(3,), nonempty=False), "positions": Arg("index_tensor", nonempty=False),
            "inv_freq": Arg("tensor", ndim=(1,)), "layout": Arg("choice")},
           skip={"x": ANY_RANK, "positions": POSITIONS_SKIP})
      for name in ("apply_rope", "apply_rope_reference")),
    Case("half_permutation", lambda: (rope.half_permutation, {"d": D}), {"d": Arg("int", minimum=2)}),
    Case("logn_scale", lambda: (rope.logn_scale, {"n": torch.arange(1, 9), "train_len": 4, "clip": True}),
         {"n": Arg("index_tensor", nonempty=False), "train_len": Arg("int", minimum=2), "clip": Arg("flag")},
         skip={"n": {"a float tensor": "a count may be given as a float tensor",
                     "an id far out of range": "any count >= 1 is valid"}}),
    *(Case(name, lambda name=name: (getattr(rope, name), {"n": torch.arange(20), "beta": 10.0, "num_digits": 3}),
           {"n": Arg("index_tensor", nonempty=False), "beta": Arg("real", low=1.0, open_low=True),
            "num_digits": Arg("int", minimum=1)},
           skip={"n": {"a float tensor": "real n is documented (digits of a real number)",
                       "an id far out of range": "any non-negative number has digits"}})
      for name in ("beta_digits", "rope_phases")),
    Case("rope_tables", lambda: (rope.rope_tables, {"positions": torch.arange(SEQ), "inv_freq": _theta(),
                                                    "dtype": torch.float32}),
         {"positions": Arg("index_tensor", ndim=(1,), nonempty=False), "inv_freq": Arg("tensor", ndim=(1,)),
          "dtype": Arg("dtype")},
         skip={"positions": POSITIONS_SKIP}),
    Case("apply_rope_tables", lambda: (rope.apply_rope_tables, {"x": _x(), "cos": _tables()[0], "sin": _tables()[1],
                                                                "layout": "half", "out": torch.empty(2, SEQ, D)}),
         {"x": Arg("tensor", ndim=(3,), nonempty=False), "cos": Arg("tensor", ndim=(2,)), "sin": Arg("tensor", ndim=(2,)),
          "layout": Arg("choice"), "out": Arg("tensor", optional=True)},
         skip={"x": {**ANY_RANK, "an empty batch": "an empty batch rotates to an empty output"}}),
    # kexue.experiments.rope
    Case("base_for_longest_wavelength", lambda: (X.base_for_longest_wavelength, {"d": 16, "wavelength": 850.0}),
         {"d": Arg("int", minimum=4), "wavelength": Arg("real", low=2 * math.pi, open_low=True)}),
    Case("unseen_angle", lambda: (X.unseen_angle, {"inv_freq": _theta(), "scaled_inv_freq": _theta() / 2,
                                                   "train_len": 10, "test_len": 40}),
         {"inv_freq": Arg("tensor", ndim=(1,), finite=True), "scaled_inv_freq": Arg("tensor", ndim=(1,), finite=True),
          "train_len": Arg("int", minimum=1), "test_len": Arg("int", minimum=1)}),
    Case("local_resolution", lambda: (X.local_resolution, {"inv_freq": _theta(), "scaled_inv_freq": _theta() / 2}),
         {"inv_freq": Arg("tensor", ndim=(1,), finite=True), "scaled_inv_freq": Arg("tensor", ndim=(1,), finite=True)}),
    Case("markov_table", lambda: (X.markov_table, {"vocab": 4, "concentration": 0.1, "seed": 0}),
         {"vocab": Arg("int", minimum=2), "concentration": Arg("real", low=0.0, open_low=True),
          "seed": Arg("int", minimum=0)}),
    Case("sample_markov", lambda: (X.sample_markov, {"table": X.markov_table(4), "n": 3, "length": 5, "seed": 0}),
         {"table": Arg("tensor", ndim=(3,), finite=True), "n": Arg("int", minimum=1), "length": Arg("int", minimum=1),
          "seed": Arg("int", minimum=0)}),
    Case("TinyRoPELM", lambda: (X.TinyRoPELM, {"vocab": 16, "width": 16, "heads": 2, "layers": 1, "mlp_ratio": 2,
                                               "seeds": (0, 1)}),
         {"vocab": Arg("int", minimum=2), "width": Arg("int", minimum=1), "heads": Arg("int", minimum=1),
          "layers": Arg("int", minimum=1), "mlp_ratio": Arg("int", minimum=1), "seeds": Arg("int_seq")},
         skip={"seeds": {"a 0 entry": "0 is a seed"}}),
    Case("TinyRoPELM.forward", lambda: (_model(), {"tokens": _tokens(), "inv_freq": _theta(), "q_scale": torch.ones(9)}),
         {"tokens": Arg("index_tensor", ndim=(2, 3)), "inv_freq": Arg("tensor", ndim=(1,), finite=True),
          "q_scale": Arg("tensor", ndim=(1, 2), finite=True, optional=True)}),
    Case("train_tiny_lm", lambda: (X.train_tiny_lm, {"model": _model(), "batches": lambda step: _tokens(),
                                                     "inv_freq": _theta(), "steps": 1, "lr": 1e-2, "warmup": 1,
                                                     "weight_decay": 0.01, "clip": 1.0, "q_scale": torch.ones(8)}),
         {"model": Arg("module"), "inv_freq": Arg("tensor", ndim=(1,), finite=True), "steps": Arg("int", minimum=1),
          "lr": Arg("real", low=0.0, open_low=True), "warmup": Arg("int", minimum=1),
          "weight_decay": Arg("real", low=0.0), "clip": Arg("real", low=0.0, open_low=True),
          "q_scale": Arg("tensor", ndim=(1, 2), finite=True, optional=True)}),
    Case("next_token_accuracy", lambda: (X.next_token_accuracy, {"model": _model(), "tokens": _tokens(),
                                                                 "inv_freq": _theta(), "q_scale": None,
                                                                 "per_position": False}),
         {"model": Arg("module"), "tokens": Arg("index_tensor", ndim=(2, 3)),
          "inv_freq": Arg("tensor", ndim=(1,), finite=True), "per_position": Arg("flag")}),
]

EXEMPT = {"SCALINGS": "a registry of the probed scaling functions"}

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_rope_inventory = inventory_test("kexue.rope", [c for c in CASES if c.name.split(".")[0] in rope.__all__],
                                     {k: v for k, v in EXEMPT.items() if k in rope.__all__})
test_rope_experiments_inventory = inventory_test("kexue.experiments.rope",
                                                 [c for c in CASES if c.name.split(".")[0] in X.__all__],
                                                 {k: v for k, v in EXEMPT.items() if k in X.__all__})


# ----------------------------------------------------------------------------- the review's worst cases


def test_local_resolution_of_frequencies_that_never_rotate_is_a_clear_error():
    # review S1: local_resolution(zeros, zeros) returned NaN (0/0)
    for dtype in (torch.float64, torch.float32, torch.float16):
        with pytest.raises(ValueError, match="inv_freq does not separate neighbouring positions"):
            X.local_resolution(torch.zeros(4, dtype=dtype), _theta().to(dtype))
    # a scaled set that never rotates is a defined answer: no resolution left at all
    assert X.local_resolution(_theta(), torch.zeros(4, dtype=torch.float64)).item() == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_page_measures_reject_non_finite_frequencies(bad):
    theta = _theta()
    for fn in (lambda t: X.local_resolution(t, theta), lambda t: X.unseen_angle(t, theta, 10, 40)):
        with pytest.raises(ValueError, match="inv_freq must be finite"):
            fn(torch.tensor([1.0, bad, 0.1, 0.01], dtype=torch.float64))
    with pytest.raises(ValueError, match="inv_freq must be non-negative"):
        X.unseen_angle(-theta, theta, 10, 40)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_tiny_lm_rejects_non_finite_frequencies_and_scales(bad):
    # review S3: a NaN frequency gave finite logits (attention zeroes NaN rows) and a finite accuracy
    model, tokens = _model(), _tokens()
    theta = _theta().clone()
    theta[1] = bad
    with pytest.raises(ValueError, match="inv_freq must be finite"):
        model(tokens, theta)
    with pytest.raises(ValueError, match="inv_freq must be finite"):
        X.next_token_accuracy(model, tokens, theta)
    with pytest.raises(ValueError, match="inv_freq must be finite"):
        X.train_tiny_lm(model, lambda step: tokens, theta, steps=1)
    scale = torch.ones(8)
    scale[3] = bad
    with pytest.raises(ValueError, match="q_scale must be finite"):
        X.next_token_accuracy(model, tokens, _theta(), scale)
    with pytest.raises(ValueError, match="q_scale must be finite"):
        X.train_tiny_lm(model, lambda step: tokens, _theta(), steps=1, q_scale=scale)


def test_tiny_lm_rejects_token_ids_outside_the_vocabulary():
    # a negative id used to index the embedding from the end (silently), a large one raised IndexError
    model, tokens = _model(), _tokens()
    for bad in (-1, 16):
        t = tokens.clone()
        t[0, 3] = bad
        with pytest.raises(ValueError, match=r"tokens must be token ids in \[0, 16\)"):
            model(t, _theta())
        with pytest.raises(ValueError, match=r"batches\(step\) must be token ids"):
            X.train_tiny_lm(model, lambda step, t=t: t, _theta(), steps=1)
    with pytest.raises(ValueError, match="inv_freq must hold head_dim // 2 = 4 frequencies"):
        model(tokens, rope.frequencies(16, 100.0))


@pytest.mark.parametrize("training", [True, False])
def test_next_token_accuracy_restores_the_model_mode(training):
    # review: next_token_accuracy switched the model to eval() and left it there
    model = _model().train(training)
    acc = X.next_token_accuracy(model, _tokens(), _theta())
    assert model.training is training
    assert torch.equal(acc, X.next_token_accuracy(model.eval(), _tokens(), _theta()))  # eval either way


def test_apply_rope_tables_with_inputs_that_require_grad():
    # review S5: a RuntimeError from mul(out=...) deep inside; now a clear error naming the way out
    x, (cos, sin) = _x(), _tables()
    for name in ("x", "cos", "sin"):
        args = {"x": x, "cos": cos, "sin": sin}
        args[name] = args[name].clone().requires_grad_()
        with pytest.raises(ValueError, match="must not require grad .* use apply_rope"):
            rope.apply_rope_tables(**args, layout="half", out=torch.empty(2, SEQ, D))
        with torch.no_grad():  # the documented way to use it on tensors that require grad
            out = rope.apply_rope_tables(**args, layout="half")
        torch.testing.assert_close(out, rope.apply_rope(x, torch.arange(SEQ), _theta(), "half"))
    # the training path: apply_rope follows autograd
    xg = x.clone().requires_grad_()
    rope.apply_rope(xg, torch.arange(SEQ), _theta(), "half").square().sum().backward()
    torch.testing.assert_close(xg.grad, 2 * x)  # a rotation keeps the norm: d|Rx|^2/dx = 2x


def test_base_overflow_is_a_clear_error():
    # review S5: base_for_longest_wavelength(8, 1e300) raised OverflowError
    with pytest.raises(ValueError, match="wavelength is too large"):
        X.base_for_longest_wavelength(8, 1e300)
    assert math.isfinite(X.base_for_longest_wavelength(8, 1e200))
    with pytest.raises(ValueError, match="k is too large"):
        rope.ntk_inv_freq(4, 10000.0, 1e300)
    with pytest.raises(ValueError, match="k and seq_len / train_len are too large"):
        rope.dynamic_inv_freq(4, 10000.0, 1e200, seq_len=10**6, train_len=1)


def test_markov_data_rejects_tables_that_are_not_probabilities():
    table = X.markov_table(4)
    for bad in (table * 2, table - 0.5, table.clone().fill_(math.nan)):
        with pytest.raises(ValueError, match="table"):
            X.sample_markov(bad, 2, 5)
    with pytest.raises(ValueError, match="concentration is too large"):
        X.markov_table(4, concentration=1.7e308)
    # float16 and float32 tables are sampled in float64: the same tokens as the float64 table when
    # the rounded probabilities give the same cumulative sums (here: a deterministic chain)
    det = torch.zeros(3, 3, 3, dtype=torch.float64)
    det[..., 0] = 1.0
    for dtype in (torch.float16, torch.float32):
        assert torch.equal(X.sample_markov(det.to(dtype), 2, 6), X.sample_markov(det, 2, 6))


def test_flags_and_counts_are_checked():
    with pytest.raises(ValueError, match="clip must be True or False"):
        rope.logn_scale(torch.tensor([4]), 2, clip="yes")
    with pytest.raises(TypeError, match="n must be a tensor or a number"):
        rope.beta_digits([5, 7], 10.0, 2)
    with pytest.raises(ValueError, match="per_position must be True or False"):
        X.next_token_accuracy(_model(), _tokens(), _theta(), per_position=1)
    assert torch.equal(rope.beta_digits(1749, 10.0, 4), torch.tensor([9.0, 4.0, 7.0, 1.0], dtype=torch.float64))
