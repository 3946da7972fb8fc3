"""Evolutionary baselines on integer scheme genomes: NSGA-II and RVEA (pymoo, ask/tell).

Encoding (search.md §5): ``L = env.max_len`` integer genes; gene 1 ∈ [0, N−1], genes 2..L ∈ [0, N]
with N meaning END. A gene indexes the environment's *alphabet* (:func:`alphabet`: the strategies
its static mask allows, in id order): on the full grid that is every strategy and a gene is its id;
on a sub-space (``actions=``, e.g. the 12 strategies of the exhaustive sub-grid) N is the sub-space's
size, so the genes range over strategies that can be valid instead of 4,525 mostly invalid ids. A genome decodes to the strategies before its first
END. Objectives: maximise accuracy (%) and PR, i.e. pymoo minimises (−acc, −PR); one inequality
constraint γ − PR ≤ 0 (pymoo's G ≤ 0 is feasible), so schemes that miss the target γ are ranked by
their violation. Integer handling: ``IntegerRandomSampling``, ``SBX`` and ``PM`` on floats with
``RoundingRepair``.

Deviations from the paper's baseline:

* The paper ran geatpy 2.7's RVEA template (its own operators for integer encoding, population 50,
  up to 10,000 generations). Here RVEA is pymoo's (APD survival, random mating selection,
  SBX/PM with rounding), population = number of Das-Dennis reference directions for two objectives
  (``population`` directions, i.e. ``n_partitions = population − 1``); ``max_generations`` (default
  10,000 as in the paper) sets RVEA's penalty schedule and reference-vector adaptation period.
  NSGA-II is an extra baseline not in the paper.
* Invalid genomes are repaired rather than scored (0, 0): decoding stops at the first step that is
  not valid (the shared rule of :func:`agents.random_search.valid_ids`: the env's mask after the
  evaluated prefix, and planned Σ removal ≤ pr_cap), i.e. the scheme is truncated there; an invalid
  first gene is resampled uniformly among the valid first strategies (seeded). The repaired genome
  is written back into the offspring (Lamarckian repair: truncated tails become END), so the
  population holds exactly the schemes that were evaluated.
* No HOS/LFB truncation and no Σm ≥ 1 / fine-tune rules: in this toolkit HOS and LFB chain, and the
  env's mask is the one validity rule shared by all agents. Length L = ``env.max_len`` (5), not 10.
* Schemes are evaluated step by step through ``Evaluator.evaluate`` (each prefix is a scheme of the
  result; prefixes already seen cost nothing), not re-run whole from the base model.
* Stall guard: ``patience`` consecutive generations that add no new scheme end the search.
* A step whose compressor fails ends the genome after the failed gene (an offspring that inherits
  it fails again at no cost) and the genome is scored as the failed record, which carries its
  parent's metrics (the base model's, missing γ, when the first step failed); the evaluator has
  charged and recorded the failure, and the generation goes on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.rvea import RVEA
from pymoo.core.algorithm import Algorithm
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.problem import Problem
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem
from pymoo.util.ref_dirs import get_reference_directions

from agents.base import Budget, BudgetExhausted, Evaluation, Evaluator, SchemeFailed, SearchResult
from agents.random_search import check_options, positive_int, removals, valid_ids

__all__ = ["NSGA2Search", "RVEASearch", "SchemeProblem", "alphabet", "decode"]


class SchemeProblem(Problem):
    """The genome bounds only; objectives are computed outside pymoo (ask/tell)."""

    def __init__(self, n_strategies: int, max_len: int) -> None:
        xu = np.full(max_len, n_strategies, dtype=int)
        xu[0] = n_strategies - 1  # the first gene cannot be END
        super().__init__(n_var=max_len, n_obj=2, n_ieq_constr=1, xl=np.zeros(max_len, dtype=int), xu=xu,
                         vtype=int)


def alphabet(env) -> np.ndarray:
    """The strategy ids a gene can name (sorted): those the environment's static mask allows."""
    return np.flatnonzero(env._static_mask)


def decode(genome: np.ndarray, evaluator: Evaluator, removal: np.ndarray,
           rng: np.random.Generator, letters: np.ndarray | None = None) -> tuple[np.ndarray, Evaluation]:
    """Evaluate the scheme a genome encodes, repairing it; returns (repaired genome, last evaluation)."""
    letters = alphabet(evaluator.env) if letters is None else letters
    end = len(letters)
    x = np.asarray(genome, dtype=np.int64).copy()
    scheme: list[int] = []
    last: Evaluation | None = None
    for k, gene in enumerate(x):
        gene = int(gene)
        if k > 0 and gene >= end:
            break  # END
        ids = valid_ids(evaluator, scheme, removal)
        if len(ids) == 0:
            break
        strategy = int(letters[min(gene, end - 1)])
        pos = int(np.searchsorted(ids, strategy))
        if pos >= len(ids) or ids[pos] != strategy:
            if k > 0:
                break  # truncate at the first invalid step
            strategy = int(rng.choice(ids))  # an invalid first gene is resampled
        scheme.append(strategy)
        try:
            last = evaluator.evaluate(scheme)
        except SchemeFailed as failure:  # truncated after the failed gene, scored as its parent
            last = failure.evaluation
            break
    if last is None:
        raise RuntimeError("no strategy is valid on the base model (check env.pr_cap and the grid)")
    x[:len(scheme)] = np.searchsorted(letters, scheme)
    x[len(scheme):] = end
    return x, last


def planned_scheme(genome: np.ndarray, evaluator: Evaluator, removal: np.ndarray,
                   letters: np.ndarray | None = None) -> list[int]:
    """What :func:`decode` will most likely evaluate, judged by planned removal alone (no evaluation):
    the genome up to END or the first gene that is invalid by the static rules. For prefetching a
    population; :func:`decode` still decides with the measured PR."""
    env = evaluator.env
    letters = alphabet(env) if letters is None else letters
    end, scheme = len(letters), []
    for k, gene in enumerate(np.asarray(genome, dtype=np.int64)):
        gene = int(gene)
        if gene >= end or k >= env.max_len:
            break
        try:
            env._check_scheme(scheme + [int(letters[gene])])
        except ValueError:
            break
        scheme.append(int(letters[gene]))
    return scheme


class _EvolutionSearch(ABC):
    """Shared ask/tell loop; subclasses build the pymoo algorithm."""

    name = ""
    DEFAULTS: dict[str, Any] = {}

    def __init__(self, **options: Any) -> None:
        opts = check_options(self.name, options, self.DEFAULTS)
        self.population = positive_int(self.name, "population", opts["population"], 2)
        self.max_generations = positive_int(self.name, "max_generations", opts["max_generations"])
        self.patience = positive_int(self.name, "patience", opts["patience"])
        for key in ("crossover_prob", "mutation_prob"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{self.name}: option {key} must be a probability in [0, 1], got {v!r}")
        for key in ("crossover_eta", "mutation_eta"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{self.name}: option {key} must be a positive number, got {v!r}")
        self.crossover_prob: float = float(opts["crossover_prob"])
        self.crossover_eta: float = float(opts["crossover_eta"])
        self.mutation_prob: float = float(opts["mutation_prob"])
        self.mutation_eta: float = float(opts["mutation_eta"])

    def options(self) -> dict[str, Any]:
        return {"population": self.population, "max_generations": self.max_generations, "patience": self.patience,
                "crossover_prob": self.crossover_prob, "crossover_eta": self.crossover_eta,
                "mutation_prob": self.mutation_prob, "mutation_eta": self.mutation_eta}

    def _operators(self) -> dict[str, Any]:
        return {"sampling": IntegerRandomSampling(),
                "crossover": SBX(prob=self.crossover_prob, eta=self.crossover_eta, vtype=float,
                                 repair=RoundingRepair()),
                "mutation": PM(prob=self.mutation_prob, eta=self.mutation_eta, vtype=float, repair=RoundingRepair()),
                "eliminate_duplicates": True}

    @abstractmethod
    def _algorithm(self) -> Algorithm:
        """The concrete algorithm (one per subclass)."""

    def search(self, env, budget: Budget, seed: int, result: SearchResult | None = None) -> SearchResult:
        evaluator = Evaluator(env, budget, agent=self.name, seed=seed, result=result)
        evaluator.result.meta["agent_options"] = self.options()
        letters = alphabet(evaluator.env)
        removal = removals(evaluator.env)
        gamma = float(evaluator.env.task.gamma)
        problem = SchemeProblem(len(letters), evaluator.env.max_len)
        algorithm = self._algorithm()
        algorithm.setup(problem, termination=("n_gen", self.max_generations), seed=int(seed), verbose=False)
        repair_rng = np.random.default_rng([int(seed), 1])  # first-gene resampling, independent of pymoo's
        stalled = generations = 0
        try:
            while algorithm.has_next() and stalled < self.patience:
                before = len(evaluator.result.evaluations)
                pop = algorithm.ask()
                X = np.asarray(pop.get("X")).round().astype(np.int64)
                evaluator.prefetch([planned_scheme(x, evaluator, removal, letters) for x in X])
                F = np.empty((len(pop), 2))
                G = np.empty((len(pop), 1))
                for i in range(len(pop)):
                    X[i], last = decode(X[i], evaluator, removal, repair_rng, letters)
                    F[i] = (-last.acc, -last.PR)
                    G[i] = (gamma - last.PR,)
                pop.set("X", X)
                PymooEvaluator().eval(StaticProblem(problem, F=F, G=G), pop)
                algorithm.tell(infills=pop)
                generations += 1
                stalled = stalled + 1 if len(evaluator.result.evaluations) == before else 0
        except BudgetExhausted:
            pass
        evaluator.result.meta["agent_options"] = self.options()
        evaluator.result.meta["generations"] = generations  # completed (told) generations, initial one included
        return evaluator.result


class NSGA2Search(_EvolutionSearch):
    """NSGA-II (pymoo) on the integer genome; not in the paper, a standard multi-objective EA reference.

    Options: population (50), max_generations (10000), patience (100 generations without a new
    scheme), crossover_prob (0.9) / crossover_eta (15) for SBX, mutation_prob (0.9: probability that an
    offspring is mutated; each gene then mutates with probability 1/L) / mutation_eta (20) for PM
    (pymoo's NSGA-II defaults).
    """

    name = "nsga2"
    DEFAULTS: dict[str, Any] = {"population": 50, "max_generations": 10000, "patience": 100, "crossover_prob": 0.9,
                                "crossover_eta": 15.0, "mutation_prob": 0.9, "mutation_eta": 20.0}

    def _algorithm(self) -> Algorithm:
        return NSGA2(pop_size=self.population, **self._operators())


class RVEASearch(_EvolutionSearch):
    """RVEA (pymoo), the paper's "Evolution" baseline (which used geatpy's RVEA template).

    Options as :class:`NSGA2Search` plus alpha (2.0, APD penalty exponent) and adapt_freq (0.1,
    reference-vector adaptation period as a fraction of max_generations); population = number of
    reference directions (Das-Dennis, 2 objectives); SBX defaults are pymoo's RVEA ones (prob 1, eta 30).
    """

    name = "rvea"
    DEFAULTS: dict[str, Any] = {"population": 50, "max_generations": 10000, "patience": 100, "crossover_prob": 1.0,
                                "crossover_eta": 30.0, "mutation_prob": 0.9, "mutation_eta": 20.0, "alpha": 2.0,
                                "adapt_freq": 0.1}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        opts = check_options(self.name, options, self.DEFAULTS)
        for key in ("alpha", "adapt_freq"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{self.name}: option {key} must be a positive number, got {v!r}")
        if opts["adapt_freq"] > 1:
            raise ValueError(f"{self.name}: option adapt_freq must be in (0, 1], got {opts['adapt_freq']!r}")
        self.alpha = float(opts["alpha"])
        self.adapt_freq = float(opts["adapt_freq"])

    def options(self) -> dict[str, Any]:
        return {**super().options(), "alpha": self.alpha, "adapt_freq": self.adapt_freq}

    def _algorithm(self) -> Algorithm:
        ref_dirs = get_reference_directions("das-dennis", 2, n_partitions=self.population - 1)
        return RVEA(ref_dirs=ref_dirs, alpha=self.alpha, adapt_freq=self.adapt_freq, **self._operators())
