"""What every search agent shares: the Agent protocol, budgets, the budget-keeping evaluator, results.

All agents evaluate schemes through ``AutoMCEnv`` and its store (so every agent gets prefix
reuse), via :class:`Evaluator`, which counts what the search spent:

* ``executions``: strategy steps that produced a scheme new to this search (whether the store had
  it or it was computed), so the count does not depend on how warm the shared store is;
* ``compute``: the deterministic cost of the steps, in reference seconds (``info["cost"]``, see
  :mod:`automc_env.cost`: priced from the work a step did, never from a clock). A step that
  produces a scheme new to this search is charged its cost, whether it was computed now or
  replayed from what another search stored, so a search's bill depends neither on how warm the
  shared store is nor on the machine, its load or its thread count; revisiting a scheme this
  search has already reached replays from the store and is free;
* ``seconds``: wall-clock time since the search started (machine-dependent; for information and
  the ``seconds`` limit).

A :class:`Budget` bounds any of the three; the evaluator raises :class:`BudgetExhausted` when the
next evaluation would start past a limit, and agents stop there. Every scheme the evaluator sees
(each prefix of each evaluated scheme is itself a scheme) is recorded once in the
:class:`SearchResult`, with its metrics, its cost, the compute spent so far and when it was found,
so ``evaluations[i].execution == i + 1`` and ``evaluations[i].compute`` is the running sum of the
costs: the leaderboard checks both.

**Budget honesty** (the same rules for every agent, because every agent goes through here):

* nothing is computed for an agent without being charged: :meth:`Evaluator.valid_actions` on a
  scheme the search has not evaluated evaluates it first (charged like :meth:`Evaluator.evaluate`);
  :meth:`Evaluator.prefetch` only computes ahead what ``evaluate`` will charge when the agent asks
  for it, and records nothing the agent could read;
* a step whose compressor fails (``automc_env.step.StepFailed``) is charged one execution and the
  work it did until it failed: the cost ledger's counters of that step, priced like any step's
  (deterministic: the same scheme fails after the same work on any machine). It is recorded as an
  evaluation marked ``failed`` (with the message) carrying its parent's metrics (the model the
  failed step left unchanged), never enters a Pareto set, and :meth:`Evaluator.evaluate` raises
  :class:`SchemeFailed`; the agent goes on (each agent's docstring says how it scores a failure).
  Asking again for a failed scheme, or for anything below it, raises again and costs nothing, like
  any revisit.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from automc_env import cost as step_cost
from automc_env.step import StepFailed


class BudgetExhausted(Exception):
    """Raised by the evaluator when a budget limit has been reached."""


@contextlib.contextmanager
def work_ledger() -> Iterator[step_cost.Ledger]:
    """A cost ledger around ``env.step``: it receives the work of a step computed inside it, also
    when the step fails (the step's own ledger is lost with the exception)."""
    with step_cost.ledger() as led:
        yield led


class SchemeFailed(StepFailed):
    """A step of the scheme failed; ``evaluation`` is the failed record (charged once, when it failed)."""

    def __init__(self, message: str, evaluation: Evaluation):
        super().__init__(message)
        self.evaluation = evaluation


@dataclass(frozen=True)
class Budget:
    """Limits of one search (any subset): ``compute`` is in cost units, reference seconds of
    ``info["cost"]``, so the same budget buys the same steps on any machine; ``seconds`` is wall time."""

    executions: int | None = None   # steps producing a scheme new to this search (stored or computed)
    compute: float | None = None    # cost in reference seconds (revisited prefixes are free)
    seconds: float | None = None    # wall-clock seconds

    def __post_init__(self):
        if self.executions is None and self.compute is None and self.seconds is None:
            raise ValueError("a budget needs at least one limit: executions, compute or seconds")
        for name in ("executions", "compute", "seconds"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"budget {name} must be positive, got {v}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"executions=200,compute=600"`` (any subset of executions / compute / seconds)."""
        kwargs = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in ("executions", "compute", "seconds") or not value:
                raise ValueError(f"bad budget item {part!r}: use executions=N, compute=REFERENCE_SECONDS, "
                                 f"seconds=SECONDS")
            kwargs[key] = int(value) if key == "executions" else float(value)
        return cls(**kwargs)


@dataclass
class Evaluation:
    scheme: list[int]
    names: list[str]
    acc: float
    params: int
    flops: int
    AR: float
    PR: float
    FR: float
    execution: int       # executions spent when it was found
    compute: float       # cost (reference seconds) spent when it was found, this step's included
    seconds: float       # wall seconds since the search started
    cost: float = 0.0    # this step's charge (reference seconds)
    failed: str | None = None   # the compressor's error when the step failed (metrics: its parent's)


@dataclass
class SearchResult:
    agent: str
    task: str
    seed: int
    gamma: float
    evaluations: list[Evaluation] = field(default_factory=list)
    spent: dict = field(default_factory=dict)       # executions, compute, seconds
    meta: dict = field(default_factory=dict)        # fingerprint, budget, versions, agent settings

    def pareto(self, gamma: float | None = None) -> list[Evaluation]:
        """Non-dominated schemes on (AR, PR), both maximised, among those with PR ≥ γ (failed ones excluded)."""
        g = self.gamma if gamma is None else gamma
        pool = [e for e in self.evaluations if e.PR >= g and e.failed is None]
        # e is dominated iff some point has PR > e.PR and AR >= e.AR, or the same PR and a higher AR:
        # one sweep over PR descending (O(n log n); a search on a data backend makes thousands)
        best_above, dominated = -math.inf, set()
        order = sorted(range(len(pool)), key=lambda i: -pool[i].PR)
        k = 0
        while k < len(order):
            j = k
            while j < len(order) and pool[order[j]].PR == pool[order[k]].PR:
                j += 1
            same = [order[i] for i in range(k, j)]
            top = max(pool[i].AR for i in same)
            dominated.update(i for i in same if pool[i].AR <= best_above or pool[i].AR < top)
            best_above = max(best_above, top)
            k = j
        front = [e for i, e in enumerate(pool) if i not in dominated]
        unique = {tuple(e.scheme): e for e in front}
        return sorted(unique.values(), key=lambda e: e.PR)

    def best(self, gamma: float | None = None) -> Evaluation | None:
        """The most accurate scheme with PR ≥ γ (ties: higher PR; failed ones excluded)."""
        g = self.gamma if gamma is None else gamma
        pool = [e for e in self.evaluations if e.PR >= g and e.failed is None]
        return max(pool, key=lambda e: (e.acc, e.PR)) if pool else None

    def to_json(self) -> dict:
        return asdict(self)

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    @classmethod
    def from_json(cls, d: dict) -> SearchResult:
        d = dict(d)
        d["evaluations"] = [Evaluation(**e) for e in d.get("evaluations", [])]
        return cls(**d)

    @classmethod
    def load(cls, path) -> SearchResult:
        with open(path) as f:
            return cls.from_json(json.load(f))


class Evaluator:
    """Evaluates schemes through the environment, keeps the budget and records every scheme seen."""

    #: called with every newly recorded Evaluation (the search runner hangs its progress bar and
    #: crash-safe saving here); set per process, e.g. ``Evaluator.listener = fn``.
    listener: Callable[[Evaluation, Evaluator], None] | None = None
    #: computes the new steps of a batch in parallel (:meth:`prefetch`); set per process, e.g. by
    #: ``automc search --workers N`` (an ``automc_env.executor`` executor). None: no prefetching.
    executor = None

    def __init__(self, env, budget: Budget, agent: str, seed: int, result: SearchResult | None = None):
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.budget = budget
        self.result = result or SearchResult(agent=agent, task=self.env.task.name, seed=seed,
                                             gamma=self.env.task.gamma,
                                             meta={"fingerprint": self.env.fingerprint, "budget": asdict(budget)})
        spent = self.result.spent
        self.executions = int(spent.get("executions", 0))
        self.compute = float(spent.get("compute", 0.0))
        self._offset = float(spent.get("seconds", 0.0))  # resumed searches keep counting
        self._start = time.perf_counter()
        self._seen = {tuple(e.scheme) for e in self.result.evaluations}
        self._failed = {tuple(e.scheme): e for e in self.result.evaluations if e.failed is not None}
        self._record_spent()   # a search may end before its first evaluation (plain PPO on a sub-grid)

    @property
    def seconds(self) -> float:
        return self._offset + time.perf_counter() - self._start

    def exhausted(self) -> bool:
        b = self.budget
        return ((b.executions is not None and self.executions >= b.executions)
                or (b.compute is not None and self.compute >= b.compute)
                or (b.seconds is not None and self.seconds >= b.seconds))

    def prefetch(self, schemes: Sequence[Sequence[int]]) -> None:
        """Compute the steps a batch of schemes needs, in parallel, before they are evaluated one by one.

        Agents that know a batch in advance (the AutoMC agent's pairs of a round, an evolutionary
        population) call this first; their :meth:`evaluate` calls then replay from the store, and the
        accounting is exactly that of evaluating the batch in order: prefetching charges nothing and
        records nothing, so the agent learns nothing from it until ``evaluate`` charges the step.
        Schemes beyond the remaining executions budget, or below a failed step, are not prefetched;
        a step computed but never reached within the budget is stored, not charged (the agent never
        sees it). Invalid or failing schemes are left to :meth:`evaluate` to report.
        """
        if Evaluator.executor is None or self.exhausted():
            return
        left = None if self.budget.executions is None else self.budget.executions - self.executions
        seen, batch = set(self._seen), []
        for scheme in schemes:
            scheme = tuple(int(a) for a in scheme)
            if any(scheme[:k] in self._failed for k in range(1, len(scheme) + 1)):
                continue
            new = [scheme[:k] for k in range(1, len(scheme) + 1) if scheme[:k] not in seen]
            if left is not None and len(new) > left:
                break
            try:
                self.env._check_scheme(list(scheme))
            except ValueError:
                continue
            seen.update(new)
            left = None if left is None else left - len(new)
            batch.append(list(scheme))
        if batch:
            Evaluator.executor.run(self.env, batch)

    def valid_actions(self, scheme: Sequence[int]) -> np.ndarray:
        """The action mask after ``scheme``. A scheme this search has not evaluated yet is evaluated
        first, charged like :meth:`evaluate` (it may raise :class:`BudgetExhausted` or
        :class:`SchemeFailed`): the mask depends on the measured model, so it is never free.

        Also required: the planned removal Σ ``Strategy.removal(γ)`` of the longer scheme stays ≤
        ``pr_cap``, the rule ``reset(options={"scheme": ...})`` replays by. The measured PR is usually at
        least the planned one, but not always (a method may remove less than planned, a surrogate may
        predict less): an action allowed by the measured PR alone could reach a scheme no replay accepts."""
        scheme = [int(a) for a in scheme]
        if scheme and tuple(scheme) not in self._seen:
            self.evaluate(scheme)
        if tuple(scheme) in self._failed:
            self._raise_failed(tuple(scheme))
        self._goto(scheme)
        env = self.env
        planned = 0.0
        for a in scheme:   # summed in the order _check_scheme sums
            planned += env._removal[a]
        return env.action_masks() & (planned + env._removal <= env.pr_cap + 1e-9)

    def evaluate(self, scheme: Sequence[int]) -> Evaluation:
        """Metrics of ``scheme``; every step reaching a scheme new to this search is one execution.

        Raises :class:`SchemeFailed` when a step of the scheme fails (recorded and charged the first
        time, see the module docstring) and :class:`BudgetExhausted` before a new step past a limit.
        """
        scheme = [int(a) for a in scheme]
        if not scheme:
            raise ValueError("an empty scheme is the base model; nothing to evaluate")
        self._goto([])
        for action in scheme:
            key = tuple(self.env.scheme) + (action,)
            if key in self._failed:
                self._raise_failed(key)
            if self.env._done:   # the prefix ended the episode (no valid action, a terminal method, L steps)
                raise ValueError(f"action {action} is not valid after {list(key[:-1])}: the episode has ended there")
            if key in self._seen:  # a revisit replays from the store: free
                self.env.step(action)
                continue
            if self.exhausted():
                raise BudgetExhausted(self._spent_text())
            # the ledger sees the work of a step computed now; a failed step is charged exactly that
            with work_ledger() as work:
                try:
                    info = self.env.step(action)[4]
                except StepFailed as e:
                    charge = step_cost.price(work.counts, self.env.task)
                    self._charge(charge)
                    self._record_failure(key, str(e), charge)
                    self._raise_failed(key)
            if info.get("invalid_action"):   # a masked action: nothing was computed, nothing is charged
                raise ValueError(info.get("invalid_reason") or f"action {action} is not valid after {list(key[:-1])}")
            # charged the step's cost, also when another search stored it; reuse is free
            self._charge(info["cost"])
            self._record(info, info["cost"])
        return self._by_scheme(scheme)

    def _charge(self, amount: float) -> None:
        self.compute += amount
        self.executions += 1

    def _goto(self, scheme: Sequence[int]):
        obs, info = self.env.reset(options={"scheme": list(scheme)})
        return info

    def _record(self, info: dict, charge: float) -> None:
        key = tuple(info["scheme"])
        self._append(Evaluation(
            scheme=list(key), names=[self.env.space[i].name for i in key], acc=info["acc"], params=info["params"],
            flops=info["flops"], AR=info["AR"], PR=info["PR"], FR=info["FR"], execution=self.executions,
            compute=self.compute, seconds=self.seconds, cost=charge))

    def _record_failure(self, key: tuple[int, ...], message: str, charge: float) -> None:
        """A failed step keeps its parent's metrics: the model it would have changed is unchanged."""
        if len(key) > 1:
            p = self._by_scheme(list(key[:-1]))
            metrics = dict(acc=p.acc, params=p.params, flops=p.flops, AR=p.AR, PR=p.PR, FR=p.FR)
        else:
            b = self.env.base
            metrics = dict(acc=b["acc"], params=b["params"], flops=b["flops"], AR=0.0, PR=0.0, FR=0.0)
        evaluation = Evaluation(scheme=list(key), names=[self.env.space[i].name for i in key], **metrics,
                                execution=self.executions, compute=self.compute, seconds=self.seconds,
                                cost=charge, failed=message)
        self._failed[key] = evaluation
        self._append(evaluation)

    def _append(self, evaluation: Evaluation) -> None:
        self._seen.add(tuple(evaluation.scheme))
        self.result.evaluations.append(evaluation)
        self._record_spent()
        if Evaluator.listener is not None:
            Evaluator.listener(evaluation, self)

    def _record_spent(self) -> None:
        self.result.spent = {"executions": self.executions, "compute": self.compute, "seconds": self.seconds}

    def _raise_failed(self, key: tuple[int, ...]):
        evaluation = self._failed[key]
        raise SchemeFailed(evaluation.failed, evaluation)

    def _by_scheme(self, scheme: list[int]) -> Evaluation:
        for e in reversed(self.result.evaluations):
            if e.scheme == scheme:
                return e
        raise KeyError(scheme)  # pragma: no cover - _record always adds it

    def _spent_text(self) -> str:
        return (f"budget {asdict(self.budget)} reached: {self.executions} executions, "
                f"{self.compute:.1f} cost (reference s), {self.seconds:.1f} s wall")


class Agent(Protocol):
    name: str

    def search(self, env, budget: Budget, seed: int) -> SearchResult: ...
