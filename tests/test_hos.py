"""HOS: parameter target, every hyperparameter's effect, Tucker-2 correctness, reproducibility, chaining."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

import compressors.hos as hos_module
import compressors.ns  # noqa: F401  (registers NS for the chaining tests)
from automc_env.metrics import accuracy, count_flops, count_params
from compressors.base import get_compressor
from compressors.pruning import channel_groups
from tests.conftest import make_context, pretrained

HOS = get_compressor("HOS")
NS = get_compressor("NS")
BASE = {"ft": 0.25, "dec": 0.3, "layer": "P2", "filter": "k34", "aux": 0.25, "mse_weight": 1}


def settings(**changes) -> dict:
    return {**BASE, **changes}


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def cores(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if getattr(m, "tucker_core", False)]


def run(task_name: str, removal: float, seed: int = 0, options: dict | None = None, **changes):
    task, data, model = pretrained(task_name)
    ctx = make_context(task, data, model, removal, seed=seed, options=options)
    return task, data, model, HOS.compress(model, settings(dec=removal, **changes), ctx)


# ---- size -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("removal", [0.04, 0.4])
def test_hos_hits_the_parameter_target_and_keeps_accuracy(task_name, removal):
    task, data, model = pretrained(task_name)
    p0, f0 = count_params(model), count_flops(model, task.input_shape)
    out = HOS.compress(model, settings(dec=removal, ft=0.5, aux=0.5), make_context(task, data, model, removal))
    assert abs((1 - count_params(out) / p0) - removal) < 0.01, (p0, count_params(out))
    assert count_flops(out, task.input_shape) < f0
    assert accuracy(out, data.val.x, data.val.y) > 100 / task.num_classes + 20  # far above chance
    assert all(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) for m in out.modules()
               if list(m.parameters(recurse=False)))  # only standard layers carry weights
    if removal == 0.4:
        assert cores(out), "a 40 % step must factorise convs (stage 2)"


# ---- hyperparameters ------------------------------------------------------------------------------

def _groups(task_name: str):
    task, _, model = pretrained(task_name)
    return model, channel_groups(model, torch.zeros(1, *task.input_shape))[1]


def test_layer_criterion_changes_the_per_layer_allocation():
    model, groups = _groups("synthetic")
    kept = {layer: hos_module.plan_stage1(model, groups, 0.6 ** 0.25, layer, "k34").kept
            for layer in hos_module.LAYER_CRITERIA}
    assert kept["P1"] != kept["P2"] and kept["P2"] != kept["P3"] and kept["P1"] != kept["P3"], kept


def test_filter_criterion_changes_the_selected_channels():
    model, groups = _groups("synthetic-vgg")
    removed = {f: [r.tolist() for r in hos_module.plan_stage1(model, groups, 0.6 ** 0.25, "P2", f).plan.remove]
               for f in hos_module.FILTER_CRITERIA}
    assert removed["l1norm"] != removed["k34"] != removed["skew_kur"] != removed["l1norm"]
    # same counts per group (HP11 decides those), different channels (HP12 decides which)
    assert [len(r) for r in removed["l1norm"]] == [len(r) for r in removed["k34"]]


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_layer_and_filter_criteria_matter_at_the_smallest_step(task_name):
    """dec = 0.04: the code's 0.1-rounded fractions remove nothing in stage 1, which made HP11 and HP12
    inert (bit-identical models); the proportional allocation makes every criterion count."""
    models = {}
    p0 = count_params(pretrained(task_name)[2])
    for layer, filt in [("P1", "l1norm"), ("P2", "l1norm"), ("P3", "l1norm"), ("P2", "k34")]:
        out = run(task_name, 0.04, layer=layer, filter=filt, ft=0.0, aux=0.0)[3]
        assert abs((1 - count_params(out) / p0) - 0.04) < 0.01
        models[(layer, filt)] = flat(out)
    distinct = {tuple(v.tolist()) for v in models.values()}
    # two statistics may still agree on which layer is the least Gaussian (the one a tiny step prunes)
    assert len(distinct) >= 3, models.keys()
    assert not torch.equal(models[("P2", "l1norm")], models[("P2", "k34")])


def test_layer_fractions_follow_the_code_formula():
    """T_min = min(2, W), p = ceil(10·(W − T_min)/(c·(T_max − T_min)))/10; most non-Gaussian layer pruned most."""
    coef, p = hos_module.layer_fractions([0.0, 5.0, 10.0], [10, 10, 10], channel_keep=0.8)
    assert p[0] == 0 and p[0] <= p[1] <= p[2] < 1
    assert abs(sum(int(10 * (1 - f)) for f in p) / 30 - 0.8) < 0.05
    expected = np.ceil(10 * (np.array([0.0, 5.0, 10.0]) / 10.0) / coef) / 10
    assert list(p) == pytest.approx(list(expected))


def test_aux_mse_ft_and_buggy_target_change_the_trained_weights():
    reference = flat(run("synthetic-vgg", 0.3, ft=0.0)[3])
    no_aux = flat(run("synthetic-vgg", 0.3, ft=0.0, aux=0.0)[3])
    mse5 = flat(run("synthetic-vgg", 0.3, ft=0.0, mse_weight=5)[3])
    stale = flat(run("synthetic-vgg", 0.3, ft=0.0, options={"hos_buggy_target": True})[3])
    with_ft = flat(run("synthetic-vgg", 0.3, ft=0.25)[3])
    for other in (no_aux, mse5, stale, with_ft):
        assert other.shape == reference.shape  # stages 1-2 do not depend on these settings
        assert not torch.allclose(other, reference)


def test_same_seed_same_numbers():
    a = flat(run("synthetic", 0.2, seed=3)[3])
    b = flat(run("synthetic", 0.2, seed=3)[3])
    assert torch.equal(a, b)


# ---- Tucker-2 -------------------------------------------------------------------------------------

def test_full_rank_tucker2_reproduces_the_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=True)
    x = torch.randn(4, 8, 9, 9)
    full = hos_module.tucker2(conv, 12, 8)
    assert torch.allclose(full(x), conv(x), atol=1e-5)
    assert full[1].stride == (2, 2) and full[1].tucker_core and full[0].bias is None
    with torch.no_grad():
        errors = [float((hos_module.tucker2(conv, r, r)(x) - conv(x)).norm() / conv(x).norm()) for r in (2, 4, 6)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_rank_formula_gives_the_compression_factor():
    conv = nn.Conv2d(64, 128, 3, bias=False)
    for x in (2.0, 4.0):
        r4, r3 = hos_module.tucker_ranks(128, 64, 9, x)
        assert abs(hos_module.tucker_params(conv, r4, r3) * x / conv.weight.numel() - 1) < 0.05
        assert r4 >= r3  # c_out > c_in: β > 1


# ---- chaining -------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_ns_then_hos_then_ns(task_name):
    task, data, model = pretrained(task_name)
    original = count_params(model)
    m1 = NS.compress(model, {"ft": 0.1, "dec": 0.2, "max_prune": 0.9}, make_context(task, data, model, 0.2))
    m2 = HOS.compress(m1, settings(dec=0.2, ft=0.1, aux=0.1),
                      make_context(task, data, m1, 0.2, original_params=original))
    assert abs(count_params(m2) / original - 0.6) < 0.01
    assert cores(m2)
    f2 = count_flops(m2, task.input_shape)
    m3 = NS.compress(m2, {"ft": 0.1, "dec": 0.2, "max_prune": 0.9},
                     make_context(task, data, m2, 0.2, original_params=original))
    assert abs(count_params(m3) / original - 0.4) < 0.02
    assert count_flops(m3, task.input_shape) < f2  # NS really pruned the HOS output


def test_hos_after_hos_prunes_rank_channels_instead_of_factorising_again():
    task, data, model = pretrained("synthetic-vgg")
    original = count_params(model)
    m1 = HOS.compress(model, settings(dec=0.3, ft=0.1, aux=0.1), make_context(task, data, model, 0.3))
    ranks_before = [(c.in_channels, c.out_channels) for c in cores(m1)]
    m2 = HOS.compress(m1, settings(dec=0.3, ft=0.1, aux=0.1),
                      make_context(task, data, m1, 0.3, original_params=original))
    assert abs(count_params(m2) / original - 0.4) < 0.01
    ranks_after = [(c.in_channels, c.out_channels) for c in cores(m2)]
    assert len(ranks_after) == len(ranks_before)  # nothing factorised twice
    assert sum(map(sum, ranks_after)) < sum(map(sum, ranks_before))  # rank channels were pruned


class ScaledHinge(nn.Module):
    """A custom activation with a learnable parameter, standing in for LMA's units."""

    def __init__(self):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.slope * x)


def test_custom_activations_and_an_unmarked_factorisation_are_accepted():
    task, data, model = pretrained("synthetic-vgg")
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, ScaledHinge())
    # a HOS-like factorisation made elsewhere (no marker): its core must not be factorised again
    model.features[3] = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.Conv2d(8, 8, 3, padding=1, bias=False),
                                      nn.Conv2d(8, 16, 1))
    p0 = count_params(model)
    out = HOS.compress(model, settings(dec=0.3, ft=0.1, aux=0.1), make_context(task, data, model, 0.3))
    assert abs((1 - count_params(out) / p0) - 0.3) < 0.01
    assert isinstance(out.features[3], nn.Sequential) and isinstance(out.features[3][1], nn.Conv2d)
    assert sum(isinstance(m, ScaledHinge) for m in out.modules()) == 6
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(data.val.x[:4]), out.eval()(data.val.x[:4]))


def test_bad_criteria_are_rejected():
    task, data, model = pretrained("synthetic-vgg")
    with pytest.raises(ValueError, match="HP11"):
        HOS.compress(model, settings(layer="P4"), make_context(task, data, model, 0.3))
    with pytest.raises(ValueError, match="HP12"):
        HOS.compress(model, settings(filter="l2"), make_context(task, data, model, 0.3))
