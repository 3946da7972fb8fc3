"""Statistics of a board: pairwise tests with a Holm correction, CIs against ``random``, and a
critical-difference summary across tasks or tracks.

**Ranks.** Every pair of agents is compared with a two-sided Welch t-test on the per-seed HV; the
p-values of all k(k−1)/2 pairs are Holm-corrected, so the probability that *any* pair is declared
different when all agents are alike is at most α (0.05). An agent's rank is 1 + the number of agents
significantly better than it; agents the seeds cannot separate share a rank. (The first board ran a
"one-sided" test in the direction of the observed means, i.e. a two-sided test at α = 0.10 on each
of 28 uncorrected pairs: 8 identical agents with 5 seeds were split 71 % of the time.)
:func:`spurious_split_rate` simulates exactly that case; the test suite checks it stays ≤ α.

**Difference from random.** Mean HV difference with a 95 % Welch confidence interval (per agent,
not corrected for multiplicity: read it as an effect size with its uncertainty, the rank column is
the multiplicity-safe verdict).

**Across tasks.** :func:`critical_difference`: average ranks of the agents over N tasks (or tracks),
the Friedman test, and the Nemenyi critical difference CD = q_α √(k(k+1)/(6N)); two agents whose
average ranks differ by less than CD are not distinguishable; :func:`cd_plot` draws Demšar's diagram.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from agents.leaderboard.protocol import ALPHA


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean(a) − mean(b), Welch–Satterthwaite degrees of freedom, two-sided p-value).

    Two constant samples: p = 1 when their values are equal, else 0 (deterministic separation);
    fewer than 2 values on a side: p = 1 (nothing to test).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, 1.0
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        return diff, math.inf, 1.0 if diff == 0 else 0.0
    df = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    t = diff / math.sqrt(se2)
    return diff, float(df), float(2 * stats.t.sf(abs(t), df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def pairwise(groups: Mapping[str, Sequence[float]], alpha: float = ALPHA) -> list[dict]:
    """Every pair (a, b): mean difference a − b, raw and Holm-adjusted two-sided Welch p, verdict."""
    names = list(groups)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    tests = [welch(groups[a], groups[b]) for a, b in pairs]
    adjusted = holm([t[2] for t in tests]) if tests else []
    return [{"a": a, "b": b, "diff": t[0], "p": t[2], "p_holm": q, "significant": q < alpha}
            for (a, b), t, q in zip(pairs, tests, adjusted)]


def ranks(groups: Mapping[str, Sequence[float]], alpha: float = ALPHA) -> dict[str, int]:
    """1 + the number of agents significantly better (Holm-corrected two-sided Welch, higher is better)."""
    better = {a: 0 for a in groups}
    for r in pairwise(groups, alpha):
        if r["significant"]:
            better[r["b"] if r["diff"] > 0 else r["a"]] += 1
    return {a: 1 + n for a, n in better.items()}


def diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) − mean(b), lower, upper): the Welch t confidence interval of the difference."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff, df, _ = welch(a, b)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    if se == 0:
        return diff, diff, diff
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff, diff - half, diff + half


def spurious_split_rate(agents: int = 8, seeds: int = 5, draws: int = 2000, alpha: float = ALPHA,
                        sample: Callable[[np.random.Generator, int], np.ndarray] | None = None,
                        seed: int = 0) -> float:
    """Fraction of simulated boards of identical agents (every agent's seeds drawn from the same
    distribution, ``sample(rng, seeds)``; normal by default) in which the ranks are not all 1."""
    rng = np.random.default_rng(seed)
    sample = sample or (lambda r, n: r.normal(0.5, 0.05, n))
    split = 0
    for _ in range(draws):
        groups = {f"a{i}": sample(rng, seeds) for i in range(agents)}
        split += any(r > 1 for r in ranks(groups, alpha).values())
    return split / draws


# ---- across tasks / tracks ------------------------------------------------------------------------------

def critical_difference(scores: Mapping[str, Mapping[str, float]], alpha: float = ALPHA) -> dict:
    """Friedman test and Nemenyi critical difference over tasks.

    ``scores[task][agent]`` = the agent's mean HV on the task (higher is better); only agents present
    on every task count. Returns the agents' average ranks (1 = best, ties averaged), the number of
    tasks N, Friedman's χ² and p (None with fewer than 3 agents or 2 tasks), the CD, and the groups of
    agents whose average ranks lie within CD of each other.
    """
    from scipy import stats

    tasks = list(scores)
    agents = sorted(set.intersection(*(set(scores[t]) for t in tasks))) if tasks else []
    k, n = len(agents), len(tasks)
    if k < 2 or n < 1:
        return {"agents": agents, "avg_rank": {}, "tasks": n, "chi2": None, "p": None, "cd": None, "groups": []}
    table = np.array([[scores[t][a] for a in agents] for t in tasks], dtype=float)
    rank_rows = np.array([stats.rankdata(-row) for row in table])   # 1 = best on that task
    avg = dict(zip(agents, rank_rows.mean(0).tolist()))
    chi2 = p = None
    if k >= 3 and n >= 2:
        chi2, p = (float(x) for x in stats.friedmanchisquare(*table.T))
        if math.isnan(p):  # every task ranks the agents identically with ties: no evidence either way
            chi2, p = 0.0, 1.0
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6.0 * n))
    ordered = sorted(agents, key=lambda a: avg[a])
    groups = []
    for i, a in enumerate(ordered):
        group = [b for b in ordered[i:] if avg[b] - avg[a] < cd]
        if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
            groups.append(group)
    return {"agents": ordered, "avg_rank": avg, "tasks": n, "chi2": chi2, "p": p, "cd": cd, "groups": groups}


def cd_plot(result: Mapping, path, title: str = "critical difference (Nemenyi)") -> None:
    """Demšar's critical-difference diagram of :func:`critical_difference`'s result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents, avg, cd = result["agents"], result["avg_rank"], result["cd"]
    k = len(agents)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * k))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 1), 2.2)
    ax.invert_xaxis()   # rank 1 on the right, as in Demšar (2006)
    ax.axis("off")
    ax.hlines(0, 1, k, color="k", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="k", lw=1)
        ax.text(r, 0.35, str(r), ha="center", va="bottom", fontsize=8)
    if cd:
        ax.hlines(1.4, 1, 1 + cd, color="k", lw=2)
        ax.text(1 + cd / 2, 1.6, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    half = (k + 1) // 2
    for i, a in enumerate(agents):
        y = -(i % half + 1) - 0.3 * (i >= half)
        x_text = 0.6 if i < half else k + 0.4
        ax.plot([avg[a], avg[a], x_text], [0, y, y], color="0.3", lw=0.8)
        ax.text(x_text, y, f"{a} ({avg[a]:.2f})", ha="right" if i < half else "left", va="center", fontsize=8)
    for j, g in enumerate(result["groups"]):
        lo, hi = min(avg[a] for a in g), max(avg[a] for a in g)
        ax.hlines(-0.25 - 0.18 * j, lo - 0.03, hi + 0.03, color="tab:red", lw=3)
    p = result.get("p")
    extra = f"; Friedman p = {p:.3g}" if p is not None else ""
    ax.set_title(f"{title}: {result['tasks']} tasks{extra}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
