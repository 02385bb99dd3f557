"""kexue.experiments.mixup: the mixing losses, the plain and the stacked trainer, evaluation helpers."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.data import load_digits, train_test_split
from kexue.experiments.mixup import (
    LOSSES,
    Run,
    evaluate,
    expected_calibration_error,
    mixed_batch,
    mixing_loss,
    temperature_for_confidence,
    train_classifier,
    train_classifiers,
)
from kexue.experiments.training import seeded_mlp
from kexue.mixup import MIXERS, linearity_gap, mixed_cross_entropy, sample_pairing_active


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(n: int = 40, d: int = 6, k: int = 3, seed: int = 1):
    g = _gen(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.fixture
def one_thread():
    """Tiny networks: a second intra-op thread only adds synchronisation (and stalls on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- loss callbacks


def test_every_mixer_has_a_loss_callback_of_the_same_name():
    assert list(LOSSES) == list(MIXERS)
    net = seeded_mlp([6, 8, 3], seed=0)
    x, y = _data(10)
    for name, loss_fn in LOSSES.items():
        loss = loss_fn(net, x, y, generator=_gen(4), epoch=0)
        batch = MIXERS[name](x, y, generator=_gen(4))  # the same draws, replayed
        torch.testing.assert_close(loss, mixed_cross_entropy(net(batch.x), batch.y_a, batch.y_b, batch.lam))
    torch.testing.assert_close(LOSSES["none"](net, x, y, generator=_gen(), epoch=3), F.cross_entropy(net(x), y))


def test_parameters_and_schedule_are_bound_with_partial():
    net = seeded_mlp([6, 8, 3], seed=0)
    x, y = _data(10)
    loss = partial(LOSSES["mixup"], alpha=0.3)(net, x, y, generator=_gen(2), epoch=0)
    batch = MIXERS["mixup"](x, y, generator=_gen(2), alpha=0.3)
    torch.testing.assert_close(loss, mixed_cross_entropy(net(batch.x), batch.y_a, batch.y_b, batch.lam))
    # an inactive epoch is plain cross-entropy and draws nothing from the generator
    off = partial(sample_pairing_active, start=2, end=4, on=1, off=0)
    g = _gen(5)
    state = g.get_state()
    loss = mixing_loss(net, x, y, generator=g, epoch=0, mixer="sample_pairing", active=off)
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))
    assert torch.equal(g.get_state(), state)
    on = mixed_batch(x, y, generator=_gen(5), epoch=2, mixer="sample_pairing", active=off)
    assert torch.equal(on.index, MIXERS["sample_pairing"](x, y, generator=_gen(5)).index)


def test_run_binds_its_loss():
    sched = partial(sample_pairing_active, start=1, end=3, on=1, off=1)
    run = Run("mixup", 2, {"alpha": 0.5}, sched)
    assert run.loss_fn.keywords == {"mixer": "mixup", "active": sched, "alpha": 0.5}
    with pytest.raises(ValueError, match="mixer"):
        Run("cutmix")
    with pytest.raises(ValueError, match="seed"):
        Run("none", -1)


# ----------------------------------------------------------------------------- training


def _reference_loop(x, y, run, *, hidden, epochs, batch_size, lr, n_classes):
    """The training loop written out by hand: Adam, one seeded permutation per epoch, mix, mixed CE."""
    model = seeded_mlp([x.shape[1], *hidden, n_classes], seed=run.seed, flatten=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = _gen(run.seed)
    for epoch in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb, yb = x[idx], y[idx]
            if run.active is None or run.active(epoch):
                b = MIXERS[run.mixer](xb, yb, generator=gen, **run.params)
                loss = mixed_cross_entropy(model(b.x), b.y_a, b.y_b, b.lam)
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


_RUNS = [
    Run("none", 0),
    Run("mixup", 1, {"alpha": 0.3}),
    Run("sample_pairing", 2, active=partial(sample_pairing_active, start=1, end=4, on=1, off=1)),
    Run("sample_pairing_soft", 2, active=partial(sample_pairing_active, start=1, end=4, on=1, off=1)),
    Run("mixup_uniform", 3, {"per_sample": True}),
]
_CFG = {"hidden": (16,), "epochs": 5, "batch_size": 16, "lr": 1e-3, "n_classes": 3}


def test_plain_trainer_is_the_hand_written_loop(one_thread):
    x, y = _data()
    for run in _RUNS:
        net, history = train_classifier(x, y, run, **_CFG)
        ref = _reference_loop(x, y, run, **_CFG)
        assert len(history) == _CFG["epochs"] and not net.training
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_stacked_training_reproduces_the_plain_loop(one_thread):
    x, y = _data()
    x_val, y_val = _data(25, seed=9)
    stacked = train_classifiers(x, y, _RUNS, x_val=x_val, y_val=y_val, eval_every=2, **_CFG)
    assert stacked.history.shape == (5, len(_RUNS)) and stacked.val_epochs == [2, 4, 5]
    for j, (run, net) in enumerate(zip(_RUNS, stacked.models, strict=True)):
        plain, history = train_classifier(x, y, run, **_CFG)
        for p, q in zip(net.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.history[:, j], torch.tensor(history, dtype=torch.float64),
                                   rtol=1e-5, atol=1e-6)
        scores = evaluate(net, x_val, y_val)
        assert stacked.val_acc[-1, j].item() == pytest.approx(scores["acc"], abs=1e-12)
        assert stacked.val_nll[-1, j].item() == pytest.approx(scores["nll"], rel=1e-5)


def test_small_digit_runs_learn_and_mixup_reduces_the_linearity_gap(one_thread):
    images, labels = load_digits()
    x = images.flatten(1)
    x_tr, x_te, y_tr, y_te = train_test_split(x, labels, test_size=len(x) - 300, seed=0)
    erm, mix = train_classifiers(x_tr, y_tr, [Run("none", 0), Run("mixup_uniform", 0)], n_classes=10,
                                 epochs=40).models
    for net in (erm, mix):
        assert evaluate(net, x_te, y_te)["acc"] > 0.8  # chance is 0.1
    perm = torch.randperm(len(x_te), generator=_gen(3))
    with torch.no_grad():
        gaps = [linearity_gap(lambda z, n=net: n(z).softmax(-1), x_te[perm[:300]], x_te[perm[300:600]], 0.5).mean()
                for net in (erm, mix)]
    assert gaps[1] < 0.85 * gaps[0]


def test_training_bad_input_names_the_argument():
    x, y = _data(8)
    with pytest.raises(ValueError, match="runs"):
        train_classifiers(x, y, [], n_classes=3)
    with pytest.raises(ValueError, match="x_val and y_val"):
        train_classifiers(x, y, [Run()], n_classes=3, x_val=x)
    with pytest.raises(ValueError, match="n_classes"):
        train_classifier(x, y, Run(), n_classes=1)
    with pytest.raises(TypeError, match="y must be"):
        train_classifier(x, y.float(), Run(), n_classes=3)
    with pytest.raises(ValueError, match="same length"):
        train_classifiers(x, y[:5], [Run()], n_classes=3)
    with pytest.raises(ValueError, match="mixer"):
        mixed_batch(x, y, generator=_gen(), epoch=0, mixer="cutmix")


# ----------------------------------------------------------------------------- evaluation


def _ece_reference(probs, labels, n_bins):
    conf, pred = probs.max(1)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        sel = [(lo < c <= hi) or (m == 0 and c == 0) for c in conf.tolist()]
        idx = [i for i, s in enumerate(sel) if s]
        if idx:
            acc = sum(float(pred[i] == labels[i]) for i in idx) / len(idx)
            avg = sum(float(conf[i]) for i in idx) / len(idx)
            total += len(idx) / len(conf) * abs(acc - avg)
    return total


def test_calibration_error_matches_reference_and_extremes():
    g = _gen(8)
    probs = torch.softmax(torch.randn(300, 5, generator=g, dtype=torch.float64) * 2, -1)
    labels = torch.randint(0, 5, (300,), generator=g)
    assert expected_calibration_error(probs, labels, 10) == pytest.approx(_ece_reference(probs, labels, 10), abs=1e-12)
    onehot = F.one_hot(labels, 5).double()
    assert expected_calibration_error(onehot, labels) == 0.0
    wrong = F.one_hot((labels + 1) % 5, 5).double()
    assert expected_calibration_error(wrong, labels) == 1.0
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.ones(2, 2) / 2, torch.zeros(2, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(torch.ones(0, 2), torch.zeros(0, dtype=torch.int64))


def test_evaluate_reports_consistent_numbers():
    net = seeded_mlp([3, 4, 2], seed=0)
    x = torch.randn(50, 3, generator=_gen())
    y = torch.randint(0, 2, (50,), generator=_gen(1))
    r = evaluate(net, x, y)
    assert set(r) == {"acc", "nll", "conf", "ece"} and 0 <= r["acc"] <= 1 and r["nll"] > 0 and 0 <= r["ece"] <= 1
    assert 0.5 <= r["conf"] <= 1  # two classes: the top probability is at least 1/2
    assert np.isclose(r["nll"], F.cross_entropy(net(x), y).item())
    hot = evaluate(net, x, y, temperature=0.25)
    assert hot["acc"] == r["acc"] and hot["conf"] > r["conf"]  # a temperature never changes the argmax
    assert np.isclose(hot["nll"], F.cross_entropy(net(x) * 4, y).item())
    with pytest.raises(ValueError, match="temperature"):
        evaluate(net, x, y, temperature=0.0)


@settings(max_examples=20, deadline=None, database=None)
@given(seed=st.integers(0, 10_000), frac=st.floats(0.05, 0.95), scale=st.floats(0.1, 10.0))
def test_temperature_reaches_the_requested_confidence(seed, frac, scale):
    z = torch.randn(200, 10, generator=_gen(seed), dtype=torch.float64) * scale
    lo, hi = 0.1, float(z.softmax(-1).max(-1).values.mean())  # from T = inf down to ... and up to T -> 0
    top = float((z / 1e-3).softmax(-1).max(-1).values.mean())
    target = 0.1 + frac * (top - 0.1)
    if not lo + 1e-6 < target < 1 - 1e-9:
        return
    t = temperature_for_confidence(z, target)
    conf = float((z / t).softmax(-1).max(-1).values.mean())
    assert conf == pytest.approx(target, abs=1e-9)
    assert (t > 1) == (target < hi)  # flattening lowers the confidence, sharpening raises it


def test_temperature_bad_input():
    z = torch.randn(20, 4, generator=_gen(), dtype=torch.float64)
    for c in (0.25, 0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="confidence"):
            temperature_for_confidence(z, c)
    with pytest.raises(ValueError, match="logits"):
        temperature_for_confidence(z[0], 0.5)
    with pytest.raises(ValueError, match="not reached"):
        temperature_for_confidence(torch.zeros(3, 4), 0.5)  # equal logits: confidence 1/4 at every temperature
