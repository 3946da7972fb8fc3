"""Random search (the paper's "Random", i.e. the official code's Random2) and an Optuna TPE variant.

``RandomSearch`` (``name = "random"``) samples whole schemes position by position: at each
position it picks uniformly among the strategies valid there plus END (END not at position 1),
and stops at END, at ``env.max_len`` or when nothing is valid any more. ``TPESearch``
(``name = "tpe"``) is the same define-by-run space driven by Optuna's multi-objective TPE on
(accuracy, PR), both maximised, with the constraint PR ≥ γ.

Shared validity rule (used by the evolutionary agents too, see :func:`valid_ids`): a step is valid
when the environment's action mask allows it after the (already evaluated) prefix AND the scheme's
planned removal Σ ``Strategy.removal(γ)`` stays ≤ ``env.pr_cap``. The mask alone uses the measured
PR, which can be below the planned one; the environment's ``reset(options={"scheme": ...})`` checks
the planned sum, so both are required for every evaluated prefix to be replayable.

Deviations from the paper's baseline (search.md §5):

* Invalid schemes are never produced (sampling is restricted to valid steps), instead of being
  sampled over all N strategies and scored (0, 0) without running. The paper's extra rules
  (Σm ≥ 1, Σ fine-tune < 4, truncation after HOS/LFB) are not applied: here HOS and LFB chain,
  and the environment's mask (pr_cap) is the single validity rule shared by all agents.
* Scheme length is bounded by ``env.max_len`` (L = 5 by default, the paper's text) rather than the
  code's 10.
* A scheme is evaluated step by step (each prefix through ``Evaluator.evaluate``): the valid set at
  position k+1 depends on the measured model after position k, and prefixes are free to replay.
* Optuna has static distributions per parameter name, but the valid set depends on the prefix. Each
  position k is therefore one ``suggest_float(f"step{k}", 0, 1)`` quantile ``u``, mapped to the
  choice ``⌊u·n⌋`` of the n choices (the valid ids in ascending order, then END). With the random
  sampler this is exactly uniform over the valid choices; for TPE nearby quantiles mean nearby
  strategy ids (same method, similar hyperparameters), which gives its density model something to
  work with.
* Stall guard: ``patience`` consecutive proposals that add no new scheme end the search (otherwise an
  executions-only budget could never be reached once every proposal is a repeat).
* A step whose compressor fails ends the scheme there, like END, and the trial is scored as the
  failed record, which carries its parent's metrics (the base model's when the first step failed,
  which misses γ); the evaluator has charged and recorded the failure, and the search goes on.
* ``result.meta``: ``trials`` (told to the study) and ``tpe_trials`` (those proposed by TPE itself,
  after the start-up trials; 0 for ``random``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from agents.base import Budget, BudgetExhausted, Evaluation, Evaluator, SchemeFailed, SearchResult

__all__ = ["RandomSearch", "TPESearch", "valid_ids", "removals", "check_options"]


def check_options(agent: str, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge ``options`` into ``defaults``; unknown names are an error listing the known ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{agent}: unknown option(s) {unknown}; options are {sorted(defaults)}")
    return {**defaults, **options}


def positive_int(agent: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{agent}: option {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def removals(env) -> np.ndarray:
    """Planned fraction of the original parameters each strategy removes (``Strategy.removal(γ)``)."""
    env = env.unwrapped if hasattr(env, "unwrapped") else env
    return np.array([env.space[i].removal(env.task.gamma) for i in range(len(env.space))])


def valid_ids(evaluator: Evaluator, prefix: list[int], removal: np.ndarray) -> np.ndarray:
    """Ascending strategy ids valid after ``prefix`` (which must already be evaluated, so it is free).

    Valid = the env's mask after the prefix (measured PR) and planned Σ removal ≤ pr_cap; empty when
    the scheme is at ``max_len``.
    """
    env = evaluator.env
    if len(prefix) >= env.max_len:
        return np.zeros(0, dtype=np.int64)
    mask = evaluator.valid_actions(prefix)
    planned = float(removal[prefix].sum()) if prefix else 0.0
    mask = mask & (planned + removal <= env.pr_cap + 1e-9)
    return np.flatnonzero(mask)


class RandomSearch:
    """Random2 over valid schemes; ``sampler="tpe"`` turns it into multi-objective TPE.

    Options:
        sampler: ``"random"`` (default, Optuna ``RandomSampler``) or ``"tpe"`` (``TPESampler`` on
            (acc, PR) maximised with constraint γ − PR ≤ 0).
        n_startup_trials: TPE's random start-up trials (default 10; ignored by ``"random"``).
        patience: stop after this many consecutive proposals that add no new scheme (default 1000).
    """

    name = "random"
    DEFAULTS: dict[str, Any] = {"sampler": "random", "n_startup_trials": 10, "patience": 1000}

    def __init__(self, **options: Any) -> None:
        opts = check_options(self.name, options, self.DEFAULTS)
        if opts["sampler"] not in ("random", "tpe"):
            raise ValueError(f"{self.name}: sampler must be 'random' or 'tpe', got {opts['sampler']!r}")
        self.sampler: str = opts["sampler"]
        self.n_startup_trials = positive_int(self.name, "n_startup_trials", opts["n_startup_trials"], 0)
        self.patience = positive_int(self.name, "patience", opts["patience"])

    def options(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "n_startup_trials": self.n_startup_trials, "patience": self.patience}

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # the constraint γ − PR ≤ 0 reaches TPE through Trial.set_constraint (Optuna ≥ 5; constraints_func is
        # deprecated there): infeasible trials are ranked after feasible ones by their violation
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def search(self, env, budget: Budget, seed: int, result: SearchResult | None = None) -> SearchResult:
        evaluator = Evaluator(env, budget, agent=self.name, seed=seed, result=result)
        evaluator.result.meta["agent_options"] = self.options()
        removal = removals(evaluator.env)
        gamma = float(evaluator.env.task.gamma)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=self._make_sampler(seed))
        stalled = trials = 0
        try:
            while stalled < self.patience:
                # With parallel workers, random search asks a batch of trials and computes their likely
                # schemes at once (its proposals do not depend on results); TPE stays one at a time.
                batch = 2 * Evaluator.executor.workers if Evaluator.executor and self.sampler == "random" else 1
                asked = [study.ask() for _ in range(batch)]
                if batch > 1:
                    evaluator.prefetch([self._speculate(t, evaluator.env, removal) for t in asked])
                for trial in asked:
                    before = len(evaluator.result.evaluations)
                    last = self._sample(trial, evaluator, removal)
                    trial.set_user_attr("scheme", last.scheme)
                    trial.set_constraint("pr_target", gamma - last.PR)
                    study.tell(trial, [last.acc, last.PR])
                    trials += 1
                    stalled = stalled + 1 if len(evaluator.result.evaluations) == before else 0
        except BudgetExhausted:
            pass
        meta = evaluator.result.meta
        meta["agent_options"] = self.options()
        meta["trials"] = trials  # a resumed search re-runs from the start (replays are free): all its trials
        meta["tpe_trials"] = max(0, meta["trials"] - self.n_startup_trials) if self.sampler == "tpe" else 0
        return evaluator.result

    @staticmethod
    def _speculate(trial: optuna.Trial, env, removal: np.ndarray) -> list[int]:
        """The scheme :meth:`_sample` will most likely grow for ``trial``, judged by the planned removal
        alone (no evaluation): the trial's suggestions are kept, so :meth:`_sample` reuses them."""
        scheme: list[int] = []
        for k in range(env.max_len):
            valid = env._static_mask & (float(removal[scheme].sum()) + removal <= env.pr_cap + 1e-9)
            ids = np.flatnonzero(valid & ~env._first_only if scheme else valid)
            if len(ids) == 0:
                break
            n = len(ids) + (1 if k > 0 else 0)
            choice = min(int(math.floor(trial.suggest_float(f"step{k}", 0.0, 1.0) * n)), n - 1)
            if choice == len(ids):
                break
            scheme.append(int(ids[choice]))
        return scheme

    @staticmethod
    def _sample(trial: optuna.Trial, evaluator: Evaluator, removal: np.ndarray) -> Evaluation:
        """Grow one scheme position by position, evaluating each step (see the module docstring)."""
        scheme: list[int] = []
        last: Evaluation | None = None
        for k in range(evaluator.env.max_len):
            ids = valid_ids(evaluator, scheme, removal)
            if len(ids) == 0:
                break
            n = len(ids) + (1 if k > 0 else 0)  # END is the last choice, not at position 1
            u = trial.suggest_float(f"step{k}", 0.0, 1.0)
            choice = min(int(math.floor(u * n)), n - 1)
            if choice == len(ids):
                break  # END
            scheme.append(int(ids[choice]))
            try:
                last = evaluator.evaluate(scheme)
            except SchemeFailed as failure:  # the scheme ends here, scored as the failed record
                return failure.evaluation
        if last is None:
            raise RuntimeError("no strategy is valid on the base model (check env.pr_cap and the grid)")
        return last


class TPESearch(RandomSearch):
    """``RandomSearch(sampler="tpe")`` under its own CLI name."""

    name = "tpe"
    DEFAULTS: dict[str, Any] = {**RandomSearch.DEFAULTS, "sampler": "tpe"}

