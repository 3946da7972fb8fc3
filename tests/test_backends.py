"""Table backend: answers only real results (data set and store), identically to the live environment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from automc_env import dataset as ds
from automc_env.backends.table import TableMiss
from automc_env.env import AutoMCEnv
from automc_env.space import get_space

SPACE = get_space("paper")
NS = SPACE.parse("NS(ft=0.1,dec=0.12,max=0.9)").id
SFP = SPACE.parse("SFP(dec=0.2,soft=0.1,every=1)").id
LFB_CE = SPACE.parse("LFB(ft=0.2,dec=0.12,factor=1,loss=CE)").id
LFB_NLL = SPACE.parse("LFB(ft=0.2,dec=0.12,factor=1,loss=NLL)").id


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A live synthetic environment that computed a few schemes into a store."""
    store = tmp_path_factory.mktemp("table-store")
    live = AutoMCEnv(task="synthetic", store=store)
    infos = {tuple(s): live.evaluate(s)[-1] for s in ([NS, SFP], [LFB_CE])}
    return store, live, infos


def test_table_answers_stored_steps_exactly_like_live(stored):
    store, live, infos = stored
    table = AutoMCEnv(task="synthetic", backend="table", store=store)
    assert table.fingerprint == live.fingerprint and table.base == {k: live.base[k] for k in table.base}
    assert table.base_model is None and table.data is None          # no weights, no data set loaded
    for scheme, info in infos.items():
        got = table.evaluate(list(scheme))[-1]
        assert got["backend"] == "table" and got["cached"] is True
        for key in ("acc", "params", "flops", "AR", "PR", "FR", "cost"):
            assert got[key] == info[key], key
    # spaces, masks and rewards are the live environment's
    assert table.observation_space == live.observation_space and table.action_space == live.action_space
    table.reset(options={"scheme": [NS]})
    live.reset(options={"scheme": [NS]})
    assert (table.action_masks() == live.action_masks()).all()
    _, r_table, *_ = table.step(SFP)
    _, r_live, *_ = live.step(SFP)
    assert r_table == r_live


def test_table_matches_equivalent_strategies_and_refuses_what_it_lacks(stored):
    store, _, infos = stored
    table = AutoMCEnv(task="synthetic", backend="table", store=store)
    assert table.evaluate([LFB_NLL])[-1]["acc"] == infos[(LFB_CE,)]["acc"]   # NLL = CE: the same real step
    table.reset(options={"scheme": [NS]})
    with pytest.raises(TableMiss, match=r"longest stored prefix is \[%d\] \(1 of 2 steps\)" % NS):
        table.step(LFB_CE)
    with pytest.raises(TableMiss, match="not even its first step"):
        table.reset()
        table.step(SPACE.parse("HOS(ft=0.1,dec=0.04,layer=P1,filter=l1norm,aux=0.3,mse=1)").id)
    with pytest.raises(RuntimeError, match="metrics, not models"):
        _ = table.model


def test_bad_backend_and_unsupported_tasks_are_rejected():
    with pytest.raises(ValueError, match="unknown backend"):
        AutoMCEnv(task="synthetic", backend="oracle")
    with pytest.raises(ValueError, match="needs the shipped base model"):
        AutoMCEnv(task="synthetic", seed=3, backend="table", store=False)


def test_released_digits_steps_reproduce_on_this_machine():
    """Two records of the shipped data set, recomputed live at one thread, give the same numbers bit
    for bit: the data set is version 1, and version 1 still computes what it says."""
    records = sorted((r for r in ds.load_records("digits", designs=["stratified"]) if r["depth"] == 1
                      and r["method"] in ("NS", "SFP")), key=lambda r: r["cost"])[:2]
    assert len(records) == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = AutoMCEnv(task="digits", store=False)
        for r in records:
            _, info = env.reset(options={"scheme": r["scheme"]})
            assert (info["acc"], info["params"], info["flops"]) == (r["acc"], r["params"], r["flops"]), r["strategy"]
            assert env.test_accuracy() == r["test_acc"] and info["cost"] == r["cost"]
    finally:
        torch.set_num_threads(threads)


def test_finals_design_harvests_every_prefix_of_the_reported_schemes_once(tmp_path):
    """``automc collect --design finals --from FILES``: the final schemes of result files (and their
    prefixes) become records of design ``finals``, each step once; a re-run adds nothing."""
    from automc_env.executor import make_executor

    env = AutoMCEnv(task="synthetic", store=tmp_path / "store")
    valid = [int(a) for a in np.flatnonzero(env.action_masks())]
    a, b, c = valid[0], valid[len(valid) // 2], valid[-1]
    finals = [[a, b], [a], [c]]
    result = tmp_path / "random-seed0.json"
    result.write_text(json.dumps({"entry": {"final": [{"scheme": s} for s in finals],
                                            "evaluations": [{"scheme": [b]}]}}))
    with pytest.raises(ValueError, match="needs result files"):
        ds.collect(env, "finals", make_executor(0), root=tmp_path / "data")
    run = lambda: ds.collect(env, "finals", make_executor(0), root=tmp_path / "data",  # noqa: E731
                             trajectories=[result], log=lambda m: None)
    first = run()
    records = ds.load_records("synthetic", root=tmp_path / "data")
    assert first.finished and {tuple(r["scheme"]) for r in records} == {(a,), (a, b), (c,)}
    assert {r["design"] for r in records} == {"finals"} and len(records) == 3
    assert run().new == 0 and len(ds.load_records("synthetic", root=tmp_path / "data")) == 3
