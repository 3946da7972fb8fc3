"""How far the surrogate can be trusted: fidelity on data it never saw, next to the noise ceiling.

Every figure compares *schemes*, predicted the way the surrogate backend answers them: step by step
from the base model, each step from the previous *predicted* state (errors compound, as in use).

* **random hold-out**: a fifth of the schemes of every design (grouped by the scheme that first
  reached a step, so no step of a held-out scheme is in training unless another scheme shares it);
* **leave one design out**: train without a design, test on it (the exhaustive sub-grid; search
  trajectories once the boards' runs are harvested);
* **learning curve**: the hold-out figures against the number of training steps;
* **noise ceiling**: the same statistics between two step seeds of the same real schemes (the
  ``repeats`` designs against ``stratified``): no model of one seed's numbers can be expected to
  agree with them better than another seed does (NAS-Bench-301's argument).

Statistics: Kendall τ and Spearman ρ of val and test accuracy (all schemes, and those with PR ≥ γ:
the ones a search reports), R² and MAE of PR and FR, MAE and relative error of the scheme's total
cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau, spearmanr

from automc_env.backends.surrogate import SurrogateModel


def scheme_groups(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """Records grouped by (design, replicate, index): the steps one sampled scheme added."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["design"], r["replicate"], r["index"]), []).append(r)
    return groups


def split_random(records: Sequence[dict], fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    groups = scheme_groups(records)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    held = set(map(tuple, np.asarray(keys, dtype=object)[rng.permutation(len(keys))[:int(fraction * len(keys))]]))
    train = [r for k in keys if k not in held for r in groups[k]]
    test = [r for k in keys if k in held for r in groups[k]]
    return train, test


def predict_schemes(model: SurrogateModel, env, schemes: Sequence[Sequence[int]]) -> list[dict]:
    """The surrogate backend's answer for each scheme (chained from the base model)."""
    from automc_env.env import AutoMCEnv

    senv = AutoMCEnv(task=env.task.name, grid=env.space.name, seed=env.seed_value, backend="surrogate",
                     backend_options={"model": model}, store=False)
    out = []
    for scheme in schemes:
        steps = senv.evaluate(list(scheme))
        senv.reset(options={"scheme": list(scheme)})
        out.append({"acc": steps[-1]["acc"], "test_acc": senv.test_accuracy(), "PR": steps[-1]["PR"],
                    "FR": steps[-1]["FR"], "cost": sum(s["cost"] for s in steps)})
    return out


def truths(records: Sequence[dict], base: dict) -> dict[tuple, dict]:
    """Real metrics of every scheme in ``records`` (its total cost summed over the design's prefixes)."""
    by = {(r["design"], r["replicate"], tuple(r["scheme"])): r for r in records}
    out = {}
    for (design, rep, scheme), r in by.items():
        costs = [by.get((design, rep, scheme[:k])) for k in range(1, len(scheme) + 1)]
        if any(c is None for c in costs):
            continue
        out[(design, rep, scheme)] = {"acc": r["acc"], "test_acc": r["test_acc"],
                                      "PR": 1 - r["params"] / base["params"], "FR": 1 - r["flops"] / base["flops"],
                                      "cost": sum(c["cost"] for c in costs)}
    return out


def compare(pred: Sequence[dict], true: Sequence[dict], gamma: float) -> dict:
    """The fidelity statistics of predictions against real values (see the module docstring)."""
    def arr(rows, key):
        return np.array([r[key] for r in rows], dtype=np.float64)

    out: dict = {"schemes": len(true)}
    above = arr(true, "PR") >= gamma
    out["schemes_pr_ge_gamma"] = int(above.sum())
    for key in ("acc", "test_acc"):
        p, t = arr(pred, key), arr(true, key)
        out[f"{key}_tau"] = _stat(kendalltau, p, t)
        out[f"{key}_rho"] = _stat(spearmanr, p, t)
        out[f"{key}_tau_pr_ge_gamma"] = _stat(kendalltau, p[above], t[above])
        out[f"{key}_rho_pr_ge_gamma"] = _stat(spearmanr, p[above], t[above])
        out[f"{key}_mae"] = float(np.abs(p - t).mean()) if len(t) else math.nan
    for key in ("PR", "FR"):
        p, t = arr(pred, key), arr(true, key)
        out[f"{key}_mae"] = float(np.abs(p - t).mean()) if len(t) else math.nan
        out[f"{key}_r2"] = _r2(p, t)
    p, t = arr(pred, "cost"), arr(true, "cost")
    out["cost_mae"] = float(np.abs(p - t).mean()) if len(t) else math.nan
    out["cost_rel_error"] = float(np.abs(p - t).sum() / t.sum()) if len(t) and t.sum() else math.nan
    return out


def _stat(fn, p, t) -> float:
    if len(t) < 3 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return math.nan
    return float(fn(p, t)[0])


def _r2(p, t) -> float:
    if len(t) < 2 or np.var(t) == 0:
        return math.nan
    return float(1 - np.mean((p - t) ** 2) / np.var(t))


def evaluate_split(train: Sequence[dict], test: Sequence[dict], everything: Sequence[dict], env,
                   params: dict | None = None) -> dict:
    """Fit on ``train``; the statistics of its scheme predictions on the schemes ``test`` reached
    (whole schemes, chained; their real totals from ``everything``, which holds every prefix)."""
    model = SurrogateModel.fit(train, env, params)
    real = truths(everything, dict(env.base))
    wanted = {(r["design"], r["replicate"], tuple(r["scheme"])) for r in test}
    real = {k: v for k, v in real.items() if k in wanted}
    keys = sorted(real, key=lambda k: (k[0], k[1], len(k[2]), k[2]))
    pred = predict_schemes(model, env, [k[2] for k in keys])
    out = compare(pred, [real[k] for k in keys], env.task.gamma)
    out["train_steps"] = model.meta["rows"]
    return out


def noise_ceiling(records: Sequence[dict], env) -> dict | None:
    """The statistics between replicate 0 and each other replicate of the same schemes (real vs real)."""
    base = dict(env.base)
    reps = sorted({r["replicate"] for r in records if r["replicate"]})
    if not reps:
        return None
    zero = {}
    for (design, rep, scheme), v in truths([r for r in records if r["replicate"] == 0], base).items():
        zero.setdefault(scheme, v)
    out = {}
    for rep in reps:
        other = {s: v for (d, r, s), v in truths([r for r in records if r["replicate"] == rep], base).items()}
        common = sorted(set(zero) & set(other), key=lambda s: (len(s), s))
        out[f"replicate_{rep}"] = compare([other[s] for s in common], [zero[s] for s in common], env.task.gamma)
        out[f"replicate_{rep}"]["schemes_list"] = [list(s) for s in common]
    return out


def surrogate_on(schemes: Sequence[Sequence[int]], records: Sequence[dict], env, params: dict | None = None) -> dict:
    """The surrogate (fitted without these schemes' repeats) on the ceiling's schemes, against replicate 0."""
    held = {tuple(s) for s in schemes}
    train = [r for r in records if r["replicate"] == 0 and tuple(r["scheme"]) not in held
             and not any(tuple(r["scheme"][:k]) in held for k in range(1, len(r["scheme"])))]
    train = [r for r in train if r["design"] != "repeats-1" and r["design"] != "repeats-2"]
    model = SurrogateModel.fit(train, env, params)
    real = truths([r for r in records if r["replicate"] == 0], dict(env.base))
    zero = {}
    for (d, rep, s), v in real.items():
        zero.setdefault(s, v)
    keys = [tuple(s) for s in schemes if tuple(s) in zero]
    pred = predict_schemes(model, env, keys)
    return compare(pred, [zero[k] for k in keys], env.task.gamma)


def agents_agreement(agents: Sequence[str], seeds: Sequence[int], budget, real: dict, surrogate: dict,
                     model: SurrogateModel | None = None, log=print) -> dict:
    """Each agent's search HV (val) on real results and on the surrogate, same seeds and budget.

    ``real`` / ``surrogate``: ``AutoMCEnv`` keyword arguments of the two settings (e.g. the exhaustive
    table restricted to its sub-grid, and the surrogate restricted the same way). Returns per-agent
    mean HVs and the rank agreement of the agents (Kendall τ of their mean HVs) and of single runs.
    """
    from agents.leaderboard.metrics import hypervolume
    from agents.runner import run_search
    from automc_env.env import AutoMCEnv

    envs = {"real": AutoMCEnv(**real), "surrogate": AutoMCEnv(**{**surrogate, "backend_options": {"model": model}}
                                                              if model is not None else surrogate)}
    hv: dict[str, dict[str, list[float]]] = {k: {a: [] for a in agents} for k in envs}
    for kind, env in envs.items():
        base_acc, gamma = env.base["acc"], env.task.gamma
        for agent in agents:
            for seed in seeds:
                result = run_search(env, agent, budget, seed, progress=False)
                hv[kind][agent].append(hypervolume(((e.acc, e.PR) for e in result.evaluations
                                                     if not getattr(e, "failed", None)), base_acc, gamma))
            log(f"{kind:>9} {agent:>9}: HV {np.mean(hv[kind][agent]):.4f} ± {np.std(hv[kind][agent]):.4f}")
    mean = {k: {a: float(np.mean(v)) for a, v in hv[k].items()} for k in hv}
    real_means = [mean["real"][a] for a in agents]
    sur_means = [mean["surrogate"][a] for a in agents]
    runs_real = [x for a in agents for x in hv["real"][a]]
    runs_sur = [x for a in agents for x in hv["surrogate"][a]]
    return {"hv": hv, "mean": mean, "agents_tau": _stat(kendalltau, np.array(sur_means), np.array(real_means)),
            "runs_tau": _stat(kendalltau, np.array(runs_sur), np.array(runs_real)),
            "best_real": max(agents, key=lambda a: mean["real"][a]),
            "best_surrogate": max(agents, key=lambda a: mean["surrogate"][a])}
