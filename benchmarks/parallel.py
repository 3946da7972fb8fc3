"""Steps per second: in-process sequential vs Ray with 1 and 2 workers, and a no-Ray control (one torch thread everywhere).

Usage: python benchmarks/parallel.py [--task digits] [--steps N] [--json]

Every mode computes the same fixed list of one- and two-step schemes (all six methods, parents
listed before their children) into its own fresh private store, so every step is computed:

* (a) ``InProcessExecutor`` in this process at 1 torch thread;
* (b) ``RayExecutor(workers=1)`` on a local Ray with 1 CPU;
* (c) ``RayExecutor(workers=2)`` on a local Ray with 2 CPUs;
* (d) the control, no Ray at all: two plain processes, each computing half of the list (whole
  parent-child chains) in its own private store, started together. Its step compute seconds
  against (a)'s measure what the machine itself takes when both cores compute at once (shared
  caches, memory bandwidth, frequency): the ceiling of any executor's speed-up on this machine.

What is timed is the executor's run only. Starting Ray and the workers' first step (importing
torch, loading the task's data) are one-off costs a long search pays once, so each mode first runs
one warm-up step per worker in a throw-away store (the in-process mode too), and the start-up is
reported separately. Reported: wall seconds, steps/s, the sum of the steps' own compute seconds
(wall time inside ``compute_step``), the CPU seconds of this process during the run (for the Ray
modes: the driver's share of the overhead, serialising models and writing the store), the
speed-up of (c) over (b) (target: 1.8x) and Ray's overhead per step, (b) against (a) (target:
under 5 %). The four modes must give bit-identical acc, params, flops, test_acc and cost; the
script exits with status 1 if they do not. Run it on an otherwise idle machine: the load average
at the start and at the end is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from automc_env.env import AutoMCEnv
from automc_env.executor import InProcessExecutor, RayExecutor
from automc_env.space import get_space

KEYS = ("acc", "params", "flops", "test_acc", "cost")
FIRST = ["NS(ft=0.2,dec=0.12,max=0.9)", "LeGR(ft=0.1,dec=0.12,max=0.9,evo=0.4,crit=l2_bn)",
         "SFP(dec=0.12,soft=0.2,every=3)", "HOS(ft=0.1,dec=0.12,layer=P2,filter=k34,aux=0.3,mse=1)",
         "LFB(ft=0.2,dec=0.12,factor=1,loss=CE)", "LMA(ft=0.1,dec=0.12,seg=8,T=3,alpha=0.5)",
         "NS(ft=0.1,dec=0.2,max=0.7)", "SFP(dec=0.2,soft=0.3,every=1)"]
SECOND = [(0, "NS(ft=0.1,dec=0.2,max=0.9)"), (0, "LFB(ft=0.1,dec=0.2,factor=1,loss=CE)"),
          (1, "SFP(dec=0.2,soft=0.2,every=1)"), (1, "NS(ft=0.2,dec=0.2,max=0.9)"),
          (2, "LeGR(ft=0.1,dec=0.2,max=0.9,evo=0.4,crit=l1_weight)"),
          (2, "HOS(ft=0.1,dec=0.2,layer=P1,filter=l1norm,aux=0.3,mse=1)"), (3, "NS(ft=0.1,dec=0.2,max=0.9)"),
          (4, "SFP(dec=0.2,soft=0.2,every=3)"), (5, "NS(ft=0.2,dec=0.2,max=0.9)"),
          (6, "LFB(ft=0.1,dec=0.36,factor=1,loss=CE)"), (6, "LeGR(ft=0.1,dec=0.36,max=0.9,evo=0.4,crit=l2_bn)"),
          (7, "HOS(ft=0.1,dec=0.36,layer=P2,filter=k34,aux=0.3,mse=1)")]
WARM_UP = ["NS(ft=0.1,dec=0.04,max=0.7)", "NS(ft=0.1,dec=0.04,max=0.9)"]  # not among the timed steps


def schemes(n: int) -> list[tuple[int, ...]]:
    """The first ``n`` of the 20 fixed steps; each is a distinct scheme whose parent comes earlier."""
    space = get_space("paper")
    first = [(space.parse(name).id,) for name in FIRST]
    out = first + [first[parent] + (space.parse(name).id,) for parent, name in SECOND]
    if not 1 <= n <= len(out):
        raise SystemExit(f"--steps must be in 1..{len(out)}, got {n}")
    return out[:n]


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_mode(label: str, task: str, todo: list, workers: int) -> dict:
    """Start the executor, warm it up (one step per worker), then time one run over ``todo``."""
    space = get_space("paper")
    started = time.perf_counter()
    executor = InProcessExecutor() if workers == 0 else RayExecutor(workers=workers, threads=1)
    warm = [(space.parse(name).id,) for name in WARM_UP[:max(workers, 1)]]
    executor.run(AutoMCEnv(task=task, store=False, progress=False), warm)
    startup = time.perf_counter() - started
    env = AutoMCEnv(task=task, store=False, progress=False)  # a fresh private store: everything computes
    cpu = time.process_time()
    try:
        report = executor.run(env, todo)
        cpu = time.process_time() - cpu
    finally:
        executor.close()
    if not report.ok or len(report.computed) != len(todo):
        raise SystemExit(f"{label}: expected {len(todo)} computed steps, got {report}")
    records = env.store.records(env.fingerprint)
    return {
        "label": label, "workers": workers, "startup_seconds": startup, "seconds": report.seconds,
        "steps": len(report.computed), "steps_per_second": len(report.computed) / report.seconds,
        "compute_seconds": sum(r.metrics["compute_seconds"] for r in records), "driver_cpu_seconds": cpu,
        "numbers": {",".join(map(str, r.scheme)): {k: r.metrics[k] for k in KEYS} for r in records},
    }


def _control_half(task: str, todo: list, barrier) -> dict:
    """Mode (d)'s process: warm up, wait for the other process, then compute ``todo`` in a private store."""
    torch.set_num_threads(1)
    space = get_space("paper")
    executor = InProcessExecutor()
    executor.run(AutoMCEnv(task=task, store=False, progress=False), [(space.parse(WARM_UP[0]).id,)])
    env = AutoMCEnv(task=task, store=False, progress=False)
    barrier.wait()
    report = executor.run(env, todo)
    records = env.store.records(env.fingerprint)
    return {"seconds": report.seconds, "steps": len(report.computed),
            "compute_seconds": sum(r.metrics["compute_seconds"] for r in records),
            "numbers": {",".join(map(str, r.scheme)): {k: r.metrics[k] for k in KEYS} for r in records}}


def run_control(task: str, todo: list) -> dict:
    """Mode (d): two plain processes (no Ray), each with half of the chains, started at one barrier."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    roots = sorted({s[0] for s in todo})
    halves = [[s for s in todo if roots.index(s[0]) % 2 == k] for k in (0, 1)]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(2, mp_context=ctx) as pool:
        barrier = manager.Barrier(2)
        parts = list(pool.map(_control_half, [task, task], halves, [barrier, barrier]))
    return {"label": "2 processes, no Ray", "workers": 2, "startup_seconds": float("nan"),
            "seconds": max(p["seconds"] for p in parts), "steps": sum(p["steps"] for p in parts),
            "steps_per_second": sum(p["steps"] for p in parts) / max(p["seconds"] for p in parts),
            "compute_seconds": sum(p["compute_seconds"] for p in parts), "driver_cpu_seconds": float("nan"),
            "numbers": {k: v for p in parts for k, v in p["numbers"].items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits")
    p.add_argument("--steps", type=int, default=20, help="how many of the 20 fixed steps to compute (default 20)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    torch.set_num_threads(1)  # mode (a) runs here, at a Ray worker's thread count
    todo = schemes(args.steps)
    AutoMCEnv(task=args.task, store=False, progress=False)  # pre-train the base model now if it is not shipped
    load_start = loadavg()
    modes = [run_mode("in-process, 1 thread", args.task, todo, 0),
             run_mode("Ray, 1 worker", args.task, todo, 1),
             run_mode("Ray, 2 workers", args.task, todo, 2),
             run_control(args.task, todo)]
    load_end = loadavg()
    a, b, c, d = modes
    identical = a["numbers"] == b["numbers"] == c["numbers"] == d["numbers"]
    result = {
        "task": args.task, "steps": len(todo), "cpus": os.cpu_count(), "loadavg_start": load_start,
        "loadavg_end": load_end, "identical": identical,
        "speedup_2_over_1": b["seconds"] / c["seconds"],
        "ray_overhead_per_step_seconds": (b["seconds"] - a["seconds"]) / len(todo),
        "ray_overhead_fraction": b["seconds"] / a["seconds"] - 1.0,
        # how much longer a step computes when both cores compute (no Ray): the machine's share
        "contention_no_ray": d["compute_seconds"] / a["compute_seconds"] - 1.0,
        "contention_ray": c["compute_seconds"] / b["compute_seconds"] - 1.0,
        "speedup_ceiling_no_ray": 2.0 * a["compute_seconds"] / d["compute_seconds"],
        "modes": [{k: v for k, v in m.items() if k != "numbers"} for m in modes],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"task {args.task}, {len(todo)} steps, {os.cpu_count()} CPUs, "
              f"load average {load_start} (start) / {load_end} (end)")
        print(f"{'mode':<22} {'wall s':>8} {'steps/s':>8} {'compute s':>10} {'driver CPU s':>13} {'start-up s':>11}")
        for m in modes:
            print(f"{m['label']:<22} {m['seconds']:>8.2f} {m['steps_per_second']:>8.3f} "
                  f"{m['compute_seconds']:>10.2f} {m['driver_cpu_seconds']:>13.2f} {m['startup_seconds']:>11.2f}")
        print(f"speed-up, 2 workers over 1: {result['speedup_2_over_1']:.2f}x (target >= 1.8x)")
        print(f"Ray overhead per step (1 worker vs in-process): {result['ray_overhead_per_step_seconds']:+.3f} s "
              f"({100 * result['ray_overhead_fraction']:+.1f} %, target < 5 %)")
        print(f"step compute with both cores busy: {100 * result['contention_no_ray']:+.1f} % without Ray (control), "
              f"{100 * result['contention_ray']:+.1f} % on 2 Ray workers; the machine's ceiling for 2 workers: "
              f"{result['speedup_ceiling_no_ray']:.2f}x")
        print(f"identical numbers in all four modes: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
