"""Do the surrogate board's results hold on real steps? Recompute its searches' final schemes live.

Usage: python benchmarks/surrogate_finals.py [--track digits-surrogate] [--agents a,b] [--seeds 0]
       [--root leaderboards] [--json]

A surrogate track ranks agents by the test HV of the schemes each search reports (its final set),
with every accuracy predicted. This script computes those same final schemes for real (the live
backend, through the store, so shared prefixes are computed once) and prints, per agent, the test
HV the surrogate predicted against the test HV the same schemes really have, and per scheme the
predicted and real val / test accuracy and PR. It asks whether the surrogate's winners are real
winners or schemes where the surrogate errs upwards; the schemes are the search's, chosen on
predicted val, so a search that exploits the surrogate's errors is caught here. Real steps cost
seconds each on a CPU: the default is one seed per agent.
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
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| agent | seed | final schemes | test HV predicted | test HV real | mean test acc error (pp) |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["hv_real"]):
        err = np.mean([s["predicted"]["test_acc"] - s["test_acc"] for s in r["schemes"]]) if r["schemes"] else 0.0
        print(f"| {r['agent']} | {r['seed']} | {len(r['schemes'])} | {r['hv_predicted']:.4f} | {r['hv_real']:.4f} "
              f"| {err:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
