"""RL at scale on the surrogate: MaskablePPO for 100,000 environment steps on digits, in minutes.

On real steps a PPO search affordable on a CPU sees a few dozen steps and never updates its policy;
on the surrogate backend it can see a hundred thousand. Prints the learning curve (mean episode
return per 5,000 steps, the default potential-based reward: 1 for reaching γ, plus the relative
accuracy change, plus half a point per point of PR beyond γ) and how long it took; writes the
curve as CSV and PNG. The surrogate's answers are predictions (``info["backend"] == "surrogate"``):
this measures the RL machinery and what the surrogate rewards, not a real compression result.

Usage: python benchmarks/rl_surrogate.py [--steps 100000] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback

import automc_env  # noqa: F401  (registers AutoMC-v0)


class Curve(BaseCallback):
    """Episode returns and final accuracies / PRs, in the order episodes end."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, float, float, float]] = []
        self._ret = 0.0

    def _on_step(self) -> bool:
        self._ret += float(self.locals["rewards"][0])
        if self.locals["dones"][0]:
            info = self.locals["infos"][0]
            self.rows.append((self.num_timesteps, self._ret, float(info["acc"]), float(info["PR"])))
            self._ret = 0.0
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="digits")
    p.add_argument("--out", default=".", help="directory for rl_surrogate.csv and rl_surrogate.png")
    args = p.parse_args()
    torch.set_num_threads(1)
    env = gym.make("AutoMC-v0", task=args.task, backend="surrogate", store=False)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=1024, batch_size=256, n_epochs=4, learning_rate=3e-4,
                        seed=args.seed, device="cpu", verbose=0)
    curve = Curve()
    started = time.perf_counter()
    model.learn(total_timesteps=args.steps, callback=curve)
    seconds = time.perf_counter() - started
    rows = np.array(curve.rows)
    print(f"MaskablePPO, {args.steps:,} surrogate steps on {args.task}: {seconds:.0f} s "
          f"({args.steps / seconds:,.0f} env steps/s including learning), {len(rows)} episodes")
    print(f"{'steps':>8} {'episodes':>8} {'mean return':>11} {'mean acc %':>10} {'mean PR':>8} {'PR >= γ':>8}")
    gamma = env.unwrapped.task.gamma
    edges = np.arange(0, args.steps + 5000, 5000)
    for lo, hi in zip(edges[:-1], edges[1:]):
        block = rows[(rows[:, 0] > lo) & (rows[:, 0] <= hi)]
        if len(block):
            print(f"{hi:>8,} {len(block):>8} {block[:, 1].mean():>11.3f} {block[:, 2].mean():>10.2f} "
                  f"{block[:, 3].mean():>8.3f} {np.mean(block[:, 3] >= gamma):>8.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rl_surrogate.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestep", "return", "acc", "PR"])
        w.writerows(curve.rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(rows[:, 0], rows[:, 1], ".", ms=1, alpha=0.2, color="0.6")
    window = max(1, len(rows) // 50)
    smooth = np.convolve(rows[:, 1], np.ones(window) / window, mode="valid")
    ax.plot(rows[window - 1:, 0], smooth, color="C0", label=f"moving mean ({window} episodes)")
    ax.set_xlabel("environment steps (surrogate)")
    ax.set_ylabel("episode return")
    ax.set_title(f"MaskablePPO on AutoMC-v0 ({args.task}, surrogate backend)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rl_surrogate.png", dpi=120)
    print(f"wrote {out / 'rl_surrogate.csv'} and {out / 'rl_surrogate.png'}")


if __name__ == "__main__":
    main()
