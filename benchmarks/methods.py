"""Per method on a CPU task: seconds and cost per step, PR achieved vs requested, accuracy change.

Each strategy is applied to the pre-trained base model (no store), at two removal targets. ``s``
is the measured wall time of the step (machine- and load-dependent), ``cost`` its deterministic
price in reference seconds (``automc_env.cost``); the Pearson r between the two across the
strategies run says how well the cost model tracks this machine's time (run at
OMP_NUM_THREADS=1 on an idle machine to compare with the calibration).
Usage: python benchmarks/methods.py [--task digits] [--markdown]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from automc_env.env import AutoMCEnv
from automc_env.space import get_space

SETTINGS = {  # one representative setting per method; dec is filled in per row
    "LMA": {"ft": 0.2, "seg": 8, "T": 3, "alpha": 0.5},
    "LeGR": {"ft": 0.2, "max_prune": 0.9, "evo": 0.4, "crit": "l2_bn"},
    "NS": {"ft": 0.2, "max_prune": 0.9},
    "SFP": {"soft": 0.2, "every": 1},
    "HOS": {"ft": 0.2, "layer": "P2", "filter": "k34", "aux": 0.3, "mse_weight": 1},
    "LFB": {"ft": 0.2, "factor": 1, "loss": "CE"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="digits")
    p.add_argument("--dec", default="0.2,0.4", help="removal targets (fractions of the original params)")
    p.add_argument("--methods", default=",".join(SETTINGS))
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    space = get_space("paper")
    with tempfile.TemporaryDirectory() as root:
        env = AutoMCEnv(task=args.task, store=root)
        base = env.base
        rows = []
        for method in args.methods.split(","):
            for dec in (float(d) for d in args.dec.split(",")):
                sid = space.id_of(method, {**SETTINGS[method], "dec": dec})
                info = env.evaluate([sid])[0]
                rows.append((space[sid].name, dec, info["PR"], info["FR"], base["acc"], info["acc"],
                             info["seconds"], info["cost"]))
    print(f"task {args.task}: base model {base['params']:,} params, val acc {base['acc']:.2f} %")
    seconds, costs = np.array([r[6] for r in rows]), np.array([r[7] for r in rows])
    varied = len(rows) > 1 and seconds.std() > 0 and costs.std() > 0
    r = float(np.corrcoef(seconds, costs)[0, 1]) if varied else float("nan")
    summary = (f"Pearson r (seconds vs cost) over {len(rows)} strategies: {r:.3f}; total {seconds.sum():.1f} s "
               f"measured vs {costs.sum():.1f} cost (reference s)")
    if args.markdown:
        print("| strategy | PR requested | PR achieved | FR | acc before → after (%) | s / step | cost / step |")
        print("|---|---|---|---|---|---|---|")
        for name, dec, pr, fr, a0, a1, s, c in rows:
            print(f"| `{name}` | {dec:.2f} | {pr:.3f} | {fr:.3f} | {a0:.2f} → {a1:.2f} | {s:.1f} | {c:.1f} |")
        print(f"\n{summary}")
        return
    w = max(len(r[0]) for r in rows)
    print(f"{'strategy':<{w}} {'PR req':>7} {'PR got':>7} {'FR':>6} {'acc before':>10} {'acc after':>9} {'s/step':>7} "
          f"{'cost':>6}")
    for name, dec, pr, fr, a0, a1, s, c in rows:
        print(f"{name:<{w}} {dec:>7.2f} {pr:>7.3f} {fr:>6.3f} {a0:>10.2f} {a1:>9.2f} {s:>7.1f} {c:>6.1f}")
    print(summary)


if __name__ == "__main__":
    main()
