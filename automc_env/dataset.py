"""A released data set of real compression steps: sampling designs, collection, records, loading.

Every record is one step really computed by the environment (``compute_step``, through an
executor): the scheme that reached it, the strategy, and the measured state after it — val and
held-out test accuracy, params, FLOPs, deterministic cost and its counters, wall seconds — plus the
benchmark version, fingerprint, base-model hash and hardware. Records are JSON Lines in gzip (no
pickle), in shards of :data:`SHARD_STEPS` records under ``automc_env/datasets/<task>/<version>/``,
so the data ships with the package and loads offline.

Designs (each a deterministic, seeded sequence of schemes; see :data:`DESIGNS`):

* ``stratified``: random schemes of length 1-5, method uniform first, then a setting uniform among
  that method's distinct valid strategies (uniform over ids would make 45 % of steps HOS);
* ``exhaustive``: every valid scheme up to depth 3 over the named sub-grid :data:`SUBGRIDS`
  ("paper-12": two strategies per method spanning the settings), so agents can be run on it exactly
  and scored against its known Pareto front;
* ``repeats-1``, ``repeats-2``: the first schemes of ``stratified`` (cut to two steps) again under
  other step seeds (``AutoMCEnv(replicate=k)``: same base model and data), so that seed-to-seed
  noise is measured, not guessed;
* ``trajectories``: every step in given search result files (leaderboard runs), harvested;
* ``finals``: the reported (final) schemes of given result files, e.g. a surrogate board's, so
  that what a search on the surrogate reports is measured for real (where the surrogate's errors
  decide a ranking).

Collection is resumable and append-only: schemes are processed in chunks in their design order,
steps are computed in parallel by an executor (the store keeps every finished step, so a killed
collection recomputes nothing), and each step is emitted once per design, by the first scheme
that reaches it. Complete shards are immutable; the open shard is rewritten atomically after every
chunk.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from automc_env import cost
from automc_env.fingerprint import BENCHMARK_VERSION
from automc_env.tasks import get_task

DATA_ROOT = Path(__file__).resolve().parent / "datasets"
SHARD_STEPS = 500
_VERSION_DIR = BENCHMARK_VERSION.replace("/", "-")   # "automc-bench-1"

# Two strategies per method: a light one (small removal, short training) and a heavy one, with the
# other hyperparameters on different values, so the sub-grid spans the settings of every method.
SUBGRIDS: dict[str, list[str]] = {
    "paper-12": [
        "LMA(ft=0.3,dec=0.12,seg=8,T=3,alpha=0.5)", "LMA(ft=0.5,dec=0.36,seg=6,T=6,alpha=0.99)",
        "LeGR(ft=0.2,dec=0.12,max=0.7,evo=0.4,crit=l1_weight)", "LeGR(ft=0.4,dec=0.36,max=0.9,evo=0.6,crit=l2_bn)",
        "NS(ft=0.2,dec=0.12,max=0.9)", "NS(ft=0.4,dec=0.36,max=0.7)",
        "SFP(dec=0.12,soft=0.2,every=1)", "SFP(dec=0.36,soft=0.4,every=3)",
        "HOS(ft=0.2,dec=0.12,layer=P1,filter=l1norm,aux=0.3,mse=1)",
        "HOS(ft=0.4,dec=0.36,layer=P2,filter=k34,aux=0.4,mse=3)",
        "LFB(ft=0.2,dec=0.12,factor=1,loss=CE)", "LFB(ft=0.4,dec=0.36,factor=3,loss=MSE)",
    ],
}
EXHAUSTIVE_DEPTH = 3
REPEAT_SCHEMES = 150      # schemes of ``stratified`` re-run per replicate (first two steps each)


# ---- designs ---------------------------------------------------------------------------------------

def _planned_valid(env, scheme: Sequence[int]) -> bool:
    try:
        env._check_scheme(list(scheme))
    except ValueError:
        return False
    return True


def stratified_schemes(env, seed: int = 0) -> Iterator[list[int]]:
    """Random valid schemes: length uniform in 1..L, then per step a method uniform among those with a
    valid strategy, then a strategy uniform among that method's distinct (canonical) valid ids."""
    space, task = env.space, env.task
    canonical = {i for i in range(len(space))
                 if space.canonical(i, task.pretrain_epochs, env.method_options) == i}
    by_method = {m: np.array([i for i in space.method_range(m) if i in canonical]) for m in space.methods}
    removal = np.array([space[i].removal(task.gamma) for i in range(len(space))])
    rng = np.random.default_rng([seed, 0xA17C])
    while True:
        length = int(rng.integers(1, env.max_len + 1))
        scheme: list[int] = []
        planned = 0.0
        for _ in range(length):
            options = {m: ids[planned + removal[ids] <= env.pr_cap + 1e-9] for m, ids in by_method.items()}
            options = {m: ids for m, ids in options.items()
                       if len(ids) and _planned_valid(env, scheme + [int(ids[0])])}
            if not options:
                break
            method = sorted(options)[int(rng.integers(len(options)))]
            choice = int(options[method][int(rng.integers(len(options[method])))])
            scheme.append(choice)
            planned += removal[choice]
        if scheme:
            yield scheme


def exhaustive_schemes(env, subgrid: str = "paper-12", depth: int = EXHAUSTIVE_DEPTH) -> Iterator[list[int]]:
    """Every valid scheme of length 1..depth over the sub-grid, shortest first, then in id order."""
    ids = sorted(env.space.parse(name).id for name in SUBGRIDS[subgrid])
    for length in range(1, depth + 1):
        for scheme in itertools.product(ids, repeat=length):
            if _planned_valid(env, scheme):
                yield list(scheme)


def repeat_schemes(env, seed: int = 0) -> Iterator[list[int]]:
    """The first :data:`REPEAT_SCHEMES` stratified schemes, cut to their first two steps."""
    for scheme in itertools.islice(stratified_schemes(env, seed), REPEAT_SCHEMES):
        yield scheme[:2]


def trajectory_schemes(paths: Sequence[str | Path], part: str = "evaluations") -> Callable:
    """Every evaluated scheme (``part="evaluations"``) or every reported scheme (``"final"``) of the
    given search result / leaderboard files, in file order."""
    def schemes(env, seed: int = 0) -> Iterator[list[int]]:
        for path in paths:
            blob = json.loads(Path(path).read_text())
            entry = blob.get("entry", blob)
            for e in entry.get(part, []):
                yield [int(a) for a in e["scheme"]]
    return schemes


#: designs harvested from result files (``--from``): what they take of each file
FROM_FILES = {"trajectories": ("steps of search runs", "evaluations"),
              "finals": ("the reported (final) schemes of search runs", "final")}


@dataclass(frozen=True)
class Design:
    name: str
    description: str
    schemes: Callable          # (env, seed) -> Iterator[list[int]]
    replicate: int = 0
    finite: bool = True


DESIGNS: dict[str, Design] = {
    "stratified": Design("stratified", "random schemes, length 1-5, method-stratified", stratified_schemes,
                         finite=False),
    "exhaustive": Design("exhaustive", f"every valid scheme up to depth {EXHAUSTIVE_DEPTH} over sub-grid paper-12",
                         lambda env, seed=0: exhaustive_schemes(env)),
    "repeats-1": Design("repeats-1", f"first {REPEAT_SCHEMES} stratified schemes (2 steps), step seeds of "
                        "replicate 1", repeat_schemes, replicate=1),
    "repeats-2": Design("repeats-2", f"first {REPEAT_SCHEMES} stratified schemes (2 steps), step seeds of "
                        "replicate 2", repeat_schemes, replicate=2),
}


# ---- records and shards ----------------------------------------------------------------------------

def dataset_dir(task: str, root: str | Path | None = None) -> Path:
    return Path(root or DATA_ROOT) / task / _VERSION_DIR


def hardware(threads: int, device: str) -> dict:
    """Where a step was computed (for the datasheet; wall seconds depend on it, cost does not)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "device": device, "threads": threads, "torch": torch.__version__,
            "kernels": torch.backends.cpu.get_cpu_capability()}


def step_record(env, design: str, index: int, scheme: tuple[int, ...], metrics: dict, hw: dict) -> dict:
    """One data-set row from a stored step's metrics."""
    strategy = env.space[scheme[-1]]
    return {
        "version": BENCHMARK_VERSION, "task": env.task.name, "grid": env.space.name, "seed": env.seed_value,
        "replicate": env.replicate, "design": design, "index": index, "scheme": list(scheme),
        "depth": len(scheme), "method": strategy.method, "strategy": strategy.name, "status": "ok",
        "acc": metrics["acc"], "test_acc": metrics["test_acc"], "params": metrics["params"],
        "flops": metrics["flops"], "cost": metrics["cost"], "cost_counters": metrics["cost_counters"],
        "seconds": metrics["compute_seconds"], "seed_key": env.seed_key, "fingerprint": env.fingerprint,
        "base": env.base_digest, "hardware": hw,
    }


def failure_record(env, design: str, index: int, scheme: tuple[int, ...], error: str, hw: dict) -> dict:
    strategy = env.space[scheme[-1]]
    return {"version": BENCHMARK_VERSION, "task": env.task.name, "grid": env.space.name, "seed": env.seed_value,
            "replicate": env.replicate, "design": design, "index": index, "scheme": list(scheme),
            "depth": len(scheme), "method": strategy.method, "strategy": strategy.name, "status": "failed",
            "error": error, "seed_key": env.seed_key, "fingerprint": env.fingerprint, "base": env.base_digest,
            "hardware": hw}


def _shards(directory: Path, design: str) -> list[Path]:
    return sorted(directory.glob(f"{design}-[0-9][0-9][0-9][0-9][0-9].jsonl.gz"))


def _partial(directory: Path, design: str) -> Path:
    return directory / f"{design}-open.jsonl.gz"


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_jsonl_gz(path: Path, records: Sequence[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # mtime=0: the same records give the same bytes (reproducible files, clean diffs)
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        for r in records:
            fh.write((json.dumps(r, sort_keys=True) + "\n").encode())
        fh.flush()
    os.replace(tmp, path)


def load_records(task: str = "digits", designs: Sequence[str] | None = None, root: str | Path | None = None,
                 version: str = BENCHMARK_VERSION, include_failed: bool = False) -> list[dict]:
    """All records of ``task`` (optionally only some designs), complete shards and the open one.

    ``cost`` is re-priced from the stored counters with the current coefficients, like a replayed
    step's ``info["cost"]``, so data and live runs always agree on prices.
    """
    directory = Path(root or DATA_ROOT) / task / version.replace("/", "-")
    if not directory.exists():
        known = sorted(p.name for p in (Path(root or DATA_ROOT) / task).glob("*")) if (
            Path(root or DATA_ROOT) / task).exists() else []
        raise FileNotFoundError(f"no data set for task {task!r} at benchmark version {version} ({directory}); "
                                f"versions present: {known or 'none'}")
    task_def = get_task(task)
    out = []
    names = designs or sorted({p.name.rsplit("-", 1)[0] for p in directory.glob("*.jsonl.gz")})
    for design in names:
        for path in [*_shards(directory, design), _partial(directory, design)]:
            if path.exists():
                for r in read_jsonl_gz(path):
                    if r.get("version") != version:
                        raise ValueError(f"{path}: record of version {r.get('version')!r} in a {version} data set")
                    if r.get("status") == "ok":  # priced with the current coefficients (as replayed steps are)
                        r["cost"] = cost.price(r["cost_counters"], task_def)
                        out.append(r)
                    elif include_failed:
                        out.append(r)
    return out


# ---- collection ------------------------------------------------------------------------------------

@dataclass
class Progress:
    design: str
    records: int          # records of this design, written so far (all sessions)
    new: int              # written by this call
    next_index: int       # the next scheme of the design sequence to process
    finished: bool        # a finite design has been exhausted
    seconds: float
    computed: int         # steps computed by this call (the rest replayed from the store)


def collect(env, design: str, executor, *, seed: int = 0, root: str | Path | None = None,
            max_records: int | None = None, hours: float | None = None, chunk: int = 24,
            trajectories: Sequence[str | Path] = (), log: Callable[[str], None] = print) -> Progress:
    """Append ``design``'s records for ``env``'s task to the data set (resumable; see the module docstring)."""
    if design in FROM_FILES:
        if not trajectories:
            raise ValueError(f"design {design!r} needs result files (--from)")
        description, part = FROM_FILES[design]
        spec = Design(design, description, trajectory_schemes(trajectories, part))
    elif design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; designs: {', '.join([*DESIGNS, *FROM_FILES])}")
    else:
        spec = DESIGNS[design]
    if env.replicate != spec.replicate:
        raise ValueError(f"design {design} needs an environment with replicate={spec.replicate}, got {env.replicate}")
    directory = dataset_dir(env.task.name, root)
    directory.mkdir(parents=True, exist_ok=True)
    shards, partial = _shards(directory, design), _partial(directory, design)
    done = [r for p in shards for r in read_jsonl_gz(p)]
    open_records = read_jsonl_gz(partial) if partial.exists() else []
    for r in done + open_records:
        if r["version"] != BENCHMARK_VERSION or r["seed_key"] != env.seed_key:
            raise ValueError(f"{directory}: records of {r['version']} (seed key {r['seed_key'][:12]}) cannot be "
                             f"extended by {BENCHMARK_VERSION} (seed key {env.seed_key[:12]}): another base model, "
                             f"options or replicate")
    emitted = {tuple(r["scheme"]) for r in done + open_records}
    next_index = max((r["index"] for r in done + open_records), default=-1) + 1
    total = len(done) + len(open_records)
    hw = hardware(getattr(executor, "threads", torch.get_num_threads()), str(env.device))
    schemes = itertools.islice(spec.schemes(env, seed), next_index, None)
    started, new, computed = time.perf_counter(), 0, 0
    index, finished = next_index, False
    while True:
        if max_records is not None and total >= max_records:
            break
        if hours is not None and time.perf_counter() - started >= hours * 3600:
            break
        batch = list(itertools.islice(schemes, chunk))
        if not batch:
            finished = True
            break
        report = executor.run(env, batch)
        computed += len(report.computed)
        rows = []
        bad = set(report.failed) | set(report.skipped)
        for offset, scheme in enumerate(batch):
            checked = tuple(int(a) for a in scheme)
            for k in range(1, len(checked) + 1):
                prefix = checked[:k]
                if prefix in emitted:
                    continue
                emitted.add(prefix)
                if prefix in report.failed:
                    rows.append(failure_record(env, design, index + offset, prefix, report.failed[prefix], hw))
                    break
                if prefix in bad:
                    break
                record = env.store.get(env.fingerprint, prefix)
                rows.append(step_record(env, design, index + offset, prefix, record.metrics, hw))
        index += len(batch)
        open_records.extend(rows)  # whole chunks: max_records may be passed by less than one chunk
        total += len(rows)
        new += len(rows)
        while len(open_records) >= SHARD_STEPS:  # seal full shards; the rest stays open
            sealed = directory / f"{design}-{len(_shards(directory, design)):05d}.jsonl.gz"
            _write_jsonl_gz(sealed, open_records[:SHARD_STEPS])
            open_records = open_records[SHARD_STEPS:]
            _write_jsonl_gz(partial, open_records)
        _write_jsonl_gz(partial, open_records)
        elapsed = time.perf_counter() - started
        log(f"[{design}] {total} records ({new} new, {computed} computed) after {elapsed / 60:.1f} min: "
            f"{3600 * computed / max(elapsed, 1e-9):.0f} computed steps/h, next scheme {index}")
        if not open_records and partial.exists():
            partial.unlink()
    return Progress(design, total, new, index, finished, time.perf_counter() - started, computed)
