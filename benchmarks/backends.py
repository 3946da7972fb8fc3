"""Environment steps per second on digits: live, table and surrogate; one environment and batched.

Usage: python benchmarks/backends.py [--seconds 5] [--repeats 3] [--num-envs 256 1024 4096] [--live-steps 3] [--json]

Every mode runs a uniformly random *valid* agent (the masked random policy) for ``--seconds`` of
wall time and counts environment steps, resets excluded:

* one environment, ``gymnasium.make("AutoMC-v0", backend=...)``: the agent draws uniformly from
  ``action_masks()`` each step (targets: at least 10,000 steps/s on table and surrogate). Printed
  twice: steps per second of the whole loop (the agent's draw included), and of the environment
  alone (``step`` and ``reset`` calls only), since an agent's own cost is not the environment's;
* batched, ``gymnasium.make_vec("AutoMC-v0", num_envs=N, backend=...)``: the agent draws with the
  vector environment's ``sample_valid_actions()`` (target: at least 100,000 steps/s), and again
  building the full ``(N, 4,525)`` masks every step as MaskablePPO does;
* live: ``--live-steps`` real depth-1 compressions into a private store (nothing cached).

The table holds only real results: it runs on the data set's exhaustive sub-grid (``actions=
"paper-12"``, ``max_len=3``), where every valid scheme is stored; if the released data set does not
hold the whole sub-grid yet, the table rows say so and are skipped. Run it on an otherwise idle
machine (the load average is printed). Surrogate answers are predictions, not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np
import torch

import automc_env  # noqa: F401  (registers AutoMC-v0)
from automc_env.backends.table import TableMiss

TABLE = {"actions": "paper-12", "max_len": 3}   # the exhaustive sub-grid of the data set


def single(backend: str, seconds: float, **kwargs) -> dict:
    env = gym.make("AutoMC-v0", task="digits", backend=backend, **kwargs).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, episodes, in_env, t0 = 0, 0, 0.0, time.perf_counter()
    while True:
        valid = np.flatnonzero(env.action_masks())
        action = valid[rng.integers(len(valid))]
        s0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
            episodes += 1
        in_env += time.perf_counter() - s0
        steps += 1
        if (terminated or truncated) and time.perf_counter() - t0 >= seconds:
            break
    wall = time.perf_counter() - t0
    return {"mode": f"{backend}, 1 env", "steps": steps, "episodes": episodes, "seconds": wall,
            "steps_per_s": steps / wall, "env_steps_per_s": steps / in_env}


def batched(backend: str, n: int, seconds: float, masks: bool, **kwargs) -> dict:
    envs = gym.make_vec("AutoMC-v0", num_envs=n, task="digits", backend=backend, **kwargs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, calls, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if masks:   # what a masked policy sees: the full masks, one draw per row
            m = envs.action_masks()
            live = m.any(axis=1)
            cum = m.cumsum(axis=1)
            pick = (rng.random(n) * np.maximum(cum[:, -1], 1)).astype(np.int64)
            actions = np.where(live, (cum <= pick[:, None]).sum(axis=1), 0)
        else:
            actions = envs.sample_valid_actions()
        stepping = int((~envs._done).sum())   # the rest autoreset this call: not steps
        envs.step(actions)
        steps += stepping
        calls += 1
    wall = time.perf_counter() - t0
    envs.close()
    how = "full masks" if masks else "sample_valid_actions"
    return {"mode": f"{backend}, make_vec N={n}, {how}", "steps": steps, "batches": calls, "seconds": wall,
            "steps_per_s": steps / wall}


def live(k: int) -> dict:
    env = gym.make("AutoMC-v0", task="digits", store=False).unwrapped
    ids = np.flatnonzero(env.action_masks())[:: max(1, len(env.space) // max(k, 1))][:k]
    t0 = time.perf_counter()
    for a in ids:
        env.reset()
        env.step(int(a))
    wall = time.perf_counter() - t0
    return {"mode": "live, 1 env (real steps)", "steps": len(ids), "seconds": wall, "steps_per_s": len(ids) / wall}


def table_complete() -> str | None:
    """None if the released data set holds every valid scheme of the table's sub-grid, else why not."""
    env = gym.make("AutoMC-v0", task="digits", backend="table", **TABLE).unwrapped
    frontier, missing, total = [()], 0, 0
    while frontier:
        scheme = frontier.pop()
        env.reset()
        try:
            env.reset(options={"scheme": list(scheme)})
        except TableMiss:
            missing += 1
            continue
        total += 1
        if not env._done:
            frontier += [scheme + (int(a),) for a in np.flatnonzero(env.action_masks())]
    return None if not missing else f"{missing} schemes of the sub-grid are not in the data set yet ({total} are)"


def best_of(repeats: int, run, *args, **kwargs) -> dict:
    """The median of ``repeats`` runs (a shared virtual machine's rate drifts by 10-20 % between
    runs of a few seconds), with the slowest and fastest run."""
    runs = sorted((run(*args, **kwargs) for _ in range(repeats)), key=lambda r: r["steps_per_s"])
    row = dict(runs[len(runs) // 2], runs=len(runs))
    row["range"] = (runs[0]["steps_per_s"], runs[-1]["steps_per_s"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--num-envs", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--live-steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is printed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    rows = []
    if args.live_steps:
        rows.append(live(args.live_steps))
    rows.append(best_of(args.repeats, single, "surrogate", args.seconds))
    for n in args.num_envs:
        rows.append(best_of(args.repeats, batched, "surrogate", n, args.seconds, masks=False))
        rows.append(best_of(args.repeats, batched, "surrogate", n, args.seconds, masks=True))
    why = table_complete()
    if why is None:
        rows.append(best_of(args.repeats, single, "table", args.seconds, **TABLE))
        for n in args.num_envs:
            rows.append(best_of(args.repeats, batched, "table", n, args.seconds, masks=False, **TABLE))
    else:
        rows.append({"mode": "table", "skipped": why})
    load1 = os.getloadavg()
    if args.json:
        print(json.dumps({"rows": rows, "load": [load0, load1]}, indent=2))
        return
    print(f"digits, load average {' '.join(f'{x:.2f}' for x in load0)} (start) / "
          f"{' '.join(f'{x:.2f}' for x in load1)} (end)")
    print(f"{'mode':<52} {'steps/s':>12} {'(slowest-fastest run)':>23} {'env alone':>10}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['mode']:<52} skipped: {r['skipped']}")
        else:
            digits = 0 if r['steps_per_s'] >= 100 else 2
            spread = f"({r['range'][0]:,.0f}-{r['range'][1]:,.0f})" if "range" in r else ""
            alone = f"{r['env_steps_per_s']:>10,.0f}" if "env_steps_per_s" in r else ""
            print(f"{r['mode']:<52} {r['steps_per_s']:>12,.{digits}f} {spread:>23} {alone}")
    print(f"median of {args.repeats} runs of {args.seconds:g} s per mode; env alone: the step and reset calls "
          f"only (the random agent's draw excluded)")

if __name__ == "__main__":
    main()
