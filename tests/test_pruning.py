"""Shared channel removal: exact parameter accounting, caps, custom layers left intact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automc_env.metrics import count_params
from automc_env.models import ACTIVATIONS, build_model, model_arch
from compressors.pruning import bn_scales, channel_groups, plan_pruning, prune_to_keep


@pytest.mark.parametrize("name,classes,shape", [("resnet56", 10, (3, 32, 32)), ("vgg16", 100, (3, 32, 32)),
                                                ("resnet8", 4, (1, 8, 8)), ("vgg-small", 4, (1, 8, 8))])
def test_plan_predicts_the_pruned_parameter_count_exactly(name, classes, shape):
    model = build_model(model_arch(name, classes, shape[0], shape[1]))
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0, 1)
    p0 = count_params(model)
    plan = prune_to_keep(model, torch.zeros(1, *shape), bn_scales, keep=0.6, max_layer_ratio=0.8)
    assert plan.params_after == count_params(model)
    assert abs(count_params(model) / p0 - 0.6) < 0.01
    assert model(torch.zeros(2, *shape)).shape == (2, classes)


def test_cap_and_at_least_one_channel_per_group():
    model = build_model(model_arch("vgg-small", 4, 1, 8))
    _, groups = channel_groups(model, torch.zeros(1, 1, 8, 8))
    scores = [torch.arange(g.size, dtype=torch.float) for g in groups]
    plan = plan_pruning(model, groups, scores, keep=0.1, max_layer_ratio=1.0)
    assert all(len(r) <= g.size - 1 for r, g in zip(plan.remove, groups))
    plan = plan_pruning(model, groups, scores, keep=0.1, max_layer_ratio=0.5)
    assert all(len(r) <= int(0.5 * g.size) for r, g in zip(plan.remove, groups))
    with pytest.raises(ValueError, match="keep ratio"):
        plan_pruning(model, groups, scores, keep=0.0)


class Hinge(nn.Module):
    """A custom activation with a loose 1-d parameter vector (not a channel dimension)."""

    def __init__(self):
        super().__init__()
        self.slopes = nn.Parameter(torch.tensor([0.1, 1.0, 0.5]))

    def forward(self, x):
        return torch.where(x > 0, self.slopes[1] * x, self.slopes[0] * x)


@pytest.mark.parametrize("name", ["resnet8", "vgg-small"])
def test_custom_module_parameters_are_not_treated_as_channels(name, monkeypatch):
    monkeypatch.setitem(ACTIVATIONS, "hinge", lambda **_: Hinge())
    arch = {**model_arch(name, 4, 1, 8), "activation": "hinge"}
    model = build_model(arch)
    p0 = count_params(model)
    prune_to_keep(model, torch.zeros(1, 1, 8, 8), bn_scales, keep=0.6, max_layer_ratio=0.9)
    assert all(m.slopes.shape == (3,) for m in model.modules() if isinstance(m, Hinge))
    assert abs(count_params(model) / p0 - 0.6) < 0.02
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_closest_to_target_on_monotone_sizes():
    from compressors.pruning import bracket_target, closest_to_target
    squares = lambda k: k * k  # noqa: E731
    assert closest_to_target(squares, 50, 0, 100, integer=True) == 7      # 49 is closer than 64
    assert closest_to_target(squares, 57, 0, 100, integer=True) == 8      # 64 is closer than 49
    assert closest_to_target(squares, 50, 0, 100, integer=True, nearest=False) == 7
    assert closest_to_target(lambda k: 100 - k, 30.4, 0, 100, integer=True) == 70   # decreasing sizes
    assert closest_to_target(squares, -5, 0, 100, integer=True) == 0      # out of range: nearer end
    assert closest_to_target(squares, 1e9, 0, 100, integer=True) == 100
    assert abs(closest_to_target(lambda x: x ** 3, 8.0, 0.0, 10.0) - 2.0) < 1e-9
    assert abs(closest_to_target(lambda x: 1 / x, 0.01, 1.0, 1000.0, geometric=True) - 100.0) < 1e-6
    a, b = bracket_target(squares, 50, 0, 100, integer=True)
    assert (a, b) == (7, 8)
    with pytest.raises(ValueError, match="lo > 0"):
        bracket_target(squares, 1, 0.0, 1.0, geometric=True)
