"""Do the surrogate board's results hold on real steps? Recompute its searches' final schemes live.

Usage: python benchmarks/surrogate_finals.py [--track digits-surrogate] [--agents a,b] [--seeds 0]
       [--root leaderboards] [--json] [--out FILE]

A surrogate track ranks agents by the test HV of the schemes each search reports (its final set),
with every accuracy predicted. This script computes those same final schemes for real (the live
backend, through the store, so shared prefixes are computed once) and prints, per agent, the test
HV the surrogate predicted against the test HV the same schemes really have, and per scheme the
predicted and real val / test accuracy and PR. It asks whether the surrogate's winners are real
winners or schemes where the surrogate errs upwards; the schemes are the search's, chosen on
predicted val, so a search that exploits the surrogate's errors is caught here. Real steps cost
seconds each on a CPU: the default is one seed per agent (the data set's ``finals`` design holds
the surrogate board's reported schemes of several agents and seeds: collected into the store, they
replay for free). The summary compares the rankings: agents' mean HV predicted vs real, per search,
and per reported scheme.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from agents.leaderboard.metrics import summary_metrics
from automc_env.env import AutoMCEnv


def real_finals(env: AutoMCEnv, final: list[dict]) -> list[dict]:
    """The final schemes as the live backend measures them (from the store where possible), with the
    surrogate's prediction beside each."""
    out = []
    for f in final:
        _, info = env.reset(options={"scheme": list(f["scheme"])})
        out.append({**{k: info[k] for k in ("acc", "params", "flops", "AR", "PR", "FR")}, "scheme": list(f["scheme"]),
                    "test_acc": env.test_accuracy(), "predicted": {k: f[k] for k in ("acc", "test_acc", "PR")}})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--track", default="digits-surrogate")
    p.add_argument("--agents", default=None, help="comma-separated (default: every agent with a file)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--root", default="leaderboards")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="also write the searches and the summary to this JSON file")
    args = p.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    files = sorted(Path(args.root, args.track).glob("*.json"))
    if not files:
        print(f"no result files under {Path(args.root, args.track)}: run `automc bench --task {args.track}` first",
              file=sys.stderr)
        return 2
    entries = [json.loads(f.read_text()) for f in files]
    wanted = set(args.agents.split(",")) if args.agents else None
    entries = [e for e in entries if e["seed"] in seeds and (wanted is None or e["agent"] in wanted)]
    if not entries:
        print("no file matches --agents/--seeds", file=sys.stderr)
        return 2
    env = AutoMCEnv(task=entries[0]["task"], backend="live", **entries[0]["protocol"].get("env_kwargs", {}))
    base = {"acc": env.base["acc"], "test_acc": env.test_accuracy()}   # the pinned base model, measured live
    rows = []
    for e in sorted(entries, key=lambda e: (e["agent"], e["seed"])):
        finals = real_finals(env, e["final"])
        predicted = summary_metrics(e)["hv"]   # scored as the board scores it
        real = summary_metrics({**e, "final": finals, "base": {**e["base"], **base}})["hv"]
        rows.append({"agent": e["agent"], "seed": e["seed"], "hv_predicted": predicted, "hv_real": real,
                     "schemes": finals})
        print(f"{e['agent']} seed {e['seed']}: test HV {predicted:.4f} predicted, {real:.4f} real "
              f"({len(finals)} final schemes)", file=sys.stderr)
    summary = agreement(rows, env.task.gamma)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"track": args.track, "seeds": seeds, "summary": summary,
                                              "searches": rows}, indent=1) + "\n")
    if args.json:
        print(json.dumps({"summary": summary, "searches": rows}, indent=2))
        return 0
    print("| agent | seed | final schemes | test HV predicted | test HV real | mean test acc error (pp) |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["hv_real"]):
        err = np.mean([s["predicted"]["test_acc"] - s["test_acc"] for s in r["schemes"]]) if r["schemes"] else 0.0
        print(f"| {r['agent']} | {r['seed']} | {len(r['schemes'])} | {r['hv_predicted']:.4f} | {r['hv_real']:.4f} "
              f"| {err:+.2f} |")
    print()
    print("| agent | searches | test HV predicted (mean ± sd) | test HV real (mean ± sd) | rank predicted | rank real |")
    print("|---|---|---|---|---|---|")
    for a in summary["agents"]:
        print(f"| {a['agent']} | {a['searches']} | {a['hv_predicted']:.4f} ± {a['hv_predicted_sd']:.4f} "
              f"| {a['hv_real']:.4f} ± {a['hv_real_sd']:.4f} | {a['rank_predicted']} | {a['rank_real']} |")
    print(f"\nKendall τ, agents' mean HV predicted vs real: {summary['tau_agents']:.3f}; searches: "
          f"{summary['tau_searches']:.3f}; reported schemes with PR ≥ γ, test accuracy: {summary['tau_schemes']:.3f} "
          f"({summary['schemes']} schemes; mean error {summary['mean_error_pp']:+.2f} pp)")
    return 0


def agreement(rows: list[dict], gamma: float) -> dict:
    """How the surrogate's verdicts on these searches compare with the real ones: per agent, mean HV
    predicted and real and the ranks they give; Kendall τ over agents' means, over searches, and
    over the reported schemes' test accuracy (PR ≥ γ, distinct schemes)."""
    from scipy.stats import kendalltau

    agents = sorted({r["agent"] for r in rows})
    per = []
    for a in agents:
        mine = [r for r in rows if r["agent"] == a]
        pred, real = [r["hv_predicted"] for r in mine], [r["hv_real"] for r in mine]
        per.append({"agent": a, "searches": len(mine), "hv_predicted": float(np.mean(pred)),
                    "hv_predicted_sd": float(np.std(pred)), "hv_real": float(np.mean(real)),
                    "hv_real_sd": float(np.std(real))})
    for key in ("predicted", "real"):
        order = sorted(per, key=lambda a: -a[f"hv_{key}"])
        for i, a in enumerate(order):
            a[f"rank_{key}"] = i + 1
    schemes = {}
    for r in rows:
        for s in r["schemes"]:
            if s["PR"] >= gamma:
                schemes[tuple(s["scheme"])] = (s["predicted"]["test_acc"], s["test_acc"])
    pairs = np.array(list(schemes.values())) if schemes else np.zeros((0, 2))

    def tau(x, y) -> float:
        return float(kendalltau(x, y).statistic) if len(x) > 2 else float("nan")

    return {"agents": sorted(per, key=lambda a: a["rank_real"]),
            "tau_agents": tau([a["hv_predicted"] for a in per], [a["hv_real"] for a in per]),
            "tau_searches": tau([r["hv_predicted"] for r in rows], [r["hv_real"] for r in rows]),
            "tau_schemes": tau(pairs[:, 0], pairs[:, 1]), "schemes": len(pairs),
            "mean_error_pp": float(np.mean(pairs[:, 0] - pairs[:, 1])) if len(pairs) else float("nan")}

if __name__ == "__main__":
    sys.exit(main())
