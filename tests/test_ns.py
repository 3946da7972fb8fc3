"""Network Slimming: physical removal to the parameter target, the per-layer cap, fine-tuning, reproducibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automc_env.metrics import accuracy, count_flops, count_params
from compressors import get_compressor
from compressors.ns import bn_l1
from tests.conftest import make_context, pretrained

NS = get_compressor("NS")


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("removal", [0.12, 0.4])
def test_ns_hits_the_parameter_target_and_keeps_accuracy(task_name, removal):
    task, data, model = pretrained(task_name)
    p0, f0 = count_params(model), count_flops(model, task.input_shape)
    ctx = make_context(task, data, model, removal)
    out = NS.compress(model, {"ft": 0.5, "dec": removal, "max_prune": 0.9}, ctx)
    p1 = count_params(out)
    assert abs((1 - p1 / p0) - removal) < 0.02, (p0, p1)
    assert count_flops(out, task.input_shape) < f0
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes + 20  # far above chance


def test_removal_is_relative_to_the_original_model():
    """HP2 = 0.2 of the ORIGINAL params from a model already at 60 %: keep = 1 − 0.2/0.6 of the current."""
    task, data, model = pretrained("synthetic")
    original = count_params(model)
    first = NS.compress(model, {"ft": 0.1, "dec": 0.4, "max_prune": 0.9}, make_context(task, data, model, 0.4))
    second = NS.compress(first, {"ft": 0.1, "dec": 0.2, "max_prune": 0.9},
                         make_context(task, data, first, 0.2, original_params=original))
    assert abs(count_params(second) / original - 0.4) < 0.03


def test_per_layer_cap_limits_each_layer():
    task, data, model = pretrained("synthetic-vgg")
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    out = NS.compress(model, {"ft": 0.1, "dec": 0.6, "max_prune": 0.7}, make_context(task, data, model, 0.6))
    pruned = [m.out_channels for m in out.modules() if isinstance(m, nn.Conv2d)]
    assert all(p >= w - int(0.7 * w) for p, w in zip(pruned, widths))


def test_same_seed_same_numbers():
    results = []
    for _ in range(2):
        task, data, model = pretrained("synthetic")
        out = NS.compress(model, {"ft": 0.3, "dec": 0.2, "max_prune": 0.9}, make_context(task, data, model, 0.2, seed=7))
        results.append(torch.cat([p.detach().flatten() for p in out.parameters()]))
    assert torch.equal(results[0], results[1])


def test_sparsity_option_shrinks_bn_scales():
    task, data, model = pretrained("synthetic")
    before = float(bn_l1(model).detach())
    ctx = make_context(task, data, model, 0.04, options={"sparsity": 1e-2, "sparsity_epochs": 1.0})
    out = NS.compress(model, {"ft": 0.0, "dec": 0.04, "max_prune": 0.9}, ctx)
    assert float(bn_l1(out).detach()) < before


def test_channels_without_a_bn_rank_on_the_bn_scale_and_ignore_layer_rescaling():
    """Rank channels of a Tucker-2 layer (no BN) are scored relative to their layer, on the γ scale:
    rescaling one factor by 10 and the next by 1/10 (same function) gives the same plan."""
    import copy

    from compressors.hos import decompose
    from compressors.pruning import bn_scales, channel_groups, plan_pruning
    task, _, model = pretrained("synthetic")
    decompose(model, 2.0)
    generator = torch.Generator().manual_seed(0)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # a spread of γ as in trained nets
        bn.weight.data = torch.rand(bn.num_features, generator=generator) * 1.5 + 0.05
    tucker = [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 3
              and getattr(m[1], "tucker_core", False)]
    assert tucker
    x = torch.zeros(1, *task.input_shape)

    def plan(net):
        _, groups = channel_groups(net, x)
        return groups, plan_pruning(net, groups, bn_scales(groups), 0.7, 0.9)

    groups, base = plan(model)
    scaled = copy.deepcopy(model)
    for seq in (m for m in scaled.modules() if isinstance(m, nn.Sequential) and len(m) == 3
                and getattr(m[1], "tucker_core", False)):
        with torch.no_grad():
            seq[0].weight.mul_(10.0)
            seq[1].weight.div_(10.0)
    _, again = plan(scaled)
    assert all(torch.equal(a, b) for a, b in zip(base.remove, again.remove))
    # channels with and without a BN are both pruned (neither kind is spared or goes first)
    no_bn = [i for i, g in enumerate(groups) if not g.batchnorms()]
    assert no_bn and any(len(base.remove[i]) for i in no_bn)
    assert any(len(r) for i, r in enumerate(base.remove) if i not in no_bn)
