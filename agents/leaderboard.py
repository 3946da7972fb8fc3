"""The leaderboard: the benchmark protocol per task, the bench harness, result files, replay
validation, ranking with confidence, and rendering (Markdown table + plots).

A result file is one JSON per (agent, seed) under ``leaderboards/<task>/``. It holds the search
(every evaluated scheme with its search-split metrics, the compute spent when it was found: the
deterministic cost of :mod:`automc_env.cost` in reference seconds), the
*final* set (the Pareto schemes chosen on the search split, re-measured on the held-out test split)
and the reported metrics, which are recomputed from the final set by anyone (see
:func:`summary_metrics`). Files are plain JSON checked against :data:`SCHEMA`; nothing in them is
ever executed or unpickled. ``validate`` replays the final schemes through a fresh environment with
no store and rejects numbers that do not reproduce within the task's published noise band.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agents.base import Budget, Evaluation, SearchResult

SCHEMA_ID = "automc-leaderboard/1"
PR_LEVELS = (0.4, 0.7)   # the paper reports schemes at about 40 % and 70 % parameter reduction


# ---- protocol ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Protocol:
    """What a leaderboard entry on one task must follow (published in leaderboards/README.md)."""

    task: str
    budget: Budget            # per search (agent, seed)
    seeds: int                # searches per agent: seeds 0 .. seeds-1
    acc_band: float           # validation: replayed accuracy (val and test, in points) within this
    pr_band: float            # validation: replayed PR within this
    gpu: bool                 # needs a GPU to run in reasonable time
    note: str = ""
    env_seed: int = 0         # the environment seed (base model, data sample); fixed for the board
    grid: str = "paper"

    @property
    def gamma(self) -> float:
        from automc_env.tasks import get_task

        return get_task(self.task).gamma

    @property
    def hv_ref(self) -> tuple[float, float]:
        """Reference point in (error = 1 − acc/100, remaining params = 1 − PR), both minimised."""
        return (1.0, 1.0 - self.gamma)

    def to_json(self) -> dict:
        return {"task": self.task, "budget": asdict(self.budget), "seeds": self.seeds, "gamma": self.gamma,
                "hv_ref": list(self.hv_ref), "acc_band": self.acc_band, "pr_band": self.pr_band,
                "env_seed": self.env_seed, "grid": self.grid, "search_split": "val", "report_split": "test",
                "gpu": self.gpu}


_GPU_DAY = 86400.0
PROTOCOLS: dict[str, Protocol] = {p.task: p for p in [
    Protocol("digits", Budget(executions=100, compute=150.0), seeds=5, acc_band=1.0, pr_band=0.005, gpu=False,
             note="CPU board: ResNet-8 on the bundled digits; a search takes minutes"),
    Protocol("digits-vgg", Budget(executions=100, compute=150.0), seeds=5, acc_band=1.0, pr_band=0.005,
             gpu=False, note="CPU board: a small VGG on the bundled digits"),
    Protocol("resnet56-cifar10-mini", Budget(executions=1500, compute=_GPU_DAY), seeds=5, acc_band=1.0,
             pr_band=0.01, gpu=True,
             note="paper Exp1 search task; one GPU day per search (the paper gave AutoMC 3)"),
    Protocol("vgg16-cifar100-mini", Budget(executions=1500, compute=_GPU_DAY), seeds=5, acc_band=1.0,
             pr_band=0.01, gpu=True,
             note="paper Exp2 search task; one GPU day per search (the paper gave AutoMC 3)"),
    Protocol("synthetic", Budget(executions=8, compute=120.0), seeds=2, acc_band=1.0, pr_band=0.005, gpu=False,
             note="for tests and trying the harness: seconds per search"),
]}


def get_protocol(task: str) -> Protocol:
    if task not in PROTOCOLS:
        raise ValueError(f"no leaderboard protocol for task {task!r}; protocols exist for: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[task]


# ---- metrics ----------------------------------------------------------------------------------------

def hypervolume(points: Iterable[tuple[float, float]], gamma: float) -> float:
    """pymoo HV of (acc %, PR) points with PR ≥ γ, in (1 − acc/100, 1 − PR) against (1, 1 − γ)."""
    from pymoo.indicators.hv import HV

    pts = np.array([[1 - a / 100, 1 - pr] for a, pr in points if pr >= gamma], dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=np.array([1.0, 1.0 - gamma]))(pts))


def _pick(final: list[dict], level: float) -> dict | None:
    """The scheme chosen on the search split: most accurate on val with PR ≥ level (ties: higher PR)."""
    pool = [f for f in final if f["PR"] >= level]
    return max(pool, key=lambda f: (f["acc"], f["PR"])) if pool else None


def summary_metrics(entry: dict) -> dict:
    """The reported numbers, from the final set alone (so anyone can recompute them).

    ``hv``: HV of the final schemes' *test* accuracies; ``best_acc``: test accuracy of the scheme most
    accurate on *val* with PR ≥ γ; ``acc_at_pr``: the same at PR ≥ 0.4 / 0.7; ``search_hv``: HV of
    every evaluated scheme on the search split; ``compute`` etc.: what the search spent.
    """
    gamma, final = entry["protocol"]["gamma"], entry["final"]
    best = _pick(final, gamma)
    at = {f"{lv:g}": (p["test_acc"] if (p := _pick(final, lv)) else None) for lv in PR_LEVELS}
    spent = entry["spent"]
    return {
        "hv": hypervolume(((f["test_acc"], f["PR"]) for f in final), gamma),
        "best_acc": best["test_acc"] if best else None,
        "best_pr": best["PR"] if best else None,
        "acc_at_pr": at,
        "search_hv": hypervolume(((e["acc"], e["PR"]) for e in entry["evaluations"]), gamma),
        "compute": spent.get("compute", 0.0), "executions": spent.get("executions", 0),
        "seconds": spent.get("seconds", 0.0), "schemes": len(entry["evaluations"]),
    }


def anytime_hv(entry: dict, grid: Sequence[float]) -> np.ndarray:
    """Search-split HV of the schemes found by each compute level in ``grid`` (the anytime curve)."""
    gamma = entry["protocol"]["gamma"]
    evals = sorted(entry["evaluations"], key=lambda e: e["compute"])
    return np.array([hypervolume(((e["acc"], e["PR"]) for e in evals if e["compute"] <= c), gamma) for c in grid])


# ---- final evaluation and result files ---------------------------------------------------------------

def final_evaluation(env, scheme: Sequence[int]) -> dict:
    """Metrics of ``scheme`` on the search split (val) and on the held-out test split."""
    from automc_env.metrics import accuracy

    e = env.unwrapped
    e.reset(options={"scheme": list(scheme)})
    info = e.history[-1]
    return {"scheme": list(scheme), "names": [e.space[i].name for i in scheme], "acc": info["acc"],
            "test_acc": accuracy(e.model, e.data.test.x, e.data.test.y), "params": info["params"],
            "flops": info["flops"], "AR": info["AR"], "PR": info["PR"], "FR": info["FR"]}


def final_schemes(result: SearchResult) -> list[Evaluation]:
    """The Pareto schemes on the search split. The most accurate scheme at PR ≥ any level ≥ γ is
    always among them (a scheme dominating it would be at least as accurate at a PR as high)."""
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
    root = Path(__file__).resolve().parent.parent
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
            "environment_modified": False, "tuned": "nothing: the agent's default options", "notes": ""}


def make_entry(env, result: SearchResult, protocol: Protocol, submission: dict, budget: Budget) -> dict:
    """The result file of one finished search: search record + final set on the test split + metrics."""
    e = env.unwrapped
    entry = {
        "schema": SCHEMA_ID, "task": result.task, "agent": result.agent, "seed": result.seed,
        "submission": submission,
        "protocol": {**protocol.to_json(), "budget": asdict(budget), "followed": budget == protocol.budget},
        "environment": {"fingerprint": e.fingerprint, "grid": e.space.name, "env_seed": e.seed_value,
                        "device": str(e.device), "versions": versions()},
        "base": {"acc": e.base["acc"], "test_acc": _base_test_acc(e),
                 "params": e.base["params"], "flops": e.base["flops"]},
        "spent": dict(result.spent),
        "agent_options": result.meta.get("agent_options", {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "evaluations": [asdict(ev) for ev in result.evaluations],
        "final": [final_evaluation(e, ev.scheme) for ev in final_schemes(result)],
    }
    entry["metrics"] = summary_metrics(entry)
    return entry


def entry_path(root: str | Path, task: str, agent: str, seed: int) -> Path:
    return Path(root) / task / f"{agent}-seed{seed}.json"


def _bench_one(task: str, agent: str, seed: int, root: str | Path, budget: Budget, options: dict,
               submission: dict | None, force: bool, progress: bool, device: str, env=None) -> tuple[Path, str]:
    """One (agent, seed) search of the protocol, written to its result file; returns (path, summary)."""
    from agents.runner import run_search, write_json_atomic
    from automc_env.env import AutoMCEnv

    protocol = get_protocol(task)
    env = env or AutoMCEnv(task=task, grid=protocol.grid, seed=protocol.env_seed, device=device, progress=False)
    path = entry_path(root, task, agent, seed)
    partial = path.parent / ".partial" / f"{agent}-seed{seed}.search.json"
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run_search(env, agent, budget, seed, out=partial, resume=partial.exists() and not force,
                        progress=progress, **options)
    entry = make_entry(env, result, protocol, {**default_submission(agent), **(submission or {})}, budget)
    write_json_atomic(entry, path, allow_nan=False)  # result files are strict JSON
    partial.unlink(missing_ok=True)
    m = entry["metrics"]
    return path, (f"{path}: HV {m['hv']:.4f}, best acc {_fmt(m['best_acc'])}, {m['executions']} executions, "
                  f"{m['compute']:.0f} cost (reference s), {time.perf_counter() - started:.0f} s wall")


def _bench_remote(threads: int, *args, **kwargs) -> tuple[str, str]:
    """A search on a Ray worker: one torch thread (the evaluation store is shared through its files)."""
    import torch

    torch.set_num_threads(threads)
    path, summary = _bench_one(*args, **kwargs)
    return str(path), summary


def run_bench(task: str, agents: Sequence[str], seeds: Sequence[int], root: str | Path = "leaderboards",
              budget: Budget | None = None, agent_options: dict | None = None, submission: dict | None = None,
              force: bool = False, progress: bool = True, device: str = "auto", log=print, workers: int = 0,
              ray_address: str | None = None) -> list[Path]:
    """Run every (agent, seed) search of the protocol and write its result file.

    Finished files are kept unless ``force``; an interrupted search resumes from its partial file
    (``<root>/<task>/.partial/``), whose finished evaluations replay from the store. With ``workers``
    (or a Ray address) the searches run in parallel on Ray, one CPU each, in the same seed-major order;
    every search computes exactly what it would alone (its steps depend on the scheme only).
    """
    from agents.runner import AGENTS

    protocol = get_protocol(task)
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; known: {', '.join(AGENTS)}")
    budget = budget or protocol.budget
    agent_options = agent_options or {}
    jobs = []
    for seed in seeds:  # seed-major: a board cut short still has the same seeds for every agent
        for agent in agents:
            path = entry_path(root, task, agent, seed)
            if path.exists() and not force:
                log(f"{path}: exists, kept (--force to rerun)")
                continue
            jobs.append((agent, seed))
    written = []
    if not workers and ray_address is None:
        from automc_env.env import AutoMCEnv

        env = AutoMCEnv(task=task, grid=protocol.grid, seed=protocol.env_seed, device=device) if jobs else None
        for agent, seed in jobs:
            path, summary = _bench_one(task, agent, seed, root, budget, agent_options.get(agent, {}), submission,
                                       force, progress, device, env=env)
            log(summary)
            written.append(path)
        return written
    import ray

    from automc_env.executor import connect_ray

    connect_ray(ray_address, workers or None)
    remote = ray.remote(num_cpus=1, max_retries=2)(_bench_remote)
    pending = {remote.remote(1, task, agent, seed, str(root), budget, agent_options.get(agent, {}), submission,
                             force, False, device): (agent, seed) for agent, seed in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            agent, seed = pending.pop(done[0])
            path, summary = ray.get(done[0])
            log(summary)
            written.append(Path(path))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if ray_address is None:
            ray.shutdown()
    return written


# ---- schema and loading -----------------------------------------------------------------------------

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_SCHEME = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_NAMES = {"type": "array", "items": {"type": "string"}}
_ACC = {"type": "number", "minimum": 0, "maximum": 100}
_OPT_ACC = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
_RATE = {"type": "number", "maximum": 1}

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "automc leaderboard result file",
    "type": "object",
    "required": ["schema", "task", "agent", "seed", "submission", "protocol", "environment", "base", "spent",
                 "evaluations", "final", "metrics"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "task": {"type": "string"},
        "agent": {"type": "string", "minLength": 1},
        "seed": _INT,
        "submission": {
            "type": "object",
            "required": ["who", "algorithm", "code", "environment_modified", "tuned"],
            "properties": {"who": {"type": "string", "minLength": 1}, "algorithm": {"type": "string", "minLength": 1},
                           "code": {"type": "string"}, "environment_modified": {"type": "boolean"},
                           "tuned": {"type": "string"}, "notes": {"type": "string"}},
        },
        "protocol": {
            "type": "object", "required": ["budget", "gamma", "hv_ref", "env_seed", "grid"],
            "properties": {"budget": {"type": "object"}, "gamma": {"type": "number", "exclusiveMinimum": 0,
                                                                   "exclusiveMaximum": 1},
                           "hv_ref": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
                           "env_seed": {"type": "integer"}, "grid": {"type": "string"}},
        },
        "environment": {"type": "object", "required": ["fingerprint", "versions"],
                        "properties": {"fingerprint": {"type": "string"}, "versions": {"type": "object"}}},
        "base": {"type": "object", "required": ["acc", "test_acc", "params", "flops"],
                 "properties": {"acc": _ACC, "test_acc": _ACC, "params": _INT, "flops": _INT}},
        "spent": {"type": "object", "required": ["executions", "compute", "seconds"],
                  "properties": {"executions": _INT, "compute": {"type": "number", "minimum": 0},
                                 "seconds": {"type": "number", "minimum": 0}}},
        "evaluations": {"type": "array", "items": {
            "type": "object",
            "required": ["scheme", "names", "acc", "params", "flops", "AR", "PR", "FR", "execution", "compute",
                         "seconds"],
            "properties": {"scheme": _SCHEME, "names": _NAMES, "acc": _ACC, "params": _INT, "flops": _INT,
                           "AR": _NUM, "PR": _RATE, "FR": _RATE, "execution": _INT,
                           "compute": {"type": "number", "minimum": 0}, "seconds": {"type": "number", "minimum": 0}},
        }},
        "final": {"type": "array", "items": {
            "type": "object",
            "required": ["scheme", "names", "acc", "test_acc", "params", "flops", "AR", "PR", "FR"],
            "properties": {"scheme": _SCHEME, "names": _NAMES, "acc": _ACC, "test_acc": _ACC, "params": _INT,
                           "flops": _INT, "AR": _NUM, "PR": _RATE, "FR": _RATE},
        }},
        "metrics": {"type": "object", "required": ["hv", "best_acc", "acc_at_pr", "compute"],
                    "properties": {"hv": {"type": "number", "minimum": 0}, "best_acc": _OPT_ACC,
                                   "acc_at_pr": {"type": "object", "additionalProperties": _OPT_ACC},
                                   "compute": {"type": "number", "minimum": 0}}},
    },
}


class LeaderboardError(ValueError):
    """A result file that cannot be read as a leaderboard entry (the message says where and why)."""


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON here (numbers must be finite)")


def load_entry(path: str | Path) -> dict:
    """Parse and schema-check one result file (plain JSON only: nothing is executed or unpickled)."""
    path = Path(path)
    try:
        entry = json.loads(path.read_text(), parse_constant=_no_constants)
    except FileNotFoundError:
        raise LeaderboardError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise LeaderboardError(f"{path}: not valid JSON: {e}") from None
    check_schema(entry, path)
    return entry


def check_schema(entry, where: str | Path = "entry") -> None:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(entry), key=lambda e: list(e.path))
    if errors:
        lines = [f"  at {'/'.join(str(p) for p in e.path) or '(top level)'}: {e.message}" for e in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise LeaderboardError(f"{where}: does not match the result-file schema ({SCHEMA_ID}):\n"
                               + "\n".join(lines) + more)


# ---- validation -------------------------------------------------------------------------------------

def _consistency_problems(entry: dict) -> list[str]:
    """What the file claims that its own records contradict (no computation needed)."""
    from automc_env.space import get_space
    from automc_env.tasks import TASKS

    problems = []
    if entry["task"] not in TASKS or entry["task"] not in PROTOCOLS:
        return [f"task {entry['task']!r} has no leaderboard protocol (protocols: {', '.join(PROTOCOLS)})"]
    protocol = get_protocol(entry["task"])
    if abs(entry["protocol"]["gamma"] - protocol.gamma) > 1e-12:
        problems.append(f"gamma {entry['protocol']['gamma']} is not the task's γ = {protocol.gamma}")
    if list(entry["protocol"]["hv_ref"]) != list(protocol.hv_ref):
        problems.append(f"hv_ref {entry['protocol']['hv_ref']} is not the published {list(protocol.hv_ref)}")
    if entry["protocol"]["env_seed"] != protocol.env_seed or entry["protocol"]["grid"] != protocol.grid:
        problems.append(f"environment seed/grid {entry['protocol']['env_seed']}/{entry['protocol']['grid']} "
                        f"differ from the protocol's {protocol.env_seed}/{protocol.grid}")
    space = get_space(protocol.grid)
    for kind in ("evaluations", "final"):
        for i, r in enumerate(entry[kind]):
            if any(a >= len(space) for a in r["scheme"]):
                problems.append(f"{kind}[{i}]: strategy id outside the {len(space)}-strategy grid")
            elif r["names"] and r["names"] != [space[a].name for a in r["scheme"]]:
                problems.append(f"{kind}[{i}]: names do not match the strategy ids")
    try:
        budget = Budget(**entry["protocol"]["budget"])
    except (TypeError, ValueError) as e:
        problems.append(f"protocol.budget: {e}")
    else:
        spent = entry["spent"]
        if budget.executions is not None and spent["executions"] > budget.executions:
            problems.append(f"spent {spent['executions']} executions, budget {budget.executions}")
        # the evaluator stops before a step that would start past the compute limit: one step may cross it
        started = [e["compute"] for e in entry["evaluations"]]
        if budget.compute is not None and len(started) > 1 and sorted(started)[-2] > budget.compute:
            problems.append(f"steps started after the compute budget of {budget.compute} (cost, reference s) "
                            f"was spent")
    if problems:
        return problems
    evaluated = {tuple(e["scheme"]): e for e in entry["evaluations"]}
    for i, f in enumerate(entry["final"]):
        e = evaluated.get(tuple(f["scheme"]))
        if e is None:
            problems.append(f"final[{i}] {f['scheme']} is not among the evaluations")
        elif abs(e["acc"] - f["acc"]) > 1e-9 or abs(e["PR"] - f["PR"]) > 1e-9:
            problems.append(f"final[{i}] {f['scheme']}: val acc/PR differ from its evaluation record")
    result = SearchResult(agent=entry["agent"], task=entry["task"], seed=entry["seed"], gamma=protocol.gamma,
                          evaluations=[Evaluation(**e) for e in entry["evaluations"]])
    missing = {tuple(e.scheme) for e in result.pareto()} - {tuple(f["scheme"]) for f in entry["final"]}
    if missing:
        problems.append(f"{len(missing)} Pareto schemes of the evaluations are missing from the final set "
                        f"(e.g. {list(next(iter(missing)))})")
    claimed, recomputed = entry["metrics"], summary_metrics(entry)
    for key in ("hv", "best_acc"):
        a, b = claimed.get(key), recomputed[key]
        if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9):
            problems.append(f"metrics.{key} {a} != {b} recomputed from the final set")
    return problems


def validate_entry(source: str | Path | dict, env=None, max_schemes: int | None = None,
                   progress: bool = False) -> dict:
    """Schema check, consistency check, then replay the final schemes with no store.

    Returns ``{"ok", "problems", "notes", "replayed"}``. A claim is rejected when a replayed val or
    test accuracy differs by more than the protocol's ``acc_band`` or PR by more than ``pr_band``.
    """
    from tqdm.auto import tqdm

    entry = source if isinstance(source, dict) else load_entry(source)
    if isinstance(source, dict):
        check_schema(entry)
    notes, replayed = [], []
    problems = _consistency_problems(entry)
    if problems:
        return {"ok": False, "problems": problems, "notes": notes, "replayed": replayed}
    protocol = get_protocol(entry["task"])
    if not entry["protocol"].get("followed", True) or Budget(**entry["protocol"]["budget"]) != protocol.budget:
        notes.append(f"budget {entry['protocol']['budget']} is not the protocol's {asdict(protocol.budget)}: "
                     "the entry is listed apart from the board")
    if env is None:
        from automc_env.env import AutoMCEnv

        env = AutoMCEnv(task=entry["task"], grid=protocol.grid, seed=protocol.env_seed, store=False,
                        progress=False)
    e = env.unwrapped
    if entry["environment"]["fingerprint"] != e.fingerprint:
        notes.append("the environment's code differs from the one that produced the file; the replay decides")
    base_test = _base_test_acc(e)
    for key, got in (("acc", e.base["acc"]), ("test_acc", base_test)):
        if abs(entry["base"][key] - got) > protocol.acc_band:
            problems.append(f"base model {key} {entry['base'][key]:.2f} != {got:.2f} here: a different base model")
    if entry["base"]["params"] != e.base["params"]:
        problems.append(f"base model params {entry['base']['params']} != {e.base['params']} here")
    finals = entry["final"] if max_schemes is None else _spread(entry["final"], max_schemes)
    if len(finals) < len(entry["final"]):
        notes.append(f"replayed {len(finals)} of {len(entry['final'])} final schemes (max_schemes)")
    for f in tqdm(finals, desc="replay final schemes", unit="scheme", disable=None if progress else True):
        try:
            got = final_evaluation(e, f["scheme"])
        except ValueError as err:
            problems.append(f"{f['scheme']}: cannot be replayed: {err}")
            continue
        replayed.append(got)
        for key, band in (("acc", protocol.acc_band), ("test_acc", protocol.acc_band), ("PR", protocol.pr_band)):
            if abs(f[key] - got[key]) > band:
                problems.append(f"{' -> '.join(f['names']) or f['scheme']}: claimed {key} {f[key]:.4f}, "
                                f"replayed {got[key]:.4f} (band ±{band})")
    return {"ok": not problems, "problems": problems, "notes": notes, "replayed": replayed}


def _base_test_acc(env) -> float:
    from automc_env.metrics import accuracy

    return accuracy(env.base_model, env.data.test.x, env.data.test.y)


def _spread(items: list, k: int) -> list:
    if k >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, max(k, 1)).round().astype(int))
    return [items[i] for i in idx]


# ---- ranking and rendering --------------------------------------------------------------------------

def collect(task: str, root: str | Path = "leaderboards", log=None) -> list[dict]:
    """Every schema-valid result file of a task (invalid ones are reported through ``log`` and skipped)."""
    entries = []
    for path in sorted((Path(root) / task).glob("*.json")):
        try:
            entry = load_entry(path)
        except LeaderboardError as e:
            if log:
                log(f"skipped: {e}")
            continue
        if entry["task"] != task:
            if log:
                log(f"skipped: {path} is a {entry['task']} entry")
            continue
        entry["_path"] = str(path)
        entries.append(entry)
    return entries


def _mean_se(values: Sequence[float | None]) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan, len(v)


def rank(entries: list[dict], alpha: float = 0.05, only_protocol: bool = True) -> list[dict]:
    """One row per agent (by default only entries that followed the protocol), ranked by mean test HV.

    ``rank`` = 1 + the number of agents whose HV is significantly higher (one-sided Welch t-test at
    ``alpha``): agents the data cannot separate share a rank.
    """
    from scipy.stats import ttest_ind

    by_agent: dict[str, list[dict]] = {}
    for e in entries:
        if e["protocol"].get("followed", True) or not only_protocol:
            by_agent.setdefault(e["agent"], []).append(e)
    rows = []
    for agent, es in by_agent.items():
        ms = [e["metrics"] for e in es]
        row = {"agent": agent, "seeds": sorted(e["seed"] for e in es), "hv_values": [m["hv"] for m in ms]}
        for key, values in (("hv", [m["hv"] for m in ms]), ("best_acc", [m["best_acc"] for m in ms]),
                            ("compute", [m["compute"] for m in ms]), ("executions", [m["executions"] for m in ms]),
                            ("seconds", [m["seconds"] for m in ms]), ("search_hv", [m["search_hv"] for m in ms])):
            row[key] = _mean_se(values)
        for lv in PR_LEVELS:
            row[f"acc_at_{lv:g}"] = _mean_se([m["acc_at_pr"].get(f"{lv:g}") for m in ms])
        rows.append(row)
    for row in rows:
        better = 0
        for other in rows:
            if other is row or len(other["hv_values"]) < 2 or len(row["hv_values"]) < 2:
                continue
            a, b = np.array(other["hv_values"]), np.array(row["hv_values"])
            if a.mean() <= b.mean():
                continue
            if np.ptp(a) == 0 and np.ptp(b) == 0:
                better += 1  # two constant samples with different means: separated
                continue
            if ttest_ind(a, b, equal_var=False, alternative="greater").pvalue < alpha:
                better += 1
        row["rank"] = 1 + better
    return sorted(rows, key=lambda r: (r["rank"], -r["hv"][0]))


def _fmt(x, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _cell(stat: tuple[float, float, int], digits: int, total: int) -> str:
    mean, se, n = stat
    if n == 0:
        return "-"
    text = f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if not math.isnan(se) else "")
    return text + (f" ({n}/{total})" if n < total else "")


def markdown_table(rows: list[dict], task: str) -> str:
    p = get_protocol(task)
    head = ("| rank | agent | seeds | HV (test) | best acc % at PR ≥ γ (test) | acc % at PR ≥ 0.4 | "
            "acc % at PR ≥ 0.7 | search HV (val) | cost (ref s) | executions |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        n = len(r["seeds"])
        lines.append(f"| {r['rank']} | {r['agent']} | {n} | {_cell(r['hv'], 4, n)} | {_cell(r['best_acc'], 2, n)} | "
                     f"{_cell(r['acc_at_0.4'], 2, n)} | {_cell(r['acc_at_0.7'], 2, n)} | "
                     f"{_cell(r['search_hv'], 4, n)} | {_cell(r['compute'], 0, n)} | "
                     f"{_cell(r['executions'], 0, n)} |")
    budget = ", ".join(f"{k} {v:g}" for k, v in asdict(p.budget).items() if v is not None)
    lines.append("")
    lines.append(f"Task `{task}`, γ = {p.gamma}, budget per search: {budget}; mean ± standard error over seeds. "
                 f"HV: pymoo hypervolume of the final schemes' (1 − test acc/100, 1 − PR), reference "
                 f"{tuple(p.hv_ref)}. Rank: 1 + number of agents with a significantly higher HV "
                 f"(one-sided Welch t-test, p < 0.05). (k/n): only k of n seeds reached that PR.")
    return "\n".join(lines)


def _plots(entries: list[dict], rows: list[dict], out_dir: Path, task: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = get_protocol(task)
    agents = [r["agent"] for r in rows]
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(agents)}
    by_agent = {a: [e for e in entries if e["agent"] == a and e["protocol"].get("followed", True)] for a in agents}

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for a in agents:
        pts = [(f["PR"], f["test_acc"]) for e in by_agent[a] for f in e["final"]]
        front = sorted(pts)
        front = [q for q in front if not any(o[0] >= q[0] and o[1] >= q[1] and o != q for o in pts)]
        ax.scatter([q[0] for q in pts], [q[1] for q in pts], s=10, alpha=0.35, color=colours[a])
        ax.plot([q[0] for q in front], [q[1] for q in front], marker="o", ms=4, color=colours[a], label=a)
    base = entries[0]["base"]["test_acc"] if entries else None
    if base is not None:
        ax.axhline(base, color="0.5", lw=0.8, ls=":", label="base model")
    ax.axvline(p.gamma, color="k", lw=0.8, ls="--", label="γ")
    pareto_png = _save(fig, ax, out_dir / "pareto.png", "parameter reduction rate PR", "test accuracy (%)",
                       f"{task}: final schemes of all seeds, pooled front per agent")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    top = max((m["compute"] for e in entries for m in [e["metrics"]]), default=1.0)
    grid = np.linspace(0, top, 60)
    for a in agents:
        curves = np.array([anytime_hv(e, grid) for e in by_agent[a]])
        if len(curves) == 0:
            continue
        mean = curves.mean(0)
        se = curves.std(0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(mean)
        ax.plot(grid, mean, color=colours[a], label=f"{a} ({len(curves)} seeds)")
        ax.fill_between(grid, mean - se, mean + se, color=colours[a], alpha=0.2)
    anytime_png = _save(fig, ax, out_dir / "anytime_hv.png", "cost (reference seconds)",
                        "hypervolume on the search split (val)", f"{task}: anytime HV, mean ± SE over seeds")
    return [pareto_png, anytime_png]


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


README_START, README_END = "<!-- leaderboard:{task}:start -->", "<!-- leaderboard:{task}:end -->"


def render(task: str, root: str | Path = "leaderboards", readme: str | Path | None = None, log=None) -> dict:
    """Rank a task's entries; write ``<root>/<task>/README.md`` with the table and the two PNG plots.

    With ``readme``, the table also replaces the block between the task's markers in that file.
    """
    entries = collect(task, root, log=log)
    if not entries:
        raise ValueError(f"no result files for task {task!r} under {Path(root) / task}")
    rows = rank(entries)
    table = markdown_table(rows, task)
    out_dir = Path(root) / task
    plots = _plots(entries, rows, out_dir, task)
    apart = [e for e in entries if not e["protocol"].get("followed", True)]
    body = [f"# Leaderboard: {task}", "", "Generated by `automc leaderboard render --task "
            f"{task}` from the result files in this folder; protocol in ../README.md.", "", table, "",
            "![Pareto fronts](pareto.png)", "", "![Anytime hypervolume](anytime_hv.png)", ""]
    if apart:
        body += [f"{len(apart)} entries ran a budget other than the protocol's and are not ranked: "
                 + ", ".join(Path(e["_path"]).name for e in apart), ""]
    (out_dir / "README.md").write_text("\n".join(body))
    if readme is not None:
        update_readme(readme, task, table)
    return {"rows": rows, "table": table, "plots": plots, "entries": len(entries)}


def update_readme(readme: str | Path, task: str, table: str) -> None:
    path = Path(readme)
    text = path.read_text()
    start, end = README_START.format(task=task), README_END.format(task=task)
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} block to replace")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{table}\n{end}{after}")


def protocol_table() -> str:
    lines = ["| task | γ | budget per search | seeds | HV reference | noise band (acc, PR) | hardware |",
             "|---|---|---|---|---|---|---|"]
    for p in PROTOCOLS.values():
        budget = ", ".join(f"{k}={v:g}" for k, v in asdict(p.budget).items() if v is not None)
        lines.append(f"| `{p.task}` | {p.gamma} | {budget} | {p.seeds} | {tuple(p.hv_ref)} | "
                     f"±{p.acc_band} pp, ±{p.pr_band} | {'GPU' if p.gpu else 'CPU'} |")
    return "\n".join(lines)


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=1, default=str)
    print()
