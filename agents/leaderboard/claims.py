"""The AutoMC paper's claims, tested on real data where the data can answer them.

Claim 2 ("combining compression methods beats any single method") needs no search: on the data
set's exhaustive sub-grid (every valid scheme up to depth 3 over two strategies per method, all
computed for real) the best any scheme can do is known. :func:`mixing_on_table` compares the true
Pareto front of the mixed schemes with the front of each single method's schemes: hypervolume (the
board's, on val and on test accuracy) and the best accuracy at each PR level. It answers the claim
for this sub-grid and these depths, not for the whole grid; the surrogate track's method-restricted
searches answer it there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.leaderboard.metrics import hypervolume
from agents.leaderboard.protocol import PR_LEVELS


def mixing_on_table(task: str = "digits", records: Sequence[dict] | None = None, subsets: int = 500) -> dict:
    """Fronts of single-method and mixed schemes of the exhaustive design (replicate 0)."""
    from automc_env import dataset as ds
    from automc_env.env import AutoMCEnv

    env = AutoMCEnv(task=task, backend="table", store=False)
    records = [r for r in (records if records is not None else ds.load_records(task, designs=["exhaustive"]))
               if r["replicate"] == 0 and r["design"] == "exhaustive"]
    base, gamma = env.base, env.task.gamma
    method = {i: env.space[i].method for r in records for i in r["scheme"]}
    groups: dict[str, list[dict]] = {"all": list(records), "mixed": []}
    for m in sorted(set(method.values())):
        groups[f"{m} only"] = []
    for r in records:
        used = {method[i] for i in r["scheme"]}
        groups["mixed" if len(used) > 1 else f"{used.pop()} only"].append(r)
    out = {"task": task, "schemes": len(records), "gamma": gamma, "groups": {}}
    for name, rows in groups.items():
        pts = [(r["acc"], 1 - r["params"] / base["params"], r["test_acc"]) for r in rows]
        best = {}
        for level in (gamma, *PR_LEVELS):
            pool = [p for p in pts if p[1] >= level]
            top = max(pool, default=None, key=lambda p: (p[0], p[1]))
            best[f"{level:g}"] = None if top is None else {"acc": top[0], "test_acc": top[2], "PR": top[1]}
        out["groups"][name] = {
            "schemes": len(rows),
            "hv_val": hypervolume(((a, pr) for a, pr, _ in pts), base["acc"], gamma),
            "hv_test": hypervolume(((t, pr) for _, pr, t in pts), env.base_test_acc, gamma),
            "best": best,
        }
    singles = {k: v for k, v in out["groups"].items() if k.endswith(" only")}
    # More schemes, higher maximum: the mixed group is larger, so each single method is also compared
    # with random mixed subsets of its own size (the share of subsets whose HV beats the method's)
    rng = np.random.default_rng(0)
    mixed = groups["mixed"]
    for name, g in singles.items():
        n = g["schemes"]
        if not n or len(mixed) < n:
            continue
        hvs = []
        for _ in range(subsets):
            pick = [mixed[i] for i in rng.choice(len(mixed), n, replace=False)]
            hvs.append(hypervolume(((r["acc"], 1 - r["params"] / base["params"]) for r in pick), base["acc"], gamma))
        g["mixed_same_size_hv_val"] = float(np.mean(hvs))
        g["mixed_same_size_beats"] = float(np.mean(np.array(hvs) > g["hv_val"]))
    if singles and out["groups"]["mixed"]["schemes"]:
        top_single = max(singles, key=lambda k: singles[k]["hv_val"])
        out["best_single"] = top_single
        out["mixed_minus_best_single_hv_val"] = out["groups"]["mixed"]["hv_val"] - singles[top_single]["hv_val"]
        out["mixed_minus_best_single_hv_test"] = out["groups"]["mixed"]["hv_test"] - singles[top_single]["hv_test"]
    return out


def mixing_table(result: dict) -> str:
    """Markdown of :func:`mixing_on_table`."""
    levels = list(next(iter(result["groups"].values()))["best"])
    lines = ["| schemes | n | HV (val) | HV (test) | " + " | ".join(f"best val acc, PR ≥ {lv}" for lv in levels)
             + " | mixed subsets of the same size: mean HV (val), share beating it |",
             "|---|---|---|---|" + "---|" * len(levels) + "---|"]
    for name, g in result["groups"].items():
        cells = [f"{g['best'][lv]['acc']:.2f}" if g["best"][lv] else "—" for lv in levels]
        same = (f"{g['mixed_same_size_hv_val']:.3f}, {100 * g['mixed_same_size_beats']:.0f} %"
                if "mixed_same_size_hv_val" in g else "")
        lines.append(f"| {name} | {g['schemes']} | {g['hv_val']:.3f} | {g['hv_test']:.3f} | " + " | ".join(cells)
                     + f" | {same} |")
    return "\n".join(lines)


# ---- claims 1-3 on a board -------------------------------------------------------------------------

#: (claim, AutoMC's rival on the board, what the comparison tests)
COMPARISONS = (
    ("1", "random", "progressive search vs random search at equal budget"),
    ("1", "rvea", "vs evolution (RVEA, the paper's evolutionary baseline)"),
    ("1", "nsga2", "vs evolution (NSGA-II)"),
    ("1", "rl", "vs RL (REINFORCE over whole schemes, the paper's RL baseline)"),
    ("1", "ppo-mask", "vs RL (masked PPO)"),
    ("2", "automc-legr_only", "mixing six methods vs LeGR alone (the paper's single-method ablation)"),
    ("3", "automc-no_kg", "with vs without the knowledge graph"),
    ("3", "automc-no_exp", "with vs without the experience network NN_exp"),
    ("3", "automc-non_progressive", "progressive search vs an RL controller over the same embeddings"),
)


def claims_on_board(track: str, root="leaderboards", metric: str | None = None, alpha: float = 0.05) -> dict:
    """The AutoMC agent against each rival of :data:`COMPARISONS` on a track's validated files: mean
    difference of the track's metric (test HV; regret on table tracks, where lower is better) with
    its 95 % Welch interval, Holm-adjusted p over the comparisons made, and a verdict: *reproduced*
    (AutoMC better, significant), *refuted* (AutoMC worse, significant) or *inconclusive*."""
    from agents.leaderboard import stats
    from agents.leaderboard.board import board_entries
    from agents.leaderboard.protocol import get_protocol

    protocol = get_protocol(track)
    metric = metric or protocol.metric
    entries, excluded = board_entries(track, root)
    scores: dict[str, list[float]] = {}
    for e in entries:
        value = e["metrics"].get(metric)
        if value is not None:
            scores.setdefault(e["agent"], []).append(float(value))
    sign = -1.0 if metric == "regret" else 1.0      # "AutoMC better" is a positive difference
    rows = []
    for claim, rival, what in COMPARISONS:
        a, b = scores.get("automc", []), scores.get(rival, [])
        if len(a) < 2 or len(b) < 2:
            continue
        diff, lo, hi = stats.diff_ci(a, b)
        _, _, p = stats.welch(a, b)
        d, lo, hi = sign * diff, min(sign * lo, sign * hi), max(sign * lo, sign * hi)
        rows.append({"claim": claim, "rival": rival, "what": what, "automc": float(np.mean(a)),
                     "rival_mean": float(np.mean(b)), "diff": d, "ci": [lo, hi], "p": p,
                     "seeds": [len(a), len(b)]})
    for row, q in zip(rows, stats.holm([r["p"] for r in rows])):
        row["p_holm"] = q
        row["verdict"] = ("reproduced" if q < alpha and row["diff"] > 0 else
                          "refuted" if q < alpha and row["diff"] < 0 else "inconclusive")
    return {"track": track, "metric": metric, "backend": protocol.backend, "rows": rows,
            "files": len(entries), "excluded": len(excluded)}


def claims_table(result: dict) -> str:
    """Markdown of :func:`claims_on_board`."""
    better = "lower" if result["metric"] == "regret" else "higher"
    label = " (surrogate: predicted numbers)" if result["backend"] == "surrogate" else ""
    lines = [f"Track `{result['track']}`{label}: metric {result['metric']} ({better} is better), "
             f"AutoMC − rival as an improvement, 95 % Welch interval, Holm-adjusted p over {len(result['rows'])} "
             "comparisons.", "",
             "| claim | AutoMC vs | what | AutoMC | rival | improvement [95 % CI] | p (Holm) | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['claim']} | `{r['rival']}` | {r['what']} | {r['automc']:.4f} | {r['rival_mean']:.4f} | "
                     f"{r['diff']:+.4f} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {r['p_holm']:.3g} | "
                     f"{r['seeds'][0]}/{r['seeds'][1]} | **{r['verdict']}** |")
    return "\n".join(lines)
