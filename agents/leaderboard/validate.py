"""``automc leaderboard validate``: recompute every number of a result file, or reject it.

A result file is a claim. Validation checks it in three stages and names every problem it finds:

1. **Schema** (``schema.py``): plain JSON of the right shape.
2. **Invariants** (no compute): the protocol (γ, HV tolerance, environment seed, grid, a CPU task run
   on the CPU); identity (file name = ``<agent>-seed<k>.json``, strategy names = ids, no scheme
   twice); the trajectory (every evaluation's prefixes come before it and did not fail; execution
   counters run 1..n; each ``compute`` is the running sum of the costs; ``spent`` is what the
   evaluations add up to; AR, PR, FR agree with acc, params, FLOPs and the base model; a failed
   evaluation carries its parent's metrics); the budget (at most the executions limit, no step
   started after the compute limit was reached); the final set is exactly the Pareto set of the
   evaluations with their numbers; the claimed metrics follow from the file's own numbers.
3. **Replay** in a fresh environment with a private store, at the torch thread count the file
   records. CPU tasks: the base model, then *every* evaluation step by step (acc, params, FLOPs,
   AR, PR, FR and cost must be identical; a failed step must fail again and cost the same), the test
   accuracy of every final scheme, then the search is **re-run** (the agent, its recorded options
   and seed, against the replayed steps) and must produce the same trajectory in the same order,
   which is what catches an evaluation taken from another search or a trajectory reordered into
   another consistent order. GPU tasks: the final set, within the protocol's bands.

**Tracks.** A file names its track (``track``; none: its task's live track), backend and benchmark
version; they must be the track's, and the replay runs on the track's backend with its environment
options: a surrogate file is replayed by the same surrogate model (its digest is in the file), a
table file by the released table, whose true Pareto front is recomputed and must be the file's
(``reference``). Data-backend replays are deterministic and cheap, so every number must be identical
there too. A scheme the backend cannot answer (``TableMiss``) is a problem, not a crash.

Everything the board shows is then computed from the replayed numbers (``metrics.py``), never read
from the file. :func:`write_record` stores the verdict with those numbers, bound to the file's
sha256 and to :func:`validator_version`; ``render`` ranks only files with a current passing record.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from agents.base import Budget, Evaluator
from agents.leaderboard.bench import (backend_identity, base_metrics, final_evaluation, test_accuracy, torch_threads,
                                      versions)
from agents.leaderboard.metrics import TrackNotReady, final_set, reference_front, spent, summary_metrics
from agents.leaderboard.protocol import PROTOCOLS, SCHEMA_ID, Protocol, get_protocol, track_of
from agents.leaderboard.schema import LeaderboardError, check_schema, file_sha256, load_entry

RECORD_ID = "automc-validation/1"
EXACT = 1e-9          # "identical" for floats that went through JSON (they round-trip exactly; this is slack)
MAX_LISTED = 12       # per kind of problem, the first this many are listed


@functools.lru_cache(maxsize=None)   # one digest per backend kind, read once per process
def validator_version(backend: str = "live") -> str:
    """Digest of the code that decides a verdict on a ``backend``'s track: the leaderboard package's
    checking modules (not the rendering and analysis ones: a new plot must not send a board back to a
    full re-validation), the agents (a re-run runs them), the evaluator, the cost model, every line that
    computes a step, plus the versions; for the data backends also the modules that answer from the
    data (a live replay never runs them: a surrogate change must not send the live board, hours of real
    steps, back to re-validation)."""
    from automc_env.fingerprint import BENCHMARK_VERSION, STEP_SOURCES, digest, source_digest

    checking = tuple(f"agents/leaderboard/{m}.py" for m in ("__init__", "bench", "metrics", "protocol", "schema",
                                                             "validate"))
    answering = tuple(f"automc_env/backends/{m}.py"   # not the report
                      for m in ("__init__",) + (() if backend == "live" else ("surrogate", "table")))
    code = source_digest((*checking, "agents/*.py", "automc_env/cost.py", "automc_env/env.py", *answering,
                          *STEP_SOURCES))
    return digest({"benchmark": BENCHMARK_VERSION, "schema": SCHEMA_ID, "record": RECORD_ID, "code": code})[:16]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return abs(float(a) - float(b)) <= EXACT * max(1.0, abs(float(a)), abs(float(b)))


def _show(x) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return json.dumps(x) if isinstance(x, dict) else str(x)


class _Problems(list):
    """Problems grouped by kind, at most MAX_LISTED listed per kind (the rest counted)."""

    def __init__(self):
        super().__init__()
        self._counts: dict[str, int] = {}

    def add(self, kind: str, text: str) -> None:
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        if n <= MAX_LISTED:
            self.append(text)

    def finish(self) -> list[str]:
        out = list(self)
        out += [f"... and {n - MAX_LISTED} more {kind} problems" for kind, n in self._counts.items() if n > MAX_LISTED]
        return out


def _label(kind: str, i: int, e: dict) -> str:
    """``evaluations[3] [2483, 3236] (..., HOS(ft=0.3,...))``: where, which scheme, its last step's name."""
    names = e.get("names") or []
    last = ("..., " if len(names) > 1 else "") + names[-1] if names else ""
    return f"{kind}[{i}] {list(e['scheme'])}" + (f" ({last})" if last else "")


# ---- stage 2: invariants --------------------------------------------------------------------------------

def invariant_problems(entry: dict, path: str | Path | None = None, protocol: Protocol | None = None) -> list[str]:
    """What the file claims that its own records or the protocol contradict (no computation)."""
    from automc_env.fingerprint import BENCHMARK_VERSION
    from automc_env.metrics import accuracy_rate, rates
    from automc_env.space import get_space
    from automc_env.tasks import TASKS

    if entry["task"] not in TASKS or entry["task"] not in {q.task for q in PROTOCOLS.values()}:
        return [f"task {entry['task']!r} has no leaderboard protocol (protocols: {', '.join(PROTOCOLS)})"]
    track = track_of(entry)
    if track not in PROTOCOLS:
        return [f"track {track!r} has no leaderboard protocol (tracks: {', '.join(PROTOCOLS)})"]
    protocol = protocol or get_protocol(track)
    p = _Problems()
    claimed = entry["protocol"]
    # the track: a result is only comparable with results of the same task, backend and environment
    if protocol.task != entry["task"]:
        p.add("track", f"track {track!r} is task {protocol.task!r}, but the file is a {entry['task']!r} search")
    backends = {"backend": entry.get("backend", "live"), "protocol.backend": claimed.get("backend", "live"),
                "environment.backend": entry["environment"].get("backend", "live")}
    for where, backend in backends.items():
        if backend != protocol.backend:
            p.add("track", f"{where} {backend!r}: track {track!r} runs the {protocol.backend!r} backend (a "
                           f"{backend} result is never ranked with {protocol.backend} results)")
    if claimed.get("track", track) != track:
        p.add("track", f"protocol.track {claimed['track']!r} is not the file's track {track!r}")
    if claimed.get("env_kwargs", {}) != protocol.env_kwargs:
        p.add("track", f"protocol.env_kwargs {claimed.get('env_kwargs', {})} are not track {track!r}'s "
                       f"{protocol.env_kwargs}")
    if entry.get("benchmark", BENCHMARK_VERSION) != BENCHMARK_VERSION:
        p.add("track", f"benchmark {entry['benchmark']!r}: this board is {BENCHMARK_VERSION}")
    if protocol.backend != "live":
        missing = [k for k in ("track", "backend", "benchmark") if k not in entry]
        if missing:
            p.add("track", f"a {protocol.backend} result must name its {', '.join(missing)}")
    if protocol.metric == "regret" and not isinstance(entry.get("reference"), dict):
        p.add("track", f"track {track!r} scores regret to the true front: the file has no reference front")
    if abs(claimed["gamma"] - protocol.gamma) > 1e-12:
        p.add("protocol", f"protocol.gamma {claimed['gamma']} is not the task's γ = {protocol.gamma}")
    if claimed["hv_tolerance"] != protocol.hv_tolerance:
        p.add("protocol", f"protocol.hv_tolerance {claimed['hv_tolerance']} is not the published "
                          f"{protocol.hv_tolerance}")
    if claimed["env_seed"] != protocol.env_seed or claimed["grid"] != protocol.grid:
        p.add("protocol", f"environment seed/grid {claimed['env_seed']}/{claimed['grid']} differ from the "
                          f"protocol's {protocol.env_seed}/{protocol.grid}")
    device = str(entry["environment"]["device"])
    if not protocol.gpu and not device.startswith("cpu"):
        p.add("protocol", f"environment.device {device!r}: a CPU task's file must be computed on the CPU "
                          f"(only CPU steps replay exactly)")
    if path is not None:
        expected = f"{entry['agent']}-seed{entry['seed']}.json"
        if Path(path).name != expected:
            p.add("identity", f"file name {Path(path).name!r} does not match its agent and seed (expected "
                              f"{expected!r})")
    space = get_space(protocol.grid)
    base = entry["base"]
    evaluations = entry["evaluations"]
    index: dict[tuple, int] = {}
    running = 0.0
    for i, e in enumerate(evaluations):
        key = tuple(e["scheme"])
        label = _label("evaluations", i, e)
        if any(a >= len(space) for a in key):
            p.add("ids", f"{label}: strategy id outside the {len(space)}-strategy grid")
            continue
        if e["names"] != [space[a].name for a in key]:
            p.add("ids", f"{label}: names {e['names']} do not match the strategy ids "
                         f"{[space[a].name for a in key]}")
        if key in index:
            p.add("order", f"{label}: evaluated twice (first at evaluations[{index[key]}])")
        for k in range(1, len(key)):
            j = index.get(key[:k])
            if j is None:
                later = next((n for n, o in enumerate(evaluations) if tuple(o["scheme"]) == key[:k]), None)
                where = f"it comes later, at evaluations[{later}]" if later is not None else "it is not evaluated"
                p.add("order", f"{label}: its prefix {list(key[:k])} must be evaluated before it; {where}")
            elif evaluations[j]["failed"]:
                p.add("order", f"{label}: its prefix {list(key[:k])} failed (evaluations[{j}]): nothing follows "
                               f"a failed step")
        index.setdefault(key, i)
        if e["execution"] != i + 1:
            p.add("counter", f"{label}: execution counter {e['execution']}, expected {i + 1} (every evaluation "
                             f"is one new step: the counters run 1..n)")
        running += e["cost"]
        if not _same(e["compute"], running):
            p.add("compute", f"{label}: compute {_show(e['compute'])} is not the running sum of the costs "
                             f"{_show(running)}")
        if e["failed"]:
            parent = evaluations[index[key[:-1]]] if len(key) > 1 and key[:-1] in index else None
            want = ({k: parent[k] for k in ("acc", "params", "flops", "AR", "PR", "FR")} if parent else
                    {"acc": base["acc"], "params": base["params"], "flops": base["flops"], "AR": 0.0, "PR": 0.0,
                     "FR": 0.0})
            bad = [k for k, v in want.items() if not _same(e[k], v)]
            if bad:
                p.add("rates", f"{label}: a failed step keeps its parent's metrics, but {', '.join(bad)} differ")
        else:
            for k, want in (("AR", accuracy_rate(base["acc"], e["acc"])), ("PR", rates(base["params"], e["params"])),
                            ("FR", rates(base["flops"], e["flops"]))):
                if not _same(e[k], want):
                    p.add("rates", f"{label}: {k} {_show(e[k])} does not follow from its metrics and the base "
                                   f"model ({_show(want)})")
    n, total = spent(evaluations)
    if entry["spent"]["executions"] != n:
        p.add("spent", f"spent.executions {entry['spent']['executions']} != {n} evaluations (one execution each)")
    if not _same(entry["spent"]["compute"], total):
        p.add("spent", f"spent.compute {_show(entry['spent']['compute'])} != {_show(total)}, the sum of the "
                       f"evaluations' costs")
    p.extend(_budget_problems(entry))
    # the final set: exactly the Pareto set of the evaluations, with the evaluations' numbers
    for i, f in enumerate(entry["final"]):
        if any(a >= len(space) for a in f["scheme"]):
            p.add("ids", f"{_label('final', i, f)}: strategy id outside the grid")
        elif f["names"] != [space[a].name for a in f["scheme"]]:
            p.add("ids", f"{_label('final', i, f)}: names do not match the strategy ids")
        j = index.get(tuple(f["scheme"]))
        if j is None:
            p.add("final", f"{_label('final', i, f)}: not among the evaluations")
            continue
        bad = [k for k in ("acc", "params", "flops", "AR", "PR", "FR") if not _same(f[k], evaluations[j][k])]
        if bad:
            p.add("final", f"{_label('final', i, f)}: {', '.join(bad)} differ from its evaluation "
                           f"(evaluations[{j}])")
    if p:
        return p.finish()
    want = {tuple(f["scheme"]) for f in final_set(evaluations, protocol.gamma)}
    have = [tuple(f["scheme"]) for f in entry["final"]]
    if len(set(have)) != len(have):
        p.add("final", "the final set lists a scheme twice")
    for s in sorted(want - set(have)):
        p.add("final", f"Pareto scheme {list(s)} of the evaluations is missing from the final set")
    for s in sorted(set(have) - want):
        p.add("final", f"final scheme {list(s)} is not on the Pareto front of the evaluations (PR ≥ γ, val)")
    if not p:
        p.extend(metric_problems(entry["metrics"], summary_metrics(entry), "from the file's own numbers"))
    return p.finish()


def _budget_problems(entry: dict) -> list[str]:
    try:
        budget = Budget(**entry["protocol"]["budget"])
    except (TypeError, ValueError) as e:
        return [f"protocol.budget: {e}"]
    problems = []
    n, _ = spent(entry["evaluations"])
    if budget.executions is not None and n > budget.executions:
        problems.append(f"{n} executions, budget {budget.executions}: the budget does not hold")
    if budget.compute is not None:
        before = 0.0
        for i, e in enumerate(entry["evaluations"]):  # the evaluator stops before a step that would start past it
            if before >= budget.compute:
                problems.append(f"{_label('evaluations', i, e)} started after the compute budget of "
                                f"{budget.compute:g} (reference s) was spent ({before:.3f}): the budget does not hold")
                break
            before += e["cost"]
    return problems


METRIC_KEYS = ("hv", "best_acc", "best_pr", "acc_at_pr", "search_hv", "compute", "executions", "regret", "acc_regret")


def metric_problems(claimed: dict, recomputed: dict, source: str) -> list[str]:
    out = []
    for key in METRIC_KEYS:
        if key not in claimed:
            continue
        if key not in recomputed:
            out.append(f"metrics.{key}: claimed, but this track has no such metric")
            continue
        if not _same(claimed[key], recomputed[key]):
            out.append(f"metrics.{key}: claimed {_show(claimed[key])}, recomputed {_show(recomputed[key])} {source}")
    return out


# ---- stage 3: replay ---------------------------------------------------------------------------------------

def _make_env(protocol: Protocol):
    return protocol.make_env(store=False, device="auto" if protocol.gpu else "cpu")


def _replay_step(env, scheme: Sequence[int]) -> tuple[dict | None, str | None, float]:
    """(info, None, cost) of the last step of ``scheme`` from its (already replayed) parent, or
    (None, error, charge) when it fails: charged the work it did, as the evaluator charges it."""
    from agents.base import work_ledger
    from automc_env import cost
    from automc_env.step import StepFailed

    env.reset(options={"scheme": list(scheme[:-1])})
    with work_ledger() as work:
        try:
            info = env.step(int(scheme[-1]))[4]
        except StepFailed as e:
            return None, str(e), cost.price(work.counts, env.task)
    if info.get("invalid_action"):   # an env that ends the episode on a masked action instead of raising
        raise ValueError(info.get("invalid_reason") or "the action is masked")
    return info, None, info["cost"]


def _replay_cpu(entry: dict, env, p: _Problems, progress: bool) -> list[dict]:
    """Every evaluation, step by step; returns the replayed evaluations (the file's order)."""
    from tqdm.auto import tqdm

    out: list[dict] = []
    by_scheme: dict[tuple, dict] = {}
    running = 0.0
    b = env.base
    for i, e in enumerate(tqdm(entry["evaluations"], desc="replay evaluations", unit="step",
                               disable=None if progress else True)):
        key = tuple(e["scheme"])
        label = _label("evaluations", i, e)
        try:
            info, error, charge = _replay_step(env, key)
        except ValueError as err:   # not a step the environment allows (mask, pr_cap, position rules)
            p.add("replay", f"{label}: not a valid step here: {err}")
            return []
        except LookupError as err:  # TableMiss: the table holds no real result for it
            p.add("replay", f"{label}: the {env.backend} backend has no answer: {err}")
            return []
        running += charge
        if error is not None:
            parent = by_scheme.get(key[:-1])
            got = ({k: parent[k] for k in ("acc", "params", "flops", "AR", "PR", "FR")} if parent else
                   {"acc": b["acc"], "params": b["params"], "flops": b["flops"], "AR": 0.0, "PR": 0.0, "FR": 0.0})
            if not e["failed"]:
                p.add("replay", f"{label}: claimed a result, but the step fails on replay: {error}")
        else:
            got = {k: info[k] for k in ("acc", "params", "flops", "AR", "PR", "FR")}
            if e["failed"]:
                p.add("replay", f"{label}: claimed to fail, but the step succeeds on replay")
        rec = {"scheme": list(key), "names": e["names"], **got, "cost": charge, "compute": running,
               "execution": i + 1, "failed": error}
        if not (e["failed"] and error):
            bad = [f"{k} claimed {_show(e[k])}, replayed {_show(rec[k])}"
                   for k in ("acc", "params", "flops", "AR", "PR", "FR") if not _same(e[k], rec[k])]
            if bad:
                p.add("replay", f"{label}: " + "; ".join(bad))
        if not _same(e["cost"], charge):
            p.add("cost", f"{label}: cost claimed {_show(e['cost'])}, replayed {_show(charge)} (reference s)")
        out.append(rec)
        by_scheme[key] = rec
    return out


def _final_with_test(env, final: list[dict]) -> list[dict]:
    out = []
    for f in final:
        env.reset(options={"scheme": list(f["scheme"])})
        out.append({**{k: f[k] for k in ("scheme", "names", "acc", "params", "flops", "AR", "PR", "FR")},
                    "test_acc": test_accuracy(env)})
    return out


def _rerun_problems(entry: dict, env, replayed: list[dict]) -> tuple[list[str], str]:
    """Re-run the seeded search against the replayed steps; the trajectory must be the file's."""
    from agents.runner import AGENTS, make_agent

    agent, config = entry["agent"], entry["agent_config"]
    if agent not in AGENTS:
        return ([f"agent {agent!r} is not registered here (agents.runner.AGENTS): its search cannot be re-run, "
                 f"so the trajectory's order and completeness cannot be verified"], "impossible")
    if not config.get("rerunnable"):
        return ([f"agent_config is not reproducible from JSON (options {config.get('options')}): the search cannot "
                 f"be re-run, so the trajectory's order and completeness cannot be verified"], "impossible")
    budget = Budget(**entry["protocol"]["budget"])
    if budget.seconds is not None:
        return ([f"the budget has a wall-clock limit ({budget.seconds:g} s): where the search stopped cannot be "
                 f"reproduced"], "impossible")

    class Diverged(Exception):
        pass

    seen: list[dict] = []

    def listen(evaluation, evaluator) -> None:
        i = len(seen)
        seen.append(asdict(evaluation))
        if i >= len(replayed) or list(evaluation.scheme) != replayed[i]["scheme"] \
                or (evaluation.failed is None) != (replayed[i]["failed"] is None):
            raise Diverged

    saved = (Evaluator.listener, Evaluator.executor)
    Evaluator.listener, Evaluator.executor = listen, None
    try:
        make_agent(agent, **config.get("options", {})).search(env, budget, entry["seed"])
    except Diverged:
        pass
    except Exception as e:  # noqa: BLE001 - any crash of the re-run is a verdict, not a validator error
        return [f"re-running {agent} (seed {entry['seed']}, options {config.get('options')}) raised "
                f"{type(e).__name__}: {e}"], "failed"
    finally:
        Evaluator.listener, Evaluator.executor = saved
    for i, e in enumerate(seen):
        if i >= len(replayed) or e["scheme"] != replayed[i]["scheme"] or (e["failed"] is None) != (
                replayed[i]["failed"] is None):
            file_side = (f"the file has {replayed[i]['scheme']}" if i < len(replayed)
                         else "the file's trajectory ends there")
            return [f"re-running {agent} (seed {entry['seed']}) with the recorded options diverges at "
                    f"evaluations[{i}]: the agent evaluates {e['scheme']}, {file_side} (an evaluation that is not "
                    f"this search's, or a reordered trajectory)"], "diverged"
    if len(seen) != len(replayed):
        return [f"re-running {agent} (seed {entry['seed']}) stops after {len(seen)} evaluations; the file has "
                f"{len(replayed)}"], "diverged"
    return [], "identical"


def validate_entry(source: str | Path | dict, env=None, progress: bool = False, rerun: bool = True) -> dict:
    """Validate one result file (path or parsed dict); see the module docstring.

    Returns ``{"ok", "problems", "notes", "replayed", "rerun", "entry"}`` where ``entry`` holds the
    recomputed numbers (``None`` unless the replay ran): base, evaluations, final set and metrics.
    ``env`` (tests) replaces the fresh environment; it must be built like the protocol's. ``rerun``
    (tests) skips re-running the search; a report without the re-run is never ``ok``.
    """
    path = None if isinstance(source, dict) else Path(source)
    entry = source if path is None else load_entry(path)
    if path is None:
        check_schema(entry)
    report = {"ok": False, "problems": [], "notes": [], "replayed": 0, "rerun": "not run", "entry": None}
    report["problems"] = invariant_problems(entry, path)
    if report["problems"]:
        return report
    protocol = get_protocol(track_of(entry))
    threads = entry["environment"]["torch_threads"]
    with torch_threads(threads):
        env = env.unwrapped if env is not None else _make_env(protocol)
        recomputed = _replay(entry, env, protocol, report, progress)
        if recomputed is not None and not report["problems"] and not protocol.gpu:
            if rerun:
                problems, report["rerun"] = _rerun_problems(entry, env, recomputed["evaluations"])
                report["problems"] += problems
            else:
                report["notes"].append("the search was not re-run: the verdict is incomplete")
    report["entry"] = recomputed
    report["ok"] = not report["problems"] and (report["rerun"] == "identical" or protocol.gpu)
    return report


def _replay(entry: dict, env, protocol: Protocol, report: dict, progress: bool) -> dict | None:
    if env.backend != protocol.backend:   # a caller's (test's) environment must be built like the track's
        raise ValueError(f"the validator's environment runs the {env.backend!r} backend; track "
                         f"{protocol.track!r} runs {protocol.backend!r}")
    p = _Problems()
    notes = report["notes"]
    if entry["environment"]["fingerprint"] != env.fingerprint:
        notes.append("the environment fingerprint differs from the one that produced the file (other code or "
                     "settings); the replay decides")
    kernels = entry["environment"].get("cpu_kernels")
    if env.backend == "live" and kernels and kernels != torch.backends.cpu.get_cpu_capability():
        notes.append(f"the file was computed with {kernels} CPU kernels, this replay runs "
                     f"{torch.backends.cpu.get_cpu_capability()}: CPU numbers can differ between kernel families")
    if entry["environment"]["method_options"] != env.method_options:
        p.add("environment", f"environment.method_options {entry['environment']['method_options']} are not "
                             f"the protocol's {env.method_options}: a modified environment")
    identity = backend_identity(env)
    if env.backend == "surrogate" and (entry["environment"].get("backend_identity") or {}).get("model") != \
            identity["model"]:
        p.add("environment", f"surrogate model {(entry['environment'].get('backend_identity') or {}).get('model')} "
                             f"is not this surrogate ({identity['model']}): a surrogate result is only valid "
                             f"against the model that predicted it")
    base = base_metrics(env)
    band = protocol.acc_band if protocol.gpu else 0.0
    for key in ("acc", "test_acc"):
        if abs(entry["base"][key] - base[key]) > band + EXACT:
            p.add("base", f"base.{key} claimed {entry['base'][key]:.4f}, the base model here gives {base[key]:.4f}: "
                          f"a different base model")
    for key in ("params", "flops"):
        if entry["base"][key] != base[key]:
            p.add("base", f"base.{key} claimed {entry['base'][key]}, the base model here has {base[key]}")
    if p:
        report["problems"] = p.finish()
        return None
    budget = Budget(**entry["protocol"]["budget"])
    followed = budget == protocol.budget
    if not followed:
        notes.append(f"budget {asdict(budget)} is not the protocol's {asdict(protocol.budget)}: the entry is "
                     f"listed apart from the board")
    if protocol.gpu:
        evaluations = [dict(e) for e in entry["evaluations"]]
        final = []
        for f in entry["final"]:
            got = final_evaluation(env, f["scheme"])
            report["replayed"] += 1
            for key, tol in (("acc", protocol.acc_band), ("test_acc", protocol.acc_band), ("PR", protocol.pr_band)):
                if abs(f[key] - got[key]) > tol:
                    p.add("replay", f"{_label('final', len(final), f)}: claimed {key} {f[key]:.4f}, replayed "
                                    f"{got[key]:.4f} (band ±{tol})")
            final.append(got)
        notes.append("GPU task: only the final set was replayed (within the bands); the search HV and the "
                     "costs of the other evaluations are the file's")
    else:
        evaluations = _replay_cpu(entry, env, p, progress)
        report["replayed"] = len(evaluations)
        if not evaluations and entry["evaluations"]:
            report["problems"] = p.finish()
            return None
        final = _final_with_test(env, final_set(evaluations, protocol.gamma))
        claimed = {tuple(f["scheme"]): f for f in entry["final"]}
        for i, f in enumerate(final):
            c = claimed.get(tuple(f["scheme"]))
            if c is not None and not _same(c["test_acc"], f["test_acc"]):
                p.add("test", f"{_label('final', i, f)}: test_acc claimed {_show(c['test_acc'])}, replayed "
                              f"{_show(f['test_acc'])}")
    recomputed = {"task": entry["task"], "track": protocol.track, "backend": env.backend,
                  "backend_identity": identity, "agent": entry["agent"], "seed": entry["seed"],
                  "protocol": {"gamma": protocol.gamma, "hv_tolerance": protocol.hv_tolerance,
                               "budget": asdict(budget), "followed": followed},
                  "base": base, "evaluations": evaluations, "final": final}
    if protocol.metric == "regret":   # the true front, from this table: the file's must be the same
        try:
            reference = reference_front(env, protocol.gamma, protocol.hv_tolerance)
        except TrackNotReady as err:
            p.add("reference", f"the true front cannot be computed here: {err}")
            report["problems"] = p.finish()
            return None
        claimed_ref = entry.get("reference") or {}
        for key in ("schemes", "digest", "hv", "best_acc", "front"):
            if claimed_ref.get(key) != reference[key]:
                p.add("reference", f"reference.{key}: the file's true front differs from this table's "
                                   f"({_show(claimed_ref.get(key)) if key != 'front' else 'front points'} vs "
                                   f"{_show(reference[key]) if key != 'front' else 'front points'})")
        recomputed["reference"] = reference
    recomputed["metrics"] = summary_metrics(recomputed)
    if not protocol.gpu:   # on a GPU the replay may differ within the bands: the claims were checked against
        p.extend(metric_problems(entry["metrics"], recomputed["metrics"], "from the replay"))   # the file's own
    if not p:
        p.extend(_budget_problems(recomputed))
    report["problems"] = p.finish()
    return recomputed


# ---- validation records -----------------------------------------------------------------------------------

def record_path(result_path: str | Path) -> Path:
    """Where the validation record of a result file lives: ``<its folder>/validation/<its name>``."""
    result_path = Path(result_path)
    return result_path.parent / "validation" / result_path.name


def _record_backend(report: dict) -> str:
    """The backend a verdict was reached on (live for a file the validator could not read)."""
    return (report.get("entry") or {}).get("backend", "live")


def write_record(result_path: str | Path, report: dict) -> Path:
    """Store a verdict and its recomputed numbers, bound to the file's sha256 and the validator version."""
    from agents.runner import write_json_atomic

    record = {"record": RECORD_ID, "file": Path(result_path).name, "sha256": file_sha256(result_path),
              "validator": validator_version(_record_backend(report)), "ok": report["ok"], "problems": report["problems"],
              "notes": report["notes"], "rerun": report["rerun"], "replayed": report["replayed"],
              "validated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "torch_threads_here": torch.get_num_threads(), "versions": versions(), "entry": report["entry"]}
    out = record_path(result_path)
    write_json_atomic(record, out, allow_nan=False)
    return out


def current_record(result_path: str | Path) -> tuple[dict | None, str]:
    """(the record of a result file, "") when it is current and passing; else (record or None, why not)."""
    path = record_path(result_path)
    if not path.exists():
        return None, "not validated (no validation record)"
    try:
        record = json.loads(path.read_text(), parse_constant=lambda c: math.nan)
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"unreadable validation record: {e}"
    if record.get("record") != RECORD_ID:
        return None, "validation record of another format"
    if record.get("sha256") != file_sha256(result_path):
        return record, "the file changed after it was validated (sha256 differs)"
    here = validator_version(_record_backend(record))
    if record.get("validator") != here:
        return record, f"validated by another validator version ({record.get('validator')}; this one is {here})"
    if not record.get("ok"):
        problems = record.get("problems") or ["no reason recorded"]
        return record, f"rejected: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
    return record, ""


def validate_file(path: str | Path, progress: bool = False, record: bool = True) -> dict:
    """Validate a result file and (by default) write its record; unreadable files get a report too."""
    try:
        report = validate_entry(path, progress=progress)
    except LeaderboardError as e:
        report = {"ok": False, "problems": [str(e)], "notes": [], "replayed": 0, "rerun": "not run", "entry": None}
    if record and Path(path).exists():
        report["record"] = str(write_record(path, report))
    return report
