"""All agents x seeds at an equal budget on one task: hypervolume and best accuracy at PR ≥ γ.

Runs the leaderboard harness (``agents.leaderboard.run_bench``) into a scratch folder, or reads a
folder of result files already written (``--root leaderboards`` reads the published board), and
prints, per agent, mean ± standard error over seeds of: the test-split hypervolume of the final
schemes, the test accuracy of the val-chosen best scheme at PR ≥ γ, and the search-split
hypervolume at *equal compute* C* (the smallest compute any search spent), which compares agents
at exactly the same compression-seconds even when their last steps overshoot differently.

Usage: python benchmarks/compare_agents.py [--task digits] [--agents random,nsga2,...] [--seeds 3]
                                           [--budget compute=150] [--root DIR] [--agent-options JSON]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from agents import leaderboard as L
from agents.base import Budget
from agents.runner import available_agents
from automc_env.home import automc_home


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits")
    p.add_argument("--agents", default=",".join(available_agents()))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", help="default: the task's leaderboard protocol budget")
    p.add_argument("--root", help="folder of result files (existing ones are reused, not rerun); "
                                  "default: AUTOMC_HOME/bench")
    p.add_argument("--agent-options", default="{}",
                   help='JSON: per-agent options, e.g. \'{"automc": {"knowledge": {"epochs": 20}}}\'')
    args = p.parse_args()
    root = Path(args.root) if args.root else automc_home() / "bench"
    agents = [a for a in args.agents.split(",") if a]
    budget = Budget.parse(args.budget) if args.budget else None
    L.run_bench(args.task, agents, list(range(args.seeds)), root=root, budget=budget,
                agent_options=json.loads(args.agent_options), progress=False)
    entries = [e for e in L.collect(args.task, root) if e["agent"] in agents and e["seed"] < args.seeds]
    rows = L.rank(entries, only_protocol=False)
    c_star = min(e["metrics"]["compute"] for e in entries)
    print(L.markdown_table(rows, args.task))
    print(f"\nsearch-split HV at equal compute C* = {c_star:.0f} s (mean ± SE):")
    for r in rows:
        hv = [float(L.anytime_hv(e, [c_star])[0]) for e in entries if e["agent"] == r["agent"]]
        se = np.std(hv, ddof=1) / math.sqrt(len(hv)) if len(hv) > 1 else float("nan")
        print(f"  {r['agent']:<10} {np.mean(hv):.4f} ± {se:.4f}")


if __name__ == "__main__":
    main()
