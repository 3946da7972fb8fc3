"""SFP (C4): Soft Filter Pruning — zero the lowest-L2 filters during training, let them recover, then remove them.

Per methods.md C4, the SFP paper (He et al., IJCAI 2018) and the AutoMC code (``prune_C4.py``):

1. ``keep = max(1 − HP2/r_prev, 0.1)`` of the current model's parameters (search_space.md §3).
   Every prunable channel group (compressors.pruning: a conv's filters with their BN and consumers;
   a ResNet's residual stream as one group; the inner channels of factorised convs) gets a
   per-group count of filters to mask. The counts follow one *uniform* ratio for all groups, sized
   against the parameter target: channels are removed in water-filling order — next from the group
   whose removed fraction stays lowest — and the prefix that lands closest to ``keep`` x the
   current parameter count (exact analytic count, ``pruning.plan_pruning``) is taken. Which
   filters fill those counts is decided *locally*, per group, by the filter L2 norm
   (``pruning.filter_norm(p=2)``): SFP's per-layer criterion, not a global ranking.
2. Soft-pruning training for ``int(HP9 · E_pre)`` epochs (``training.train``): SGD, Nesterov,
   momentum 0.9, weight decay 1e-4, constant lr (the code's StepLR(150) never fires in these runs).
   After epoch e (0-based, as in the code) the masks are re-selected from the current norms and
   applied when ``e % HP10 == 0`` or e is the last epoch. Masked filters keep receiving updates
   and can recover; the next mask epoch may choose different filters.
3. Only epochs that ended with masks applied are candidates for best-epoch selection (the val
   accuracy is measured after masking); the best masked checkpoint is restored.
4. The masked channels are removed physically (``pruning.apply_plan``): a smaller dense model.
5. A fixed final fine-tune (the code's ``max(int(E_pre/40), 3)`` epochs; same optimiser and lr),
   best val epoch kept.

What "mask" zeroes (option ``mask``):

* ``"channel"`` (default, the AutoMC code): every weight slice the hard prune will remove — the
  producing filters (and conv biases), the BN γ/β of the channel, and the consumers' input slices
  (next convs, shortcut convs, classifier columns). A masked model then computes exactly what the
  pruned model computes (for any activation, even one with f(0) ≠ 0), so the accuracy that picks
  the best epoch is the pruned model's accuracy. With γ = 0 and zero consumer slices a masked
  channel gets no gradient by itself; it is revived only by SGD momentum (the Parameter objects and
  their momentum buffers are kept, as in the code). Measured on the synthetic ResNet-8: masked
  filters come back with norm ~0.02 (others ~1) and the next mask step re-selects the same
  channels, i.e. in code parity the "soft" masks behave almost like a hard prune after epoch 1.
* ``"filter"`` (the SFP paper): only the producing filters (and conv biases). The BN still
  normalises the zeroed channel, which gives the zeroed filters large gradients: real recovery
  (same measurement: 17-29 of 38 masked channels change between mask steps), but hard removal then
  drops the BN's β contribution (the final fine-tune absorbs it).

Options (``ctx.options``): ``lr`` (default 0.025, the code's value), ``weight_decay`` (1e-4),
``final_finetune_epochs`` (see deviations), ``mask`` (``"channel"`` | ``"filter"``), ``sizing``
(``"params"`` | ``"sqrt"``).

Tolerance: with ``sizing="params"`` the removed parameters are the one-channel-granular prefix
closest to the target, within 1 percentage point of PR on the synthetic tasks (ResNet-8,
vgg-small), except where the target is unreachable (every group down to one channel) — then the
most that can be removed is removed.

Deviations:

* Per-group counts are sized to the parameter target (one uniform ratio, water-filled one channel
  at a time) instead of the code's fixed per-conv rate ``int(n·(1 − √keep))``, which misses the
  target (the stem, BN and classifier are not scaled; the residual stream is a shared group).
  Code parity: option ``sizing="sqrt"`` masks ``int(n·(1 − √keep))`` filters in every group.
* Every channel group is prunable, including the residual stream and the stem (the code only
  prunes the block convs of a ResNet); groups come from the dependency graph, so any input
  architecture (pruned, factorised, custom activations) works.
* lr is the code's fixed 0.025 (methods.md C4) on every task, used for both stages (the code's
  final fine-tune uses it too).
* Final fine-tune: ``max(int(E_pre/40), 3)`` epochs for E_pre ≥ 50 (code); below that the 3-epoch
  floor is scaled by E_pre/50 (fractional epochs, e.g. 0.24 epoch = 2 batches on the synthetic
  tasks, 1.8 epochs on digits) so that a tiny task does not spend most of its budget on it.
  Option ``final_finetune_epochs`` overrides it. Its optimiser is the soft stage's (Nesterov,
  wd 1e-4, constant lr), with best-val-epoch selection.
* ``int(HP9 · E_pre) = 0`` (short grids on tiny tasks): no soft training; masks are selected once
  on the input weights and removed (plain L2-norm filter pruning + the final fine-tune).
* The masks are not applied before the first epoch (the code does not either; the SFP paper does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compressors.base import BaseCompressor, CompressionContext, register
from compressors.pruning import (ChannelGroup, ParameterModel, PruningPlan, apply_plan, channel_groups,
                                 filter_norm, plan_pruning)

MASK_MODES = ("channel", "filter")
SIZING_MODES = ("params", "sqrt")
DEFAULT_WEIGHT_DECAY = 1e-4  # the code's soft-stage SGD
DEFAULT_LR = 0.025           # the code's soft-stage and final fine-tune lr (prune_C4.py), on every task


def mask_epochs(epochs: int, every: int) -> list[int]:
    """The 1-based epochs after which masks are applied: the code's 0-based ``e % every == 0 or last``."""
    if every < 1:
        raise ValueError(f"mask update interval (HP10) must be >= 1, got {every}")
    return [e for e in range(1, epochs + 1) if (e - 1) % every == 0 or e == epochs]


def final_finetune_epochs(pretrain_epochs: int) -> float:
    """The code's fixed ``max(int(E_pre/40), 3)``, with the 3-epoch floor scaled by E_pre/50 below E_pre = 50."""
    return float(max(pretrain_epochs // 40, min(3.0, 3.0 * pretrain_epochs / 50)))


def group_counts(model: nn.Module, groups: Sequence[ChannelGroup], keep: float,
                 sizing: str = "params") -> tuple[list[int], PruningPlan]:
    """How many filters each group masks, and the resulting parameter counts (before, after).

    ``params``: one uniform ratio across groups, water-filled one channel at a time and sized to
    ``keep`` x params by the analytic count. The score of a group's j-th channel is the fraction of
    the group removed once it goes, (j+1)/n, so ``plan_pruning``'s global order *is* the
    water-filling order; only the counts are used, the channels themselves are chosen by norm.
    ``sqrt``: the code's ``int(n·(1 − √keep))`` per group.
    """
    if sizing == "params":
        ratios = [torch.arange(1, g.size + 1, dtype=torch.float64) / g.size for g in groups]
        plan = plan_pruning(model, groups, ratios, keep, max_layer_ratio=1.0)
        return [len(r) for r in plan.remove], plan
    if sizing == "sqrt":
        rate = 1.0 - math.sqrt(keep)
        counts = [min(int(g.size * rate), g.size - 1) for g in groups]
        counter = ParameterModel(model, groups)
        sizes = [g.size for g in groups]
        before = counter.count(sizes)
        after = counter.count([n - k for n, k in zip(sizes, counts)])
        return counts, PruningPlan([torch.arange(k) for k in counts], before, after)
    raise ValueError(f"sizing must be one of {SIZING_MODES}, got {sizing!r}")


def lowest_norm_filters(group: ChannelGroup, count: int) -> torch.Tensor:
    """The ``count`` channels of ``group`` with the smallest filter L2 norm (SFP's per-layer criterion).

    Ties (e.g. the all-zero filters of a masked checkpoint) are broken by the BN affine energy
    γ² + β², then by index, so that on a masked checkpoint exactly its masked channels come first.
    """
    if count <= 0:
        return torch.zeros(0, dtype=torch.long)
    norms = filter_norm(group, p=2).tolist()
    bn_energy = torch.zeros(group.size)
    for bn in group.batchnorms():
        if bn.affine:
            bn_energy += (bn.weight.detach().float().pow(2) + bn.bias.detach().float().pow(2)).cpu()
    energy = bn_energy.tolist()
    order = sorted(range(group.size), key=lambda i: (norms[i], energy[i], i))
    return torch.tensor(sorted(order[:count]), dtype=torch.long)


@torch.no_grad()
def zero_channels(group: ChannelGroup, channels: torch.Tensor, mode: str = "channel") -> None:
    """Zero ``channels`` of ``group`` in place: every slice the hard prune removes, or only the filters.

    The slices come from torch-pruning's pruning group for these channels (the same index mapping
    ``apply_plan`` uses), so "masked" and "removed" always refer to the same weights.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask must be one of {MASK_MODES}, got {mode!r}")
    if len(channels) == 0:
        return
    graph = group.group._DG
    root = group.group[0].dep
    for dep, idxs in graph.get_pruning_group(root.target.module, root.handler, channels.tolist()):
        module = dep.target.module
        idx = torch.tensor([int(getattr(i, "idx", i)) for i in idxs], dtype=torch.long)
        if len(idx) == 0:
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            idx = idx.to(module.weight.device)
            if out:
                module.weight[idx] = 0
                if module.bias is not None:
                    module.bias[idx] = 0
            elif mode == "channel" and getattr(module, "groups", 1) == 1:
                module.weight[:, idx] = 0
        elif isinstance(module, nn.BatchNorm2d) and mode == "channel" and module.affine:
            idx = idx.to(module.weight.device)
            module.weight[idx] = 0
            module.bias[idx] = 0


def apply_masks(groups: Sequence[ChannelGroup], counts: Sequence[int], mode: str = "channel") -> list[torch.Tensor]:
    """One SFP mask step: per group, re-select the lowest-norm filters and zero them. Returns the selection."""
    selected = [lowest_norm_filters(g, k) for g, k in zip(groups, counts)]
    for g, channels in zip(groups, selected):
        zero_channels(g, channels, mode)
    return selected


class SoftFilterPruning(BaseCompressor):
    name = "SFP"

    def effective_settings(self, settings, pretrain_epochs, options):
        """HP10 matters only through the epochs it masks after (e.g. every 3 and 5 over 3 epochs: {1, 3})."""
        out = super().effective_settings(settings, pretrain_epochs, options)
        if pretrain_epochs is not None:
            out["every"] = tuple(mask_epochs(out["soft"], int(settings["every"])))
        return out

    def compress(self, model: nn.Module, settings: Mapping[str, Any], ctx: CompressionContext) -> nn.Module:
        opts = ctx.options
        every = int(settings["every"])
        lr = float(opts.get("lr", DEFAULT_LR))
        weight_decay = float(opts.get("weight_decay", DEFAULT_WEIGHT_DECAY))
        mode = str(opts.get("mask", "channel"))
        if mode not in MASK_MODES:
            raise ValueError(f"SFP option mask must be one of {MASK_MODES}, got {mode!r}")
        optimiser = dict(lr=lr, weight_decay=weight_decay, nesterov=True, schedule="constant")

        keep = ctx.keep_ratio(model)
        _, groups = channel_groups(model, ctx.example_input())
        counts, sized = group_counts(model, groups, keep, str(opts.get("sizing", "params")))

        epochs = ctx.epochs(settings["soft"])
        schedule = set(mask_epochs(epochs, every))
        if epochs > 0:
            def on_epoch_end(epoch: int, last: bool) -> bool:
                if epoch in schedule or last:
                    apply_masks(groups, counts, mode)
                    return True
                return False  # unmasked epochs are not candidates for the best checkpoint

            ctx.fine_tune(model, epochs, desc="SFP soft pruning", on_epoch_end=on_epoch_end, **optimiser)
        else:
            apply_masks(groups, counts, mode)

        # The restored best checkpoint is a masked one: its zeroed channels are its lowest-norm ones.
        remove = [lowest_norm_filters(g, k) for g, k in zip(groups, counts)]
        apply_plan(groups, PruningPlan(remove, sized.params_before, sized.params_after))

        ft = float(opts.get("final_finetune_epochs", final_finetune_epochs(ctx.task.pretrain_epochs)))
        ctx.fine_tune(model, ft, desc="SFP fine-tune", **optimiser)
        return model


register(SoftFilterPruning())
