"""LMA (C1): distil the current model into a thinner student with Light Multi-segment Activations.

Per methods.md C1 (AutoMC code ``prune_C1.py``, ``models/activations.py``) and the LMA paper:

1. Teacher = the step's input model (``ctx.teacher``, a frozen copy), used as is.
2. Student = the same network, built from the teacher's own module structure so that any input
   works (pruned, factorised, already LMA): every activation site (``nn.ReLU`` and friends, or an
   existing :class:`LMAUnit`) gets a **fresh** LMA unit with HP3 (``seg``) bins, then every prunable
   channel group (``compressors.pruning.channel_groups``) is shrunk by the **same** fraction of its
   channels (to within one channel). That fraction is found by bisection on the exact analytic
   parameter count so that P(student) ≈ keep · P(teacher), ``keep = ctx.keep_ratio(model)``.
3. The student is re-initialised (paper code: trained from scratch; ``init="scratch"``, default)
   or keeps the teacher's surviving weights (``init="inherit"``: the channels with the largest
   L1 filter norm survive).
4. Distil ``int(HP1 · E_pre)`` epochs with ``loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) +
   (1 − α)·CE`` (HP4 = T, HP5 = α), SGD at a constant learning rate (the code's StepLR(150) never
   fires), best val epoch kept.

LMA unit (methods.md C1 step 4): a scalar running mean μ̄ / (unbiased) std σ̄ of the unit's whole
input (momentum 0.99). Training uses the batch μ, σ (no gradient through them), evaluation μ̄, σ̄. The
interval [μ − 3σ, μ + 3σ] is cut into ``seg`` equal bins (values outside use the edge bins) and
``y = (a0_b + δa_b)·x + δc_b`` with learnable per-bin δa, δc (init 0) and fixed base slopes
a0 = 0 for the lower ⌊seg/2⌋ bins, 1 for the rest: at initialisation a hinge at the mean.

Method options (``ctx.options``):

* ``init``: ``"scratch"`` (default, code parity) | ``"inherit"``.
* ``kd_reduction``: ``"batchmean"`` (default, textbook KD) | ``"mean"`` (code parity: the KL is
  averaged over batch x classes, a soft term weaker by the number of classes).
* ``lr``: distillation learning rate; default the task's ``finetune_lr`` (1e-3 on the paper tasks,
  which is the code's value).
* ``share``: one LMA unit (one parameter set, one pair of running statistics) for every site, as
  the code's VGG does; default ``False`` (one unit per site, as the code's ResNets).
* ``momentum`` (0.99) and ``debias`` (``True``; ``False`` = code parity, see Deviations).

Parameter target: the student's parameter count (LMA bins included) is the uniform width closest
to keep · P(teacher). Measured: within 0.5 percentage points of the requested PR on the synthetic
tasks (tests assert ≤ 2), within 0.05 points on ResNet-56 / VGG-16. When even one channel per group is
more than the target (model already tiny) the smallest uniform student is returned; nothing raises.

Deviations:

* **Student width** (fixed): the code rebuilds the architecture with every entry of the teacher's
  channel config ``cfg`` set to ``int(c·√keep)``. That overshoots the target (41.74 % for 40 % in
  the paper; 41.8 % vs 40.0 % here on ResNet-56 at keep 0.6) and needs a model family that
  carries a ``cfg`` (no factorised inputs). Here the same fraction is removed from every channel
  group of the actual input, sized by bisection on the exact parameter count.
* **Activation sites** (generalised): every ``nn.ReLU`` / ``ReLU6`` / ``LeakyReLU`` / ``ELU`` /
  ``GELU`` / ``SiLU`` module and every existing LMA unit is replaced; activations called
  functionally inside a ``forward`` cannot be found (the automc models use modules everywhere).
* **Running statistics in eval mode** (fixed bug): the code also updates μ̄, σ̄ on every evaluation
  forward pass (and uses the updated values); here they are only updated in training mode.
* **Bias-corrected running statistics** (fixed, option ``debias``): the code starts μ̄, σ̄ at 0 and
  uses them raw, so after t training batches they are (1 − 0.99^t) of the true values — harmless
  after the paper's hundreds of batches, but a broken eval-mode unit after the few dozen of a CPU
  task. Eval uses μ̄ / (1 − 0.99^t) (Adam-style correction); ``debias=False`` restores the code.
* **Shared unit in VGG** (optional): off by default, option ``share=True`` reproduces it.
* **KL reduction** (parity option): ``batchmean`` by default, ``kd_reduction="mean"`` for the code.
* **Learning rate** (faithful on the paper tasks): the code's fixed 1e-3 is the paper tasks'
  ``finetune_lr``; the CPU tasks use theirs (0.01 / 0.005); option ``lr`` overrides.
* Implementation detail, no effect on the computation: δa and δc are stored as the weights of two
  ``nn.Embedding(seg, 1)`` tables that are indexed, never called, so that torch-pruning (which
  NS / LeGR / SFP use on an LMA student) does not trace them as channel-carrying tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from automc_env.metrics import count_params
from automc_env.models import ACTIVATIONS
from automc_env.models import reinitialise
from compressors.base import BaseCompressor, CompressionContext, frozen_copy, register
from compressors.pruning import (ChannelGroup, ParameterModel, PruningPlan, apply_plan, bracket_target,
                                 channel_groups, filter_norm)

DEFAULT_MOMENTUM = 0.99   # the code's ``mu``
_MIN_BIN_WIDTH = 1e-12    # a unit that has seen no data (σ̄ = 0) must still give finite bin indices


class LMAUnit(nn.Module):
    """Light Multi-segment Activation: a piecewise-linear unit whose bins follow the input statistics.

    ``y = (a0_b + δa_b)·x + δc_b`` where ``b`` is the bin of ``x`` among ``num_bins`` equal bins
    covering [μ − 3σ, μ + 3σ] (clamped at both ends). Training mode uses the batch statistics and
    updates the running ones; eval mode only reads the running ones.
    """

    def __init__(self, num_bins: int = 8, momentum: float = DEFAULT_MOMENTUM, debias: bool = True):
        super().__init__()
        if num_bins < 1:
            raise ValueError(f"an LMA unit needs at least one bin, got {num_bins}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_bins = int(num_bins)
        self.momentum = float(momentum)
        self.debias = bool(debias)
        # Per-bin tables δa (the code's alphas) and δc (betas). They are held by embedding modules
        # that are indexed, never called: torch-pruning traces a free parameter as a tensor with a
        # channel dimension (and then mis-sizes reshapes and slices bins when channels are pruned),
        # but leaves the weights of layer types it knows alone unless the layer runs.
        self.delta_a = nn.Embedding(self.num_bins, 1)
        self.delta_c = nn.Embedding(self.num_bins, 1)
        nn.init.zeros_(self.delta_a.weight)
        nn.init.zeros_(self.delta_c.weight)
        self.register_buffer("base_slope", (torch.arange(self.num_bins) >= self.num_bins // 2).float())
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("running_std", torch.zeros(()))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, momentum={self.momentum}, debias={self.debias}"

    @torch.no_grad()
    def reinitialise(self) -> None:
        """Back to the initial hinge with no statistics (``models.reinitialise`` calls this)."""
        self.delta_a.weight.zero_()
        self.delta_c.weight.zero_()
        self.running_mean.zero_()
        self.running_std.zero_()
        self.num_batches_tracked.zero_()

    def slopes(self) -> torch.Tensor:
        """Per-bin slopes a0 + δa (a vector of ``num_bins``)."""
        return self.base_slope + self.delta_a.weight[:, 0]

    def offsets(self) -> torch.Tensor:
        """Per-bin offsets δc."""
        return self.delta_c.weight[:, 0]

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) used for binning: the batch's in training (running stats updated), the running ones in eval."""
        if self.training:
            with torch.no_grad():
                flat = x.detach().float()
                mean = flat.mean()
                std = flat.std(correction=1 if flat.numel() > 1 else 0)  # the code's unbiased x.std()
                m = self.momentum
                self.running_mean.mul_(m).add_(mean, alpha=1.0 - m)
                self.running_std.mul_(m).add_(std, alpha=1.0 - m)
                self.num_batches_tracked.add_(1)
            return mean, std
        mean, std = self.running_mean, self.running_std
        if self.debias:
            # EMA started at 0: divide by the weight the data has received, 1 − m^t (t ≥ 1; at t = 0
            # the statistics are still 0 and stay 0).
            correction = 1.0 - self.momentum ** self.num_batches_tracked.clamp_min(1).to(mean.dtype)
            mean, std = mean / correction, std / correction
        return mean, std

    def bins(self, x: torch.Tensor) -> torch.Tensor:
        """Bin index of every element of ``x``: clamp(floor((x − μ + 3σ)/w), 0, seg − 1), w = 6σ/seg.

        A long tensor of the same shape, no gradient. Clamping before the integer cast makes the
        truncating cast a floor.
        """
        with torch.no_grad():
            mean, std = self.statistics(x)
            width = (6.0 * std / self.num_bins).clamp_min(_MIN_BIN_WIDTH)
            position = (x.detach().float() - (mean - 3.0 * std)) / width
            return position.clamp_(0, self.num_bins - 1).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bins(x)
        # torch.take: a flat gather into the per-bin tables, no loop over bins
        return torch.take(self.slopes(), b) * x + torch.take(self.offsets(), b)


def lma_activation(num_bins: int = 8, momentum: float = DEFAULT_MOMENTUM, debias: bool = True,
                   **_: Any) -> LMAUnit:
    """``ACTIVATIONS["lma"]``: lets ``build_model`` create LMA networks (``activation_options``)."""
    return LMAUnit(num_bins, momentum, debias)


ACTIVATIONS["lma"] = lma_activation

# Activation modules an LMA student replaces.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU,
                                                 LMAUnit)


def activation_sites(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute name) of every activation module, one entry per site (shared modules repeat)."""
    return [(parent, name) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, ACTIVATION_TYPES)]


def replace_activations(model: nn.Module, num_bins: int, *, share: bool = False,
                        momentum: float = DEFAULT_MOMENTUM, debias: bool = True) -> list[LMAUnit]:
    """Put a fresh LMA unit at every activation site (one shared unit if ``share``); returns the new units."""
    sites = activation_sites(model)
    device = next(model.parameters()).device
    units: list[LMAUnit] = []
    for parent, name in sites:
        if not units or not share:
            units.append(LMAUnit(num_bins, momentum, debias).to(device))
        setattr(parent, name, units[-1])
    return units


# ---- the thinner student ------------------------------------------------------------------------

def uniform_widths(sizes: Sequence[int], scale: float) -> list[int]:
    """Channels kept per group when every group keeps the fraction ``scale`` (at least one each)."""
    return [min(n, max(1, round(scale * n))) for n in sizes]


def plan_uniform_shrink(model: nn.Module, groups: Sequence[ChannelGroup], target_params: float,
                        scores: Sequence[torch.Tensor] | None = None, iterations: int = 60) -> PruningPlan:
    """Remove the same fraction of every group's channels so that the parameter count ≈ ``target_params``.

    The count is non-decreasing in the kept fraction, so bisection brackets the target between two
    neighbouring uniform widths. Those differ by one channel in some groups (in a ResNet, every
    group of the same size at once: a coarse step); the last step is therefore taken group by group,
    in network order, and the width closest to the target wins — uniform to within one channel.
    In each group the channels with the lowest ``scores`` go (ties: lower index first); without
    scores, the last channels go.
    """
    counter = ParameterModel(model, groups)
    sizes = [g.size for g in groups]
    before = counter.count(sizes)
    lo, hi = bracket_target(lambda t: counter.count(uniform_widths(sizes, t)), target_params, 0.0, 1.0,
                            iterations=iterations)

    def error(kept: Sequence[int]) -> float:
        return abs(counter.count(kept) - target_params)

    narrow, wide = uniform_widths(sizes, lo), uniform_widths(sizes, hi)
    best = min(narrow, wide, key=error)
    kept = list(narrow)
    for gi in range(len(sizes)):
        if counter.count(kept) >= target_params:
            break
        if wide[gi] != kept[gi]:
            kept[gi] = wide[gi]
            if error(kept) < error(best):
                best = list(kept)
    remove = []
    for gi, (n, k) in enumerate(zip(sizes, best)):
        if scores is None:
            idxs = torch.arange(k, n)
        else:
            order = torch.argsort(torch.as_tensor(scores[gi], dtype=torch.float64).cpu(), stable=True)
            idxs = order[: n - k].sort().values
        remove.append(idxs.long())
    return PruningPlan(remove, before, counter.count(best))


def build_student(model: nn.Module, keep: float, example_input: torch.Tensor, num_bins: int, *,
                  init: str = "scratch", generator: torch.Generator | None = None, share: bool = False,
                  momentum: float = DEFAULT_MOMENTUM, debias: bool = True) -> nn.Module:
    """Turn ``model`` (in place) into the LMA student with ≈ keep · P(model) parameters."""
    if init not in ("scratch", "inherit"):
        raise ValueError(f"LMA option init must be 'scratch' or 'inherit', got {init!r}")
    target = keep * count_params(model)
    # LMA units first: their bins count towards the target and channel pruning must see them.
    replace_activations(model, num_bins, share=share, momentum=momentum, debias=debias)
    _, groups = channel_groups(model, example_input)
    scores = [filter_norm(g, p=1) for g in groups]  # inherit: keep the largest-L1 filters
    apply_plan(groups, plan_uniform_shrink(model, groups, target, scores))
    if init == "scratch":
        reinitialise(model, generator)
    if isinstance(getattr(model, "arch", None), dict):
        model.arch = {**model.arch, "activation": "lma",
                      "activation_options": {"num_bins": num_bins, "momentum": momentum, "debias": debias}}
    return model


class LightMultiSegmentActivation(BaseCompressor):
    name = "LMA"

    def effective_settings(self, settings, pretrain_epochs, options):
        """A zero-epoch distillation never reads T and alpha."""
        out = super().effective_settings(settings, pretrain_epochs, options)
        if out["ft"] == 0 and pretrain_epochs is not None:
            out["T"] = out["alpha"] = None
        return out

    def compress(self, model: nn.Module, settings: Mapping[str, Any], ctx: CompressionContext) -> nn.Module:
        opts = ctx.options
        teacher = ctx.teacher if ctx.teacher is not None else frozen_copy(model)
        build_student(model, ctx.keep_ratio(model), ctx.example_input(), int(settings["seg"]),
                      init=str(opts.get("init", "scratch")), generator=ctx.generator,
                      share=bool(opts.get("share", False)),
                      momentum=float(opts.get("momentum", DEFAULT_MOMENTUM)), debias=bool(opts.get("debias", True)))
        lr = opts.get("lr")
        ctx.fine_tune(model, ctx.epochs(settings["ft"]), lr=None if lr is None else float(lr),
                      desc="LMA distillation", teacher=teacher, kd_temperature=float(settings["T"]),
                      kd_alpha=float(settings["alpha"]), kd_reduction=str(opts.get("kd_reduction", "batchmean")),
                      schedule="constant")
        return model


register(LightMultiSegmentActivation())
