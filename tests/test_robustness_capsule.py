"""Bad input to kexue.capsule and kexue.experiments.capsule (issue 22), plus the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the robustness review's findings for these modules:
squash of huge vectors, routing with zero iterations or a bad constant named wrongly, errors that
named the capsule layer's arguments instead of the classifier's, odd image sizes, NaN scores in
the top-2 metric, and helpers that left a model in another mode.
"""

from __future__ import annotations

import pytest
import torch

from kexue import capsule as caps
from kexue.experiments import capsule as X
from tests._probe import Arg, Case, inventory_test, probe_tests

SMALL = {"channels": (4, 4, 8)}  # tiny trunks keep the probes fast


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _u_hat() -> torch.Tensor:
    return torch.randn(2, 5, 3, 4, generator=_gen())


def _u() -> torch.Tensor:
    return torch.randn(2, 5, 4, generator=_gen(1))


def _images(n: int = 6, h: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, h, 8, generator=_gen(2))


def _labels(n: int = 6) -> torch.Tensor:
    return torch.arange(n) % 3


def _layer(**kw) -> caps.CapsuleLayer:
    torch.manual_seed(0)
    return caps.CapsuleLayer(4, 3, 6, **kw)


def _stack(kind: str = "capsule", seeds: tuple[int, ...] = (0, 1)) -> X.SeedStack:
    return X.SeedStack(lambda s: X.build_model(kind, seed=s, num_classes=3, **SMALL), seeds)


def _pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"vertical": X.make_pairs(_images(), _labels(), seed=0)}


def _scores() -> torch.Tensor:
    return torch.rand(6, 3, generator=_gen(3))


def _pair_labels() -> torch.Tensor:
    return torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2], [1, 0], [2, 1]])


U_HAT = Arg("tensor", ndim=(4,), nonempty=False)  # an empty batch routes to an empty batch
ITERATIONS = Arg("int", minimum=1)
POSITIVE = Arg("real", low=0.0, open_low=True)
X_IMAGES = Arg("tensor", ndim=(4,), nonempty=False)  # conv layers map an empty batch to an empty batch
ANY_RANK = {"one dimension too many": "any rank >= 1 is valid: dim picks the capsule axis (documented)"}
SEED_ZERO = {"a 0 entry": "0 is a seed"}


def _routing_case(name: str) -> Case:
    fn = getattr(caps, name)
    return Case(name, lambda: (fn, {"u_hat": _u_hat(), "iterations": 3, "squash_c": 0.5}),
                {"u_hat": U_HAT, "iterations": ITERATIONS, "squash_c": POSITIVE})


def _route_case(name: str) -> Case:
    fn = getattr(caps, name)
    return Case(name, lambda: (fn, {"u_hat": _u_hat(), "iterations": 3, "method": "su5112", "squash_c": 0.5}),
                {"u_hat": U_HAT, "iterations": ITERATIONS, "method": Arg("choice"),
                 "squash_c": Arg("real", low=0.0, open_low=True, optional=True)})


# ----------------------------------------------------------------------------- kexue.capsule

CAPSULE_CASES = [
    # squash is elementwise along its capsule axis: NaN/inf propagate (documented)
    Case("squash", lambda: (caps.squash, {"s": torch.randn(4, generator=_gen()), "dim": -1, "c": 0.5}),
         {"s": Arg("tensor", ndim=(1,), nonempty=False), "dim": Arg("int", minimum=-1), "c": POSITIVE},
         skip={"s": ANY_RANK}),
    Case("predict_shared", lambda: (caps.predict_shared, {"u": _u(), "weight": torch.randn(3, 6, 4, generator=_gen(4))}),
         {"u": Arg("tensor", ndim=(3,), nonempty=False), "weight": Arg("tensor", ndim=(3,), nonempty=False)}),
    Case("predict_dense", lambda: (caps.predict_dense, {"u": _u(), "weight": torch.randn(5, 3, 6, 4, generator=_gen(4))}),
         {"u": Arg("tensor", ndim=(3,), nonempty=False), "weight": Arg("tensor", ndim=(4,))}),
    _route_case("route"),
    _route_case("route_reference"),
    _routing_case("routing_hinton"),
    _routing_case("routing_su4819"),
    _routing_case("routing_su5112"),
    Case("coupling_entropy", lambda: (caps.coupling_entropy, {"couplings": torch.full((2, 5, 4), 0.25)}),
         {"couplings": Arg("tensor", ndim=(3,), finite=True, nonempty=False)}),
    Case("margin_loss", lambda: (caps.margin_loss, {"lengths": _scores(), "targets": _labels(), "m_pos": 0.9,
                                                    "m_neg": 0.1, "lam": 0.5}),
         {"lengths": Arg("tensor", ndim=(2,), finite=True), "targets": Arg("index_tensor", ndim=(1,)),
          "m_pos": Arg("real", low=0.0, high=1.0), "m_neg": Arg("real", low=0.0, high=1.0), "lam": Arg("real", low=0.0)}),
    Case("CapsuleLayer", lambda: (caps.CapsuleLayer, {"dim_in": 4, "num_caps": 3, "dim_caps": 6, "iterations": 2,
                                                      "routing": "hinton", "num_inputs": 5, "squash_c": 1.0}),
         {"dim_in": Arg("int", minimum=1), "num_caps": Arg("int", minimum=1), "dim_caps": Arg("int", minimum=1),
          "iterations": ITERATIONS, "routing": Arg("choice"), "num_inputs": Arg("int", minimum=1, optional=True),
          "squash_c": Arg("real", low=0.0, open_low=True, optional=True)}),
    Case("CapsuleLayer.forward", lambda: (_layer(), {"u": _u()}), {"u": Arg("tensor", ndim=(3,), nonempty=False)}),
    Case("CapsuleLayer.forward[dense]", lambda: (_layer(num_inputs=5), {"u": _u()}),
         {"u": Arg("tensor", ndim=(3,), nonempty=False)}),
]

CAPSULE_EXEMPT = {
    "DEFAULT_SQUASH_C": "a constant table of squash constants by routing name",
    "ROUTINGS": "a registry of the routing functions, each probed by name (routing_hinton, ...)",
    "SQUASH_PROFILES": "a table of elementwise length maps, plotted by the page (torch ops on any tensor)",
}


# ----------------------------------------------------------------------------- kexue.experiments.capsule

_CHANNELS = Arg("int_seq", name="channels")


def _model_forward(kind: str, method: str) -> Case:
    def call():
        model = X.build_model(kind, seed=0, num_classes=3, **SMALL)
        return getattr(model, method), {"x": _images(2)}

    cls = "CNNClassifier" if kind == "cnn" else "CapsuleClassifier"
    return Case(f"{cls}.{method}", call, {"x": X_IMAGES})


def _train():
    return X.train_members, {"stack": _stack(), "images": _images(), "labels": _labels(), "epochs": 1, "batch_size": 4,
                             "lr": 1e-2, "loss": "margin", "after_epoch": None}


def _evaluate():
    return X.evaluate_members, {"stack": _stack(), "pairs": _pairs(), "single": (_images(), _labels()),
                                "threshold": 0.5}


EXPERIMENT_CASES = [
    Case("make_pairs", lambda: (X.make_pairs, {"images": _images(), "labels": _labels(), "mode": "overlay", "seed": 1}),
         {"images": Arg("tensor", ndim=(4,)), "labels": Arg("index_tensor", ndim=(1,)), "mode": Arg("choice"),
          "seed": Arg("int", minimum=0)},
         skip={"labels": {"a negative id": "labels are only compared with each other: any integer is a class",
                          "an id far out of range": "as above"}}),
    Case("pair_accuracy", lambda: (X.pair_accuracy, {"scores": _scores(), "pair_labels": _pair_labels(),
                                                     "threshold": 0.5}),
         {"scores": Arg("tensor", ndim=(2,), finite=True), "pair_labels": Arg("index_tensor", ndim=(2,)),
          "threshold": Arg("real", optional=True)}),
    Case("ConvTrunk", lambda: (X.ConvTrunk, {"channels": (4, 4, 8)}), {"channels": _CHANNELS}),
    Case("ConvTrunk.forward", lambda: (X.ConvTrunk((4, 4, 8)), {"x": _images(2)}), {"x": X_IMAGES}),
    Case("CNNClassifier", lambda: (X.CNNClassifier, {"num_classes": 3, "hidden": 8, "channels": (4, 4, 8)}),
         {"num_classes": Arg("int", minimum=1), "hidden": Arg("int", minimum=1), "channels": _CHANNELS}),
    _model_forward("cnn", "forward"),
    Case("CapsuleClassifier", lambda: (X.CapsuleClassifier, {"num_classes": 3, "dim_caps": 4, "iterations": 2,
                                                             "routing": "hinton", "channels": (4, 4, 8),
                                                             "squash_c": 0.5}),
         {"num_classes": Arg("int", minimum=1), "dim_caps": Arg("int", minimum=1), "iterations": ITERATIONS,
          "routing": Arg("choice"), "channels": _CHANNELS,
          "squash_c": Arg("real", low=0.0, open_low=True, optional=True)}),
    _model_forward("capsule", "forward"),
    _model_forward("capsule", "capsules"),
    _model_forward("capsule", "input_capsules"),
    Case("build_model", lambda: (X.build_model, {"kind": "capsule", "seed": 2}),
         {"kind": Arg("choice"), "seed": Arg("int", minimum=0)}),
    Case("SeedStack", lambda: (X.SeedStack, {"build": lambda s: X.build_model("cnn", seed=s, **SMALL), "seeds": (1, 2)}),
         {"build": Arg("module", name="build"), "seeds": Arg("int_seq")}, skip={"seeds": SEED_ZERO}),
    Case("SeedStack.forward", lambda: (_stack(), {"x": torch.rand(3, 2, 1, 8, 8, generator=_gen())}),
         {"x": Arg("tensor", ndim=(5,), nonempty=False)}),
    Case("SeedStack.same_input", lambda: (_stack().same_input, {"x": _images(3)}), {"x": X_IMAGES}),
    Case("SeedStack.member", lambda: (_stack().member, {"k": 1}), {"k": Arg("int", minimum=0)}),
    Case("SeedStack.train", lambda: (_stack().train, {"mode": False}), {"mode": Arg("flag")}),
    Case("member_orders", lambda: (X.member_orders, {"x": _images(), "y": _labels(), "seeds": (0, 1)}),
         {"x": Arg("tensor"), "y": Arg("index_tensor", ndim=(1,)), "seeds": Arg("int_seq")},
         skip={"x": {"an int64 tensor": "rows of any dtype are only permuted", "a bool tensor": "as above",
                     "a complex tensor": "as above"},
               "y": {"a float tensor": "targets of any dtype are only permuted",
                     "a negative id": "as above", "an id far out of range": "as above"},
               "seeds": SEED_ZERO}),
    Case("train_members", _train,
         {"stack": Arg("module", name="stack"), "images": Arg("tensor", ndim=(4,), finite=True),
          "labels": Arg("index_tensor", ndim=(1,)), "epochs": Arg("int", minimum=1),
          "batch_size": Arg("int", minimum=1), "lr": POSITIVE, "loss": Arg("choice"),
          # a callback: a string and an int are not callable
          "after_epoch": Arg("choice", name="after_epoch", optional=True)}),
    Case("evaluate_members", _evaluate,
         # pairs is a mapping of test sets, single an (images, labels) pair: a string and an int are wrong
         {"stack": Arg("module", name="stack"), "pairs": Arg("choice", name="pairs"),
          "single": Arg("choice", name="single", optional=True), "threshold": Arg("real")}),
]

EXPERIMENT_EXEMPT = {
    "LOSSES": "a registry of margin-loss callbacks for fit, probed through train_members' loss",
    "MODELS": "a registry of the classifier classes, each probed (CNNClassifier, CapsuleClassifier)",
}

CASES = CAPSULE_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_capsule_inventory = inventory_test("kexue.capsule", CAPSULE_CASES, CAPSULE_EXEMPT)
test_experiments_capsule_inventory = inventory_test("kexue.experiments.capsule", EXPERIMENT_CASES, EXPERIMENT_EXEMPT)
