r"""Experiment helpers for the DGCNN page: a synthetic multi-passage QA task and a multi-seed trainer.

What the [DGCNN page](../articles/dgcnn-reading-comprehension.md) needs to test Su's reader on a
CPU in seconds, kept apart from the article's math in [`kexue.dgcnn`][kexue.dgcnn]:

* [`make_multipassage_qa`][kexue.experiments.dgcnn.make_multipassage_qa]: a seeded stand-in for
  WebQA / SogouQA (the real data are not available offline), returned as a
  [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA];
* [`ReaderStack`][kexue.experiments.dgcnn.ReaderStack]: several
  [`DGCNNReader`][kexue.dgcnn.DGCNNReader]s of one architecture, one per (ablation
  [`Variant`][kexue.experiments.dgcnn.Variant], seed), with their weights stacked so that all of
  them train and predict in one vectorised call;
* [`fit_readers`][kexue.experiments.dgcnn.fit_readers]: trains a stack with the shared
  [`fit`][kexue.experiments.training.fit] loop and a tagging-loss callback
  ([`TaggingLoss`][kexue.experiments.dgcnn.TaggingLoss]) that also implements the article's
  UNK augmentation;
* [`reader_probabilities`][kexue.experiments.dgcnn.reader_probabilities] and
  [`decode_answers`][kexue.experiments.dgcnn.decode_answers]: evaluation on the synthetic task;
  [`best_constant_tagger`][kexue.experiments.dgcnn.best_constant_tagger]: the loss a reader that
  ignores its input can reach;
* [`BiLSTMEncoder`][kexue.experiments.dgcnn.BiLSTMEncoder]: the recurrent encoder the benchmarks
  time against [`DGCNNEncoder`][kexue.dgcnn.DGCNNEncoder].

Examples:
    >>> from kexue.experiments.dgcnn import (ReaderStack, Variant, fit_readers, make_multipassage_qa,
    ...                                      reader_probabilities)
    >>> data = make_multipassage_qa(64, seed=0)
    >>> variants = {"full": Variant(), "no global gate": Variant(global_gate=False)}
    >>> stack = ReaderStack(len(data.words), variants, seeds=(0, 1, 2), d=16, d_emb=16, d_pos=8)
    >>> len(stack), stack.members_of("no global gate")  # one member per (variant, seed)
    (6, [3, 4, 5])
    >>> curves = fit_readers(stack, data, schedule=[(1e-2, 1), (1e-3, 1)], batch_size=16)
    >>> tuple(curves["train"].shape)  # (epochs, members): one loss curve per member
    (2, 6)
    >>> p_start, p_end, p_global = reader_probabilities(stack, data.subset(slice(0, 8)))
    >>> tuple(p_start.shape), tuple(p_global.shape)
    ((6, 8, 4, 32), (6, 8, 4))
    >>> bool((p_global[3:] == 1).all())  # the ungated members' p_global is 1
    True
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from kexue._checks import check_int, check_real, check_tensor
from kexue.dgcnn import (
    _LOSS_CORES,
    LOSSES,
    SPAN_SCORES,
    VOTING,
    DGCNNReader,
    _best_spans,
    _check_mask,
    _pick_answer,
    _vote,
    extract_candidates,
)
from kexue.experiments.training import evaluating, fit

__all__ = [
    "MultiPassageQA",
    "make_multipassage_qa",
    "Variant",
    "ReaderStack",
    "TaggingLoss",
    "fit_readers",
    "reader_probabilities",
    "decode_answers",
    "best_constant_tagger",
    "BiLSTMEncoder",
]


# ----------------------------------------------------------------------------------------------
# synthetic multi-passage QA


@dataclass
class MultiPassageQA:
    """A batch of multi-passage questions (see [`make_multipassage_qa`][kexue.experiments.dgcnn.make_multipassage_qa]).

    Shapes:
        question, q_mask: ``(n, lq)``; passages, p_mask, start, end: ``(n, n_passages, lp)``;
        has_answer: ``(n, n_passages)``; ``answers[k]`` is the answer of question ``k`` as a token tuple;
        ``words[t]`` names token id ``t``.
    """

    question: Tensor
    q_mask: Tensor
    passages: Tensor
    p_mask: Tensor
    start: Tensor
    end: Tensor
    has_answer: Tensor
    answers: list[tuple[int, ...]]
    words: tuple[str, ...]

    def __len__(self) -> int:
        return self.question.shape[0]

    def subset(self, index: Tensor | Sequence[int] | slice) -> MultiPassageQA:
        """The questions selected by ``index`` (a slice, index list or index tensor)."""
        idx = index if isinstance(index, slice) else torch.as_tensor(index, dtype=torch.long)
        ans = self.answers[index] if isinstance(index, slice) else [self.answers[k] for k in idx.tolist()]
        return MultiPassageQA(
            self.question[idx], self.q_mask[idx], self.passages[idx], self.p_mask[idx],
            self.start[idx], self.end[idx], self.has_answer[idx], ans, self.words,
        )

    def decode(self, tokens: Sequence[int]) -> str:
        """Token ids as a space-separated string (padding dropped)."""
        return " ".join(self.words[t] for t in tokens if t != 0)

    def summary(self) -> dict[str, float]:
        """How imbalanced the tagging problem is.

        Returns:
            ``questions``, ``passages``; ``answer_passages``: the share of passages that hold the
            answer; ``start_tags`` and ``end_tags``: the share of real (unmasked) passage positions
            tagged as an answer start or end.
        """
        real = self.p_mask.sum().item()
        return {
            "questions": float(len(self)),
            "passages": float(self.has_answer.numel()),
            "answer_passages": self.has_answer.float().mean().item(),
            "start_tags": self.start.sum().item() / real,
            "end_tags": self.end.sum().item() / real,
        }


def _check_data(data: object, name: str = "data") -> MultiPassageQA:
    if not isinstance(data, MultiPassageQA):
        raise TypeError(f"{name} must be a MultiPassageQA (see make_multipassage_qa), got {type(data).__name__}")
    return data


def _check_seeds(seeds: object) -> tuple[int, ...]:
    if not isinstance(seeds, Sequence) or isinstance(seeds, str):
        raise TypeError(f"seeds must be a sequence of integers >= 0, got {type(seeds).__name__}")
    if not seeds:
        raise ValueError("seeds must name at least one seed, got none")
    return tuple(check_int(s, "seeds", 0) for s in seeds)


def _vocab(n_fillers: int, n_entities: int, n_relations: int, n_values: int) -> dict[str, list[int] | int]:
    words = ["<pad>", "<unk>", "what", "which", "is", "of", "'s", "the", "was"]
    ids: dict[str, list[int] | int] = {w: k for k, w in enumerate(words)}
    start = len(words)
    ids["filler"] = list(range(start, start + n_fillers))
    start += n_fillers
    ids["entity"] = list(range(start, start + n_entities))
    start += n_entities
    ids["rel_a"] = list(range(start, start + n_relations))
    start += n_relations
    ids["rel_b"] = list(range(start, start + n_relations))
    start += n_relations
    ids["value"] = list(range(start, start + n_values))
    start += n_values
    ids["size"] = start
    names = words + [f"w{k}" for k in range(n_fillers)] + [f"E{k}" for k in range(n_entities)]
    names += [f"r{k}" for k in range(n_relations)] + [f"r{k}'" for k in range(n_relations)]
    names += [f"V{k}" for k in range(n_values)]
    ids["names"] = names  # type: ignore[assignment]
    return ids


def make_multipassage_qa(
    n_questions: int,
    *,
    n_passages: int = 4,
    passage_len: tuple[int, int] = (20, 32),
    n_fillers: int = 120,
    n_entities: int = 60,
    n_relations: int = 10,
    n_values: int = 80,
    seed: int = 0,
) -> MultiPassageQA:
    """A seeded synthetic stand-in for WebQA / SogouQA: one question, several retrieved passages.

    A question asks for relation ``r`` of entity ``E`` (``what r of E``, ``E 's r what``, ...; each
    relation has two surface forms ``r``/``r'`` and questions always use ``r``). The answer is a fresh
    random string of 1-3 value tokens, so it can only be read, not memorised. Passages are filler
    words with facts ``(entity, relation, value)`` planted in one of three templates:

    * 1 or 2 *answer passages* state the true fact (relation in either form), half of them also a
      fact about another relation of ``E``;
    * the other passages are *distractors*: the same relation of other entities, all with the same
      wrong value (so a naive vote that adds many weak scores can pick it), or other relations of ``E``.

    Every occurrence of the answer string is labelled (start and end tags), as in the article.

    Args:
        n_questions: Number of questions (>= 1).
        n_passages: Passages per question (>= 2).
        passage_len: Inclusive range of passage lengths; ``min >= 16``, room for two facts of up to 8 tokens.
        n_fillers: Filler words.
        n_entities: Entities (>= 2).
        n_relations: Relations (>= 2).
        n_values: Value tokens (>= 6).
        seed: Seed of the numpy generator.

    Returns:
        A [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA] with left-aligned masks,
        ``lq = 5`` and ``lp = passage_len[1]``.

    Raises:
        ValueError: If a count is not a positive integer of at least its minimum, or
            ``passage_len`` is not an integer range with ``16 <= min <= max``.

    Examples:
        >>> data = make_multipassage_qa(2, seed=0)
        >>> tuple(data.passages.shape), data.decode(data.answers[0]) in data.decode(data.passages[0].flatten().tolist())
        ((2, 4, 32), True)
    """
    check_int(n_questions, "n_questions")
    check_int(n_passages, "n_passages", 2)
    if not isinstance(passage_len, (tuple, list)) or len(passage_len) != 2:
        raise ValueError(f"passage_len must be a pair (min, max) of integers 16 <= min <= max, got {passage_len!r}")
    lo, hi = passage_len
    if not (isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool) and 16 <= lo <= hi):
        raise ValueError(f"passage_len must be integers 16 <= min <= max, got {passage_len!r}")
    for name, v, least in (("n_fillers", n_fillers, 1), ("n_entities", n_entities, 2),
                           ("n_relations", n_relations, 2), ("n_values", n_values, 6)):
        check_int(v, name, least)
    check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    V = _vocab(n_fillers, n_entities, n_relations, n_values)
    fillers, entities, values = np.array(V["filler"]), np.array(V["entity"]), np.array(V["value"])
    rel_a, rel_b = V["rel_a"], V["rel_b"]
    what, which, is_, of, s_, the, was = (V[w] for w in ("what", "which", "is", "of", "'s", "the", "was"))
    lq = 5
    question = np.zeros((n_questions, lq), dtype=np.int64)
    passages = np.zeros((n_questions, n_passages, hi), dtype=np.int64)
    start = np.zeros((n_questions, n_passages, hi), dtype=np.float32)
    end = np.zeros_like(start)
    has_answer = np.zeros((n_questions, n_passages), dtype=bool)
    answers: list[tuple[int, ...]] = []

    def fact(e: int, r: int, v: list[int]) -> list[int]:
        rel = (rel_a if rng.random() < 0.5 else rel_b)[r]
        t = rng.integers(3)
        if t == 0:
            return [e, s_, rel, is_, *v]
        if t == 1:
            return [*v, was, the, rel, of, e]
        return [the, rel, of, e, is_, *v]

    def value_string() -> list[int]:
        return [int(x) for x in rng.choice(values, size=int(rng.integers(1, 4)), replace=False)]

    for k in range(n_questions):
        e = int(rng.choice(entities))
        r = int(rng.integers(n_relations))
        t = rng.integers(3)
        wh = what if rng.random() < 0.5 else which
        if t == 0:
            q = [wh, rel_a[r], of, e]
        elif t == 1:
            q = [e, s_, rel_a[r], wh]
        else:
            q = [wh, the, rel_a[r], of, e]
        question[k, : len(q)] = q
        ans = value_string()
        wrong = value_string()
        while wrong == ans:
            wrong = value_string()
        answers.append(tuple(ans))
        n_pos = int(rng.integers(1, 3))
        order = rng.permutation(n_passages)
        for rank, pidx in enumerate(order):
            facts: list[list[int]] = []
            other_r = int((r + rng.integers(1, n_relations)) % n_relations)
            if rank < n_pos:
                facts.append(fact(e, r, ans))
                if rng.random() < 0.5:
                    facts.append(fact(e, other_r, value_string()))
            elif rng.random() < 0.6:
                e2 = int(rng.choice(entities[entities != e]))
                facts.append(fact(e2, r, wrong))
            else:
                facts.append(fact(e, other_r, value_string()))
            length = int(rng.integers(lo, hi + 1))
            toks = [int(x) for x in rng.choice(fillers, size=length)]
            rng.shuffle(facts)
            # place the facts in disjoint slots
            slot = length // len(facts)
            for f_i, f in enumerate(facts):
                begin = f_i * slot + int(rng.integers(0, max(1, slot - len(f) + 1)))
                toks[begin : begin + len(f)] = f
            toks = toks[:length]
            passages[k, pidx, :length] = toks
            m = len(ans)
            for i in range(length - m + 1):
                if toks[i : i + m] == ans:
                    start[k, pidx, i] = 1.0
                    end[k, pidx, i + m - 1] = 1.0
                    has_answer[k, pidx] = True
    q_t = torch.from_numpy(question)
    p_t = torch.from_numpy(passages)
    return MultiPassageQA(
        question=q_t, q_mask=q_t != 0, passages=p_t, p_mask=p_t != 0,
        start=torch.from_numpy(start), end=torch.from_numpy(end), has_answer=torch.from_numpy(has_answer),
        answers=answers, words=tuple(V["names"]),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------------------
# several seeds as one model


@dataclass(frozen=True)
class Variant:
    r"""One ablation of the reader, as a member of a [`ReaderStack`][kexue.experiments.dgcnn.ReaderStack].

    Each switch removes one of the article's ingredients without changing the shapes of the
    weights, so every variant trains in the same stack:

    Attributes:
        hand_features: Feed the hand features. Off, the member receives zeros instead: its
            feature weights multiply zeros, get no gradient, and the member computes exactly what
            a reader built with ``n_features=0`` computes.
        global_gate: Multiply the taggers by $p^{global}$ (eq. 8). Off, $p^{global} \equiv 1$, as
            ``DGCNNReader(global_gate=False)``.
        unk_rate: Share of tokens replaced by ``<unk>`` in training (the article's UNK
            augmentation), in ``[0, 1)``.
    """

    hand_features: bool = True
    global_gate: bool = True
    unk_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hand_features", "global_gate"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_real(self.unk_rate, "unk_rate", at_least=0, hint=" and < 1")
        if self.unk_rate >= 1:
            raise ValueError(f"unk_rate must lie in [0, 1), got {self.unk_rate!r}")


class ReaderStack(nn.Module):
    r"""Several [`DGCNNReader`][kexue.dgcnn.DGCNNReader]s of one architecture, trained and run as one model.

    There is one member per (variant, seed) pair, variants outer: member $m$ is
    ``DGCNNReader(vocab_size, **config)`` initialised under its seed, so members with the same seed
    start from the same weights whatever their variant. The members' parameters are stacked along
    a new leading *member* dimension (``torch.func.stack_module_state``) and ``torch.func.vmap``
    runs the reader's own ``forward`` on every member at once, with independent gate noise
    (``randomness="different"``); each member's [`Variant`][kexue.experiments.dgcnn.Variant]
    switches are applied around that call.

    Why one model: Adam updates each weight from its own gradient history, so one Adam over the
    stacked weights is exactly one Adam per member, and training the stack trains every member as
    if alone. On a CPU the members share every kernel launch, so twelve small readers cost a few
    times one reader, not twelve times.

    Args:
        vocab_size: Passed to every reader.
        variants: The variants by name, e.g. ``{"full": Variant(), "no gate": Variant(global_gate=False)}``.
        seeds: The seeds every variant is trained with (initial weights; [`fit_readers`][kexue.experiments.dgcnn.fit_readers]
            also derives each member's data order from its seed).
        **config: Keyword arguments of [`DGCNNReader`][kexue.dgcnn.DGCNNReader], the same for all
            members (``global_gate`` is a variant switch here, not a config entry).

    Shapes:
        Inputs as [`DGCNNReader`][kexue.dgcnn.DGCNNReader]'s, either shared by all members
        (question ``(batch, lq)``, ...) or one batch per member with a leading ``members``
        dimension (question ``(members, batch, lq)``, ...); outputs always have the leading
        ``members`` dimension: p_start, p_end ``(members, batch, n_passages, lp)``, p_global
        ``(members, batch, n_passages)``.

    Raises:
        ValueError: If ``variants`` or ``seeds`` is empty, a seed is not a non-negative integer, or
            ``config`` names ``global_gate``; in ``forward``, as
            [`DGCNNReader`][kexue.dgcnn.DGCNNReader]'s ``forward`` and for inputs without the leading
            ``members`` dimension when ``question`` has one.
        TypeError: If ``variants`` is not a mapping, ``seeds`` not a sequence, or a variant is not
            a [`Variant`][kexue.experiments.dgcnn.Variant].
    """

    def __init__(self, vocab_size: int, variants: dict[str, Variant], *, seeds: Sequence[int], **config: object):
        super().__init__()
        check_int(vocab_size, "vocab_size")
        if not isinstance(variants, Mapping):
            raise TypeError(f"variants must be a mapping name -> Variant, got {type(variants).__name__}")
        if not variants:
            raise ValueError("variants must name at least one variant, got none")
        seeds = _check_seeds(seeds)
        for name, v in variants.items():
            if not isinstance(v, Variant):
                raise TypeError(f"variants[{name!r}] must be a Variant, got {type(v).__name__}")
        if "global_gate" in config:
            raise ValueError("global_gate is a Variant switch in a ReaderStack, not a config entry")
        self.variants = dict(variants)
        self.member_names = tuple(name for name in variants for _ in seeds)
        self.seeds = tuple(s for _ in variants for s in seeds)
        readers = []
        for s in self.seeds:
            with torch.random.fork_rng(devices=[]):  # leave the caller's global generator alone
                torch.manual_seed(s)
                readers.append(DGCNNReader(vocab_size, **config))  # type: ignore[arg-type]
        stacked, _ = stack_module_state(readers)  # buffers (the position table) are equal in all members
        self.template = readers[0].requires_grad_(False)
        self._names = list(stacked)
        # ParameterDict keys may not contain ".": "p_encoder.blocks.0.conv.weight" -> "p_encoder:blocks:0:conv:weight"
        self.members = nn.ParameterDict({k.replace(".", ":"): nn.Parameter(v.detach().clone()) for k, v in stacked.items()})
        members = [self.variants[n] for n in self.member_names]
        self.register_buffer("feature_on", torch.tensor([v.hand_features for v in members]), persistent=False)
        self.register_buffer("gate_on", torch.tensor([v.global_gate for v in members]), persistent=False)
        self.unk_rate = tuple(v.unk_rate for v in members)

    def __len__(self) -> int:
        return len(self.seeds)

    def members_of(self, variant: str) -> list[int]:
        """Indices of the members of ``variant``, in seed order."""
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {list(self.variants)}, got {variant!r}")
        return [m for m, name in enumerate(self.member_names) if name == variant]

    def by_variant(self, values: Tensor) -> dict[str, Tensor]:
        """Split a per-member tensor (leading ``members`` dimension) into ``{variant: (seeds, ...)}``."""
        check_tensor(values, "values")
        if values.dim() == 0 or values.shape[0] != len(self):
            raise ValueError(f"values must have a leading members dimension of {len(self)}, got {tuple(values.shape)}")
        return {name: values[self.members_of(name)] for name in self.variants}

    def forward(
        self, question: Tensor, q_mask: Tensor, passages: Tensor, p_mask: Tensor, features: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_tensor(question, "question", (2, 3), floating=False)
        shared = question.dim() == 2
        inputs = [question, q_mask, passages, p_mask]
        if not shared:
            for name, x in zip(("question", "q_mask", "passages", "p_mask", "features"), [*inputs, features]):
                if x is not None and (not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] != len(self)):
                    raise ValueError(f"{name} must have a leading members dimension of {len(self)}")
        # Every member is a reader of one architecture: check the inputs once, as one reader's, with
        # the members' batches side by side; the vmapped readers below then skip their own checks.
        def flat(t: object) -> object:
            return t if shared or not isinstance(t, Tensor) or t.dim() < 2 else t.flatten(0, 1)

        self.template._check_inputs(flat(question), flat(q_mask), flat(passages), flat(p_mask), flat(features))
        in_dims: list[int | None] = [None if shared else 0] * 4
        if features is not None:
            if bool((~self.feature_on).any()):  # members without hand features see zeros
                on = self.feature_on.to(features.dtype)
                features = features * on.view(-1, 1, 1, 1, 1)  # (members, batch, n_passages, lp, n_features)
                in_dims.append(0)
            else:
                in_dims.append(None if shared else 0)
            inputs.append(features)

        def one(params: dict[str, Tensor], *xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            args = xs if features is not None else (*xs, None)
            return functional_call(self.template, params, args, {"gated": False, "validate_args": False})

        ps, pe, pg = vmap(one, in_dims=(0, *in_dims), randomness="different")(self._params(), *inputs)
        # eq. (8) per member: gated members multiply by p_global, the others by 1
        pg = torch.where(self.gate_on.view(-1, 1, 1), pg, torch.ones_like(pg))  # (members, batch, n)
        return ps * pg[..., None], pe * pg[..., None], pg

    def _params(self) -> dict[str, Tensor]:
        return {k: self.members[k.replace(".", ":")] for k in self._names}


# ----------------------------------------------------------------------------------------------
# training


class TaggingLoss:
    r"""A [`fit`][kexue.experiments.training.fit] loss callback for a [`ReaderStack`][kexue.experiments.dgcnn.ReaderStack].

    ``fit`` shuffles *question indices* (pass ``x = y = torch.arange(len(data))``); member $m$ reads
    question ``order[m, i]`` for index ``i``, where ``order[m]`` is a permutation drawn from
    ``seeds[m]``, so every member sees its own minibatches. The loss of member $m$ is the mean of the
    start and end tagging losses ([`LOSSES`][kexue.dgcnn.LOSSES]) over its real passage tokens; the
    callback returns the sum over members (each member's gradient is its own loss's gradient) and
    records the per-member values (``history``).

    ``unk_rate`` (one value, or one per member) replaces that share of real question and passage
    tokens by ``<unk>`` (id 1) in every minibatch: the augmentation the article found most useful.
    Its draws use ``fit``'s generator.

    Args:
        data: The training questions.
        features: Hand features of ``data`` (``(n, n_passages, lp, n_features)``), or None.
        seeds: The stack's seeds (one data order per member).
        loss: A key of [`LOSSES`][kexue.dgcnn.LOSSES].
        unk_rate: Share of tokens replaced by ``<unk>``, in ``[0, 1)``; a float or one per member.

    Raises:
        TypeError: If ``data`` is not a [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA],
            ``features`` not a floating tensor, ``seeds`` not a sequence or ``unk_rate`` not a number
            or a sequence of numbers.
        ValueError: On an unknown ``loss``, no seeds, an ``unk_rate`` outside ``[0, 1)`` or of the
            wrong length, or ``features`` whose shape does not fit ``data``'s passages.
    """

    def __init__(
        self,
        data: MultiPassageQA,
        features: Tensor | None = None,
        *,
        seeds: Sequence[int],
        loss: str = "focal",
        unk_rate: float | Sequence[float] = 0.0,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if len(_check_data(data)) == 0:
            raise ValueError("data must hold at least one question")
        if features is not None:
            check_tensor(features, "features", 4, floating=True)
            if features.shape[:3] != data.passages.shape:
                raise ValueError(f"features must have shape {tuple(data.passages.shape)} + (n_features,), "
                                 f"got {tuple(features.shape)}")
        seeds = _check_seeds(seeds)
        if isinstance(unk_rate, (int, float)):
            rates = [unk_rate] * len(seeds)
        elif isinstance(unk_rate, Sequence) and not isinstance(unk_rate, str):
            rates = list(unk_rate)
        else:
            raise TypeError(f"unk_rate must be a number or one number per member, got {type(unk_rate).__name__}")
        if len(rates) != len(seeds):
            raise ValueError(f"unk_rate must be one number or one per member ({len(seeds)}), got {len(rates)}")
        for r in rates:
            check_real(r, "unk_rate", at_least=0, hint=" and < 1")
            if r >= 1:
                raise ValueError(f"unk_rate must lie in [0, 1), got {r!r}")
        self.data, self.features, self.loss = data, features, _LOSS_CORES[loss]  # vmapped: checks cannot run
        self.unk_rate = torch.tensor(rates, dtype=torch.float32)
        self.order = torch.stack([torch.randperm(len(data), generator=torch.Generator().manual_seed(s)) for s in seeds])
        self.history: list[tuple[int, int, Tensor]] = []  # (epoch, batch size, loss of each member)
        self.epoch_offset = 0  # added to fit's epoch, for training in several stages
        self._per_member = vmap(lambda p, y, m: self.loss(p, y, m))

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
        d = self.data
        idx = self.order[:, xb]  # (members, batch): member m reads questions order[m, xb]
        q, qm, p, pm = d.question[idx], d.q_mask[idx], d.passages[idx], d.p_mask[idx]
        if bool((self.unk_rate > 0).any()):
            rate = self.unk_rate.view(-1, 1, 1)  # (members, 1, 1), broadcast over the batch
            q = q.masked_fill(qm & (torch.rand(q.shape, generator=generator) < rate), 1)
            p = p.masked_fill(pm & (torch.rand(p.shape, generator=generator) < rate[..., None]), 1)
        feats = None if self.features is None else self.features[idx]
        ps, pe, _ = model(q, qm, p, pm, feats)
        per_member = (self._per_member(ps, d.start[idx], pm) + self._per_member(pe, d.end[idx], pm)) / 2
        self.history.append((self.epoch_offset + epoch, len(xb), per_member.detach()))
        return per_member.sum()

    def curves(self) -> Tensor:
        """Mean loss of each epoch and member, ``(epochs, members)`` (batches weighted by size)."""
        if not self.history:
            raise ValueError("no minibatch has been recorded yet")
        epochs = max(e for e, _, _ in self.history) + 1
        total = torch.zeros(epochs, self.order.shape[0])
        count = torch.zeros(epochs, 1)
        for e, n, v in self.history:
            total[e] += n * v
            count[e] += n
        return total / count


def fit_readers(
    stack: ReaderStack,
    data: MultiPassageQA,
    features: Tensor | None = None,
    *,
    schedule: Sequence[tuple[float, int]],
    batch_size: int,
    loss: str = "focal",
    seed: int = 0,
    heldout: tuple[MultiPassageQA, Tensor | None] | None = None,
) -> dict[str, Tensor]:
    """Train every member of ``stack`` with Adam on the start/end tags; return the loss curves.

    ``schedule`` lists ``(learning rate, epochs)`` stages, like the article's Adam at $10^{-3}$
    then $10^{-4}$; each stage is one call of the shared [`fit`][kexue.experiments.training.fit]
    loop (with a fresh Adam) and a [`TaggingLoss`][kexue.experiments.dgcnn.TaggingLoss] callback.
    ``seed`` fixes the minibatch partition of each epoch, the UNK draws and the gate noise; the
    members' own seeds fix their initial weights and data order, and their variants their UNK
    rate. Torch's global generator is left as it was.

    Args:
        stack: The readers (trained in place, left in eval mode).
        data: Training questions.
        features: Their hand features, if the readers take any.
        schedule: ``(lr, epochs)`` stages, e.g. ``[(2e-2, 6), (2e-3, 1)]``.
        batch_size: Questions per minibatch (per member).
        loss: A key of [`LOSSES`][kexue.dgcnn.LOSSES].
        seed: Seed of the run.
        heldout: Optional ``(questions, features)`` on which the tagging loss of every member is
            measured at the end of each epoch (eval mode, no UNK), to see when training flattens.

    Returns:
        ``{"train": ..., "heldout": ...}``: the mean loss of each epoch and member, each of shape
        ``(epochs, members)`` over all stages; ``"heldout"`` only when ``heldout`` is given.

    Raises:
        TypeError: If ``stack`` is not a [`ReaderStack`][kexue.experiments.dgcnn.ReaderStack],
            ``data`` not a [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA] or
            ``schedule`` not a sequence.
        ValueError: On an empty or malformed ``schedule``, a negative ``seed``, a malformed
            ``heldout``, and as
            [`TaggingLoss`][kexue.experiments.dgcnn.TaggingLoss] and [`fit`][kexue.experiments.training.fit].
    """
    if not isinstance(stack, ReaderStack):
        raise TypeError(f"stack must be a ReaderStack, got {type(stack).__name__}")
    _check_data(data)
    check_int(seed, "seed", 0)
    if heldout is not None:
        if not isinstance(heldout, tuple) or len(heldout) != 2:
            raise ValueError(f"heldout must be a pair (questions, features), got {type(heldout).__name__}")
        _check_data(heldout[0], "heldout[0]")
        # the held-out batch must fit the readers, as one shared batch
        stack.template._check_inputs(heldout[0].question, heldout[0].q_mask, heldout[0].passages,
                                     heldout[0].p_mask, heldout[1])
    if not isinstance(schedule, Sequence):
        raise TypeError(f"schedule must be a non-empty list of (lr, epochs) pairs, got {schedule!r}")
    stages = list(schedule)
    if not stages or any(not isinstance(st, tuple) or len(st) != 2 for st in stages):
        raise ValueError(f"schedule must be a non-empty list of (lr, epochs) pairs, got {schedule!r}")
    for lr, epochs in stages:
        check_real(lr, "schedule lr", above=0)
        check_int(epochs, "schedule epochs")
    check_int(batch_size, "batch_size")
    callback = TaggingLoss(data, features, seeds=stack.seeds, loss=loss, unk_rate=stack.unk_rate)
    steps_per_epoch = -(-len(data) // batch_size)
    curve: list[Tensor] = []
    after_step = None
    if heldout is not None:
        held, held_features = heldout
        per_member = vmap(lambda p, y, m: _LOSS_CORES[loss](p, y, m))  # vmapped: checks cannot run
        steps = itertools.count(1)

        def after_step(model: nn.Module) -> None:
            if next(steps) % steps_per_epoch:
                return
            with evaluating(model):
                ps, pe, _ = model(held.question, held.q_mask, held.passages, held.p_mask, held_features)
                n = len(model)  # type: ignore[arg-type]
                m = held.p_mask.expand(n, *held.p_mask.shape)
                y_s, y_e = held.start.expand(n, *held.start.shape), held.end.expand(n, *held.end.shape)
                curve.append((per_member(ps, y_s, m) + per_member(pe, y_e, m)) / 2)

    rows = torch.arange(len(data))
    generator = torch.Generator().manual_seed(seed)  # one stream of minibatches and UNK draws for all stages
    with torch.random.fork_rng(devices=[]):  # the gate noise draws from the global generator
        torch.manual_seed(seed)
        for lr, epochs in stages:
            fit(stack, rows, rows, callback, epochs=epochs, batch_size=batch_size, lr=lr, generator=generator,
                after_step=after_step)
            callback.epoch_offset += epochs
    stack.eval()
    out = {"train": callback.curves()}
    if heldout is not None:
        out["heldout"] = torch.stack(curve)
    return out


# ----------------------------------------------------------------------------------------------
# evaluation


def reader_probabilities(
    model: nn.Module, data: MultiPassageQA, features: Tensor | None = None, *, batch_size: int = 256
) -> tuple[Tensor, Tensor, Tensor]:
    """Eval-mode ``(p_start, p_end, p_global)`` of every question of ``data``.

    ``model`` is a [`DGCNNReader`][kexue.dgcnn.DGCNNReader] or a
    [`ReaderStack`][kexue.experiments.dgcnn.ReaderStack] (then every output has a leading
    ``members`` dimension). The model runs in eval mode without gradients and is put back in the
    mode it had.

    Shapes:
        p_start, p_end: ``([members,] n, n_passages, lp)``; p_global: ``([members,] n, n_passages)``.

    Raises:
        TypeError: If ``model`` is not a reader or a stack of readers, ``data`` not a
            [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA] or ``features`` not a
            floating tensor.
        ValueError: If ``batch_size`` is not positive or ``features`` does not fit ``data``, and as
            the model's ``forward``.
    """
    if not isinstance(model, (DGCNNReader, ReaderStack)):
        raise TypeError(f"model must be a DGCNNReader or a ReaderStack, got {type(model).__name__}")
    _check_data(data)
    if features is not None:
        check_tensor(features, "features", 4, floating=True)
        if features.shape[:3] != data.passages.shape:
            raise ValueError(f"features must have shape {tuple(data.passages.shape)} + (n_features,), "
                             f"got {tuple(features.shape)}")
    check_int(batch_size, "batch_size")
    outs = []
    with evaluating(model):
        for b0 in range(0, len(data), batch_size):
            s = slice(b0, b0 + batch_size)
            feats = None if features is None else features[s]
            outs.append(model(data.question[s], data.q_mask[s], data.passages[s], data.p_mask[s], feats))
    axis = 1 if isinstance(model, ReaderStack) else 0  # the question axis
    return tuple(torch.cat(parts, dim=axis) for parts in zip(*outs))  # type: ignore[return-value]


def decode_answers(
    data: MultiPassageQA,
    p_start: Tensor,
    p_end: Tensor,
    *,
    max_len: int = 10,
    threshold: float = 0.1,
    span_rule: str = "product",
    voting: str = "smoothed",
) -> list[tuple[int, ...] | None]:
    """Answer every question: [`extract_candidates`][kexue.dgcnn.extract_candidates] per passage,
    then [`pick_answer`][kexue.dgcnn.pick_answer].

    If no span passes ``threshold`` the best product-scored span over all passages is returned,
    so the reader always answers (every synthetic question has an answer).

    Shapes:
        p_start, p_end: ``(n, n_passages, lp)`` (one reader's probabilities).

    Raises:
        TypeError: If ``data`` is not a [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA]
            or ``p_start``/``p_end`` not floating tensors.
        ValueError: If ``p_start`` or ``p_end`` does not have the passages' shape or holds values
            outside [0, 1] (NaN and inf included), or ``span_rule``, ``voting``, ``max_len`` or
            ``threshold`` is invalid.
    """
    _check_data(data)
    shape = tuple(data.passages.shape)
    for name, p in (("p_start", p_start), ("p_end", p_end)):
        check_tensor(p, name, 3, floating=True)
        if tuple(p.shape) != shape:
            raise ValueError(f"{name} must have the passages' shape {shape}, got {tuple(p.shape)}")
    if span_rule not in SPAN_SCORES:
        raise ValueError(f"span_rule must be one of {sorted(SPAN_SCORES)}, got {span_rule!r}")
    if voting not in VOTING:
        raise ValueError(f"voting must be one of {sorted(VOTING)}, got {voting!r}")
    candidates = extract_candidates(  # checks the probabilities, max_len and threshold
        data.passages, p_start, p_end, data.p_mask, max_len=max_len, threshold=threshold, rule=span_rule
    )
    preds: list[tuple[int, ...] | None] = [_pick_answer(_vote(cands, voting)) for cands in candidates]
    for k, answer in enumerate(preds):
        if answer is None:  # nothing above the threshold: the best product-scored span of any passage
            st, en, sc = _best_spans(p_start[k], p_end[k], data.p_mask[k], max_len)  # each (n_passages,)
            e = int(sc.argmax())
            preds[k] = tuple(data.passages[k, e, int(st[e]) : int(en[e]) + 1].tolist())
    return preds


# ----------------------------------------------------------------------------------------------
# the recurrent encoder DGCNN is compared with


class BiLSTMEncoder(nn.Module):
    """A bidirectional LSTM with the call signature of [`DGCNNEncoder`][kexue.dgcnn.DGCNNEncoder].

    The recurrent baseline of the article's speed argument (the WebQA model it starts from encodes
    with LSTMs); the benchmarks time it against the convolution stack. Each direction has
    ``d // 2`` hidden units, so input and output have ``d`` channels. Padded positions are zeroed in
    the output (the recurrence itself is not packed).

    Args:
        d: Channels (even).
        num_layers: Stacked BiLSTM layers.

    Shapes:
        x: ``(batch, seq, d)``; mask: ``(batch, seq)``; output: ``(batch, seq, d)``.

    Raises:
        ValueError: If ``d`` is not a positive even integer or ``num_layers`` is not positive; in
            ``forward``, if ``x`` does not have ``d`` channels or ``mask`` not ``x``'s ``(batch, seq)``.
        TypeError: In ``forward``, if ``x`` is not floating (of the encoder's dtype) or ``mask`` not bool.
    """

    def __init__(self, d: int, num_layers: int = 1):
        super().__init__()
        check_int(d, "d")
        check_int(num_layers, "num_layers")
        if d % 2:
            raise ValueError(f"d must be even (two directions of d/2 units), got {d}")
        self.lstm = nn.LSTM(d, d // 2, num_layers=num_layers, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_tensor(x, "x", 3, floating=True)
        if x.dtype != self.lstm.weight_ih_l0.dtype:
            raise TypeError(f"x must have the encoder's dtype {self.lstm.weight_ih_l0.dtype}, got {x.dtype}")
        if x.shape[-1] != self.lstm.input_size:
            raise ValueError(f"x must have d = {self.lstm.input_size} channels, got shape {tuple(x.shape)}")
        if mask is not None:
            _check_mask("mask", mask, tuple(x.shape[:2]), "x's (batch, seq)")
        y, _ = self.lstm(x)
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)
        return y


# ----------------------------------------------------------------------------------------------
# diagnosis


def best_constant_tagger(data: MultiPassageQA, loss: str = "focal") -> tuple[float, float]:
    r"""The best input-independent tagger: one probability $p$ predicted at every real token.

    Start and end tags have the same rate $\pi$ (one start and one end per answer occurrence), so
    both taggers' mean loss is $\pi\,\ell(p, 1) + (1 - \pi)\,\ell(p, 0)$ with $\ell$ the chosen
    loss of [`LOSSES`][kexue.dgcnn.LOSSES]. It is minimised over a float64 grid of step
    $10^{-5}$ on $(0, 1)$. A trained reader whose loss sits at this value has learned nothing
    about where answers are.

    Args:
        data: The questions (their tag rate).
        loss: A key of [`LOSSES`][kexue.dgcnn.LOSSES].

    Returns:
        ``(p, loss)``: the best constant probability and its mean loss.

    Raises:
        TypeError: If ``data`` is not a [`MultiPassageQA`][kexue.experiments.dgcnn.MultiPassageQA].
        ValueError: On an unknown ``loss``.

    Examples:
        >>> p, value = best_constant_tagger(make_multipassage_qa(100, seed=0))
        >>> 0.05 < p < 0.2  # far above the tag rate: the focal loss punishes confident negatives little
        True
    """
    _check_data(data)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    rate = data.start.sum(dtype=torch.float64) / data.p_mask.sum()
    grid = torch.arange(1, 100_000, dtype=torch.float64) / 100_000
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    f = _LOSS_CORES[loss]  # vmapped: checks cannot run
    values = vmap(lambda p: rate * f(p.view(1), one) + (1 - rate) * f(p.view(1), zero))(grid)
    best = int(values.argmin())
    return grid[best].item(), values[best].item()
