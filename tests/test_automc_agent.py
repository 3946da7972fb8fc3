"""The AutoMC progressive agent on the synthetic task, with injected random embeddings (no pykeen)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.automc import VARIANTS, Archive, AutoMCAgent, FMo, allowed_next
from agents.base import Budget, SearchResult
from automc_env.env import AutoMCEnv
from automc_env.space import get_space
from automc_env.store import EvaluationStore

SPACE = get_space("paper")
EMB = np.random.default_rng(0).standard_normal((len(SPACE) + 1, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return AutoMCEnv(task="synthetic", store=EvaluationStore(tmp_path_factory.mktemp("store")), progress=False)


def agent(**kw) -> AutoMCAgent:
    return AutoMCAgent(embeddings=EMB, **{"optimal_num": 3, **kw})


def schemes(result: SearchResult) -> list[list[int]]:
    return [e.scheme for e in result.evaluations]


def check_pareto(result: SearchResult) -> None:
    g = result.gamma
    front = result.pareto()
    if any(e.PR >= g for e in result.evaluations):
        assert front
    for e in front:
        assert e.PR >= g
        assert not any(o.AR >= e.AR and o.PR >= e.PR and (o.AR > e.AR or o.PR > e.PR) for o in result.evaluations
                       if o.PR >= g)


def test_search_budget_determinism_and_resume(env):
    full = agent().search(env, Budget(executions=6), seed=0)
    assert 0 < full.spent["executions"] <= 6
    assert len(full.evaluations) == full.spent["executions"]  # progressive: every evaluation is one new step
    check_pareto(full)
    assert full.meta["agent_options"]["embeddings"] == "injected"
    assert full.meta["agent_stats"]["rounds"] >= 2  # 3 per round: F_mo was trained and used again

    again = agent().search(env, Budget(executions=6), seed=0)
    assert schemes(again) == schemes(full)

    part = agent().search(env, Budget(executions=3), seed=0)
    assert part.spent["executions"] <= 3
    part = SearchResult.from_json(part.to_json())  # resuming from a saved result
    resumed = agent().search(env, Budget(executions=6), seed=0, result=part)
    assert schemes(resumed) == schemes(full)
    assert resumed.spent["executions"] <= 6


@pytest.mark.parametrize("kw", [
    dict(candidates=0), dict(optimal_num=0), dict(optimal_num=20, candidates=10), dict(avg_ratio=1.5),
    dict(lr=-1.0), dict(replay_batches=-1), dict(pr_budget=0.0), dict(ft_budget=0), dict(variant="nope"),
    dict(bogus=1), dict(knowledge={"bogus": 1}), dict(embeddings=np.zeros(5)), dict(candidates=True),
])
def test_bad_options(kw):
    with pytest.raises(ValueError):
        AutoMCAgent(**kw)


def test_embeddings_must_match_the_grid(env):
    with pytest.raises(ValueError, match="row 0 = START"):
        AutoMCAgent(embeddings=EMB[:10]).search(env, Budget(executions=1), seed=0)


def test_fmo_shapes_and_alignment():
    torch.manual_seed(0)
    emb = torch.randn(50, 32)
    fmo = FMo(emb, torch.rand(7))
    prefixes = [[], [3, 7, 1], [5], [2, 9], [4, 4, 4, 4]]
    nexts = [1, 2, 3, 4, 5]
    batch = fmo(prefixes, nexts)
    assert batch.shape == (5, 2)
    single = torch.cat([fmo([p], [s]) for p, s in zip(prefixes, nexts)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-6)  # every row uses its own prefix
    assert not torch.allclose(batch[1], fmo([prefixes[4]], [nexts[1]])[0])
    with pytest.raises(ValueError):
        fmo([[1]], [1, 2])


def test_archive_weak_dominance():
    a = Archive()
    assert a.insert(0, (1.0, 1.0))
    assert not a.insert(1, (1.0, 1.0))          # a tie keeps the existing entry
    assert not a.insert(2, (0.5, 1.0))          # weakly dominated
    assert a.insert(3, (2.0, 0.5))              # trade-off: both stay
    assert sorted(a.keys) == [0, 3]
    assert a.insert(4, (2.0, 1.0))              # dominates both
    assert a.keys == [4]
    assert a.insert(5, (3.0, 0.0)) and a.sorted_keys() == [5, 4]


def test_allowed_next_budgets():
    n = len(SPACE)
    removal = np.array([SPACE[i].removal(0.3) for i in range(n)])
    ft = np.array([SPACE[i].finetune_multiplier() for i in range(n)])
    hos = np.zeros(n, bool)
    hos[SPACE.method_range("HOS").start:SPACE.method_range("HOS").stop] = True
    mask = np.ones(n, bool)
    ids = allowed_next(mask, pr=0.6, ft=3.8, removal=removal, ft_mult=ft, is_hos=hos, gamma=0.3,
                       pr_budget=0.85, ft_budget=4.0)
    assert len(ids) and (0.6 + removal[ids] <= 0.85 + 1e-9).all() and (3.8 + ft[ids] <= 4.0 + 1e-9).all()
    assert set(np.flatnonzero((0.6 + removal <= 0.85) & (3.8 + ft <= 4.0 + 1e-9))) == set(ids)
    # HOS only when it reaches γ: from PR 0 only HOS with removal ≥ 0.3 remain
    ids = allowed_next(mask, pr=0.0, ft=0.0, removal=removal, ft_mult=ft, is_hos=hos, gamma=0.3,
                       pr_budget=0.85, ft_budget=4.0)
    assert (removal[ids[hos[ids]]] >= 0.3).all() and hos[ids].any()
    assert not allowed_next(mask & False, 0.0, 0.0, removal, ft, hos, 0.3, 0.85, 4.0).size


def test_budgets_constrain_evaluated_schemes(env):
    res = agent(ft_budget=0.5, pr_budget=0.45).search(env, Budget(executions=3), seed=1)
    by_scheme = {tuple(e.scheme): e for e in res.evaluations}
    assert res.evaluations
    for e in res.evaluations:
        assert sum(SPACE[a].finetune_multiplier() for a in e.scheme) <= 0.5 + 1e-9
        parent_pr = by_scheme[tuple(e.scheme[:-1])].PR if len(e.scheme) > 1 else 0.0
        assert parent_pr + SPACE[e.scheme[-1]].removal(0.3) <= 0.45 + 1e-9


def test_legr_only_variant(env):
    res = agent(variant="legr_only").search(env, Budget(executions=3), seed=0)
    legr = SPACE.method_range("LeGR")
    assert res.evaluations and res.spent["executions"] <= 3
    assert all(a in legr for e in res.evaluations for a in e.scheme)


def test_non_progressive_variant(env):
    res = agent(variant="non_progressive").search(env, Budget(executions=4), seed=0)
    assert res.evaluations and res.spent["executions"] <= 4
    check_pareto(res)
    for e in res.evaluations:
        assert len(e.scheme) <= env.max_len
        assert sum(SPACE[a].removal(0.3) for a in e.scheme) <= env.pr_cap + 1e-9
    again = agent(variant="non_progressive").search(env, Budget(executions=4), seed=0)
    assert schemes(again) == schemes(res)


def test_variants_listed():
    assert set(VARIANTS) == {"full", "no_kg", "no_exp", "legr_only", "non_progressive"}
