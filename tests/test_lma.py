"""LMA: the LMA unit, the uniform thinner student, distillation hyperparameters, chaining, reproducibility."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import compressors.lma  # noqa: F401  (registers LMA)
import compressors.ns  # noqa: F401  (registers NS)
from automc_env.metrics import accuracy, count_flops, count_params
from automc_env.models import build_model
from compressors.base import get_compressor
from compressors.lma import LMAUnit, build_student, plan_uniform_shrink
from compressors.pruning import bn_scales, channel_groups, prune_to_keep
from tests.conftest import make_context, pretrained

LMA = get_compressor("LMA")
NS = get_compressor("NS")
FAST = {"ft": 0.25, "seg": 8, "T": 3, "alpha": 0.5}  # one distillation epoch on the synthetic tasks


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def lma_units(model: nn.Module) -> list[LMAUnit]:
    return [m for m in model.modules() if isinstance(m, LMAUnit)]


def run(task_name: str = "synthetic", settings: dict | None = None, removal: float = 0.2, seed: int = 0,
        options: dict | None = None) -> nn.Module:
    task, data, model = pretrained(task_name)
    ctx = make_context(task, data, model, removal, seed=seed, options=options)
    return LMA.compress(model, {**FAST, **(settings or {})}, ctx)


# ---- the LMA unit -------------------------------------------------------------------------------

def test_fresh_unit_is_a_relu():
    """Running statistics start at 0: the hinge sits at 0 with slopes 0 | 1, i.e. a ReLU."""
    unit = LMAUnit(8).eval()
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(unit(x), torch.relu(x))


def test_unit_at_init_is_a_hinge_at_the_running_mean():
    unit = LMAUnit(8, debias=False).eval()
    unit.running_mean.fill_(0.5)
    unit.running_std.fill_(2.0)
    x = torch.linspace(-10, 10, 1000).reshape(1, 1, 8, 125)  # no element on a bin edge
    expected = torch.where(x >= 0.5, x, torch.zeros_like(x))
    assert torch.allclose(unit(x), expected)


def test_training_uses_batch_statistics_and_updates_running_ones():
    unit = LMAUnit(6).train()
    x = torch.randn(8, 4, 6, 6) * 3 + 2
    y = unit(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    mean, std = x.mean(), x.std()
    assert torch.allclose(y, torch.where(x >= mean, x, torch.zeros_like(x)))
    assert torch.allclose(unit.running_mean, 0.01 * mean) and torch.allclose(unit.running_std, 0.01 * std)
    assert int(unit.num_batches_tracked) == 1
    # Eval uses the (bias-corrected) running statistics, i.e. the one batch seen: same bins as training.
    unit.eval()
    assert torch.allclose(unit(x), y)
    # ... and eval never updates them (the code's quirk, fixed).
    unit(torch.randn(8, 4, 6, 6) + 100)
    assert torch.allclose(unit.running_mean, 0.01 * mean) and int(unit.num_batches_tracked) == 1


def test_eval_uses_running_statistics_not_the_batch():
    unit = LMAUnit(8, debias=False).eval()
    unit.running_std.fill_(1.0)
    x = torch.tensor([0.8, 1.0]).repeat(8).reshape(2, 2, 2, 2)  # batch mean 0.9, all below μ̄ = 2
    unit.running_mean.fill_(2.0)
    assert torch.equal(unit(x), torch.zeros_like(x))
    unit.train()  # the batch's own mean puts the hinge at 0.9
    assert torch.equal(unit(x), torch.where(x > 0.9, x, torch.zeros_like(x)))


def test_debias_false_is_the_raw_code_ema():
    x = torch.randn(8, 4, 6, 6) + 3
    raw, debiased = LMAUnit(8, debias=False), LMAUnit(8, debias=True)
    for unit in (raw, debiased):
        unit.train()(x)
        unit.eval()
    # raw: μ̄ = 0.03 → almost every element above the hinge; debiased: hinge at the batch mean 3
    assert not torch.allclose(raw(x), debiased(x))
    assert torch.allclose(raw(x), torch.where(x >= raw.running_mean, x, torch.zeros_like(x)))


def test_bins_are_clamped_and_equal_width():
    unit = LMAUnit(10, debias=False).eval()
    unit.running_std.fill_(1.0)
    x = torch.tensor([-100.0, -3.0, -2.41, -0.01, 0.01, 0.59, 2.99, 100.0])  # edges at -3 + 0.6·k
    assert unit.bins(x).tolist() == [0, 0, 0, 4, 5, 5, 9, 9]


def test_gradients_reach_the_per_bin_slopes_and_offsets():
    unit = LMAUnit(8).train()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    unit(x).sum().backward()
    bins = unit.bins(x.detach())
    counts = torch.bincount(bins.flatten(), minlength=8).float()
    sums = torch.zeros(8).index_add_(0, bins.flatten(), x.detach().flatten())
    assert torch.allclose(unit.delta_c.weight.grad[:, 0], counts)  # ∂y/∂δc_b = 1 in bin b
    assert torch.allclose(unit.delta_a.weight.grad[:, 0], sums, atol=1e-5)  # ∂y/∂δa_b = x in bin b
    assert x.grad is not None and (x.grad[x >= x.mean()] == 1).all()


def test_activation_factory_builds_lma_networks():
    task, _, _ = pretrained("synthetic")
    arch = {**task.arch(), "activation": "lma", "activation_options": {"num_bins": 6}}
    model = build_model(arch)
    units = lma_units(model)
    assert units and all(u.num_bins == 6 for u in units)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert len({id(u) for u in units}) == len(units)  # one unit per site


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_channel_pruning_leaves_the_units_alone(task_name):
    """torch-pruning must not treat a unit's bin tables as channels (nor size the classifier from them)."""
    task, _, _ = pretrained(task_name)
    model = build_model({**task.arch(), "activation": "lma", "activation_options": {"num_bins": 8}})
    p0 = count_params(model)
    prune_to_keep(model, torch.zeros(1, *task.input_shape), bn_scales, 0.6)
    assert abs(count_params(model) / p0 - 0.6) < 0.02
    assert all(u.delta_a.weight.shape == (8, 1) and u.delta_c.weight.shape == (8, 1) for u in lma_units(model))
    model.train()(torch.randn(4, *task.input_shape)).sum().backward()


# ---- the thinner student -------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("removal", [0.12, 0.4])
def test_lma_hits_the_parameter_target_and_learns(task_name, removal):
    task, data, model = pretrained(task_name)
    p0, f0 = count_params(model), count_flops(model, task.input_shape)
    out = LMA.compress(model, {**FAST, "ft": 0.5, "dec": removal}, make_context(task, data, model, removal))
    assert abs((1 - count_params(out) / p0) - removal) < 0.02
    assert count_flops(out, task.input_shape) < f0
    assert not any(isinstance(m, nn.ReLU) for m in out.modules()) and lma_units(out)
    # trained from scratch by distillation: far above chance (25 %)
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes + 20


def test_every_group_is_shrunk_by_the_same_fraction():
    task, _, model = pretrained("synthetic")
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    student = build_student(model, 0.5, torch.zeros(1, *task.input_shape), 8)
    fractions = [m.out_channels / widths[n] for n, m in student.named_modules() if isinstance(m, nn.Conv2d)]
    assert max(fractions) - min(fractions) < 1 / 16 + 1e-9  # one channel of the narrowest layer
    assert abs(count_params(student) / count_params(pretrained("synthetic")[2]) - 0.5) < 0.01


def test_an_unreachable_target_returns_the_smallest_student():
    task, _, model = pretrained("synthetic")
    student = build_student(model, 1e-4, torch.zeros(1, *task.input_shape), 8)
    _, groups = channel_groups(student, torch.zeros(1, *task.input_shape))
    assert not groups  # every group is down to one channel
    assert student(torch.zeros(2, *task.input_shape)).shape == (2, task.num_classes)


def test_plan_prefers_large_l1_filters():
    task, _, model = pretrained("synthetic-vgg")
    _, groups = channel_groups(model, torch.zeros(1, *task.input_shape))
    scores = [torch.arange(g.size, 0, -1, dtype=torch.float) for g in groups]  # channel 0 most important
    plan = plan_uniform_shrink(model, groups, 0.5 * count_params(model), scores)
    for g, removed in zip(groups, plan.remove):
        assert removed.tolist() == list(range(g.size - len(removed), g.size))


def test_removal_is_relative_to_the_original_model():
    task, data, model = pretrained("synthetic")
    original = count_params(model)
    first = LMA.compress(model, {**FAST, "ft": 0.0}, make_context(task, data, model, 0.4))
    second = LMA.compress(first, {**FAST, "ft": 0.0},
                          make_context(task, data, first, 0.2, original_params=original))
    assert abs(count_params(second) / original - 0.4) < 0.02


# ---- hyperparameters and options ---------------------------------------------------------------

def test_hyperparameters_reach_the_distillation(monkeypatch):
    """ft → int(ft·E_pre) epochs; T, α → the KD loss; constant lr; the method options are passed on."""
    task, data, model = pretrained("synthetic")
    ctx = make_context(task, data, model, 0.2, options={"kd_reduction": "mean", "lr": 0.05})
    calls = []
    real = ctx.fine_tune
    monkeypatch.setattr(ctx, "fine_tune", lambda m, epochs, **kw: calls.append((epochs, kw)) or real(m, 0, **kw))
    LMA.compress(model, {"ft": 0.5, "seg": 6, "T": 10, "alpha": 0.99}, ctx)
    (epochs, kw), = calls
    assert epochs == 2 and kw["kd_temperature"] == 10 and kw["kd_alpha"] == 0.99
    assert kw["kd_reduction"] == "mean" and kw["lr"] == 0.05 and kw["schedule"] == "constant"
    assert kw["teacher"] is ctx.teacher


def test_ft_changes_the_result():
    untrained, trained = run(settings={"ft": 0.0}), run(settings={"ft": 0.25})
    assert not torch.equal(flat_params(untrained), flat_params(trained))


def test_seg_changes_the_units_and_the_result():
    six, ten = run(settings={"seg": 6}), run(settings={"seg": 10})
    assert {u.num_bins for u in lma_units(six)} == {6} and {u.num_bins for u in lma_units(ten)} == {10}
    conv = [m for m in six.modules() if isinstance(m, nn.Conv2d)][-1]
    conv10 = [m for m in ten.modules() if isinstance(m, nn.Conv2d)][-1]
    assert conv.weight.shape == conv10.weight.shape and not torch.equal(conv.weight, conv10.weight)


@pytest.mark.parametrize("key, a, b", [("T", 1, 10), ("alpha", 0.05, 0.99)])
def test_kd_hyperparameters_change_the_result(key, a, b):
    first, second = run(settings={key: a}), run(settings={key: b})
    assert not torch.equal(flat_params(first), flat_params(second))


def test_kd_reduction_option_changes_the_result():
    textbook, code = run(), run(options={"kd_reduction": "mean"})
    assert not torch.equal(flat_params(textbook), flat_params(code))


def test_inherit_keeps_the_teachers_largest_filters():
    task, data, model = pretrained("synthetic-vgg")
    teacher_w = model.features[0].weight.detach().clone()
    settings = {**FAST, "ft": 0.0}
    inherit = LMA.compress(model, settings, make_context(task, data, model, 0.3, options={"init": "inherit"}))
    w = inherit.features[0].weight.detach()
    kept = teacher_w.abs().flatten(1).sum(1).argsort(descending=True)[: w.shape[0]].sort().values
    assert torch.equal(w, teacher_w[kept])
    task, data, model = pretrained("synthetic-vgg")
    scratch = LMA.compress(model, settings, make_context(task, data, model, 0.3))
    assert scratch.features[0].weight.shape == w.shape and not torch.equal(scratch.features[0].weight, w)


def test_share_option_uses_one_unit():
    assert len({id(u) for u in lma_units(run(options={"share": True}))}) == 1
    assert len({id(u) for u in lma_units(run())}) > 1


def test_same_seed_same_numbers():
    a, b = run(seed=7), run(seed=7)
    assert torch.equal(flat_params(a), flat_params(b))
    assert not torch.equal(flat_params(a), flat_params(run(seed=8)))


# ---- chaining -----------------------------------------------------------------------------------

def factorise_3x3(model: nn.Module) -> nn.Module:
    """HOS-like input: every 3x3 conv becomes Sequential(1x1, 3x3, 1x1) at half the width."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.in_channels > 1:
                r_in, r_out = max(1, child.in_channels // 2), max(1, child.out_channels // 2)
                setattr(parent, name, nn.Sequential(
                    nn.Conv2d(child.in_channels, r_in, 1, bias=False),
                    nn.Conv2d(r_in, r_out, 3, child.stride, child.padding, bias=False),
                    nn.Conv2d(r_out, child.out_channels, 1, bias=child.bias is not None)))
    return model


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_chain_ns_lma_lma_ns(task_name):
    """NS → LMA (irregular widths in), LMA → LMA (LMA units in), LMA → NS (LMA units pruned)."""
    task, data, model = pretrained(task_name)
    original = count_params(model)
    step = NS.compress(model, {"ft": 0.25, "max_prune": 0.9}, make_context(task, data, model, 0.2))
    for removal, method, settings in [(0.1, LMA, FAST), (0.1, LMA, {**FAST, "seg": 6}),
                                      (0.1, NS, {"ft": 0.25, "max_prune": 0.9})]:
        before = count_params(step)
        step = method.compress(step, settings, make_context(task, data, step, removal, original_params=original))
        assert abs((before - count_params(step)) / original - removal) < 0.02
    assert {u.num_bins for u in lma_units(step)} == {6}
    assert count_flops(step, task.input_shape) > 0
    buffer = io.BytesIO()
    torch.save(step, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = data.val.x[:8]
    assert torch.equal(loaded.eval()(x), step.eval()(x))


def test_chain_factorised_input():
    task, data, model = pretrained("synthetic")
    model = factorise_3x3(model)
    p0 = count_params(model)
    out = LMA.compress(model, FAST, make_context(task, data, model, 0.2))
    assert abs(1 - count_params(out) / p0 - 0.2) < 0.02
    assert any(isinstance(m, nn.Sequential) and len(m) == 3 for m in out.modules())
    out = NS.compress(out, {"ft": 0.0, "max_prune": 0.9}, make_context(task, data, out, 0.1))
    assert out(data.val.x[:4]).shape == (4, task.num_classes)


def test_unknown_init_option_is_rejected():
    task, _, model = pretrained("synthetic")
    with pytest.raises(ValueError, match="init"):
        build_student(model, 0.5, torch.zeros(1, *task.input_shape), 8, init="teacher")
