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
  agree with them better than another seed does (NAS-Bench-301's argument); the surrogate's gap to
  it comes with a paired bootstrap interval (:func:`ceiling_gap`).

Statistics: Kendall τ and Spearman ρ of val and test accuracy (all schemes, and those with PR ≥ γ:
the ones a search reports), R² and MAE of PR and FR, MAE and relative error of the scheme's total
cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from automc_env.backends.surrogate import ACC_MODE, ACC_MODES, SurrogateError, SurrogateModel


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
                   params: dict | None = None, **fit) -> dict:
    """Fit on ``train``; the statistics of its scheme predictions on the schemes ``test`` reached
    (whole schemes, chained; their real totals from ``everything``, which holds every prefix)."""
    model = SurrogateModel.fit(train, env, params, **fit)
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


def _without(schemes: Sequence[Sequence[int]], records: Sequence[dict]) -> list[dict]:
    """Replicate-0 training records that neither are one of ``schemes`` nor extend one."""
    held = {tuple(s) for s in schemes}
    return [r for r in records if r["replicate"] == 0 and r["design"] not in ("repeats-1", "repeats-2")
            and not any(tuple(r["scheme"][:k]) in held for k in range(1, len(r["scheme"]) + 1))]


def _by_replicate(records: Sequence[dict], base: dict) -> dict[int, dict[tuple, dict]]:
    out: dict[int, dict[tuple, dict]] = {}
    for (d, rep, s), v in truths(records, base).items():
        out.setdefault(rep, {}).setdefault(s, v)
    return out


def surrogate_on(schemes: Sequence[Sequence[int]], records: Sequence[dict], env, params: dict | None = None) -> dict:
    """The surrogate (fitted without these schemes' repeats) on the ceiling's schemes, against replicate 0,
    with :func:`ceiling_gap` against every other replicate."""
    model = SurrogateModel.fit(_without(schemes, records), env, params)
    reps = _by_replicate(records, dict(env.base))
    zero = reps.get(0, {})
    keys = [tuple(s) for s in schemes if tuple(s) in zero]
    pred = predict_schemes(model, env, keys)
    out = compare(pred, [zero[k] for k in keys], env.task.gamma)
    out["ceiling_gap"] = ceiling_gap(dict(zip(keys, pred)), reps, env.task.gamma)
    return out


def ceiling_gap(pred: dict[tuple, dict], reps: dict[int, dict[tuple, dict]], gamma: float,
                resamples: int = 2000, seed: int = 0) -> dict:
    """Is the surrogate below the noise ceiling, or within the noise of measuring it? Over the schemes
    every replicate computed (PR ≥ γ in replicate 0), τ(surrogate, replicate 0) − τ(replicate k,
    replicate 0) per accuracy and replicate, and against the replicates' mean τ, each with a paired
    bootstrap 95 % interval (the same resampled schemes on both sides): ~130 schemes give τ a
    standard error of ~0.04, so a gap of a few hundredths is not evidence either way."""
    others = sorted(k for k in reps if k)
    keys = [s for s in pred if s in reps.get(0, {}) and reps[0][s]["PR"] >= gamma
            and all(s in reps[k] for k in others)]
    if not others or len(keys) < 10:
        return {}
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(keys), len(keys)) for _ in range(resamples)]
    out: dict = {"schemes": len(keys), "resamples": resamples}
    for key in ("acc", "test_acc"):
        zero = np.array([reps[0][s][key] for s in keys])
        real = {k: np.array([reps[k][s][key] for s in keys]) for k in others}
        sur = np.array([pred[s][key] for s in keys])

        def gaps(i):
            t = float(kendalltau(sur[i], zero[i])[0])
            ceilings = [float(kendalltau(real[k][i], zero[i])[0]) for k in others]
            return [t - c for c in ceilings] + [t - float(np.mean(ceilings))]

        point, boot = gaps(np.arange(len(keys))), np.array([gaps(i) for i in draws])
        for j, name in enumerate([f"replicate_{k}" for k in others] + ["mean"]):
            lo, hi = np.nanpercentile(boot[:, j], [2.5, 97.5])
            out[f"{key}_vs_{name}"] = {"gap": point[j], "ci95": [float(lo), float(hi)]}
    return out


def expected_truth(records: Sequence[dict], env, params: dict | None = None) -> dict | None:
    """NAS-Bench-301's question: is the surrogate closer to a scheme's expected result than one real run?

    The reference is the mean over the other replicates of the schemes every replicate computed; one
    real run (replicate 0, the seeds the data set uses everywhere) and the surrogate (fitted without
    these schemes) are both compared with it. Needs at least two replicates besides replicate 0.
    """
    reps = _by_replicate(records, dict(env.base))
    others = sorted(k for k in reps if k)
    if len(others) < 2 or 0 not in reps:
        return None
    common = sorted(set(reps[0]).intersection(*(reps[k] for k in others)), key=lambda s: (len(s), s))
    mean = [{key: float(np.mean([reps[k][s][key] for k in others])) for key in ("acc", "test_acc", "PR", "FR", "cost")}
            for s in common]
    model = SurrogateModel.fit(_without(common, records), env, params)
    return {"replicates_averaged": others,
            "one_real_run": compare([reps[0][s] for s in common], mean, env.task.gamma),
            "surrogate": compare(predict_schemes(model, env, common), mean, env.task.gamma)}


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


def live_agreement(task: str = "digits", root="leaderboards", model: SurrogateModel | None = None,
                   log=print) -> dict | None:
    """The live board's validated searches (real steps) against the same agents, seeds, options and
    budget on the surrogate: per-agent mean search HV (val) on each, and the rank agreement (Kendall τ
    of the agents' means and of single runs). None when the board holds no validated file."""
    from agents.base import Budget
    from agents.leaderboard.board import board_entries
    from agents.leaderboard.metrics import hypervolume
    from agents.runner import run_search
    from automc_env.env import AutoMCEnv

    entries, _ = board_entries(task, root)
    if not entries:
        return None
    env = AutoMCEnv(task=task, backend="surrogate", store=False, backend_options={"model": model})  # None: shipped
    base_acc, gamma = env.base["acc"], env.task.gamma
    hv: dict[str, dict[str, list[float]]] = {"real": {}, "surrogate": {}}
    for entry in sorted(entries, key=lambda e: (e["agent"], e["seed"])):
        # the options the search ran with, as the validator re-runs it (agent_options is only readable)
        blob = json.loads(Path(entry["_path"]).read_text())
        options = (blob.get("agent_config") or {}).get("options", {})
        budget = Budget(**entry["protocol"]["budget"])
        real = hypervolume(((e["acc"], e["PR"]) for e in entry["evaluations"] if not e.get("failed")),
                           base_acc, gamma)
        result = run_search(env, entry["agent"], budget, entry["seed"], progress=False, **options)
        predicted = hypervolume(((e.acc, e.PR) for e in result.evaluations if not e.failed), base_acc, gamma)
        hv["real"].setdefault(entry["agent"], []).append(real)
        hv["surrogate"].setdefault(entry["agent"], []).append(predicted)
        log(f"live vs surrogate {entry['agent']} seed {entry['seed']}: search HV {real:.4f} real, "
            f"{predicted:.4f} surrogate")
    agents = sorted(hv["real"])
    mean = {k: {a: float(np.mean(hv[k][a])) for a in agents} for k in hv}
    runs = [(s, r) for a in agents for s, r in zip(hv["surrogate"][a], hv["real"][a])]
    return {"hv": hv, "mean": mean, "budget": entries[0]["protocol"]["budget"],
            "seeds": sorted({e["seed"] for e in entries}),
            "agents_tau": _stat(kendalltau, np.array([mean["surrogate"][a] for a in agents]),
                                np.array([mean["real"][a] for a in agents])),
            "runs_tau": _stat(kendalltau, np.array([s for s, _ in runs]), np.array([r for _, r in runs])),
            "best_real": max(agents, key=lambda a: mean["real"][a]),
            "best_surrogate": max(agents, key=lambda a: mean["surrogate"][a])}


# ---- the whole report ----------------------------------------------------------------------------------

AGREEMENT_AGENTS = ("random", "tpe", "nsga2", "rvea", "ppo-mask", "ppo", "rl", "automc")
SUBGRID = {"actions": "paper-12", "max_len": 3}   # the data set's exhaustive design (every scheme is real)
REPORT_KEYS = ("schemes", "schemes_pr_ge_gamma", "acc_tau_pr_ge_gamma", "test_acc_tau_pr_ge_gamma", "acc_tau",
               "acc_rho", "acc_mae", "PR_mae", "PR_r2", "FR_mae", "FR_r2", "cost_rel_error")


def full_report(task: str = "digits", agents: Sequence[str] = (), seeds: int = 10, executions: int = 150,
                families: bool = True, live_root=None, model: SurrogateModel | None = None, log=print) -> dict:
    """Every figure of the module docstring on the released data set of ``task``; with ``agents``,
    also their agreement: each agent searched on the exhaustive table (real steps) and on a surrogate
    fitted without the exhaustive design, same sub-grid, seeds and budget; with ``live_root``, the
    live board's validated searches against the same searches on a surrogate fitted without the
    harvested trajectories (:func:`live_agreement`). ``model``: the model :func:`bounds` checks
    (default: the shipped one)."""
    from agents.base import Budget
    from automc_env import dataset as ds
    from automc_env.env import AutoMCEnv

    env = AutoMCEnv(task=task, backend="table", store=False)
    records = ds.load_records(task)
    main = [r for r in records if r["replicate"] == 0]
    out: dict = {"task": task, "records": len(records), "designs": _count(main, "design")}
    train, test = split_random(main, 0.2, seed=0)
    log(f"random hold-out: {len(train)} training steps, {len(test)} held out")
    out["random_holdout"] = evaluate_split(train, test, main, env)
    for other in ACC_MODES:   # the accuracy encodings not chosen, on the same split
        if other != ACC_MODE:
            out[f"random_holdout_{other}_accuracy"] = evaluate_split(train, test, main, env, acc_mode=other)
    for design in sorted({r["design"] for r in main}):
        rest = [r for r in main if r["design"] != design]
        if rest and len(rest) < len(main) and len(rest) >= 20:
            log(f"leave out {design}")
            out[f"without_{design}"] = evaluate_split(rest, [r for r in main if r["design"] == design], main, env)
    curve = {}
    for fraction in (0.125, 0.25, 0.5, 1.0):
        part = split_random(train, fraction, seed=1)[1] if fraction < 1 else train
        try:
            curve[str(fraction)] = evaluate_split(part, test, main, env)
        except SurrogateError as e:   # too few steps at this fraction: the curve starts later
            log(f"learning curve at {fraction}: {e}")
    out["learning_curve"] = curve
    ceiling = noise_ceiling(records, env)
    if ceiling:
        out["noise_ceiling"] = {k: {kk: vv for kk, vv in v.items() if kk != "schemes_list"} for k, v in ceiling.items()}
        first = next(iter(ceiling.values()))
        out["surrogate_on_ceiling_schemes"] = surrogate_on(first["schemes_list"], records, env)
        truth = expected_truth(records, env)
        if truth:
            out["expected_truth"] = truth
    if families:
        out["families"] = compare_families(main, env, log=log)
    out["bounds"] = bounds(main, env, model=model, log=log)
    if agents:
        missing = exhaustive_missing(task)
        if missing:
            out["agents"] = {"skipped": missing}
            log(f"agents' agreement skipped: {missing}")
        else:
            model = SurrogateModel.fit([r for r in main if r["design"] != "exhaustive"], env)
            real = dict(task=task, backend="table", store=False, **SUBGRID)
            sur = dict(task=task, backend="surrogate", **SUBGRID)
            out["agents"] = agents_agreement(list(agents), list(range(seeds)), Budget(executions=executions), real,
                                             sur, model=model, log=log)
            out["agents"].update(executions=executions, seeds=seeds, subgrid=SUBGRID)
    if live_root is not None:
        unseen = [r for r in main if r["design"] != "trajectories"]
        live = live_agreement(task, live_root, SurrogateModel.fit(unseen, env), log=log)
        out["live"] = live if live is not None else {"skipped": f"no validated file on the {task} live board"}
    return out


def bounds(records: Sequence[dict], env, executions: int = 2000, seeds: int = 2,
           model: SurrogateModel | None = None, log=print) -> dict:
    """How far a search can push the surrogate (``model``, default the shipped one) past what real
    steps reach: the best predicted val accuracy random search finds at PR ≥ each level, against the
    best real one in ``records``.
    A surrogate whose optimum lies far above every real result rewards exploiting its errors (the
    reason answers are capped at the real front: this row then checks the cap)."""
    from agents.base import Budget
    from agents.runner import run_search
    from automc_env.env import AutoMCEnv

    senv = AutoMCEnv(task=env.task.name, backend="surrogate", backend_options={"model": model})  # None: shipped
    base_params = env.base["params"]
    levels = {}
    found = [e for seed in range(seeds)
             for e in run_search(senv, "random", Budget(executions=executions), seed, progress=False).evaluations]
    for level in (env.task.gamma, 0.5, 0.7):
        real = [r["acc"] for r in records if 1 - r["params"] / base_params >= level]
        pred = [e.acc for e in found if e.PR >= level]
        levels[f"{level:g}"] = {"surrogate": max(pred) if pred else None, "real": max(real) if real else None}
    log(f"bounds: {levels}")
    return {"executions": executions, "seeds": seeds, "levels": levels}


def _count(records: Sequence[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r[key]] = out.get(r[key], 0) + 1
    return dict(sorted(out.items()))


def exhaustive_missing(task: str = "digits") -> str | None:
    """None when the released data set holds every valid scheme of the exhaustive sub-grid, else why not."""
    from automc_env.backends.table import TableMiss
    from automc_env.env import AutoMCEnv

    env = AutoMCEnv(task=task, backend="table", store=False, **SUBGRID)
    frontier, missing, held = [()], 0, 0
    while frontier:
        scheme = frontier.pop()
        try:
            env.reset(options={"scheme": list(scheme)})
        except TableMiss:
            missing += 1
            continue
        held += 1
        if not env._done:
            frontier += [scheme + (int(a),) for a in np.flatnonzero(env.action_masks())]
    return None if not missing else f"{missing} schemes of the exhaustive sub-grid are not in the data set yet ({held} are)"


def markdown(report: dict) -> str:
    """The report's tables (what the README shows)."""
    rows = [(name, v) for name, v in report.items() if name.startswith("random_holdout") or name.startswith("without_")
            or name == "surrogate_on_ceiling_schemes"]
    rows += [(f"learning curve: {v['train_steps']} training steps", v) for v in report.get("learning_curve", {}).values()]
    rows += [(f"noise ceiling: {k} vs replicate 0 (real vs real)", v) for k, v in report.get("noise_ceiling", {}).items()]
    truth = report.get("expected_truth")
    if truth:
        label = " and ".join(map(str, truth["replicates_averaged"]))
        rows += [(f"vs the mean of replicates {label}: one real run (replicate 0)", truth["one_real_run"]),
                 (f"vs the mean of replicates {label}: the surrogate", truth["surrogate"])]
    lines = ["| comparison | " + " | ".join(REPORT_KEYS) + " |", "|---|" + "---|" * len(REPORT_KEYS)]
    for name, v in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(v.get(k)) for k in REPORT_KEYS) + " |")
    gap = (report.get("surrogate_on_ceiling_schemes") or {}).get("ceiling_gap")
    if gap:
        parts = [f"{k.replace('_vs_', ' vs ').replace('_', ' ')}: {v['gap']:+.3f} [{v['ci95'][0]:+.3f}, "
                 f"{v['ci95'][1]:+.3f}]" for k, v in gap.items() if isinstance(v, dict)]
        lines += ["", f"Surrogate minus noise ceiling on the ceiling's {gap['schemes']} schemes with PR ≥ γ (Kendall τ, "
                      f"paired bootstrap over schemes, {gap['resamples']} resamples, 95 % interval; 'mean': against "
                      f"the replicates' mean τ): " + "; ".join(parts) + "."]
    fam = report.get("families")
    if fam:
        keys = ("acc_r2", "acc_tau", "test_acc_r2", "test_acc_tau", "log_params_r2", "log_flops_r2", "cost_r2",
                "fit_seconds", "predict_us_per_row")
        lines += ["", f"Model families, step by step on held-out schemes' steps ({fam['train_steps']} training "
                      f"steps, {fam['test_steps']} held out; true parent states):", "",
                  "| family | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, row in fam.items():
            if isinstance(row, dict):
                lines.append(f"| {name} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    b = report.get("bounds")
    if b:
        lines += ["", f"Bounded answers: the best val accuracy random search finds on the surrogate "
                      f"({b['executions']} executions, seeds {b['seeds']}) against the best any real step reached "
                      f"(the data set). The model caps its answers at the real front of the steps it was fitted on "
                      f"(`surrogate.real_front`), so with the shipped model fitted on this data set the surrogate "
                      f"column cannot exceed the real one: equality means searches reach the cap.", "",
                  "| PR at least | surrogate (predicted) | real (data set) |", "|---|---|---|"]
        for level, row in b["levels"].items():
            lines.append(f"| {level} | {_fmt(row['surrogate'])} | {_fmt(row['real'])} |")
    a = report.get("agents")
    if a and "skipped" not in a:
        lines += ["", f"Agents on the exhaustive sub-grid ({a['executions']} executions, {a['seeds']} seeds): mean "
                      "hypervolume (val) on real steps (the table) and on the surrogate fitted without them.", "",
                  "| agent | HV real | HV surrogate |", "|---|---|---|"]
        for agent in a["mean"]["real"]:
            lines.append(f"| {agent} | {a['mean']['real'][agent]:.4f} | {a['mean']['surrogate'][agent]:.4f} |")
        lines += ["", f"Kendall τ of the agents' mean HVs: {_fmt(a['agents_tau'])}; of single runs: "
                      f"{_fmt(a['runs_tau'])}; best agent real: {a['best_real']}, on the surrogate: "
                      f"{a['best_surrogate']}."]
    elif a:
        lines += ["", f"Agents' agreement: skipped ({a['skipped']})."]
    live = report.get("live")
    if live and "skipped" not in live:
        lines += ["", f"The live board's searches (real steps; budget {live['budget']}, seeds {live['seeds']}) "
                      "against the same searches on a surrogate fitted without the harvested trajectories: mean "
                      "search hypervolume (val).", "", "| agent | HV live (real) | HV surrogate |", "|---|---|---|"]
        for agent in live["mean"]["real"]:
            lines.append(f"| {agent} | {live['mean']['real'][agent]:.4f} | {live['mean']['surrogate'][agent]:.4f} |")
        lines += ["", f"Kendall τ of the agents' mean HVs: {_fmt(live['agents_tau'])}; of single runs: "
                      f"{_fmt(live['runs_tau'])}; best agent live: {live['best_real']}, on the surrogate: "
                      f"{live['best_surrogate']}."]
    elif live:
        lines += ["", f"Live agreement: skipped ({live['skipped']})."]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return "nan" if v != v else f"{v:.3f}"


def write_report(report: dict, out_dir) -> list:
    """report.json, report.md and the learning-curve plot (τ against training steps, ceiling dashed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(report, indent=2, default=float) + "\n")
    paths[1].write_text(f"# Surrogate fidelity: {report['task']}\n\n{markdown(report)}\n")
    curve = report.get("learning_curve") or {}
    if curve:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [v["train_steps"] for v in curve.values()]
        for key, label in (("acc_tau_pr_ge_gamma", "val acc τ (PR ≥ γ)"), ("test_acc_tau_pr_ge_gamma",
                                                                          "test acc τ (PR ≥ γ)"),
                           ("acc_tau", "val acc τ (all)")):
            line, = ax.plot(xs, [v[key] for v in curve.values()], marker="o", label=label)
            for name, c in (report.get("noise_ceiling") or {}).items():
                if c.get(key) == c.get(key):
                    ax.axhline(c[key], color=line.get_color(), ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("training steps (log)")
        ax.set_ylabel("Kendall τ on held-out schemes")
        ax.set_title(f"surrogate learning curve, {report['task']} (dashed: real seed vs seed)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "learning_curve.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


# ---- model families ----------------------------------------------------------------------------------

def _families() -> dict:
    """Candidate model families, each a factory of one regressor per target (scikit-learn)."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from automc_env.backends.surrogate import HGB_PARAMS

    class Ensemble:
        """Mean of a few MLPs of different seeds (a small network ensemble)."""

        def __init__(self, k: int = 5):
            self.members = [make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-3, max_iter=2000,
                                                                         early_stopping=True, random_state=s))
                            for s in range(k)]

        def fit(self, X, y):
            for m in self.members:
                m.fit(X, y)
            return self

        def predict(self, X):
            return np.mean([m.predict(X) for m in self.members], axis=0)

    return {
        "gradient-boosted trees (shipped)": lambda: HistGradientBoostingRegressor(**HGB_PARAMS),
        "random forest (300 trees)": lambda: RandomForestRegressor(n_estimators=300, min_samples_leaf=3, n_jobs=1, random_state=0),
        "MLP ensemble (5 x 64-64)": lambda: Ensemble(5),
        "ridge (linear baseline)": lambda: make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 3, 13))),
    }


def compare_families(records: Sequence[dict], env, seed: int = 0, log=print) -> dict:
    """Step-level fidelity of each family on held-out schemes' steps (true parent states given): R² of
    each target, Kendall τ of the child's val accuracy, fit seconds and prediction µs per row; the
    boosted trees with the other accuracy encodings too (absolute, and the change from the parent)."""
    import time

    from automc_env.backends.surrogate import ACC_MODE, ACC_MODES, TARGETS, Featurizer, decode, training_rows

    featurizer = Featurizer(env.space, env.task)
    base = dict(env.base, test_acc=env.base_test_acc)
    train, test = split_random(records, 0.2, seed=seed)
    out: dict = {}
    families = _families()
    runs = [(name, ACC_MODE) for name in families] + [(next(iter(families)), mode) for mode in ACC_MODES
                                                       if mode != ACC_MODE]
    for name, mode in runs:
        Xtr, Ytr, _ = training_rows(train, featurizer, base, mode)
        Xte, Yte, used = training_rows(test, featurizer, base, mode)
        out.update(train_steps=len(Xtr), test_steps=len(Xte))
        parent = {"acc": Xte[:, 3] * 100.0, "test_acc": Xte[:, 4] * 100.0,
                  "params": Xte[:, 1] * base["params"], "flops": Xte[:, 2] * base["flops"]}
        t0 = time.perf_counter()
        models = [families[name]().fit(Xtr, Ytr[:, k]) for k in range(Ytr.shape[1])]
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        P = np.stack([m.predict(Xte) for m in models], axis=1)
        us = (time.perf_counter() - t0) / max(len(Xte), 1) * 1e6
        pred, true = decode(P, parent, mode), decode(Yte, parent, mode)
        row = {f"{t}_r2": _r2(P[:, k], Yte[:, k]) for k, t in enumerate(TARGETS) if k >= 2}
        for key in ("acc", "test_acc"):
            row[f"{key}_r2"] = _r2(pred[key], true[key])
            row[f"{key}_tau"] = _stat(kendalltau, pred[key], true[key])
        row.update(fit_seconds=fit_s, predict_us_per_row=us)
        label = f"{name}, {mode} accuracy"
        out[label] = row
        log(f"{label}: acc R² {row['acc_r2']:.3f}, acc τ {row['acc_tau']:.3f}, fit {fit_s:.1f} s")
    return out
