"""AutoMCEnv: automated model compression as a Gymnasium environment (registered as ``AutoMC-v0``).

* **state**: the scheme so far (a tuple of strategy ids) and the current compressed model's metrics.
* **action**: one of the strategy space's ids (``Discrete(4525)`` on the paper grid).
* **step**: really compress the current model with that strategy (CUDA when present), measure it,
  and store the result; a step that was computed before (same task, grid, seed, code) is replayed
  from the evaluation store in milliseconds.

Observation (a ``Dict`` that stable-baselines3's ``MultiInputPolicy`` accepts without blowing up):

* ``scheme``: ``Box(0, 1, (L, 23))`` — one row per step taken: a present flag, the method one-hot
  and the normalised hyperparameter settings (``StrategySpace.features``); zero rows after the end.
* ``metrics``: ``Box((5,))`` — [accuracy / 100, PR, FR, AR (clipped to [-1, 1]), steps taken / L].

Reward (``reward=``): the default is the change of the potential
``Φ = AR + min(PR, γ)/γ + 0.5·max(PR − γ, 0)``, so an episode's return is Φ(final scheme): reaching
the target γ is worth 1, each further point of PR is worth half a point of relative accuracy, and
accuracy lost or gained counts one-for-one. ``"paper_rl"`` uses the paper's RL reward as the
potential instead (``0.1·acc% + PR`` if PR ≥ γ else ``0.08·acc% + PR``). A callable
``reward(info, gamma) -> float`` is used as a custom potential.

Action masks (``action_masks()``, for sb3-contrib's MaskablePPO): a strategy is valid when its
method is available, its planned removal keeps the scheme's PR ≤ ``pr_cap`` (0.85, the paper's
per-scheme cap), and its method's position rules allow it (``first_only`` methods only at step 0).
The episode terminates at L steps, after a ``terminal`` method, or when no action is valid.

Invalid (masked) actions (``invalid_action=``): ``"terminate"`` (the default) ends the episode
(``terminated=True``) without computing or storing anything; the observation is unchanged and
``info`` is the current scheme's with ``invalid_action=True`` and ``invalid_reason`` (why, as the
error would say). Its reward is ``Φ(destroyed) − Φ(s)``, where "destroyed" is a model with 0 %
accuracy and nothing removed: the invalid step is scored as if it had wrecked the model, so the
episode returns ``Φ(destroyed) − Φ(base)``, which is −1 under the default reward (on a scale where
reaching γ is worth +1; −0.08 × the base accuracy % under ``paper_rl``). No valid scheme returns
less (AR ≥ −1 and PR ≥ 0), so an invalid action is never a shortcut — not even a way to stop early
at a good scheme, which a constant penalty would allow. ``"raise"`` raises a ``ValueError`` that
says why (strict: for agents that must never propose one). The default exists so that stock tools
work unchanged: stable-baselines3's and gymnasium's ``check_env`` step random actions from the
action space, and plain PPO, A2C or DQN sample all 4,525 actions. Agents that use
``action_masks()`` (MaskablePPO, the built-in agents) never take an invalid action and never see
the penalty. Valid steps report ``invalid_action=False``. Out-of-range or non-integer actions are
not actions of the space: they always raise.

Info (every ``reset`` and ``step``): ``acc`` (val %), ``params``, ``flops`` (MACs), ``AR``, ``PR``,
``FR`` (vs the original model), ``step_AR``, ``step_PR``, ``step_FR`` (vs the step's input),
``scheme``, ``strategy``, ``cached``, ``seconds``, ``cost`` and ``cost_counters``:

* ``cost`` is the step's price in reference seconds, computed from the work it did (the counters
  of :mod:`automc_env.cost`: training and inference MACs and batches, method-specific work, one
  step), never from a clock: the same scheme costs the same on any machine, loaded or idle, at any
  thread count. The counters are stored with the step's metrics (with the price) and priced with
  the task's coefficients, so a replayed step reports the same cost, and a recalibration of
  ``cost.py`` re-prices stored and new steps alike. The final measurement (val accuracy, FLOP
  count) is part of the step and of its cost. 0.0 for the base model.
* ``seconds`` is the wall time the step took when it was computed (machine- and load-dependent),
  recorded and replayed with the result; 0.0 for the base model.
* ``cached`` says the result existed before this environment instance (it came from the store);
  steps this instance computed report ``False`` on every replay.

All three are therefore the same for the same seed and action (gymnasium's determinism check); an
agent that needs the wall time it spends measures it (agents.base.Evaluator does).
``store=False`` gives the instance a private temporary store: nothing persists, but nothing is
computed twice either.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from tqdm.auto import tqdm

from automc_env import cost
from automc_env import pretrain as base_models
from automc_env.backends import BACKENDS, make_backend
from automc_env.fingerprint import BENCHMARK_VERSION, digest, source_digest
from automc_env.metrics import accuracy, accuracy_rate, rates
from automc_env.space import FEATURE_SIZE, StrategySpace, get_space
from automc_env.step import StepConfig, compute_step
from automc_env.store import CheckpointError, EvaluationStore
from automc_env.tasks import Task, get_task
from automc_env.training import fast_cpu_math, precision_policy, resolve_device
from compressors import available_methods, get_compressor

METRICS_SIZE = 5
RewardFn = Callable[[dict, float], float]


def default_potential(info: dict, gamma: float) -> float:
    pr = info["PR"]
    return info["AR"] + min(pr, gamma) / gamma + 0.5 * max(pr - gamma, 0.0)


def paper_rl_potential(info: dict, gamma: float) -> float:
    return (0.1 if info["PR"] >= gamma else 0.08) * info["acc"] + info["PR"]


REWARDS: dict[str, RewardFn] = {"default": default_potential, "paper_rl": paper_rl_potential}
INVALID_ACTIONS = ("terminate", "raise")


@dataclass
class SchemeState:
    """A scheme and the metrics the environment measured for each of its steps (JSON round trip).

    ``validate()`` replays the scheme from the base model without the store and reports whether
    every step's metrics reproduce: params and FLOPs exactly, accuracy within ``acc_tolerance``.
    """

    task: str
    grid: str
    seed: int
    fingerprint: str
    scheme: list[int]
    names: list[str]
    steps: list[dict] = field(default_factory=list)  # per-step info dicts (metrics after each step)
    base: dict = field(default_factory=dict)         # metrics of the uncompressed model

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | dict) -> SchemeState:
        d = json.loads(text) if isinstance(text, str) else dict(text)
        missing = {"task", "grid", "seed", "scheme"} - set(d)
        if missing:
            raise ValueError(f"scheme state lacks {sorted(missing)}")
        d.setdefault("fingerprint", "")
        d.setdefault("names", [])
        return cls(**{k: d[k] for k in ("task", "grid", "seed", "fingerprint", "scheme", "names", "steps", "base")
                      if k in d})

    def validate(self, env: AutoMCEnv | None = None, acc_tolerance: float = 0.0, **env_kwargs) -> dict:
        env = env or AutoMCEnv(task=self.task, grid=self.grid, seed=self.seed, store=False, **env_kwargs)
        replay = env.evaluate(self.scheme, use_store=False)
        problems = []
        if len(replay) != len(self.steps):
            problems.append(f"{len(self.steps)} steps claimed, {len(replay)} replayed")
        for i, (claimed, got) in enumerate(zip(self.steps, replay)):
            for key in ("params", "flops"):
                if claimed.get(key) != got[key]:
                    problems.append(f"step {i + 1}: {key} {claimed.get(key)} != replayed {got[key]}")
            if abs(claimed.get("acc", float("nan")) - got["acc"]) > acc_tolerance:
                problems.append(f"step {i + 1}: acc {claimed.get('acc')} != replayed {got['acc']:.4f} "
                                f"(tolerance {acc_tolerance})")
        return {"reproduced": not problems, "problems": problems, "replayed": replay}


class AutoMCEnv(gym.Env):
    """See the module docstring. Keyword arguments are those of ``gymnasium.make("AutoMC-v0", ...)``."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, task: str | Task = "digits", grid: str = "paper", max_len: int | None = None,
                 reward: str | RewardFn = "default", seed: int = 0, device: str | torch.device = "auto",
                 store: bool | str | Path | EvaluationStore = True, checkpoint: str | Path | None = None,
                 method_options: dict[str, dict] | None = None, pr_cap: float = 0.85,
                 progress: bool | None = None, render_mode: str | None = None, download: bool = False,
                 replicate: int = 0, invalid_action: str = "terminate", backend: str = "live",
                 backend_options: dict | None = None, actions: Sequence[int] | str | None = None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; backends: {', '.join(BACKENDS)}")
        self.backend = backend
        if invalid_action not in INVALID_ACTIONS:
            raise ValueError(f"invalid_action must be one of {INVALID_ACTIONS}, got {invalid_action!r}")
        self.invalid_action = invalid_action
        if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
            raise ValueError(f"replicate must be a non-negative integer, got {replicate!r}")
        self.replicate = replicate
        self.task = get_task(task)
        self.space: StrategySpace = get_space(grid)
        self.max_len = int(max_len if max_len is not None else self.task.max_len)
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if isinstance(reward, str) and reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of {sorted(REWARDS)} or pass a callable")
        self.potential: RewardFn = REWARDS[reward] if isinstance(reward, str) else reward
        if not 0.0 < pr_cap <= 1.0:
            raise ValueError(f"pr_cap must be in (0, 1], got {pr_cap}")
        self.pr_cap = pr_cap
        self.seed_value = int(seed)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            fast_cpu_math()
        self.progress = bool(progress)  # bars for every step's training; pre-training shows one unless False
        self.render_mode = render_mode
        self.method_options = {k: dict(v) for k, v in (method_options or {}).items()}
        unknown = set(self.method_options) - set(self.space.methods)
        if unknown:
            raise ValueError(f"method_options for unknown methods {sorted(unknown)}; methods: {self.space.methods}")
        self._computed: set[tuple[int, ...]] = set()  # schemes this instance computed itself
        if backend == "live":
            self.store = _open_store(store)
            self.data = self.task.load_data(self.device, seed=self.seed_value, download=download)
            # shipped (seed 0 of the CPU tasks), cached, pre-trained now, or the user's checkpoint
            base = base_models.load_base(self.task, self.data, self.seed_value, self.device,
                                         checkpoint=checkpoint, progress=progress is not False)
            self.base_model = base.model.eval()
            self.base_digest = base.digest  # sha256 of the base weights (pretrain.weights_digest)
            self.base = base.metrics(self.device) or self._measure(self.base_model)
            self.base_test_acc = (base.record or {}).get("test_acc")
            device_type, precision = self.device.type, precision_policy(self.device)
        else:  # answers come from data: no weights, no data set; the pinned base model's record
            if checkpoint is not None:
                raise ValueError(f"backend {backend!r} answers for the shipped base model; checkpoint= needs "
                                 f"backend='live'")
            record = base_models.shipped_record(self.task, self.seed_value)
            if record is None:
                raise ValueError(f"backend {backend!r} needs the shipped base model and data set of the task; "
                                 f"{self.task.name} seed {self.seed_value} has none (tasks with one: digits)")
            self.store = _open_store(store) if backend == "table" and store is not False else None
            self.data, self.base_model, self.base_digest = None, None, record["sha256"]
            self.base = {"acc": float(record["val_acc"]), "params": int(record["params"]),
                         "flops": int(record["flops"])}
            self.base_test_acc = float(record["test_acc"])
            device_type, precision = record["device"], record["precision"]  # those the data was computed with
        # What a step's numbers depend on (the benchmark's identity): its seed derives from this and the
        # scheme, so the same benchmark gives the same numbers whatever the code's form or the machine.
        identity = {
            "benchmark": BENCHMARK_VERSION, "task": self.task.digest(), "grid": self.space.name,
            "seed": self.seed_value, "options": self.method_options, "base": self.base_digest,
        }
        if self.replicate:  # another seed for every step; replicate 0 is the benchmark itself
            identity["replicate"] = self.replicate
        self.seed_key = digest(identity)
        # The cache key adds the code, the device type and the precision policy: a step computed by other
        # code, or on a GPU under bf16, never replays as this one's result
        self.fingerprint = digest({**identity, "code": source_digest(), "device": device_type,
                                   "precision": precision})
        self.step_config = StepConfig(task=self.task, grid=self.space.name, seed=self.seed_value,
                                      seed_key=self.seed_key, base_params=int(self.base["params"]),
                                      device=str(self.device), method_options=self.method_options,
                                      progress=self.progress)
        self._backend = None if backend == "live" else make_backend(backend, self, **(backend_options or {}))
        if self.store is not None and backend == "live":
            self.store.describe(self.fingerprint, {"task": self.task.name, "grid": self.space.name,
                                                   "seed": self.seed_value, "options": self.method_options,
                                                   "benchmark": BENCHMARK_VERSION, "base": self.base_digest,
                                                   "base_source": base.source, "device": self.device.type,
                                                   "precision": precision_policy(self.device),
                                                   "checkpoint": str(checkpoint) if checkpoint else None})
        n = len(self.space)
        self.action_space = spaces.Discrete(n)
        self.observation_space = spaces.Dict({
            "scheme": spaces.Box(0.0, 1.0, (self.max_len, FEATURE_SIZE), np.float32),
            "metrics": spaces.Box(np.array([0, -1, -1, -1, 0], np.float32), np.ones(METRICS_SIZE, np.float32)),
        })
        self._features = self.space.feature_matrix()
        self._removal = np.array([self.space[i].removal(self.task.gamma) for i in range(n)])
        self._method_of = np.empty(n, dtype=object)
        self._static_mask = np.zeros(n, dtype=bool)
        self._first_only = np.zeros(n, dtype=bool)
        self._terminal = np.zeros(n, dtype=bool)
        self._names = [s.name for s in self.space]  # built once: every step reports its strategy's name
        available = set(available_methods())
        for method in self.space.methods:
            r = self.space.method_range(method)
            self._method_of[r.start:r.stop] = method
            if method in available:
                self._static_mask[r.start:r.stop] = True
                self._first_only[r.start:r.stop] = get_compressor(method).first_only
                self._terminal[r.start:r.stop] = get_compressor(method).terminal
        if actions is not None:  # a sub-space: only these strategies are ever valid (e.g. a data set's sub-grid)
            allowed = np.zeros(n, dtype=bool)
            allowed[self._allowed_actions(actions)] = True
            self._static_mask &= allowed
        self._set_state((), None, self.base, self.base_model)

    # ---- gymnasium API ------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"scheme"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; supported: 'scheme'")
        scheme = options.get("scheme") or ()
        self._set_state((), None, self.base, self.base_model)
        cached = True
        for action in self._check_scheme(scheme):
            cached &= self._advance(action)["cached"]
        return self._observation(), self._info(cached=cached)

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode has ended (terminated); call reset() before step()")
        action = self._check_action(action)
        before = self.potential(self._state_info(), self.task.gamma)
        if not self.action_masks()[action]:
            reason = (f"action {action} ({self.space[action].name}) is not valid after scheme "
                      f"{list(self.scheme)}: {self._why_invalid(action)}")
            if self.invalid_action == "raise":
                raise ValueError(reason)
            return self._invalid_step(before, reason)
        info = dict(self._advance(action), invalid_action=False)
        reward = float(self.potential(info, self.task.gamma) - before)
        return self._observation(), reward, self._done, False, info

    def _invalid_step(self, before: float, reason: str):
        """``invalid_action="terminate"``: end the episode, compute nothing, reward Φ(destroyed) − Φ(s)."""
        info = self._info(cached=self.history[-1]["cached"] if self.history else True)
        b = self.base
        destroyed = dict(info, acc=0.0, params=b["params"], flops=b["flops"], AR=-1.0, PR=0.0, FR=0.0)
        reward = float(self.potential(destroyed, self.task.gamma) - before)
        self._done = True
        info.update(invalid_action=True, invalid_reason=reason)
        return self._observation(), reward, True, False, info

    def action_masks(self) -> np.ndarray:
        """Boolean mask over actions: which strategies may be applied now (see module docstring)."""
        if self._mask is None:  # once per state: agents, step() and the episode-end rule all ask
            if self._done_by_rule():
                self._mask = np.zeros(len(self._static_mask), dtype=bool)
            else:
                self._mask = self._static_mask & (self._pr() + self._removal <= self.pr_cap + 1e-9)
                if self.scheme:
                    self._mask &= ~self._first_only
        return self._mask.copy()

    def render(self):
        if self.render_mode == "ansi":
            return format_table([self.base] + self.history, self.space)
        return None

    # ---- evaluation ---------------------------------------------------------------------------------

    def evaluate(self, scheme: Sequence[int], use_store: bool = True, progress: bool = False) -> list[dict]:
        """Metrics after every step of ``scheme`` (validated like actions), from the store where possible."""
        scheme = self._check_scheme(scheme)
        saved = (self.scheme, self._record, self.state, self._model, self.history, self._done, self._mask,
                 self._cached_info)
        store, self.store = self.store, (self.store if use_store else None)
        try:
            self._set_state((), None, self.base, self.base_model)
            steps = []
            for action in tqdm(scheme, desc="evaluate scheme", unit="step", disable=None if progress else True):
                steps.append(self._advance(action))
            return steps
        finally:
            self.store = store
            (self.scheme, self._record, self.state, self._model, self.history, self._done, self._mask,
             self._cached_info) = saved

    def scheme_state(self) -> SchemeState:
        return SchemeState(task=self.task.name, grid=self.space.name, seed=self.seed_value,
                           fingerprint=self.fingerprint, scheme=list(self.scheme),
                           names=[self.space[i].name for i in self.scheme], steps=[dict(h) for h in self.history],
                           base=dict(self.base))

    def test_accuracy(self) -> float:
        """Held-out test accuracy (%) of the current state: for reports only, never part of ``info``."""
        if not self.scheme:
            if self.base_test_acc is None:
                self.base_test_acc = accuracy(self.base_model, self.data.test.x, self.data.test.y)
            return float(self.base_test_acc)
        if "test_acc" in self.state:
            return float(self.state["test_acc"])
        return accuracy(self.model, self.data.test.x, self.data.test.y)  # a step stored before test_acc was

    @property
    def model(self) -> nn.Module:
        """The current compressed model (loaded from the store on demand; live backend only)."""
        if self._backend is not None:
            raise RuntimeError(f"backend {self.backend!r} answers with metrics, not models: use backend='live' "
                               f"for the compressed model")
        if self._model is None:
            self._model = self.store.load_model(self._record, map_location=self.device)
        return self._model

    # ---- internals ----------------------------------------------------------------------------------

    def _set_state(self, scheme: tuple, record, metrics: dict, model: nn.Module | None) -> None:
        self.scheme = tuple(scheme)
        self._record = record
        self.state = dict(metrics)
        self._model = model
        self._mask = self._cached_info = None
        if not scheme:
            self.history = []
        self._done = self._done_by_rule() or not self.action_masks().any()

    def _pr(self) -> float:
        return rates(self.base["params"], self.state["params"])

    def _done_by_rule(self) -> bool:
        if len(self.scheme) >= self.max_len:
            return True
        return bool(self.scheme) and bool(self._terminal[self.scheme[-1]])

    def _state_info(self) -> dict:
        """The info of the current state (built once per state; callers must not modify it)."""
        if self._cached_info is None:
            self._cached_info = self._info()
        return self._cached_info

    def _advance(self, action: int) -> dict:
        """Apply one strategy to the current state: replay from the store, or compress and store."""
        scheme = self.scheme + (action,)
        if self._backend is not None:  # table / surrogate: metrics from data, no model
            metrics = self._backend.answer(scheme, self.state)
            self.history = self.history + [None]
            self._set_state(scheme, None, metrics, None)
            info = self._info(cached=self._backend.real)
            self.history[-1] = info
            return info
        record = self.store.get(self.fingerprint, scheme) if self.store is not None else None
        model = None
        if record is not None:
            metrics, cached = record.metrics, scheme not in self._computed
        else:
            model, metrics = self._compress(action, scheme)
            cached = False
            if self.store is not None:
                record = self.store.put(self.fingerprint, scheme, metrics, model, metrics["compute_seconds"])
                self._computed.add(scheme)
        self.history = self.history + [None]
        self._set_state(scheme, record, metrics, model)
        info = self._info(cached=cached)
        self.history[-1] = info
        return info

    def _compress(self, action: int, scheme: tuple) -> tuple[nn.Module, dict]:
        return compute_step(self.step_config, self.data, self._parent_model(), scheme)

    def _parent_model(self) -> nn.Module:
        if self._model is not None:
            return self._model
        try:
            return self.model
        except CheckpointError:  # the stored file vanished: recompute the path from the base model
            scheme = self.scheme
            self._set_state((), None, self.base, self.base_model)
            for a in scheme:
                self._advance(a)
            return self._model

    def _measure(self, model: nn.Module) -> dict:
        return base_models.measure(model, self.task, self.data)

    def _info(self, cached: bool = True) -> dict:
        s, b = self.state, self.base
        parent = self.history[-2] if len(self.history) >= 2 else b
        if not self.scheme:
            parent = b
        info = {
            "acc": s["acc"], "params": s["params"], "flops": s["flops"],
            "AR": accuracy_rate(b["acc"], s["acc"]), "PR": rates(b["params"], s["params"]),
            "FR": rates(b["flops"], s["flops"]),
            "step_AR": accuracy_rate(parent["acc"], s["acc"]) if self.scheme else 0.0,
            "step_PR": rates(parent["params"], s["params"]) if self.scheme else 0.0,
            "step_FR": rates(parent["flops"], s["flops"]) if self.scheme else 0.0,
            "scheme": list(self.scheme),
            "strategy": self._names[self.scheme[-1]] if self.scheme else None,
            "cached": cached, "seconds": s.get("compute_seconds", 0.0),
            # priced from the stored counters with the current coefficients: identical to the stored
            # "cost" unless cost.py was recalibrated since, and then consistent with new steps
            "cost": (cost.price(s["cost_counters"], self.task) if "cost_counters" in s
                     else float(s.get("cost", 0.0))),
            "cost_counters": dict(s.get("cost_counters", dict.fromkeys(cost.COUNTERS, 0))),
            "backend": self.backend,
        }
        return info

    def _observation(self) -> dict:
        scheme = np.zeros((self.max_len, FEATURE_SIZE), np.float32)
        for i, a in enumerate(self.scheme):
            scheme[i] = self._features[a]
        info = self._state_info()
        metrics = np.array([info["acc"] / 100.0, info["PR"], info["FR"], min(max(info["AR"], -1.0), 1.0),
                            len(self.scheme) / self.max_len], np.float32)
        box = self.observation_space["metrics"]   # np.clip's result, without its dispatch (a step is microseconds)
        return {"scheme": scheme, "metrics": np.minimum(np.maximum(metrics, box.low), box.high)}

    def _check_action(self, action) -> int:
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise ValueError(f"action must be an integer strategy id in 0..{len(self.space) - 1}, got {action!r}")
        action = int(action)
        if not 0 <= action < len(self.space):
            raise ValueError(f"action {action} is out of range: strategy ids are 0..{len(self.space) - 1}")
        return action

    def _allowed_actions(self, actions: Sequence[int] | str) -> list[int]:
        """Strategy ids of ``actions``: ids, strategy names, or the name of a data set sub-grid."""
        if isinstance(actions, str):
            from automc_env.dataset import SUBGRIDS
            if actions not in SUBGRIDS:
                raise ValueError(f"unknown sub-grid {actions!r}; sub-grids: {', '.join(SUBGRIDS)}")
            actions = SUBGRIDS[actions]
        ids = [self.space.parse(a).id if isinstance(a, str) else self._check_action(a) for a in actions]
        if not ids:
            raise ValueError("actions= must name at least one strategy")
        return ids

    def _why_invalid(self, action: int) -> str:
        method = self._method_of[action]
        if not self._static_mask[action]:
            return f"method {method} is not available (available: {', '.join(available_methods())})"
        if self._pr() + self._removal[action] > self.pr_cap + 1e-9:
            return (f"it would remove {self._removal[action]:.2f} of the original parameters on top of "
                    f"PR {self._pr():.3f}, above the cap pr_cap={self.pr_cap}")
        if self.scheme and self._first_only[action]:
            return f"{method} may only be the first strategy of a scheme"
        return "see action_masks()"

    def _check_scheme(self, scheme: Sequence[int]) -> tuple[int, ...]:
        if isinstance(scheme, (str, bytes)) or not isinstance(scheme, Sequence | np.ndarray):
            raise ValueError(f"a scheme is a sequence of strategy ids, got {scheme!r}")
        if len(scheme) > self.max_len:
            raise ValueError(f"scheme has {len(scheme)} steps; max_len is {self.max_len}")
        # validate against the rules step by step without computing anything
        pr = 0.0
        out = []
        for i, a in enumerate(scheme):
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
                raise ValueError(f"scheme step {i + 1}: strategy ids are integers in 0..{len(self.space) - 1}, got {a!r}")
            a = int(a)
            if not 0 <= a < len(self.space):
                raise ValueError(f"scheme step {i + 1}: id {a} is out of range 0..{len(self.space) - 1}")
            if not self._static_mask[a]:
                raise ValueError(f"scheme step {i + 1}: {self._why_invalid(a)}")
            if i > 0 and self._first_only[a]:
                raise ValueError(f"scheme step {i + 1}: {self._method_of[a]} may only be the first strategy")
            if i > 0 and get_compressor(self._method_of[out[-1]]).terminal:
                raise ValueError(f"scheme step {i + 1}: nothing may follow {self._method_of[out[-1]]}")
            pr += self._removal[a]
            if pr > self.pr_cap + 1e-9:
                raise ValueError(f"scheme step {i + 1}: planned removal {pr:.2f} of the original parameters "
                                 f"exceeds pr_cap={self.pr_cap}")
            out.append(a)
        return tuple(out)


def _open_store(store) -> EvaluationStore | None:
    if store is False or store is None:  # a private store that lives as long as the process needs it
        root = tempfile.mkdtemp(prefix="automc-store-")
        private = EvaluationStore(root)
        weakref.finalize(private, shutil.rmtree, root, True)
        return private
    if store is True:
        return EvaluationStore()
    if isinstance(store, EvaluationStore):
        return store
    return EvaluationStore(store)


def format_table(rows: list[dict], space: StrategySpace) -> str:
    """A plain-text table of a scheme's steps (the first row is the base model)."""
    names = ["(base model)"] + [r["strategy"] for r in rows[1:]]
    w = max(len(n) for n in names)
    header = f"{'step':>4}  {'strategy':<{w}} {'acc %':>7} {'params':>9} {'MMACs':>8} {'AR':>7} {'PR':>6} {'FR':>6} {'s':>6}"
    lines = [header, "-" * len(header)]
    base = rows[0]
    for i, (name, r) in enumerate(zip(names, rows)):
        ar = accuracy_rate(base["acc"], r["acc"])
        pr, fr = rates(base["params"], r["params"]), rates(base["flops"], r["flops"])
        secs = "" if i == 0 else f"{r.get('seconds', 0):.1f}" + ("*" if r.get("cached") else " ")
        lines.append(f"{i:>4}  {name:<{w}} {r['acc']:>7.2f} {r['params']:>9,} {r['flops'] / 1e6:>8.2f} "
                     f"{ar:>+7.3f} {pr:>6.3f} {fr:>6.3f} {secs:>6}")
    return "\n".join(lines)
