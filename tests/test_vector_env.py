"""``gymnasium.make_vec("AutoMC-v0", ...)``: sync and async (subprocess) vector environments, the
async ones computing overlapping schemes into one shared store at the same time (issue 15)."""

from __future__ import annotations

import sqlite3

import gymnasium as gym
import numpy as np
import pytest

import automc_env  # noqa: F401  (registers AutoMC-v0)
from automc_env.env import AutoMCEnv
from automc_env.space import get_space
from automc_env.store import EvaluationStore

SPACE = get_space("paper")


def ns(dec: float, ft: float = 0.1) -> int:
    return SPACE.id_of("NS", {"ft": ft, "dec": dec, "max_prune": 0.9})


def test_sync_vector_env_shares_the_store(tmp_path):
    envs = gym.make_vec("AutoMC-v0", num_envs=2, vectorization_mode="sync", task="synthetic", store=tmp_path)
    try:
        obs, info = envs.reset(seed=0)
        assert obs["scheme"].shape == (2, 5, 23) and obs["metrics"].shape == (2, 5)
        obs, reward, terminated, truncated, info = envs.step(np.array([ns(0.12), ns(0.12)]))
        # the first environment computed the step, the second replayed it from the shared store
        assert info["cached"].tolist() == [False, True] and reward[0] == reward[1]
        assert [m.shape for m in envs.call("action_masks")] == [(4525,), (4525,)]
    finally:
        envs.close()


def test_async_vector_env_computes_overlapping_schemes_into_one_consistent_store(tmp_path):
    root = tmp_path / "store"
    envs = gym.make_vec("AutoMC-v0", num_envs=2, vectorization_mode="async", task="synthetic", store=str(root))
    try:
        envs.reset(seed=0)
        # both subprocesses compute (1,) and (1, 2) at the same time and both store them; then they part
        plan = [(ns(0.12), ns(0.12)), (ns(0.04), ns(0.04)), (ns(0.2), ns(0.04, ft=0.2))]
        seen = []
        for actions in plan:
            *_, terminated, truncated, info = envs.step(np.array(actions))
            assert not terminated.any() and not info["invalid_action"].any()
            seen.append(info)
        masks = envs.call("action_masks")
    finally:
        envs.close()
    for key in ("acc", "params", "flops"):  # the same scheme gave the same numbers in both processes
        for info in seen[:2]:
            assert info[key][0] == info[key][1]
    assert all(m.dtype == bool and m.shape == (4525,) for m in masks)

    with sqlite3.connect(root / "index.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = EvaluationStore(root)
    reader = AutoMCEnv(task="synthetic", store=store)
    records = store.records(reader.fingerprint)
    a, b = plan[0][0], plan[1][0]
    expected = {(a,), (a, b), (a, b, plan[2][0]), (a, b, plan[2][1])}
    assert {r.scheme for r in records} == expected  # one row per scheme, however many wrote it
    files = sorted(p.name for p in (root / "checkpoints").rglob("*") if p.is_file())
    assert len(files) == len(expected) and all(f.endswith(".safetensors") for f in files)  # no temp files
    for r in records:  # every row's checkpoint loads and its metrics are what the envs reported
        store.load_model(r)
        step = len(r.scheme) - 1
        column = [i for i in range(2) if seen[step]["scheme"][i] == list(r.scheme)][0]
        assert r.metrics["params"] == seen[step]["params"][column]
        assert r.metrics["acc"] == pytest.approx(seen[step]["acc"][column])
    replay = reader.evaluate([a, b, plan[2][1]])  # a third process's view: all of it stored
    assert all(step["cached"] for step in replay)
