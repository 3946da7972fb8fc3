"""Equivalent strategies (StrategySpace.equivalent) really compute the same step, bit for bit."""

from __future__ import annotations

import pytest
import torch

from automc_env.space import get_space
from compressors import get_compressor
from tests.conftest import make_context, pretrained

SPACE = get_space("paper")


def test_task_independent_equivalences_are_lfb_nll_and_ce_only():
    nll = SPACE.parse("LFB(ft=0.1,dec=0.2,factor=1,loss=NLL)").id
    ce = SPACE.parse("LFB(ft=0.1,dec=0.2,factor=1,loss=CE)").id
    assert SPACE.equivalent(nll) == (nll, ce) and SPACE.canonical(ce) == nll
    classes = {SPACE.equivalent(i) for i in range(len(SPACE))}
    assert len(classes) == len(SPACE) - 125
    assert all(SPACE[c[0]].method == "LFB" for c in classes if len(c) > 1)
    # the parity option gives NLL its own (degenerate) meaning: no longer the same step
    assert SPACE.equivalent(nll, options={"LFB": {"lfb_raw_nll": True}}) == (nll,)


def test_task_equivalences_follow_the_epochs_a_strategy_runs():
    sfp3 = SPACE.parse("SFP(dec=0.2,soft=0.1,every=3)").id
    sfp5 = SPACE.parse("SFP(dec=0.2,soft=0.1,every=5)").id
    assert SPACE.equivalent(sfp3, pretrain_epochs=30) == (sfp3, sfp5)  # 3 epochs: masks after 1 and 3
    assert SPACE.equivalent(sfp3, pretrain_epochs=50) == (sfp3,)       # 5 epochs: {1, 4, 5} vs {1, 5}
    digits = {SPACE.equivalent(i, 30) for i in range(len(SPACE))}
    assert len(digits) == len(SPACE) - 130
    with pytest.raises(IndexError):
        SPACE.equivalent(len(SPACE))


def _first_classes(pretrain_epochs: int) -> dict[str, tuple[int, ...]]:
    """One non-trivial class per method (its two first members) on a task with this E_pre."""
    found: dict[str, tuple[int, ...]] = {}
    for i in range(len(SPACE)):
        c = SPACE.equivalent(i, pretrain_epochs)
        method = SPACE[i].method
        if len(c) > 1 and method not in found and SPACE[c[0]].removal(0.3) <= 0.2:
            found[method] = c[:2]
    return found


@pytest.mark.parametrize("method", ["LMA", "LeGR", "NS", "SFP", "HOS", "LFB"])
def test_equivalent_strategies_give_identical_models(method):
    task, data, _ = pretrained("synthetic")  # E_pre = 4: many multipliers truncate alike
    pair = _first_classes(task.pretrain_epochs)[method]
    states = []
    for i in pair:
        s = SPACE[i]
        _, _, model = pretrained("synthetic")
        ctx = make_context(task, data, model, s.removal(task.gamma), seed=3)
        out = get_compressor(s.method).compress(model, dict(s.settings), ctx)
        states.append(out.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]), [SPACE[i].name for i in pair]


def test_lfb_nll_and_ce_train_the_same_model():
    task, data, _ = pretrained("synthetic")
    states = []
    for loss in ("NLL", "CE"):
        _, _, model = pretrained("synthetic")
        settings = {"ft": 0.5, "dec": 0.2, "factor": 1.5, "loss": loss}  # 2 epochs of training
        out = get_compressor("LFB").compress(model, settings, make_context(task, data, model, 0.2, seed=3))
        states.append(out.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
