"""The claims engine: every rule, every branch, reasons that follow the numbers, the table and its JSON."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from kexue.experiments.claims import (
    MIN_SEEDS,
    VERDICTS,
    Claim,
    Outcome,
    Seeds,
    all_of,
    at_least,
    at_most,
    beats,
    claims_json,
    claims_table,
    close_to,
    exact,
    not_tested,
    over_seeds,
    ranks,
)

# ----------------------------------------------------------------------------- Seeds


def test_seeds_mean_std_sem_match_the_textbook_formulas():
    s = Seeds([1.0, 2.0, 4.0])
    assert s.n == 3
    assert s.mean == pytest.approx(7 / 3)
    var = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2
    assert s.std == pytest.approx(math.sqrt(var))
    assert s.sem == pytest.approx(math.sqrt(var / 3))
    assert torch.tensor(s.values).std().item() == pytest.approx(s.std)


def test_seeds_from_a_tensor_and_scaled():
    s = Seeds(torch.tensor([0.5, 0.25, 0.75]))
    assert s.values == (0.5, 0.25, 0.75)
    assert s.scaled(100).mean == pytest.approx(50.0)
    assert s.scaled(100).std == pytest.approx(100 * s.std)


def test_seeds_format_prints_mean_and_sd():
    s = Seeds([1.0, 2.0, 3.0])
    assert f"{s:.2f}" == "2.00 ± 1.00"
    assert str(s) == "2.00 ± 1.00"


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")], ["a"], [True]])
def test_seeds_reject_empty_or_non_finite_values(bad):
    with pytest.raises(ValueError, match="values"):
        Seeds(bad)


def test_seeds_reject_a_matrix():
    with pytest.raises(ValueError, match="1-D"):
        Seeds(torch.zeros(2, 2))


def test_one_seed_has_zero_spread_but_rules_refuse_it():
    s = Seeds([0.9])
    assert s.std == 0.0
    with pytest.raises(ValueError, match=f"at least {MIN_SEEDS}"):
        at_least(s, 0.5, name="accuracy")
    with pytest.raises(ValueError, match="at least"):
        beats(Seeds([0.9, 0.8]), Seeds([0.1, 0.2, 0.3]))


def test_over_seeds_numbers_and_mappings():
    s = over_seeds(lambda seed: seed * 2.0, (0, 1, 2))
    assert isinstance(s, Seeds) and s.values == (0.0, 2.0, 4.0)
    d = over_seeds(lambda seed: {"acc": seed, "nll": -seed}, (1, 2, 3))
    assert d["acc"].values == (1.0, 2.0, 3.0) and d["nll"].mean == -2.0
    with pytest.raises(ValueError, match="same keys"):
        over_seeds(lambda seed: {"a": 1} if seed else {"b": 1}, (0, 1))
    with pytest.raises(ValueError, match="seeds"):
        over_seeds(lambda seed: 1.0, ())


# ----------------------------------------------------------------------------- rules


def test_exact_both_branches_and_reason_follows():
    ok = exact(3e-16, 1e-12, name="max error")
    bad = exact(1e-3, 1e-12, name="max error")
    assert ok.verdict == "reproduced" and "≤" in ok.reason and ok.evidence["max error"] == 3e-16
    assert bad.verdict == "not reproduced" and ">" in bad.reason
    assert ok.seeds == 0
    with pytest.raises(ValueError):
        exact(-1.0, 1.0)
    with pytest.raises(ValueError):
        exact(float("nan"), 1.0)


def test_at_least_with_numbers():
    assert at_least(2.44, 1.5, name="speed-up").verdict == "reproduced"
    out = at_least(1.2, 1.5, name="speed-up")
    assert out.verdict == "not reproduced" and "1.20 < 1.50" in out.reason


def test_at_least_over_seeds_all_three_branches():
    high = at_least(Seeds([0.95, 0.96, 0.97]), 0.9, name="acc")
    low = at_least(Seeds([0.80, 0.81, 0.82]), 0.9, name="acc")
    noisy = at_least(Seeds([0.85, 0.95, 0.93]), 0.9, name="acc")
    assert (high.verdict, low.verdict, noisy.verdict) == ("reproduced", "not reproduced", "inconclusive")
    assert high.seeds == 3 and "3 seeds" in high.reason
    assert "not entirely" in noisy.reason
    assert high.evidence["acc (seed 2)"] == 0.97


def test_worst_seed_bounds_take_the_worst_seed_and_count_the_seeds():
    """A guarantee ("every trained network is 1-Lipschitz") is decided by the worst seed, whatever
    the mean and its band say, and the row still records the seeds it rests on."""
    ok = at_most(Seeds([1.001, 1.004, 1.009]), 1.01, name="max |J|", worst=True, digits=4)
    assert (ok.verdict, ok.seeds) == ("reproduced", 3)
    assert "worst of 3 seeds 1.009 ≤ 1.01" in ok.reason and "1.001 / 1.004 / 1.009" in ok.reason
    assert ok.evidence["max |J| (worst seed)"] == 1.009 and ok.evidence["bound"] == 1.01
    bad = at_most(Seeds([0.90, 0.91, 1.2]), 1.01, name="max |J|", worst=True)
    assert bad.verdict == "not reproduced" and "1.20 > 1.01" in bad.reason
    # the mean's interval alone would not decide this: it straddles the bound
    assert at_most(Seeds([0.90, 0.91, 1.2]), 1.01, name="max |J|").verdict == "inconclusive"
    low = at_least(Seeds([2.0, 2.5, 1.4]), 1.5, name="ratio", worst=True)
    assert low.verdict == "not reproduced" and "worst of 3 seeds 1.40 < 1.50" in low.reason
    assert at_least(Seeds([2.0, 2.5, 1.6]), 1.5, name="ratio", worst=True).verdict == "reproduced"
    assert "every seed" in ok.rules[0]
    with pytest.raises(TypeError, match="worst=True.*Seeds"):
        at_most(1.0, 1.01, name="x", worst=True)
    with pytest.raises(ValueError, match="at least 3"):
        at_most(Seeds([1.0, 1.0]), 1.01, name="x", worst=True)
    with pytest.raises(ValueError, match="worst must be True or False"):
        at_most(1.0, 1.01, name="x", worst="yes")


def test_at_most_mirrors_at_least():
    assert at_most(Seeds([0.1, 0.11, 0.12]), 0.2, name="err").verdict == "reproduced"
    assert at_most(Seeds([0.3, 0.31, 0.32]), 0.2, name="err").verdict == "not reproduced"
    assert at_most(0.3, 0.2, name="err").verdict == "not reproduced"


def test_close_to_three_branches():
    assert close_to(0.0955, 0.096, 0.01, name="HSIC").verdict == "reproduced"
    assert close_to(0.2, 0.096, 0.01, name="HSIC").verdict == "not reproduced"
    assert close_to(Seeds([0.094, 0.096, 0.095]), 0.096, 0.01, name="h").verdict == "reproduced"
    assert close_to(Seeds([0.09, 0.10, 0.095]), 0.096, 0.01, name="h").verdict == "inconclusive"  # t band too wide
    assert close_to(Seeds([0.09, 0.10, 0.095]), 0.096, 0.01, name="h", z=2).verdict == "reproduced"
    assert close_to(Seeds([0.5, 0.51, 0.52]), 0.096, 0.01, name="h").verdict == "not reproduced"
    assert close_to(Seeds([0.08, 0.12, 0.10]), 0.096, 0.01, name="h").verdict == "inconclusive"


def test_beats_outside_the_noise_is_reproduced_inside_is_inconclusive():
    a, b = Seeds([0.57, 0.61, 0.55]), Seeds([0.32, 0.20, 0.40])
    out = beats(a, b, names=("su5112", "su4819"))
    assert out.verdict == "reproduced" and "outside the noise" in out.reason
    assert out.evidence["difference"] == pytest.approx(a.mean - b.mean)
    assert out.evidence["standard error"] == pytest.approx(math.hypot(a.sem, b.sem))
    noisy = beats(Seeds([0.50, 0.60, 0.55]), Seeds([0.52, 0.58, 0.53]), names=("x", "y"))
    assert noisy.verdict == "inconclusive" and "inside the noise" in noisy.reason


def test_beats_against_the_claim_is_not_reproduced():
    out = beats(Seeds([0.2, 0.21, 0.22]), Seeds([0.5, 0.51, 0.52]), names=("x", "y"))
    assert out.verdict == "not reproduced" and "against the claim" in out.reason
    assert "x is 0.300 lower" in out.reason


def test_beats_lower_is_better_and_margin():
    bits = beats(Seeds([2.30, 2.31, 2.29]), 2.425, names=("flow", "categorical"), higher=False)
    assert bits.verdict == "reproduced" and "lower" in bits.reason
    big = beats(Seeds([0.60, 0.61, 0.62]), Seeds([0.59, 0.60, 0.61]), names=("a", "b"), margin=0.02)
    assert big.verdict != "reproduced"
    assert "claimed margin" in big.reason


def test_beats_paired_uses_per_seed_differences():
    a = Seeds([0.50, 0.60, 0.70])
    b = Seeds([0.49, 0.59, 0.69])  # always 0.01 behind: noisy apart, certain paired
    assert beats(a, b).verdict == "inconclusive"
    paired = beats(a, b, paired=True)
    assert paired.verdict == "reproduced" and "paired" in paired.reason
    with pytest.raises(ValueError, match="paired"):
        beats(a, 0.5, paired=True)


def test_beats_plain_numbers_compare_directly_ties_are_not_reproduced():
    assert beats(2.0, 1.0).verdict == "reproduced"
    assert beats(1.0, 1.0).verdict == "not reproduced"
    assert beats(1.0, 2.0, higher=False).verdict == "reproduced"


def test_the_noise_band_is_a_students_t_interval():
    """Three seeds a side: a difference must exceed t(0.975, Welch d.f.) standard errors, not 2."""
    from scipy.stats import t

    a, b = Seeds([1.00, 1.10, 1.20]), Seeds([0.90, 0.95, 1.00])
    out, lenient = beats(a, b), beats(a, b, z=2)
    se = math.hypot(a.sem, b.sem)
    va, vb = a.sem**2, b.sem**2
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert out.evidence["noise band"] == pytest.approx(t.ppf(0.975, df) * se)
    assert lenient.evidence["noise band"] == pytest.approx(2 * se)
    assert (a.mean - b.mean) / se == pytest.approx(2.32, abs=0.01)  # beyond 2 s.e., inside t s.e.
    assert lenient.verdict == "reproduced" and out.verdict == "inconclusive"
    assert f"{t.ppf(0.975, df):.2f} s.e. (Student's t, {df:.2g} d.f.)" in out.reason
    paired = beats(a, Seeds([0.95, 1.04, 1.145]), paired=True)  # differences 0.05, 0.06, 0.055
    diffs = Seeds([0.05, 0.06, 0.055])
    assert paired.evidence["noise band"] == pytest.approx(t.ppf(0.975, 2) * diffs.sem)  # 4.30 s.e.
    assert paired.verdict == "reproduced" and "4.30 paired s.e. (Student's t, 2 d.f.)" in paired.reason
    # a bound over three seeds: mean ± 4.30 s.e.
    bound = at_least(Seeds([0.60, 0.62, 0.64]), 0.58, name="acc")
    assert bound.verdict == "inconclusive" and at_least(Seeds([0.60, 0.62, 0.64]), 0.58, name="acc", z=2).verdict == "reproduced"


def test_all_of_combines():
    yes = exact(0.0, 1e-9)
    no = exact(1.0, 1e-9)
    maybe = beats(Seeds([1, 2, 3]), Seeds([1.5, 2, 2.5]))
    assert all_of(yes, yes).verdict == "reproduced"
    assert all_of(yes, no).verdict == "partly"
    assert all_of(yes, maybe).verdict == "inconclusive"  # the undecided part may still go either way
    assert all_of(yes, no, maybe).verdict == "partly"
    assert all_of(no, maybe).verdict == "not reproduced"
    assert all_of(maybe, maybe).verdict == "inconclusive"
    combined = all_of(yes, maybe)
    assert combined.seeds == 3 and "(reproduced)" in combined.reason and "(inconclusive)" in combined.reason
    with pytest.raises(ValueError, match="not tested"):
        all_of(yes, not_tested("no GPU"))
    with pytest.raises(TypeError):
        all_of(yes, "reproduced")


def test_ranks_checks_each_neighbour_pair():
    vals = {"mixed": Seeds([0.40, 0.41, 0.42]), "fixed": Seeds([0.30, 0.31, 0.32]), "old": Seeds([0.20, 0.21, 0.22])}
    assert ranks(vals, ["mixed", "fixed", "old"]).verdict == "reproduced"
    assert ranks(vals, ["old", "fixed", "mixed"]).verdict == "not reproduced"
    assert ranks(vals, ["mixed", "old", "fixed"]).verdict == "partly"
    with pytest.raises(ValueError, match="not among"):
        ranks(vals, ["mixed", "ntk"])


def test_not_tested_needs_a_reason():
    assert not_tested("ImageNet does not fit the page budget").verdict == "not tested"
    with pytest.raises(ValueError):
        not_tested("  ")


def test_outcome_accepts_only_the_five_words():
    assert set(VERDICTS) == {"reproduced", "partly", "not reproduced", "inconclusive", "not tested"}
    with pytest.raises(ValueError, match="verdict"):
        Outcome("mostly reproduced", "because")
    with pytest.raises(ValueError, match="reason"):
        Outcome("reproduced", "")


def test_every_rule_states_itself():
    for out in (exact(0, 1), at_least(1, 0, name="x"), close_to(1, 1, 0, name="x"), beats(1, 0)):
        assert out.rules and all(r.strip() for r in out.rules)


# ----------------------------------------------------------------------------- claims and the table


def _rows():
    ours, theirs = Seeds([0.91, 0.93, 0.92]), Seeds([0.88, 0.87, 0.90])
    return [
        Claim("A | B beats B", "95% vs 91%", f"{ours:.2f} vs {theirs:.2f}", beats(ours, theirs, names=("A", "B")),
              note={"reproduced": "as the article says", "inconclusive": "too few seeds"}),
        Claim("An identity", "derivation", "float64", exact(1e-16, 1e-12), note="checked in float64"),
        Claim("The ImageNet number", "33.5% → 29.0%", "—", not_tested("ImageNet is out of reach on a CPU")),
    ]


def test_note_follows_the_outcome():
    rows = _rows()
    assert rows[0].verdict == "reproduced" and rows[0].reason.endswith("as the article says")
    assert "too few seeds" not in rows[0].reason
    assert rows[1].reason.endswith("checked in float64")
    with pytest.raises(ValueError, match="note keys"):
        Claim("c", "a", "o", exact(0, 1), note={"mostly": "x"})


def test_claim_requires_text_and_an_outcome():
    with pytest.raises(ValueError, match="ours"):
        Claim("c", "a", " ", exact(0, 1))
    with pytest.raises(TypeError, match="Outcome"):
        Claim("c", "a", "o", "reproduced")


def test_table_puts_the_verdict_first_and_states_the_rules():
    text = claims_table(_rows(), page="demo-page")
    lines = text.splitlines()
    assert lines[0].startswith("| Verdict |")
    assert 'data-verdict="reproduced"' in lines[2]
    assert "A \\| B beats B" in lines[2]  # a pipe in a cell is escaped
    assert "How the verdicts were decided" in text
    assert text.count("beats (95%)") == 1


def test_table_embeds_parseable_json():
    text = claims_table(_rows(), page="demo-page")
    m = re.search(r'<script type="application/json" class="kx-claims">(.*?)</script>', text)
    assert m
    data = json.loads(m.group(1))
    assert data["page"] == "demo-page"
    assert [c["verdict"] for c in data["claims"]] == ["reproduced", "reproduced", "not tested"]
    first = data["claims"][0]
    assert first["seeds"] == 3 and first["evidence"]["A (mean)"] == pytest.approx(0.92)
    assert set(first) == {"claim", "article", "ours", "verdict", "reason", "seeds", "evidence"}
    assert json.loads(claims_json(_rows(), page="demo-page")) == data


def test_json_cannot_close_its_script_tag():
    row = Claim("x </script><b>", "a", "o", exact(0, 1))
    text = claims_table([row], page="p")
    body = text.split('class="kx-claims">', 1)[1]
    assert body.count("</script>") == 1
    assert json.loads(body.rsplit("</script>", 1)[0])["claims"][0]["claim"] == "x </script><b>"


@pytest.mark.parametrize("page", ["", "Demo", "a b", "../x", None])
def test_table_rejects_a_bad_slug(page):
    with pytest.raises(ValueError, match="page"):
        claims_table(_rows(), page=page)


def test_table_rejects_empty_or_foreign_rows():
    with pytest.raises(ValueError, match="at least one"):
        claims_table([], page="p")
    with pytest.raises(TypeError, match=r"claims\[0\]"):
        claims_table([("a", "b", "c", "reproduced")], page="p")
