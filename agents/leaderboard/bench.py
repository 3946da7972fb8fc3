"""``automc bench``: run the protocol (every agent x seed) and write one result file per search.

A search runs with :data:`~agents.leaderboard.protocol.BENCH_THREADS` torch thread(s), in process
or on Ray workers (one CPU each), with each agent's options for the task's budget
(``Protocol.agent_settings``; ``agent_options`` overrides them and is recorded). The thread count is
recorded in the file because a CPU step is bit-identical only at the same count, and the bench
computes in a store of its own per thread count (``AUTOMC_HOME/bench-store/threads-N``), so no step
computed at another thread count (an ``automc search`` at the default threads) ever enters a file:
the validator must be able to replay every number exactly.

**Tracks.** The first argument of :func:`run_bench` is a track (``agents.leaderboard.protocol``): a
task's own name runs it live; ``digits-surrogate`` and ``digits-table`` answer from the surrogate and
the table backends (no store: a table answers from the released data set only, as the validator's
does). Files go to ``<root>/<track>/`` and record the track, the backend, the backend's identity (the
surrogate model's digest, the table's size) and the benchmark version. A table track computes its true
Pareto front before any search and refuses to start while the table lacks part of the track's space
(:class:`~agents.leaderboard.metrics.TrackNotReady`): a search would otherwise stop at a ``TableMiss``.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from agents.base import Budget, Evaluation, SearchResult
from agents.leaderboard.metrics import reference_front, summary_metrics
from agents.leaderboard.protocol import BENCH_THREADS, SCHEMA_ID, Protocol, get_protocol


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_store(threads: int = BENCH_THREADS):
    """The bench's evaluation store for one thread count (see the module docstring)."""
    from automc_env.home import automc_home
    from automc_env.store import EvaluationStore

    return EvaluationStore(automc_home() / "bench-store" / f"threads-{int(threads)}")


def final_evaluation(env, scheme: Sequence[int]) -> dict:
    """Metrics of ``scheme`` on the search split (val) and on the held-out test split."""
    e = env.unwrapped
    e.reset(options={"scheme": list(scheme)})
    info = e.history[-1]
    return {"scheme": list(scheme), "names": [e.space[i].name for i in scheme], "acc": info["acc"],
            "test_acc": test_accuracy(e), "params": info["params"],
            "flops": info["flops"], "AR": info["AR"], "PR": info["PR"], "FR": info["FR"]}


def test_accuracy(env) -> float:
    """Test accuracy of the env's current (compressed) state: measured on the model (live), the
    backend's answer otherwise (the table's measured value, the surrogate's prediction)."""
    from automc_env.metrics import accuracy

    e = env.unwrapped
    if e.backend != "live":
        return e.test_accuracy()
    return accuracy(e.model, e.data.test.x, e.data.test.y)


def base_metrics(env) -> dict:
    from automc_env.metrics import accuracy

    e = env.unwrapped
    test = (accuracy(e.base_model, e.data.test.x, e.data.test.y) if e.backend == "live"
            else float(e.base_test_acc))
    return {"acc": e.base["acc"], "test_acc": test, "params": e.base["params"], "flops": e.base["flops"]}


def backend_identity(env) -> dict | None:
    """What a data backend answered from (None for live): the surrogate model's digest (over its
    metadata and arrays) or the table's rows. A surrogate result is only valid against its model."""
    import hashlib
    import json

    e = env.unwrapped
    backend = getattr(e, "_backend", None)
    if backend is None:
        return None
    if e.backend == "surrogate":
        h = hashlib.sha256(json.dumps(backend.model.meta, sort_keys=True).encode())
        for key, array in sorted(backend.model.forest.arrays().items()):
            h.update(key.encode())
            h.update(array.tobytes())
        return {"backend": "surrogate", "model": h.hexdigest(), "rows": backend.model.meta.get("rows"),
                "data_digest": backend.model.meta.get("data_digest")}
    return {"backend": e.backend, "rows": len(backend.rows), "sources": dict(sorted(backend.sources.items()))}


def final_schemes(result: SearchResult) -> list[Evaluation]:
    """The Pareto schemes on the search split (failed evaluations excluded)."""
    return result.pareto()


def versions() -> dict:
    from importlib import metadata

    import torch

    v = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("automc", "torch", "numpy", "torch-pruning", "pymoo", "optuna", "stable-baselines3",
                 "sb3-contrib", "pykeen", "tensorly"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v[dist] = None
    v["cuda"] = torch.version.cuda
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        v["commit"] = (commit + ("+modified" if dirty else "")) if commit else None
    except (OSError, subprocess.SubprocessError):
        v["commit"] = None
    return v


def default_submission(agent: str) -> dict:
    """Submission block of the reference entries the maintainers run themselves."""
    from agents.runner import AGENTS

    module = AGENTS[agent].split(":")[0]
    return {"who": "automc maintainers (reference run)", "algorithm": agent,
            "code": f"{module.replace('.', '/')}.py in this repository",
            "environment_modified": False, "tuned": "nothing: the protocol's settings for the budget", "notes": ""}


def make_entry(env, result: SearchResult, protocol: Protocol, submission: dict, budget: Budget,
               reference: dict | None = None) -> dict:
    """The result file of one finished search: search record + final set on the test split + metrics
    (+ the track's true front, ``reference``, on a regret track: computed here when not given)."""
    import torch

    from automc_env.fingerprint import BENCHMARK_VERSION

    e = env.unwrapped
    meta = dict(result.meta)
    # what the agent did (generations, rounds, policy updates, ...): informational, never ranked
    stats = {k: v for k, v in meta.items() if k not in ("agent_options", "agent_config", "rerunnable", "fingerprint",
                                                        "budget", "agent_stats")}
    stats.update(meta.get("agent_stats", {}))
    entry = {
        "schema": SCHEMA_ID, "task": result.task, "track": protocol.track, "backend": e.backend,
        "benchmark": BENCHMARK_VERSION, "agent": result.agent, "seed": result.seed,
        "submission": submission,
        "protocol": {**protocol.to_json(), "budget": asdict(budget), "followed": budget == protocol.budget},
        "environment": {"fingerprint": e.fingerprint, "grid": e.space.name, "env_seed": e.seed_value,
                        "device": str(e.device), "torch_threads": torch.get_num_threads(),
                        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
                        "method_options": e.method_options, "backend": e.backend,
                        "backend_identity": backend_identity(e), "versions": versions()},
        "base": base_metrics(e),
        "spent": dict(result.spent),
        "agent_config": {"options": meta.get("agent_config", {}), "rerunnable": bool(meta.get("rerunnable", False))},
        "agent_options": meta.get("agent_options", {}),
        "agent_stats": stats,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "evaluations": [asdict(ev) for ev in result.evaluations],
        "final": [final_evaluation(e, ev.scheme) for ev in final_schemes(result)],
    }
    if protocol.metric == "regret":
        entry["reference"] = reference or reference_front(e, protocol.gamma, protocol.hv_tolerance)
    entry["metrics"] = summary_metrics(entry)
    return entry


def entry_path(root: str | Path, track: str, agent: str, seed: int) -> Path:
    return Path(root) / track / f"{agent}-seed{seed}.json"


def _fmt(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _bench_one(track: str, agent: str, seed: int, root: str | Path, budget: Budget, options: dict,
               submission: dict | None, force: bool, progress: bool, device: str, env=None,
               threads: int = BENCH_THREADS, reference: dict | None = None) -> tuple[Path, str]:
    """One (agent, seed) search of the protocol, written to its result file; returns (path, summary)."""
    from agents.runner import run_search, write_json_atomic

    protocol = get_protocol(track)
    path = entry_path(root, track, agent, seed)
    partial = path.parent / ".partial" / f"{agent}-seed{seed}.search.json"
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch_threads(threads):
        env = env or protocol.make_env(store=bench_store(threads) if protocol.backend == "live" else False,
                                       device=device)
        result = run_search(env, agent, budget, seed, out=partial, resume=partial.exists() and not force,
                            progress=progress, **options)
        entry = make_entry(env, result, protocol, {**default_submission(agent), **(submission or {})}, budget,
                           reference=reference)
    write_json_atomic(entry, path, allow_nan=False)  # result files are strict JSON
    partial.unlink(missing_ok=True)
    m = entry["metrics"]
    label = f"[{protocol.backend}] " if protocol.backend != "live" else ""
    regret = f"regret {m['regret']:.4f}, " if "regret" in m else ""
    return path, (f"{label}{path}: {regret}HV {m['hv']:.4f}, best acc {_fmt(m['best_acc'])}, "
                  f"{m['executions']} executions ({m['failed']} failed), {m['compute']:.0f} cost (reference s), "
                  f"{time.perf_counter() - started:.0f} s wall (claimed; validate to check)")


def _bench_remote(threads: int, *args, **kwargs) -> tuple[str, str]:
    """A search on a Ray worker with ``threads`` torch threads (the bench store is shared through its files)."""
    path, summary = _bench_one(*args, threads=threads, **kwargs)
    return str(path), summary


def options_for(protocol: Protocol, agent: str, overrides: dict | None) -> dict:
    """The protocol's settings of ``agent`` for the task's budget, updated with ``overrides``."""
    return {**protocol.agent_settings.get(agent, {}), **(overrides or {})}


def run_bench(track: str, agents: Sequence[str], seeds: Sequence[int], root: str | Path = "leaderboards",
              budget: Budget | None = None, agent_options: dict | None = None, submission: dict | None = None,
              force: bool = False, progress: bool = True, device: str = "auto", log=print, workers: int = 0,
              ray_address: str | None = None, threads: int = BENCH_THREADS, env=None) -> list[Path]:
    """Run every (agent, seed) search of a track's protocol and write its result file.

    ``track``: a track name (``agents.leaderboard.PROTOCOLS``; a task's name is its live track).
    ``env`` (tests) replaces the track's environment for in-process searches; it must be built like
    the track's (e.g. a table on a test store).

    Each agent gets the protocol's settings for the task (``Protocol.agent_settings``), updated with
    ``agent_options[agent]``. Finished files are kept unless ``force``; an interrupted search resumes
    from its partial file (``<root>/<task>/.partial/``), whose finished evaluations replay from the
    store. With ``workers`` (or a Ray address) the searches run in parallel on Ray, one CPU and
    ``threads`` torch threads each, in the same seed-major order; every search computes exactly what
    it would alone (its steps depend on the scheme only).
    """
    from agents.runner import AGENTS

    protocol = get_protocol(track)
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; known: {', '.join(AGENTS)}")
    budget = budget or protocol.budget
    agent_options = agent_options or {}
    jobs = []
    for seed in seeds:  # seed-major: a board cut short still has the same seeds for every agent
        for agent in agents:
            path = entry_path(root, track, agent, seed)
            if path.exists() and not force:
                log(f"{path}: exists, kept (--force to rerun)")
                continue
            jobs.append((agent, seed))
    written = []
    reference = None
    in_process = not workers and ray_address is None
    if jobs and (protocol.metric == "regret" or (env is None and in_process)):
        with torch_threads(threads):
            env = env or protocol.make_env(store=bench_store(threads) if protocol.backend == "live" else False,
                                           device=device)
            if protocol.metric == "regret":   # the true front, once; refuses an incomplete table (TrackNotReady)
                reference = reference_front(env, protocol.gamma, protocol.hv_tolerance)
    if in_process:
        for agent, seed in jobs:
            path, summary = _bench_one(track, agent, seed, root, budget,
                                       options_for(protocol, agent, agent_options.get(agent)), submission,
                                       force, progress, device, env=env, threads=threads, reference=reference)
            log(summary)
            written.append(path)
        return written
    import ray

    from automc_env.executor import connect_ray

    connect_ray(ray_address, workers or None)
    remote = ray.remote(num_cpus=threads, max_retries=2)(_bench_remote)
    pending = {remote.remote(threads, track, agent, seed, str(root), budget,
                             options_for(protocol, agent, agent_options.get(agent)), submission, force, False,
                             device, reference=reference): (agent, seed) for agent, seed in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            path, summary = ray.get(done[0])
            log(summary)
            written.append(Path(path))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if ray_address is None:
            ray.shutdown()
    return written
