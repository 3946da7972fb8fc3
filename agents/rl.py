"""Reinforcement-learning search agents: the paper's REINFORCE controller and two SB3 PPO agents.

* :class:`ReinforceAgent` (``"rl"``): the paper's RL baseline (search.md §5, GraphNAS/ENAS-style
  LSTM controller trained with REINFORCE), in PyTorch.
* :class:`MaskablePPOAgent` (``"ppo-mask"``): sb3-contrib ``MaskablePPO`` stepping AutoMC-v0 with the
  environment's action masks.
* :class:`PPOAgent` (``"ppo"``): plain stable-baselines3 ``PPO`` without masks.

Every scheme evaluation goes through :class:`agents.base.Evaluator`, so budgets, prefix reuse and
recording are the same as for every other agent. The PPO agents see the environment through
:class:`EvaluatorEnv`, a thin ``gymnasium.Wrapper`` whose ``step(a)`` calls
``evaluator.evaluate(scheme + [a])`` (the prefix is replayed from the store in milliseconds; only the
new step can cost an execution) and then reads the observation back with
``env.reset(options={"scheme": new_scheme})``. The reward is the change of the environment's own
potential (``env.potential``), i.e. exactly what ``env.step`` would have returned. Choosing this over
"step the env and mirror the evaluator's counters" keeps a single source of truth for budgets and
records: the wrapper never duplicates the bookkeeping in ``agents/base.py``.

Deviations from the paper's RL baseline (search.md §5), all deliberate:

* Scheme length: up to ``env.max_len`` decisions (L = 5 on the paper tasks; the code used 10).
* Validity: by default (``invalid="mask"``) each decision's logits are masked with the environment's
  action mask after the prefix evaluated so far (the prefix is evaluated step by step as it is
  sampled), so the controller never proposes an invalid scheme. The code instead sampled freely and gave
  invalid schemes reward 0 without running them; ``invalid="reward0"`` reproduces that (schemes whose
  planned removal Σ exceeds ``pr_cap``, or that break a method's position rule, get R = 0 unrun; a
  step the real mask rejects mid-scheme — the measured PR can exceed the planned one — also ends the
  scheme with R = 0; the prefixes run until then are recorded). The paper's further requirement
  "planned removal reaches γ" is not applied: the env has no such rule and the reward already
  prefers PR ≥ γ.
* Advantage scaling: ``adv·0.5/max(|adv|)`` over the last 10 advantages (the code used ``max(adv)``,
  which flips the sign when all recent advantages are negative).
* Loss: ``−adv·Σ log π`` over the decisions actually taken, up to and including END; the code also
  summed the log-probabilities of the padding decisions sampled after END, which do not affect the
  scheme.
* A revisited scheme costs nothing here (the evaluator replays it), so a converged policy could spin
  forever under an executions budget: every agent stops after ``max_stall`` consecutive proposals that
  add no scheme new to this run (``result.meta["stopped"] = "stalled"``).

The PPO agents are not in the paper (they are extra baselines for the Gymnasium environment).
``PPOAgent`` has no masks: an invalid action ends the episode with reward ``−invalid_penalty``
(default 1.0, the worth of reaching γ under the default potential) without evaluating anything.

A step whose compressor fails (the evaluator charges and records it, see :mod:`agents.base`) ends
the scheme: the REINFORCE controller gets reward 0, the code's score for a scheme it could not run;
a PPO episode ends with reward ``−invalid_penalty``, as for an invalid action. The search goes on.
``result.meta``: ``samples`` (REINFORCE: schemes sampled = controller updates), ``steps`` and
``policy_updates`` (PPO: environment steps and completed rollout/update cycles), ``failed_steps``.

All randomness comes from ``seed`` (a ``torch.Generator`` for the controller, SB3's ``seed=`` for
PPO), and no decision depends on wall-clock time, so a resumed search (``result=``) replays the same
proposals for free from the store and continues where it stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import Budget, BudgetExhausted, Evaluator, SchemeFailed, SearchResult
from automc_env.env import paper_rl_potential
from compressors import available_methods, get_compressor

__all__ = ["EvaluatorEnv", "MaskablePPOAgent", "PPOAgent", "ReinforceAgent", "SearchStopped"]


class SearchStopped(Exception):
    """Raised inside SB3's learn loop (from :class:`EvaluatorEnv`) to end the search; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ---- shared helpers ---------------------------------------------------------------------------------

def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def _check_net_arch(net_arch: Any) -> list[int]:
    if not isinstance(net_arch, (list, tuple)) or not net_arch or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in net_arch):
        raise ValueError(f"net_arch must be a non-empty list of positive layer sizes, got {net_arch!r}")
    return [int(n) for n in net_arch]


def _unwrapped(env):
    return env.unwrapped if hasattr(env, "unwrapped") else env


@contextlib.contextmanager
def preserve_global_rng() -> Iterator[None]:
    """Keep Python/NumPy/torch global RNG states across environment calls.

    A computed step reseeds torch's global RNG (``torch.manual_seed(step_seed)`` in the env) while a
    replayed one does not, so an agent drawing from global RNGs (SB3 does) would act differently on a
    warm store; restoring the states makes the search independent of what the store already holds.
    """
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def planned_valid(env, scheme: Sequence[int]) -> bool:
    """The paper-style validity check that needs no execution: length, availability, position rules and
    planned removal Σ ≤ pr_cap (the env's mask uses the measured PR, which can only be stricter)."""
    env = _unwrapped(env)
    if not 1 <= len(scheme) <= env.max_len:
        return False
    available = set(available_methods())
    removal = 0.0
    for i, a in enumerate(scheme):
        method = env.space[a].method
        if method not in available:
            return False
        compressor = get_compressor(method)
        if i > 0 and compressor.first_only:
            return False
        if i + 1 < len(scheme) and compressor.terminal:
            return False
        removal += env.space[a].removal(env.task.gamma)
        if removal > env.pr_cap + 1e-9:
            return False
    return True


# ---- REINFORCE (the paper's RL baseline) ----------------------------------------------------------------

class _Controller(nn.Module):
    """GraphNAS/ENAS-style controller: LSTMCell over decisions, tokens = N strategies + END."""

    def __init__(self, n_strategies: int, hidden: int, embed: int, temperature: float, tanh_constant: float):
        super().__init__()
        self.n = n_strategies
        self.embed_dim = embed
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.embedding = nn.Embedding(n_strategies + 1, embed)
        self.cell = nn.LSTMCell(embed, hidden)
        self.decoder = nn.Linear(hidden, n_strategies + 1)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def logits(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = self.cell(x, state)
        z = self.decoder(h) / self.temperature
        return self.tanh_constant * torch.tanh(z), (h, c)


class ReinforceAgent:
    """The paper's RL baseline: an LSTM controller samples a whole scheme, REINFORCE updates it once.

    Options (defaults are the paper code's): ``hidden=100``, ``embed=100`` (controller sizes),
    ``learning_rate=3.5e-4`` (Adam), ``ema_decay=0.95`` (moving-average baseline), ``temperature=5.0``
    and ``tanh_constant=2.5`` (logits → 2.5·tanh(logits/5)), ``adv_scale=0.5`` and ``adv_window=10``
    (advantage normalisation), ``max_len=None`` (decisions per scheme; None → env.max_len, at most
    that), ``invalid="mask"`` (mask logits with the env's action mask) or ``"reward0"`` (sample
    freely, invalid schemes get R = 0 unrun: the code's behaviour), ``max_stall=1000`` (stop after this
    many consecutive samples that add no scheme new to this run).
    """

    name = "rl"

    def __init__(self, hidden: int = 100, embed: int = 100, learning_rate: float = 3.5e-4,
                 ema_decay: float = 0.95, temperature: float = 5.0, tanh_constant: float = 2.5,
                 adv_scale: float = 0.5, adv_window: int = 10, max_len: int | None = None,
                 invalid: str = "mask", max_stall: int = 1000):
        self.hidden = _check_int("hidden", hidden, 1)
        self.embed = _check_int("embed", embed, 1)
        self.learning_rate = _check_float("learning_rate", learning_rate, 0.0, 1.0, low_open=True)
        self.ema_decay = _check_float("ema_decay", ema_decay, 0.0, 1.0, high_open=True)
        self.temperature = _check_float("temperature", temperature, 0.0, math.inf, low_open=True, high_open=True)
        self.tanh_constant = _check_float("tanh_constant", tanh_constant, 0.0, math.inf, low_open=True,
                                          high_open=True)
        self.adv_scale = _check_float("adv_scale", adv_scale, 0.0, math.inf, low_open=True, high_open=True)
        self.adv_window = _check_int("adv_window", adv_window, 1)
        self.max_len = None if max_len is None else _check_int("max_len", max_len, 1)
        if invalid not in ("mask", "reward0"):
            raise ValueError(f"invalid must be 'mask' or 'reward0', got {invalid!r}")
        self.invalid = invalid
        self.max_stall = _check_int("max_stall", max_stall, 1)

    def options(self) -> dict:
        return {k: getattr(self, k) for k in ("hidden", "embed", "learning_rate", "ema_decay", "temperature",
                                              "tanh_constant", "adv_scale", "adv_window", "max_len",
                                              "invalid", "max_stall")}

    def search(self, env, budget: Budget, seed: int, result: SearchResult | None = None) -> SearchResult:
        evaluator = Evaluator(env, budget, agent=self.name, seed=seed, result=result)
        inner = evaluator.env
        length = inner.max_len if self.max_len is None else self.max_len
        if length > inner.max_len:
            raise ValueError(f"max_len={length} exceeds the environment's max_len={inner.max_len}")
        with torch.random.fork_rng(devices=[]):   # seeded init without touching the caller's global RNG
            torch.manual_seed(seed)
            controller = _Controller(len(inner.space), self.hidden, self.embed, self.temperature,
                                     self.tanh_constant)
        generator = torch.Generator().manual_seed(seed)   # all sampling draws from this
        optimizer = torch.optim.Adam(controller.parameters(), lr=self.learning_rate)
        gamma = inner.task.gamma
        baseline: float | None = None
        advantages: list[float] = []
        seen: set[tuple[int, ...]] = set()
        stall, samples = 0, 0
        stopped = "budget"
        try:
            while True:
                scheme, log_probs, evaluation = self._sample(controller, evaluator, length, generator)
                samples += 1
                if evaluation is None or evaluation.failed is not None:  # invalid (reward0) or failed
                    reward = 0.0
                else:
                    reward = paper_rl_potential({"acc": evaluation.acc, "PR": evaluation.PR}, gamma)
                key = tuple(scheme)
                stall = stall + 1 if (key in seen or evaluation is None) else 0
                seen.add(key)
                baseline = reward if baseline is None else self.ema_decay * baseline + (1 - self.ema_decay) * reward
                adv = reward - baseline
                advantages.append(adv)
                peak = max(abs(a) for a in advantages[-self.adv_window:])
                if peak > 0:
                    adv = self.adv_scale / peak * adv
                loss = -adv * torch.stack(log_probs).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if stall >= self.max_stall:
                    stopped = "stalled"
                    break
        except BudgetExhausted:
            pass
        evaluator.result.meta["agent_options"] = self.options()
        evaluator.result.meta["stopped"] = stopped
        evaluator.result.meta["samples"] = samples
        evaluator.result.meta["failed_steps"] = sum(e.failed is not None for e in evaluator.result.evaluations)
        return evaluator.result

    def _sample(self, controller: _Controller, evaluator: Evaluator, length: int, generator: torch.Generator):
        """One scheme: (strategy ids, log π of each decision taken, its Evaluation or None if invalid).

        With ``invalid="mask"`` each prefix is evaluated as soon as it is sampled, because the next
        decision's mask depends on the measured PR of the prefix.
        """
        n = controller.n
        mask_mode = self.invalid == "mask"
        state = (torch.zeros(1, self.hidden), torch.zeros(1, self.hidden))
        x = torch.zeros(1, self.embed)
        scheme: list[int] = []
        log_probs: list[torch.Tensor] = []
        evaluation = None
        for t in range(length):
            logits, state = controller.logits(x, state)
            logits = logits[0]
            allowed = torch.ones(n + 1, dtype=torch.bool)
            if t == 0:
                allowed[n] = False           # the first decision cannot be END
            if mask_mode:
                allowed[:n] = torch.from_numpy(evaluator.valid_actions(scheme))
                if not allowed[:n].any():
                    if t == 0:
                        raise RuntimeError("no strategy is valid on the base model; nothing to search")
                    break                    # the env ended the scheme: END is the only choice (log π = 0)
            logits = logits.masked_fill(~allowed, float("-inf"))
            log_p = torch.log_softmax(logits, dim=-1)
            token = int(torch.multinomial(log_p.exp().detach(), 1, generator=generator))
            log_probs.append(log_p[token])
            if token == n:
                break
            scheme.append(token)
            if mask_mode:
                try:
                    evaluation = evaluator.evaluate(scheme)
                except SchemeFailed as failure:   # the scheme ends at the failed step
                    evaluation = failure.evaluation
                    break
            x = controller.embedding(torch.tensor([token]))
        if not mask_mode:
            evaluation = self._evaluate_unmasked(evaluator, scheme)
        if not log_probs:  # pragma: no cover - t = 0 always samples
            log_probs.append(torch.zeros(()))
        return scheme, log_probs, evaluation

    @staticmethod
    def _evaluate_unmasked(evaluator: Evaluator, scheme: list[int]):
        """invalid="reward0": skip schemes invalid by plan; stop at the first step the real mask rejects."""
        if not planned_valid(evaluator.env, scheme):
            return None
        evaluation = None
        try:
            for i in range(len(scheme)):
                if not evaluator.valid_actions(scheme[:i])[scheme[i]]:
                    return None
                evaluation = evaluator.evaluate(scheme[:i + 1])
        except SchemeFailed as failure:   # the scheme ends at the failed step
            return failure.evaluation
        return evaluation


# ---- PPO agents (stable-baselines3 / sb3-contrib) ------------------------------------------------------

class EvaluatorEnv(gym.Wrapper):
    """AutoMC-v0 as SB3 sees it, with every step evaluated (and budgeted, recorded) by the Evaluator.

    ``step(a)`` = ``evaluator.evaluate(scheme + [a])`` then the observation of the new scheme via
    ``env.reset(options={"scheme": ...})`` (a store replay) and reward = Δ ``env.potential``. Invalid
    actions (only possible without masks) end the episode with reward ``−invalid_penalty`` unevaluated.
    A step that fails ends the episode with ``−invalid_penalty`` too (the scheme stays where it was).
    Raises :class:`SearchStopped` when the budget is reached or after ``max_stall`` consecutive steps
    that add no scheme new to this run.
    """

    def __init__(self, env, evaluator: Evaluator, invalid_penalty: float = 1.0, max_stall: int = 1000):
        super().__init__(env)
        self.evaluator = evaluator
        self.inner = evaluator.env
        self.invalid_penalty = float(invalid_penalty)
        self.max_stall = int(max_stall)
        self.scheme: list[int] = []
        self.seen: set[tuple[int, ...]] = set()
        self.stall = 0
        self.steps = 0
        self.invalid_actions = 0
        self.failed_steps = 0
        self._obs = None
        self._info: dict = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.scheme = []
        self._obs, self._info = self.inner.reset(options={"scheme": []})   # the base model: free
        return self._obs, dict(self._info)

    def action_masks(self) -> np.ndarray:
        with preserve_global_rng():
            return self.evaluator.valid_actions(self.scheme)

    def step(self, action):
        action = int(np.asarray(action).item())
        self.steps += 1
        if not self.action_masks()[action]:
            self.invalid_actions += 1
            self._stalled()
            info = dict(self._info, invalid_action=action)
            return self._obs, -self.invalid_penalty, True, False, info
        new = self.scheme + [action]
        before = self.inner.potential(self._info, self.inner.task.gamma)
        key = tuple(new)
        try:
            with preserve_global_rng():
                self.evaluator.evaluate(new)
        except BudgetExhausted as e:
            raise SearchStopped("budget", str(e)) from e
        except SchemeFailed as failure:
            self.failed_steps += 1
            if key in self.seen:
                self._stalled()
            else:
                self.seen.add(key)
                self.stall = 0
            return self._obs, -self.invalid_penalty, True, False, dict(self._info, failed=failure.evaluation.failed)
        if key in self.seen:
            self._stalled()
        else:
            self.seen.add(key)
            self.stall = 0
        self.scheme = new
        with preserve_global_rng():
            self._obs, self._info = self.inner.reset(options={"scheme": new})   # store replay: milliseconds
        reward = float(self.inner.potential(self._info, self.inner.task.gamma) - before)
        terminated = not bool(self.inner.action_masks().any())
        return self._obs, reward, terminated, False, dict(self._info)

    def _stalled(self) -> None:
        self.stall += 1
        if self.stall >= self.max_stall:
            raise SearchStopped("stalled", f"{self.stall} consecutive steps added no new scheme")


class _SB3Agent(ABC):
    """Shared PPO/MaskablePPO driver: build the model on an EvaluatorEnv, learn until the budget stops it."""

    name = "sb3"
    masked = False

    def __init__(self, n_steps: int = 32, batch_size: int = 16, n_epochs: int = 4, learning_rate: float = 3e-4,
                 gamma: float = 1.0, gae_lambda: float = 0.95, ent_coef: float = 0.01, clip_range: float = 0.2,
                 net_arch: Sequence[int] = (64, 64), invalid_penalty: float = 1.0, max_stall: int = 1000,
                 total_timesteps: int = 10**9):
        self.n_steps = _check_int("n_steps", n_steps, 2)
        self.batch_size = _check_int("batch_size", batch_size, 2)
        if self.batch_size > self.n_steps:
            raise ValueError(f"batch_size ({batch_size}) must not exceed n_steps ({n_steps})")
        self.n_epochs = _check_int("n_epochs", n_epochs, 1)
        self.learning_rate = _check_float("learning_rate", learning_rate, 0.0, 1.0, low_open=True)
        self.gamma = _check_float("gamma", gamma, 0.0, 1.0)
        self.gae_lambda = _check_float("gae_lambda", gae_lambda, 0.0, 1.0)
        self.ent_coef = _check_float("ent_coef", ent_coef, 0.0, math.inf, high_open=True)
        self.clip_range = _check_float("clip_range", clip_range, 0.0, 1.0, low_open=True)
        self.net_arch = _check_net_arch(list(net_arch) if isinstance(net_arch, tuple) else net_arch)
        self.invalid_penalty = _check_float("invalid_penalty", invalid_penalty, 0.0, math.inf, high_open=True)
        self.max_stall = _check_int("max_stall", max_stall, 1)
        self.total_timesteps = _check_int("total_timesteps", total_timesteps, 1)

    def options(self) -> dict:
        keys = ["n_steps", "batch_size", "n_epochs", "learning_rate", "gamma", "gae_lambda", "ent_coef",
                "clip_range", "net_arch", "max_stall", "total_timesteps"]
        if not self.masked:
            keys.append("invalid_penalty")
        return {k: getattr(self, k) for k in keys}

    @abstractmethod
    def _model(self, wrapped: gym.Env, seed: int):
        """The concrete algorithm (one per subclass)."""

    def _kwargs(self, seed: int) -> dict:
        return dict(n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs,
                    learning_rate=self.learning_rate, gamma=self.gamma, gae_lambda=self.gae_lambda,
                    ent_coef=self.ent_coef, clip_range=self.clip_range, seed=seed, device="cpu", verbose=0,
                    policy_kwargs={"net_arch": list(self.net_arch)})

    def search(self, env, budget: Budget, seed: int, result: SearchResult | None = None) -> SearchResult:
        evaluator = Evaluator(env, budget, agent=self.name, seed=seed, result=result)
        wrapped = EvaluatorEnv(env, evaluator, invalid_penalty=self.invalid_penalty, max_stall=self.max_stall)
        model = self._model(wrapped, seed)
        stopped = "total_timesteps"
        try:
            model.learn(total_timesteps=self.total_timesteps)
        except SearchStopped as e:
            stopped = e.reason
        evaluator.result.meta["agent_options"] = self.options()
        evaluator.result.meta["stopped"] = stopped
        evaluator.result.meta["steps"] = wrapped.steps
        # PPO.train() (once per completed rollout) adds 1 to _n_updates per epoch (no target_kl: all n_epochs)
        evaluator.result.meta["policy_updates"] = int(getattr(model, "_n_updates", 0)) // self.n_epochs
        evaluator.result.meta["failed_steps"] = wrapped.failed_steps
        if not self.masked:
            evaluator.result.meta["invalid_actions"] = wrapped.invalid_actions
        return evaluator.result


class MaskablePPOAgent(_SB3Agent):
    """sb3-contrib MaskablePPO ("MultiInputPolicy") with the environment's action masks.

    Options: ``n_steps=32`` (rollout length), ``batch_size=16``, ``n_epochs=4``, ``learning_rate=3e-4``,
    ``gamma=1.0`` (SB3's discount, not the task's γ: episodes are ≤ L steps and the undiscounted
    potential-based return equals the final scheme's potential),
    ``gae_lambda=0.95``, ``ent_coef=0.01`` (keeps exploring 4,525 actions), ``clip_range=0.2``,
    ``net_arch=[64, 64]``, ``max_stall=1000``, ``total_timesteps=10**9`` (the budget normally stops it).
    """

    name = "ppo-mask"
    masked = True

    def _model(self, wrapped: gym.Env, seed: int):
        from sb3_contrib import MaskablePPO
        from sb3_contrib.common.wrappers import ActionMasker

        return MaskablePPO("MultiInputPolicy", ActionMasker(wrapped, lambda e: wrapped.action_masks()),
                           **self._kwargs(seed))


class PPOAgent(_SB3Agent):
    """Plain stable-baselines3 PPO without masks: invalid actions end the episode with −invalid_penalty.

    Options as :class:`MaskablePPOAgent`, plus ``invalid_penalty=1.0``.
    """

    name = "ppo"
    masked = False

    def _model(self, wrapped: gym.Env, seed: int):
        from stable_baselines3 import PPO

        return PPO("MultiInputPolicy", wrapped, **self._kwargs(seed))
