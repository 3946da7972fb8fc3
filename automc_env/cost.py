"""Deterministic step cost: a ledger of the work a step did, priced in reference seconds.

A step's wall time depends on the machine, its load and its thread count; its *work* does not.
While a step is computed (``with cost.ledger() as led:``, opened by ``AutoMCEnv._compress``) the
library code that does the work charges it here:

* ``train_macs``: forward MACs per image x images x 3 for every training batch (backward counted
  as twice the forward), ``train_batches``: one per optimiser step (``training.train``);
* ``infer_macs`` / ``infer_batches``: forward MACs x images and batches of every evaluation pass
  (val accuracy, LeGR's fitness cross-entropy, teacher forwards in distillation and in HOS's
  auxiliary MSE, HOS's stale target);
* ``other``: method-specific work that is not a forward/backward, in floating-point operations
  estimated from tensor shapes and fixed iteration limits (HOS's HOOI: :func:`hooi_work`);
* ``steps``: 1 per step, the fixed overhead every computed step has (copying the parent, tracing
  dependency graphs, counting the MACs of new structures, the final measurement).

Only deterministic quantities are counted (shapes, images, batches, fixed iteration limits), never
iterations of a float-convergence loop or anything timing- or thread-dependent, so the same scheme
has the same counters on any machine, at any load or thread count, in any process. MACs come from
:func:`automc_env.metrics.count_flops`, cached per model structure (not recounted every batch).
The counters follow the computation: where float results differ between thread counts or BLAS
builds enough to flip a data-dependent choice (which channels LeGR's evolution keeps), the models
differ and so does their work; the store then hands the first result, and its cost, to everyone.

Charges outside any ledger are ignored (pre-training, tests, library use); inside nested ledgers
every open ledger of the thread receives them (an outer ledger sees the sum of its inner ones).

**Price**: ``cost = a·train_macs + b·train_batches + c·infer_macs + d·infer_batches + e·other +
f·steps`` in reference seconds. The coefficients depend on the model and input size, not on the
task name: tasks sharing both (``digits`` and ``synthetic`` = ResNet-8 on 1x8x8; ``digits-vgg`` and
``synthetic-vgg`` = the small VGG on 1x8x8) share a row, batch-size and epoch differences are
already in the counters. The CPU rows are fitted by ``benchmarks/calibrate_cost.py`` (real steps,
1 thread, non-negative least squares; ``--write`` rewrites the ``CALIBRATED`` block below): one
reference second is one second of a 1-thread CPU step on the calibration machine. On 8x8 inputs
the fit puts the price on batches and the per-step overhead, not on MACs (a = c = 0): a batch of
these tiny networks costs about the same whatever their width (Python and kernel-launch bound),
and HOS's HOOI on their small kernels is too quick to register (e = 0).
The synthetic tasks reuse the digits rows (same model and input size) rather than being fitted:
their steps are too short to separate per-batch from per-step overhead.

The GPU paper tasks (CIFAR ResNets/VGGs) have no calibration (no GPU here): they are priced with
:data:`NOMINAL_GPU`, a documented nominal conversion, **uncalibrated**; so is any model/input size
that has no row (:data:`NOMINAL_CPU`). ``coefficients(task)["source"]`` says which row prices a task.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import nn

COUNTERS = ("train_macs", "train_batches", "infer_macs", "infer_batches", "other", "steps")
COEFFICIENT_OF = {"train_macs": "a", "train_batches": "b", "infer_macs": "c", "infer_batches": "d",
                  "other": "e", "steps": "f"}
BACKWARD_FACTOR = 2  # a backward pass counted as twice the forward MACs

# --- CALIBRATED (written by benchmarks/calibrate_cost.py --write; do not edit by hand) ---
CALIBRATED: dict[str, dict] = {
    "resnet8/1x8x8": {"a": 0, "b": 0.00938548, "c": 0, "d": 0.00946757, "e": 0, "f": 0.269871,
        "source": "calibrate_cost.py 2026-11-29: 96 steps of digits, 1 thread, x86_64, others 0.94 cores, R² 0.960"},
    "vgg-small/1x8x8": {"a": 0, "b": 0.00676635, "c": 0, "d": 0.00694042, "e": 0, "f": 0.211195,
        "source": "calibrate_cost.py 2026-11-29: 96 steps of digits-vgg, 1 thread, x86_64, others 1.00 cores, R² 0.960"},
}
# --- END CALIBRATED ---

NOMINAL_GPU = {
    # Uncalibrated. A mid-range GPU (V100/RTX-class) trains CIFAR ResNet-56 at ~4,000 images/s with
    # batch 64-128 under mixed precision: 3 x 132 M MACs x 4,000/s ~ 1.5 T MAC/s, so a = c =
    # 1/1.5e12 s per MAC; ~4 ms of launch/optimizer overhead per training batch and ~2 ms per
    # inference batch; HOOI's small SVDs run far below peak (1 G flop/s); 2 s per step of fixed
    # overhead (copies, dependency graphs).
    "a": 1 / 1.5e12, "b": 4e-3, "c": 1 / 1.5e12, "d": 2e-3, "e": 1e-9, "f": 2.0,
    "source": "nominal GPU conversion (uncalibrated)",
}
NOMINAL_CPU = {
    # Uncalibrated fallback for a CPU model/input size without a calibrated row: 2 G MAC/s at one
    # thread, 2 ms per batch, 0.5 s per step.
    "a": 5e-10, "b": 2e-3, "c": 5e-10, "d": 2e-3, "e": 1e-9, "f": 0.5,
    "source": "nominal CPU conversion (uncalibrated)",
}


def model_key(task) -> str:
    """The coefficient row of a task: model family and input shape (``resnet8/1x8x8``)."""
    return f"{task.model}/{'x'.join(str(d) for d in task.input_shape)}"


def coefficients(task) -> dict:
    """The coefficient row for ``task``: calibrated if there is one, else the nominal conversion."""
    row = CALIBRATED.get(model_key(task))
    if row is not None:
        return row
    return NOMINAL_GPU if task.needs_gpu else NOMINAL_CPU


def price(counters: Mapping[str, float], task) -> float:
    """Reference seconds of ``counters`` for ``task``: the sum of each counter times its coefficient."""
    row = coefficients(task)
    return float(sum(row[COEFFICIENT_OF[k]] * float(counters.get(k, 0)) for k in COUNTERS))


@dataclass(eq=False)  # identity, not equal counts: the stack of open ledgers removes the one that closes
class Ledger:
    """Work charged while the ledger was open (see the module docstring for the counters)."""

    counts: dict = field(default_factory=lambda: {k: 0 for k in COUNTERS})

    def add(self, amounts: Mapping[str, float]) -> None:
        for k, v in amounts.items():
            self.counts[k] += v

    def price(self, task) -> float:
        return price(self.counts, task)


_local = threading.local()


def _open() -> list[Ledger]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


@contextmanager
def ledger() -> Iterator[Ledger]:
    """Collect the work charged by this thread until the block exits."""
    led = Ledger()
    stack = _open()
    stack.append(led)
    try:
        yield led
    finally:
        stack.remove(led)


def active() -> bool:
    """Whether a charge would be recorded (lets callers skip counting MACs when nobody listens)."""
    return bool(getattr(_local, "stack", None))


def charge(**amounts: float) -> None:
    """Add work to every open ledger of this thread; a no-op without one."""
    unknown = set(amounts) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown cost counters {sorted(unknown)}; counters: {COUNTERS}")
    for led in getattr(_local, "stack", None) or ():
        led.add(amounts)


# ---- MACs per image, cached per model structure ----------------------------------------------------

_MACS: dict[tuple, int] = {}
_MACS_LIMIT = 4096


def _structure(model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """What a forward's MAC count depends on: module types and settings, parameter shapes, input shape."""
    modules = tuple((n, type(m).__qualname__, m.extra_repr()) for n, m in model.named_modules())
    shapes = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
    return (tuple(input_shape), modules, shapes)


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on one image (``metrics.count_flops``), counted once per structure."""
    from automc_env.metrics import count_flops  # metrics charges the ledger: import lazily

    key = _structure(model, input_shape)
    macs = _MACS.get(key)
    if macs is None:
        if len(_MACS) >= _MACS_LIMIT:
            _MACS.clear()
        macs = _MACS[key] = count_flops(model, tuple(input_shape))
    return macs


def charge_inference(model: nn.Module, images: int, input_shape: tuple[int, ...], batches: int = 1) -> None:
    """Charge ``batches`` evaluation forward passes of ``model`` over ``images`` images in total."""
    if active():
        charge(infer_macs=forward_macs(model, input_shape) * int(images), infer_batches=int(batches))


def charge_training(model: nn.Module, images: int, input_shape: tuple[int, ...], batches: int = 1) -> None:
    """Charge ``batches`` optimiser steps of forward + backward over ``images`` images in total."""
    if active():
        charge(train_macs=(1 + BACKWARD_FACTOR) * forward_macs(model, input_shape) * int(images),
               train_batches=int(batches))


# ---- method-specific work -----------------------------------------------------------------------------

def svd_work(m: int, n: int) -> int:
    """Flop estimate of a thin SVD of an m x n matrix: m·n·min(m, n)."""
    return m * n * min(m, n)


def hooi_work(shape: tuple[int, ...], ranks: tuple[int, int], n_iter_max: int) -> int:
    """Flops of a Tucker-2 HOOI (tensorly ``partial_tucker`` on modes 0 and 1) at ``n_iter_max`` iterations.

    The fixed iteration limit, not the iterations run (those depend on float convergence): an SVD of
    each mode's unfolding to initialise, then per iteration, for each mode, a mode product with the
    other factor and an SVD of the result's unfolding, and the core's two mode products.
    """
    out_c, in_c = int(shape[0]), int(shape[1])
    k = math.prod(int(d) for d in shape[2:])
    r_out, r_in = int(ranks[0]), int(ranks[1])
    init = svd_work(out_c, in_c * k) + svd_work(in_c, out_c * k)
    per_iter = (out_c * in_c * k * r_in + svd_work(out_c, r_in * k)
                + out_c * in_c * k * r_out + svd_work(in_c, r_out * k)
                + out_c * in_c * k * r_out + r_out * in_c * k * r_in)
    return init + int(n_iter_max) * per_iter
