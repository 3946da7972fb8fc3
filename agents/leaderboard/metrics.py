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
    accuracy; ``compute``, ``executions``, ``failed``: what the search spent. With the track's true
    front (``entry["reference"]``, table tracks) also :func:`regret_metrics`.
    """
    protocol, base, final = entry["protocol"], entry["base"], entry["final"]
    gamma = protocol["gamma"]
    tolerance = protocol.get("hv_tolerance", HV_TOLERANCE)
    evaluations = entry["evaluations"]
    ok = [e for e in evaluations if not e.get("failed")]
    best = pick(final, gamma)
    executions, compute = spent(evaluations)
    tolerances = [round(f * tolerance, 6) for f in HV_TOLERANCE_FACTORS]
    out = {
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
    if entry.get("reference"):   # a table track: the true front is known
        out.update(regret_metrics(evaluations, entry["reference"], base["acc"], gamma, tolerance))
    return out


def anytime_hv(entry: dict, grid: Sequence[float]) -> np.ndarray:
    """Search-split HV of the schemes found by each compute level in ``grid`` (the anytime curve)."""
    gamma = entry["protocol"]["gamma"]
    tolerance = entry["protocol"].get("hv_tolerance", HV_TOLERANCE)
    evals = [e for e in entry["evaluations"] if not e.get("failed")]
    base = entry["base"]["acc"]
    return np.array([hypervolume(front_points(((e["acc"], e["PR"]) for e in evals if e["compute"] <= c), gamma),
                                 base, gamma, tolerance) for c in grid])


# ---- regret to the true front (table tracks) --------------------------------------------------------------

class TrackNotReady(ValueError):
    """The table does not hold every scheme the track's agents can reach: the true front is unknown."""


def front_points(points: Iterable[tuple[float, float]], gamma: float,
                 floor: float = -np.inf) -> list[tuple[float, float]]:
    """The distinct non-dominated (acc, PR) points with PR ≥ γ and acc > ``floor``, sorted: two searches
    that found the same front get the same list, hence bit-identical hypervolumes (a regret of exactly
    0). With ``floor`` = the HV reference's accuracy, the points that add hypervolume."""
    pool = sorted({(float(a), float(pr)) for a, pr in points if pr >= gamma and a > floor})
    return [q for q in pool if not any(o[0] >= q[0] and o[1] >= q[1] and o != q for o in pool)]


def reachable_schemes(env, limit: int = 200_000) -> dict[tuple[int, ...], dict]:
    """Every scheme an agent can reach in ``env`` (stepping from the base model through the action mask
    with the planned removal within ``pr_cap``, the rule of :meth:`agents.base.Evaluator.valid_actions`
    and of a replay) with its val/test accuracy, PR, params, FLOPs and cost.

    Raises :class:`TrackNotReady` when the backend cannot answer some of them (a table still being
    collected), naming how many and the first few."""
    e = env.unwrapped
    out: dict[tuple[int, ...], dict] = {}
    missing: list[tuple[int, ...]] = []
    stack: list[tuple[int, ...]] = [()]
    while stack:
        prefix = stack.pop()
        e.reset(options={"scheme": []})
        planned = 0.0
        for a in prefix:
            e.step(a)
            planned += e._removal[a]
        for a in np.flatnonzero(e.action_masks() & (planned + e._removal <= e.pr_cap + 1e-9)).tolist():
            scheme = prefix + (a,)
            e.reset(options={"scheme": []})
            try:
                for b in scheme:
                    info = e.step(b)[4]
            except LookupError:      # TableMiss: not (yet) in the table
                missing.append(scheme)
                continue
            out[scheme] = {"acc": info["acc"], "test_acc": e.test_accuracy(), "PR": info["PR"],
                           "params": info["params"], "flops": info["flops"], "cost": info["cost"]}
            if len(out) > limit:
                raise ValueError(f"more than {limit} reachable schemes: not a space to enumerate")
            stack.append(scheme)
    if missing:
        shown = ", ".join(str(list(m)) for m in sorted(missing)[:3])
        raise TrackNotReady(f"the {e.backend} backend cannot answer {len(missing)} reachable schemes (and whatever "
                            f"lies below them; first: {shown}); {len(out)} schemes answered. The data set is "
                            f"incomplete: collect it (automc collect --task {e.task.name} --design exhaustive) first")
    return out


def reference_front(env, gamma: float, tolerance: float = HV_TOLERANCE) -> dict:
    """The true Pareto front of every reachable scheme on the search split (val accuracy, PR ≥ γ, above
    the HV reference: the points that add hypervolume), its HV against the base model's val accuracy
    − τ, the best val accuracy at PR ≥ each level, and a digest of the whole reachable table (so a
    file is bound to the table it was scored against)."""
    from automc_env.fingerprint import digest

    e = env.unwrapped
    schemes = reachable_schemes(e)
    points = front_points(((r["acc"], r["PR"]) for r in schemes.values()), gamma, e.base["acc"] - tolerance)
    on_front = set(points)
    front = sorted(([list(s), r["acc"], r["PR"], r["test_acc"]] for s, r in schemes.items()
                    if (r["acc"], r["PR"]) in on_front), key=lambda f: (f[2], f[0]))
    levels = (gamma, *PR_LEVELS)
    best = {f"{lv:g}": max((r["acc"] for r in schemes.values() if r["PR"] >= lv), default=None) for lv in levels}
    table = sorted([list(s), r["acc"], r["test_acc"], r["params"], r["flops"], r["cost"]] for s, r in schemes.items())
    return {"schemes": len(schemes), "hv": hypervolume(points, e.base["acc"], gamma, tolerance),
            "best_acc": best, "front": front, "digest": digest({"table": table})}


def regret_metrics(evaluations: Sequence[dict], reference: dict, base_acc: float, gamma: float,
                   tolerance: float = HV_TOLERANCE) -> dict:
    """``regret``: the true front's val HV minus the HV of the front the search found (≥ 0; exactly 0
    when it found every point of the true front, i.e. every non-dominated point above the reference);
    ``acc_regret``: per PR level (γ, 0.4, 0.7), the best reachable val accuracy minus the best the
    search found (None when the search reached no scheme at that level); ``front_found``: how many
    points of the true front the search evaluated."""
    ok = [e for e in evaluations if not e.get("failed")]
    found = front_points(((e["acc"], e["PR"]) for e in ok), gamma, base_acc - tolerance)
    acc_regret = {}
    for level, best in reference["best_acc"].items():
        mine = max((e["acc"] for e in ok if e["PR"] >= float(level)), default=None)
        acc_regret[level] = None if best is None or mine is None else best - mine
    true = {(f[1], f[2]) for f in reference["front"]}
    return {"regret": reference["hv"] - hypervolume(found, base_acc, gamma, tolerance), "acc_regret": acc_regret,
            "front_found": len(true & set(found)), "front_size": len(true)}


def anytime_regret(entry: dict, grid: Sequence[float]) -> np.ndarray:
    """The true front's HV minus the search's anytime HV at each cost in ``grid`` (table tracks)."""
    return entry["reference"]["hv"] - anytime_hv(entry, grid)
