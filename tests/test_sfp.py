"""Soft filter pruning: parameter target, soft masks that recover, HP9/HP10, reproducibility, chaining."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import compressors.ns  # noqa: F401  (registers NS for the chaining tests)
import compressors.sfp as sfp
from automc_env.metrics import accuracy, count_flops, count_params
from compressors.base import get_compressor
from compressors.pruning import PruningPlan, apply_plan, channel_groups
from tests.conftest import make_context, pretrained

SFP = get_compressor("SFP")
NS = get_compressor("NS")
FAST = {"final_finetune_epochs": 0}  # for tests that only look at the soft stage


def small(data) -> SimpleNamespace:
    """The first 64 training images (2 batches per epoch): for tests that count epochs and mask steps."""
    return SimpleNamespace(train=data.train.subset(torch.arange(64)), val=data.val)


def settings(removal: float, soft: float = 0.5, every: int = 1) -> dict:
    return {"dec": removal, "soft": soft, "every": every}


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class ShiftedAct(nn.Module):
    """A custom learnable activation with f(0) ≠ 0 (stands in for LMA's learnable units).

    Scalar (0-dim) parameters: torch-pruning treats an *indexed* parameter vector as prunable
    channels (it would slice it), which is a limitation of the shared channel-group builder.
    """

    def __init__(self):
        super().__init__()
        self.negative_slope = nn.Parameter(torch.tensor(0.1))
        self.shift = nn.Parameter(torch.tensor(0.05))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + self.negative_slope * torch.clamp(x, max=0.0) + self.shift


def replace(model: nn.Module, kind: type, make) -> nn.Module:
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, kind):
                setattr(module, child_name, make(child))
    return model


def factorise_one_conv(model: nn.Module) -> nn.Module:
    """Replace the first 3x3 conv with c_in == c_out by Sequential(1x1, 3x3, 1x1), as HOS/Tucker-2 does."""
    for module in model.modules():
        for name, child in list(module.named_children()):
            c, r = getattr(child, "in_channels", 0), 4
            if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and c == child.out_channels > r:
                setattr(module, name, nn.Sequential(
                    nn.Conv2d(c, r, 1, bias=False),
                    nn.Conv2d(r, r, 3, child.stride, 1, bias=False),
                    nn.Conv2d(r, c, 1, bias=child.bias is not None)))
                return model
    raise AssertionError("no conv to factorise")


# ---- the parameter target ------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("removal", [0.12, 0.4])
def test_sfp_hits_the_parameter_target_and_keeps_accuracy(task_name, removal):
    task, data, model = pretrained(task_name)
    p0, f0 = count_params(model), count_flops(model, task.input_shape)
    convs0 = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    out = SFP.compress(model, settings(removal), make_context(task, data, model, removal))
    assert abs((1 - count_params(out) / p0) - removal) < 0.01
    assert count_flops(out, task.input_shape) < f0
    assert sum(m.out_channels for m in out.modules() if isinstance(m, nn.Conv2d)) < convs0  # physically thinner
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes + 20  # far above chance
    torch.save(out, io.BytesIO())


def test_removal_is_relative_to_the_original_model():
    task, data, model = pretrained("synthetic")
    original = count_params(model)
    first = SFP.compress(model, settings(0.4, soft=0.25), make_context(task, small(data), model, 0.4, options=FAST))
    second = SFP.compress(first, settings(0.2, soft=0.25),
                          make_context(task, small(data), first, 0.2, original_params=original, options=FAST))
    assert abs(count_params(second) / original - 0.4) < 0.02


def test_unreachable_target_returns_what_it_can():
    """keep is floored at 0.1 of the current model; a tiny model cannot lose more than down to 1 channel per group."""
    task, data, model = pretrained("synthetic-vgg")
    p0 = count_params(model)
    out = SFP.compress(model, settings(0.99, soft=0.25), make_context(task, small(data), model, 0.99, options=FAST))
    assert count_params(out) < p0
    assert all(m.out_channels >= 1 for m in out.modules() if isinstance(m, nn.Conv2d))


def test_counts_are_uniform_across_groups_and_sqrt_sizing_follows_the_code():
    task, _, model = pretrained("synthetic")
    _, groups = channel_groups(model, torch.zeros(1, *task.input_shape))
    counts, plan = sfp.group_counts(model, groups, 0.6)
    ratios = [k / g.size for k, g in zip(counts, groups)]
    assert max(ratios) - min(ratios) <= max(1 / g.size for g in groups) + 1e-9  # water-filled: one ratio
    assert abs(plan.keep_ratio - 0.6) < 0.01
    sqrt_counts, _ = sfp.group_counts(model, groups, 0.6, sizing="sqrt")
    assert sqrt_counts == [int(g.size * (1 - math.sqrt(0.6))) for g in groups]


# ---- soft masks ----------------------------------------------------------------------------------

def _recording_masks(monkeypatch) -> list[dict]:
    """Wrap sfp.apply_masks: record the weights before each mask step and the channels it zeroed."""
    calls: list[dict] = []
    real = sfp.apply_masks

    def wrapper(groups, counts, mode="channel"):
        before = [[c.weight.detach().clone() for c in g.producers()] for g in groups]
        selected = real(groups, counts, mode)
        calls.append({"groups": groups, "selected": selected, "before": before, "mode": mode})
        for g, idx in zip(groups, selected):  # masked filters are exactly zero right after the mask step
            if len(idx) == 0:
                continue
            for conv in g.producers():
                assert torch.all(conv.weight[idx] == 0)
            for bn in g.batchnorms():
                assert (bn.weight[idx] == 0).all() == (mode == "channel")
        return selected

    monkeypatch.setattr(sfp, "apply_masks", wrapper)
    return calls


@pytest.mark.parametrize("mode", ["channel", "filter"])
def test_masked_filters_are_zero_and_recover(monkeypatch, mode):
    calls = _recording_masks(monkeypatch)
    task, data, model = pretrained("synthetic")
    ctx = make_context(task, small(data), model, 0.3, options={**FAST, "mask": mode})
    SFP.compress(model, settings(0.3, soft=0.5, every=1), ctx)
    assert len(calls) == 2
    first, second = calls
    recovered = 0
    for gi, idx in enumerate(first["selected"]):
        if len(idx):
            recovered += sum(int((w[idx].abs().flatten(1).sum(1) > 0).sum()) for w in second["before"][gi])
    assert recovered > 0  # zeroed filters were updated by the next epoch's training


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_channel_mask_computes_exactly_what_the_pruned_model_computes(task_name):
    """Zeroing every slice the hard prune removes: masked logits == pruned logits, even with f(0) ≠ 0."""
    task, data, model = pretrained(task_name)
    replace(model, nn.ReLU, lambda _: ShiftedAct())
    model.eval()
    _, groups = channel_groups(model, torch.zeros(1, *task.input_shape))
    counts, plan = sfp.group_counts(model, groups, 0.5)
    selected = sfp.apply_masks(groups, counts)
    masked = model(data.val.x[:64])
    apply_plan(groups, PruningPlan(selected, plan.params_before, plan.params_after))
    assert count_params(model) == plan.params_after
    assert torch.allclose(model(data.val.x[:64]), masked, atol=1e-5)


def test_every_sets_how_often_masks_are_applied(monkeypatch):
    assert sfp.mask_epochs(6, 1) == [1, 2, 3, 4, 5, 6]
    assert sfp.mask_epochs(6, 3) == [1, 4, 6]  # the code's 0-based e % 3 == 0 or last
    assert sfp.mask_epochs(6, 5) == [1, 6]
    calls = _recording_masks(monkeypatch)
    counts, last_seen = {}, {}
    for every in (1, 3, 5):
        task, data, model = pretrained("synthetic")
        ctx = make_context(task, small(data), model, 0.2, options=FAST)
        SFP.compress(model, settings(0.2, soft=1.5, every=every), ctx)
        counts[every] = len(calls)
        last_seen[every] = torch.cat([w.flatten() for ws in calls[-1]["before"] for w in ws])
        calls.clear()
    assert counts == {1: 6, 3: 3, 5: 2}
    # the weights the final mask step sees differ: fewer intermediate masks, different training
    assert not torch.equal(last_seen[1], last_seen[3]) and not torch.equal(last_seen[3], last_seen[5])


def test_soft_sets_the_epochs_of_soft_training():
    trained = {}
    for soft in (0.1, 0.25, 0.5):
        task, data, model = pretrained("synthetic")
        ctx = make_context(task, small(data), model, 0.2, options=FAST)
        real = ctx.fine_tune
        log = []

        def recording(m, epochs, *args, _real=real, _log=log, **kwargs):
            result = _real(m, epochs, *args, **kwargs)
            _log.append((kwargs.get("desc"), result.epochs))
            return result

        ctx.fine_tune = recording
        SFP.compress(model, settings(0.2, soft=soft), ctx)
        trained[soft] = sum(e for desc, e in log if desc == "SFP soft pruning")
    assert trained == {0.1: 0.0, 0.25: 1.0, 0.5: 2.0}  # int(soft · E_pre) with E_pre = 4; 0 → prune at once


def test_final_finetune_default_follows_the_code_and_scales_down():
    assert sfp.final_finetune_epochs(50) == 3 and sfp.final_finetune_epochs(200) == 5
    assert sfp.final_finetune_epochs(4) == pytest.approx(0.24)


def test_same_seed_same_numbers():
    results = []
    for _ in range(2):
        task, data, model = pretrained("synthetic")
        out = SFP.compress(model, settings(0.2), make_context(task, small(data), model, 0.2, seed=7))
        results.append(flat(out))
    assert torch.equal(results[0], results[1])


# ---- chaining ------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_chains_with_ns_both_ways(task_name):
    task, data, model = pretrained(task_name)
    original = count_params(model)
    ns = NS.compress(model, {"ft": 0.1, "dec": 0.2, "max_prune": 0.9}, make_context(task, data, model, 0.2))
    after_sfp = SFP.compress(ns, settings(0.2, soft=0.25),
                             make_context(task, small(data), ns, 0.2, original_params=original, options=FAST))
    assert abs(count_params(after_sfp) / original - 0.6) < 0.02
    after_ns = NS.compress(after_sfp, {"ft": 0.1, "dec": 0.1, "max_prune": 0.9},
                           make_context(task, data, after_sfp, 0.1, original_params=original))
    assert abs(count_params(after_ns) / original - 0.5) < 0.02
    count_flops(after_ns, task.input_shape)


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_prunes_factorised_convs_and_custom_activations(task_name):
    task, data, model = pretrained(task_name)
    factorise_one_conv(model)
    replace(model, nn.ReLU, lambda _: ShiftedAct())
    p0 = count_params(model)
    out = SFP.compress(model, settings(0.3, soft=0.25), make_context(task, small(data), model, 0.3))
    assert abs((1 - count_params(out) / p0) - 0.3) < 0.02
    assert any(isinstance(m, ShiftedAct) for m in out.modules())
    assert count_flops(out, task.input_shape) > 0
    torch.save(out, io.BytesIO())
    NS.compress(out, {"ft": 0.0, "dec": 0.1, "max_prune": 0.9}, make_context(task, data, out, 0.1))


def test_prunes_a_model_with_lma_activations():
    """The LMA method's own activation units (skipped if that module is absent)."""
    lma = pytest.importorskip("compressors.lma")
    task, data, model = pretrained("synthetic")
    replace(model, nn.ReLU, lambda _: lma.LMAUnit(8))
    p0 = count_params(model)
    out = SFP.compress(model, settings(0.3, soft=0.25), make_context(task, small(data), model, 0.3))
    assert abs((1 - count_params(out) / p0) - 0.3) < 0.02
    assert sum(isinstance(m, lma.LMAUnit) for m in out.modules()) == 7
    NS.compress(out, {"ft": 0.0, "dec": 0.1, "max_prune": 0.9}, make_context(task, data, out, 0.1))


def test_sfp_learning_rate_is_the_codes_0_025_on_every_task(monkeypatch):
    """methods.md C4: lr 0.025 for the soft stage and the final fine-tune, also where task.lr is 0.01."""
    import compressors.base as base
    from automc_env.tasks import with_options
    task, data, model = pretrained("synthetic")
    paper_like = with_options(task, lr=0.01)  # the paper tasks' pre-training lr
    seen, real = [], base.train

    def spy(*args, **kwargs):
        seen.append(kwargs["lr"])
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "train", spy)
    SFP.compress(model, {"dec": 0.2, "soft": 0.5, "every": 1}, make_context(paper_like, data, model, 0.2))
    assert seen and all(lr == 0.025 for lr in seen)
