"""Random search (Random2 / TPE) and the evolutionary agents (NSGA-II, RVEA) on the synthetic task."""

from __future__ import annotations

import numpy as np
import pytest

from agents.base import Budget, SearchResult
from agents.evolution import NSGA2Search, RVEASearch, decode
from agents.random_search import RandomSearch, TPESearch, removals
from automc_env.env import AutoMCEnv
from automc_env.store import EvaluationStore

AGENTS = {
    "random": lambda: RandomSearch(),
    "tpe": lambda: TPESearch(n_startup_trials=1),  # TPE proper from the second trial on
    "nsga2": lambda: NSGA2Search(population=4),
    "rvea": lambda: RVEASearch(population=4),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> EvaluationStore:
    """One store for the module: repeated searches replay steps instead of recomputing them."""
    return EvaluationStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def env(store) -> AutoMCEnv:
    return AutoMCEnv(task="synthetic", store=store, progress=False)


def schemes(result: SearchResult) -> list[list[int]]:
    return [e.scheme for e in result.evaluations]


def assert_valid_result(result: SearchResult, env: AutoMCEnv, budget: int) -> None:
    assert 0 < result.spent["executions"] <= budget
    assert result.evaluations
    removal = removals(env)
    for e in result.evaluations:
        assert 1 <= len(e.scheme) <= env.max_len
        assert removal[e.scheme].sum() <= env.pr_cap + 1e-9
    gamma = env.task.gamma
    front = result.pareto()
    pool = [e for e in result.evaluations if e.PR >= gamma]
    assert bool(front) == bool(pool)
    for p in front:
        assert p.PR >= gamma
        assert not any(o.acc >= p.acc and o.PR >= p.PR and (o.acc > p.acc or o.PR > p.PR) for o in pool)


def check_agent(name: str, env: AutoMCEnv) -> None:
    """Budget, valid Pareto set, same seed -> same schemes, and resume == uninterrupted run."""
    full = AGENTS[name]().search(env, Budget(executions=4), seed=0)
    assert full.agent == name and full.meta["agent_options"]
    assert_valid_result(full, env, 4)

    # same seed (the store now has every step) -> the same evaluated schemes in the same order
    assert schemes(AGENTS[name]().search(env, Budget(executions=4), seed=0)) == schemes(full)

    # stop at 2 executions, resume to 4 (through a JSON round trip): identical to the uninterrupted run
    part = AGENTS[name]().search(env, Budget(executions=2), seed=0)
    assert part.spent["executions"] <= 2
    assert schemes(part) == schemes(full)[:len(part.evaluations)]
    resumed = AGENTS[name]().search(env, Budget(executions=4), seed=0, result=SearchResult.from_json(part.to_json()))
    assert schemes(resumed) == schemes(full)
    assert resumed.spent["executions"] == full.spent["executions"]


# Paired in one test each so that the second agent replays the first one's steps from the store
# (TPE's start-up trial equals the random sampler's; NSGA-II and RVEA share the initial population).
def test_random_and_tpe(env):
    check_agent("random", env)
    check_agent("tpe", env)


def test_nsga2_and_rvea(env):
    check_agent("nsga2", env)
    check_agent("rvea", env)


def test_tpe_beyond_startup(store):
    """One-step schemes so that several TPE trials (constraint PR >= gamma) fit into a tiny budget."""
    env = AutoMCEnv(task="synthetic", store=store, max_len=1, progress=False)
    result = TPESearch(n_startup_trials=1).search(env, Budget(executions=3), seed=0)
    assert_valid_result(result, env, 3)
    assert len(result.evaluations) == 3


def test_evolution_runs_generations(store):
    """One-step schemes and a population of 2 so that several generations fit into a tiny budget."""
    env = AutoMCEnv(task="synthetic", store=store, max_len=1, progress=False)
    for cls in (NSGA2Search, RVEASearch):
        result = cls(population=2).search(env, Budget(executions=4), seed=3)
        assert_valid_result(result, env, 4)
        assert result.meta["generations"] >= 2  # offspring are told back: the ask/tell loop really iterates
        assert all(len(e.scheme) == 1 for e in result.evaluations)


def test_decode_truncates_and_resamples(env, store):
    from agents.base import Evaluator

    space = env.space
    end = len(space)
    big = space.id_of("NS", {"ft": 0.1, "dec": 0.4, "max_prune": 0.9})  # removes 0.4 of the original parameters
    ev = Evaluator(env, Budget(executions=20), agent="test", seed=0)
    removal = removals(env)
    rng = np.random.default_rng(0)

    # planned 0.4 + 0.4 + 0.4 > pr_cap 0.85: truncated before the third step, tail set to END
    x, last = decode(np.array([big, big, big, 5, end]), ev, removal, rng)
    assert last.scheme == [big, big]
    assert x.tolist() == [big, big, end, end, end]

    # END at position 2 ends the scheme (genes after it are ignored)
    x, last = decode(np.array([big, end, big, big, big]), ev, removal, rng)
    assert last.scheme == [big] and x.tolist() == [big, end, end, end, end]

    # an invalid first gene is resampled among the valid first strategies
    capped = AutoMCEnv(task="synthetic", store=store, pr_cap=0.3, progress=False)
    ev2 = Evaluator(capped, Budget(executions=5), agent="test", seed=0)
    x, last = decode(np.array([big, end, end, end, end]), ev2, removals(capped), rng)
    assert x[0] != big and removal[x[0]] <= 0.3 and last.scheme == [int(x[0])]


@pytest.mark.parametrize("factory, message", [
    (lambda: RandomSearch(bogus=1), "unknown option"),
    (lambda: RandomSearch(sampler="grid"), "sampler"),
    (lambda: RandomSearch(patience=0), "patience"),
    (lambda: TPESearch(n_startup_trials=-1), "n_startup_trials"),
    (lambda: NSGA2Search(population=1), "population"),
    (lambda: NSGA2Search(crossover_prob=1.5), "crossover_prob"),
    (lambda: NSGA2Search(mutation_eta=0), "mutation_eta"),
    (lambda: NSGA2Search(alpha=2.0), "unknown option"),
    (lambda: RVEASearch(adapt_freq=2.0), "adapt_freq"),
    (lambda: RVEASearch(population="50"), "population"),
])
def test_bad_options(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_names_and_defaults():
    assert (RandomSearch.name, TPESearch.name, NSGA2Search.name, RVEASearch.name) == ("random", "tpe", "nsga2", "rvea")
    assert TPESearch().sampler == "tpe" and RandomSearch().sampler == "random"
    assert NSGA2Search().population == 50 and RVEASearch().population == 50  # the paper's population
