"""``gymnasium.make_vec("AutoMC-v0", num_envs=N, backend="table" | "surrogate")``: N episodes as arrays.

On the data backends a step is a table lookup or a forest prediction, microseconds of work, so N
Python environments stepped one by one (``SyncVectorEnv``) spend their time in per-step Python
overhead. :class:`AutoMCVectorEnv` keeps the N states as arrays (schemes, metrics, method history)
and steps them together: masks, rewards and observations are numpy expressions over the batch, the
surrogate answers every stepping row in one call (``SurrogateModel.answer_rows``, bit for bit the
single environment's step), the table looks rows up in its dict. Every number is the one
``AutoMCEnv`` with the same arguments gives for the same actions (tests check this), with
gymnasium's default next-step autoreset: after an episode ends, the next ``step`` resets that
sub-environment (its action is ignored, reward 0) and returns the first observation.

The live backend computes real compressions: ``make_vec`` builds a ``SyncVectorEnv`` of
``AutoMCEnv`` for it (ask ``vectorization_mode="async"`` for subprocesses), as before.

Infos are arrays over the sub-environments (each key with gymnasium's ``_key`` presence mask):
``acc``, ``params``, ``flops``, ``AR``, ``PR``, ``FR``, ``step_AR``, ``step_PR``, ``step_FR``,
``cost``, ``cached``, ``invalid_action``, ``depth``; ``backend`` is an attribute. The schemes
themselves are in :meth:`AutoMCVectorEnv.schemes` (lists of ids), not copied into every info.
"""

from __future__ import annotations


import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from automc_env.backends.surrogate import decode
from automc_env.env import REWARDS, AutoMCEnv, default_potential, paper_rl_potential

INFO_KEYS = ("acc", "params", "flops", "AR", "PR", "FR", "step_AR", "step_PR", "step_FR", "cost", "cached",
             "invalid_action", "depth")


def make_vector(num_envs: int = 1, backend: str = "live", **kwargs) -> gym.vector.VectorEnv:
    """``vector_entry_point`` of ``AutoMC-v0``: native arrays on the data backends, sync envs on live."""
    if backend == "live":
        return gym.vector.SyncVectorEnv([lambda: AutoMCEnv(backend="live", **kwargs) for _ in range(num_envs)])
    return AutoMCVectorEnv(num_envs=num_envs, backend=backend, **kwargs)


class AutoMCVectorEnv(gym.vector.VectorEnv):
    """See the module docstring; keyword arguments are ``AutoMCEnv``'s (backend "table" or "surrogate")."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, backend: str = "surrogate", **kwargs):
        if backend == "live":
            raise ValueError("AutoMCVectorEnv steps the data backends ('table', 'surrogate'); the live backend "
                             "computes real compressions: gymnasium.make_vec(..., vectorization_mode='sync' or "
                             "'async')")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        kwargs.pop("max_episode_steps", None)  # make_vec passes the spec's (None): episodes end by the env's rules
        self.env = env = AutoMCEnv(backend=backend, **kwargs)   # the rules, spaces and backend of every sub-env
        self.num_envs, self.backend = num_envs, backend
        self.single_observation_space, self.single_action_space = env.observation_space, env.action_space
        self.observation_space = batch_space(env.observation_space, num_envs)
        self.action_space = batch_space(env.action_space, num_envs)
        self.render_mode = None
        n, L = len(env.space), env.max_len
        self._n, self._L, self._gamma = n, L, env.task.gamma
        self._limit = env.pr_cap + 1e-9
        self._static, self._first_only, self._terminal = env._static_mask, env._first_only, env._terminal
        self._removal = env._removal
        self._features = np.vstack([env._features, np.zeros((1, env._features.shape[1]))]).astype(np.float32)
        # the valid actions as sorted removals, for the uniform sampler and the "any valid action" rule
        self._valid_first = self._sorted_by_removal(self._static)
        self._valid_later = self._sorted_by_removal(self._static & ~self._first_only)
        if env.potential is REWARDS["default"] or env.potential is default_potential:
            self._potential = self._default_potential
        elif env.potential is paper_rl_potential:
            self._potential = self._paper_rl_potential
        else:
            self._potential = self._callable_potential
        b = env.base
        self._base = {"acc": float(b["acc"]), "test_acc": float(env.base_test_acc), "params": float(b["params"]),
                      "flops": float(b["flops"])}
        self._backend = env._backend
        if backend == "surrogate":
            self._featurizer = self._backend.featurizer
            self._methods = len(self._featurizer.methods)
            self._method_index = self._featurizer.method_index
        self._rng = np.random.default_rng()
        N = num_envs
        self._ids = np.full((N, L), n, dtype=np.intp)     # strategy ids, n = no step (the zero feature row)
        self._canon: list[tuple] = [()] * N               # the table's keys
        self._len = np.zeros(N, dtype=np.intp)
        self._acc, self._test, self._params, self._flops = (np.zeros(N) for _ in range(4))
        self._noise_free = np.zeros((N, 2))   # surrogate noise=True: the (acc, test_acc) the next step starts from
        self._prev = {k: np.zeros(N) for k in ("acc", "params", "flops")}   # the parent state's metrics
        self._cost = np.zeros(N)
        self._ran = np.zeros((N, len(env.space.methods)))
        self._last = np.full(N, -1, dtype=np.intp)
        self._done = np.zeros(N, dtype=bool)
        self._cached = np.ones(N, dtype=bool)

    # ---- gymnasium VectorEnv API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every sub-environment to the base model, or to ``options["scheme"]`` (one scheme for all)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.env.reset(seed=seed)
        options = dict(options or {})
        scheme = options.pop("scheme", None) or ()
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; supported: 'scheme'")
        scheme = self.env._check_scheme(scheme)
        every = np.ones(self.num_envs, dtype=bool)
        self._reset_rows(every)
        for a in scheme:
            self._advance(every, np.full(self.num_envs, a, dtype=np.intp))
        self._done = self._done_by_rule() | ~self._any_valid()
        info = self._infos(np.zeros(self.num_envs, dtype=bool))
        return self._observations(), info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be {self.num_envs} integer strategy ids, got shape {actions.shape} "
                             f"dtype {actions.dtype}")
        if actions.min(initial=0) < 0 or actions.max(initial=0) >= self._n:
            raise ValueError(f"actions out of range: strategy ids are 0..{self._n - 1}")
        actions = actions.astype(np.intp)
        N = self.num_envs
        rewards = np.zeros(N)
        terminated = np.zeros(N, dtype=bool)
        invalid = np.zeros(N, dtype=bool)
        resetting = self._done.copy()
        active = ~resetting
        if resetting.any():
            self._reset_rows(resetting)
        rows = np.flatnonzero(active)
        if len(rows):
            before = self._potential(rows)
            ok = self._valid(rows, actions[rows])
            bad = rows[~ok]
            if len(bad):
                if self.env.invalid_action == "raise":
                    i = bad[0]
                    raise ValueError(f"action {actions[i]} ({self.env.space[actions[i]].name}) is not valid in "
                                     f"sub-environment {i} after scheme {self.schemes()[i]}")
                invalid[bad] = True
                rewards[bad] = self._destroyed_potential(bad) - before[~ok]
                terminated[bad] = True
            good = rows[ok]
            if len(good):
                step = np.zeros(N, dtype=bool)
                step[good] = True
                self._advance(step, actions)
                rewards[good] = self._potential(good) - before[ok]
                terminated[good] = self._done_by_rule(good) | ~self._any_valid(good)
        self._done = terminated.copy()
        info = self._infos(invalid)
        return self._observations(), rewards, terminated, np.zeros(N, dtype=bool), info

    def action_masks(self) -> np.ndarray:
        """(num_envs, actions) boolean masks, each the single environment's ``action_masks()``."""
        pr = self._pr()
        mask = self._static[None, :] & (pr[:, None] + self._removal[None, :] <= self._limit)
        mask[self._len > 0] &= ~self._first_only
        mask[self._done_by_rule()] = False
        return mask

    def sample_valid_actions(self) -> np.ndarray:
        """One action per sub-environment, uniform over its valid ones (without building the masks);
        a sub-environment without a valid action (its episode has ended) gets action 0."""
        pr = self._pr()
        out = np.zeros(self.num_envs, dtype=np.intp)
        for later, (ids, removal) in ((False, self._valid_first), (True, self._valid_later)):
            rows = np.flatnonzero((self._len > 0) == later)
            if not len(rows):
                continue
            count = self._count_valid(removal, pr[rows])
            has = count > 0
            pick = (self._rng.random(len(rows)) * np.maximum(count, 1)).astype(np.intp)
            out[rows[has]] = ids[np.minimum(pick[has], count[has] - 1)]
        return out

    def schemes(self) -> list[list[int]]:
        return [list(row[:k]) for row, k in zip(self._ids.tolist(), self._len.tolist())]

    def test_accuracy(self) -> np.ndarray:
        """Held-out test accuracy (%) of every sub-environment's state (for reports only)."""
        return self._test.copy()

    def close_extras(self, **kwargs):
        self.env.close()

    # ---- internals ------------------------------------------------------------------------------------

    def _sorted_by_removal(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.flatnonzero(allowed)
        order = np.argsort(self._removal[ids], kind="stable")
        return ids[order], self._removal[ids[order]]

    def _count_valid(self, removal: np.ndarray, pr: np.ndarray) -> np.ndarray:
        """How many of the sorted ``removal`` satisfy ``pr + removal <= cap + 1e-9`` (the mask's own test)."""
        count = np.searchsorted(removal, self._limit - pr, side="right")
        # the subtraction may round differently from the mask's addition: settle the boundary exactly
        k = len(removal)
        for _ in range(2):
            over = (count > 0) & (pr + removal[np.maximum(count - 1, 0)] > self._limit)
            count = count - over
            under = (count < k) & (pr + removal[np.minimum(count, k - 1)] <= self._limit)
            count = count + under
        return count

    def _any_valid(self, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.num_envs) if rows is None else rows
        pr, later = self._pr()[rows], self._len[rows] > 0
        first_min = self._valid_first[1][0] if len(self._valid_first[1]) else np.inf
        later_min = self._valid_later[1][0] if len(self._valid_later[1]) else np.inf
        return pr + np.where(later, later_min, first_min) <= self._limit

    def _valid(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        ok = self._static[actions] & (self._pr()[rows] + self._removal[actions] <= self._limit)
        ok &= ~((self._len[rows] > 0) & self._first_only[actions])
        return ok & ~self._done_by_rule(rows)

    def _done_by_rule(self, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.num_envs) if rows is None else rows
        k = self._len[rows]
        last = self._ids[rows, np.maximum(k - 1, 0)]
        return (k >= self._L) | ((k > 0) & self._terminal[np.minimum(last, self._n - 1)])

    def _pr(self) -> np.ndarray:
        return 1.0 - self._params / self._base["params"]

    def _reset_rows(self, rows: np.ndarray) -> None:
        b = self._base
        self._ids[rows] = self._n
        self._len[rows] = 0
        self._acc[rows], self._test[rows], self._params[rows], self._flops[rows] = (
            b["acc"], b["test_acc"], b["params"], b["flops"])
        self._noise_free[rows] = (b["acc"], b["test_acc"])
        for k in ("acc", "params", "flops"):
            self._prev[k][rows] = b[k]
        self._cost[rows] = 0.0
        self._ran[rows] = 0.0
        self._last[rows] = -1
        self._done[rows] = False
        self._cached[rows] = True
        for i in np.flatnonzero(rows):
            self._canon[i] = ()

    def _advance(self, step: np.ndarray, actions: np.ndarray) -> None:
        """Apply ``actions`` to the sub-environments flagged in ``step`` (all valid)."""
        rows = np.flatnonzero(step)
        a = actions[rows]
        if self.backend == "surrogate":
            out = self._predict(rows, a)
        else:
            out = self._look_up(rows, a)
        for k in ("acc", "params", "flops"):
            self._prev[k][rows] = getattr(self, "_" + k)[rows]
        self._acc[rows], self._test[rows], self._params[rows], self._flops[rows], self._cost[rows] = out
        self._ids[rows, self._len[rows]] = a
        self._len[rows] += 1
        if self.backend == "surrogate":
            np.add.at(self._ran, (rows, self._method_index[a]), 1.0)
            self._last[rows] = self._method_index[a]
        self._cached[rows] = self._backend.real

    def _predict(self, rows: np.ndarray, a: np.ndarray) -> tuple:
        """The surrogate's answers for the stepping rows: ``SurrogateBackend.answer``, batched."""
        f, m, b = self._featurizer, self._methods, self._base
        depth = self._len[rows]
        state = np.zeros((len(rows), 5 + 2 * m))
        state[:, 0] = depth
        state[:, 1] = self._params[rows] / b["params"]
        state[:, 2] = self._flops[rows] / b["flops"]
        acc, test = (self._noise_free[rows].T if self._backend.noise else (self._acc[rows], self._test[rows]))
        state[:, 3] = acc / 100.0
        state[:, 4] = test / 100.0
        state[:, 5:5 + m] = self._ran[rows]
        has = self._last[rows] >= 0
        state[np.flatnonzero(has), 5 + m + self._last[rows][has]] = 1.0
        X = f.matrix(state, a)
        parents = np.stack([acc, test, self._params[rows], self._flops[rows]], axis=1)
        if not self._backend.noise:
            out = self._backend.model.answer_rows(X, parents)
        else:   # as SurrogateBackend.answer: noisy answers, the noise-free state carried on (one walk, two decodes)
            model, schemes = self._backend.model, self.schemes()
            noise = np.array([self._backend.noise_draw(tuple(schemes[i]) + (int(a[j]),)) for j, i in enumerate(rows)])
            y = model.forest.predict_many(X)
            parent = dict(zip(("acc", "test_acc", "params", "flops"), parents.T))
            clean = decode(y, parent, model.acc_mode, None, model.bounds, model.meta.get("noise_sd"))
            self._noise_free[rows] = np.stack([clean["acc"], clean["test_acc"]], axis=1)
            d = decode(y, parent, model.acc_mode, noise, model.bounds, model.meta.get("noise_sd"))
            return d["acc"], d["test_acc"], d["params"], d["flops"], d["cost"]
        return out[:, 0], out[:, 1], out[:, 2], out[:, 3], out[:, 4]

    def _look_up(self, rows: np.ndarray, a: np.ndarray) -> tuple:
        """The table's real results for the stepping rows (``TableBackend.answer``)."""
        table = self._backend
        out = np.zeros((5, len(rows)))
        for j, (i, action) in enumerate(zip(rows.tolist(), a.tolist())):
            key = self._canon[i] + (table._canon[action],)
            row = table.rows.get(key)
            if row is None:
                table.answer(tuple(self.schemes()[i]) + (action,), {})   # raises TableMiss with the message
            self._canon[i] = key
            out[:, j] = (row["acc"], row["test_acc"], row["params"], row["flops"], table.price(row))
        return tuple(out)

    # rewards: the environment's potentials over arrays (the same float operations in the same order)

    def _default_potential(self, rows: np.ndarray, acc=None, pr=None) -> np.ndarray:
        acc = self._acc[rows] if acc is None else acc
        pr = self._pr()[rows] if pr is None else pr
        ar = (acc - self._base["acc"]) / self._base["acc"]
        g = self._gamma
        return ar + np.minimum(pr, g) / g + 0.5 * np.maximum(pr - g, 0.0)

    def _paper_rl_potential(self, rows: np.ndarray, acc=None, pr=None) -> np.ndarray:
        acc = self._acc[rows] if acc is None else acc
        pr = self._pr()[rows] if pr is None else pr
        return np.where(pr >= self._gamma, 0.1, 0.08) * acc + pr

    def _callable_potential(self, rows: np.ndarray, acc=None, pr=None) -> np.ndarray:
        info = self._info_arrays(rows)
        if acc is not None:
            info.update(acc=acc, PR=pr, AR=(acc - self._base["acc"]) / self._base["acc"], FR=np.zeros(len(rows)),
                        params=np.full(len(rows), self._base["params"]), flops=np.full(len(rows), self._base["flops"]))
        return np.array([self.env.potential({k: v[j].item() for k, v in info.items()}, self._gamma)
                         for j in range(len(rows))], dtype=np.float64)

    def _destroyed_potential(self, rows: np.ndarray) -> np.ndarray:
        """Φ of a wrecked model (0 % accuracy, nothing removed): the invalid action's score."""
        return self._potential(rows, acc=np.zeros(len(rows)), pr=np.zeros(len(rows)))

    def _info_arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        b, k = self._base, self._len[rows]
        stepped = k > 0

        def rate(before, after):
            return np.where(stepped, 1.0 - after / before, 0.0)

        acc, params, flops = self._acc[rows], self._params[rows], self._flops[rows]
        prev_acc = self._prev["acc"][rows]
        return {"acc": acc, "params": params.astype(np.int64), "flops": flops.astype(np.int64),
                "AR": (acc - b["acc"]) / b["acc"], "PR": 1.0 - params / b["params"], "FR": 1.0 - flops / b["flops"],
                "step_AR": np.where(stepped & (prev_acc != 0), (acc - prev_acc) / np.where(prev_acc != 0, prev_acc, 1.0), 0.0),
                "step_PR": rate(self._prev["params"][rows], params), "step_FR": rate(self._prev["flops"][rows], flops),
                "cost": np.where(stepped, self._cost[rows], 0.0), "cached": self._cached[rows].copy(),
                "depth": k.copy()}

    def _infos(self, invalid: np.ndarray) -> dict:
        rows = np.arange(self.num_envs)
        info = self._info_arrays(rows)
        info["invalid_action"] = invalid
        info["backend"] = np.full(self.num_envs, self.backend)
        every = np.ones(self.num_envs, dtype=bool)
        for key in list(info):
            info["_" + key] = every
        return info

    def _observations(self) -> dict:
        scheme = self._features[self._ids]
        acc, pr = self._acc / 100.0, self._pr()
        fr = 1.0 - self._flops / self._base["flops"]
        ar = np.clip((self._acc - self._base["acc"]) / self._base["acc"], -1, 1)
        metrics = np.stack([acc, pr, fr, ar, self._len / self._L], axis=1).astype(np.float32)
        space = self.single_observation_space["metrics"]
        return {"scheme": scheme, "metrics": np.clip(metrics, space.low, space.high)}
