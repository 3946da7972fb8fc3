"""The native vector environment of the data backends gives every sub-environment the numbers of the
single ``AutoMCEnv`` with the same arguments and actions (masks, rewards, observations, infos, ends)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import automc_env  # noqa: F401  (registers AutoMC-v0)
from automc_env.backends.table import TableMiss
from automc_env.env import AutoMCEnv
from automc_env.space import get_space
from automc_env.vector import AutoMCVectorEnv

SPACE = get_space("paper")
NS = SPACE.parse("NS(ft=0.1,dec=0.12,max=0.9)").id
SFP = SPACE.parse("SFP(dec=0.2,soft=0.1,every=1)").id
LFB = SPACE.parse("LFB(ft=0.2,dec=0.12,factor=1,loss=CE)").id
KEYS = ("acc", "params", "flops", "AR", "PR", "FR", "step_AR", "step_PR", "step_FR", "cost", "cached",
        "invalid_action")


def lockstep(vec, singles, actions_per_step):
    """Step the vector env and the single envs together (autoresetting the singles like the vector env)."""
    obs, info = vec.reset(seed=0)
    done = [False] * len(singles)
    for i, env in enumerate(singles):
        o, inf = env.reset(seed=0)
        assert (o["metrics"] == obs["metrics"][i]).all() and inf["acc"] == info["acc"][i]
    for actions in actions_per_step:
        masks = vec.action_masks()
        obs, reward, terminated, truncated, info = vec.step(np.asarray(actions))
        assert not truncated.any() and set(info["backend"]) == {vec.backend}
        for i, env in enumerate(singles):
            if done[i]:     # next-step autoreset: the vector env reset this one and ignored its action
                o, _ = env.reset()
                done[i] = False
                assert reward[i] == 0 and not terminated[i] and info["depth"][i] == 0
            else:
                assert (masks[i] == env.action_masks()).all()
                o, r, t, _, inf = env.step(int(actions[i]))
                done[i] = t
                assert (r, t) == (reward[i], terminated[i])
                for key in KEYS:
                    assert inf[key] == info[key][i], key
            assert (o["scheme"] == obs["scheme"][i]).all() and (o["metrics"] == obs["metrics"][i]).all()


@pytest.mark.parametrize("noise", [False, True])
def test_surrogate_vector_env_equals_single_envs_step_for_step(noise):
    n = 48
    options = {"noise": True} if noise else None
    vec = gym.make_vec("AutoMC-v0", num_envs=n, task="digits", backend="surrogate", backend_options=options)
    assert isinstance(vec, AutoMCVectorEnv)
    singles = [AutoMCEnv(task="digits", backend="surrogate", backend_options=options) for _ in range(n)]
    rng = np.random.default_rng(1)
    steps = []
    vec.reset(seed=3)
    for _ in range(14):          # random valid actions, some invalid ones mixed in (episodes end by penalty)
        a = vec.sample_valid_actions()
        a[rng.random(n) < 0.05] = rng.integers(0, len(SPACE), 1)[0]
        steps.append(a)
        vec.step(a)
    lockstep(vec, singles, steps)


def test_sampler_draws_only_valid_actions_and_reaches_all_of_them():
    vec = AutoMCVectorEnv(num_envs=256, task="digits", backend="surrogate")
    vec.reset(seed=0)
    seen = set()
    for _ in range(30):
        masks = vec.action_masks()
        a = vec.sample_valid_actions()
        live = masks.any(axis=1)
        assert masks[np.flatnonzero(live), a[live]].all()
        seen.update(a[live & (vec._len == 0)].tolist())
        vec.step(np.where(live, a, 0))
    first = AutoMCEnv(task="digits", backend="surrogate").action_masks()
    assert seen <= set(np.flatnonzero(first)) and len(seen) > 1000   # spread over the valid first steps


@pytest.fixture(scope="module")
def table_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("vector-table-store")
    live = AutoMCEnv(task="synthetic", store=store)
    for scheme in ([NS, SFP], [LFB, SFP], [SFP, NS]):
        live.evaluate(scheme)
    return store


def test_table_vector_env_equals_single_envs_and_refuses_what_it_lacks(table_store):
    kwargs = dict(task="synthetic", backend="table", store=table_store)
    vec = gym.make_vec("AutoMC-v0", num_envs=3, **kwargs)
    singles = [AutoMCEnv(**kwargs) for _ in range(3)]
    lockstep(vec, singles, [[NS, LFB, SFP], [SFP, SFP, NS]])
    vec.reset()
    vec.step(np.array([NS, NS, NS]))
    with pytest.raises(TableMiss, match=r"longest stored prefix"):
        vec.step(np.array([NS, SFP, SFP]))


def test_invalid_actions_and_bad_input():
    vec = AutoMCVectorEnv(num_envs=2, task="digits", backend="surrogate", invalid_action="raise", pr_cap=0.3)
    vec.reset()
    too_much = int(np.flatnonzero(vec.env._removal > 0.3)[0])   # plans to remove more than the cap allows
    with pytest.raises(ValueError, match="is not valid in sub-environment 1"):
        vec.step(np.array([NS, too_much]))
    with pytest.raises(ValueError, match="2 integer strategy ids"):
        vec.step(np.array([NS]))
    with pytest.raises(ValueError, match="out of range"):
        vec.step(np.array([NS, len(SPACE)]))
    with pytest.raises(ValueError, match="live backend"):
        AutoMCVectorEnv(num_envs=2, task="digits", backend="live")


def test_live_make_vec_stays_a_sync_vector_of_real_environments(tmp_path):
    envs = gym.make_vec("AutoMC-v0", num_envs=2, task="synthetic", store=tmp_path)
    try:
        assert isinstance(envs, gym.vector.SyncVectorEnv)
    finally:
        envs.close()
