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
ANY_RANK = {"one dimension too many": "a leading batch dimension is valid (documented: (..., seq, d))"}

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
test_rope_inventory = inventory_test("kexue.rope", [c for c in CASES if hasattr(rope, c.name.split(".")[0])],
                                     {k: v for k, v in EXEMPT.items() if hasattr(rope, k)})
test_rope_experiments_inventory = inventory_test("kexue.experiments.rope",
                                                 [c for c in CASES if hasattr(X, c.name.split(".")[0])],
                                                 {k: v for k, v in EXEMPT.items() if hasattr(X, k)})
