"""Tests of kexue.flow: invertibility, log-dets against autograd Jacobians, LU vs slogdet, ActNorm's
data-dependent init, bits/dim, baselines, bad inputs, and parity with normflows (test extra)."""

from __future__ import annotations

import itertools
import math

import normflows as nf
import pytest
import torch
from torch import nn

from kexue import flow as F
from kexue.experiments.training import seeded_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def _perturb(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Zero-initialised last layers make couplings the identity; perturb so tests are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at a single example x of shape (1, ...) by autograd, float64."""
    def flat(v: torch.Tensor) -> torch.Tensor:
        return fn(v.view_as(x)).reshape(-1)

    jac = torch.autograd.functional.jacobian(flat, x.reshape(-1))
    return torch.linalg.slogdet(jac).logabsdet


def _image_layers() -> dict[str, nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return _build_image_layers(torch.Generator().manual_seed(3))


def _build_image_layers(g: torch.Generator) -> dict[str, nn.Module]:
    an = F.ActNorm(4)
    an.initialize(torch.randn(16, 4, 2, 2, dtype=torch.float64).float() * 2 + 1)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1))
    net_add = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh())
    return {
        "squeeze": F.Squeeze(),
        "reverse": F.Permutation(4, "reverse"),
        "shuffle": F.Permutation(4, "shuffle", g),
        "conv1x1": F.InvConv1x1(4, g),
        "conv1x1_lu": F.InvConv1x1LU(4, g),
        "actnorm": an,
        "checkerboard_affine": F.MaskedCoupling(F.checkerboard_mask(2, 2, 0), net, "exp"),
        "channel_mask_tanh": F.MaskedCoupling(F.channel_mask(4, 1).view(4, 1, 1), net, "tanh"),
        "checkerboard_additive": F.MaskedCoupling(F.checkerboard_mask(2, 2, 1), net_add, "additive"),
        "channel_sigmoid": F.ChannelCoupling(4, 8, "sigmoid"),
        "channel_additive": F.ChannelCoupling(4, 8, "additive"),
        "split_prior": F.SplitPrior(4),
        "learned_prior": F.LearnedPrior((4, 2, 2)),
        "glow_step_lu": F.GlowStep(4, 8, "lu", "sigmoid", True, g),
        "glow_step_conv_additive": F.GlowStep(4, 8, "conv", "additive", False, g),
    }


IMAGE_LAYERS = [
    "actnorm", "channel_additive", "channel_mask_tanh", "channel_sigmoid", "checkerboard_additive",
    "checkerboard_affine", "conv1x1", "conv1x1_lu", "glow_step_conv_additive", "glow_step_lu",
    "learned_prior", "reverse", "shuffle", "split_prior", "squeeze",
]


def test_the_layer_list_is_complete():
    assert sorted(_image_layers()) == IMAGE_LAYERS


@pytest.mark.parametrize("name", IMAGE_LAYERS)
def test_every_layer_inverts_in_float64(name):
    layer = _perturb(_image_layers()[name]).double().eval()
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, ld = layer(x)
    assert y.numel() == x.numel() and ld.shape == (3,)
    x_back, ld_inv = layer.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-10, rtol=0)
    assert torch.allclose(ld + ld_inv, torch.zeros(3, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("name", IMAGE_LAYERS)
def test_every_layer_logdet_matches_the_autograd_jacobian(name):
    layer = _perturb(_image_layers()[name]).double().eval()
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, ld = layer(x)
    ref = _jacobian_logdet(lambda v: layer(v)[0], x)
    assert torch.allclose(ld[0], ref, atol=1e-9), (ld, ref)
    # and the inverse direction
    y = layer(x)[0].detach()
    _, ld_inv = layer.inverse(y)
    ref_inv = _jacobian_logdet(lambda v: layer.inverse(v)[0], y)
    assert torch.allclose(ld_inv[0], ref_inv, atol=1e-9)


def test_vector_layers_invert_and_logdets_match_autograd():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    an = F.ActNorm(3)
    an.initialize(torch.randn(10, 3))
    layers = [
        F.MaskedCoupling(torch.tensor([1.0, 0.0, 1.0]), seeded_mlp([3, 8, 8, 6], seed=0), "exp"),
        F.InvConv1x1LU(3, g),
        F.InvConv1x1(3, g),
        an,
        F.Permutation(3, "shuffle", g),
    ]
    model = _perturb(F.FlowSequential(layers)).double()
    x = torch.randn(1, 3, dtype=torch.float64)
    _, ld = model(x)
    assert torch.allclose(ld[0], _jacobian_logdet(lambda v: model(v)[0], x), atol=1e-10)
    xb = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(model.inverse(model(xb)[0])[0], xb, atol=1e-10)


def test_composed_models_invert_and_logdet_matches_jacobian():
    m = _perturb(F.glow((1, 4, 4), levels=2, depth=2, hidden=4, seed=1), scale=0.2).double().eval()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    z, ld = m(x)
    assert z.shape == x.shape
    assert torch.allclose(m.inverse(z)[0], x, atol=1e-10)
    assert torch.allclose(ld[0], _jacobian_logdet(lambda v: m(v)[0], x), atol=1e-8)


@pytest.mark.parametrize("permutation", sorted(F.PERMUTATIONS))
@pytest.mark.parametrize("coupling", ["sigmoid", "additive", "exp"])
def test_glow_variants_invert(permutation, coupling):
    m = _perturb(F.glow((1, 8, 8), 2, 2, 8, permutation, coupling), scale=0.1)
    m = m.double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    z, ld = m(x)
    x_back, ld_inv = m.inverse(z)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(ld, -ld_inv, atol=1e-10)


def test_lu_and_slogdet_logdets_agree():
    g = torch.Generator().manual_seed(0)
    lu = _perturb(F.InvConv1x1LU(6, g)).double()
    w = lu.weight()
    fast = F.conv1x1_logdet_lu(lu.log_s, pixels=12)
    slow = F.conv1x1_logdet_slogdet(w, pixels=12)
    assert torch.allclose(fast, slow, atol=1e-10)
    # a plain layer loaded with the assembled matrix gives the same map and log-det
    plain = F.InvConv1x1(6).double()
    with torch.no_grad():
        plain.weight.copy_(w)
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    y1, l1 = lu(x)
    y2, l2 = plain(x)
    assert torch.allclose(y1, y2, atol=1e-12) and torch.allclose(l1, l2, atol=1e-10)
    assert torch.allclose(l1, fast.expand(2), atol=1e-10)


def test_lu_init_reconstructs_an_orthogonal_matrix():
    f = F.lu_init(5, torch.Generator().manual_seed(1))
    upper = f["U"] + torch.diag(f["sign_s"] * f["log_s"].exp())
    q = f["P"] @ f["L"] @ upper
    assert torch.allclose(q @ q.T, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.diagonal(f["L"]), torch.ones(5, dtype=torch.float64))
    assert abs(f["log_s"].sum()) < 1e-12  # |det Q| = 1


def test_actnorm_ddi_gives_zero_mean_unit_variance_per_channel():
    x = torch.randn(64, 3, 4, 4, dtype=torch.float64) * torch.tensor([0.1, 2.0, 5.0]).view(1, 3, 1, 1).double() + 3
    an = F.ActNorm(3).double()
    y, _ = an(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-4)
    # initialised once: a second, different batch is not re-normalised
    y2, _ = an(x * 2)
    assert not torch.allclose(y2.var(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=0.1)


def test_actnorm_state_dict_skips_ddi_and_eval_does_not_init():
    a = F.ActNorm(2)
    a(torch.randn(32, 2) * 3 + 1)
    b = F.ActNorm(2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 2)
    assert torch.equal(b(x)[0], a(x)[0])
    c = F.ActNorm(2).eval()
    assert torch.equal(c(x)[0], x)  # no init in eval mode: identity


def test_actnorm_constant_channel_is_finite():
    x = torch.randn(16, 2, 3, 3)
    x[:, 1] = 7.0  # std 0 (FrEIA #121 gives NaN here)
    y, ld = F.ActNorm(2)(x)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert torch.allclose(y[:, 1], torch.zeros_like(y[:, 1]))
    single = F.ActNorm(3)(torch.randn(1, 3))  # single sample, no spatial dims: every std is 0
    assert torch.isfinite(single[0]).all() and torch.equal(single[1], torch.zeros(1))


def test_squeeze_matches_reference_and_glow_ordering():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    y = F.squeeze2d(x)
    assert torch.equal(y, F.squeeze2d_reference(x))
    # channel c*4 + 2i + j holds pixel (2h + i, 2w + j) of channel c
    assert y[1, 2 * 4 + 2 * 1 + 0, 1, 2] == x[1, 2, 2 * 1 + 1, 2 * 2 + 0]
    assert torch.equal(F.unsqueeze2d(y), x)


def test_squeeze_roundtrip_property():
    # a property over a grid of shapes (hypothesis would leave a .hypothesis/ dir that the
    # project's norecursedirs turns into a collection error on the next run)
    for b, c, h, w, f in itertools.product((1, 2), (1, 3), (1, 2, 3), (1, 3), (1, 2, 3)):
        x = torch.randn(b, c, h * f, w * f)
        y = F.squeeze2d(x, f)
        assert y.shape == (b, c * f * f, h, w)
        assert torch.equal(F.unsqueeze2d(y, f), x)
        assert torch.equal(y, F.squeeze2d_reference(x, f))
        assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)  # a pure permutation


def test_masks():
    m0, m1 = F.checkerboard_mask(3, 4, 0), F.checkerboard_mask(3, 4, 1)
    assert torch.equal(m0 + m1, torch.ones(1, 1, 3, 4))
    i, j = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    assert torch.equal(m0[0, 0], ((i + j) % 2).float())
    assert torch.equal(F.channel_mask(4, 0), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(F.channel_mask(5, 0) + F.channel_mask(5, 1), torch.ones(5))


def test_masked_coupling_leaves_masked_part_unchanged():
    torch.manual_seed(0)
    layer = _perturb(F.MaskedCoupling(F.checkerboard_mask(4, 4), nn.Conv2d(2, 4, 3, padding=1), "exp"))
    x = torch.randn(2, 2, 4, 4)
    y, _ = layer(x)
    b = layer.mask
    assert torch.equal(y * b, x * b)
    assert not torch.allclose(y * (1 - b), x * (1 - b))


def test_zero_init_couplings_start_as_identity():
    x = torch.randn(3, 4, 4, 4)
    for kind in ("sigmoid", "additive", "exp", "tanh"):
        y, ld = F.ChannelCoupling(4, 8, kind)(x)
        if kind == "sigmoid":  # Glow's scale sigmoid(0 + 2) = 0.88 is not 1 at init
            assert torch.allclose(ld, torch.full((3,), 32 * math.log(torch.sigmoid(torch.tensor(2.0)).item())))
        else:
            assert torch.equal(y, x) and torch.equal(ld, torch.zeros(3))


def test_split_prior_is_the_conditional_gaussian_density():
    torch.manual_seed(0)
    sp = _perturb(F.SplitPrior(4)).double()
    x = torch.randn(5, 4, 2, 2, dtype=torch.float64)
    y, ld = sp(x)
    keep, out = x[:, :2], x[:, 2:]
    mu, log_sigma = sp.conv(keep).chunk(2, dim=1)
    direct = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(out).sum(dim=(1, 2, 3))
    via_flow = torch.distributions.Normal(0.0, 1.0).log_prob(y[:, 2:]).sum(dim=(1, 2, 3)) + ld
    assert torch.allclose(direct, via_flow, atol=1e-10)
    assert torch.equal(y[:, :2], keep)


def test_flow_log_prob_matches_change_of_variables_closed_form():
    # a flow made of one LearnedPrior is a diagonal Gaussian with mean mu and std sigma
    lp = F.LearnedPrior((3,)).double()
    with torch.no_grad():
        lp.mu.copy_(torch.tensor([1.0, -2.0, 0.5]))
        lp.log_sigma.copy_(torch.tensor([0.3, -0.2, 0.0]))
    model = F.Flow(lp, (3,))
    x = torch.randn(7, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(lp.mu, lp.log_sigma.exp()).log_prob(x).sum(1)
    assert torch.allclose(model.log_prob(x), ref, atol=1e-12)


def test_bits_per_dim_of_the_uniform_density_is_log2_levels():
    # the uniform density on the unit cube has log p = 0, so the bound is exactly log2(L)
    assert torch.allclose(F.bits_per_dim(torch.zeros(5, dtype=torch.float64), 64, 17),
                          torch.full((5,), math.log2(17), dtype=torch.float64), atol=1e-14)


def test_flow_bits_per_dim_uses_the_flow_log_prob():
    m = _perturb(F.glow((1, 4, 4), 2, 1, 4), scale=0.1).double().eval()
    v = torch.randint(0, 17, (6, 1, 4, 4))
    x = F.dequantize(v, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = (-m.log_prob(x) / 16 + math.log(17)) / math.log(2)
    assert torch.allclose(m.bits_per_dim(x, 17), ref, atol=1e-12)


def test_bits_per_dim_formula():
    # a standard normal flow on D dims: bits/dim = (-log p + D log L) / (D ln 2)
    x = torch.randn(4, 6, dtype=torch.float64)
    logp = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    ref = (-logp / 6 + math.log(256)) / math.log(2)
    assert torch.allclose(F.bits_per_dim(logp, 6, 256), ref)


def test_sampling_temperature_and_shapes():
    m = _perturb(F.glow((1, 8, 8), 2, 1, 4), scale=0.1).eval()
    s = m.sample(5, 0.7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 1, 8, 8) and torch.isfinite(s).all()
    s0a = m.sample(2, 0.0, generator=torch.Generator().manual_seed(0))
    s0b = m.sample(2, 0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s0a, s0b)  # T = 0 is the mode of every level's prior: deterministic
    same = m.sample(3, 1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(same, m.sample(3, 1.0, generator=torch.Generator().manual_seed(4)))


def test_glow_beats_uniform_on_digits_quickly():
    from kexue.data import load_digits

    v, _ = load_digits(scale=False)
    g = torch.Generator().manual_seed(0)
    model = F.glow((1, 8, 8), levels=2, depth=2, hidden=16, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        x = F.dequantize(v[torch.randint(0, 1500, (128,), generator=g)], 17, generator=g)
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        bpd = model.bits_per_dim(F.dequantize(v[1500:], 17, generator=g), 17).mean().item()
    assert bpd < math.log2(17) - 0.3  # uniform over the 17 levels


# ---------------------------------------------------------------- bad and degenerate inputs


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="factor"):
        F.squeeze2d(torch.randn(1, 1, 3, 4))
    with pytest.raises(ValueError, match="x"):
        F.squeeze2d(torch.randn(3, 4))
    with pytest.raises(ValueError, match="factor"):
        F.unsqueeze2d(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        F.InvConv1x1LU(4)(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        F.InvConv1x1(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="channels"):
        F.ActNorm(4)(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        F.Permutation(4)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="channels"):
        F.ChannelCoupling(4, 8)(torch.randn(2, 6, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        F.ChannelCoupling(1)
    with pytest.raises(ValueError, match="net"):
        F.MaskedCoupling(torch.tensor([1.0, 0.0]), nn.Linear(2, 3))(torch.randn(4, 2))
    with pytest.raises(ValueError, match="mask"):
        F.MaskedCoupling(torch.tensor([0.5, 0.0]), nn.Linear(2, 4))
    with pytest.raises(ValueError, match="coupling"):
        F.ChannelCoupling(4, 8, "spline")
    with pytest.raises(ValueError, match="permutation"):
        F.GlowStep(4, permutation="random")
    with pytest.raises(ValueError, match="kind"):
        F.Permutation(4, "sorted")
    with pytest.raises(ValueError, match="event_shape"):
        F.glow((1, 6, 6), levels=2)
    with pytest.raises(ValueError, match="x"):
        F.glow((1, 8, 8), 1, 1, 4)(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="x"):
        F.Flow(F.FlowSequential([]), (2,))(torch.randn(0, 2))
    with pytest.raises(TypeError, match="x"):
        F.Flow(F.FlowSequential([]), (2,))(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="levels"):
        F.bits_per_dim(torch.zeros(2), 4, 1)
    with pytest.raises(ValueError, match="dims"):
        F.bits_per_dim(torch.zeros(2), 0, 17)
    with pytest.raises(ValueError, match="v"):
        F.dequantize(torch.tensor([0.0, 17.0]), 17)
    with pytest.raises(ValueError, match="v"):
        F.dequantize(torch.tensor([0.5]), 17)
    with pytest.raises(ValueError, match="temperature"):
        F.glow((1, 4, 4), 2, 1, 4).sample(3, -1.0)
    with pytest.raises(ValueError, match="parity"):
        F.checkerboard_mask(2, 2, 2)
    with pytest.raises(ValueError, match="weight"):
        F.conv1x1_logdet_slogdet(torch.randn(2, 3))


def test_degenerate_inputs():
    # single example, zero input
    m = F.glow((1, 4, 4), 2, 1, 4).eval()
    z, ld = m(torch.zeros(1, 1, 4, 4))
    assert torch.isfinite(z).all() and torch.isfinite(ld).all()
    # an empty coupling chain is the identity with log-det 0
    ident = F.FlowSequential([])
    x = torch.randn(3, 2)
    assert torch.equal(ident(x)[0], x) and torch.equal(ident(x)[1], torch.zeros(3))


# ---------------------------------------------------------------- parity with normflows 1.7.3
# normflows names the latent -> data direction "forward"; ours is data -> latent.


def test_parity_actnorm_with_normflows():
    torch.manual_seed(0)
    theirs = nf.flows.ActNorm((3, 1, 1)).double()
    with torch.no_grad():
        theirs.s.copy_(torch.randn(1, 3, 1, 1))
        theirs.t.copy_(torch.randn(1, 3, 1, 1))
    theirs.data_dep_init_done = torch.tensor(1.0)
    ours = F.ActNorm(3, ddi=False).double()
    with torch.no_grad():  # their data -> latent map is (x - t) e^{-s}: ours with log_s = -s, b = -t
        ours.log_s.copy_(-theirs.s.view(3))
        ours.bias.copy_(-theirs.t.view(3))
    x = torch.randn(4, 3, 5, 2, dtype=torch.float64)
    z_t, ld_t = theirs.inverse(x)
    z_o, ld_o = ours(x)
    assert torch.allclose(z_o, z_t, atol=1e-12)
    assert torch.allclose(ld_o, ld_t.expand(4), atol=1e-12)


@pytest.mark.filterwarnings("ignore:torch.lu is deprecated:UserWarning")
def test_parity_lu_1x1_conv_with_normflows():
    torch.manual_seed(0)
    theirs = _perturb(nf.flows.Invertible1x1Conv(4, use_lu=True), scale=0.1).double()
    ours = F.InvConv1x1LU(4).double()
    with torch.no_grad():
        ours.P.copy_(theirs.P)
        ours.sign_s.copy_(theirs.sign_S)
        ours.L.copy_(theirs.L)
        ours.U.copy_(theirs.U)
        ours.log_s.copy_(theirs.log_S)
    x = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    z_t, ld_t = theirs.inverse(x)  # their data -> latent
    z_o, ld_o = ours(x)
    assert torch.allclose(z_o, z_t, atol=1e-12)
    assert torch.allclose(ld_o, ld_t.expand(3), atol=1e-12)
    x_t, ild_t = theirs(z_o)  # their latent -> data
    x_o, ild_o = ours.inverse(z_o)
    assert torch.allclose(x_o, x_t, atol=1e-10) and torch.allclose(ild_o, ild_t.expand(3), atol=1e-12)


class _Interleave(nn.Module):
    """Feed our (log_s | t) net to normflows, which reads shift = h[:, 0::2], scale = h[:, 1::2]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_s, t = self.net(x).chunk(2, dim=1)
        return torch.stack([t, log_s], dim=2).flatten(1, 2)


def test_parity_affine_coupling_with_normflows():
    torch.manual_seed(0)
    ours = _perturb(F.ChannelCoupling(4, 8, "exp")).double()
    theirs = nf.flows.AffineCoupling(_Interleave(ours.net), scale=True, scale_map="exp").double()
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    (z1, z2), ld_t = theirs([x[:, :2], x[:, 2:]])  # their z2 * e^s + shift is our data -> latent map
    y, ld_o = ours(x)
    assert torch.allclose(y, torch.cat([z1, z2], 1), atol=1e-12)
    assert torch.allclose(ld_o, ld_t, atol=1e-12)


def test_model_builders_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = F.glow((1, 8, 8), 2, 1, 4, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = F.glow((1, 8, 8), 2, 1, 4, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
