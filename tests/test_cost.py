"""The deterministic step cost: counted from work, never from a clock (automc_env.cost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from agents.base import Budget, BudgetExhausted, Evaluator
from automc_env import cost
from automc_env.env import AutoMCEnv
from automc_env.metrics import accuracy
from automc_env.space import get_space
from automc_env.store import EvaluationStore
from automc_env.tasks import get_task
from tests.conftest import pretrained

SPACE = get_space("paper")
NS = SPACE.id_of("NS", {"ft": 0.5, "dec": 0.2, "max_prune": 0.9})          # 2 fine-tune epochs on synthetic
NS_SHORT = SPACE.id_of("NS", {"ft": 0.3, "dec": 0.2, "max_prune": 0.9})    # 1 epoch
HOS = SPACE.id_of("HOS", {"ft": 0.1, "dec": 0.12, "layer": "P2", "filter": "k34", "aux": 0.5, "mse_weight": 1})
SCHEME = [NS, HOS]  # training, val passes, a teacher in the aux-MSE and HOOI ("other")
STRUCTURE = ("params", "flops")


def run(scheme=SCHEME, **kwargs) -> list[dict]:
    """The scheme computed from scratch by a fresh environment with a private store."""
    cost._MACS.clear()  # nothing carried over from earlier counts in this process
    return AutoMCEnv(task="synthetic", store=False, **kwargs).evaluate(scheme)


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return run()


def same_cost(a: list[dict], b: list[dict]) -> None:
    assert [s["cost_counters"] for s in a] == [s["cost_counters"] for s in b]
    assert [s["cost"] for s in a] == [s["cost"] for s in b]


def test_every_step_charges_its_work(reference):
    ns, hos = reference
    for step in reference:
        c = step["cost_counters"]
        assert step["cost"] > 0 and c["steps"] == 1
        assert c["train_macs"] > 0 and c["train_batches"] > 0 and c["infer_macs"] > 0 and c["infer_batches"] > 0
    assert ns["cost_counters"]["other"] == 0 and hos["cost_counters"]["other"] > 0  # HOOI


def test_cost_is_the_counters_times_the_coefficients(reference):
    row = cost.coefficients(get_task("synthetic"))
    for step in reference:
        expected = sum(row[cost.COEFFICIENT_OF[k]] * v for k, v in step["cost_counters"].items())
        assert step["cost"] == pytest.approx(expected, rel=1e-12)


def test_same_cost_in_another_environment_instance(reference):
    again = run()
    same_cost(again, reference)
    assert [s["seconds"] for s in again] != [s["seconds"] for s in reference]  # the clock differs, the cost not


CHILD = """
import json, sys, torch
torch.set_num_threads(2)
from automc_env.env import AutoMCEnv
steps = AutoMCEnv(task="synthetic", store=False).evaluate(json.loads(sys.argv[1]))
print(json.dumps({"threads": torch.get_num_threads(), "steps": steps}))
"""


def test_same_cost_in_another_process_at_two_threads(reference):
    # passive OpenMP waits: two spinning threads on a shared, busy 2-core machine take minutes
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(SCHEME)], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["threads"] == 2 and torch.get_num_threads() == 1
    other = child["steps"]
    assert [[s[k] for k in STRUCTURE] for s in other] == [[s[k] for k in STRUCTURE] for s in reference]
    same_cost(other, reference)


def test_same_cost_under_cpu_load(reference):
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.2)
        loaded = run()
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    same_cost(loaded, reference)


def test_replayed_step_reports_the_stored_cost(tmp_path):
    store = EvaluationStore(tmp_path)
    first = AutoMCEnv(task="synthetic", store=store).evaluate([NS_SHORT])[0]
    replay = AutoMCEnv(task="synthetic", store=store)
    info = replay.step(NS_SHORT)[4]
    assert info["cached"] and info["cost"] == first["cost"] > 0
    assert info["cost_counters"] == first["cost_counters"]
    assert replay.store.get(replay.fingerprint, (NS_SHORT,)).metrics["cost"] == first["cost"]
    _, base_info = replay.reset()
    assert base_info["cost"] == 0.0 and base_info["seconds"] == 0.0


def test_more_fine_tune_epochs_cost_more(reference):
    short = run([NS_SHORT])[0]
    assert short["cost_counters"]["train_batches"] < reference[0]["cost_counters"]["train_batches"]
    assert short["cost"] < reference[0]["cost"]


def test_charges_outside_a_ledger_are_ignored():
    task, data, model = pretrained("synthetic")
    assert not cost.active()
    cost.charge(train_macs=10, steps=1)  # nothing listens: a no-op
    accuracy(model, data.val.x, data.val.y)
    with cost.ledger() as outer:
        assert outer.counts == dict.fromkeys(cost.COUNTERS, 0)
        cost.charge(steps=1)
        with cost.ledger() as inner:
            accuracy(model, data.val.x, data.val.y)
        assert inner.counts["infer_macs"] == cost.forward_macs(model, task.input_shape) * len(data.val.y)
        assert inner.counts["infer_batches"] == 1
    assert outer.counts == {**inner.counts, "steps": 1}  # the outer ledger sees its inner ones
    assert not cost.active()
    with pytest.raises(ValueError, match="unknown cost counters"):
        cost.charge(seconds=1.0)


def test_evaluator_charges_cost_not_wall_time(monkeypatch, tmp_path):
    env = AutoMCEnv(task="synthetic", store=EvaluationStore(tmp_path))
    a, b = env.evaluate([NS_SHORT, NS_SHORT])  # computed before the search: the search replays them
    clock = iter(range(0, 10**9, 1000))        # every reading of the clock jumps by 1000 s
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    ev = Evaluator(env, Budget(compute=a["cost"] + b["cost"] + 1e-9), agent="test", seed=0)
    ev.evaluate([NS_SHORT])
    assert ev.compute == a["cost"]
    ev.evaluate([NS_SHORT, NS_SHORT])          # the revisited prefix is free
    assert ev.compute == a["cost"] + b["cost"]
    assert [e.compute for e in ev.result.evaluations] == [a["cost"], a["cost"] + b["cost"]]
    assert ev.seconds > 1000                   # the wall clock is still reported
    with pytest.raises(BudgetExhausted):
        ev.budget = Budget(compute=ev.compute)
        ev.evaluate([NS])
