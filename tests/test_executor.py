"""Executors: Ray computes exactly what the environment computes, and survives the faults it claims to.

One local Ray instance (2 CPUs) serves the whole module. Everything runs on the ``synthetic`` task,
whose steps take well under a second; the fault drills use its slowest strategies (0.3-0.7 s a
step at one thread) so that a kill lands mid-step.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from automc_env.env import AutoMCEnv
from automc_env.executor import InProcessExecutor, RayExecutor, missing_steps
from automc_env.space import get_space

SPACE = get_space("paper")
KEYS = ("acc", "params", "flops", "test_acc", "cost")


def sid(name: str) -> int:
    return SPACE.parse(name).id


NS_A, NS_B = sid("NS(ft=0.3,dec=0.12,max=0.7)"), sid("NS(ft=0.5,dec=0.2,max=0.9)")
SFP_A = sid("SFP(dec=0.04,soft=0.2,every=1)")
LEGR_A = sid("LeGR(ft=0.1,dec=0.04,max=0.7,evo=0.4,crit=l2_bn)")
HOS_A = sid("HOS(ft=0.1,dec=0.04,layer=P1,filter=l1norm,aux=0.3,mse=1)")
LFB_A, LFB_B = sid("LFB(ft=0.1,dec=0.04,factor=0.5,loss=CE)"), sid("LFB(ft=0.2,dec=0.12,factor=1,loss=MSE)")
LMA_A = sid("LMA(ft=0.1,dec=0.04,seg=6,T=6,alpha=0.5)")

# 9 distinct prefixes: all six methods, shared prefixes, one 3-step scheme
SCHEMES = [(NS_A,), (NS_A, NS_B), (NS_A, NS_B, SFP_A), (NS_A, LEGR_A), (HOS_A,), (HOS_A, LFB_A), (LMA_A,),
           (LFB_A, SFP_A)]

# the slowest synthetic strategies, for the kill drills
HOS_SLOW = [sid("HOS(ft=0.5,dec=0.12,layer=P1,filter=l1norm,aux=0.3,mse=1)"),
            sid("HOS(ft=0.5,dec=0.2,layer=P1,filter=l1norm,aux=0.3,mse=5)")]
LEGR_SLOW = [sid("LeGR(ft=0.5,dec=0.2,max=0.7,evo=0.7,crit=l1_weight)"),
             sid("LeGR(ft=0.5,dec=0.12,max=0.9,evo=0.7,crit=l2_bn)")]
SFP_SLOW, LFB_SLOW = sid("SFP(dec=0.2,soft=0.5,every=1)"), sid("LFB(ft=0.5,dec=0.2,factor=5,loss=NLL)")
NS_SLOW, LMA_SLOW = sid("NS(ft=0.5,dec=0.2,max=0.7)"), sid("LMA(ft=0.5,dec=0.2,seg=6,T=1,alpha=0.05)")


def prefixes(schemes) -> set[tuple[int, ...]]:
    return {tuple(s[:k]) for s in schemes for k in range(1, len(s) + 1)}


def numbers(env) -> dict[tuple[int, ...], dict]:
    """What a step reports, per stored scheme (the fields that must not depend on where it ran)."""
    return {r.scheme: {k: r.metrics[k] for k in KEYS} for r in env.store.records(env.fingerprint)}


def make_env(tmp_path: Path, name: str, **kwargs) -> AutoMCEnv:
    return AutoMCEnv(task="synthetic", store=tmp_path / name, **kwargs)


@pytest.fixture(scope="module")
def ray_executor():
    """One local Ray (2 CPUs, 1 torch thread per worker) for the module; the auth token path is restored."""
    saved = os.environ.get("RAY_AUTH_TOKEN_PATH")
    executor = RayExecutor(workers=2)
    yield executor
    executor.close()
    if saved is None:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    else:
        os.environ["RAY_AUTH_TOKEN_PATH"] = saved


@pytest.fixture(scope="module")
def both(ray_executor, tmp_path_factory):
    """SCHEMES computed in-process (1 thread, like a Ray worker) and on Ray, into two separate stores."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("executors")
    local, remote = make_env(root, "local"), make_env(root, "ray")
    return {"local": (local, InProcessExecutor().run(local, SCHEMES)),
            "ray": (remote, ray_executor.run(remote, SCHEMES))}


# The driver drills come first: starting another Ray job (the killed driver) makes Ray reap the idle
# workers of this one, so run them before the module's workers warm up for the tests below.
DRIVER = """
import json, sys, torch
torch.set_num_threads(1)
from automc_env.env import AutoMCEnv
from automc_env.executor import InProcessExecutor, RayExecutor
store, address, schemes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
env = AutoMCEnv(task="synthetic", store=store)
executor = RayExecutor(address=address) if address else InProcessExecutor()
report = executor.run(env, schemes)
print(json.dumps({"computed": report.computed, "stored": report.stored, "failed": list(map(list, report.failed))}))
"""
DRIVER_SCHEMES = [(LFB_SLOW,), (LFB_SLOW, NS_SLOW), (SFP_SLOW,), (SFP_SLOW, LMA_SLOW), (LEGR_SLOW[0],), (NS_SLOW,),
                  (HOS_SLOW[0],)]


def _key(scheme) -> str:
    return ",".join(map(str, scheme))


def _rows(index: Path) -> dict[str, tuple[float, str]]:
    """scheme -> (created, metrics) of every committed step, read without taking any write lock."""
    if not index.exists():
        return {}
    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30)
    try:
        return {scheme: (created, metrics)
                for scheme, created, metrics in conn.execute("SELECT scheme, created, metrics FROM steps")}
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # the driver has not created the schema yet
            return {}
        raise
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["in-process", "ray"])
def test_killed_driver_resumes_without_recomputing(kind, request, tmp_path):
    """kill -9 a driver mid-run: its finished steps stay as they were, a re-run computes only the rest.

    The killed Ray driver joins the module's cluster (a driver that started its own local Ray would
    leave Ray's dashboard and runtime-env agents running after a SIGKILL), and the module's executor
    resumes its work from this process, which never saw that store: a new driver with warm workers.
    """
    address = ""
    if kind == "ray":
        import ray

        ray_executor = request.getfixturevalue("ray_executor")
        address = ray.get_runtime_context().gcs_address
    expected = {_key(p) for p in prefixes(DRIVER_SCHEMES)}
    store = tmp_path / "store"
    index = store / "index.sqlite"
    argv = [sys.executable, "-c", DRIVER, str(store), address, json.dumps(DRIVER_SCHEMES)]
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_rows(index)) < 2:
            assert driver.poll() is None, f"the driver ended before it could be killed: {driver.communicate()}"
            assert time.monotonic() < deadline, "the driver stored fewer than 2 steps in 120 s"
            time.sleep(0.01)
        driver.kill()  # SIGKILL, mid-step
    finally:
        driver.kill()
        driver.communicate()
    assert driver.returncode == -signal.SIGKILL
    finished = _rows(index)
    assert 2 <= len(finished) < len(expected), "the kill did not land mid-run"

    if kind == "ray":
        env = AutoMCEnv(task="synthetic", store=store)
        resumed = ray_executor.run(env, DRIVER_SCHEMES)
        report = {"computed": resumed.computed, "stored": resumed.stored, "failed": list(resumed.failed)}
    else:
        again = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stderr[-3000:]
        report = json.loads(again.stdout.strip().splitlines()[-1])
    assert report["failed"] == [] and report["stored"] == len(finished)
    assert {_key(c) for c in report["computed"]} == expected - set(finished)
    after = _rows(index)
    assert set(after) == expected
    for scheme, row in finished.items():
        assert after[scheme] == row, f"step {scheme} was recomputed"  # same created time and metrics
    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    env = AutoMCEnv(task="synthetic", store=store)  # and a new environment finds nothing missing
    assert missing_steps(env, DRIVER_SCHEMES) == ([], len(expected))


def test_ray_and_in_process_give_bit_identical_numbers(both):
    """Where a step runs must not change its numbers: same thread count, same seed, same bits."""
    (local, local_report), (remote, ray_report) = both["local"], both["ray"]
    expected = prefixes(SCHEMES)
    for report in (local_report, ray_report):
        assert report.ok and report.skipped == [] and report.stored == 0
        assert sorted(report.computed) == sorted(expected)
    assert local.fingerprint == remote.fingerprint
    assert set(numbers(local)) == expected
    assert numbers(remote) == numbers(local)  # exact float equality
    workers = [r.metrics["worker"] for r in remote.store.records(remote.fingerprint)]
    assert all(w["pid"] != os.getpid() and w["threads"] == 1 for w in workers)  # really ran on Ray
    # and the environments report the same infos, "cached" included: both computed the steps themselves
    for scheme in SCHEMES:
        local_infos, remote_infos = local.evaluate(scheme), remote.evaluate(scheme)
        assert not any(info["cached"] for info in local_infos + remote_infos)
        assert [{k: v for k, v in i.items() if k != "seconds"} for i in remote_infos] == \
               [{k: v for k, v in i.items() if k != "seconds"} for i in local_infos]


def test_rerun_computes_nothing(both, ray_executor):
    """Every prefix is found in the store: no step is computed twice, by either executor."""
    for env, executor in ((both["local"][0], InProcessExecutor()), (both["ray"][0], ray_executor)):
        report = executor.run(env, SCHEMES)
        assert report.computed == [] and report.failed == {} and report.skipped == []
        assert report.stored == len(prefixes(SCHEMES))


@pytest.mark.parametrize("kind", ["in-process", "ray"])
def test_failing_step_is_reported_and_its_descendants_skipped(kind, request, tmp_path):
    """A compressor that raises costs its step and the steps below it, nothing else, and says why."""
    executor = request.getfixturevalue("ray_executor") if kind == "ray" else InProcessExecutor()
    env = make_env(tmp_path, "store", method_options={"LFB": {"init": "bogus"}})  # every LFB step raises
    schemes = [(LFB_A,), (LFB_A, NS_A), (LFB_A, NS_A, SFP_A), (NS_A,), (NS_A, LFB_B), (NS_A, LFB_B, SFP_A),
               (NS_A, SFP_A), (HOS_A,)]
    report = executor.run(env, schemes)
    assert set(report.failed) == {(LFB_A,), (NS_A, LFB_B)}
    for scheme, message in report.failed.items():
        assert SPACE[scheme[-1]].name in message and "synthetic" in message
        assert "ValueError" in message and "init must be 'fit' or 'scratch', got 'bogus'" in message
    assert sorted(report.skipped) == sorted([(LFB_A, NS_A), (LFB_A, NS_A, SFP_A), (NS_A, LFB_B, SFP_A)])
    assert sorted(report.computed) == sorted([(NS_A,), (NS_A, SFP_A), (HOS_A,)])
    assert set(numbers(env)) == set(report.computed)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (a local Ray's raylet and workers are children of its driver)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _busy_workers() -> list[int]:
    """Our Ray workers executing a step now: Ray titles a worker after the task it runs."""
    busy = []
    for pid in _descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::_worker_step"):
            busy.append(pid)
    return busy


def test_killed_worker_loses_only_its_step(ray_executor, tmp_path):
    """SIGKILL a worker in its first step: Ray re-runs that step elsewhere, nothing fails, the numbers hold."""
    torch.set_num_threads(1)
    schemes = [(HOS_SLOW[0],), (HOS_SLOW[1],), (LEGR_SLOW[0],), (HOS_SLOW[0], LEGR_SLOW[1])]
    env = make_env(tmp_path, "ray")
    outcome: dict = {}

    def run():
        try:
            outcome["report"] = ray_executor.run(env, schemes)
        except BaseException as e:  # surfaced by the assertions below
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    killed, deadline = None, time.monotonic() + 60
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        busy = _busy_workers()
        if busy:
            # no step of this run has returned yet: the victim has finished none of them
            assert env.store.records(env.fingerprint) == [], "a step finished before any worker was seen busy"
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        else:
            time.sleep(0.005)
    assert killed is not None, "never saw a Ray worker executing a step"
    thread.join(120)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.failed == {} and report.skipped == []
    assert sorted(report.computed) == sorted(prefixes(schemes))  # every step once: only the lost one re-ran
    pids = {r.scheme: r.metrics["worker"]["pid"] for r in env.store.records(env.fingerprint)}
    # the victim returned nothing: the step it was running was computed again by another worker
    assert killed not in pids.values(), f"worker {killed} finished its step before the kill landed: {pids}"
    sequential = make_env(tmp_path, "sequential")
    assert InProcessExecutor().run(sequential, schemes).ok
    assert numbers(env) == numbers(sequential)


@pytest.mark.parametrize("agent", ["random", "nsga2", "automc"])
def test_batched_searches_equal_sequential_ones(agent, ray_executor, tmp_path):
    """Agents that know a batch (random's asked trials, a population, a round's pairs) prefetch it on
    Ray; the search then evaluates exactly what it evaluates alone, with the same accounting."""
    from agents.base import Budget, Evaluator
    from agents.runner import run_search

    torch.set_num_threads(1)
    budget = Budget(executions=10)
    options = {"population": 4} if agent == "nsga2" else {"optimal_num": 3} if agent == "automc" else {}
    alone = run_search(make_env(tmp_path, "alone"), agent, budget, 1, progress=False, **options)
    Evaluator.executor = ray_executor
    try:
        batched_env = make_env(tmp_path, "batched")
        batched = run_search(batched_env, agent, budget, 1, progress=False, **options)
    finally:
        Evaluator.executor = None
    assert [e.scheme for e in batched.evaluations] == [e.scheme for e in alone.evaluations]
    assert [(e.acc, e.cost, e.execution) for e in batched.evaluations] == \
        [(e.acc, e.cost, e.execution) for e in alone.evaluations]
    workers = {r.metrics.get("worker", {}).get("pid") for r in batched_env.store.records(batched_env.fingerprint)}
    assert workers - {None}, "nothing was computed on the Ray workers"
