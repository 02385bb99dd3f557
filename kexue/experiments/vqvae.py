r"""What the VQ-VAE page needs to test the article on 8×8 digits: a small model, seeds trained side by side, baselines.

The article's math (nearest code, straight-through, the losses, EMA, restarts, the prior) lives
in [`kexue.vqvae`][kexue.vqvae]. This module holds the page's apparatus:

* [`VQVAE`][kexue.experiments.vqvae.VQVAE], a small convolutional stand-in for Su's CelebA model
  (an 8×8 digit becomes a 4×4 grid of codes), and
  [`StackedVQVAE`][kexue.experiments.vqvae.StackedVQVAE], which trains several of them (seeds,
  codebook variants, β values) as one network with grouped convolutions, so that three seeds do
  not cost three training loops;
* [`train_vqvaes`][kexue.experiments.vqvae.train_vqvaes], which runs them through the shared
  [`fit`][kexue.experiments.training.fit] loop with one loss callback,
  [`vqvae_loss`][kexue.experiments.vqvae.vqvae_loss], and the codebook variants of the page as a
  registry of configurations, [`VARIANTS`][kexue.experiments.vqvae.VARIANTS];
* the equal-bits baseline ([`patch_kmeans`][kexue.experiments.vqvae.patch_kmeans] on 2×2 patches),
  the priors' training ([`train_priors`][kexue.experiments.vqvae.train_priors]) and their unigram
  baseline, a digit classifier that scores decoded samples
  ([`digit_confidence`][kexue.experiments.vqvae.digit_confidence],
  [`frechet_distance`][kexue.experiments.vqvae.frechet_distance] of its features), and the mean input patch of
  each code ([`code_patches`][kexue.experiments.vqvae.code_patches]).

Examples:
    >>> import torch
    >>> from kexue.data import load_digits
    >>> from kexue.experiments.vqvae import evaluate_vqvae, train_vqvaes
    >>> x, _ = load_digits()
    >>> runs = train_vqvaes(x[:256], {"ema": {"update": "ema", "init": "kmeans"}}, seeds=(0, 1),
    ...                     num_codes=16, dim=8, hidden=16, epochs=8, batch_size=32, lr=1e-2)
    >>> sorted(runs.models), runs.history["recon"].shape  # (steps, members)
    ([('ema', 0), ('ema', 1)], torch.Size([64, 2]))
    >>> scores = evaluate_vqvae(runs.models["ema", 0], x[:256], x[256:512])
    >>> mean_image = ((x[256:512] - x[:256].mean(0)) ** 2).mean().item()
    >>> scores["mse"] < 0.6 * mean_image, scores["codes_test"].shape
    (True, torch.Size([256, 4, 4]))
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import warnings
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_int, check_real, check_tensor
from kexue.experiments.training import LOSSES, LossFn, evaluating, fit, seeded_mlp
from kexue.vqvae import (
    CODEBOOK_INITS,
    CodePrior,
    Quantized,
    VectorQuantizer,
    _finite_extent,
    _largest,
    codebook_init,
    dead_codes,
    kmeans,
    nearest_code,
    perplexity,
    quantize,
)

__all__ = [
    "VQVAE",
    "StackedVQVAE",
    "VARIANTS",
    "VQVAERuns",
    "vqvae_loss",
    "train_vqvaes",
    "evaluate_vqvae",
    "images_to_patches",
    "patches_to_images",
    "patch_kmeans",
    "StackedCodePrior",
    "prior_loss",
    "train_priors",
    "unigram_bits",
    "train_digit_classifier",
    "digit_confidence",
    "digit_features",
    "frechet_distance",
    "code_patches",
    "montage",
]


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------


def _check_images(x: object, name: str, *, channels: int | None = 1, pixels: bool = False, even: bool = False,
                  nonempty: bool = True) -> Tensor:  # fmt: skip
    """A floating ``(B, C, H, W)`` batch without NaN/inf; ``pixels``: values in [0, 1]; ``even``: even sides."""
    check_tensor(x, name, 4, floating=True, nonempty=nonempty)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if even and (x.shape[2] % 2 or x.shape[3] % 2 or min(x.shape[2:]) < 2):
        raise ValueError(
            f"{name} must have even height and width >= 2 (the encoder halves them, the decoder doubles them "
            f"back), got {tuple(x.shape)}"
        )
    if pixels:
        _finite_extent(x, name, at_least=0.0, at_most=1.0, what="pixel values (the decoder ends in a sigmoid)")
    else:
        _finite_extent(x, name)
    return x


def _check_model_dtype(x: Tensor, model: nn.Module, name: str) -> None:
    want = next(model.parameters()).dtype
    if x.dtype != want:
        raise TypeError(f"{name} ({x.dtype}) must have the model's dtype ({want}): convert {name}, or the model with .to()")


def _check_seeds(seeds: object, name: str = "seeds") -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"{name} must be a non-empty sequence of integer seeds, got {seeds!r}")
    return [check_int(s, f"{name}[{i}]", 0) for i, s in enumerate(seeds)]


def _check_codes_range(codes: Tensor, num_codes: int, name: str) -> None:
    if codes.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got torch.bool")
    lo, hi = (int(v) for v in codes.aminmax())
    if lo < 0 or hi >= num_codes:
        raise ValueError(f"{name} must lie in [0, {num_codes - 1}], got range [{lo}, {hi}]")


def _check_model(model: object, kind: type, name: str) -> Any:
    if not isinstance(model, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(model).__name__}")
    return model


# ----------------------------------------------------------------------------------------------
# the digit model
# ----------------------------------------------------------------------------------------------


class VQVAE(nn.Module):
    """A small convolutional VQ-VAE for 8x8 images: a 4x4 grid of ``dim``-vectors, one code each.

    Encoder: Conv(1->h, 4x4, stride 2) - ReLU - Conv(h->D, 3x3); decoder: Conv(D->h, 3x3) - ReLU -
    ConvTranspose(h->1, 4x4, stride 2) - sigmoid (pixels in [0, 1]). Reconstruction loss: MSE
    (mean over pixels). Images must have even sides (an odd side would come back one pixel
    short) and pixel values in [0, 1], the decoder's range. A CPU-sized stand-in for Su's CelebA model (two stride-2 convolutions and
    residual blocks, 128×128×3 images to a 32×32 grid).

    Args:
        num_codes: Codebook size $K$.
        dim: Code dimension $D$.
        hidden: Channels of the hidden layers.
        kernel: Kernel size (odd) of the encoder's last and the decoder's first convolution, the
            ones on the code grid: 3 lets every code see, and be painted with, its neighbours.
        seed: Seed of all initial weights (>= 0).
        **vq: Passed to [`VectorQuantizer`][kexue.vqvae.VectorQuantizer] (``update``, ``beta``,
            ``decay``, ``eps``, ``dead_threshold``, ``init``).

    Raises:
        ValueError: On non-positive sizes, an even ``kernel``, a negative ``seed`` or a bad
            quantizer argument (see [`VectorQuantizer`][kexue.vqvae.VectorQuantizer]).
    """

    def __init__(
        self, num_codes: int = 32, dim: int = 16, hidden: int = 32, *, kernel: int = 3, seed: int = 0, **vq: Any
    ) -> None:
        super().__init__()
        check_int(num_codes, "num_codes")
        check_int(dim, "dim")
        check_int(hidden, "hidden")
        check_int(kernel, "kernel")
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (the grid keeps its size), got {kernel}")
        check_int(seed, "seed", 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(
                nn.Conv2d(1, hidden, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(hidden, dim, kernel, padding=kernel // 2),
            )  # fmt: skip
            self.decoder = nn.Sequential(
                nn.Conv2d(dim, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                nn.ConvTranspose2d(hidden, 1, 4, stride=2, padding=1), nn.Sigmoid(),
            )  # fmt: skip
        self.quantizer = VectorQuantizer(num_codes, dim, seed=seed, **vq)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Quantized]:
        """Return ``(x_hat, z_e, quantized)`` for images ``x`` of shape ``(B, 1, H, W)`` (e.g. 8x8).

        Raises:
            ValueError: If ``x`` is empty, not ``(B, 1, H, W)`` with even ``H`` and ``W``, or holds
                values outside [0, 1] (NaN/inf included).
            TypeError: If ``x`` is not a floating tensor.
        """
        self._check_images(x, "x")
        z = self.encoder(x)
        q = self.quantizer(z)
        return self.decoder(q.z_st), z, q

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Code grid ``(B, H/2, W/2)`` of images ``x`` ``(B, 1, H, W)``; an empty batch gives an empty grid.

        Raises:
            ValueError, TypeError: As [`forward`][kexue.experiments.vqvae.VQVAE.forward].
        """
        return self._encode(self._check_images(x, "x", nonempty=False))

    def _check_images(self, x: Tensor, name: str, *, nonempty: bool = True) -> Tensor:
        _check_images(x, name, pixels=True, even=True, nonempty=nonempty)
        _check_model_dtype(x, self, name)
        return x

    @torch.no_grad()
    def _encode(self, x: Tensor) -> Tensor:
        return nearest_code(self.encoder(x).movedim(1, -1), self.quantizer.codebook)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Images ``(B, 1, 2h, 2w)`` from a code grid ``(B, h, w)``: look up the codes and run the decoder.

        An empty batch of grids decodes to an empty batch of images.

        Raises:
            TypeError: If ``codes`` is not an integer tensor.
            ValueError: If ``codes`` is not 3-D or holds a code outside ``[0, num_codes)``.
        """
        check_tensor(codes, "codes", 3, floating=False)
        if codes.numel():
            _check_codes_range(codes, self.quantizer.num_codes, "codes")
        return self.decoder(F.embedding(codes.long(), self.quantizer.codebook).movedim(-1, 1))


def _stack_conv(convs: Sequence[nn.Conv2d | nn.ConvTranspose2d]) -> nn.Conv2d | nn.ConvTranspose2d:
    """One grouped convolution computing ``len(convs)`` independent ones side by side."""
    c = convs[0]
    s = len(convs)
    kind = type(c)
    out = kind(
        c.in_channels * s, c.out_channels * s, c.kernel_size, stride=c.stride, padding=c.padding,
        groups=s, dtype=c.weight.dtype,
    )  # fmt: skip
    with torch.no_grad():  # both kinds keep the grouped axis first: (S*out, in, k, k) or (S*in, out, k, k)
        out.weight.copy_(torch.cat([m.weight for m in convs]))
        out.bias.copy_(torch.cat([m.bias for m in convs]))
    return out


def _unstack_conv(stacked: nn.Conv2d | nn.ConvTranspose2d, convs: Sequence[nn.Conv2d | nn.ConvTranspose2d]) -> None:
    with torch.no_grad():
        for m, w, b in zip(convs, stacked.weight.chunk(len(convs)), stacked.bias.chunk(len(convs)), strict=True):
            m.weight.copy_(w)
            m.bias.copy_(b)


class StackedVQVAE(nn.Module):
    r"""Several [`VQVAE`][kexue.experiments.vqvae.VQVAE]s trained side by side as one network.

    Member $s$ reads channel $s$ of the input. Each convolution becomes one grouped convolution
    (``groups`` = number of members), so member $s$'s encoder and decoder only ever see channel
    $s$. Quantisation runs [`quantize`][kexue.vqvae.quantize] on every member at once with
    ``torch.func.vmap`` (member $s$'s vectors against member $s$'s codebook only), then weights
    each member's two VQ losses as its own [`VectorQuantizer`][kexue.vqvae.VectorQuantizer] would:
    codebook weight 1 for ``update="loss"`` and 0 for ``"ema"``, commitment weight its ``beta``.
    The quantizers are the members' own module objects, so they may differ in update rule,
    initialisation and $\beta$, and their codebooks are trained in place.

    The loss of the stack is the sum of the members' losses, and Adam's update is per element,
    so training the stack is training each member on its own (the tests check this against a
    plain loop over one [`VQVAE`][kexue.experiments.vqvae.VQVAE]). The point is speed: one pass
    through the network per step instead of one per member.

    Args:
        members: The models to stack (same ``hidden``, ``dim``, ``kernel``, codebook size and
            image size); their initial weights are copied in.

    Raises:
        ValueError: If ``members`` is empty or the members differ in shape.
        TypeError: If ``members`` is not a sequence of [`VQVAE`][kexue.experiments.vqvae.VQVAE]s.
    """

    def __init__(self, members: Sequence[VQVAE]) -> None:
        super().__init__()
        if isinstance(members, (str, bytes)) or not isinstance(members, Sequence):
            raise TypeError(f"members must be a sequence of VQVAE models, got {type(members).__name__}")
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one VQVAE")
        for i, m in enumerate(members):
            _check_model(m, VQVAE, f"members[{i}]")
        shapes = {
            (tuple(p.shape for p in (*m.encoder.parameters(), *m.decoder.parameters())), m.quantizer.codebook.shape)
            for m in members
        }
        if len(shapes) != 1:
            raise ValueError(f"members must share hidden width and code dimension, got {len(shapes)} different shapes")
        self.size = len(members)
        self._members = members  # plain list: the members' own weights are not parameters of the stack
        self.encoder = nn.Sequential(
            _stack_conv([m.encoder[0] for m in members]), nn.ReLU(), _stack_conv([m.encoder[2] for m in members])
        )
        self.decoder = nn.Sequential(
            _stack_conv([m.decoder[0] for m in members]), nn.ReLU(),
            _stack_conv([m.decoder[2] for m in members]), nn.Sigmoid(),
        )  # fmt: skip
        self.quantizers = nn.ModuleList(m.quantizer for m in members)
        dtype = members[0].quantizer.codebook.dtype
        weights = [1.0 if m.quantizer.update == "loss" else 0.0 for m in members]
        self.register_buffer("codebook_weights", torch.tensor(weights, dtype=dtype), persistent=False)
        self.register_buffer("betas", torch.tensor([m.quantizer.beta for m in members], dtype=dtype), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Quantized]:
        """Run every member on its channel of ``x``.

        Returns:
            ``(x_hat, z_e, quantized)``: ``x_hat`` like ``x``; the encoder outputs channels-last,
            one row per member; a [`Quantized`][kexue.vqvae.Quantized] whose fields carry the
            member axis first (``loss`` is each member's weighted VQ loss).

        Shapes:
            x, x_hat: ``(B, S, H, W)``; z_e: ``(S, B, h, w, D)``; quantized.indices: ``(S, B, h, w)``;
            quantized losses: ``(S,)``.

        Raises:
            ValueError: As [`VQVAE.forward`][kexue.experiments.vqvae.VQVAE.forward], with one
                channel per member; also if the encoder outputs are NaN/inf or too large for the
                losses (a diverged model).
            TypeError: If ``x`` is not a floating tensor.
        """
        check_tensor(x, "x", 4, floating=True)
        if x.shape[1] != self.size:
            raise ValueError(f"x must have one channel per member, shape (B, {self.size}, H, W), got {tuple(x.shape)}")
        _check_images(x, "x", channels=None, pixels=True, even=True)
        _check_model_dtype(x, self, "x")
        if x.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"x must be float32 or float64 (the stacked quantizer compares codes in x's dtype), got {x.dtype}")
        z = self.encoder(x)  # (B, S*D, h, w)
        b, _, h, w = z.shape
        z = z.reshape(b, self.size, -1, h, w).permute(1, 0, 3, 4, 2)  # (S, B, h, w, D)
        codebooks = torch.stack([vq.codebook for vq in self.quantizers])  # (S, K, D)
        # quantize's data checks cannot run under vmap: the same ones here, once for every member
        m = max(_largest(z, "the encoder outputs z"), _largest(codebooks, "the codebooks"))
        if m > math.sqrt(torch.finfo(z.dtype).max / (4 * z.shape[-1])):
            raise ValueError(f"the encoder outputs or codebooks reach {m:.3g}, too large for {z.dtype} squared distances "
                             "(has training diverged? lower lr)")  # fmt: skip
        q = torch.func.vmap(functools.partial(quantize, validate_args=False))(z, codebooks)
        q = q._replace(loss=self.codebook_weights * q.codebook_loss + self.betas * q.commitment_loss)
        z_st = q.z_st.permute(1, 0, 4, 2, 3).reshape(b, -1, h, w)  # (B, S*D, h, w), members in channel blocks
        return self.decoder(z_st), z, q

    def unstack(self) -> list[VQVAE]:
        """Copy the trained weights back into the member models and return them (codebooks are shared already)."""
        for i in (0, 2):
            _unstack_conv(self.encoder[i], [m.encoder[i] for m in self._members])
            _unstack_conv(self.decoder[i], [m.decoder[i] for m in self._members])
        return list(self._members)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


VARIANTS: dict[str, dict[str, Any]] = {
    "(a) loss codebook": {"update": "loss", "init": "normal"},
    "(b) EMA": {"update": "ema", "init": "normal"},
    "(c) EMA + k-means + restarts": {"update": "ema", "init": "kmeans", "dead_threshold": 1.0},
}
r"""The codebook variants of the page, as configurations (no flags inside the loop).

Each entry holds the [`VectorQuantizer`][kexue.vqvae.VectorQuantizer] arguments plus ``init``, a
key of [`CODEBOOK_INITS`][kexue.vqvae.CODEBOOK_INITS] applied to the encoder outputs of a first
batch (the data-free ``"normal"`` init uses only their width). (a) is the paper's loss-updated
codebook, (b) the EMA codebook of its appendix A.1 with the same data-free start, (c) EMA with a
k-means start and restarts of codes whose EMA count falls below one vector per step (the
practitioners' fixes). A β sweep adds ``"beta"`` to a configuration.
"""


def vqvae_loss(history: dict[str, list[list[float]]] | None = None) -> LossFn:
    r"""The VQ-VAE training loss for [`fit`][kexue.experiments.training.fit], as a callback.

    $$\mathcal L = \sum_s \Big(\mathrm{mse}(x_s, \hat x_s) + \mathcal L_{\text{VQ}, s}\Big)$$

    over the members $s$ of a [`StackedVQVAE`][kexue.experiments.vqvae.StackedVQVAE]. After the
    forward pass each member's codebook takes its own step from the same batch
    ([`update_codebook`][kexue.vqvae.VectorQuantizer.update_codebook]: EMA and/or restarts, using
    the run's generator). That step touches only buffers (EMA) or rows no vector chose (restarts),
    so the gradient of this batch is unaffected.

    Args:
        history: If given, every step appends one list (a value per member) to ``"recon"`` (MSE),
            ``"perplexity"`` and ``"used"`` (distinct codes in the batch) and ``"restarts"``.

    Returns:
        ``loss_fn(model, xb, yb, *, generator, epoch)``; ``yb`` is ignored (an autoencoder).

    Raises:
        TypeError: If ``history`` is neither None nor a dict.
    """
    if history is not None and not isinstance(history, MutableMapping):
        raise TypeError(f"history must be None or a dict to append the training curves to, got {type(history).__name__}")
    if history is not None:
        for key in ("recon", "perplexity", "used", "restarts"):
            history.setdefault(key, [])

    def loss_fn(model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
        x_hat, z, q = model(xb)
        recon = (x_hat - xb).pow(2).mean(dim=(0, 2, 3))  # (S,): each member's mean over its pixels
        loss = recon.sum() + q.loss.sum()
        restarts = [
            vq.update_codebook(z[s].movedim(-1, 1), q.indices[s], generator=generator)
            for s, vq in enumerate(model.quantizers)
        ]
        if history is not None:
            with torch.no_grad():  # code usage of every member from one bincount
                size, k = q.indices.shape[0], model.quantizers[0].num_codes
                idx = q.indices.reshape(size, -1) + torch.arange(size)[:, None] * k
                counts = torch.bincount(idx.reshape(-1), minlength=size * k).reshape(size, k)
                p = counts / counts.sum(1, keepdim=True)
                ppl = torch.exp(-torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(1))
            history["recon"].append(recon.detach().tolist())
            history["perplexity"].append(ppl.tolist())
            history["used"].append((counts > 0).sum(1).double().tolist())
            history["restarts"].append([float(r) for r in restarts])
        return loss

    return loss_fn


@dataclass(frozen=True)
class VQVAERuns:
    """Trained models of [`train_vqvaes`][kexue.experiments.vqvae.train_vqvaes] and their training curves.

    Attributes:
        models: ``(variant name, seed) -> VQVAE``.
        members: The ``(variant name, seed)`` keys in stack order (the columns of ``history``).
        history: ``"recon"``, ``"perplexity"``, ``"used"``, ``"restarts"``: float tensors
            ``(steps, members)``.
        epoch_loss: Total loss of the stack per epoch (from ``fit``).
    """

    models: dict[tuple[str, int], VQVAE]
    members: list[tuple[str, int]]
    history: dict[str, Tensor]
    epoch_loss: list[float]

    def curve(self, key: str, name: str, seed: int) -> Tensor:
        """The per-step ``history[key]`` of one member, ``(steps,)``.

        Raises:
            ValueError: If ``key`` is not a recorded curve or ``(name, seed)`` not a trained member.
        """
        if not isinstance(key, str) or key not in self.history:
            raise ValueError(f"key must be one of {sorted(self.history)}, got {key!r}")
        if (name, seed) not in self.members:
            raise ValueError(f"(name, seed) must be a trained member, one of {self.members}, got {(name, seed)!r}")
        return self.history[key][:, self.members.index((name, seed))]


_VARIANT_KEYS = frozenset(p for p in inspect.signature(VectorQuantizer).parameters if p not in ("num_codes", "dim", "seed"))


def _check_variants(variants: object) -> None:
    if not isinstance(variants, Mapping):
        raise TypeError(f"variants must be a mapping of name -> VectorQuantizer arguments, got {variants!r}")
    if not variants:
        raise ValueError("variants must be non-empty: at least one name -> VectorQuantizer arguments")
    for name, cfg in variants.items():
        if not isinstance(cfg, Mapping):
            raise TypeError(f"variants[{name!r}] must be a mapping of VectorQuantizer arguments, got {type(cfg).__name__}")
        unknown = sorted(set(cfg) - _VARIANT_KEYS)
        if unknown:
            raise ValueError(f"variants[{name!r}] has unknown arguments {unknown}; known: {sorted(_VARIANT_KEYS)}")
        if cfg.get("init", "normal") not in CODEBOOK_INITS:
            raise ValueError(f"variants[{name!r}]['init'] must be one of {sorted(CODEBOOK_INITS)}, got {cfg['init']!r}")


def train_vqvaes(
    x: Tensor,
    variants: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    num_codes: int = 32,
    dim: int = 16,
    hidden: int = 32,
    kernel: int = 3,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 5e-3,
    init_batch: int = 128,
    fit_seed: int = 0,
) -> VQVAERuns:
    """Train every (variant, seed) pair as one [`StackedVQVAE`][kexue.experiments.vqvae.StackedVQVAE].

    Seed $s$ fixes the member's initial weights and codebook, the first batch its codebook
    initialiser sees, and its own order of the data: member $s$ reads ``x[perm_s]`` in the
    column it owns, so the shared shuffle of ``fit`` gives every seed a different sequence of
    minibatches while variants with the same seed see the same ones (a paired comparison).

    Args:
        x: Training images ``(N, 1, 8, 8)`` in [0, 1].
        variants: Name -> [`VectorQuantizer`][kexue.vqvae.VectorQuantizer] arguments plus
            ``init`` (a [`CODEBOOK_INITS`][kexue.vqvae.CODEBOOK_INITS] key), e.g.
            [`VARIANTS`][kexue.experiments.vqvae.VARIANTS].
        seeds: The seeds, each trained for every variant.
        num_codes: Codebook size $K$.
        dim: Code dimension $D$.
        hidden: Hidden channels.
        kernel: Kernel size of the convolutions on the code grid.
        epochs: Passes over ``x``.
        batch_size: Minibatch size.
        lr: Adam learning rate.
        init_batch: Images whose encoder outputs initialise the codebook.
        fit_seed: Seed of ``fit``'s shuffle and of the restarts.

    Returns:
        A [`VQVAERuns`][kexue.experiments.vqvae.VQVAERuns] with the trained models (eval mode).

    Raises:
        ValueError: On empty ``variants``/``seeds``, a variant with an unknown argument, images of
            the wrong shape (odd sides included) or outside [0, 1], or bad sizes and rates.
        TypeError: If ``x`` is not a floating tensor or ``variants`` not a mapping of mappings.
    """
    _check_images(x, "x", pixels=True, even=True)
    _check_variants(variants)
    seeds = _check_seeds(seeds)
    for value, name in ((num_codes, "num_codes"), (dim, "dim"), (hidden, "hidden"), (kernel, "kernel"),
                        (epochs, "epochs"), (batch_size, "batch_size"), (init_batch, "init_batch")):  # fmt: skip
        check_int(value, name)
    check_real(lr, "lr", above=0)
    check_int(fit_seed, "fit_seed", 0)
    n = x.shape[0]
    members: list[tuple[str, int]] = []
    models: list[VQVAE] = []
    columns: list[Tensor] = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        for name, cfg in variants.items():
            cfg = dict(cfg)
            init = cfg.pop("init", "normal")
            model = VQVAE(num_codes, dim, hidden, kernel=kernel, seed=seed, **cfg)
            with torch.no_grad():
                z0 = model.encoder(x[perm[:init_batch]]).movedim(1, -1)
            g_init = torch.Generator().manual_seed(seed)
            model.quantizer.set_codebook(codebook_init(init, z0, num_codes, generator=g_init))
            members.append((name, seed))
            models.append(model)
            columns.append(x[perm, 0])
    stack = StackedVQVAE(models)
    xs = torch.stack(columns, dim=1)  # (N, S, H, W): member s reads its own permutation of x
    hist: dict[str, list[list[float]]] = {}
    epoch_loss = fit(stack, xs, xs, vqvae_loss(hist), epochs=epochs, batch_size=batch_size, lr=lr, seed=fit_seed)
    trained = stack.unstack()
    for m in trained:
        m.eval()
    return VQVAERuns(
        dict(zip(members, trained, strict=True)),
        members,
        {k: torch.tensor(v, dtype=torch.float64) for k, v in hist.items()},
        epoch_loss,
    )


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, x_train: Tensor, x_test: Tensor) -> dict[str, Any]:
    """Test MSE, test perplexity and unused codes over the training set of a trained model.

    Returns:
        ``mse`` (test reconstruction error through the codes), ``perplexity`` (of the test codes),
        ``dead`` (codes no training vector uses), and the code grids ``codes_train``, ``codes_test``.

    Raises:
        TypeError: If ``model`` is not a [`VQVAE`][kexue.experiments.vqvae.VQVAE].
        ValueError, TypeError: For image sets the model cannot encode (see
            [`VQVAE.forward`][kexue.experiments.vqvae.VQVAE.forward]) or an empty one.
    """
    _check_model(model, VQVAE, "model")
    codes_tr = model._encode(model._check_images(x_train, "x_train"))
    codes_te = model._encode(model._check_images(x_test, "x_test"))
    k = model.quantizer.num_codes
    return {
        "mse": F.mse_loss(model.decode(codes_te), x_test).item(),
        "perplexity": perplexity(codes_te, k),
        "dead": dead_codes(codes_tr, k),
        "codes_train": codes_tr,
        "codes_test": codes_te,
    }


# ----------------------------------------------------------------------------------------------
# the equal-bits baseline: k-means on image patches
# ----------------------------------------------------------------------------------------------


def images_to_patches(x: Tensor, patch: int = 2) -> Tensor:
    """Cut images into non-overlapping ``patch x patch`` tiles, flattened, in raster order.

    Shapes:
        x: ``(B, C, H, W)`` with H, W divisible by ``patch``; returns ``(B, H/p, W/p, C*p*p)``.

    Raises:
        ValueError: If ``x`` is not 4-D or its sides are not divisible by ``patch``.
    """
    check_tensor(x, "x", 4)
    check_int(patch, "patch")
    if x.shape[2] % patch or x.shape[3] % patch:
        raise ValueError(f"x must be (B, C, H, W) with H, W divisible by patch={patch}, got {tuple(x.shape)}")
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return t.permute(0, 2, 4, 1, 3, 5).reshape(b, h // patch, w // patch, c * patch * patch)


def patches_to_images(p: Tensor, channels: int = 1) -> Tensor:
    """Inverse of [`images_to_patches`][kexue.experiments.vqvae.images_to_patches].

    Shapes:
        p: ``(B, h, w, C*p*p)``; returns ``(B, C, h*p, w*p)``.

    Raises:
        ValueError: If the last axis is not ``channels`` times a square.
    """
    check_tensor(p, "p", 4)
    check_int(channels, "channels")
    b, h, w, d = p.shape
    patch = math.isqrt(d // channels)
    if channels * patch * patch != d:
        raise ValueError(f"p's last axis {d} is not channels * patch**2 for channels={channels}")
    t = p.reshape(b, h, w, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, channels, h * patch, w * patch)


def patch_kmeans(
    x_train: Tensor, x_test: Tensor, num_codes: int, *, seed: int = 0, iters: int = 25, patch: int = 2
) -> dict[str, Any]:
    """The baseline at equal bits: k-means on ``patch x patch`` tiles, identity encoder and decoder.

    Each test image becomes its grid of tiles, each tile its nearest centre; the reconstruction
    pastes the centres back.

    Args:
        x_train: Images the centres are fitted on, ``(N, C, H, W)``.
        x_test: Images to code, ``(M, C, H, W)``.
        num_codes: Number of centres $K$.
        seed: Seed of the k-means++ start.
        iters: Lloyd iterations.
        patch: Tile side.

    Returns:
        ``mse`` (test), ``perplexity`` (of the test codes), ``recon`` ``(M, C, H, W)``, ``centres``.

    Raises:
        ValueError: On empty image sets, NaN/inf pixels, sides not divisible by ``patch``, test
            images of another channel count, or bad sizes.
        TypeError: If an image set is not a floating tensor.
    """
    _check_images(x_train, "x_train", channels=None)
    _check_images(x_test, "x_test", channels=x_train.shape[1])
    check_int(num_codes, "num_codes")
    check_int(seed, "seed", 0)
    check_int(iters, "iters", 0)
    check_int(patch, "patch")
    for x, name in ((x_train, "x_train"), (x_test, "x_test")):
        if x.shape[2] % patch or x.shape[3] % patch:
            raise ValueError(f"{name} must have sides divisible by patch={patch}, got {tuple(x.shape)}")
    if x_test.dtype != x_train.dtype:
        raise TypeError(f"x_test ({x_test.dtype}) and x_train ({x_train.dtype}) must share a dtype")
    channels = x_train.shape[1]
    tiles = images_to_patches(x_train, patch)
    centres, _ = kmeans(tiles.reshape(-1, tiles.shape[-1]), num_codes, iters,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    idx = nearest_code(images_to_patches(x_test, patch), centres)
    recon = patches_to_images(centres[idx], channels)
    return {"mse": F.mse_loss(recon, x_test).item(), "perplexity": perplexity(idx, num_codes),
            "recon": recon, "centres": centres}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# the prior: training and its baseline
# ----------------------------------------------------------------------------------------------


class StackedCodePrior(nn.Module):
    r"""Several [`CodePrior`][kexue.vqvae.CodePrior]s of one architecture trained side by side.

    Their weights are stacked along a new first axis (``torch.func.stack_module_state``) and the
    forward pass maps one prior over them with ``torch.func.vmap``, so prior $s$ only ever sees
    column $s$ of the input. As with [`StackedVQVAE`][kexue.experiments.vqvae.StackedVQVAE], a
    summed loss and Adam's per-element update make this the same as training each prior alone.

    Args:
        priors: The priors (same ``num_codes``, ``grid``, ``d_model``, ``heads``, ``layers``).

    Raises:
        ValueError: If ``priors`` is empty or the priors differ in shape.
        TypeError: If ``priors`` is not a sequence of [`CodePrior`][kexue.vqvae.CodePrior]s.
    """

    def __init__(self, priors: Sequence[CodePrior]) -> None:
        super().__init__()
        if isinstance(priors, (str, bytes)) or not isinstance(priors, Sequence):
            raise TypeError(f"priors must be a sequence of CodePrior models, got {type(priors).__name__}")
        priors = list(priors)
        if not priors:
            raise ValueError("priors must hold at least one CodePrior")
        for i, p in enumerate(priors):
            _check_model(p, CodePrior, f"priors[{i}]")
        if len({tuple((n, p.shape) for n, p in m.named_parameters()) for m in priors}) != 1:
            raise ValueError("priors must share one architecture")
        self._priors = priors
        params, _ = torch.func.stack_module_state(priors)
        self._names = list(params)
        self.weights = nn.ParameterList(nn.Parameter(params[n].detach().clone()) for n in self._names)
        self._shared = dict(priors[0].named_buffers())  # position indices, the same in every prior
        self._base = copy.deepcopy(priors[0]).to("meta")
        self.size, self.num_codes = len(priors), priors[0].num_codes

    def check_codes(self, codes: Tensor, name: str = "codes") -> Tensor:
        """Return ``codes`` if it is ``(B, S, h, w)``, integer, ``B >= 1``, codes in ``[0, K)``; raise naming ``name``."""
        check_tensor(codes, name, 4, floating=False, nonempty=True)
        h, w = self._priors[0].grid
        if codes.shape[1:] != (self.size, h, w):
            raise ValueError(f"{name} must have one column per prior, shape (B, {self.size}, {h}, {w}), got {tuple(codes.shape)}")
        self._priors[0].check_codes(codes.flatten(0, 1), name, prefix=False)  # dtype and range
        return codes

    def forward(self, codes: Tensor) -> Tensor:
        """Logits ``(S, B, T, K)`` of prior $s$ on column $s$ of ``codes`` ``(B, S, h, w)``.

        Raises:
            TypeError: If ``codes`` is not an integer tensor.
            ValueError: On another shape, an empty batch or a code outside ``[0, K)``.
        """
        return self._logits(self.check_codes(codes))

    def _logits(self, codes: Tensor) -> Tensor:
        params = dict(zip(self._names, self.weights, strict=True))

        def one(p: dict[str, Tensor], c: Tensor) -> Tensor:  # checked above: the data checks cannot run under vmap
            return torch.func.functional_call(self._base, (p, self._shared), (c,), {"validate_args": False})

        with warnings.catch_warnings():  # attention has no batching rule yet: vmap loops over the priors there
            warnings.filterwarnings("ignore", message="There is a performance drop")
            return torch.func.vmap(one, in_dims=(0, 1))(params, codes)

    def unstack(self) -> list[CodePrior]:
        """Copy the trained weights back into the priors and return them."""
        with torch.no_grad():
            for s, prior in enumerate(self._priors):
                own = dict(prior.named_parameters())
                for name, w in zip(self._names, self.weights, strict=True):
                    own[name].copy_(w[s])
        return list(self._priors)


def prior_loss(model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
    """Cross-entropy of a [`StackedCodePrior`][kexue.experiments.vqvae.StackedCodePrior] on code grids ``xb``.

    The sum over priors of each prior's mean cross-entropy (nats per code); ``yb`` is ignored.

    Shapes:
        xb: ``(B, S, h, w)``.

    Raises:
        TypeError: If ``model`` is not a [`StackedCodePrior`][kexue.experiments.vqvae.StackedCodePrior]
            or ``xb`` not an integer tensor.
        ValueError: If ``xb`` is not ``(B, S, h, w)`` codes in ``[0, K)``.
    """
    _check_model(model, StackedCodePrior, "model")
    logits = model._logits(model.check_codes(xb, "xb"))  # (S, B, T, K)
    targets = xb.movedim(1, 0).reshape(logits.shape[0], -1).long()  # (S, B*T)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.reshape(logits.shape[0], -1).mean(1).sum()


def train_priors(
    codes: Sequence[Tensor],
    seeds: Sequence[int],
    *,
    num_codes: int,
    d_model: int = 32,
    heads: int = 2,
    layers: int = 2,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    fit_seed: int = 0,
) -> tuple[list[CodePrior], list[float]]:
    """Fit one [`CodePrior`][kexue.vqvae.CodePrior] per code set, side by side, with ``fit`` (AdamW).

    Prior $s$ starts from seed ``seeds[s]`` and reads ``codes[s]`` in its own order (the same
    column trick as [`train_vqvaes`][kexue.experiments.vqvae.train_vqvaes]).

    Args:
        codes: One set of training code grids ``(N, h, w)`` per prior (same ``N`` and grid).
        seeds: Seed of each prior's weights and data order.
        num_codes: Codebook size $K$.
        d_model: Width.
        heads: Attention heads.
        layers: Transformer blocks.
        epochs: Passes over the codes.
        batch_size: Grids per step.
        lr: Learning rate.
        weight_decay: Decoupled weight decay.
        fit_seed: Seed of ``fit``'s shuffle.

    Returns:
        ``(priors, bits)``: the trained priors (eval mode) and the mean training loss of each
        epoch in bits per grid, averaged over the priors.

    Raises:
        ValueError: If ``codes`` and ``seeds`` differ in length, the code sets differ in shape or
            hold codes outside ``[0, num_codes)``, or on bad sizes and rates.
        TypeError: If ``codes`` is not a sequence of integer tensors.
    """
    if isinstance(codes, (str, bytes, Tensor)) or not isinstance(codes, Sequence):
        raise TypeError(f"codes must be a sequence of code-grid tensors (N, h, w), one per prior, got {type(codes).__name__}")
    codes = list(codes)
    seeds = _check_seeds(seeds)
    if len(codes) != len(seeds):
        raise ValueError(f"codes and seeds must have the same non-zero length, got {len(codes)} and {len(seeds)}")
    for i, c in enumerate(codes):
        check_tensor(c, f"codes[{i}]", 3, floating=False, nonempty=True)
    if len({c.shape for c in codes}) != 1:
        raise ValueError(f"every code set must have one shape, got {sorted({tuple(c.shape) for c in codes})}")
    check_int(num_codes, "num_codes")
    for i, c in enumerate(codes):
        _check_codes_range(c, num_codes, f"codes[{i}]")
    for value, name in ((d_model, "d_model"), (heads, "heads"), (layers, "layers"), (epochs, "epochs"),
                        (batch_size, "batch_size")):  # fmt: skip
        check_int(value, name)
    check_real(lr, "lr", above=0)
    check_real(weight_decay, "weight_decay", at_least=0)
    check_int(fit_seed, "fit_seed", 0)
    n, h, w = codes[0].shape
    priors, columns = [], []
    for c, seed in zip(codes, seeds, strict=True):
        priors.append(CodePrior(num_codes, (h, w), d_model, heads, layers, seed=seed))
        columns.append(c[torch.randperm(n, generator=torch.Generator().manual_seed(seed))])
    return _fit_priors(priors, torch.stack(columns, dim=1), epochs, batch_size, lr, weight_decay, fit_seed)


def _fit_priors(
    priors: list[CodePrior], stacked: Tensor, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int
) -> tuple[list[CodePrior], list[float]]:
    stack = StackedCodePrior(priors)
    history = fit(stack, stacked, stacked, prior_loss, epochs=epochs, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, seed=seed)  # fmt: skip
    trained = stack.unstack()
    for p in trained:
        p.eval()
    cells = stacked[0, 0].numel()
    return trained, [h / len(priors) * cells / math.log(2) for h in history]


def unigram_bits(train_codes: Tensor, test_codes: Tensor, num_codes: int) -> float:
    r"""Bits per grid of ``test_codes`` under the code frequencies of ``train_codes`` (add-one smoothed).

    $$\text{bits} = -\frac{1}{B}\sum_{b,t}\log_2 \hat p(k_{bt}),\qquad \hat p(k) = \frac{n_k + 1}{N + K}.$$

    The prior that knows which codes are common but nothing about where they go.

    Shapes:
        train_codes: ``(N, ...)``; test_codes: ``(B, ...)``.

    Raises:
        TypeError: If a code set is not an integer tensor.
        ValueError: If a code set is empty or holds codes outside ``[0, num_codes)``.
    """
    check_int(num_codes, "num_codes")
    for c, name in ((train_codes, "train_codes"), (test_codes, "test_codes")):
        check_tensor(c, name, floating=False, nonempty=True)
        if c.dim() < 1:
            raise ValueError(f"{name} must have a batch dimension, got a scalar")
        _check_codes_range(c, num_codes, name)
    counts = torch.bincount(train_codes.reshape(-1).long(), minlength=num_codes).double() + 1
    logp = (counts / counts.sum()).log2()
    return float(-logp[test_codes.reshape(-1).long()].sum()) / test_codes.shape[0]


# ----------------------------------------------------------------------------------------------
# scoring decoded images with a digit classifier
# ----------------------------------------------------------------------------------------------


def train_digit_classifier(
    x: Tensor, y: Tensor, *, seed: int = 0, hidden: int = 128, epochs: int = 30, lr: float = 3e-3
) -> nn.Module:
    """A small MLP digit classifier (64 pixels -> ``hidden`` -> 10), trained by cross-entropy with ``fit``.

    The instrument that scores decoded samples: it has only seen real digits.

    Args:
        x: Images ``(N, 1, 8, 8)``.
        y: Labels ``(N,)`` in 0..9.
        seed: Seed of the weights and the shuffle.
        hidden: Hidden width.
        epochs: Passes over the data.
        lr: Adam learning rate.

    Returns:
        The trained classifier (returns logits for ``(B, 1, 8, 8)`` images).

    Raises:
        ValueError: On empty or non-finite images, labels that are not one per image in 0..9,
            or bad sizes and rates.
        TypeError: If ``x`` is not a floating tensor or ``y`` not an integer tensor.
    """
    _check_images(x, "x", channels=None)
    check_tensor(y, "y", 1, floating=False)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must hold one label per image, got {y.shape[0]} labels for {x.shape[0]} images")
    _check_codes_range(y, 10, "y")
    check_int(seed, "seed", 0)
    check_int(hidden, "hidden")
    check_int(epochs, "epochs")
    check_real(lr, "lr", above=0)
    clf = seeded_mlp([x[0].numel(), hidden, 10], seed=seed, flatten=True)
    fit(clf, x, y, LOSSES["cross_entropy"], epochs=epochs, batch_size=64, lr=lr, seed=seed)
    return clf


def digit_confidence(classifier: nn.Module, images: Tensor) -> dict[str, float]:
    r"""How sure a digit classifier is on ``images``: mean top probability and mean entropy.

    $$\text{confidence} = \frac1B\sum_b \max_c p_{bc},\qquad
    \text{entropy} = -\frac1B\sum_b\sum_c p_{bc}\log_2 p_{bc}\ \text{(bits, at most } \log_2 10).$$

    A digit-like image gets a confident, low-entropy prediction; an image that is no digit gets a
    spread-out one (as long as the classifier is not overconfident off its data, which the
    page checks with controls: noise and codes without layout).

    Returns:
        ``confidence``, ``entropy`` (bits) and ``classes`` (how many of the 10 digits are some
        image's top prediction).

    Raises:
        TypeError: If ``classifier`` is not a module or ``images`` not a floating tensor.
        ValueError: If ``images`` is not a non-empty ``(B, C, H, W)`` batch or holds NaN/inf (the
            scores summarise it). The classifier's mode is restored afterwards.
    """
    _check_model(classifier, nn.Module, "classifier")
    _check_images(images, "images", channels=None)
    with evaluating(classifier):
        p = classifier(images).softmax(-1).double()
    entropy = -(p * p.clamp_min(1e-300).log2()).sum(-1)
    return {"confidence": p.max(-1).values.mean().item(), "entropy": entropy.mean().item(),
            "classes": float(p.argmax(-1).unique().numel())}  # fmt: skip


def digit_features(classifier: nn.Sequential, images: Tensor) -> Tensor:
    """The classifier's last hidden layer on ``images`` (float64), the feature space of
    [`frechet_distance`][kexue.experiments.vqvae.frechet_distance].

    A layer's output: NaN/inf in an image propagate to its row, as in torch. The classifier's
    mode is restored afterwards.

    Shapes:
        images: ``(B, 1, 8, 8)``; returns ``(B, hidden)``.

    Raises:
        TypeError: If ``classifier`` is not an ``nn.Sequential`` or ``images`` not a floating tensor.
        ValueError: If ``images`` is not a non-empty 4-D batch.
    """
    _check_model(classifier, nn.Sequential, "classifier")
    check_tensor(images, "images", 4, floating=True, nonempty=True)
    with evaluating(classifier):
        return classifier[:-1](images).double()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to two sets of feature vectors (the FID recipe).

    $$d^2 = \|\mu_a - \mu_b\|^2 + \operatorname{tr}\big(\Sigma_a + \Sigma_b
    - 2\,(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2})^{1/2}\big),$$

    computed in float64 with symmetric eigendecompositions (Heusel et al., 2017, on Inception
    features; here on a small digit classifier's). It is 0 for two identical sets and grows when
    the sets differ in where they lie or how they spread. Compare sets of equal size: the estimate
    is biased upward for small sets.

    Args:
        a: Feature vectors, one per row (at least two).
        b: Feature vectors of the other set, same width.

    Returns:
        $d^2$ (non-negative up to rounding).

    Shapes:
        a: ``(n, F)``; b: ``(m, F)``.

    Raises:
        ValueError: If a set has fewer than two rows, the widths differ or a set holds NaN/inf.
        TypeError: If a set is not a floating tensor.
    """
    check_tensor(a, "a", 2, floating=True)
    check_tensor(b, "b", 2, floating=True)
    for x, name in ((a, "a"), (b, "b")):
        if x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError(f"{name} needs at least two rows of at least one feature, got shape {tuple(x.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have equal widths, got {tuple(a.shape)} and {tuple(b.shape)}")
    _finite_extent(a, "a")
    _finite_extent(b, "b")
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)

    def sqrtm(m: Tensor) -> Tensor:  # symmetric PSD square root
        vals, vecs = torch.linalg.eigh(m)
        return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T

    root_a = sqrtm(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


# ----------------------------------------------------------------------------------------------
# what the codes mean; drawing
# ----------------------------------------------------------------------------------------------


def code_patches(x: Tensor, codes: Tensor, num_codes: int, *, patch: int = 2, context: int = 1) -> tuple[Tensor, Tensor]:
    r"""Mean input window around the cells assigned to each code, and how often each code is used.

    $$\bar P_k = \frac{1}{n_k}\sum_{(b, i, j) : k_{bij} = k} x_b[\text{cell } (i, j) \pm \text{context}],$$

    the ``patch x patch`` cell a code stands for, with ``context`` pixels of its neighbourhood on
    every side (zero outside the image). Unused codes get a zero window.

    Args:
        x: Images ``(B, 1, H, W)``.
        codes: Their code grids ``(B, H/patch, W/patch)``.
        num_codes: $K$.
        patch: Pixels per cell side.
        context: Extra pixels on each side.

    Raises:
        ValueError: On empty or non-finite images (the windows are means), code grids that do not
            tile ``x`` with ``patch``, codes outside ``[0, num_codes)`` or bad sizes.
        TypeError: If ``x`` is not a floating tensor or ``codes`` not an integer tensor.
    """
    _check_images(x, "x", channels=None)
    check_tensor(codes, "codes", 3, floating=False, nonempty=True)
    check_int(num_codes, "num_codes")
    check_int(patch, "patch")
    check_int(context, "context", 0)
    if x.shape[2] % patch or x.shape[3] % patch or codes.shape != (x.shape[0], x.shape[2] // patch, x.shape[3] // patch):
        raise ValueError(f"codes {tuple(codes.shape)} do not tile x {tuple(x.shape)} with patch={patch}: "
                         f"need (B, H/patch, W/patch) with patch dividing H and W")  # fmt: skip
    _check_codes_range(codes, num_codes, "codes")
    side = patch + 2 * context
    cols = F.unfold(F.pad(x, (context,) * 4), kernel_size=side, stride=patch)  # (B, C*side*side, cells)
    flat = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B*cells, side*side)
    idx = codes.reshape(-1).long()
    counts = torch.bincount(idx, minlength=num_codes)
    sums = torch.zeros(num_codes, flat.shape[1], dtype=x.dtype).index_add_(0, idx, flat)
    means = sums / counts.clamp_min(1)[:, None].to(x.dtype)
    return means.reshape(num_codes, x.shape[1], side, side), counts


def montage(images: Tensor, ncol: int, pad: int = 1) -> Tensor:
    """Tile ``(n, 1, h, w)`` images into one ``(rows, cols)`` array with NaN gaps of ``pad`` pixels (for ``imshow``).

    Drawing only: NaN/inf pixels are copied as they are.

    Raises:
        TypeError: If ``images`` is not a floating tensor.
        ValueError: If ``images`` is not a non-empty ``(n, 1, h, w)`` batch, ``ncol < 1`` or ``pad < 0``.
    """
    check_tensor(images, "images", 4, floating=True, nonempty=True)
    if images.shape[1] != 1:
        raise ValueError(f"images must have shape (n, 1, h, w), got {tuple(images.shape)}")
    check_int(ncol, "ncol")
    check_int(pad, "pad", 0)
    n, _, h, w = images.shape
    nrow = -(-n // ncol)
    out = torch.full((nrow * (h + pad) - pad, ncol * (w + pad) - pad), float("nan"))
    for i in range(n):
        r, c = divmod(i, ncol)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[i, 0]
    return out
