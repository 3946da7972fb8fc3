"""The ``surrogate`` backend: a model trained on the released real steps predicts every step.

**Model.** Step-wise: from the state before a step (depth, fraction of the original parameters and
FLOPs left, val and test accuracy, which methods ran before and which ran last) and the strategy
(method, its settings, the removal it plans and the keep ratio that implies for this state) it
predicts the val and test accuracy after the step (as log error rates: see ``decode``), the
log-ratios of parameters and FLOPs, and the step's cost. Any scheme of the 4,525-strategy grid at any depth gets an answer by chaining steps
from the base model. One scikit-learn ``HistGradientBoostingRegressor`` per target (picked over an
MLP on held-out fidelity: see ``automc surrogate report``), exported to flat numpy arrays so that
prediction needs neither scikit-learn nor pickle; a step (features, the walk of every tree, decoding)
is one call of a numba-compiled function, microseconds. Answers are cached per scheme (a
deterministic function).

**Determinism and noise.** The same scheme gets the same answer; ``noise=True`` adds Gaussian
seed noise to each step's val and test accuracy, with the standard deviation measured between step
seeds of the same schemes (the data set's repeats) at that accuracy level (:func:`noise_sd`), drawn
from a generator seeded by (seed, scheme).

**Labelled.** ``info["backend"] == "surrogate"``: a surrogate answer is a prediction, never a
measurement (``info["cached"]`` is False and ``info["seconds"]`` 0: nothing was computed; the
simulated clock is ``info["cost"]``). The model file carries the benchmark version and the data it
was fitted on, and refuses an environment of another version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np

from automc_env.fingerprint import BENCHMARK_VERSION

MODEL_DIR = Path(__file__).resolve().parent / "models"
TARGETS = ("acc", "test_acc", "log_params", "log_flops", "cost")   # acc: encoded per ``acc_mode``
ACC_MODES = ("log_error", "absolute", "delta")
ACC_MODE = "log_error"   # chosen by held-out fidelity and bounded answers: see ``decode`` and the report
ERROR_FLOOR = 0.005      # log_error target: log(error rate + this), so a perfect step is a finite target
STATE_FEATURES = ("depth", "params_left", "flops_left", "acc", "test_acc")
CACHE_SIZE = 200_000


class SurrogateError(ValueError):
    """The surrogate cannot answer for this environment (another version, task or configuration)."""


# ---- features ---------------------------------------------------------------------------------------

class Featurizer:
    """Feature vectors of (state before a step, strategy): one layout for fitting and answering."""

    def __init__(self, space, task):
        self.space, self.task = space, task
        self.methods = space.methods
        n = len(space)
        self.static = np.asarray(space.feature_matrix()[:, 1:], dtype=np.float64)     # method one-hot + HP slots
        self.removal = np.array([space[i].removal(task.gamma) for i in range(n)])
        self.method_index = np.array([self.methods.index(space[i].method) for i in range(n)])
        m = len(self.methods)
        self.names = (list(STATE_FEATURES) + [f"ran_{x}" for x in self.methods] + [f"last_{x}" for x in self.methods]
                      + [f"strategy_{k}" for k in range(self.static.shape[1])] + ["removal", "keep", "log_keep"])
        self.width = len(STATE_FEATURES) + 2 * m + self.static.shape[1] + 3
        self._kernel_args = (np.ascontiguousarray(self.method_index, dtype=np.int64), m,
                             np.ascontiguousarray(self.static), np.ascontiguousarray(self.removal, dtype=np.float64))

    def row(self, scheme_before: Sequence[int], state: dict, base: dict, action: int) -> np.ndarray:
        """The features of applying ``action`` after ``scheme_before`` (whose metrics are ``state``):
        the state part (depth, params and FLOPs left as fractions of the base, accuracies, which
        methods ran and which ran last), the strategy's static features, its planned removal, the
        keep ratio that implies here and its log."""
        out = np.empty(self.width)
        _features_into(np.asarray(scheme_before, dtype=np.int64), int(action), self.parent_row(state),
                       float(base["params"]), float(base["flops"]), self.kernel_args(), out)
        return out

    @staticmethod
    def parent_row(state: dict) -> np.ndarray:
        """(acc, test_acc, params, flops) of a state, as the compiled step takes a parent."""
        return np.array([state["acc"], state["test_acc"], state["params"], state["flops"]], dtype=np.float64)

    def kernel_args(self) -> tuple:
        """What the compiled feature builder needs."""
        return self._kernel_args

    def matrix(self, state_vecs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Batched :meth:`row`: rows of state parts (the first ``5 + 2·methods`` features) and their
        actions (the vector environment's batches; the same numbers, bit for bit)."""
        removal = self.removal[actions]
        keep = np.maximum(1.0 - removal / np.maximum(state_vecs[:, 1], 1e-12), 0.1)
        return np.concatenate([state_vecs, self.static[actions], removal[:, None], keep[:, None],
                               np.log(keep)[:, None]], axis=1)


@numba.njit(cache=True)
def _features_into(scheme_before, action, parent, base_params, base_flops, featurizer, out):
    """:meth:`Featurizer.row` into ``out``."""
    method_index, m, static, removal = featurizer
    out[:] = 0.0
    out[0], out[1], out[2] = scheme_before.shape[0], parent[2] / base_params, parent[3] / base_flops
    out[3], out[4] = parent[0] / 100.0, parent[1] / 100.0
    for a in scheme_before:
        out[5 + method_index[a]] += 1.0
    if scheme_before.shape[0]:
        out[5 + m + method_index[scheme_before[-1]]] = 1.0
    j = 5 + 2 * m
    width = static.shape[1]
    out[j:j + width] = static[action]
    keep = max(1.0 - removal[action] / max(out[1], 1e-12), 0.1)
    out[j + width], out[j + width + 1], out[j + width + 2] = removal[action], keep, np.log(keep)


# ---- the forest --------------------------------------------------------------------------------------

class FlatForest:
    """Every tree of every target in padded flat arrays (the saved form; exact sklearn predictions).

    Tree ``t`` owns nodes ``t·nodes .. (t+1)·nodes − 1``; a leaf points to itself, so walking
    ``depth`` levels from every root lands every tree on its leaf; the leaves' values summed per
    target (``bounds``: the first tree of each target) plus the baseline are the predictions.
    Prediction walks a complete-tree copy of these arrays (:meth:`tables`) in compiled code.
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.feature, self.threshold = arrays["feature"], arrays["threshold"]
        self.left, self.right, self.value = arrays["left"], arrays["right"], arrays["value"]
        self.bounds, self.baseline = arrays["bounds"], arrays["baseline"]
        self.trees, self.nodes, self.depth = (int(v) for v in arrays["shape"])
        self.roots = np.arange(self.trees, dtype=np.int64) * self.nodes
        self._child = np.stack([self.left, self.right], axis=1).ravel()  # node·2 + (x > threshold)
        self._walk: FlatForest.Walk | None = None   # the prediction tables, built on first use
        self._executor = None                        # predict_many's threads, started on first use

    @classmethod
    def from_sklearn(cls, models: Sequence) -> FlatForest:
        trees, target_of, baseline = [], [], []
        for k, model in enumerate(models):
            baseline.append(float(np.ravel(model._baseline_prediction)[0]))
            for predictors in model._predictors:
                trees.append(predictors[0].nodes)
                target_of.append(k)
        m, count = max(len(t) for t in trees), len(trees)
        a = {"feature": np.zeros((count, m), np.int64), "threshold": np.full((count, m), np.inf),
             "left": np.zeros((count, m), np.int64), "right": np.zeros((count, m), np.int64),
             "value": np.zeros((count, m))}
        depth = 0
        for i, t in enumerate(trees):
            if np.any(t["is_categorical"]):
                raise SurrogateError("categorical splits are not supported by the flat forest")
            n, leaf = len(t), t["is_leaf"].astype(bool)
            idx = np.arange(n)
            a["feature"][i, :n] = np.where(leaf, 0, t["feature_idx"])
            a["threshold"][i, :n] = np.where(leaf, np.inf, t["num_threshold"])
            a["left"][i, :n] = np.where(leaf, idx, t["left"]) + i * m
            a["right"][i, :n] = np.where(leaf, idx, t["right"]) + i * m
            a["value"][i, :n] = t["value"]
            depth = max(depth, int(t["depth"].max()))
        a = {k: v.ravel() for k, v in a.items()}
        a["bounds"] = np.searchsorted(np.asarray(target_of), np.arange(len(models)))
        a["baseline"] = np.asarray(baseline)
        a["shape"] = np.array([count, m, depth])
        return cls(a)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
                "value": self.value, "bounds": self.bounds, "baseline": self.baseline,
                "shape": np.array([self.trees, self.nodes, self.depth])}

    #: rows per thread of :meth:`predict_many` below which it does not split a batch (a thread's start
    #: costs about as much as walking this many rows)
    ROWS_PER_THREAD = 256

    class Walk:
        """:meth:`FlatForest.tables`: the forest as complete binary trees of depth :attr:`depth`.

        ``feature``, ``threshold``: the distinct tests ``x[feature] > threshold`` of the forest (HGB
        splits on bin edges: a few hundred to a few thousand for thousands of nodes); ``tests``
        (trees, 2^depth − 1): the test of every inner slot in heap order (slot ``i``'s children are
        ``2i + 1`` and ``2i + 2``); ``leaves`` (trees, 2^depth): every leaf slot's value; ``args``:
        the compiled walk's arguments."""

        def __init__(self, **arrays: np.ndarray):
            self.__dict__.update(arrays)

    MAX_DEPTH = 12   # the complete layout has 2^depth leaves per tree

    def tables(self) -> FlatForest.Walk:
        """The walk's tables (built once). A leaf above the last level fills every slot below it with
        its value (its own test, ``x[0] > inf``, is never true, and whatever the padded slots decide,
        they land on the same value), so every tree is walked ``depth`` levels by index arithmetic
        alone: ``i = 2i + 1 + decision[tests[t, i]]``. The decisions are computed once per row and
        distinct test; the same comparisons reach the same leaves as the stored trees' walk
        (``x[feature[node]] > threshold[node]`` per level), so the predictions are the same, bit for bit."""
        if self._walk is None:
            if self.depth > self.MAX_DEPTH:
                raise SurrogateError(f"trees of depth {self.depth} are too deep for the complete layout "
                                     f"(at most {self.MAX_DEPTH})")
            pairs, pair_of = np.unique(np.stack([self.feature.astype(np.float64), self.threshold]), axis=1,
                                       return_inverse=True)
            pair_of = pair_of.reshape(-1)
            levels = [self.roots[:, None]]          # node ids in heap order, level by level
            for _ in range(self.depth):             # a leaf is its own child on both sides
                levels.append(self._child[2 * levels[-1][:, :, None] + np.array([0, 1])].reshape(self.trees, -1))
            inner = np.concatenate(levels[:-1], axis=1) if self.depth else np.zeros((self.trees, 0), np.int64)
            feature, threshold = pairs[0].astype(np.int64), np.ascontiguousarray(pairs[1])
            tests = np.ascontiguousarray(pair_of[inner].astype(np.int32))
            leaves = np.ascontiguousarray(self.value[levels[-1]])
            self._walk = FlatForest.Walk(feature=feature, threshold=threshold, tests=tests, leaves=leaves,
                                         args=(feature, threshold, tests, leaves, self.depth, self.bounds,
                                               self.baseline))
        return self._walk

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One row of features -> one prediction per target."""
        return self.predict_many(np.asarray(x, dtype=np.float64)[None, :])[0]

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Rows of features -> (rows, targets); every row's answer is the same whatever the batch."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty((len(X), len(self.bounds)))
        self.split_rows(len(X), lambda lo, hi: _walk_rows(X[lo:hi], self.kernel_args(), out[lo:hi]))
        return out

    def kernel_args(self) -> tuple:
        """The compiled walk's view of the forest (see :meth:`tables`; built once)."""
        return self.tables().args

    def split_rows(self, n: int, call) -> None:
        """``call(lo, hi)`` over rows ``0..n``: in one piece, or for large batches split over
        :attr:`threads` threads (the compiled walk releases the GIL; rows are independent, so the
        split does not change any answer)."""
        parts = min(self.threads, n // self.ROWS_PER_THREAD)
        if parts <= 1:
            call(0, n)
            return
        edges = np.linspace(0, n, parts + 1).astype(int)
        list(self._pool(parts).map(lambda i: call(edges[i], edges[i + 1]), range(parts)))

    #: threads of :meth:`predict_many` (the machine's cores, at most 4)
    threads = max(1, min(4, os.cpu_count() or 1))

    def _pool(self, workers: int):
        if self._executor is None or self._executor._max_workers != workers:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="automc-surrogate")
        return self._executor


@numba.njit(cache=True)
def _pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise summation of ``a[lo:lo + n]`` (``np.add.reduce``'s order, so its bits)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3], a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        while i < n - n % 8:
            j = lo + i
            r0, r1, r2, r3 = r0 + a[j], r1 + a[j + 1], r2 + a[j + 2], r3 + a[j + 3]
            r4, r5, r6, r7 = r4 + a[j + 4], r5 + a[j + 5], r6 + a[j + 6], r7 + a[j + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return _pairwise_sum(a, lo, half) + _pairwise_sum(a, lo + half, n - half)


@numba.njit(cache=True, nogil=True)
def _walk_one(x, forest, decision, slot, values, out):
    """One row's predictions into ``out``: the decision of every distinct test, then every tree by
    index arithmetic, level by level (the trees' steps are independent, so they overlap), then the
    leaves' values summed per target as ``np.add.reduceat`` sums a segment (its first value plus
    numpy's pairwise sum of the rest): the same sums, bit for bit, as the numpy walk the boards
    were computed with before this loop was compiled."""
    feature, threshold, tests, leaves, depth, bounds, baseline = forest
    trees, targets, first_leaf = tests.shape[0], bounds.shape[0], (1 << depth) - 1
    for p in range(feature.shape[0]):
        decision[p] = 1 if x[feature[p]] > threshold[p] else 0
    slot[:] = 0
    for _ in range(depth):
        for t in range(trees):
            slot[t] = 2 * slot[t] + 1 + decision[tests[t, slot[t]]]
    for t in range(trees):
        values[t] = leaves[t, slot[t] - first_leaf]
    for k in range(targets):
        lo = bounds[k]
        hi = bounds[k + 1] if k + 1 < targets else trees
        out[k] = baseline[k] + (values[lo] + _pairwise_sum(values, lo + 1, hi - lo - 1))


@numba.njit(cache=True)
def _scratch(forest):
    feature, tests = forest[0], forest[2]
    return np.empty(feature.shape[0], np.int64), np.empty(tests.shape[0], np.int64), np.empty(tests.shape[0])


@numba.njit(cache=True, nogil=True)
def _walk_rows(X, forest, out):
    decision, slot, values = _scratch(forest)
    for r in range(X.shape[0]):
        _walk_one(X[r], forest, decision, slot, values, out[r])


@numba.njit(cache=True, nogil=True)
def _decode_one(y, parent, noise, how, out):
    """:func:`decode` of one row: ``y`` (targets), ``parent`` (acc, test_acc, params, flops),
    ``noise`` (standard normal val and test draws, or empty) -> ``out`` (acc, test_acc, params, flops, cost)."""
    mode, (lo, hi, tlo, thi), front_pr, front_acc, front_test, base_params, levels, sd_acc, sd_test = how
    if mode == 0:
        acc, test = 100.0 * (1.0 + ERROR_FLOOR - np.exp(y[0])), 100.0 * (1.0 + ERROR_FLOOR - np.exp(y[1]))
    elif mode == 1:
        acc, test = 100.0 * y[0], 100.0 * y[1]
    else:
        acc, test = parent[0] + 100.0 * y[0], parent[1] + 100.0 * y[1]
    if noise.shape[0]:   # standard normal draws, scaled by the spread real steps showed at this accuracy
        acc = acc + noise[0] * sd_acc[np.searchsorted(levels, acc, side="right")]
        test = test + noise[1] * sd_test[np.searchsorted(levels, test, side="right")]
    params = max(1.0, np.rint(parent[2] * np.exp(y[2])))
    acc, test = min(max(acc, lo), hi), min(max(test, tlo), thi)
    if front_pr.shape[0]:   # the first front threshold at or above the child's PR (the last one beyond it)
        at = min(np.searchsorted(front_pr, 1.0 - params / base_params), front_pr.shape[0] - 1)
        acc, test = min(acc, front_acc[at]), min(test, front_test[at])
    out[0], out[1], out[2] = acc, test, params
    out[3] = max(1.0, np.rint(parent[3] * np.exp(y[3])))
    out[4] = max(0.0, y[4])


@numba.njit(cache=True, nogil=True)
def _decode_rows(Y, parents, noise, how, out):
    for r in range(Y.shape[0]):
        _decode_one(Y[r], parents[r], noise[r], how, out[r])


@numba.njit(cache=True, nogil=True)
def _answer_rows(X, forest, parents, noise, how, out):
    """Walk and decode in one pass: what a step on the surrogate computes, one row per step."""
    decision, slot, values = _scratch(forest)
    y = np.empty(forest[5].shape[0])
    for r in range(X.shape[0]):
        _walk_one(X[r], forest, decision, slot, values, y)
        _decode_one(y, parents[r], noise[r], how, out[r])


@numba.njit(cache=True)
def _answer_step(scheme_before, action, parent, base_params, base_flops, noise, featurizer, forest, how, out):
    """One step on the surrogate (:meth:`SurrogateBackend.answer`): features, walk and decode in one call."""
    x = np.empty(5 + 2 * featurizer[1] + featurizer[2].shape[1] + 3)
    _features_into(scheme_before, action, parent, base_params, base_flops, featurizer, x)
    decision, slot, values = _scratch(forest)
    y = np.empty(forest[5].shape[0])
    _walk_one(x, forest, decision, slot, values, y)
    _decode_one(y, parent, noise, how, out)


# ---- fitting -----------------------------------------------------------------------------------------

HGB_PARAMS = {"max_iter": 400, "learning_rate": 0.1, "max_depth": 4, "min_samples_leaf": 10,
              "l2_regularization": 1.0, "early_stopping": True, "validation_fraction": 0.15,
              "n_iter_no_change": 30, "random_state": 0}


def training_rows(records: Sequence[dict], featurizer: Featurizer, base: dict,
                  acc_mode: str = ACC_MODE) -> tuple[np.ndarray, np.ndarray, list]:
    """(features, targets, the record of each row): every step whose parent is in the same design and replicate
    (or is the base model)."""
    by_group: dict[tuple, dict] = {}
    for r in records:
        by_group.setdefault((r["design"], r["replicate"]), {})[tuple(r["scheme"])] = r
    X, Y, used = [], [], []
    for rows in by_group.values():
        for scheme, r in rows.items():
            parent = base if len(scheme) == 1 else rows.get(scheme[:-1])
            if parent is None:
                continue
            X.append(featurizer.row(scheme[:-1], parent, base, scheme[-1]))
            Y.append(targets_of(parent, r, acc_mode))
            used.append(r)
    return np.asarray(X), np.asarray(Y), used


def targets_of(parent: dict, child: dict, acc_mode: str = ACC_MODE) -> list[float]:
    """The regression targets of one step: accuracies (log error rates, absolute, or the change from
    the parent), the log-ratios of parameters and FLOPs, and the cost."""
    if acc_mode == "log_error":
        acc = [math.log(1.0 - child["acc"] / 100.0 + ERROR_FLOOR), math.log(1.0 - child["test_acc"] / 100.0 + ERROR_FLOOR)]
    elif acc_mode == "absolute":
        acc = [child["acc"] / 100.0, child["test_acc"] / 100.0]
    else:
        acc = [(child["acc"] - parent["acc"]) / 100.0, (child["test_acc"] - parent["test_acc"]) / 100.0]
    return acc + [math.log(child["params"] / parent["params"]), math.log(child["flops"] / parent["flops"]),
                  float(child["cost"])]


ACC_CODES = {mode: i for i, mode in enumerate(ACC_MODES)}   # the compiled decoder's mode numbers


def decode(y: np.ndarray, parent: dict[str, np.ndarray], acc_mode: str, noise: np.ndarray | None = None,
           bounds: dict | None = None, spread: dict | None = None) -> dict:
    """Predictions ``y`` (rows, targets) for parents (arrays of acc, test_acc, params, flops) -> the
    children's metrics as arrays. One function for the single environment and the vector environment,
    so both give the same numbers bit for bit (a compiled loop: :func:`_decode_one`). ``noise``: (rows, 2)
    standard normal draws for val and test accuracy, scaled by ``spread`` (a model's ``noise_sd``).

    Why absolute accuracies (``log_error``, ``absolute``) and not changes: trees predict within the
    range of their training targets, so an absolute accuracy can never leave the range real steps
    reached, while chained *changes* add up errors: with the ``delta`` targets random search found
    predicted 100 % schemes at PR 0.6 that no real step comes near (real maximum 99.2 %). Why the
    log error rate ``log(1 − acc + 0.005)`` by default: most steps keep 95-99 % and a few collapse to
    chance; on plain accuracy the squared loss spends its splits on the collapses, on the log error
    rate it resolves the top, where schemes are ranked (held-out test τ 0.71 → 0.75 when fitted on
    2,718 steps; ``automc surrogate report`` compares the encodings on the whole data set). ``bounds``
    (the model's :attr:`SurrogateModel.bounds`) bound the answers for the same reason: by
    ``acc_range``, the lowest and highest val and test accuracy of the steps it was fitted on
    (boosting's sums of leaves can still overshoot a little, and a search finds that), and by
    ``front``, the best accuracy those steps reached at the child's PR or higher (:func:`real_front`)."""
    y = np.ascontiguousarray(y, dtype=np.float64)
    parents = np.empty((len(y), 4))
    for j, key in enumerate(("acc", "test_acc", "params", "flops")):
        parents[:, j] = parent[key]
    out = np.empty((len(y), 5))
    _decode_rows(y, parents, _noise_rows(noise, len(y)), decode_how(acc_mode, bounds, spread), out)
    return {key: out[:, j] for j, key in enumerate(("acc", "test_acc", "params", "flops", "cost"))}


def decode_how(acc_mode: str, bounds: dict | None, spread: dict | None = None) -> tuple:
    """:func:`decode`'s settings as the compiled decoder takes them: the mode's number, the accuracy
    ranges, the real front (empty arrays: none), the base model's parameters, and the seed noise's
    standard deviation by accuracy level (``spread``: a model's ``noise_sd``; see :func:`noise_sd`)."""
    bounds, spread = bounds or {}, spread or {}
    (lo, hi), (tlo, thi) = bounds.get("acc", (0.0, 100.0)), bounds.get("test_acc", (0.0, 100.0))
    front = bounds.get("front") or {"base_params": 1.0, **{k: np.empty(0) for k in ("pr", "acc", "test_acc")}}
    by_level = spread.get("by_level") or {k: [spread.get(k, 0.0)] for k in ("acc", "test_acc")}
    return (ACC_CODES[acc_mode], (float(lo), float(hi), float(tlo), float(thi)),
            *(np.ascontiguousarray(front[k], dtype=np.float64) for k in ("pr", "acc", "test_acc")),
            float(front["base_params"]), np.asarray(spread.get("levels", []), dtype=np.float64),
            *(np.asarray(by_level[k], dtype=np.float64) for k in ("acc", "test_acc")))


def _noise_rows(noise: np.ndarray | None, n: int) -> np.ndarray:
    return np.empty((n, 0)) if noise is None else np.ascontiguousarray(noise, dtype=np.float64).reshape(n, 2)


def real_front(records: Sequence[dict], base_params: float) -> dict:
    """The best accuracy real steps reached at each PR or higher, for val and test separately: a
    step function kept only where it changes (the real Pareto front's corners).

    Why: an answer above it says that some scheme beats, at its compression, every real step at that
    compression or more. The trees cannot know that (they fit averages), and a search on the
    surrogate then chases predicted schemes that no real step comes near (the report's "bounded
    answers": 99.16 % predicted at PR ≥ 0.7 where real steps reached 98.87 %)."""
    pr = np.array([1.0 - r["params"] / base_params for r in records])
    values = {k: np.array([float(r[k]) for r in records]) for k in ("acc", "test_acc")}
    order = np.argsort(-pr, kind="stable")   # highest PR first: a running max is the best at PR ≥ here
    corners = set()
    for v in values.values():
        best = np.maximum.accumulate(v[order])
        corners |= set(pr[order][np.r_[True, best[1:] > best[:-1]]].tolist())
    thresholds = sorted(corners)
    return {"base_params": float(base_params), "pr": thresholds,
            **{k: [float(v[pr >= t].max()) for t in thresholds] for k, v in values.items()}}


#: sizes, FLOPs and cost are near-deterministic functions of the strategy and the state (R² ≈ 1 on
#: held-out steps): a faster learning rate fits them in a third of the trees, and every tree fewer is
#: prediction time (the forest walk is what a step on the surrogate costs). Cost keeps improving by
#: hundredths of a percent for 300+ trees; 60 trees leave it within ~1 % of real costs (target 10 %)
TARGET_PARAMS = {"log_params": {"learning_rate": 0.3}, "log_flops": {"learning_rate": 0.3},
                 "cost": {"learning_rate": 0.3, "max_iter": 60}}


def fit_models(X: np.ndarray, Y: np.ndarray, params: dict | None = None) -> list:
    from sklearn.ensemble import HistGradientBoostingRegressor

    params = {**HGB_PARAMS, **(params or {})}
    return [HistGradientBoostingRegressor(**{**params, **TARGET_PARAMS.get(TARGETS[k], {})}).fit(X, Y[:, k])
            for k in range(Y.shape[1])]


class SurrogateModel:
    """A fitted forest plus what it was fitted on (saved as one pickle-free npz)."""

    def __init__(self, forest: FlatForest, meta: dict):
        self.forest, self.meta = forest, meta

    @property
    def acc_mode(self) -> str:
        return self.meta.get("acc_mode", "delta")   # the first models predicted changes

    @functools.cached_property
    def bounds(self) -> dict:
        """What :func:`decode` bounds the answers by, as arrays (built once: a step is microseconds)."""
        out = {k: tuple(v) for k, v in self.meta.get("acc_range", {}).items()}
        front = self.meta.get("front")
        if front:
            out["front"] = {"base_params": front["base_params"],
                            **{k: np.asarray(front[k], dtype=float) for k in ("pr", "acc", "test_acc")}}
        return out

    @functools.cached_property
    def decode_how(self) -> tuple:
        return decode_how(self.acc_mode, self.bounds, self.meta.get("noise_sd"))

    def answer_rows(self, X: np.ndarray, parents: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Feature rows and their parents' (acc, test_acc, params, flops) -> the children's (acc,
        test_acc, params, flops, cost): :meth:`FlatForest.predict_many` and :func:`decode` in one
        compiled pass (the single environment's step, and the vector environment's rows, bit for bit).
        ``noise``: (rows, 2) standard normal draws (val, test), or None."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        parents, noise = np.ascontiguousarray(parents, dtype=np.float64), _noise_rows(noise, len(X))
        out, forest, how = np.empty((len(X), 5)), self.forest.kernel_args(), self.decode_how
        self.forest.split_rows(len(X), lambda lo, hi: _answer_rows(X[lo:hi], forest, parents[lo:hi], noise[lo:hi],
                                                                   how, out[lo:hi]))
        return out

    @classmethod
    def fit(cls, records: Sequence[dict], env, params: dict | None = None, acc_mode: str = ACC_MODE,
            repeats: Sequence[dict] | None = None) -> SurrogateModel:
        """Fit on ``records``; the seed noise (``noise=True``) is measured on ``repeats`` (default
        ``records``): the records of schemes computed under several step seeds, which a fit on one
        replicate does not contain."""
        other = {r.get("version") for r in records} - {BENCHMARK_VERSION}
        if other:
            raise SurrogateError(f"records of benchmark version {sorted(map(str, other))} cannot train a "
                                 f"{BENCHMARK_VERSION} surrogate")
        featurizer = Featurizer(env.space, env.task)
        base = dict(env.base, test_acc=env.base_test_acc)
        if acc_mode not in ACC_MODES:
            raise SurrogateError(f"acc_mode must be one of {ACC_MODES}, got {acc_mode!r}")
        X, Y, used = training_rows(records, featurizer, base, acc_mode)
        if len(X) < 20:
            raise SurrogateError(f"only {len(X)} usable steps to fit on")
        forest = FlatForest.from_sklearn(fit_models(X, Y, params))
        designs: dict[str, int] = {}
        for r in used:
            designs[r["design"]] = designs.get(r["design"], 0) + 1
        digest = hashlib.sha256(json.dumps(sorted([r["design"], r["replicate"], r["scheme"]] for r in used)
                                           ).encode()).hexdigest()
        meta = {"version": BENCHMARK_VERSION, "task": env.task.name, "grid": env.space.name, "seed": env.seed_value,
                "base": env.base_digest, "targets": list(TARGETS), "acc_mode": acc_mode,
                "acc_range": {k: [min(r[k] for r in used), max(r[k] for r in used)] for k in ("acc", "test_acc")},
                "front": real_front(used, base["params"]),
                "features": featurizer.names,
                "params": {**HGB_PARAMS, **(params or {})}, "rows": len(X), "designs": designs,
                "data_digest": digest, "noise_sd": noise_sd(records if repeats is None else repeats)}
        return cls(forest, meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(self.meta, sort_keys=True)), **self.forest.arrays())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SurrogateModel:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        return cls(FlatForest(arrays), meta)


NOISE_LEVELS = (80.0, 95.0)   # accuracy levels (%) between which the seed noise's spread is measured apart
MIN_SCHEMES_PER_LEVEL = 10


def noise_sd(records: Sequence[dict], levels: Sequence[float] = NOISE_LEVELS) -> dict | None:
    """Standard deviation of val and test accuracy (%) between step seeds of the same schemes
    (repeats): pooled (``acc``, ``test_acc``), and by accuracy level (``by_level``: below, between
    and above ``levels``, placed by the scheme's mean accuracy). Why by level: the spread is far from
    uniform (digits, 257 schemes x 3 seeds: 0.4 points above 95 %, 3.6 between 80 and 95 %, 7.3
    below 80 %), so one pooled deviation would add six times the real noise to the schemes a search
    ranks. A level with fewer than ``MIN_SCHEMES_PER_LEVEL`` schemes takes the pooled value."""
    by_scheme: dict[tuple, dict[int, dict]] = {}
    for r in records:
        by_scheme.setdefault(tuple(r["scheme"]), {})[r["replicate"]] = r
    groups = [g for g in by_scheme.values() if len(g) > 1]
    if not groups:
        return None

    def pooled(gs: list, key: str) -> float:
        devs = [v[key] - np.mean([w[key] for w in g.values()]) for g in gs for v in g.values()]
        return float(math.sqrt(sum(d * d for d in devs) / sum(len(g) - 1 for g in gs)))

    out: dict = {key: pooled(groups, key) for key in ("acc", "test_acc")}
    out["schemes"], out["levels"], out["by_level"] = len(groups), [float(x) for x in levels], {}
    for key in ("acc", "test_acc"):
        level = np.searchsorted(levels, [np.mean([v[key] for v in g.values()]) for g in groups], side="right")
        members = [[g for g, at in zip(groups, level) if at == i] for i in range(len(levels) + 1)]
        out["by_level"][key] = [pooled(m, key) if len(m) >= MIN_SCHEMES_PER_LEVEL else out[key] for m in members]
    return out


def default_model_path(task: str) -> Path:
    return MODEL_DIR / f"{task}-{BENCHMARK_VERSION.replace('/', '-')}.npz"


# ---- the backend -------------------------------------------------------------------------------------

class SurrogateBackend:
    name = "surrogate"
    real = False

    def __init__(self, env, model: str | Path | SurrogateModel | None = None, noise: bool = False):
        self.env = env
        if not isinstance(model, SurrogateModel):
            path = Path(model) if model is not None else default_model_path(env.task.name)
            if not path.exists():
                raise SurrogateError(f"no surrogate model for task {env.task.name!r} at {BENCHMARK_VERSION} ({path}); "
                                     f"fit one with `automc surrogate fit --task {env.task.name}`")
            model = SurrogateModel.load(path)
        meta = model.meta
        expected = {"version": BENCHMARK_VERSION, "task": env.task.name, "grid": env.space.name,
                    "seed": env.seed_value, "base": env.base_digest}
        wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if wrong or env.method_options or env.replicate:
            what = "; ".join(f"{k} {a!r} (environment: {b!r})" for k, (a, b) in wrong.items())
            if env.method_options or env.replicate:
                what = (what + "; " if what else "") + "method_options and replicate must be the defaults"
            raise SurrogateError(f"this surrogate was fitted for another environment: {what}")
        if noise and not meta.get("noise_sd"):
            raise SurrogateError("noise=True needs the seed-to-seed spread, but the model was fitted without repeats")
        self.model, self.noise = model, bool(noise)
        self.featurizer = Featurizer(env.space, env.task)
        self.base = dict(env.base, test_acc=env.base_test_acc)
        # the compiled step's arguments, built once (a step costs microseconds)
        self._featurizer_args, self._forest_args = self.featurizer.kernel_args(), model.forest.kernel_args()
        self._base_size = (float(self.base["params"]), float(self.base["flops"]))
        self._no_noise, self._out = np.empty(0), np.empty(5)
        self._cache: OrderedDict[tuple[int, ...], dict] = OrderedDict()
        self._noise_free_answers: OrderedDict[tuple[int, ...], dict] = OrderedDict()   # noise=True only

    def answer(self, scheme: tuple[int, ...], parent: dict) -> dict:
        hit = self._cache.get(scheme)
        if hit is not None:
            return dict(hit)
        if len(scheme) == 1:
            parent = self.base
        if self.noise:
            # the noise is what measuring a step adds: the next step starts from the noise-free state,
            # so that a scheme's spread is the measured one at every depth instead of compounding
            out = self._step(scheme, self._noise_free(scheme[:-1]), self.noise_draw(scheme))
        else:
            out = self._step(scheme, parent, self._no_noise)
        return dict(self._remember(self._cache, scheme, out))

    def _step(self, scheme: tuple[int, ...], parent: dict, noise: np.ndarray) -> dict:
        _answer_step(np.array(scheme[:-1], dtype=np.int64), scheme[-1], self.featurizer.parent_row(parent),
                     self._base_size[0], self._base_size[1], noise, self._featurizer_args, self._forest_args,
                     self.model.decode_how, self._out)
        acc, test, params, flops, cost = self._out.tolist()
        return {"acc": acc, "test_acc": test, "params": int(params), "flops": int(flops), "cost": cost,
                "compute_seconds": 0.0}

    def _noise_free(self, scheme: tuple[int, ...]) -> dict:
        """The noise-free answer for ``scheme`` (the base model for ``()``), chained from the base."""
        if not scheme:
            return self.base
        hit = self._noise_free_answers.get(scheme)
        if hit is None:
            hit = self._remember(self._noise_free_answers, scheme,
                                 self._step(scheme, self._noise_free(scheme[:-1]), self._no_noise))
        return hit

    @staticmethod
    def _remember(cache: OrderedDict, scheme: tuple[int, ...], answer: dict) -> dict:
        cache[scheme] = answer
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
        return answer

    def noise_draw(self, scheme: tuple[int, ...]) -> np.ndarray:
        """Two standard normal draws (val, test) seeded by (seed, scheme): the same scheme, the same noise."""
        seed = int.from_bytes(hashlib.sha256(f"{self.env.seed_value}:{scheme}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(2)
