"""Evaluate many compression steps at once: in-process (the default) or on Ray.

An executor makes every prefix of a set of schemes present in an environment's store, computing
the missing steps, parents before children. What it computes is exactly what the environment
would: every step goes through :func:`automc_env.step.compute_step` with the environment's
:class:`~automc_env.step.StepConfig`, and a step's randomness depends only on the fingerprint and
the scheme, so the order and the place a step runs in do not change its numbers (at the same thread
count: a worker runs with ``threads`` torch threads, 1 by default).

* :class:`InProcessExecutor` steps the environment itself, one step at a time.
* :class:`RayExecutor` runs one Ray task per step: one CPU (``threads`` torch threads) on a CPU
  environment, one GPU on a CUDA one. The driver owns the store (SQLite stays single-writer): it
  sends a worker the parent's weights and the step config, and stores the child the worker returns.
  Workers load the task's data once per process. ``address=None`` starts a local Ray instance with
  ``workers`` CPUs; ``address="ray://..."`` or ``"auto"`` joins a cluster (every node must have the
  project installed and, for CIFAR tasks, the data under ``AUTOMC_DATA``).

Faults: a worker that dies mid-step (killed, out of memory) loses only that step, which Ray runs
again (``max_retries``); a step whose compressor raises is reported in the result, its descendants
are skipped, and the rest goes on; a killed driver loses only the steps in flight, since every
finished step is stored the moment it returns (a re-run finds it and computes nothing twice).

Local Ray instances keep Ray's token authentication, with the token under ``AUTOMC_HOME/ray``
instead of the home directory (unless ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` are set), so
nothing automc starts writes outside ``AUTOMC_HOME``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from automc_env import serialize
from automc_env.home import automc_home
from automc_env.store import CHECKPOINT_SUFFIX
from automc_env.step import StepConfig, StepFailed, compute_step


@dataclass
class RunReport:
    """What an executor did: steps computed, already stored, failed (scheme -> error), skipped."""

    computed: list[tuple[int, ...]] = field(default_factory=list)
    stored: int = 0
    failed: dict[tuple[int, ...], str] = field(default_factory=dict)
    skipped: list[tuple[int, ...]] = field(default_factory=list)   # descendants of failed steps
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def missing_steps(env, schemes: Iterable[Sequence[int]]) -> tuple[list[tuple[int, ...]], int]:
    """(every prefix of ``schemes`` that the store lacks, parents first; how many it already holds).

    Schemes are validated like actions (ids, masks, length) before anything runs.
    """
    needed = set()
    for scheme in schemes:
        checked = env._check_scheme(list(scheme))
        needed.update(checked[:k] for k in range(1, len(checked) + 1))
    todo = {p for p in needed if env.store.get(env.fingerprint, p) is None}
    # a stored parent whose checkpoint cannot be loaded (a file lost, or a pickle of an earlier version,
    # which is never loaded) is computed again before its children
    for parent in {p[:-1] for p in todo if len(p) > 1} - todo:
        while parent and parent not in todo and not _loadable(env.store.get(env.fingerprint, parent)):
            todo.add(parent)
            parent = parent[:-1]
    stored = len(needed - todo)
    return sorted(todo, key=lambda p: (len(p), p)), stored


def _loadable(record) -> bool:
    return record is not None and record.checkpoint.suffix == CHECKPOINT_SUFFIX and record.checkpoint.exists()


class Executor:
    """Computes the missing steps of many schemes (see the module docstring)."""

    workers = 1

    def run(self, env, schemes: Iterable[Sequence[int]], progress: bool = False) -> RunReport:
        raise NotImplementedError  # pragma: no cover - abstract

    def close(self) -> None:
        """Release workers (nothing to do in-process)."""


class InProcessExecutor(Executor):
    """The environment computes each step itself, in this process, in (length, scheme) order."""

    def run(self, env, schemes: Iterable[Sequence[int]], progress: bool = False) -> RunReport:
        if env.store is None:
            raise ValueError("an executor needs an environment with a store")
        started, report = time.perf_counter(), RunReport()
        todo, report.stored = missing_steps(env, schemes)
        bad: set[tuple[int, ...]] = set()
        for node in tqdm(todo, desc="steps", unit="step", disable=None if progress else True):
            if node[:-1] in bad:
                bad.add(node)
                report.skipped.append(node)
                continue
            try:
                env.evaluate(node)
            except StepFailed as e:
                bad.add(node)
                report.failed[node] = str(e)
                continue
            report.computed.append(node)
        report.seconds = time.perf_counter() - started
        return report


# ---- Ray ------------------------------------------------------------------------------------------

def model_to_bytes(model: nn.Module) -> bytes:
    """A model for the trip to or from a worker: the store's pickle-free format (``serialize``).

    Not ``model.to("cpu")`` first: ``nn.Module.to`` moves a module in place, which would move the
    environment's base model off its GPU; ``serialize`` copies every tensor to the CPU by itself.
    """
    return serialize.dumps(model)


def model_from_bytes(blob: bytes, device: str | torch.device = "cpu") -> nn.Module:
    return serialize.loads(blob, map_location=device)


_WORKER_DATA: dict = {}


def _worker_step(config: StepConfig, parent_blob: bytes, scheme: tuple[int, ...], threads: int) -> tuple[dict, bytes]:
    """Runs on a worker: the step exactly as the environment computes it (data loaded once per process)."""
    torch.set_num_threads(threads)
    key = (config.task.digest(), config.seed, config.device)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()  # one task per worker process at a time: keep memory flat
        _WORKER_DATA[key] = config.task.load_data(torch.device(config.device), seed=config.seed)
    parent = model_from_bytes(parent_blob, config.device)
    model, metrics = compute_step(config, _WORKER_DATA[key], parent, scheme)
    metrics["worker"] = {"pid": os.getpid(), "threads": threads}
    return metrics, model_to_bytes(model)


def connect_ray(address: str | None = None, workers: int | None = None) -> None:
    """Join a Ray cluster (``address``) or start a local one with ``workers`` CPUs (default: all)."""
    import ray

    if ray.is_initialized():
        return
    if address is None and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        token = automc_home() / "ray" / "auth_token"
        if not token.exists():
            token.parent.mkdir(parents=True, exist_ok=True)
            token.touch(mode=0o600)
            token.write_text(secrets.token_hex(32))
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address is None:
        ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
    else:
        ray.init(address=address, **kwargs)


class RayExecutor(Executor):
    """One Ray task per step; the driver owns the store (see the module docstring)."""

    def __init__(self, workers: int | None = None, address: str | None = None, threads: int = 1,
                 max_retries: int = 3, max_in_flight: int | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.address, self.threads, self.max_retries = address, int(threads), int(max_retries)
        connect_ray(address, workers)
        import ray

        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
        self.max_in_flight = max_in_flight or 2 * self.workers
        self._remote = ray.remote(_worker_step)

    def run(self, env, schemes: Iterable[Sequence[int]], progress: bool = False) -> RunReport:
        import ray
        from ray.exceptions import RayError, RayTaskError

        if env.store is None:
            raise ValueError("an executor needs an environment with a store")
        started, report = time.perf_counter(), RunReport()
        todo, report.stored = missing_steps(env, schemes)
        pending = set(todo)
        children: dict[tuple[int, ...], list[tuple[int, ...]]] = defaultdict(list)
        for node in todo:
            children[node[:-1]].append(node)
        # longest chain of missing descendants first: a deep scheme's steps start early instead of
        # leaving one worker computing its tail alone at the end (the order never changes a number)
        height: dict[tuple[int, ...], int] = {}
        for node in sorted(todo, key=len, reverse=True):
            height[node] = 1 + max((height[c] for c in children.get(node, [])), default=0)
        ready = [node for node in todo if node[:-1] not in pending]
        gpu = env.device.type == "cuda"
        options = dict(num_cpus=0 if gpu else self.threads, num_gpus=1 if gpu else 0, max_retries=self.max_retries)
        config = ray.put(env.step_config)
        base = ray.put(model_to_bytes(env.base_model))
        in_flight: dict = {}
        bar = tqdm(total=len(todo), desc=f"steps ({self.workers} workers)", unit="step",
                   disable=None if progress else True)

        def drop(node: tuple[int, ...]) -> None:  # a failed step's descendants are not attempted
            for child in children.get(node, []):
                pending.discard(child)
                report.skipped.append(child)
                bar.update(1)
                drop(child)

        try:
            while ready or in_flight:
                while ready and len(in_flight) < self.max_in_flight:
                    node = max(ready, key=lambda n: (height[n], -len(n)))
                    ready.remove(node)
                    if len(node) == 1:
                        parent = base
                    else:
                        parent = ray.put(model_to_bytes(env.store.load_model(env.store.get(env.fingerprint,
                                                                                          node[:-1]))))
                    in_flight[self._remote.options(**options).remote(config, parent, node, self.threads)] = node
                done, _ = ray.wait(list(in_flight), num_returns=1)
                node = in_flight.pop(done[0])
                pending.discard(node)
                bar.update(1)
                try:
                    metrics, blob = ray.get(done[0])
                except RayTaskError as e:  # the compressor raised: report it, go on with the rest
                    cause = e.cause if isinstance(e.cause, StepFailed) else e
                    report.failed[node] = str(cause).strip().splitlines()[-1] if not isinstance(
                        cause, StepFailed) else str(cause)
                    drop(node)
                    continue
                except RayError as e:  # the worker died more than max_retries times
                    report.failed[node] = f"worker lost: {type(e).__name__}: {e}"
                    drop(node)
                    continue
                model = model_from_bytes(blob)
                env.store.put(env.fingerprint, node, metrics, model, metrics["compute_seconds"])
                env._computed.add(node)  # computed for this environment: its infos say cached=False, as in-process
                report.computed.append(node)
                ready.extend(c for c in children.get(node, []) if c in pending)
        finally:
            bar.close()
            for ref in in_flight:
                ray.cancel(ref, force=True)
        report.seconds = time.perf_counter() - started
        return report

    def close(self) -> None:
        import ray

        if ray.is_initialized() and self.address is None:
            ray.shutdown()


def make_executor(workers: int = 0, address: str | None = None, threads: int = 1) -> Executor:
    """``workers`` 0 and no address: in-process; else Ray (local with ``workers`` CPUs, or a cluster)."""
    if not workers and address is None:
        return InProcessExecutor()
    return RayExecutor(workers=workers or None, address=address, threads=threads)
