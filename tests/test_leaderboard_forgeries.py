"""Forged result files, made as a careful cheater would (every derived number recomputed to be
consistent with the lie), are each rejected with a message that names what is wrong."""

from __future__ import annotations

import copy
import json

import pytest

from agents import leaderboard as L
from agents.base import Budget
from agents.leaderboard.bench import bench_store
from automc_env.env import AutoMCEnv
from automc_env.metrics import accuracy, accuracy_rate, rates

BUDGET = Budget(executions=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two real searches (random and nsga2, seed 0) written by the bench harness."""
    root = tmp_path_factory.mktemp("leaderboards")
    paths = L.run_bench("synthetic", ["random", "nsga2"], [0], root=root, budget=BUDGET, progress=False,
                        log=lambda *_: None)
    return {p.name.split("-seed")[0]: p for p in paths}


@pytest.fixture(scope="module")
def validator():
    """One validator environment for the module (a private store: it holds only what it replayed itself)."""
    return AutoMCEnv(task="synthetic", store=False, progress=False)


@pytest.fixture(scope="module")
def cheater():
    """The cheater's own environment: real numbers for any scheme (the bench's store, no compute)."""
    return AutoMCEnv(task="synthetic", store=bench_store(1), progress=False)


def load(files, agent="random") -> dict:
    return json.loads(files[agent].read_text())


def real_test_acc(env, scheme) -> float:
    env.reset(options={"scheme": list(scheme)})
    return accuracy(env.model, env.data.test.x, env.data.test.y)


def recount(entry: dict, env) -> dict:
    """The careful cheater's bookkeeping: counters, running compute, spent, rates from the base, the
    final set (real test accuracies) and every metric, all made consistent with the edited records."""
    base, running = entry["base"], 0.0
    for i, e in enumerate(entry["evaluations"]):
        e["execution"] = i + 1
        running += e["cost"]
        e["compute"] = running
        if not e["failed"]:
            e["AR"], e["PR"] = accuracy_rate(base["acc"], e["acc"]), rates(base["params"], e["params"])
            e["FR"] = rates(base["flops"], e["flops"])
    entry["spent"].update(executions=len(entry["evaluations"]), compute=running)
    known = {tuple(f["scheme"]): f["test_acc"] for f in entry["final"]}
    entry["final"] = [{**{k: f[k] for k in ("scheme", "names", "acc", "params", "flops", "AR", "PR", "FR")},
                       "test_acc": known.get(tuple(f["scheme"])) or real_test_acc(env, f["scheme"])}
                      for f in L.final_set(entry["evaluations"], entry["protocol"]["gamma"])]
    entry["metrics"] = L.summary_metrics(entry)
    return entry


def rejected(entry, validator, *needles) -> list[str]:
    report = L.validate_entry(entry, env=validator)
    assert not report["ok"], "a forged file was accepted"
    text = "\n".join(report["problems"])
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    return report["problems"]


def test_honest_files_pass(files, validator):
    for path in files.values():
        report = L.validate_entry(path, env=validator)
        assert report["ok"], report["problems"]
        entry = json.loads(path.read_text())
        assert report["replayed"] == len(entry["evaluations"]) and report["rerun"] == "identical"
        assert report["entry"]["metrics"]["hv"] == entry["metrics"]["hv"]


def test_issue_forgery_1_raised_accuracy_halved_compute_fake_level_lowered_evaluation(files, validator, cheater):
    honest = load(files)
    final = {tuple(f["scheme"]) for f in honest["final"]}
    # (a) every final test accuracy + 0.9 pp, HV and best accuracy recomputed
    a = recount(copy.deepcopy(honest), cheater)
    for f in a["final"]:
        f["test_acc"] = min(100.0, f["test_acc"] + 0.9)
    a["metrics"] = L.summary_metrics(a)
    rejected(a, validator, "test_acc claimed")
    # (b) halved compute, consistently
    b = copy.deepcopy(honest)
    for e in b["evaluations"]:
        e["cost"] /= 2
    rejected(recount(b, cheater), validator, "cost claimed", "replayed")
    # (c) an accuracy at PR >= 0.7 that the final set does not support
    c = copy.deepcopy(honest)
    c["metrics"]["acc_at_pr"]["0.7"] = 95.0 if c["metrics"]["acc_at_pr"]["0.7"] != 95.0 else 96.0
    rejected(c, validator, "metrics.acc_at_pr")
    # (d) a non-final evaluation 5 points lower, AR recomputed
    d = copy.deepcopy(honest)
    i = next(i for i, e in enumerate(d["evaluations"]) if tuple(e["scheme"]) not in final and e["acc"] >= 5)
    d["evaluations"][i]["acc"] -= 5
    rejected(recount(d, cheater), validator, f"evaluations[{i}]", "acc claimed")
    # all of it at once
    for e in a["evaluations"]:
        e["cost"] /= 2
    a["evaluations"][i]["acc"] -= 5
    a = recount(a, cheater)
    a["metrics"]["acc_at_pr"]["0.7"] = 99.0
    assert rejected(a, validator)


def test_issue_forgery_2_a_real_scheme_from_another_search(files, validator, cheater):
    """Every number is real and consistent and the budget holds: only re-running the search catches it."""
    mine, other = load(files), load(files, "nsga2")
    own = {tuple(e["scheme"]) for e in mine["evaluations"]}
    by_scheme = {tuple(e["scheme"]): e for e in other["evaluations"]}
    for target in sorted((f for f in other["final"] if tuple(f["scheme"]) not in own), key=lambda f: -f["PR"]):
        injected = [copy.deepcopy(by_scheme[tuple(target["scheme"][:k])])
                    for k in range(1, len(target["scheme"]) + 1) if tuple(target["scheme"][:k]) not in own]
        forged = copy.deepcopy(mine)   # drop as many of the last evaluations (a suffix is always prefix-closed)
        forged["evaluations"] = forged["evaluations"][:len(forged["evaluations"]) - len(injected)] + injected
        forged = recount(forged, cheater)
        if {tuple(e["scheme"]) for e in injected} & {tuple(f["scheme"]) for f in forged["final"]}:
            break   # the stolen scheme is a Pareto point of the forged file
    else:
        pytest.fail("no scheme of the other search would be a Pareto point here")
    assert forged["spent"]["executions"] <= BUDGET.executions
    assert L.invariant_problems(forged) == []
    rejected(forged, validator, "re-running random", "diverges at evaluations[")


def test_issue_forgery_3_strategy_swapped_inside_a_final_scheme(files, validator, cheater):
    forged = load(files)
    space = cheater.space
    schemes = [tuple(e["scheme"]) for e in forged["evaluations"]]
    leaf = next(tuple(f["scheme"]) for f in forged["final"]
                if not any(len(s) > len(f["scheme"]) and s[:len(f["scheme"])] == tuple(f["scheme"]) for s in schemes))
    old = leaf[-1]
    method = space.method_range(space[old].method)
    new = old + 1 if old + 1 < method.stop else old - 1     # a neighbouring setting of the same method
    for e in forged["evaluations"] + forged["final"]:
        if tuple(e["scheme"]) == leaf:
            e["scheme"][-1] = new
            e["names"][-1] = space[new].name                # names updated, numbers kept
    forged["metrics"] = L.summary_metrics(forged)
    assert L.invariant_problems(forged) == []
    problems = rejected(forged, validator)
    assert any(str(list(leaf[:-1]) + [new]) in p and ("replayed" in p or "not a valid step" in p) for p in problems)


def test_forged_execution_counter(files, validator):
    forged = load(files)
    forged["evaluations"][2]["execution"] = 5
    rejected(forged, validator, "evaluations[2]", "execution counter 5, expected 3")


def test_forged_base_model(files, validator, cheater):
    forged = load(files)
    forged["base"]["acc"] -= 3.0      # a weaker base makes every scheme's AR look better
    rejected(recount(forged, cheater), validator, "base.acc claimed")


def test_reordered_trajectory(files, validator, cheater):
    forged = load(files)
    evs = forged["evaluations"]
    j = next(j for j, e in enumerate(evs) if len(e["scheme"]) > 1)
    i = next(i for i, e in enumerate(evs) if e["scheme"] == evs[j]["scheme"][:-1])
    evs.insert(i, evs.pop(j))      # the child moves before its prefix, counters and compute renumbered
    rejected(recount(forged, cheater), validator, f"evaluations[{i}]", "must be evaluated before it")


def test_evaluation_from_another_fingerprint(files, validator, cheater):
    """Numbers of the same scheme computed under other step seeds (a replicate: another fingerprint)."""
    other = AutoMCEnv(task="synthetic", store=False, replicate=1, progress=False)
    forged = load(files)
    for i, e in enumerate(forged["evaluations"]):
        info = other.evaluate(e["scheme"])[-1]
        if (info["acc"], info["params"]) != (e["acc"], e["params"]):
            e.update(acc=info["acc"], params=info["params"], flops=info["flops"], cost=info["cost"])
            break
    else:
        pytest.fail("no evaluated scheme differs under replicate 1")
    rejected(recount(forged, cheater), validator, f"evaluations[{i}]", "claimed")


def test_other_inconsistencies(files, validator, cheater):
    honest = load(files)
    hidden = copy.deepcopy(honest)                        # a Pareto scheme left out of the final set
    hidden["final"] = hidden["final"][1:]
    hidden["metrics"] = L.summary_metrics(hidden)
    rejected(hidden, validator, "missing from the final set")
    over = copy.deepcopy(honest)                          # one evaluation more than the budget allows
    extra = copy.deepcopy(load(files, "nsga2")["evaluations"][0])
    over["evaluations"].append(extra)
    rejected(recount(over, cheater), validator, "the budget does not hold")
    gamma = copy.deepcopy(honest)
    gamma["protocol"]["gamma"] = 0.5
    rejected(gamma, validator, "γ = 0.3")
    gpu = copy.deepcopy(honest)
    gpu["environment"]["device"] = "cuda:0"
    rejected(gpu, validator, "must be computed on the CPU")
    names = copy.deepcopy(honest)
    names["evaluations"][0]["names"] = ["NS(whatever)"]
    rejected(names, validator, "evaluations[0]", "do not match the strategy ids")
    task = copy.deepcopy(honest)
    task["task"] = "resnet20-cifar10"
    rejected(task, validator, "no leaderboard protocol")
    threads = copy.deepcopy(honest)                       # replayed at 2 threads: still judged by the replay
    threads["environment"]["torch_threads"] = 2
    report = L.validate_entry(threads, env=validator)
    assert report["ok"] or any("replayed" in p for p in report["problems"])


def test_file_name_must_match_agent_and_seed(files, validator, tmp_path):
    renamed = tmp_path / "tpe-seed0.json"
    renamed.write_text(files["random"].read_text())
    rejected(renamed, validator, "does not match its agent and seed")


def test_gpu_tasks_replay_the_final_set_within_the_band(files, validator, monkeypatch):
    """GPU kernels are not deterministic: there the final set is replayed and compared within the bands."""
    import dataclasses

    monkeypatch.setitem(L.PROTOCOLS, "synthetic",
                        dataclasses.replace(L.get_protocol("synthetic"), gpu=True, acc_band=1.0, pr_band=0.01))
    honest = load(files)
    report = L.validate_entry(honest, env=validator)
    assert report["ok"], report["problems"]
    assert report["replayed"] == len(honest["final"]) and report["rerun"] == "not run"
    assert any("only the final set was replayed" in n for n in report["notes"])
    within, beyond = copy.deepcopy(honest), copy.deepcopy(honest)
    within["final"][0]["test_acc"] += 0.5
    beyond["final"][0]["test_acc"] += 3.0
    for forged in (within, beyond):
        forged["metrics"] = L.summary_metrics(forged)
    assert L.validate_entry(within, env=validator)["ok"]   # inside the band: the replayed value is what is shown
    rejected(beyond, validator, "final[0]", "band ±1.0")
