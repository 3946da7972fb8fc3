"""The shared agent machinery: budgets, the evaluator's accounting, results, saving and resume."""

from __future__ import annotations

import json

import pytest

from agents import runner
from agents.base import Budget, BudgetExhausted, Evaluation, Evaluator, SearchResult
from automc_env.env import AutoMCEnv
from automc_env.space import get_space
from automc_env.store import EvaluationStore

SPACE = get_space("paper")


def ns(dec, ft=0.1):
    return SPACE.id_of("NS", {"ft": ft, "dec": dec, "max_prune": 0.9})


SCHEMES = [[ns(0.2)], [ns(0.2), ns(0.12)], [ns(0.4)], [ns(0.12), ns(0.04)]]


class FixedAgent:
    """Evaluates a fixed list of schemes in order (a deterministic stand-in for a real agent)."""

    name = "fixed"

    def search(self, env, budget, seed, result=None):
        ev = Evaluator(env, budget, agent=self.name, seed=seed, result=result)
        try:
            for scheme in SCHEMES:
                ev.evaluate(scheme)
        except BudgetExhausted:
            pass
        return ev.result


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return AutoMCEnv(task="synthetic", store=EvaluationStore(tmp_path_factory.mktemp("store")))


def test_budget_parse_and_validation():
    assert Budget.parse("executions=5,compute=2.5") == Budget(executions=5, compute=2.5)
    with pytest.raises(ValueError, match="at least one"):
        Budget()
    with pytest.raises(ValueError, match="bad budget item"):
        Budget.parse("steps=3")
    with pytest.raises(ValueError, match="positive"):
        Budget(executions=0)


def test_evaluator_counts_new_schemes_and_stops_at_the_budget(env):
    result = FixedAgent().search(env, Budget(executions=3), seed=0)
    assert result.spent["executions"] == 3
    # [a], [a, b] (prefix [a] reused: one new execution), [c]
    assert [e.scheme for e in result.evaluations] == [SCHEMES[0], SCHEMES[1], SCHEMES[2]]
    assert [e.execution for e in result.evaluations] == [1, 2, 3]


def test_pareto_and_best():
    def ev(acc, pr, scheme):
        return Evaluation(scheme, [], acc, 1, 1, acc / 100 - 1, pr, pr, 0, 0.0, 0.0)
    r = SearchResult("x", "t", 0, gamma=0.3, evaluations=[ev(90, 0.2, [1]), ev(80, 0.5, [2]), ev(85, 0.4, [3]),
                                                          ev(84, 0.35, [4]), ev(70, 0.6, [5])])
    assert [e.scheme for e in r.pareto()] == [[3], [2], [5]]
    assert r.best().scheme == [3]
    assert all(e.PR >= 0.3 for e in r.pareto())
    again = SearchResult.from_json(json.loads(json.dumps(r.to_json())))
    assert again.pareto()[0].scheme == [3] and again.evaluations == r.evaluations


def test_resume_continues_to_the_same_result(env, tmp_path, monkeypatch):
    monkeypatch.setitem(runner.AGENTS, "fixed", "tests.test_agents_base:FixedAgent")
    out = tmp_path / "r.json"
    full = runner.run_search(env, "fixed", Budget(executions=4), seed=0, progress=False)
    runner.run_search(env, "fixed", Budget(executions=2), seed=0, out=out, progress=False)
    assert len(SearchResult.load(out).evaluations) == 2
    resumed = runner.run_search(env, "fixed", Budget(executions=4), seed=0, out=out, resume=True, progress=False)
    assert [e.scheme for e in resumed.evaluations] == [e.scheme for e in full.evaluations]
    assert resumed.spent["executions"] == full.spent["executions"] == 4
    with pytest.raises(ValueError, match="cannot resume"):
        runner.run_search(env, "fixed", Budget(executions=4), seed=1, out=out, resume=True, progress=False)


def test_unknown_agent_and_plot(env, tmp_path):
    with pytest.raises(ValueError, match="unknown agent"):
        runner.make_agent("nope")
    result = FixedAgent().search(env, Budget(executions=4), seed=0)
    runner.plot_pareto([result], tmp_path / "front.png")
    assert (tmp_path / "front.png").stat().st_size > 1000
    assert "->" in runner.pareto_table(result) or "no scheme" in runner.pareto_table(result)


# ---- budget honesty ---------------------------------------------------------------------------------

def lfb():
    return SPACE.id_of("LFB", {"ft": 0.1, "dec": 0.12, "factor": 1, "loss": "CE"})


@pytest.fixture(scope="module")
def failing_env(tmp_path_factory):
    """LFB fails on every step (an option its compressor rejects before doing any work)."""
    return AutoMCEnv(task="synthetic", store=EvaluationStore(tmp_path_factory.mktemp("fail_store")),
                     method_options={"LFB": {"init": "bogus"}}, progress=False)


def test_valid_actions_on_an_unevaluated_scheme_is_charged_like_evaluate(env):
    ev = Evaluator(env, Budget(executions=5), agent="t", seed=0)
    mask = ev.valid_actions(SCHEMES[1])   # two steps the search has not evaluated: both charged
    assert mask.shape == (len(SPACE),) and ev.executions == 2
    assert [e.scheme for e in ev.result.evaluations] == [SCHEMES[0], SCHEMES[1]]
    assert ev.compute == pytest.approx(sum(e.cost for e in ev.result.evaluations)) and ev.compute > 0
    ev.valid_actions(SCHEMES[1])           # evaluated now: free
    ev.valid_actions([])                   # the base model: free
    assert ev.executions == 2
    tight = Evaluator(env, Budget(executions=1), agent="t", seed=0)
    tight.evaluate(SCHEMES[0])
    with pytest.raises(BudgetExhausted):   # a mask past the budget is refused like an evaluation
        tight.valid_actions(SCHEMES[2])


def test_failed_step_is_charged_recorded_and_the_search_goes_on(failing_env):
    from agents.base import SchemeFailed
    from automc_env import cost

    ev = Evaluator(failing_env, Budget(executions=10), agent="t", seed=0)
    with pytest.raises(SchemeFailed, match="LFB option init") as failure:
        ev.evaluate([lfb()])
    charge = cost.price({"steps": 1}, failing_env.task)   # it failed right after the step's fixed overhead
    rec = failure.value.evaluation
    assert rec.failed and rec.cost == pytest.approx(charge) and ev.compute == pytest.approx(charge)
    assert ev.executions == 1 and rec.execution == 1 and ev.result.evaluations == [rec]
    base = failing_env.base   # a failed first step keeps the base model's metrics
    assert (rec.acc, rec.params, rec.flops, rec.AR, rec.PR, rec.FR) == (base["acc"], base["params"], base["flops"],
                                                                        0.0, 0.0, 0.0)
    for again in ([lfb()], [lfb(), ns(0.2)]):   # asking again, or below it, raises and costs nothing
        with pytest.raises(SchemeFailed):
            ev.evaluate(again)
    with pytest.raises(SchemeFailed):
        ev.valid_actions([lfb()])
    assert ev.executions == 1 and len(ev.result.evaluations) == 1
    ok = ev.evaluate([ns(0.2)])                  # the search goes on
    with pytest.raises(SchemeFailed):
        ev.evaluate([ns(0.2), lfb()])
    below = ev.result.evaluations[-1]
    assert below.failed and (below.acc, below.params, below.PR) == (ok.acc, ok.params, ok.PR)
    assert ev.executions == 3 and ev.compute == pytest.approx(ok.cost + 2 * charge)
    assert [e.execution for e in ev.result.evaluations] == [1, 2, 3]
    assert ev.result.pareto(gamma=0.0) == [ok] and ev.result.best(gamma=0.0) == ok   # failures never count

    resumed = Evaluator(failing_env, Budget(executions=10), agent="t", seed=0,
                        result=SearchResult.from_json(json.loads(json.dumps(ev.result.to_json()))))
    with pytest.raises(SchemeFailed):            # a resumed search knows its failures: still free
        resumed.evaluate([lfb()])
    assert resumed.executions == 3


def test_a_masked_step_is_refused_and_costs_nothing(env):
    ev = Evaluator(env, Budget(executions=5), agent="t", seed=0)
    with pytest.raises(ValueError, match="pr_cap"):   # 0.4 + 0.4 + 0.4 of the original parameters > 0.85
        ev.evaluate([ns(0.4), ns(0.4), ns(0.4)])
    assert ev.executions == 2 and [e.scheme for e in ev.result.evaluations] == [[ns(0.4)], [ns(0.4), ns(0.4)]]
    assert ev.compute == pytest.approx(sum(e.cost for e in ev.result.evaluations))
