"""AutoMC-v0: gymnasium compliance, masks, store reuse, reproducibility, clear errors."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import automc_env  # noqa: F401  (registers AutoMC-v0)
from automc_env.env import AutoMCEnv, SchemeState
from automc_env.space import get_space
from automc_env.store import EvaluationStore

SPACE = get_space("paper")
NS = SPACE.method_range("NS")


def ns(ft=0.1, dec=0.12, max_prune=0.9) -> int:
    return SPACE.id_of("NS", {"ft": ft, "dec": dec, "max_prune": max_prune})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return EvaluationStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def env(store):
    return AutoMCEnv(task="synthetic", store=store)


def test_gymnasium_make_and_check_env(store):
    made = gym.make("AutoMC-v0", task="synthetic", store=store)
    check_env(made.unwrapped, skip_render_check=True)


def test_spaces(env):
    assert env.action_space.n == 4525
    obs, info = env.reset()
    assert obs["scheme"].shape == (5, 23) and obs["metrics"].shape == (5,)
    assert env.observation_space.contains(obs)
    assert info["scheme"] == [] and info["PR"] == 0.0


def test_step_really_compresses_and_reports(env):
    env.reset()
    obs, reward, terminated, truncated, info = env.step(ns(dec=0.2))
    assert info["params"] < env.base["params"]
    assert abs(info["PR"] - 0.2) < 0.02 and abs(info["step_PR"] - 0.2) < 0.02
    assert info["flops"] < env.base["flops"] and info["FR"] > 0
    assert info["acc"] > 50  # 4 classes: chance is 25 %
    assert info["AR"] == pytest.approx((info["acc"] - env.base["acc"]) / env.base["acc"])
    assert obs["scheme"][0, 0] == 1.0 and obs["scheme"][1].sum() == 0
    assert not terminated and not truncated
    assert np.isfinite(reward)
    # second step: step rates relative to the parent, scheme rates relative to the original
    _, _, _, _, info2 = env.step(ns(dec=0.12))
    assert info2["PR"] == pytest.approx(1 - info2["params"] / env.base["params"])
    assert info2["step_PR"] == pytest.approx(1 - info2["params"] / info["params"])
    assert abs(info2["PR"] - 0.32) < 0.03


def test_store_replays_same_numbers(env, store):
    env.reset()
    first = env.step(ns(dec=0.04))[4]
    env.reset()
    again = env.step(ns(dec=0.04))[4]
    assert again == first  # same instance: identical info, including cost and 'cached'
    other = AutoMCEnv(task="synthetic", store=store)  # a new instance reads it from the store
    replay = other.step(ns(dec=0.04))[4]
    assert replay["cached"] and replay["seconds"] == first["seconds"] > 0
    for key in ("acc", "params", "flops", "AR", "PR", "FR", "step_AR", "step_PR"):
        assert replay[key] == first[key]


def test_same_seed_same_numbers_without_store():
    a = AutoMCEnv(task="synthetic", store=False).evaluate([ns(dec=0.12)])
    b = AutoMCEnv(task="synthetic", store=False).evaluate([ns(dec=0.12)])
    assert a[0]["acc"] == b[0]["acc"] and a[0]["params"] == b[0]["params"]


def test_reset_to_a_scheme_uses_the_store(env):
    scheme = [ns(dec=0.12), ns(dec=0.04)]
    env.evaluate(scheme)
    obs, info = AutoMCEnv(task="synthetic", store=env.store).reset(options={"scheme": scheme})
    assert info["scheme"] == scheme and info["cached"]
    assert obs["scheme"][:2, 0].tolist() == [1.0, 1.0]


def test_action_masks_cap_and_unavailable_methods(env):
    env.reset(options={"scheme": [ns(dec=0.4), ns(dec=0.36)]})
    mask = env.action_masks()
    assert mask.shape == (4525,) and mask.dtype == bool
    # PR ≈ 0.76: anything removing more than 0.85 − 0.76 of the original is masked
    assert not mask[ns(dec=0.2)] and mask[ns(dec=0.04)]
    strict = AutoMCEnv(task="synthetic", store=env.store, invalid_action="raise")
    strict.reset(options={"scheme": [ns(dec=0.4), ns(dec=0.36)]})
    with pytest.raises(ValueError, match="pr_cap"):
        strict.step(ns(dec=0.2))


@pytest.mark.parametrize("reward", ["default", "paper_rl"])
def test_invalid_action_ends_the_episode_at_the_worst_return(store, reward):
    """The default invalid_action="terminate": nothing computed or stored, the episode returns
    Φ(destroyed) − Φ(base) (−1 under the default reward), and the episode is over."""
    env = AutoMCEnv(task="synthetic", store=store, reward=reward)
    scheme = [ns(dec=0.4), ns(dec=0.36)]
    obs, info = env.reset(options={"scheme": scheme})
    base = env.potential(dict(info, acc=env.base["acc"], AR=0.0, PR=0.0, FR=0.0), env.task.gamma)
    so_far = env.potential(info, env.task.gamma) - base  # the return of the two valid steps
    rows = len(store.records(env.fingerprint))
    obs2, r, terminated, truncated, info2 = env.step(ns(dec=0.2))
    assert terminated and not truncated
    assert info2["invalid_action"] is True and "pr_cap" in info2["invalid_reason"]
    assert info2["scheme"] == scheme and info2["PR"] == info["PR"]
    assert all(np.array_equal(obs[k], obs2[k]) for k in obs)
    worst = -1.0 if reward == "default" else -0.08 * env.base["acc"]
    assert so_far + r == pytest.approx(worst)
    assert r < 0 and so_far > worst  # a valid scheme's return is above it
    assert len(store.records(env.fingerprint)) == rows
    with pytest.raises(RuntimeError, match="reset"):
        env.step(ns(dec=0.04))
    env.reset()
    info3 = env.step(ns(dec=0.04))[4]
    assert info3["invalid_action"] is False
    with pytest.raises(ValueError, match="invalid_action"):
        AutoMCEnv(task="synthetic", store=store, invalid_action="ignore")


def test_invalid_actions_raise_clear_errors(env):
    env.reset()
    for bad in (-1, 4525, 1.5, "3", True):
        with pytest.raises(ValueError, match="0..4524|strategy id"):
            env.step(bad)


def test_episode_ends_at_max_len_and_step_after_end_raises(store):
    short = AutoMCEnv(task="synthetic", store=store, max_len=2)
    short.reset()
    assert not short.step(ns(dec=0.04))[2]
    assert short.step(ns(dec=0.04))[2]
    assert not short.action_masks().any()
    with pytest.raises(RuntimeError, match="reset"):
        short.step(ns(dec=0.04))


def test_masked_random_episode(env):
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    terminated, steps = False, 0
    while not terminated:
        mask = env.action_masks()
        action = int(rng.choice(np.flatnonzero(mask)))
        *_, terminated, _, info = env.step(action)
        steps += 1
    assert 1 <= steps <= 5 and info["PR"] <= 0.85 + 0.03


def test_bad_scheme_and_kwargs_raise(env):
    with pytest.raises(ValueError, match="max_len"):
        env.reset(options={"scheme": [ns()] * 6})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"schema": []})
    with pytest.raises(ValueError, match="unknown task"):
        AutoMCEnv(task="nope")
    with pytest.raises(ValueError, match="unknown reward"):
        AutoMCEnv(task="synthetic", reward="nope", store=False)


def test_default_reward_telescopes_to_the_potential(env):
    env.reset()
    total = 0.0
    for a in (ns(dec=0.2), ns(dec=0.12)):
        _, r, _, _, info = env.step(a)
        total += r
    gamma = env.task.gamma
    expected = info["AR"] + min(info["PR"], gamma) / gamma + 0.5 * max(info["PR"] - gamma, 0)
    assert total == pytest.approx(expected - 0.0)


def test_scheme_state_json_round_trip_and_validate(env):
    env.reset(options={"scheme": [ns(dec=0.12)]})
    state = env.scheme_state()
    restored = SchemeState.from_json(state.to_json())
    assert restored.scheme == state.scheme and restored.steps == state.steps
    report = restored.validate(env)
    assert report["reproduced"], report["problems"]
    forged = json.loads(state.to_json())
    forged["steps"][0]["acc"] += 5.0
    assert not SchemeState.from_json(forged).validate(env)["reproduced"]
