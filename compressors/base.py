"""The Compressor protocol and the context every compression step receives.

A compressor turns (model, one strategy's settings, context) into a *physically smaller* model:
channels removed, layers factorised or a thinner network distilled — never a masked one, so that
params and FLOPs are counted on the real module. The context carries what all six methods need:
the task recipe, device-resident data, the original parameter count (HP2 is a fraction of it), the
step's input model as a teacher, a seeded generator, and a progress flag.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from automc_env.data import DeviceData
from automc_env.metrics import count_params
from automc_env.space import HYPERPARAMETERS
from automc_env.tasks import Task
from automc_env.training import TrainResult, train

MIN_KEEP = 0.1  # the paper code's floor on a step's keep ratio


@dataclass
class CompressionContext:
    task: Task
    train: DeviceData                 # search split on the device
    val: DeviceData                   # accuracy / checkpoint-selection split
    original_params: int              # P(M) of the uncompressed model: HP2 is a fraction of this
    gamma: float                      # the task's target PR (for relative-HP2 grids)
    removal: float                    # fraction of the ORIGINAL params this step should remove
    device: torch.device
    generator: torch.Generator        # all randomness of the step comes from here
    teacher: nn.Module | None = None  # the step's input model (frozen copy), for distillation
    original_arch: dict | None = None  # arch of the uncompressed model (LFB rebuilds from it)
    progress: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # method options (switches, parity flags)

    def keep_ratio(self, model: nn.Module) -> float:
        """Fraction of the CURRENT model's params to keep: max(1 − removal / r_prev, 0.1) (search_space.md §3)."""
        r_prev = count_params(model) / self.original_params
        return max(1.0 - self.removal / r_prev, MIN_KEEP)

    def epochs(self, multiplier: float) -> int:
        """``*n`` hyperparameters: int(n · E_pre) epochs."""
        return int(multiplier * self.task.pretrain_epochs)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, *self.task.input_shape, device=self.device)

    def fine_tune(self, model: nn.Module, epochs: float, lr: float | None = None, desc: str = "fine-tune",
                  **kwargs) -> TrainResult:
        """The shared fine-tuning stage: SGD on the train split, best val epoch kept (paper code)."""
        t = self.task
        kwargs.setdefault("select_best", True)
        kwargs.setdefault("momentum", t.momentum)
        kwargs.setdefault("weight_decay", t.weight_decay)
        return train(model, self.train, epochs=epochs, lr=t.finetune_lr if lr is None else lr,
                     batch_size=t.batch_size, generator=self.generator, augment=t.augment, val=self.val,
                     progress=self.progress, desc=desc, **kwargs)


@runtime_checkable
class Compressor(Protocol):
    name: ClassVar[str]               # "LMA", "LeGR", "NS", "SFP", "HOS", "LFB"
    terminal: ClassVar[bool]          # nothing may follow it in a scheme
    first_only: ClassVar[bool]        # may only be the first strategy of a scheme

    def compress(self, model: nn.Module, settings: Mapping[str, Any], ctx: CompressionContext) -> nn.Module:
        """Return the compressed model (may modify and return ``model``; the caller passes a copy)."""
        ...

    def effective_settings(self, settings: Mapping[str, Any], pretrain_epochs: int | None,
                           options: Mapping[str, Any]) -> dict[str, Any]:
        """The settings a step really uses (equal results for equal effective settings)."""
        ...


class BaseCompressor:
    """Defaults shared by the methods; subclasses set ``name`` and implement ``compress``."""

    name: ClassVar[str] = ""
    terminal: ClassVar[bool] = False
    first_only: ClassVar[bool] = False

    def effective_settings(self, settings: Mapping[str, Any], pretrain_epochs: int | None,
                           options: Mapping[str, Any]) -> dict[str, Any]:
        """What a step with ``settings`` really uses: two strategies with equal effective settings
        compute the same step, bit for bit (``StrategySpace.equivalent``).

        ``pretrain_epochs`` None: only what holds on every task. Default: the settings, with every
        epochs hyperparameter as the number of epochs it runs, int(v·E_pre). Methods add their own
        rules (a setting a zero-epoch stage never reads is None).
        """
        out = dict(settings)
        if pretrain_epochs is not None:
            for hp, value in settings.items():
                if HYPERPARAMETERS[hp].kind == "epochs":
                    out[hp] = int(float(value) * pretrain_epochs)
        return out

    def compress(self, model: nn.Module, settings: Mapping[str, Any], ctx: CompressionContext) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - abstract


_REGISTRY: dict[str, Compressor] = {}


def register(compressor: Compressor) -> Compressor:
    if not compressor.name:
        raise ValueError("a compressor needs a name")
    _REGISTRY[compressor.name] = compressor
    return compressor


def get_compressor(method: str) -> Compressor:
    if method not in _REGISTRY:
        raise ValueError(f"no compressor registered for method {method!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[method]


def available_methods() -> Sequence[str]:
    return tuple(_REGISTRY)


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free copy (the teacher of a distillation or reconstruction loss)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
