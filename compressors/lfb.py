"""LFB (C6): learned filter basis — every spatial conv becomes a small bank of shared basis filters
followed by a 1x1 mixing conv, sized to the parameter target, then trained.

Per methods.md C6 and the LFB paper (Li et al. 2019, "Learning filter basis for convolutional
neural network compression"), applied to the CURRENT model so that it chains anywhere in a scheme:

1. **Sites.** Every ``nn.Conv2d`` with a spatial kernel (3x3 in our nets; groups = 1, dilation 1),
   wherever it sits (original, pruned, with custom activations around it, inside containers);
   modules flagged ``unprunable`` are left whole. Nothing is ever nested:
   * an existing filter-basis layer (LFB after LFB) is rebuilt into its exact dense kernel and
     re-fitted with a smaller basis;
   * a spatial conv followed directly by a 1x1 conv in an ``nn.Sequential`` — the core of a
     factorisation, e.g. HOS's Tucker-2 (1x1 → k×k core → 1x1) — is one site together with that
     1x1 (their composition is one linear k×k conv, computed exactly). It is factorised in place:
     the basis takes the core's slot and the coefficient conv the 1x1's, so a Tucker layer stays a
     1x1 → k×k → 1x1 sequence with a smaller inner rank instead of growing another 1x1.
2. **Filter-basis layer** (:class:`FilterBasisConv`). The c_in = g·s input channels are split into
   g groups; one bank of nb k×k basis filters of depth s is applied to every group, and a 1x1 conv
   g·nb → c_out (with bias) mixes the g·nb responses. Parameters: nb·s·k² + g·nb·c_out + c_out
   (+ c_in for the g > 1 guard, below).
   g = 1 is ``FilterBasisConv(Conv2d(c_in, nb, k, stride, pad), Conv2d(nb, c_out, 1))`` — an
   ``nn.Sequential`` of standard layers that compressors.pruning prunes like any other convs.
   g > 1 uses :class:`SharedBasis` (channels folded into the batch, one ``nn.Conv2d`` of depth s);
   it is rigid for pruning (see Deviations) and pruning still works around it.
3. **Sizing.** One global multiplier t (the code's ``times``) gives every site nb = round(t·r)
   bases (at least 1), r = the site's full rank min(g·c_out, s·k²); a site whose nb exceeds nb_max
   — the largest basis that still makes it smaller than it is now — is left unchanged. P(t) is a
   non-decreasing step function: its steps (one site gains one basis; equal-rank sites in module
   order, so they move one at a time) are walked in order and the state closest to keep·P(current)
   is taken, keep = ctx.keep_ratio. g is searched over {1, 2, 4, 8} as in the code (per site: the
   largest of those ≤ g dividing c_in). g = 1 is used unless it misses the target by more than
   0.5 % of P(current) (in practice only below its nb = 1 floor); then the g with the smallest error.
   Note that g > 1 shares parameters, not compute: its FLOPs can exceed the original conv's.
4. **Initialisation** (option ``init``). ``"fit"`` (default): truncated SVD of the kernel reshaped
   to (c_out·g, s·k²) — the least-squares optimal rank-nb shared basis (Eckart–Young);
   basis = √S·Vᵀ, coefficients = U·√S, the conv's bias goes to the 1x1 conv. With full rank the
   layer reproduces the conv exactly. ``"scratch"`` (code parity): every conv, BN and linear layer
   of the network is re-initialised with the paper's init, random numbers from ctx.generator
   (custom modules reset themselves: LMA activations return to their initial hinge).
5. **Training** int(HP1·E_pre) epochs with loss HP15·ℓ_HP16 (``training.train``'s ``loss_fn``), SGD
   with MultiStepLR, best val epoch kept (ctx.fine_tune). ``fit``: the task's fine-tune lr, momentum
   and weight decay; ``scratch``: the code's lr 0.1, momentum 0.9, weight decay 1e-4. Option ``lr``
   overrides the lr. Losses: CE = cross-entropy; NLL = NLLLoss on log_softmax (= CE); MSE = mean
   squared error between softmax(logits) and the one-hot target. Option ``lfb_raw_nll`` applies
   NLLLoss to raw logits (−logit[y], the code; unbounded below). So by default every NLL strategy
   computes exactly what its CE twin computes (125 of the 375 LFB strategies):
   ``StrategySpace.equivalent`` lists them, for agents, the knowledge graph and surrogates.

Options (ctx.options): ``init`` ("fit" | "scratch"), ``lfb_raw_nll`` (bool), ``groups`` (int or
list of g values to search, default (1, 2, 4, 8)), ``lr`` (float).

**Tolerance.** The achieved parameter count is the closest reachable one to keep·P(current): the
error is at most half a basis of the largest site, (s·k² + g·c_out)/2 parameters — ≤ 0.4 pp of PR
on the synthetic tasks, ~0.03 pp on ResNet-56 / VGG-16. Targets below the floor (every site at
nb = 1, plus the 1x1, BN and linear layers LFB does not touch: 7 % of ResNet-8, 4 % of the small
VGG) and models whose parameters sit elsewhere (1x1 and linear layers) return what was reached,
never an error.

**Deviations** from the paper code (``prune_C7.py``, ``models/conv_LFB.py``):

* *Fixed bug / chainability:* the code ignores its input and trains the ORIGINAL architecture
  rebuilt from scratch, so it may only be a scheme's first step and makes the scheme terminal. Here
  LFB factorises the current model: ``terminal = False``, ``first_only = False``; the parameter
  reference is the current model (code: the uncompressed architecture with 10 classes).
* *Fixed bug:* AR is measured against the input model's accuracy like every other method (the code
  reports against 0, i.e. AR = inf, so every LFB step failed in AutoMC's search).
* *Changed default:* initialised by fitting the current weights (the LFB paper starts from a
  pre-trained network); ``init="scratch"`` gives the code's random init and recipe.
* *Changed default:* NLL = NLLLoss(log_softmax) (= CE); ``lfb_raw_nll`` for the code's degenerate
  NLLLoss on logits. MSE is not in the AutoMC code; defined as above (the LFB repository has it).
* *Simplified sizing:* a continuous global t with per-site rounding and a "never grow a site" rule
  (code: t ∈ {0.1, …, 9.9}, nb = int(s·t), s = c_in/g). t scales the site's full rank r instead
  of s: the same for the usual c_out ≥ c_in/g layers, but the code's rule gives a stem with 1–3
  input channels a rank-1–3 basis at t < 1 (which, fitted, destroys the first layer). g falls back
  per site when it does not divide c_in (code: drops the whole (g, t) pair); g = 1 is preferred
  when it reaches the target (code: the closest (g, t) pair, g = 1 first on ties) because its
  layers are standard convs that later pruning can thin.
* *Scope:* every spatial conv is a site, including the ResNet stem (code: only the convs built by
  the model's conv factory — ResNet block convs and all VGG convs); 1x1 convs (shortcuts) and the
  classifier stay as they are. Factorisation cores are merged with their following 1x1 as above
  rather than skipped, so that LFB after HOS still has something to compress.
* *Simplified:* the basis filters have no bias (the code's basis bias is redundant: it passes
  linearly through the 1x1 conv, whose bias can absorb it).
* *Pruning guard for g > 1:* compressors.pruning only protects the OUTPUT channels of modules flagged
  ``unprunable``; their INPUT channels would still be sliced (breaking the shared bank). A g > 1
  layer therefore starts with a frozen identity ``nn.PReLU`` (weight 1, c_in parameters, counted)
  flagged ``unprunable``: torch-pruning couples its channels to the producers, so the whole channel
  group feeding the bank stays intact while everything else prunes normally.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from automc_env.metrics import count_params
from automc_env.training import LossFn
from automc_env.models import reinitialise
from compressors.base import BaseCompressor, CompressionContext, register
from compressors.pruning import closest_to_target

GROUP_CHOICES = (1, 2, 4, 8)   # the code's g grid
LOSS_TYPES = ("NLL", "CE", "MSE")
GROUP_TOLERANCE = 0.005        # g = 1 is kept when it reaches the target within this fraction of P(current)
SCRATCH_RECIPE = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}  # prune_C7.py


# ---- layers --------------------------------------------------------------------------------------

class SharedBasis(nn.Module):
    """One bank of ``n_basis`` filters of depth s = c_in/g applied to each of the g channel groups.

    The groups are folded into the batch, (B, g·s, H, W) → (B·g, s, H, W), so a single ``nn.Conv2d``
    does the work; output channel j·n_basis + k is basis k on group j. Rigid for pruning: the conv
    and the identity guard in front of it are flagged ``unprunable`` (see the module docstring).
    """

    unprunable = True

    def __init__(self, in_channels: int, groups: int, n_basis: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: Any, padding_mode: str = "zeros",
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels {in_channels} is not divisible by groups {groups}")
        self.groups = groups
        self.guard = nn.PReLU(in_channels, init=1.0, device=device, dtype=dtype)  # identity: max(0,x) + 1·min(0,x)
        self.guard.weight.requires_grad_(False)
        self.guard.unprunable = True
        self.conv = nn.Conv2d(in_channels // groups, n_basis, kernel_size, stride, padding, bias=False,
                              padding_mode=padding_mode, device=device, dtype=dtype)
        self.conv.unprunable = True

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels * self.groups

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels * self.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.guard(x)
        b, c, h, w = x.shape
        y = self.conv(x.reshape(b * self.groups, c // self.groups, h, w))
        return y.reshape(b, self.groups * y.shape[1], y.shape[2], y.shape[3])


class FilterBasisConv(nn.Sequential):
    """A conv replaced by a filter basis: ``basis`` (nn.Conv2d for g = 1, SharedBasis for g > 1)
    then ``coef``, a 1x1 nn.Conv2d g·nb → c_out with bias."""

    def __init__(self, basis: nn.Module, coef: nn.Conv2d):
        super().__init__(OrderedDict(basis=basis, coef=coef))

    def is_intact(self) -> bool:
        """Still basis + 1x1 (another method may have factorised the basis conv further)."""
        basis_ok = isinstance(self.basis, SharedBasis) or (type(self.basis) is nn.Conv2d and self.basis.groups == 1)
        return basis_ok and _is_mergeable_pointwise(self.coef)

    @property
    def groups(self) -> int:
        return self.basis.groups if isinstance(self.basis, SharedBasis) else 1

    @property
    def basis_conv(self) -> nn.Conv2d:
        return self.basis.conv if isinstance(self.basis, SharedBasis) else self.basis

    @property
    def n_basis(self) -> int:
        return self.basis_conv.out_channels

    def dense_kernel(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The equivalent ordinary conv (weight, bias): W[o, group j] = Σ_k coef[o, j·nb + k] · basis[k]."""
        basis = self.basis_conv
        b_w = basis.weight.detach()
        nb, s = b_w.shape[:2]
        g = self.groups
        c = self.coef.weight.detach().reshape(self.coef.out_channels, g, nb)
        weight = torch.einsum("ojk,kihw->ojihw", c, b_w).reshape(c.shape[0], g * s, *b_w.shape[2:])
        bias = self.coef.bias.detach().clone() if self.coef.bias is not None else None
        if basis.bias is not None:  # folded through the 1x1 conv (only if someone added one)
            extra = torch.einsum("ojk,k->o", c, basis.bias.detach())
            bias = extra if bias is None else bias + extra
        return weight, bias


def layer_params(c_in: int, c_out: int, kernel: int, groups: int, n_basis: int) -> int:
    """Parameters of a FilterBasisConv (``kernel`` = kh·kw; g > 1 adds the c_in-weight guard)."""
    s = c_in // groups
    return n_basis * s * kernel + groups * n_basis * c_out + c_out + (c_in if groups > 1 else 0)


def fit_filter_basis(weight: torch.Tensor, groups: int, n_basis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares shared basis of a conv kernel (c_out, c_in, kh, kw) by truncated SVD.

    Returns (basis (nb, s, kh, kw), coefficients (c_out, g·nb)) with coefficient column j·nb + k
    weighting basis k on input group j — exact when nb ≥ rank of the (c_out·g, s·kh·kw) matrix.
    """
    c_out, c_in, kh, kw = weight.shape
    s = c_in // groups
    m = weight.detach().double().reshape(c_out * groups, s * kh * kw)
    u, sv, vh = torch.linalg.svd(m, full_matrices=False)
    if n_basis > sv.numel():
        raise ValueError(f"n_basis {n_basis} exceeds the rank bound {sv.numel()} of this kernel")
    root = sv[:n_basis].sqrt()
    basis = (root[:, None] * vh[:n_basis]).reshape(n_basis, s, kh, kw)
    coef = (u[:, :n_basis] * root).reshape(c_out, groups * n_basis)
    return basis.to(weight.dtype), coef.to(weight.dtype)


# ---- finding and sizing the sites ----------------------------------------------------------------

@dataclass
class Site:
    """One layer LFB may replace: its equivalent dense conv and its current parameter count."""

    parent: nn.Module
    name: str
    weight: torch.Tensor              # (c_out, c_in, kh, kw)
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: Any
    padding_mode: str
    params: int
    post: str | None = None           # the 1x1 conv merged into this site (its slot takes the coefficients)

    @property
    def c_out(self) -> int:
        return self.weight.shape[0]

    @property
    def c_in(self) -> int:
        return self.weight.shape[1]

    @property
    def kernel(self) -> int:
        return self.weight.shape[2] * self.weight.shape[3]


def _is_spatial_conv(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size[0] * m.kernel_size[1] > 1 and m.groups == 1
            and tuple(m.dilation) == (1, 1) and not getattr(m, "unprunable", False))


def _is_mergeable_pointwise(m: nn.Module) -> bool:
    """A plain 1x1 conv (stride 1, no padding) that composes with the conv before it into one conv."""
    return (type(m) is nn.Conv2d and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) == (1, 1)
            and tuple(m.padding) == (0, 0) and tuple(m.dilation) == (1, 1) and m.groups == 1
            and not getattr(m, "unprunable", False))


def _conv_site(parent: nn.Module, name: str, conv: nn.Conv2d, post_name: str | None = None) -> Site:
    """A site for ``conv``, composed with the 1x1 conv ``parent.<post_name>`` when given."""
    weight = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else None
    params = count_params(conv)
    if post_name is not None:
        post = getattr(parent, post_name)
        mix = post.weight.detach()[:, :, 0, 0]
        weight = torch.einsum("or,rihw->oihw", mix, weight)
        bias = mix @ bias if bias is not None else None
        if post.bias is not None:
            bias = post.bias.detach().clone() if bias is None else bias + post.bias.detach()
        params += count_params(post)
    return Site(parent, name, weight, bias, conv.stride, conv.padding, conv.padding_mode, params, post_name)


def find_sites(model: nn.Module) -> list[Site]:
    """Every conv LFB replaces, in module order (see the module docstring)."""
    sites: list[Site] = []

    def walk(module: nn.Module) -> None:
        children = list(module.named_children())
        merged: set[str] = set()
        for i, (name, child) in enumerate(children):
            if name in merged:
                continue
            if isinstance(child, FilterBasisConv) and child.is_intact():
                weight, bias = child.dense_kernel()
                conv = child.basis_conv
                sites.append(Site(module, name, weight, bias, conv.stride, conv.padding, conv.padding_mode,
                                  count_params(child)))
            elif _is_spatial_conv(child):
                nxt = children[i + 1] if isinstance(module, nn.Sequential) and i + 1 < len(children) else None
                if nxt is not None and _is_mergeable_pointwise(nxt[1]):
                    merged.add(nxt[0])
                    sites.append(_conv_site(module, name, child, nxt[0]))
                else:
                    sites.append(_conv_site(module, name, child))
            elif not getattr(child, "unprunable", False):
                walk(child)

    walk(model)
    return sites


@dataclass
class BasisPlan:
    """Per site (g, nb), or None where the site stays as it is; the multiplier t and the count."""

    groups: int
    times: float
    layers: list[tuple[int, int] | None]
    params_before: int
    params_after: int


def _site_groups(c_in: int, g: int) -> int:
    return max(d for d in GROUP_CHOICES if d <= g and c_in % d == 0)


def _full_rank(site: Site, g: int) -> int:
    """Bases needed to represent the site exactly: the rank bound of its (c_out·g, s·k²) matrix."""
    return min(site.c_out * g, site.c_in // g * site.kernel)


def _max_basis(site: Site, g: int) -> int:
    """Largest nb that leaves the site smaller than it is now (0: no basis layer is smaller)."""
    s = site.c_in // g
    per_basis = s * site.kernel + g * site.c_out
    fixed = site.c_out + (site.c_in if g > 1 else 0)
    nb = (site.params - fixed - 1) // per_basis  # layer_params(nb) < site.params
    return max(0, min(nb, _full_rank(site, g)))


def _size_for_groups(sites: Sequence[Site], other: int, target: float, g: int) -> tuple[float, list, int]:
    """Grow the global multiplier t until the parameter count is closest to ``target``.

    At multiplier t a site has nb = round(t·r) bases (r = its full rank; at least 1), or stays as it
    is once nb exceeds nb_max. P(t) is a non-decreasing step function; its steps ("events": one
    site gains one basis at t = (nb − ½)/r) are taken in order of t — ties in site order, so sites
    of equal rank move one at a time — and the number of steps whose state is closest to the
    target is found like every other size (``pruning.closest_to_target``).
    """
    spec = []  # (site, g_site, full rank r, nb_max)
    for site in sites:
        gs = _site_groups(site.c_in, g)
        spec.append((site, gs, _full_rank(site, gs), _max_basis(site, gs)))

    def size(i: int, nb: int) -> int:
        site, gs, _, nb_max = spec[i]
        return site.params if nb > nb_max else layer_params(site.c_in, site.c_out, site.kernel, gs, nb)

    nbs = [1] * len(spec)  # t = 0: one basis per site (or the site unchanged when even that is not smaller)
    events = sorted(((nb - 0.5) / r, i) for i, (_, _, r, nb_max) in enumerate(spec) for nb in range(2, nb_max + 2))
    sizes = [other + sum(size(i, 1) for i in range(len(spec)))]  # sizes[k]: after the first k events
    for _, i in events:
        sizes.append(sizes[-1] + size(i, nbs[i] + 1) - size(i, nbs[i]))
        nbs[i] += 1
    k = int(closest_to_target(lambda k: sizes[int(k)], target, 0, len(events), integer=True))
    nbs = [1] * len(spec)
    for _, i in events[:k]:
        nbs[i] += 1
    t, p = (events[k - 1][0] if k else 0.0), sizes[k]
    layers = [(gs, nb) if nb <= nb_max else None for (_, gs, _, nb_max), nb in zip(spec, nbs)]
    return t, layers, p


def plan_filter_basis(model: nn.Module, keep: float, groups: Sequence[int] = GROUP_CHOICES,
                      sites: Sequence[Site] | None = None) -> BasisPlan:
    """Choose g and the global multiplier t so that the model keeps ≈ ``keep`` of its parameters."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep}")
    groups = sorted({int(g) for g in groups})
    if not groups or any(g not in GROUP_CHOICES for g in groups):
        raise ValueError(f"LFB groups must be a non-empty subset of {GROUP_CHOICES}, got {groups}")
    sites = find_sites(model) if sites is None else sites
    before = count_params(model)
    other = before - sum(s.params for s in sites)
    target = keep * before
    results = {g: _size_for_groups(sites, other, target, g) for g in groups}
    chosen = groups[0]
    if abs(results[chosen][2] - target) > GROUP_TOLERANCE * before:
        chosen = min(groups, key=lambda g: (abs(results[g][2] - target), g))
    t, layers, after = results[chosen]
    return BasisPlan(chosen, t, layers, before, after)


def apply_plan(sites: Sequence[Site], plan: BasisPlan, init: str = "fit") -> None:
    """Replace every planned site by a FilterBasisConv (in place), fitted to its kernel for ``fit``."""
    for site, layer in zip(sites, plan.layers):
        if layer is None:
            continue
        g, nb = layer
        w = site.weight
        kw = dict(device=w.device, dtype=w.dtype)
        if g == 1:
            basis: nn.Module = nn.Conv2d(site.c_in, nb, tuple(w.shape[2:]), site.stride, site.padding, bias=False,
                                         padding_mode=site.padding_mode, **kw)
        else:
            basis = SharedBasis(site.c_in, g, nb, tuple(w.shape[2:]), site.stride, site.padding,
                                site.padding_mode, **kw)
        coef = nn.Conv2d(g * nb, site.c_out, 1, bias=True, **kw)
        if init == "fit":
            b, c = fit_filter_basis(w, g, nb)
            with torch.no_grad():
                (basis.conv if g > 1 else basis).weight.copy_(b)
                coef.weight.copy_(c[:, :, None, None])
                coef.bias.copy_(site.bias if site.bias is not None else torch.zeros_like(coef.bias))
        if site.post is None:
            setattr(site.parent, site.name, FilterBasisConv(basis, coef))
        else:  # a factorisation core and its 1x1: re-factorised in place
            if getattr(getattr(site.parent, site.name), "tucker_core", False):
                basis.tucker_core = True  # keep HOS's marker: still the core of a factorisation
            setattr(site.parent, site.name, basis)
            setattr(site.parent, site.post, coef)


# ---- loss and the compressor ---------------------------------------------------------------------

def task_loss(loss_type: str, factor: float, raw_nll: bool = False) -> LossFn:
    """factor · ℓ(logits, y) for ℓ ∈ {NLL, CE, MSE} (definitions in the module docstring)."""
    kind = str(loss_type).upper()
    if kind not in LOSS_TYPES:
        raise ValueError(f"LFB loss type must be one of {LOSS_TYPES}, got {loss_type!r}")
    factor = float(factor)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if kind == "CE":
            value = F.cross_entropy(logits, y)
        elif kind == "NLL":
            value = F.nll_loss(logits if raw_nll else F.log_softmax(logits, 1), y)
        else:
            value = F.mse_loss(F.softmax(logits, 1), F.one_hot(y, logits.shape[1]).to(logits.dtype))
        return factor * value

    return loss


class LearnedFilterBasis(BaseCompressor):
    name = "LFB"
    terminal = False      # the code makes a scheme terminal after LFB; ours factorises the current model
    first_only = False    # the code only allows LFB as a scheme's first step

    def effective_settings(self, settings, pretrain_epochs, options):
        """NLL on log-softmax is CE (unless ``lfb_raw_nll``); a zero-epoch run reads neither loss setting."""
        out = super().effective_settings(settings, pretrain_epochs, options)
        if out["loss"] == "NLL" and not options.get("lfb_raw_nll", False):
            out["loss"] = "CE"
        if out["ft"] == 0:
            out["loss"] = out["factor"] = None
        return out

    def compress(self, model: nn.Module, settings: Mapping[str, Any], ctx: CompressionContext) -> nn.Module:
        opts = ctx.options
        init = str(opts.get("init", "fit"))
        if init not in ("fit", "scratch"):
            raise ValueError(f"LFB option init must be 'fit' or 'scratch', got {init!r}")
        groups = opts.get("groups", GROUP_CHOICES)
        groups = [groups] if isinstance(groups, int) else list(groups)
        loss_fn = task_loss(settings["loss"], settings["factor"], bool(opts.get("lfb_raw_nll", False)))

        sites = find_sites(model)
        plan = plan_filter_basis(model, ctx.keep_ratio(model), groups, sites)
        apply_plan(sites, plan, init)
        recipe: dict[str, Any] = {}
        if init == "scratch":
            reinitialise(model, ctx.generator)
            recipe = dict(SCRATCH_RECIPE)
        if "lr" in opts:
            recipe["lr"] = float(opts["lr"])
        ctx.fine_tune(model, ctx.epochs(settings["ft"]), desc="LFB train", loss_fn=loss_fn, **recipe)
        return model


register(LearnedFilterBasis())
