"""Bad input to the shared experiment harness (kexue.experiments.training and .claims).

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
"""

from __future__ import annotations

import torch

from kexue.experiments import claims, training
from tests._probe import Arg, Case, inventory_test, probe_tests


def _xy(n: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g), torch.randint(0, 2, (n,), generator=g)


def _fit():
    x, y = _xy()
    return training.fit, {"model": training.seeded_mlp([2, 2]), "x": x, "y": y,
                          "loss_fn": training.LOSSES["cross_entropy"], "epochs": 1, "batch_size": 4,
                          "lr": 1e-2, "weight_decay": 0.0, "seed": 0}


def _accuracy():
    x, y = _xy()
    return training.accuracy, {"model": training.seeded_mlp([2, 2]), "x": x, "y": y, "batch_size": 4}


CASES = [
    Case("seeded_mlp", lambda: (training.seeded_mlp, {"sizes": [3, 4, 2], "seed": 0, "activation": "relu",
                                                      "dtype": torch.float32}),
         {"sizes": Arg("int_seq", name="sizes"), "seed": Arg("int", minimum=0), "activation": Arg("choice"),
          "dtype": Arg("dtype")}),
    Case("minibatches", lambda: (training.minibatches, {"n": 10, "batch_size": 3,
                                                        "generator": torch.Generator().manual_seed(0)}),
         {"n": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1), "generator": Arg("generator")}),
    Case("fit", _fit,
         {"model": Arg("module"), "x": Arg("tensor", nonempty=True), "y": Arg("index_tensor"),
          "epochs": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1),
          "lr": Arg("real", low=0.0, open_low=True), "weight_decay": Arg("real", low=0.0), "seed": Arg("int", minimum=0)},
         skip={"x": {"an int64 tensor": "the loss decides what x must be; fit only needs a batch dimension",
                     "a bool tensor": "as above", "a complex tensor": "as above"},
               "y": {"a float tensor": "fit is generic: float targets are valid (regression with LOSSES['mse'])",
                     "a negative id": "labels are the loss's business; cross_entropy rejects them",
                     "an id far out of range": "as above"}}),
    Case("evaluating", lambda: (lambda model: training.evaluating(model).__enter__(), {"model": training.seeded_mlp([2, 2])}),
         {"model": Arg("module")}),
    Case("accuracy", _accuracy,
         {"model": Arg("module"), "x": Arg("tensor"), "y": Arg("index_tensor", ndim=(1,)), "batch_size": Arg("int", minimum=1, optional=True)},
         skip={"x": {"an int64 tensor": "x is whatever the model takes", "a bool tensor": "as above",
                     "a complex tensor": "as above"},
               "y": {"a negative id": "a label no score can match counts as wrong, which is the answer",
                     "an id far out of range": "as above"}}),
    Case("run_side_by_side", lambda: (training.run_side_by_side, {"jobs": [lambda: 1, lambda: 2], "workers": 2}),
         {"jobs": Arg("choice", name="jobs"), "workers": Arg("int", minimum=1)}),
    Case("Seeds", lambda: (claims.Seeds, {"values": torch.tensor([0.1, 0.2, 0.3])}),
         {"values": Arg("tensor", ndim=(1,), finite=True)},
         skip={"values": {"an int64 tensor": "integers are numbers", "a bool tensor": "as above",
                          "a Python list": "a list of numbers is the documented input"}}),
    Case("over_seeds", lambda: (claims.over_seeds, {"measure": float, "seeds": (0, 1, 2)}),
         {"seeds": Arg("int_seq", name="seeds")},
         skip={"seeds": {"a 0 entry": "0 is a seed", "a float entry": "measure decides what a seed is"}}),
    Case("exact", lambda: (claims.exact, {"error": 1e-16, "tol": 1e-12}),
         {"error": Arg("real", low=0.0, name="error"), "tol": Arg("real", low=0.0, name="tol")}),
    Case("at_least", lambda: (claims.at_least, {"value": 2.0, "bound": 1.5, "name": "ratio", "z": 2.0, "worst": False}),
         {"value": Arg("real", name="ratio"), "bound": Arg("real"), "z": Arg("real", low=0.0, open_low=True, optional=True),
          "worst": Arg("flag")}),
    Case("at_most", lambda: (claims.at_most, {"value": 2.0, "bound": 1.5, "name": "ratio", "z": 2.0, "worst": False}),
         {"value": Arg("real", name="ratio"), "bound": Arg("real"), "z": Arg("real", low=0.0, open_low=True, optional=True),
          "worst": Arg("flag")}),
    Case("close_to", lambda: (claims.close_to, {"value": 0.1, "target": 0.1, "tol": 0.01, "name": "h", "z": 2.0}),
         {"value": Arg("real", name="h"), "target": Arg("real"), "tol": Arg("real", low=0.0),
          "z": Arg("real", low=0.0, open_low=True, optional=True)}),
    Case("beats", lambda: (claims.beats, {"a": 2.0, "b": 1.0, "names": ("A", "B"), "margin": 0.0, "z": 2.0}),
         {"a": Arg("real", name="A"), "b": Arg("real", name="B"), "margin": Arg("real"),
          "z": Arg("real", low=0.0, open_low=True, optional=True)}),
    Case("not_tested", lambda: (claims.not_tested, {"why": "no GPU"}), {"why": Arg("choice", name="why")},
         skip={"why": {"an unknown name": "any non-empty reason is valid"}}),
    Case("claims_table", lambda: (claims.claims_table, {"claims": [claims.Claim("c", "a", "o", claims.exact(0, 1))],
                                                        "page": "demo"}),
         {"page": Arg("choice", name="page")},
         skip={"page": {"an unknown name": "any slug is valid"}}),
    Case("claims_json", lambda: (claims.claims_json, {"claims": [claims.Claim("c", "a", "o", claims.exact(0, 1))],
                                                      "page": "demo"}),
         {"page": Arg("choice", name="page")},
         skip={"page": {"an unknown name": "any slug is valid"}}),
]

EXEMPT = {
    "ACTIVATIONS": "a registry (dict)",
    "LOSSES": "a registry of loss callbacks (each checked through fit)",
    "LossFn": "a typing Protocol",
    "VERDICTS": "a constant",
    "Outcome": "built by the rules; its own checks are in tests/test_claims.py",
    "Claim": "its checks are in tests/test_claims.py",
    "ranks": "delegates to beats and all_of (probed)",
    "all_of": "its checks are in tests/test_claims.py",
}

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_training_inventory = inventory_test("kexue.experiments.training", [c for c in CASES if hasattr(training, c.name)],
                                         {k: v for k, v in EXEMPT.items() if hasattr(training, k)})
test_claims_inventory = inventory_test("kexue.experiments.claims", [c for c in CASES if hasattr(claims, c.name)],
                                       {k: v for k, v in EXEMPT.items() if hasattr(claims, k)})
