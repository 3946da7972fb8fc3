"""One compression step, computed the same way wherever it runs: in the environment or on a worker.

Everything a step's numbers depend on besides the scheme and the parent model is in a
:class:`StepConfig` (small and picklable, so a Ray worker receives it with the task), and
:func:`compute_step` is the only code that turns (config, data, parent, scheme) into the child
model and its metrics. The environment and every executor call it, which is why a step computed on a
worker is bit-identical to the same step computed in-process at the same thread count.

Per step: the randomness comes from a seed derived from the benchmark identity (version, task,
grid, environment seed, method options, base weights, replicate — not the code's form, the device
or the machine) and the scheme (:func:`step_seed`), so a refactoring that leaves the computation
alone leaves every number alone; the work is charged to a cost ledger (:mod:`automc_env.cost`), the final
measurement included; the held-out test accuracy is measured *outside* the ledger and kept in the
stored metrics for data sets and reports, never shown to a search (``info`` has no test accuracy).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from automc_env import cost
from automc_env.metrics import accuracy
from automc_env.pretrain import measure
from automc_env.space import get_space
from automc_env.tasks import Task, TaskData
from automc_env.training import fast_cpu_math
from compressors import get_compressor
from compressors.base import CompressionContext, frozen_copy


@dataclass(frozen=True)
class StepConfig:
    """What a step depends on besides its scheme and parent model (see the module docstring)."""

    task: Task
    grid: str
    seed: int                           # the environment's seed: it samples the data splits
    seed_key: str                       # the benchmark identity every step seed derives from
    base_params: int                    # P(M) of the uncompressed model: HP2 is a fraction of it
    device: str                         # "cpu", "cuda", "cuda:1", ...
    method_options: dict = field(default_factory=dict)
    progress: bool = False


def step_seed(seed_key: str, scheme: tuple[int, ...]) -> int:
    """The seed of a step: a function of the benchmark identity and the scheme only."""
    return int.from_bytes(hashlib.sha256(f"{seed_key}:{tuple(scheme)}".encode()).digest()[:8], "little")


class StepFailed(RuntimeError):
    """A compressor raised on this step; the message names the strategy, the scheme and the task."""


def compute_step(config: StepConfig, data: TaskData, parent: nn.Module,
                 scheme: tuple[int, ...]) -> tuple[nn.Module, dict]:
    """Apply ``scheme[-1]`` to ``parent`` (the model after ``scheme[:-1]``): (child model, metrics).

    Metrics: ``acc`` (val %), ``params``, ``flops`` (MACs), ``test_acc`` (held-out %, not part of
    the search's view), ``cost`` (reference seconds) and ``cost_counters``, ``compute_seconds`` (wall).
    """
    scheme = tuple(int(a) for a in scheme)
    strategy = get_space(config.grid)[scheme[-1]]
    task = config.task
    device = torch.device(config.device)
    if device.type == "cpu":
        fast_cpu_math()
    seed = step_seed(config.seed_key, scheme)
    torch.manual_seed(seed)
    ctx = CompressionContext(
        task=task, train=data.train, val=data.val, original_params=config.base_params,
        gamma=task.gamma, removal=strategy.removal(task.gamma), device=device,
        generator=torch.Generator().manual_seed(seed), teacher=frozen_copy(parent),
        original_arch=task.arch(), progress=config.progress,
        options=config.method_options.get(strategy.method, {}))
    started = time.perf_counter()
    # the ledger covers what the wall time covers, the final measurement included (every computed
    # step pays for it, replays do not): copy, compress, measure
    with cost.ledger() as led:
        cost.charge(steps=1)
        try:
            model = get_compressor(strategy.method).compress(copy.deepcopy(parent), strategy.settings, ctx)
        except Exception as e:
            raise StepFailed(f"{strategy.name} (id {scheme[-1]}) failed on scheme {list(scheme[:-1])} "
                             f"of task {task.name}: {type(e).__name__}: {e}") from e
        model.eval()
        metrics = measure(model, task, data)
    metrics["compute_seconds"] = time.perf_counter() - started
    metrics["cost_counters"] = dict(led.counts)
    metrics["cost"] = cost.price(led.counts, task)
    metrics["test_acc"] = accuracy(model, data.test.x, data.test.y)
    return model, metrics
