"""Does measuring the schemes searches report fix the surrogate's over-rating of them?

Usage: python benchmarks/finals_holdout.py [--hold automc-legr_only tpe ...] [--root leaderboards]

The data set's ``finals`` design holds the reported schemes (and prefixes) of the digits-surrogate
board's searches, in the order of ``FINALS_AGENTS`` (the order fixes each record's ``index``, so
the index tells which agent's file a step came from). For each held-out agent this compares two
surrogates on that agent's ``finals`` steps, whole schemes chained from the base model: one fitted
without any ``finals`` step (the data the surrogate had before the design existed) and one fitted on
every replicate-0 step except that agent's ``finals``. It prints the mean error (bias) and MAE of
predicted test accuracy, Kendall τ over the steps with PR ≥ γ, and the same for depth 4-5. Prefixes
shared with an earlier file belong to that file's agent, so a held-out agent's schemes can share
prefixes with the training data (as any new search's would). Needs the board's result files (``automc bench --task
digits-surrogate`` regenerates them; the design was collected from the board of the model fitted
without ``finals``, so after a refit point ``--root`` at a copy of that board's files).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from automc_env import dataset as ds
from automc_env.backends.surrogate import SurrogateModel
from automc_env.env import AutoMCEnv

#: the --from list the finals design was collected with (automc_env/datasets/.../DATASHEET.md)
FINALS_AGENTS = ("automc-legr_only", "automc", "tpe", "automc-no_exp", "automc-no_kg", "rl", "nsga2", "random")
FINALS_SEEDS = range(8)


def owners(root: Path) -> dict[int, str]:
    """Record index -> the agent whose result file put that scheme in the design (the design's own
    scheme order: ``dataset.trajectory_schemes(files, "final")``)."""
    out, index = {}, 0
    for agent in FINALS_AGENTS:
        files = [root / "digits-surrogate" / f"{agent}-seed{seed}.json" for seed in FINALS_SEEDS]
        for _ in ds.trajectory_schemes(files, "final")(None):
            out[index] = agent
            index += 1
    return out


def errors(model: SurrogateModel, steps: list[dict], gamma: float) -> dict:
    env = AutoMCEnv(task="digits", backend="surrogate", backend_options={"model": model}, store=False)
    pred, real, pr, depth = [], [], [], []
    for r in steps:
        env.reset(options={"scheme": r["scheme"]})
        pred.append(env.state["test_acc"])
        real.append(r["test_acc"])
        pr.append(1.0 - r["params"] / env.base["params"])
        depth.append(len(r["scheme"]))
    pred, real, pr, depth = map(np.array, (pred, real, pr, depth))
    ok, deep = pr >= gamma, depth >= 4
    return {"steps": len(steps), "bias": float(np.mean(pred - real)), "mae": float(np.mean(abs(pred - real))),
            "tau": float(kendalltau(pred[ok], real[ok]).statistic), "tau_steps": int(ok.sum()),
            "deep_steps": int(deep.sum()), "deep_bias": float(np.mean((pred - real)[deep])) if deep.any() else None,
            "deep_mae": float(np.mean(abs(pred - real)[deep])) if deep.any() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hold", nargs="+", default=list(FINALS_AGENTS))
    ap.add_argument("--root", default="leaderboards", type=Path)
    args = ap.parse_args()
    owner = owners(args.root)
    rep0 = [r for r in ds.load_records("digits") if r["replicate"] == 0]
    table = AutoMCEnv(task="digits", backend="table", store=False)
    before = SurrogateModel.fit([r for r in rep0 if r["design"] != "finals"], table)
    print("| held-out agent | steps | surrogate | bias (pp) | MAE (pp) | τ (PR ≥ γ) | depth 4-5: bias | MAE |")
    print("|---|---|---|---|---|---|---|---|")
    for agent in args.hold:
        held = [r for r in rep0 if r["design"] == "finals" and owner.get(r["index"]) == agent]
        if not held:
            print(f"| {agent} | 0 | (no finals records of this agent yet) |||||")
            continue
        train = [r for r in rep0 if not (r["design"] == "finals" and owner.get(r["index"]) == agent)]
        refit = SurrogateModel.fit(train, table)
        for name, model in (("without finals", before), ("+ other agents' finals", refit)):
            e = errors(model, held, table.task.gamma)
            print(f"| {agent} | {e['steps']} | {name} | {e['bias']:+.2f} | {e['mae']:.2f} | {e['tau']:.3f} "
                  f"| {e['deep_bias']:+.2f} | {e['deep_mae']:.2f} |")


if __name__ == "__main__":
    main()
