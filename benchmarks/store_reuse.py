"""What the evaluation store saves: a computed step vs the same step replayed, and prefix reuse.

Usage: python benchmarks/store_reuse.py [--task digits]   (uses a temporary store)
"""

from __future__ import annotations

import argparse
import tempfile
import time

from automc_env.env import AutoMCEnv
from automc_env.space import get_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="digits")
    args = p.parse_args()
    space = get_space("paper")
    a = space.id_of("NS", {"ft": 0.2, "dec": 0.12, "max_prune": 0.9})
    b = space.id_of("NS", {"ft": 0.2, "dec": 0.2, "max_prune": 0.9})
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        env = AutoMCEnv(task=args.task, store=root)
        print(f"environment start-up (data, base model): {time.perf_counter() - start:.2f} s")
        reader = AutoMCEnv(task=args.task, store=root)  # a second instance: sees env's steps as stored
        rows = []
        for label, e, scheme in [("compute [a]", env, [a]), ("replay [a]", reader, [a]),
                                 ("compute [a, b] (prefix [a] reused)", env, [a, b]),
                                 ("replay [a, b]", reader, [a, b])]:
            start = time.perf_counter()
            steps = e.evaluate(scheme)
            rows.append((label, time.perf_counter() - start, sum(s["cached"] for s in steps), len(steps)))
        start = time.perf_counter()
        _, info = reader.reset(options={"scheme": [a, b]})
        rows.append(("reset(options={'scheme': [a, b]})", time.perf_counter() - start, 2 * info["cached"], 2))
        for label, secs, cached, n in rows:
            print(f"{label:<40} {secs * 1000:10.1f} ms   ({cached}/{n} steps from the store)")


if __name__ == "__main__":
    main()
