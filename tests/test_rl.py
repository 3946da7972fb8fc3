"""RL agents (REINFORCE controller, MaskablePPO, PPO): budget, valid Pareto sets, determinism, resume, errors.

Each test keeps its own computations (a module-scoped store per pytest-xdist worker): the first search
computes at most its budget's steps, and every repeat (same seed, resume) replays them from the store.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.base import Budget, SearchResult
from agents.rl import EvaluatorEnv, MaskablePPOAgent, PPOAgent, ReinforceAgent, planned_valid
from automc_env.env import AutoMCEnv
from automc_env.store import EvaluationStore

MAX_LEN = 2  # short schemes: a tiny budget still covers several episodes / controller updates


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return EvaluationStore(tmp_path_factory.mktemp("rl_store"))


def make_env(store) -> AutoMCEnv:
    return AutoMCEnv(task="synthetic", store=store, max_len=MAX_LEN, progress=False)


def key(result: SearchResult) -> list[tuple]:
    return [(tuple(e.scheme), e.acc, e.params, e.PR) for e in result.evaluations]


def check_result(result: SearchResult, env: AutoMCEnv, budget: int) -> None:
    assert result.spent["executions"] <= budget
    assert 0 < len(result.evaluations) <= budget
    for e in result.evaluations:   # every scheme the agent ran is one the environment allows
        assert 1 <= len(e.scheme) <= env.max_len
        assert planned_valid(env, e.scheme)
    gamma = result.gamma
    front = result.pareto()
    if any(e.PR >= gamma for e in result.evaluations):
        assert front and result.best() is not None
    for e in front:
        assert e.PR >= gamma
        assert not any(o.AR >= e.AR and o.PR >= e.PR and (o.AR > e.AR or o.PR > e.PR)
                       for o in result.evaluations if o.PR >= gamma)


@pytest.mark.parametrize("make_agent", [lambda: ReinforceAgent(),
                                        lambda: MaskablePPOAgent(n_steps=4, batch_size=4, n_epochs=1),
                                        lambda: PPOAgent(n_steps=4, batch_size=4, n_epochs=1)],
                         ids=["rl", "ppo-mask", "ppo"])
def test_budget_determinism_and_resume(store, make_agent):
    env = make_env(store)
    agent = make_agent()
    full = agent.search(env, Budget(executions=4), seed=0)
    check_result(full, env, 4)
    assert full.agent == agent.name and full.meta["agent_options"] == agent.options()
    assert full.meta["stopped"] == "budget"

    again = make_agent().search(make_env(store), Budget(executions=4), seed=0)  # fresh instance, same store
    assert key(again) == key(full)

    part = make_agent().search(env, Budget(executions=2), seed=0)
    assert part.spent["executions"] <= 2
    assert key(part) == key(full)[:len(part.evaluations)]
    resumed = make_agent().search(env, Budget(executions=4), seed=0, result=part)
    assert resumed is part
    assert key(resumed) == key(full)
    assert resumed.spent["executions"] == full.spent["executions"]


def test_reinforce_reward0_parity_mode(store):
    env = make_env(store)
    result = ReinforceAgent(invalid="reward0").search(env, Budget(executions=2), seed=1)
    check_result(result, env, 2)
    assert result.meta["agent_options"]["invalid"] == "reward0"


def test_stall_guard_stops_searches_that_spend_nothing(store):
    """Revisits and invalid proposals cost nothing, so a search making only those must stop by itself.

    With pr_cap = 0.01 no strategy is allowed: every proposal is invalid and nothing is ever run.
    """
    env = AutoMCEnv(task="synthetic", store=store, max_len=MAX_LEN, pr_cap=0.01, progress=False)
    rl = ReinforceAgent(invalid="reward0", max_stall=3).search(env, Budget(executions=5), seed=0)
    assert rl.meta["stopped"] == "stalled" and rl.meta["samples"] == 3 and not rl.evaluations
    ppo = PPOAgent(n_steps=4, batch_size=4, max_stall=3).search(env, Budget(executions=5), seed=0)
    assert ppo.meta["stopped"] == "stalled" and ppo.meta["invalid_actions"] == 3 and not ppo.evaluations
    with pytest.raises(RuntimeError, match="no strategy is valid"):
        ReinforceAgent().search(env, Budget(executions=5), seed=0)


def test_evaluator_env_invalid_action_penalty(store):
    from agents.base import Evaluator

    # pr_cap 0.5: after one of the largest-removal strategies (0.4 of the params) it is invalid again
    env = AutoMCEnv(task="synthetic", store=store, max_len=MAX_LEN, pr_cap=0.5, progress=False)
    evaluator = Evaluator(env, Budget(executions=1), agent="ppo", seed=0)
    wrapped = EvaluatorEnv(env, evaluator, invalid_penalty=2.0)
    wrapped.reset()
    mask = wrapped.action_masks()
    removal = np.array([env.space[i].removal(env.task.gamma) for i in range(len(env.space))])
    big = int(np.flatnonzero(mask & (removal == removal[mask].max()))[0])
    obs, reward, terminated, _, info = wrapped.step(big)
    assert not terminated and evaluator.executions == 1 and info["scheme"] == [big]
    assert evaluator.result.evaluations[-1].scheme == [big]
    assert not wrapped.action_masks()[big]
    obs, reward, terminated, _, info = wrapped.step(big)
    assert terminated and reward == -2.0 and info["invalid_action"] == big and info["scheme"] == [big]
    assert evaluator.executions == 1 and len(evaluator.result.evaluations) == 1   # nothing evaluated


@pytest.mark.parametrize("factory, options, match", [
    (ReinforceAgent, {"invalid": "skip"}, "invalid"),
    (ReinforceAgent, {"learning_rate": 0}, "learning_rate"),
    (ReinforceAgent, {"ema_decay": 1.0}, "ema_decay"),
    (ReinforceAgent, {"hidden": 0}, "hidden"),
    (ReinforceAgent, {"max_stall": 0}, "max_stall"),
    (MaskablePPOAgent, {"n_steps": 1}, "n_steps"),
    (MaskablePPOAgent, {"n_steps": 8, "batch_size": 16}, "batch_size"),
    (MaskablePPOAgent, {"net_arch": []}, "net_arch"),
    (PPOAgent, {"invalid_penalty": -1}, "invalid_penalty"),
    (PPOAgent, {"learning_rate": "fast"}, "learning_rate"),
])
def test_bad_options(factory, options, match):
    with pytest.raises(ValueError, match=match):
        factory(**options)


def test_unknown_option_and_max_len_errors(store):
    with pytest.raises(TypeError):
        ReinforceAgent(lr=0.1)
    with pytest.raises(ValueError, match="max_len"):
        ReinforceAgent(max_len=MAX_LEN + 1).search(make_env(store), Budget(executions=1), seed=0)
