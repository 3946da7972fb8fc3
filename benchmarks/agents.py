"""All agents x seeds at an equal budget on one task: hypervolume and best accuracy at PR ≥ γ.

Hypervolume (pymoo) of each result's schemes with PR ≥ γ in the minimisation space
(error = 1 − acc/100, remaining params = 1 − PR), reference point (1, 1 − γ): 0 = nothing reached γ.
All agents share one evaluation store (prefix reuse across agents); a compute budget counts the
seconds each search actually spends, so cached steps are free.

Usage: python benchmarks/agents.py [--task digits] [--agents random,nsga2,...] [--seeds 3]
                                   [--budget compute=300] [--out-dir results/]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `agents` package; drop that entry before importing it.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from agents.base import Budget, SearchResult  # noqa: E402
from agents.runner import available_agents, run_search  # noqa: E402
from automc_env.env import AutoMCEnv  # noqa: E402


def hypervolume(result: SearchResult) -> float:
    from pymoo.indicators.hv import HV

    pts = np.array([[1 - e.acc / 100, 1 - e.PR] for e in result.evaluations if e.PR >= result.gamma])
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=np.array([1.0, 1.0 - result.gamma]))(pts))


def mean_se(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or np.all(np.isnan(v)):
        return "-"
    v = v[~np.isnan(v)]
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return f"{v.mean():.4f} ± {se:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="digits")
    p.add_argument("--agents", default=",".join(available_agents()))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", default="compute=300")
    p.add_argument("--out-dir", help="write each result JSON here")
    p.add_argument("--agent-options", default="{}",
                   help='JSON: per-agent options, e.g. \'{"automc": {"knowledge": {"epochs": 20}}}\'')
    args = p.parse_args()
    budget = Budget.parse(args.budget)
    agent_options = json.loads(args.agent_options)
    env = AutoMCEnv(task=args.task)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for agent in args.agents.split(","):
        hv, best, n = [], [], []
        for seed in range(args.seeds):
            out = out_dir / f"{agent}-seed{seed}.json" if out_dir else None
            r = run_search(env, agent, budget, seed, out=out, progress=False, **agent_options.get(agent, {}))
            hv.append(hypervolume(r))
            b = r.best()
            best.append(b.acc if b else float("nan"))
            n.append(len(r.evaluations))
            print(json.dumps({"agent": agent, "seed": seed, "hv": hv[-1], "best_acc": best[-1],
                              "schemes": n[-1], "spent": r.spent}))
        rows.append((agent, mean_se(hv), mean_se(best), np.mean(n)))
    print(f"\ntask {args.task}, budget {args.budget}, {args.seeds} seeds (mean ± standard error)")
    print(f"{'agent':<10} {'hypervolume':>20} {'best acc at PR≥γ':>20} {'schemes':>8}")
    for agent, hv, best, n in rows:
        print(f"{agent:<10} {hv:>20} {best:>20} {n:>8.1f}")


if __name__ == "__main__":
    main()
