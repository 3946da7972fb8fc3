"""Every agent at the protocol's budget with the protocol's settings acts as itself and its result
file validates (re-run included); a failing compressor is charged, recorded and survived by all."""

from __future__ import annotations

import numpy as np
import pytest

from agents import leaderboard as L
from agents.base import Budget
from agents.leaderboard.bench import bench_store, make_entry
from agents.runner import AGENTS, make_agent
from automc_env import cost
from automc_env.env import AutoMCEnv
from automc_env.space import get_space
from automc_env.store import EvaluationStore

EMB = np.random.default_rng(0).standard_normal((len(get_space("paper")) + 1, 32)).astype(np.float32)
# what "acting as itself" means for each agent, read from its result file's agent_stats
ACTS = {
    "random": ("trials", 2), "tpe": ("tpe_trials", 1), "nsga2": ("generations", 2), "rvea": ("generations", 2),
    "ppo-mask": ("policy_updates", 2), "ppo": ("policy_updates", 2), "rl": ("samples", 2), "automc": ("rounds", 3),
    # the AutoMC ablations, registered as agents of their own (non_progressive counts sampled schemes as rounds)
    "automc-no_kg": ("rounds", 3), "automc-no_exp": ("rounds", 3), "automc-legr_only": ("rounds", 3),
    "automc-non_progressive": ("rounds", 2),
}
# about half of the grid fails: options the LFB, LMA and LeGR compressors reject before doing any work
FAILING = {"LFB": {"init": "bogus"}, "LMA": {"init": "bogus"}, "LeGR": {"population": "bogus"}}


def test_every_registered_agent_is_covered():
    assert set(ACTS) == set(AGENTS) == set(L.get_protocol("synthetic").agent_settings)


@pytest.mark.parametrize("agent", list(ACTS))
def test_agent_acts_as_itself_at_the_protocol_budget(agent, tmp_path):
    protocol = L.get_protocol("synthetic")
    extra = {agent: {"embeddings": EMB}} if agent.startswith("automc") else {}   # no pykeen build in tests
    [path] = L.run_bench("synthetic", [agent], [0], root=tmp_path, progress=False, log=lambda *_: None,
                         agent_options=extra)
    entry = L.load_entry(path)
    assert entry["protocol"]["followed"] and entry["environment"]["torch_threads"] == 1
    assert protocol.agent_settings[agent].items() <= entry["agent_config"]["options"].items()
    key, least = ACTS[agent]
    assert entry["agent_stats"][key] >= least, f"{agent}: {key} = {entry['agent_stats'][key]} at the protocol budget"
    # replays come from the bench's own store here (a fresh replay is tested in test_leaderboard.py);
    # what this checks is the invariants and that re-running the seeded search reproduces the trajectory
    report = L.validate_entry(path, env=AutoMCEnv(task="synthetic", store=bench_store(1), progress=False))
    if agent.startswith("automc"):   # injected embeddings are not JSON: the search cannot be re-run from the file
        assert not report["ok"] and any("cannot be re-run" in p for p in report["problems"])
    else:
        assert report["ok"], report["problems"]
        assert report["rerun"] == "identical" and report["replayed"] == len(entry["evaluations"])


@pytest.fixture(scope="module")
def failing_env(tmp_path_factory):
    return AutoMCEnv(task="synthetic", store=EvaluationStore(tmp_path_factory.mktemp("store")), max_len=2,
                     method_options=FAILING, progress=False)


def small_options(agent: str) -> dict:
    opts = dict(L.get_protocol("synthetic").agent_settings[agent])
    return {**opts, "embeddings": EMB} if agent.startswith("automc") else opts


@pytest.mark.parametrize("agent", list(ACTS))
def test_a_failing_compressor_is_charged_recorded_and_survived(agent, failing_env):
    result = make_agent(agent, **small_options(agent)).search(failing_env, Budget(executions=8), seed=0)
    evaluations = result.evaluations
    failed = [i for i, e in enumerate(evaluations) if e.failed]
    assert failed, f"{agent} met no failing step"
    assert failed[0] < len(evaluations) - 1, f"{agent} stopped at its first failure"
    charge = cost.price({"steps": 1}, failing_env.task)   # the same deterministic charge for every agent
    assert all(evaluations[i].cost == pytest.approx(charge) for i in failed)
    assert [e.execution for e in evaluations] == list(range(1, len(evaluations) + 1))
    assert result.spent["executions"] == len(evaluations) <= 8
    assert result.spent["compute"] == pytest.approx(sum(e.cost for e in evaluations))
    assert not any(e.failed for e in result.pareto(gamma=0.0))
    method = {get_space("paper")[e.scheme[-1]].method for i, e in enumerate(evaluations) if i in failed}
    assert method <= set(FAILING)


def test_a_trajectory_with_failures_replays_and_reruns(failing_env, tmp_path):
    """The validator replays a failed step (it must fail again and cost the same) and re-runs the search."""
    budget = Budget(executions=8)
    result = make_agent("random").search(failing_env, budget, seed=3)
    assert any(e.failed for e in result.evaluations)
    result.meta.update(agent_config={}, rerunnable=True)
    entry = make_entry(failing_env, result, L.get_protocol("synthetic"), {
        "who": "t", "algorithm": "random", "code": "", "environment_modified": True, "tuned": ""}, budget)
    validator = AutoMCEnv(task="synthetic", store=False, max_len=2, method_options=FAILING, progress=False)
    report = L.validate_entry(entry, env=validator)
    assert report["ok"], report["problems"]
    assert report["entry"]["metrics"]["failed"] == sum(e.failed is not None for e in result.evaluations)
    claimed_ok = next(i for i, e in enumerate(entry["evaluations"]) if e["failed"])
    lie = L.validate_entry({**entry, "evaluations": [dict(e, failed=None) if i == claimed_ok else e
                                                     for i, e in enumerate(entry["evaluations"])]}, env=validator)
    assert not lie["ok"] and any("fails on replay" in p for p in lie["problems"]), lie["problems"]
