"""The one training loop: pre-training, fine-tuning, distillation and every method's training stage.

Methods differ only through arguments: a teacher (distillation term), a custom task loss (LFB's
loss types), an extra loss (sparsity, reconstruction), hooks after each optimiser step (masks) and
at the end of each epoch (soft-pruning mask updates, which may also exclude an epoch from
checkpoint selection).

* Epochs may be fractional: ``epochs=2.5`` runs two full passes and half of a third (in batches).
* Learning-rate schedule ``multistep``: the paper code's ``MultiStepLR`` with float milestones at
  25 %, 50 % and 75 % of the run's epochs, stepped once per epoch. A milestone fires (x0.1) only
  when it lands on a whole epoch (methods.md §0.3): ``milestone_epochs(10)`` = [5], ``(20)`` =
  [5, 10, 15], ``(5)`` = [] — at E_pre = 50, HP1 ∈ {0.1, 0.3, 0.5} never decays and 0.2 decays
  once. It fires at the start of that epoch, so it never fires before the first step.
  ``constant`` for the code's StepLR(150), which never fires in short runs.
* ``select_best``: evaluate on ``val`` after every epoch and restore the best weights (the paper
  code keeps the best epoch of every run).
* On CUDA: mixed precision (bf16 where supported, else fp16 with loss scaling) and channels_last.
* Cost: every batch charges its forward + backward MACs (and the teacher's forward) to the step's
  ledger (:mod:`automc_env.cost`), the per-epoch val accuracy charges its inference; outside a
  ledger (pre-training) nothing is counted.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from automc_env import cost
from automc_env.data import Augment, DeviceData
from automc_env.metrics import accuracy

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    batches: int
    epochs: float
    seconds: float
    best_acc: float | None = None          # val accuracy of the returned weights (if val given)
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val acc)


def fast_cpu_math() -> None:
    """Flush denormal floats to zero on the CPU (process-wide).

    Factorised or heavily pruned weights (e.g. HOOI factors computed in float64 and cast down) can
    produce denormal activations, which x86 CPUs process 10-100x slower: a HOS step on digits took
    220 s instead of 10 s. Values below ~1e-38 contribute nothing measurable to a CNN's output.
    """
    torch.set_flush_denormal(True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


MILESTONE_FRACTIONS = (0.25, 0.5, 0.75)


def milestone_epochs(epochs: float) -> list[int]:
    """Whole epochs after which ``multistep`` multiplies the lr by 0.1 (float milestones that land on an epoch)."""
    found = []
    for f in MILESTONE_FRACTIONS:
        m = f * epochs
        if m >= 1 and abs(m - round(m)) < 1e-9:
            found.append(int(round(m)))
    return found


def precision_policy(device: torch.device) -> str:
    """How ``train`` computes on ``device``: "fp32" on the CPU, "bf16" or "fp16" autocast on CUDA.

    Part of every cache key: a step computed under one policy never replays as another's result.
    """
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
            alpha: float, reduction: str = "batchmean") -> torch.Tensor:
    """α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y).

    ``reduction="mean"`` averages the KL over batch x classes as the paper's code does (a weaker
    soft term by a factor of the number of classes); ``batchmean`` is the textbook form.
    """
    if reduction not in ("batchmean", "mean"):
        raise ValueError(f"kd reduction must be 'batchmean' or 'mean', got {reduction!r}")
    kl = F.kl_div(F.log_softmax(student / temperature, 1), F.softmax(teacher / temperature, 1), reduction="sum")
    kl = kl / (student.numel() if reduction == "mean" else len(student))
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * F.cross_entropy(student, y)


def train(model: nn.Module, data: DeviceData, *, epochs: float, lr: float, batch_size: int,
          generator: torch.Generator | None = None, momentum: float = 0.9, weight_decay: float = 5e-4,
          nesterov: bool = False, schedule: str = "multistep", augment: Augment | None = None,
          teacher: nn.Module | None = None, kd_temperature: float = 4.0, kd_alpha: float = 0.9,
          kd_reduction: str = "batchmean", loss_fn: LossFn | None = None, extra_loss: ExtraLoss | None = None,
          after_step: Callable[[nn.Module], None] | None = None,
          on_epoch_end: Callable[[int, bool], bool | None] | None = None,
          val: DeviceData | None = None, select_best: bool = False,
          parameters: list | None = None, progress: bool = False, desc: str = "train") -> TrainResult:
    """Train ``model`` in place with SGD for ``epochs`` (fractional allowed) passes over ``data``.

    ``on_epoch_end(epoch, is_last)`` may return ``False`` to exclude that epoch from best-epoch
    selection (SFP only selects among epochs that ended with masks applied).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if schedule not in ("multistep", "constant"):
        raise ValueError(f"schedule must be 'multistep' or 'constant', got {schedule!r}")
    start = time.perf_counter()
    device = next(model.parameters()).device
    per_epoch = data.num_batches(batch_size)
    total = int(round(epochs * per_epoch))
    if total == 0:
        acc = accuracy(model, val.x, val.y) if val is not None else None
        return TrainResult(0, 0.0, time.perf_counter() - start, acc)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    else:
        fast_cpu_math()
    amp_dtype = torch.bfloat16 if precision_policy(device) == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    optimiser = torch.optim.SGD(parameters if parameters is not None else model.parameters(), lr=lr,
                                momentum=momentum, weight_decay=weight_decay, nesterov=nesterov and momentum > 0)
    milestones = {m * per_epoch for m in milestone_epochs(epochs)} if schedule == "multistep" else set()
    if teacher is not None:
        teacher.eval()
    # forward MACs per image, counted once per call: nothing changes the structure while training
    charging = cost.active()
    shape = tuple(data.x.shape[1:])
    macs = cost.forward_macs(model, shape) if charging else 0
    teacher_macs = cost.forward_macs(teacher, shape) if charging and teacher is not None else 0
    best_acc, best_state, history = None, None, []
    step = 0
    bar = tqdm(total=total, desc=desc, unit="batch", disable=None if progress else True, leave=False)
    epoch = 0
    while step < total:
        model.train()
        for x, y in data.batches(batch_size, generator=generator, shuffle=True, augment=augment,
                                 limit=total - step):
            if step in milestones:
                for group in optimiser.param_groups:
                    group["lr"] *= 0.1
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda):
                logits = model(x)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = kd_loss(logits.float(), t_logits.float(), y, kd_temperature, kd_alpha, kd_reduction)
                elif loss_fn is not None:
                    loss = loss_fn(logits.float(), y)
                else:
                    loss = F.cross_entropy(logits.float(), y)
                if extra_loss is not None:
                    loss = loss + extra_loss(model, x, y, logits)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            if after_step is not None:
                after_step(model)
            if charging:
                cost.charge(train_macs=(1 + cost.BACKWARD_FACTOR) * macs * len(x), train_batches=1)
                if teacher is not None:
                    cost.charge(infer_macs=teacher_macs * len(x), infer_batches=1)
            step += 1
            bar.update(1)
        epoch += 1
        last = step >= total
        candidate = on_epoch_end(epoch, last) if on_epoch_end is not None else None
        if val is not None and (select_best or last):
            acc = accuracy(model, val.x, val.y)
            history.append((epoch, acc))
            bar.set_postfix(val_acc=f"{acc:.2f}")
            if select_best and candidate is not False and (best_acc is None or acc > best_acc):
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
    bar.close()
    if select_best and best_state is not None:
        model.load_state_dict(best_state)
    elif val is not None:
        best_acc = history[-1][1]
    if cuda:
        model.to(memory_format=torch.contiguous_format)
    return TrainResult(step, step / per_epoch, time.perf_counter() - start, best_acc, history)
