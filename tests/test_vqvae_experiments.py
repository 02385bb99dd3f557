"""Tests of kexue.experiments.vqvae: the stacked trainer equals separate runs, baselines, scores, windows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kexue.data import load_digits
from kexue.experiments.training import fit, minibatches
from kexue.experiments.vqvae import (
    VARIANTS,
    VQVAE,
    StackedCodePrior,
    StackedVQVAE,
    code_patches,
    digit_confidence,
    digit_features,
    evaluate_vqvae,
    frechet_distance,
    images_to_patches,
    montage,
    patch_kmeans,
    patches_to_images,
    prior_loss,
    train_digit_classifier,
    train_priors,
    train_vqvaes,
    unigram_bits,
    vqvae_loss,
)
from kexue.vqvae import CodePrior, prior_nll_bits

torch.set_num_threads(2)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits()
    return x, y


# ---------------------------------------------------------------- the stack is the members, trained side by side


def test_stacked_forward_equals_each_member_float64():
    members = [
        VQVAE(8, 4, 6, seed=s, update=u, beta=b).double()
        for s, u, b in ((0, "loss", 0.25), (1, "ema", 0.25), (2, "loss", 2.0))
    ]
    stack = StackedVQVAE(members)
    x = torch.rand(5, 3, 8, 8, generator=_gen(), dtype=torch.float64)
    x_hat, z, q = stack(x)
    assert z.shape == (3, 5, 4, 4, 4) and q.indices.shape == (3, 5, 4, 4) and q.loss.shape == (3,)
    for s, m in enumerate(members):
        want_hat, want_z, want_q = m(x[:, s : s + 1])
        torch.testing.assert_close(x_hat[:, s : s + 1], want_hat, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(z[s], want_z.movedim(1, -1), rtol=1e-12, atol=1e-12)
        assert torch.equal(q.indices[s], want_q.indices)
        torch.testing.assert_close(q.loss[s], want_q.loss, rtol=1e-12, atol=1e-14)
    assert stack.unstack()[1] is members[1]


def _train_alone(model: VQVAE, x: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int) -> VQVAE:
    """A plain loop over one model: same shuffles as fit, Adam, then the codebook step of the batch."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = _gen(seed)
    model.train()
    for _ in range(epochs):
        for idx in minibatches(x.shape[0], batch_size, generator=g):
            x_hat, z, q = model(x[idx])
            loss = F.mse_loss(x_hat, x[idx]) + q.loss
            model.quantizer.update_codebook(z, q.indices, generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def test_training_the_stack_equals_training_each_member_alone_float64(digits):
    """Adam is per element and the stack's loss is a sum, so member s learns as if alone."""
    x = digits[0][:96].double()
    xs = torch.stack([x[:, 0], x.flip(0)[:, 0]], dim=1)  # member 1 reads the images in another order
    cfgs = [{"update": "loss", "beta": 0.5}, {"update": "ema"}]
    stacked = StackedVQVAE([VQVAE(8, 4, 6, seed=s, **c).double() for s, c in enumerate(cfgs)])
    fit(stacked, xs, xs, vqvae_loss(), epochs=3, batch_size=32, lr=5e-3, seed=7)
    together = stacked.unstack()
    for s, cfg in enumerate(cfgs):
        alone = _train_alone(VQVAE(8, 4, 6, seed=s, **cfg).double(), xs[:, s : s + 1], epochs=3, batch_size=32,
                             lr=5e-3, seed=7)  # fmt: skip
        for (name, p), q in zip(together[s].state_dict().items(), alone.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10, msg=f"member {s}, {name}")


def test_stack_rejects_mismatched_members_and_inputs():
    with pytest.raises(ValueError, match="members must hold"):
        StackedVQVAE([])
    with pytest.raises(ValueError, match="share hidden width"):
        StackedVQVAE([VQVAE(8, 4, 6), VQVAE(8, 4, 5)])
    with pytest.raises(ValueError, match="share hidden width"):
        StackedVQVAE([VQVAE(8, 4, 6), VQVAE(9, 4, 6)])
    stack = StackedVQVAE([VQVAE(8, 4, 6), VQVAE(8, 4, 6, seed=1)])
    with pytest.raises(ValueError, match="one channel per member"):
        stack(torch.zeros(2, 3, 8, 8))


def test_vqvae_loss_records_one_value_per_member_and_step():
    x = torch.rand(40, 2, 8, 8, generator=_gen())
    stack = StackedVQVAE([VQVAE(8, 4, 6, seed=0, update="ema", dead_threshold=1.0), VQVAE(8, 4, 6, seed=1)])
    hist: dict = {}
    fit(stack, x, x, vqvae_loss(hist), epochs=2, batch_size=20, lr=1e-3, seed=0)
    assert set(hist) == {"recon", "perplexity", "used", "restarts"}
    assert all(len(v) == 4 and all(len(row) == 2 for row in v) for v in hist.values())
    # perplexity is at most the number of codes the batch used (equal only for uniform use), and the
    # trained members use more than one code
    assert all(1.0 <= p <= u + 1e-9 for prow, urow in zip(hist["perplexity"], hist["used"], strict=True)
               for p, u in zip(prow, urow, strict=True))
    assert all(p > 1.0 for p in hist["perplexity"][-1])
    assert all(r == 0.0 for row in hist["restarts"] for r in row[1:])  # member 1 has no restarts


# ---------------------------------------------------------------- train_vqvaes on digits


def test_train_vqvaes_runs_every_variant_and_seed_and_beats_the_mean_image(digits):
    x = digits[0][:256]
    runs = train_vqvaes(x, VARIANTS, seeds=(0, 1), num_codes=16, dim=8, hidden=16, epochs=12, batch_size=32, lr=1e-2)
    assert sorted(runs.models) == sorted((n, s) for n in VARIANTS for s in (0, 1))
    steps = 12 * 256 // 32
    assert runs.history["recon"].shape == (steps, 6)
    baseline = F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x).item()
    for key, model in runs.models.items():
        assert not model.training
        curve = runs.curve("recon", *key)
        assert curve[-8:].mean() < 0.5 * curve[:8].mean()
        r = evaluate_vqvae(model, x, x)
        assert r["mse"] < 0.5 * baseline and r["codes_test"].shape == (256, 4, 4)
        counts = torch.bincount(r["codes_test"].flatten(), minlength=16)
        share = counts[counts > 0] / counts.sum()
        assert r["dead"] == int((counts == 0).sum())  # the codes the test set never picks
        assert r["perplexity"] == pytest.approx(torch.exp(-(share * share.log()).sum()).item(), rel=1e-6)
        assert r["perplexity"] > 2.0  # more than a couple of codes carry the data
    # k-means init and restarts leave no code unused on the training set
    assert evaluate_vqvae(runs.models["(c) EMA + k-means + restarts", 0], x, x)["dead"] == 0


def test_train_vqvaes_is_reproducible_and_seeds_differ(digits):
    x = digits[0][:64]
    v = {"a": VARIANTS["(a) loss codebook"]}
    r1 = train_vqvaes(x, v, seeds=(0, 1), num_codes=8, dim=4, hidden=8, epochs=2, batch_size=32)
    r2 = train_vqvaes(x, v, seeds=(0, 1), num_codes=8, dim=4, hidden=8, epochs=2, batch_size=32)
    torch.testing.assert_close(r1.history["recon"], r2.history["recon"], rtol=0, atol=0)
    assert not torch.equal(r1.models["a", 0].quantizer.codebook, r1.models["a", 1].quantizer.codebook)
    with pytest.raises(ValueError, match="non-empty"):
        train_vqvaes(x, {}, seeds=(0,))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        train_vqvaes(x[:, 0], v)
    with pytest.raises(ValueError, match="x must have shape"):
        train_vqvaes(x.expand(64, 2, 8, 8), v)


def test_vqvae_encode_decode_shapes_and_bad_codes():
    model = VQVAE(16, 8, 16, seed=0)
    x = torch.rand(3, 1, 8, 8, generator=_gen())
    codes = model.encode(x)
    assert codes.shape == (3, 4, 4) and model.decode(codes).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, 0:1].expand(3, 2, 8, 8))
    with pytest.raises(ValueError, match="codes must lie"):
        model.decode(codes + 16)
    assert VQVAE(16, 8, 16, kernel=1).decode(codes).shape == (3, 1, 8, 8)  # codes painted without neighbours
    with pytest.raises(ValueError, match="kernel must be odd"):
        VQVAE(16, 8, 16, kernel=2)


# ---------------------------------------------------------------- priors side by side


def test_stacked_priors_match_each_prior_and_train_as_if_alone_float64():
    g = _gen(3)
    codes = [torch.randint(6, (48, 2, 3), generator=g) for _ in range(2)]
    priors = [CodePrior(6, (2, 3), 16, 2, 1, seed=s).double() for s in range(2)]
    stack = StackedCodePrior(priors)
    xs = torch.stack(codes, dim=1)
    logits = stack(xs)
    for s, p in enumerate(priors):
        torch.testing.assert_close(logits[s], p(codes[s]), rtol=1e-12, atol=1e-12)
    fit(stack, xs, xs, prior_loss, epochs=2, batch_size=16, lr=1e-2, seed=5)
    together = stack.unstack()
    for s in range(2):
        alone = StackedCodePrior([CodePrior(6, (2, 3), 16, 2, 1, seed=s).double()])
        col = codes[s][:, None]
        fit(alone, col, col, prior_loss, epochs=2, batch_size=16, lr=1e-2, seed=5)
        (single,) = alone.unstack()
        for p, q in zip(together[s].parameters(), single.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="one column per prior"):
        stack(codes[0][:, None])
    with pytest.raises(ValueError, match="one architecture"):
        StackedCodePrior([CodePrior(6, (2, 3), 16, 2, 1), CodePrior(6, (2, 3), 32, 2, 1)])


def test_train_priors_beat_the_unigram_model_on_structured_codes():
    g = _gen(4)
    # two code sets: a grid repeats its first code (set 0) or counts up from it (set 1)
    first = torch.randint(4, (300, 1), generator=g)
    codes = [first.expand(300, 4).reshape(300, 2, 2).contiguous(), (first + torch.arange(4)).reshape(300, 2, 2)]
    priors, bits = train_priors(codes, [0, 1], num_codes=8, d_model=16, heads=2, layers=1, epochs=25,
                                batch_size=50, lr=1e-2)  # fmt: skip
    assert len(priors) == 2 and bits[-1] < bits[0]
    for p, c in zip(priors, codes):
        assert not p.training
        assert prior_nll_bits(p, c) < 0.5 * unigram_bits(c, c, 8)
    with pytest.raises(ValueError, match="same non-zero length"):
        train_priors(codes, [0], num_codes=8)
    with pytest.raises(ValueError, match=r"codes\[\d\] must lie in \[0, 3\]"):
        train_priors(codes, [0, 1], num_codes=4)


# ---------------------------------------------------------------- baselines and scores


def test_patches_round_trip():
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    p = images_to_patches(x)
    assert p.shape == (2, 4, 4, 4)
    assert p[0, 0, 0].tolist() == [0.0, 1.0, 8.0, 9.0]
    assert torch.equal(patches_to_images(p), x)
    with pytest.raises(ValueError, match="divisible"):
        images_to_patches(x[..., :7])


def test_patch_kmeans_with_one_code_per_distinct_patch_is_lossless():
    tiles = torch.tensor([[0.0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 1]])
    idx = torch.randint(3, (20, 4, 4), generator=_gen())
    x = patches_to_images(tiles[idx])
    r = patch_kmeans(x, x, 3, seed=0)
    assert r["mse"] == 0.0 and r["recon"].shape == x.shape
    assert r["perplexity"] == pytest.approx(torch.exp(-(p := torch.bincount(idx.flatten()) / 320).mul(p.log()).sum()).item())


def test_unigram_bits_closed_form():
    train = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[0, 2]])
    # add-one: p = (3, 3, 1) / 7
    assert unigram_bits(train, test, 3) == pytest.approx(-torch.log2(torch.tensor(3 / 7)).item() - torch.log2(torch.tensor(1 / 7)).item())
    with pytest.raises(ValueError, match="codes must lie"):
        unigram_bits(train, test + 1, 3)


def test_digit_confidence_bounds_and_a_trained_classifier(digits):
    x, y = digits
    clf = train_digit_classifier(x[:1000], y[:1000], seed=0, epochs=10)
    real = digit_confidence(clf, x[1000:])
    assert real["confidence"] > 0.8 and real["entropy"] < 1.0 and real["classes"] == 10
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.nn.init.zeros_(constant[1].weight)
    torch.nn.init.zeros_(constant[1].bias)
    flat = digit_confidence(constant, x[:5])  # uniform prediction: confidence 1/10, entropy log2(10)
    assert flat["confidence"] == pytest.approx(0.1) and flat["entropy"] == pytest.approx(torch.log2(torch.tensor(10.0)).item())


def test_frechet_distance_closed_forms_float64():
    a = torch.randn(400, 5, generator=_gen(8), dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-9
    # b = 2a + 1: mean 2 mu + 1, covariance 4 Sigma, so d^2 = |mu + 1|^2 + tr(Sigma + 4 Sigma - 2 * 2 Sigma)
    b = 2 * a + 1
    want = (a.mean(0) + 1).pow(2).sum() + torch.cov(a.T).trace()
    assert frechet_distance(a, b) == pytest.approx(want.item(), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    shift = a + torch.tensor([3.0, 0, 0, 0, 0], dtype=torch.float64)  # a pure shift: only the mean term
    assert frechet_distance(a, shift) == pytest.approx(9.0, rel=1e-9)
    with pytest.raises(ValueError, match="at least two rows"):
        frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match="equal widths"):
        frechet_distance(a, a[:, :3])


def test_digit_features_are_the_hidden_layer():
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 7), torch.nn.ReLU(), torch.nn.Linear(7, 10))
    x = torch.rand(5, 1, 8, 8, generator=_gen())
    f = digit_features(clf, x)
    assert f.shape == (5, 7) and f.dtype == torch.float64 and (f >= 0).all()
    torch.testing.assert_close(f, torch.relu(clf[1](x.flatten(1))).double().detach())


def test_code_patches_are_the_mean_windows():
    x = torch.arange(2 * 64, dtype=torch.float64).reshape(2, 1, 8, 8)
    codes = torch.zeros(2, 4, 4, dtype=torch.long)
    codes[0, 1, 2] = 1
    codes[1, 1, 2] = 1
    windows, counts = code_patches(x, codes, 3, context=1)
    assert counts.tolist() == [30, 2, 0] and windows.shape == (3, 1, 4, 4)
    want = (x[0, 0, 1:5, 3:7] + x[1, 0, 1:5, 3:7]) / 2  # cell (1, 2) is pixels 2:4, 4:6, one pixel of context
    torch.testing.assert_close(windows[1, 0], want)
    assert torch.count_nonzero(windows[2]) == 0
    plain, _ = code_patches(x, codes, 3, context=0)
    torch.testing.assert_close(plain[1, 0], (x[0, 0, 2:4, 4:6] + x[1, 0, 2:4, 4:6]) / 2)
    with pytest.raises(ValueError, match="do not tile"):
        code_patches(x, codes[:, :3], 3)


def test_montage_layout():
    imgs = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 1, 2, 2)
    out = montage(imgs, 2)
    assert out.shape == (5, 5)
    assert out[0, 0] == 0 and out[0, 3] == 4 and out[3, 0] == 8
    assert torch.isnan(out[2]).all() and torch.isnan(out[3:, 3:]).all()
