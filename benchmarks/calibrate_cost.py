"""Calibrate the step-cost coefficients of ``automc_env/cost.py`` against measured wall time.

Runs a fixed, varied set of real compression steps (all six methods at several dec/ft settings,
single steps on the base model and two-step schemes) on each task at ONE thread, records each
step's wall seconds and work counters, and fits ``seconds ≈ Σ coefficient x counter`` by
non-negative least squares per coefficient row (model family / input size, ``cost.model_key``).
Prints the coefficients, R² and per-method mean measured seconds vs predicted cost; ``--write``
replaces the ``CALIBRATED`` block of ``automc_env/cost.py``.

Measure on an otherwise idle machine: the script prints the load average (which includes itself)
and the cores other processes kept busy while each scheme ran (from /proc/stat; 0 = idle); other
jobs inflate the seconds. Re-run any time:

    AUTOMC_HOME=... python benchmarks/calibrate_cost.py --save samples.json        # measure + fit
    python benchmarks/calibrate_cost.py --load samples.json --write                # refit, write

``--repeat N`` runs the set N times (fresh store each time) to see the timing noise.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: calibration timings are 1-thread
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

from automc_env import cost  # noqa: E402
from automc_env.env import AutoMCEnv  # noqa: E402
from automc_env.space import get_space  # noqa: E402
from automc_env.tasks import get_task  # noqa: E402

COST_PY = Path(__file__).resolve().parent.parent / "automc_env" / "cost.py"

# (method, settings) per step; a scheme is a list of steps. dec values of a scheme sum to <= 0.85.
S = {
    "LMA": lambda ft, dec, seg=8, T=3, alpha=0.5: ("LMA", dict(ft=ft, dec=dec, seg=seg, T=T, alpha=alpha)),
    "LeGR": lambda ft, dec, mx=0.9, evo=0.4, crit="l2_bn": ("LeGR", dict(ft=ft, dec=dec, max_prune=mx, evo=evo, crit=crit)),
    "NS": lambda ft, dec, mx=0.9: ("NS", dict(ft=ft, dec=dec, max_prune=mx)),
    "SFP": lambda dec, soft=0.2, every=1: ("SFP", dict(dec=dec, soft=soft, every=every)),
    "HOS": lambda ft, dec, layer="P2", filt="k34", aux=0.3, mse=1: (
        "HOS", dict(ft=ft, dec=dec, layer=layer, filter=filt, aux=aux, mse_weight=mse)),
    "LFB": lambda ft, dec, factor=1, loss="CE": ("LFB", dict(ft=ft, dec=dec, factor=factor, loss=loss)),
}
WARMUP = [[S["NS"](0.1, 0.04)], [S["SFP"](0.04, 0.1, 1)], [S["LFB"](0.1, 0.04)], [S["LMA"](0.1, 0.04)],
          [S["HOS"](0.1, 0.04)], [S["LeGR"](0.1, 0.04)]]
SCHEMES = [
    [S["LMA"](0.1, 0.12, 6, 3, 0.5)], [S["LMA"](0.3, 0.4, 10, 6, 0.3)], [S["LMA"](0.2, 0.2)],
    [S["LeGR"](0.1, 0.12, 0.9, 0.4, "l1_weight")], [S["LeGR"](0.3, 0.36, 0.7, 0.6, "l2_bn")],
    [S["LeGR"](0.2, 0.2, 0.9, 0.5, "l2_bn_param")],
    [S["NS"](0.1, 0.04)], [S["NS"](0.3, 0.2, 0.7)], [S["NS"](0.5, 0.4)],
    [S["SFP"](0.04, 0.1, 1)], [S["SFP"](0.2, 0.3, 3)], [S["SFP"](0.4, 0.5, 5)],
    [S["HOS"](0.1, 0.12, "P1", "l1norm", 0.3, 1)], [S["HOS"](0.3, 0.4, "P2", "k34", 0.4, 3)],
    [S["HOS"](0.2, 0.2, "P3", "skew_kur", 0.5, 5)],
    [S["LFB"](0.1, 0.04, 0.5, "CE")], [S["LFB"](0.3, 0.2, 1, "MSE")], [S["LFB"](0.5, 0.4, 3, "NLL")],
    [S["NS"](0.1, 0.2), S["HOS"](0.2, 0.2)],
    [S["HOS"](0.1, 0.36, "P1", "l1norm"), S["LeGR"](0.1, 0.2)],
    [S["LFB"](0.2, 0.2), S["NS"](0.2, 0.12)],
    [S["SFP"](0.12, 0.2, 1), S["LMA"](0.1, 0.2)],
    [S["LeGR"](0.1, 0.2), S["SFP"](0.2, 0.2, 1)],
    [S["LMA"](0.1, 0.12), S["LFB"](0.1, 0.2)],
    [S["HOS"](0.2, 0.12), S["HOS"](0.1, 0.2, "P3", "l1norm")],
]


def loadavg() -> float:
    """1-minute load average; it includes this process (about 1.0 while it computes)."""
    return os.getloadavg()[0]


def busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat), for the others' share."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def measure(task: str, repeat: int, verbose: bool) -> list[dict]:
    """One sample per newly computed step: task, strategy, method, wall seconds, counters, load."""
    torch.set_num_threads(1)
    space = get_space("paper")
    samples = []
    for r in range(repeat):
        env = AutoMCEnv(task=task, store=False)
        for scheme in WARMUP:  # one-time costs of each method's first use in a process (imports, caches)
            env.evaluate([space.id_of(m, s) for m, s in scheme])
        env = AutoMCEnv(task=task, store=False)  # fresh store: every step below is computed
        seen = set()
        for scheme in SCHEMES:
            ids = [space.id_of(m, s) for m, s in scheme]
            load = loadavg()
            busy0, own0, wall0 = busy_seconds(), own_seconds(), time.perf_counter()
            infos = env.evaluate(ids)
            busy1, own1, wall1 = busy_seconds(), own_seconds(), time.perf_counter()
            # cores kept busy by OTHER processes while this scheme ran (0 = an idle machine)
            others = (None if busy0 is None else
                      max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(wall1 - wall0, 1e-9)))
            for info in infos:
                key = tuple(info["scheme"])
                if key in seen:
                    continue
                seen.add(key)
                sample = {"task": task, "key": cost.model_key(get_task(task)), "strategy": info["strategy"],
                          "method": info["strategy"].split("(")[0], "scheme": list(key),
                          "seconds": info["seconds"], "counters": info["cost_counters"], "load": load,
                          "others": others, "repeat": r}
                samples.append(sample)
                if verbose:
                    busy = "?" if others is None else f"{others:.2f}"
                    print(f"  {task:<10} {sample['strategy']:<58} {sample['seconds']:6.2f} s  load {load:.2f}  "
                          f"other processes {busy} cores", flush=True)
    return samples


def fit(samples: list[dict]) -> tuple[dict, float, np.ndarray]:
    """NNLS fit of seconds on the counters (columns scaled to unit max); (row, R², predictions)."""
    x = np.array([[float(s["counters"].get(k, 0)) for k in cost.COUNTERS] for s in samples])
    y = np.array([s["seconds"] for s in samples])
    scale = np.where(x.max(0) > 0, x.max(0), 1.0)
    w, _ = nnls(x / scale, y)
    coef = w / scale
    pred = x @ coef
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    row = {cost.COEFFICIENT_OF[k]: float(c) for k, c in zip(cost.COUNTERS, coef)}
    return row, r2, pred


def report(key: str, samples: list[dict], row: dict, r2: float, pred: np.ndarray) -> None:
    y = np.array([s["seconds"] for s in samples])
    print(f"\n== {key}: {len(samples)} steps ({', '.join(sorted({s['task'] for s in samples}))}), "
          f"load average {min(s['load'] for s in samples):.2f}-{max(s['load'] for s in samples):.2f} "
          f"(this process included), other processes {others_text(samples)}")
    for k in cost.COUNTERS:
        c = cost.COEFFICIENT_OF[k]
        print(f"  {c} ({k:<13}) = {row[c]:.4g}")
    print(f"  R² = {r2:.4f}   Pearson r = {np.corrcoef(y, pred)[0, 1]:.4f}   "
          f"mean |error| = {np.abs(y - pred).mean():.3f} s ({np.abs(y - pred).sum() / y.sum():.1%} of the seconds)")
    print(f"  {'method':<6} {'steps':>5} {'measured s':>11} {'cost':>8} {'ratio':>6}")
    for m in sorted({s["method"] for s in samples}):
        idx = [i for i, s in enumerate(samples) if s["method"] == m]
        ms, mp = y[idx].mean(), pred[idx].mean()
        print(f"  {m:<6} {len(idx):>5} {ms:>11.2f} {mp:>8.2f} {mp / ms:>6.2f}")


def others_text(samples: list[dict]) -> str:
    """Mean (max) cores other processes used while the schemes ran (of the samples that measured it)."""
    busy = [s["others"] for s in samples if s.get("others") is not None]
    if not busy:
        return "unknown"
    part = f" on {len(busy)}/{len(samples)} steps" if len(busy) < len(samples) else ""
    return f"{np.mean(busy):.2f} cores (max {max(busy):.2f}){part}"


def write(rows: dict[str, dict]) -> None:
    text = COST_PY.read_text()
    lines = ["CALIBRATED: dict[str, dict] = {"]
    for key in sorted(rows):
        row = rows[key]
        vals = ", ".join(f'"{c}": {float(row[c]):.6g}' for c in "abcdef")
        lines.append(f'    "{key}": {{{vals},')
        lines.append(f'        "source": {json.dumps(row["source"], ensure_ascii=False)}}},')
    lines.append("}")
    block = "\n".join(lines)
    pattern = re.compile(r"(# --- CALIBRATED[^\n]*\n)(.*?)(\n# --- END CALIBRATED ---)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no CALIBRATED block found in {COST_PY}")
    COST_PY.write_text(pattern.sub(lambda m: m.group(1) + block + m.group(3), text))
    print(f"\nwrote {len(rows)} rows to {COST_PY}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="digits,digits-vgg")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--save", help="write the measured samples to this JSON file")
    p.add_argument("--load", help="fit samples from these JSON files (comma-separated) instead of measuring")
    p.add_argument("--write", action="store_true", help="update the CALIBRATED table in automc_env/cost.py")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    if args.load:
        samples = [s for f in args.load.split(",") for s in json.loads(Path(f).read_text())]
    else:
        print(f"load average before: {os.getloadavg()}, torch threads: 1", flush=True)
        samples = []
        for task in args.tasks.split(","):
            samples += measure(task, args.repeat, verbose=not args.quiet)
        print(f"load average after: {os.getloadavg()}")
        if args.save:
            Path(args.save).write_text(json.dumps(samples, indent=1))
    rows = {}
    for key in sorted({s["key"] for s in samples}):
        group = [s for s in samples if s["key"] == key]
        row, r2, pred = fit(group)
        report(key, group, row, r2, pred)
        row["source"] = (f"calibrate_cost.py {datetime.date.today()}: {len(group)} steps of "
                         f"{'+'.join(sorted({s['task'] for s in group}))}, 1 thread, {platform.machine()}, "
                         f"others {others_text(group).split(' (')[0]}, R² {r2:.3f}")
        rows[key] = row
    if args.write:
        write(rows)


if __name__ == "__main__":
    main()
