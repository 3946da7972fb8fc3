"""LeGR: parameter target, per-layer cap, criteria, the search (random and evolutionary), fine-tuning,
reproducibility and chaining with the other methods."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import compressors.legr  # noqa: F401  (registers LeGR)
import compressors.ns  # noqa: F401  (registers NS)
from automc_env.metrics import accuracy, count_flops, count_params
from compressors.base import get_compressor
from compressors.legr import (CRITERIA, Candidate, base_scores, cross_entropy, evolve, split_heldout)
from compressors.pruning import channel_groups, plan_pruning
from tests.conftest import make_context, pretrained

LEGR = get_compressor("LeGR")
NS = get_compressor("NS")


def settings(**kw) -> dict:
    s = {"ft": 0.5, "dec": 0.4, "max_prune": 0.9, "evo": 0.5, "crit": "l1_weight"}
    s.update(kw)
    return s


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


class Hinge(nn.Module):
    """A custom activation (stand-in for LMA): a ReLU with a learnable scalar slope for negatives."""

    def __init__(self) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - self.slope * torch.relu(-x)


def with_custom_activations(model: nn.Module, factory: Callable[[], nn.Module]) -> nn.Module:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, factory())
    return model


def lma_unit() -> nn.Module:
    """LMA's own activation unit (per-bin parameters), as an LMA step leaves in the model."""
    return pytest.importorskip("compressors.lma").LMAUnit(8)


def factorise_first_block_conv(model: nn.Module) -> nn.Module:
    """Replace the first block's conv1 by Sequential(1x1, 3x3, 1x1), as HOS's Tucker-2 step does."""
    conv = model.blocks[0].conv1
    rank = max(2, conv.out_channels // 2)
    model.blocks[0].conv1 = nn.Sequential(
        nn.Conv2d(conv.in_channels, rank, 1, bias=False),
        nn.Conv2d(rank, rank, 3, conv.stride, 1, bias=False),
        nn.Conv2d(rank, conv.out_channels, 1, bias=False))
    return model


# ---- parameter target, accuracy, cap -------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("removal", [0.12, 0.4])
def test_legr_hits_the_parameter_target_and_keeps_accuracy(task_name, removal):
    task, data, model = pretrained(task_name)
    p0, f0 = count_params(model), count_flops(model, task.input_shape)
    out = LEGR.compress(model, settings(dec=removal), make_context(task, data, model, removal))
    p1 = count_params(out)
    assert abs((1 - p1 / p0) - removal) < 0.02, (p0, p1)
    assert count_flops(out, task.input_shape) < f0
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes + 20  # far above chance
    torch.save(out, io.BytesIO())  # plain torch layers: picklable


def test_per_layer_cap_is_respected_and_changes_the_result():
    task, data, model = pretrained("synthetic-vgg")
    widths = conv_widths(model)
    outs = {}
    for cap in (0.7, 0.9):
        _, _, m = pretrained("synthetic-vgg")
        ctx = make_context(task, data, m, 0.7, seed=3)
        outs[cap] = LEGR.compress(m, settings(dec=0.7, max_prune=cap, ft=0.0), ctx)
    pruned = conv_widths(outs[0.7])
    assert all(p >= w - int(0.7 * w) for p, w in zip(pruned, widths)), (pruned, widths)
    assert pruned != conv_widths(outs[0.9])


def test_removal_is_relative_to_the_original_model():
    task, data, model = pretrained("synthetic")
    original = count_params(model)
    first = NS.compress(model, {"ft": 0.0, "dec": 0.4, "max_prune": 0.9}, make_context(task, data, model, 0.4))
    second = LEGR.compress(first, settings(dec=0.2, ft=0.0),
                           make_context(task, data, first, 0.2, original_params=original))
    assert abs(count_params(second) / original - 0.4) < 0.02


# ---- HP8: criteria -------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_each_criterion_gives_different_scores_and_channels(task_name):
    task, _, model = pretrained(task_name)
    _, groups = channel_groups(model, torch.zeros(1, *task.input_shape))
    scores = {c: base_scores(groups, c) for c in CRITERIA}
    g = groups[0]
    conv = g.producers()[0]
    # the definitions, on a group with one producer or summed over producers
    weights = [c.weight.detach().flatten(1) for c in g.producers()]
    assert torch.allclose(scores["l1_weight"][0], sum(w.abs().sum(1) for w in weights))
    assert torch.allclose(scores["l2_weight"][0], sum(w.pow(2).sum(1) for w in weights))
    gamma2 = torch.stack([bn.weight.detach().pow(2) for bn in g.batchnorms()]).mean(0)
    assert torch.allclose(scores["l2_bn"][0], gamma2)
    size = sum(c.weight[0].numel() for c in g.producers())
    assert size >= conv.weight[0].numel()
    assert torch.allclose(scores["l2_bn_param"][0], gamma2 * size)
    # with the identity transform every criterion selects different channels
    plans = {c: plan_pruning(model, groups, scores[c], 0.6, 0.9).remove for c in CRITERIA}
    for i, a in enumerate(CRITERIA):
        for b in CRITERIA[i + 1:]:
            assert any(not torch.equal(x, y) for x, y in zip(plans[a], plans[b])), (a, b)


def test_criterion_changes_the_compressed_model():
    task, data, _ = pretrained("synthetic")
    results = []
    for crit in ("l1_weight", "l2_bn"):
        _, _, model = pretrained("synthetic")
        out = LEGR.compress(model, settings(crit=crit, ft=0.0), make_context(task, data, model, 0.4, seed=1))
        results.append(conv_widths(out))
    assert results[0] != results[1]


def test_unknown_criterion_is_rejected():
    task, data, model = pretrained("synthetic")
    with pytest.raises(ValueError, match="l2_bn_param"):
        LEGR.compress(model, settings(crit="l3"), make_context(task, data, model, 0.4))


# ---- HP7 and the search --------------------------------------------------------------------------

def test_evo_sets_the_number_of_candidate_evaluations():
    task, data, _ = pretrained("synthetic")  # E_pre = 4
    counts = {}
    for evo in (0.25, 1.0):
        _, _, model = pretrained("synthetic")
        LEGR.compress(model, settings(evo=evo, ft=0.0), make_context(task, data, model, 0.4))
        counts[evo] = [e.kind for e in LEGR.last_search.evaluations]
    assert counts[0.25] == ["random"]  # G = max(int(0.25·4), 1) = 1
    assert counts[1.0] == ["random"] * 4  # G = 4 < 63: random search only, as in the paper's search


def test_evolutionary_branch_with_a_small_population():
    task, data, model = pretrained("synthetic")
    ctx = make_context(task, data, model, 0.4, options={"population": 3, "tournament": 2})
    out = LEGR.compress(model, settings(evo=1.5, ft=0.0), ctx)  # G = 6
    search = LEGR.last_search
    evals = search.evaluations
    assert [e.kind for e in evals] == ["random", "random", "identity", "mutation", "mutation", "mutation"]
    assert torch.equal(evals[2].candidate.a, torch.ones(search.groups))
    assert torch.equal(evals[2].candidate.b, torch.zeros(search.groups))
    for e in evals[3:]:
        alive = range(e.index - 3, e.index)  # aging: the 3 most recent evaluations form the population
        assert e.parent in alive
        parent = evals[e.parent].candidate
        assert len(e.mutated) == max(int(0.1 * search.groups), 1)
        changed = [g for g in range(search.groups)
                   if parent.a[g] != e.candidate.a[g] or parent.b[g] != e.candidate.b[g]]
        assert changed and set(changed) <= set(e.mutated)
    assert search.best == min(range(len(evals)), key=lambda i: evals[i].loss)
    assert abs(evals[search.best].params / count_params(pretrained("synthetic")[2]) - 0.6) < 0.02
    assert count_params(out) == evals[search.best].params


def test_evolve_keeps_the_best_payload_and_tournament_picks_the_fitter_parent():
    calls = []

    def fitness(c: Candidate):  # loss = distance of log a from 1: lower when a ≈ e
        loss = float((c.a.log() - 1).pow(2).sum())
        calls.append(loss)
        return loss, ("net", len(calls) - 1), None

    result, payload = evolve(torch.ones(5), 40, fitness, torch.Generator().manual_seed(0),
                             population=8, tournament=8, mutation_rate=0.2)
    assert payload == ("net", result.best) and result.losses == calls
    assert calls[result.best] == min(calls)
    for e in result.evaluations[8:]:  # the parent is the fittest of the drawn members, all alive
        assert e.index - 8 <= e.parent < e.index
    assert min(calls[8:]) < min(calls[:7])  # evolution improves on the random start


def test_fitness_uses_a_per_class_held_out_split_or_val():
    task, data, model = pretrained("synthetic")
    fit, held = split_heldout(data.train, 0.1, torch.Generator().manual_seed(0))
    assert len(fit) + len(held) == len(data.train)
    for c in data.train.y.unique():
        assert int((held.y == c).sum()) == int(0.1 * int((data.train.y == c).sum()))
    fit_rows = {tuple(r.tolist()) for r in fit.x.flatten(1)}
    assert not any(tuple(r.tolist()) in fit_rows for r in held.x.flatten(1))
    assert math.isfinite(cross_entropy(model, held))
    losses = {}
    for split in ("heldout", "val"):
        _, _, m = pretrained("synthetic")
        ctx = make_context(task, data, m, 0.4, options={"fitness_split": split})
        LEGR.compress(m, settings(ft=0.0), ctx)
        losses[split] = LEGR.last_search.losses
    assert losses["heldout"] != losses["val"]


# ---- HP1, reproducibility ------------------------------------------------------------------------

def test_ft_changes_the_result():
    task, data, _ = pretrained("synthetic")
    outs = []
    for ft in (0.0, 0.5):
        _, _, model = pretrained("synthetic")
        outs.append(flat(LEGR.compress(model, settings(ft=ft), make_context(task, data, model, 0.4, seed=5))))
    assert outs[0].shape == outs[1].shape and not torch.equal(outs[0], outs[1])


def test_same_seed_same_numbers():
    task, data, _ = pretrained("synthetic")
    results = []
    for seed in (7, 7, 8):
        _, _, model = pretrained("synthetic")
        out = LEGR.compress(model, settings(ft=0.25), make_context(task, data, model, 0.2, seed=seed))
        results.append((flat(out), LEGR.last_search.losses))
    assert torch.equal(results[0][0], results[1][0]) and results[0][1] == results[1][1]
    assert results[0][1] != results[2][1]


# ---- chaining ------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_chain_ns_then_legr_then_ns(task_name):
    task, data, model = pretrained(task_name)
    original = count_params(model)
    m1 = NS.compress(model, {"ft": 0.0, "dec": 0.2, "max_prune": 0.9}, make_context(task, data, model, 0.2))
    m2 = LEGR.compress(m1, settings(dec=0.2, ft=0.25),
                       make_context(task, data, m1, 0.2, original_params=original))
    assert abs(count_params(m2) / original - 0.6) < 0.02
    assert accuracy(m2, data.val.x, data.val.y) > 100 / task.num_classes
    f2 = count_flops(m2, task.input_shape)
    m3 = NS.compress(m2, {"ft": 0.0, "dec": 0.1, "max_prune": 0.9},  # NS prunes in place
                     make_context(task, data, m2, 0.1, original_params=original))
    assert abs(count_params(m3) / original - 0.5) < 0.02
    assert count_flops(m3, task.input_shape) < f2


def test_legr_on_a_model_with_factorised_convs():
    task, data, model = pretrained("synthetic")
    model = factorise_first_block_conv(model)
    p0 = count_params(model)
    out = LEGR.compress(model, settings(dec=0.3, crit="l2_bn", ft=0.25), make_context(task, data, model, 0.3))
    assert isinstance(out.blocks[0].conv1, nn.Sequential)
    assert abs((1 - count_params(out) / p0) - 0.3) < 0.02
    p1 = count_params(out)
    after = NS.compress(out, {"ft": 0.0, "dec": 0.1, "max_prune": 0.9},  # NS prunes in place
                        make_context(task, data, out, 0.1, original_params=p0))
    assert count_params(after) < p1
    count_flops(after, task.input_shape)


@pytest.mark.parametrize("activation", [Hinge, lma_unit])
@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_legr_on_a_model_with_custom_activations(task_name, activation):
    task, data, model = pretrained(task_name)
    model = with_custom_activations(model, activation)
    kind = type(activation())
    p0 = count_params(model)
    out = LEGR.compress(model, settings(dec=0.3, crit="l2_bn_param", ft=0.25),
                        make_context(task, data, model, 0.3))
    assert any(isinstance(m, kind) for m in out.modules())
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes
    assert abs((1 - count_params(out) / p0) - 0.3) < 0.02
    p1 = count_params(out)
    after = NS.compress(out, {"ft": 0.0, "dec": 0.1, "max_prune": 0.9},  # NS prunes in place
                        make_context(task, data, out, 0.1, original_params=p0))
    assert count_params(after) < p1
    torch.save(after, io.BytesIO())
