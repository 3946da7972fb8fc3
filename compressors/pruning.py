"""Dependency-aware physical channel removal, shared by every pruning method (NS, LeGR, SFP, HOS).

A method supplies only its *criterion*: a score per output channel of every prunable channel group
(higher = more important). This module does the rest, the same way for every method:

1. torch-pruning's ``DependencyGraph`` finds the channel groups — sets of layers whose channels must
   be removed together (a conv's filters, the BN after it, the next conv's input slices; in a
   ResNet, a block's output conv, its projection shortcut and every consumer of the residual stream).
   The classifier's outputs are never pruned.
2. A **global** ranking of all channels by score, with a per-layer cap (HP6: no group loses more than
   ``floor(cap·n)`` channels, and every group keeps at least one).
3. The number of channels to remove is chosen so that the *parameter* count of the pruned model is
   as close as possible to ``keep`` x the current count (HP2 is a parameter target, not a channel
   ratio). The parameter count of every candidate is computed analytically from the kept channel
   counts (exact for conv / BN / linear layers), so the search costs microseconds, not rebuilds.
4. torch-pruning removes the selected channels physically: the result is a smaller dense model.

Works on factorised models too (the convs of a Tucker-2 or filter-basis layer form groups like any
other conv), so pruning can follow HOS or LFB in a scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from automc_env.models import classifier

ScoresFn = Callable[[Sequence["ChannelGroup"]], Sequence[torch.Tensor]]
_CHANNEL_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


@dataclass
class ChannelGroup:
    """One set of coupled channels: ``size`` channels that are kept or removed together."""

    group: tp.dependency.Group
    size: int

    def modules(self, kind: type, direction: str = "any") -> list[nn.Module]:
        """Layers of ``kind`` in the group, optionally only those whose ``out`` or ``in`` dim is pruned."""
        found: list[nn.Module] = []
        for dep, _ in self.group:
            module = dep.target.module
            if not isinstance(module, kind) or module in found:
                continue
            if direction == "out" and not _is_out(dep.handler):
                continue
            if direction == "in" and not _is_in(dep.handler):
                continue
            found.append(module)
        return found

    def producers(self) -> list[nn.Conv2d]:
        """Convs whose *filters* are these channels (their output channels)."""
        return [m for m in self.modules(nn.Conv2d, "out")]

    def batchnorms(self) -> list[nn.BatchNorm2d]:
        return self.modules(nn.BatchNorm2d)


def _is_out(handler) -> bool:
    return handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
                       tp.prune_batchnorm_out_channels)


def _is_in(handler) -> bool:
    return handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels,
                       tp.prune_batchnorm_in_channels)


def channel_groups(model: nn.Module, example_inputs: torch.Tensor,
                   ignored_layers: Sequence[nn.Module] = ()) -> tuple[tp.DependencyGraph, list[ChannelGroup]]:
    """The dependency graph and the prunable channel groups (classifier outputs excluded)."""
    # Layers that declare ``unprunable = True`` (custom factorised layers whose channels cannot be
    # sliced independently) keep their channel counts; everything around them still prunes.
    frozen = [m for m in model.modules() if getattr(m, "unprunable", False)]
    frozen_parts = {id(sub) for m in frozen for sub in m.modules()}
    ignored = [classifier(model), *ignored_layers, *frozen]
    # Parameters that custom modules (e.g. LMA activations) own directly are not channels: keep
    # torch-pruning from guessing a channel dimension for them.
    loose = [p for m in model.modules() if not isinstance(m, _CHANNEL_LAYERS) for p in m.parameters(recurse=False)]
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, ignored_params=loose,
                                                  verbose=False)
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0].dep.target.module
        handler = group[0].dep.handler
        size = graph.get_out_channels(root) if graph.is_out_channel_pruning_fn(handler) else graph.get_in_channels(root)
        if any(id(dep.target.module) in frozen_parts for dep, _ in group):
            continue  # would change an unprunable layer's input or output channels
        if size and size > 1:
            groups.append(ChannelGroup(group, int(size)))
    return graph, groups


class ParameterModel:
    """Exact parameter count of the model as a function of each group's kept channel count."""

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup]):
        self.base = sum(p.numel() for p in model.parameters())
        in_group: dict[nn.Module, int] = {}
        out_group: dict[nn.Module, int] = {}
        for gi, g in enumerate(groups):
            for dep, _ in g.group:
                module = dep.target.module
                if isinstance(module, nn.BatchNorm2d) or _is_out(dep.handler):
                    out_group[module] = gi
                elif _is_in(dep.handler):
                    in_group[module] = gi
        self.terms = []  # (module, g_in, g_out, in, out)
        for module in set(in_group) | set(out_group):
            c_in, c_out = _dims(module)
            self.terms.append((module, in_group.get(module), out_group.get(module), c_in, c_out))

    def count(self, kept: Sequence[int]) -> int:
        total = self.base
        for module, g_in, g_out, c_in, c_out in self.terms:
            new_in = kept[g_in] if g_in is not None else c_in
            new_out = kept[g_out] if g_out is not None else c_out
            total += _params(module, new_in, new_out) - _params(module, c_in, c_out)
        return total


def _dims(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.BatchNorm2d):
        return module.num_features, module.num_features
    return 0, 0


def _params(module: nn.Module, c_in: int, c_out: int) -> int:
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return c_in // module.groups * c_out * k + (c_out if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        return c_in * c_out + (c_out if module.bias is not None else 0)
    if isinstance(module, nn.BatchNorm2d):
        return 2 * c_out if module.affine else 0
    return 0


@dataclass
class PruningPlan:
    """Which channels of which group go, and what that does to the parameter count."""

    remove: list[torch.Tensor]  # per group: indices to remove
    params_before: int
    params_after: int

    @property
    def keep_ratio(self) -> float:
        return self.params_after / self.params_before


def plan_pruning(model: nn.Module, groups: Sequence[ChannelGroup], scores: Sequence[torch.Tensor],
                 keep: float, max_layer_ratio: float = 1.0) -> PruningPlan:
    """Global ranking under a per-group cap, sized so that params_after ≈ keep · params_before.

    ``scores[i]`` has one entry per channel of ``groups[i]``; lower scores are removed first; ties
    are broken by (group, channel) order so the plan is deterministic.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep}")
    if not 0.0 <= max_layer_ratio <= 1.0:
        raise ValueError(f"per-layer maximum pruning ratio must be in [0, 1], got {max_layer_ratio}")
    counter = ParameterModel(model, groups)
    sizes = [g.size for g in groups]
    caps = [min(int(max_layer_ratio * n), n - 1) for n in sizes]
    flat_scores, flat_group, flat_idx = [], [], []
    for gi, s in enumerate(scores):
        s = torch.as_tensor(s, dtype=torch.float64).detach().cpu().flatten()
        if len(s) != sizes[gi]:
            raise ValueError(f"group {gi} has {sizes[gi]} channels but {len(s)} scores")
        flat_scores.append(s)
        flat_group.append(torch.full((len(s),), gi))
        flat_idx.append(torch.arange(len(s)))
    if not groups:
        p = counter.count([])
        return PruningPlan([], p, p)
    all_scores = torch.cat(flat_scores)
    order = sorted(range(len(all_scores)), key=lambda i: (float(all_scores[i]), i))
    group_of = torch.cat(flat_group).tolist()
    idx_of = torch.cat(flat_idx).tolist()
    # The removal order under the caps: walk channels from least to most important, skip capped groups.
    removal_order: list[int] = []
    taken = [0] * len(groups)
    for i in order:
        g = group_of[i]
        if taken[g] < caps[g]:
            taken[g] += 1
            removal_order.append(i)

    def kept_after(k: int) -> list[int]:
        kept = list(sizes)
        for i in removal_order[:k]:
            kept[group_of[i]] -= 1
        return kept

    before = counter.count(sizes)
    target = keep * before
    best = int(closest_to_target(lambda k: counter.count(kept_after(int(k))), target, 0, len(removal_order),
                                 integer=True))
    remove: list[list[int]] = [[] for _ in groups]
    for i in removal_order[:best]:
        remove[group_of[i]].append(idx_of[i])
    return PruningPlan([torch.tensor(sorted(r), dtype=torch.long) for r in remove], before,
                       counter.count(kept_after(best)))


def apply_plan(groups: Sequence[ChannelGroup], plan: PruningPlan) -> None:
    """Physically remove the planned channels (in place)."""
    for g, idxs in zip(groups, plan.remove):
        if len(idxs):
            root_dep = g.group[0].dep
            g.group._DG.get_pruning_group(root_dep.target.module, root_dep.handler, idxs.tolist()).prune()


def prune_to_keep(model: nn.Module, example_inputs: torch.Tensor, scores_fn: ScoresFn, keep: float,
                  max_layer_ratio: float = 1.0) -> PruningPlan:
    """Score every channel group with ``scores_fn(groups)``, plan globally, and prune ``model`` in place."""
    _, groups = channel_groups(model, example_inputs)
    plan = plan_pruning(model, groups, scores_fn(groups), keep, max_layer_ratio)
    apply_plan(groups, plan)
    return plan


# ---- criteria shared by several methods ----------------------------------------------------------

_BN_SCALE = tp.importance.BNScaleImportance(group_reduction="mean", normalizer=None)


def producer_weights(group: ChannelGroup) -> list[torch.Tensor]:
    """(channels, fan-in) weight rows of every conv / linear layer whose outputs are these channels."""
    layers = [*group.producers(), *group.modules(nn.Linear, "out")]
    return [m.weight.detach().float().cpu().flatten(1) for m in layers]


def filter_norm(group: ChannelGroup, p: int = 1) -> torch.Tensor:
    """Lp norm (p=1: Σ|w|, p=2: Σw²) of the filters producing these channels, summed over producers.

    Not torch-pruning's ``MagnitudeImportance``: that one also sums the consumers' input slices,
    while SFP, LeGR's weight criteria and LMA's inheritance rank a channel by its own filters.
    """
    total = torch.zeros(group.size)
    for w in producer_weights(group):
        total += w.abs().sum(1) if p == 1 else w.pow(2).sum(1)
    return total


def filter_size(group: ChannelGroup) -> int:
    """c_in·k·k of the producing filter, summed over producers (the parameters one channel costs there)."""
    return sum(w.shape[1] for w in producer_weights(group))


def bn_scales(groups: Sequence[ChannelGroup]) -> list[torch.Tensor]:
    """|γ| per channel of every group, on one scale (NS; LeGR's BN criteria square it).

    Groups with a BN: torch-pruning's ``BNScaleImportance`` (|γ| averaged over the group's BNs).
    Groups without one (the rank channels inside a Tucker-2 or filter-basis layer) have no γ: a
    channel's score is its L1 filter norm relative to the mean of its group, times the mean |γ|
    of all BN channels. A channel of average magnitude in its layer thus ranks like a channel of
    average γ in the network, and rescaling such a layer (which leaves the function unchanged when
    the next layer is rescaled inversely) does not change the ranking. Raw |w| would be on another
    scale than γ: rank channels would be pruned first (or never).
    """
    scores: list[torch.Tensor | None] = []
    for g in groups:
        s = _BN_SCALE(g.group) if g.batchnorms() else None
        scores.append(None if s is None else s.detach().float().cpu())
    with_bn = [s for s in scores if s is not None]
    reference = float(torch.cat(with_bn).mean()) if with_bn else 1.0
    out = []
    for g, s in zip(groups, scores):
        if s is None:
            norm = filter_norm(g, p=1)
            mean = float(norm.mean())
            s = norm / mean * reference if mean > 0 else torch.full((g.size,), reference)
        out.append(s)
    return out


# ---- sizing to a parameter target ----------------------------------------------------------------

def bracket_target(size: Callable[[float], float], target: float, lo: float, hi: float, *,
                   integer: bool = False, geometric: bool = False, iterations: int = 60) -> tuple[float, float]:
    """Neighbouring arguments (a, b) around the crossing of ``target`` by ``size``, monotone on [lo, hi].

    ``a`` is on ``lo``'s side of the target (or is ``lo`` when even lo is past it), ``b`` on the
    other side (or ``hi``); adjacent integers with ``integer``, else ``iterations`` bisection steps,
    in log space with ``geometric`` (``lo > 0``).
    """
    if geometric and lo <= 0:
        raise ValueError(f"geometric bisection needs lo > 0, got {lo}")
    increasing = size(hi) >= size(lo)

    def below(x: float) -> bool:  # x is on lo's side of the target
        return size(x) < target if increasing else size(x) > target

    if not below(lo):
        return lo, lo
    if integer:
        a, b = int(lo), int(hi)
        while b - a > 1:
            mid = (a + b) // 2
            a, b = (mid, b) if below(mid) else (a, mid)
        return a, b
    a, b = lo, hi
    for _ in range(iterations):
        mid = (a * b) ** 0.5 if geometric else (a + b) / 2
        a, b = (mid, b) if below(mid) else (a, mid)
    return a, b


def closest_to_target(size: Callable[[float], float], target: float, lo: float, hi: float, *,
                      integer: bool = False, geometric: bool = False, iterations: int = 60,
                      nearest: bool = True) -> float:
    """The argument in [lo, hi] whose ``size`` is closest to ``target``, for ``size`` monotone in it.

    Every method sizes its change to the step's parameter target this way (a removal count, a
    width, a Tucker factor, a basis count): bisection brackets the crossing (:func:`bracket_target`),
    then the closer bracket end wins (ties: the end nearer ``lo``). If ``target`` lies outside
    [size(lo), size(hi)], the nearer end is returned. ``nearest=False`` returns the last argument on
    ``lo``'s side of the target instead (for a coarse step another stage finishes).
    """
    a, b = bracket_target(size, target, lo, hi, integer=integer, geometric=geometric, iterations=iterations)
    return min((a, b), key=lambda x: abs(size(x) - target)) if nearest else a
