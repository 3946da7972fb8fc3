"""LFB: filter-basis layers, the parameter target, every hyperparameter, reproducibility and chaining."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compressors.lfb  # noqa: F401  (registers LFB)
import compressors.ns  # noqa: F401  (registers NS)
from automc_env.metrics import accuracy, accuracy_rate, count_flops, count_params
from automc_env.models import PreActBlock
from compressors.base import get_compressor
from compressors.lfb import (BasisPlan, FilterBasisConv, SharedBasis, apply_plan, find_sites, fit_filter_basis,
                             task_loss)
from tests.conftest import make_context, pretrained

LFB = get_compressor("LFB")
NS = get_compressor("NS")


def settings(**kw) -> dict:
    return {"ft": 0.25, "dec": 0.3, "factor": 1.0, "loss": "CE", **kw}


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def lfb_layers(model: nn.Module) -> list[FilterBasisConv]:
    return [m for m in model.modules() if isinstance(m, FilterBasisConv)]


def run(task_name: str, removal: float, seed: int = 0, options: dict | None = None, **kw):
    task, data, model = pretrained(task_name)
    ctx = make_context(task, data, model, removal, seed=seed, options=options)
    return task, data, model, LFB.compress(model, settings(dec=removal, **kw), ctx)


def roundtrip(model: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# ---- the layer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 2, 4])
def test_full_rank_fit_reproduces_the_conv(groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=True)
    parent = nn.Sequential(conv)
    sites = find_sites(parent)
    full = min(6 * groups, 8 // groups * 9)  # the rank bound of the (6·g, 8/g·9) kernel matrix
    apply_plan(sites, BasisPlan(groups, 1.0, [(groups, full)], 0, 0), "fit")
    layer = parent[0]
    assert isinstance(layer, FilterBasisConv) and layer.groups == groups and layer.n_basis == full
    assert isinstance(layer.basis, SharedBasis if groups > 1 else nn.Conv2d)
    x = torch.randn(3, 8, 9, 9)
    assert torch.allclose(layer(x), conv(x), atol=1e-5)
    weight, bias = layer.dense_kernel()
    assert torch.allclose(weight, conv.weight, atol=1e-5) and torch.allclose(bias, conv.bias)


def test_truncated_fit_is_the_best_low_rank_approximation():
    """Rank-nb SVD fit: the error equals the discarded singular values (Eckart–Young)."""
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    basis, coef = fit_filter_basis(w, 2, 5)
    approx = torch.einsum("ojk,kihw->ojihw", coef.reshape(16, 2, 5), basis).reshape(16, 8, 3, 3)
    sv = torch.linalg.svdvals(w.reshape(32, 36))
    assert math.isclose(float((w - approx).pow(2).sum()), float(sv[5:].pow(2).sum()), rel_tol=1e-9)


# ---- HP2 (dec): the parameter target -------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("removal", [0.12, 0.4])
def test_hits_the_parameter_target_with_standard_layers(task_name, removal):
    task, data, model, out = run(task_name, removal, ft=0.5)
    p0 = count_params(pretrained(task_name)[2])
    assert abs((1 - count_params(out) / p0) - removal) < 0.02
    assert count_flops(out, task.input_shape) < count_flops(pretrained(task_name)[2], task.input_shape)
    layers = lfb_layers(out)
    assert layers and all(layer.groups == 1 for layer in layers)  # g = 1 reaches these targets: plain convs
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes + 20


def test_deep_target_down_to_the_keep_floor():
    task, data, model = pretrained("synthetic")
    p0 = count_params(model)
    ctx = make_context(task, data, model, 0.99)  # keep = max(1 − 0.99, 0.1) of the current model
    out = LFB.compress(model, settings(ft=0.0, dec=0.99), ctx)
    assert abs(count_params(out) / p0 - 0.1) < 0.01


def test_unreachable_target_returns_what_it_reached():
    """A model whose parameters sit in its linear layer: LFB can only shrink the one conv."""
    task, data, _ = pretrained("synthetic")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(512, 4))
    p0 = count_params(model)
    out = LFB.compress(model, settings(ft=0.0, dec=0.3), make_context(task, data, model, 0.3))
    assert isinstance(out[0], FilterBasisConv) and 0.0 < 1 - count_params(out) / p0 < 0.05


# ---- HP15 (factor), HP16 (loss), HP1 (ft) ---------------------------------------------------------

def test_loss_definitions():
    torch.manual_seed(0)
    logits, y = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(task_loss("CE", 1.0)(logits, y), ce)
    assert torch.allclose(task_loss("NLL", 1.0)(logits, y), ce)  # NLL on log-softmax = CE
    assert torch.allclose(task_loss("NLL", 1.0, raw_nll=True)(logits, y), -logits[torch.arange(5), y].mean())
    mse = ((logits.softmax(1) - F.one_hot(y, 4).float()) ** 2).mean()
    assert torch.allclose(task_loss("MSE", 1.0)(logits, y), mse)
    assert torch.allclose(task_loss("MSE", 3.0)(logits, y), 3.0 * mse)
    with pytest.raises(ValueError, match="loss type"):
        task_loss("L1", 1.0)


def test_factor_changes_the_trained_weights():
    a = flat(run("synthetic", 0.3, factor=0.5)[3])
    b = flat(run("synthetic", 0.3, factor=3.0)[3])
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_each_loss_type_trains_differently():
    ce = flat(run("synthetic", 0.3, loss="CE")[3])
    nll = flat(run("synthetic", 0.3, loss="NLL")[3])
    mse = flat(run("synthetic", 0.3, loss="MSE")[3])
    raw = flat(run("synthetic", 0.3, loss="NLL", options={"lfb_raw_nll": True})[3])
    assert torch.equal(ce, nll)  # by definition (the code's NLL-on-logits is the parity option)
    assert not torch.allclose(ce, mse) and not torch.allclose(ce, raw) and not torch.allclose(mse, raw)


def test_epochs_change_the_result():
    _, data, _, fitted = run("synthetic", 0.3, ft=0.0)
    _, _, _, trained = run("synthetic", 0.3, ft=0.5)
    assert not torch.allclose(flat(fitted), flat(trained))


# ---- options, reproducibility, AR ---------------------------------------------------------------

def test_fit_init_starts_from_the_current_weights_and_scratch_does_not():
    task, data, model = pretrained("synthetic")
    acc_in = accuracy(model, data.train.x, data.train.y)
    fit = run("synthetic", 0.05, ft=0.0)[3]
    scratch = run("synthetic", 0.05, ft=0.0, options={"init": "scratch"})[3]
    assert flat(fit).shape == flat(scratch).shape and not torch.allclose(flat(fit), flat(scratch))
    acc_fit, acc_scratch = accuracy(fit, data.train.x, data.train.y), accuracy(scratch, data.train.x, data.train.y)
    assert acc_fit > acc_in - 10 and acc_scratch < acc_fit - 30  # a mild truncation keeps most accuracy
    # scratch: the paper's init everywhere (BN scales back to 1, linear weights ~ N(0, 0.01))
    assert all(torch.all(m.weight == 1) for m in scratch.modules() if isinstance(m, nn.BatchNorm2d))
    assert float(scratch.fc.weight.detach().std()) < 0.02


def test_same_seed_same_numbers():
    a = flat(run("synthetic", 0.3, seed=5, options={"init": "scratch"})[3])
    b = flat(run("synthetic", 0.3, seed=5, options={"init": "scratch"})[3])
    c = flat(run("synthetic", 0.3, seed=6, options={"init": "scratch"})[3])
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_accuracy_rate_is_finite_and_above_chance():
    task, data, model, out = run("synthetic-vgg", 0.3, ft=0.5)
    acc_in = accuracy(pretrained("synthetic-vgg")[2], data.val.x, data.val.y)
    acc_out = accuracy(out, data.val.x, data.val.y)
    assert math.isfinite(accuracy_rate(acc_in, acc_out)) and acc_out > 100 / task.num_classes + 10


# ---- chaining -------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_ns_then_lfb_then_ns(task_name):
    task, data, model = pretrained(task_name)
    p0 = count_params(model)
    model = NS.compress(model, {"ft": 0.1, "dec": 0.2, "max_prune": 0.9}, make_context(task, data, model, 0.2))
    out = LFB.compress(model, settings(dec=0.3), make_context(task, data, model, 0.3, original_params=p0))
    assert lfb_layers(out)
    assert abs(count_params(out) / p0 - 0.5) < 0.02  # 0.2 + 0.3 of the original removed
    out = NS.compress(out, {"ft": 0.1, "dec": 0.1, "max_prune": 0.9}, make_context(task, data, out, 0.1, original_params=p0))
    assert abs(count_params(out) / p0 - 0.4) < 0.03
    out = roundtrip(out)
    assert out(data.val.x).shape == (len(data.val.y), task.num_classes)
    count_flops(out, task.input_shape)


def test_lfb_then_lfb_refits_the_basis():
    task, data, model = pretrained("synthetic")
    p0 = count_params(model)
    first = LFB.compress(model, settings(dec=0.3), make_context(task, data, model, 0.3))
    bases = [layer.n_basis for layer in lfb_layers(first)]
    second = LFB.compress(first, settings(dec=0.2), make_context(task, data, first, 0.2, original_params=p0))
    layers = lfb_layers(second)
    assert abs(count_params(second) / p0 - 0.5) < 0.02
    assert not any(isinstance(m, FilterBasisConv) for layer in layers for m in layer.basis.modules())  # never nested
    assert sum(layer.n_basis for layer in layers) < sum(bases)


def test_grouped_basis_is_rigid_but_the_rest_still_prunes():
    task, data, model = pretrained("synthetic-vgg")
    p0 = count_params(model)
    out = LFB.compress(model, settings(dec=0.3), make_context(task, data, model, 0.3, options={"groups": 4}))
    grouped = [layer for layer in lfb_layers(out) if layer.groups == 4]
    assert grouped and abs(count_params(out) / p0 - 0.7) < 0.02
    banks = [(layer.basis.in_channels, layer.n_basis) for layer in grouped]
    out = NS.compress(out, {"ft": 0.1, "dec": 0.1, "max_prune": 0.9}, make_context(task, data, out, 0.1, original_params=p0))
    assert [(layer.basis.in_channels, layer.n_basis) for layer in grouped] == banks  # the shared banks are untouched
    assert count_params(out) < 0.65 * p0  # the channels around them were pruned
    out = roundtrip(out)
    assert out(data.val.x).shape == (len(data.val.y), task.num_classes)


class PiecewiseAct(nn.Module):
    """A stand-in for LMA's learnable activation (a custom module with a parameter)."""

    def __init__(self):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.slope * x)


def tucker_like(conv: nn.Conv2d, rank: int = 8) -> nn.Sequential:
    """A Tucker-2-like replacement nn.Sequential(1x1, k×k core, 1x1), as HOS produces."""
    return nn.Sequential(nn.Conv2d(conv.in_channels, rank, 1, bias=False),
                         nn.Conv2d(rank, rank, 3, conv.stride, 1, bias=False),
                         nn.Conv2d(rank, conv.out_channels, 1, bias=True))


def test_factorisation_core_is_refitted_in_place_with_its_1x1():
    """Core + following 1x1 are one exact k×k conv; at full rank the re-factorised layer is unchanged."""
    torch.manual_seed(0)
    layer = tucker_like(nn.Conv2d(6, 10, 3, stride=2))
    x = torch.randn(2, 6, 9, 9)
    before = layer(x)
    sites = find_sites(nn.Sequential(layer))
    assert [(s.name, s.post) for s in sites] == [("1", "2")] and sites[0].weight.shape == (10, 8, 3, 3)
    apply_plan(sites, BasisPlan(1, 1.0, [(1, 8)], 0, 0), "fit")
    assert [type(m) for m in layer] == [nn.Conv2d] * 3 and layer[1].out_channels == 8  # no nesting, no extra 1x1
    assert torch.allclose(layer(x), before, atol=1e-5)


def test_factorised_and_custom_activation_inputs():
    """HOS-like layers get a smaller inner rank, custom activations are untouched; NS still prunes after."""
    task, data, model = pretrained("synthetic")
    for block in model.blocks:
        block.act1, block.act2 = PiecewiseAct(), PiecewiseAct()
        block.conv1 = tucker_like(block.conv1)
    p0 = count_params(model)
    out = LFB.compress(model, settings(dec=0.3), make_context(task, data, model, 0.3))
    assert abs(count_params(out) / p0 - 0.7) < 0.02
    assert all([type(m) for m in b.conv1] == [nn.Conv2d] * 3 and b.conv1[1].out_channels <= 8 for b in out.blocks)
    assert all(isinstance(b.conv2, FilterBasisConv) and isinstance(b.act1, PiecewiseAct) for b in out.blocks)
    out = NS.compress(out, {"ft": 0.1, "dec": 0.1, "max_prune": 0.9}, make_context(task, data, out, 0.1, original_params=p0))
    out = roundtrip(out)
    assert out(data.val.x).shape == (len(data.val.y), task.num_classes)
