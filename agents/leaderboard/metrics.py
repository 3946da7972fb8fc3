"""The reported metrics, as functions of a search's evaluations, final set and base model.

The validator calls these on *replayed* numbers (``validate.py``), the board shows only what they
return on those, and a result file's own ``metrics`` block is merely compared with them.

**Hypervolume.** Points are (error = 1 − acc/100, remaining parameters = 1 − PR), both minimised,
restricted to PR ≥ γ, against the reference (1 − (base acc − τ)/100, 1 − γ): the base model's
accuracy *on the same split* minus a tolerance of τ points (``Protocol.hv_tolerance``, 5 by
default), and the target γ. A scheme more than τ points below the uncompressed model, or short of
γ, adds nothing. The HV is divided by the area of the box between the reference and the ideal
(base accuracy at PR = 1), (τ/100)·(1 − γ), so 1.0 = "no accuracy lost at any reduction up to
PR = 1"; a scheme more accurate than the base model can push it above 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from agents.base import Evaluation, SearchResult
from agents.leaderboard.protocol import HV_TOLERANCE, HV_TOLERANCE_FACTORS, PR_LEVELS


def hv_reference(base_acc: float, gamma: float, tolerance: float = HV_TOLERANCE) -> tuple[float, float]:
    """The reference point (error, remaining params): base accuracy minus ``tolerance`` points, PR = γ."""
    return (1.0 - (base_acc - tolerance) / 100.0, 1.0 - gamma)


def hypervolume(points: Iterable[tuple[float, float]], base_acc: float, gamma: float,
                tolerance: float = HV_TOLERANCE) -> float:
    """Normalised HV of (acc %, PR) points (see the module docstring)."""
    from pymoo.indicators.hv import HV

    pts = np.array([[1 - a / 100, 1 - pr] for a, pr in points if pr >= gamma], dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        return 0.0
    ref = np.array(hv_reference(base_acc, gamma, tolerance))
    return float(HV(ref_point=ref)(pts)) / ((tolerance / 100.0) * (1.0 - gamma))


def _as_evaluation(e: dict) -> Evaluation:
    return Evaluation(scheme=list(e["scheme"]), names=list(e.get("names", [])), acc=e["acc"], params=e["params"],
                      flops=e["flops"], AR=e["AR"], PR=e["PR"], FR=e["FR"], execution=e.get("execution", 0),
                      compute=e.get("compute", 0.0), seconds=e.get("seconds", 0.0), cost=e.get("cost", 0.0),
                      failed=e.get("failed"))


def final_set(evaluations: Sequence[dict], gamma: float) -> list[dict]:
    """The final set, chosen on the search split: the Pareto schemes on (AR, PR) among PR ≥ γ, failed
    ones excluded (``SearchResult.pareto``, the rule the bench applies). The most accurate scheme at
    PR ≥ any level ≥ γ is always among them."""
    result = SearchResult(agent="", task="", seed=0, gamma=gamma, evaluations=[_as_evaluation(e) for e in evaluations])
    by_scheme = {tuple(e["scheme"]): e for e in evaluations}
    return [by_scheme[tuple(p.scheme)] for p in result.pareto()]


def pick(final: Sequence[dict], level: float) -> dict | None:
    """The scheme chosen on the search split: most accurate on val with PR ≥ level (ties: higher PR)."""
    pool = [f for f in final if f["PR"] >= level]
    return max(pool, key=lambda f: (f["acc"], f["PR"])) if pool else None


def spent(evaluations: Sequence[dict]) -> tuple[int, float]:
    """(executions, compute): one execution per evaluation, costs summed in order as the evaluator does."""
    compute = 0.0
    for e in evaluations:
        compute += e["cost"]
    return len(evaluations), compute


def summary_metrics(entry: dict) -> dict:
    """Every reported number of one search, from its evaluations, final set and base model.

    ``hv``: HV of the final schemes' *test* accuracies against the base model's test accuracy;
    ``hv_by_tolerance``: the same under the other references the board shows; ``best_acc``: test
    accuracy of the scheme most accurate on *val* with PR ≥ γ; ``acc_at_pr``: the same at PR ≥ 0.4 /
    0.7; ``search_hv``: HV of every evaluated scheme on the search split against the base model's val
    accuracy; ``compute``, ``executions``, ``failed``: what the search spent.
    """
    protocol, base, final = entry["protocol"], entry["base"], entry["final"]
    gamma = protocol["gamma"]
    tolerance = protocol.get("hv_tolerance", HV_TOLERANCE)
    evaluations = entry["evaluations"]
    ok = [e for e in evaluations if not e.get("failed")]
    best = pick(final, gamma)
    executions, compute = spent(evaluations)
    tolerances = [round(f * tolerance, 6) for f in HV_TOLERANCE_FACTORS]
    return {
        "hv": hypervolume(((f["test_acc"], f["PR"]) for f in final), base["test_acc"], gamma, tolerance),
        "hv_by_tolerance": {f"{t:g}": hypervolume(((f["test_acc"], f["PR"]) for f in final), base["test_acc"],
                                                  gamma, t) for t in tolerances},
        "best_acc": best["test_acc"] if best else None,
        "best_pr": best["PR"] if best else None,
        "acc_at_pr": {f"{lv:g}": (p["test_acc"] if (p := pick(final, lv)) else None) for lv in PR_LEVELS},
        "search_hv": hypervolume(((e["acc"], e["PR"]) for e in ok), base["acc"], gamma, tolerance),
        "compute": compute, "executions": executions,
        "failed": len(evaluations) - len(ok), "final": len(final),
    }


def anytime_hv(entry: dict, grid: Sequence[float]) -> np.ndarray:
    """Search-split HV of the schemes found by each compute level in ``grid`` (the anytime curve)."""
    gamma = entry["protocol"]["gamma"]
    tolerance = entry["protocol"].get("hv_tolerance", HV_TOLERANCE)
    evals = [e for e in entry["evaluations"] if not e.get("failed")]
    base = entry["base"]["acc"]
    return np.array([hypervolume(((e["acc"], e["PR"]) for e in evals if e["compute"] <= c), base, gamma, tolerance)
                     for c in grid])
