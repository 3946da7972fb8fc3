"""Board statistics: Welch/Holm ranks, the identical-agents simulation, CIs, critical difference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from agents.leaderboard import stats


def test_welch_matches_scipy_and_handles_constant_samples():
    a, b = [0.50, 0.52, 0.47, 0.55, 0.49], [0.40, 0.45, 0.38, 0.50, 0.41]
    diff, df, p = stats.welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert diff == pytest.approx(np.mean(a) - np.mean(b)) and p == pytest.approx(ref.pvalue)
    assert stats.welch([0.0] * 5, [0.0] * 5)[2] == 1.0          # identical constants: nothing to separate
    assert stats.welch([0.0] * 5, [0.3] * 5)[2] == 0.0          # different constants: separated
    assert stats.welch([0.0] * 5, [0.1, 0.2, 0.3, 0.2, 0.1])[2] < 0.05   # one constant side still tests
    assert stats.welch([0.1], [0.2, 0.3])[2] == 1.0              # a single seed cannot be tested


def test_holm_adjustment():
    # textbook example: p = (0.01, 0.04, 0.03, 0.005) -> (0.03, 0.06, 0.06, 0.02)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def old_one_sided_ranks(groups, alpha=0.05):
    """The first board's rule: a one-sided Welch test in the direction of the observed means, uncorrected."""
    out = {}
    for a, va in groups.items():
        better = 0
        for b, vb in groups.items():
            if b != a and np.mean(vb) > np.mean(va):
                better += sps.ttest_ind(vb, va, equal_var=False, alternative="greater").pvalue < alpha
        out[a] = 1 + better
    return out


def test_identical_agents_are_split_in_at_most_five_percent_of_boards():
    """8 identical agents x 5 seeds (the digits board's shape): ranks must all be 1 in >= 95 % of draws,
    for a normal and for two skewed HV-like distributions; the old rule splits most boards."""
    samplers = {"normal": None,
                "beta": lambda r, n: r.beta(2, 5, n),
                "zero-inflated": lambda r, n: np.where(r.random(n) < 0.3, 0.0, r.normal(0.5, 0.1, n))}
    for name, sample in samplers.items():
        rate = stats.spurious_split_rate(agents=8, seeds=5, draws=300, sample=sample, seed=1)
        assert rate <= 0.05, f"{name}: identical agents split in {rate:.1%} of boards"
    rng = np.random.default_rng(1)
    old = np.mean([any(r > 1 for r in old_one_sided_ranks({f"a{i}": rng.normal(0.5, 0.05, 5)
                                                           for i in range(8)}).values()) for _ in range(100)])
    assert old > 0.5, f"the old rule split only {old:.0%} of identical boards"


def test_a_real_difference_is_found_and_ranked():
    rng = np.random.default_rng(0)
    groups = {f"a{i}": rng.normal(0.5, 0.02, 5) for i in range(4)}
    groups["best"] = rng.normal(0.7, 0.02, 5)
    places = stats.ranks(groups)
    assert places["best"] == 1 and all(places[f"a{i}"] >= 2 for i in range(4))
    pairs = stats.pairwise(groups)
    assert len(pairs) == 10 and all(p["p_holm"] >= p["p"] for p in pairs)


def test_difference_ci_covers_the_truth_at_its_level():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        d, lo, hi = stats.diff_ci(rng.normal(0.6, 0.05, 5), rng.normal(0.5, 0.08, 5))
        hits += lo <= 0.1 <= hi
        assert lo <= d <= hi
    assert 0.92 <= hits / 400 <= 0.985
    d, lo, hi = stats.diff_ci([0.2] * 3, [0.1] * 3)
    assert (d, lo, hi) == pytest.approx((0.1, 0.1, 0.1))
    assert math.isnan(stats.diff_ci([0.2], [0.1, 0.3])[1])


def test_critical_difference_and_plot(tmp_path):
    # "a" wins every task, "b" and "c" alternate, "d" last but once: average ranks by hand
    scores = {f"t{i}": {"a": 0.9, "b": 0.5 + 0.1 * (i % 2), "c": 0.6 - 0.1 * (i % 2), "d": 0.1} for i in range(13)}
    scores["t13"] = {"a": 0.9, "b": 0.5, "c": 0.6, "d": 0.7}
    cd = stats.critical_difference(scores)
    # b is 2nd on the 6 odd tasks, 3rd on the 7 even ones and 4th on t13: (6*2 + 7*3 + 4) / 14
    assert cd["avg_rank"] == pytest.approx({"a": 1.0, "b": 37 / 14, "c": 35 / 14, "d": 54 / 14})
    assert cd["cd"] == pytest.approx(1.25, abs=0.01)      # Demšar (2006): CD = 1.25 for k = 4, N = 14, α = 0.05
    assert cd["p"] < 1e-4 and cd["agents"] == ["a", "c", "b", "d"]
    assert cd["groups"] == [["c", "b"], ["b", "d"]]      # a is more than CD from everyone; c and d are too
    stats.cd_plot(cd, tmp_path / "cd.png")
    assert (tmp_path / "cd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two = stats.critical_difference({"t1": {"a": 1.0, "b": 0.5}, "t2": {"a": 0.9, "b": 0.4, "c": 0.1}})
    assert two["agents"] == ["a", "b"] and two["p"] is None   # c is not on every task; 2 agents: no Friedman
