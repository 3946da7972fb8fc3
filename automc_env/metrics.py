"""The one place that counts parameters, FLOPs and accuracy.

Conventions (used everywhere in automc, stated once):

* **params**: every trainable and non-trainable ``nn.Parameter`` element (convs, linears, BN affine
  weights), i.e. ``sum(p.numel())``; BN running statistics are buffers and are not counted.
* **flops**: multiply–accumulate operations (**MACs**) of convolutions and matrix products for one
  input image, counted by ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2 FLOPs per
  MAC; we halve it). Element-wise ops (BN, activations, pooling, additions) are not counted. On
  32x32 inputs: ResNet-56 with the paper's projection shortcuts = 132.3 M (the classic
  zero-padding ResNet-56 is 125.5 M); ResNet-20 = 42.6 M; VGG-16-BN = 313.2 M. The paper's tables
  report ptflops FLOPs = 2 x MACs plus element-wise ops (ResNet-56: 268.9 M).
* **accuracy**: top-1 in percent, sample-weighted over the whole split (the paper's code averages
  per-batch accuracies; the difference is negligible and this one is exact).

The evaluation passes here (``accuracy``, ``cross_entropy``) charge their forward work to the
step's cost ledger (:mod:`automc_env.cost`); outside a ledger the charge is a no-op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from automc_env import cost
from automc_env.data import DeviceData


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """MACs of one forward pass on a single image of shape (C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in percent over (x, y), in eval mode, sample-weighted."""
    cost.charge_inference(model, len(y), tuple(x.shape[1:]), batches=math.ceil(len(y) / batch_size))
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size])
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / max(1, len(y))


@torch.no_grad()
def cross_entropy(model: nn.Module, data: DeviceData, batch_size: int = 1024) -> float:
    """Sample-weighted mean CE of ``model`` (eval mode) on ``data`` (LeGR's fitness)."""
    cost.charge_inference(model, len(data), tuple(data.x.shape[1:]), batches=math.ceil(len(data) / batch_size))
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for i in range(0, len(data), batch_size):
            logits = model(data.x[i:i + batch_size]).float()
            total += float(F.cross_entropy(logits, data.y[i:i + batch_size], reduction="sum"))
    finally:
        model.train(was_training)
    return total / max(1, len(data))


def rates(before: float, after: float) -> float:
    """Reduction rate 1 − after/before (PR for params, FR for FLOPs)."""
    return 1.0 - after / before if before else 0.0


def accuracy_rate(acc_before: float, acc_after: float) -> float:
    """AR = (A_after − A_before) / A_before, the paper's relative accuracy change (> −1)."""
    return (acc_after - acc_before) / acc_before if acc_before else 0.0
