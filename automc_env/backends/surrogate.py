"""The ``surrogate`` backend: a model trained on the released real steps predicts every step.

**Model.** Step-wise: from the state before a step (depth, fraction of the original parameters and
FLOPs left, val and test accuracy, which methods ran before and which ran last) and the strategy
(method, its settings, the removal it plans and the keep ratio that implies for this state) it
predicts the val and test accuracy after the step (as log error rates: see ``decode``), the
log-ratios of parameters and FLOPs, and the step's cost. Any scheme of the 4,525-strategy grid at any depth gets an answer by chaining steps
from the base model. One scikit-learn ``HistGradientBoostingRegressor`` per target (picked over an
MLP on held-out fidelity: see ``automc surrogate report``), exported to flat numpy arrays so that
prediction needs neither scikit-learn nor pickle: all trees of all targets are walked at once, a
few numpy operations per tree level. Answers are cached per scheme (a deterministic function).

**Determinism and noise.** The same scheme gets the same answer; ``noise=True`` adds Gaussian
seed noise to the accuracy changes with the standard deviation measured between step seeds of the
same schemes (the data set's repeats), drawn from a generator seeded by (seed, scheme).

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

    def state_vector(self, scheme_before: Sequence[int], state: dict, base: dict) -> np.ndarray:
        """The state part: depth, params and FLOPs left (fractions of the base), accuracies, method history."""
        m = len(self.methods)
        v = np.zeros(len(STATE_FEATURES) + 2 * m)
        v[:5] = (len(scheme_before), state["params"] / base["params"], state["flops"] / base["flops"],
                 state["acc"] / 100.0, state["test_acc"] / 100.0)
        for a in scheme_before:
            v[5 + self.method_index[a]] += 1
        if len(scheme_before):
            v[5 + m + self.method_index[scheme_before[-1]]] = 1.0
        return v

    def vector(self, state_vec: np.ndarray, action: int) -> np.ndarray:
        removal = self.removal[action]
        keep = max(1.0 - removal / max(state_vec[1], 1e-12), 0.1)
        return np.concatenate([state_vec, self.static[action], (removal, keep, np.log(keep))])  # np.log: as matrix()

    def matrix(self, state_vecs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Batched :meth:`vector` (rows of states and their actions)."""
        removal = self.removal[actions]
        keep = np.maximum(1.0 - removal / np.maximum(state_vecs[:, 1], 1e-12), 0.1)
        return np.concatenate([state_vecs, self.static[actions], removal[:, None], keep[:, None],
                               np.log(keep)[:, None]], axis=1)


# ---- the forest --------------------------------------------------------------------------------------

class FlatForest:
    """Every tree of every target in padded flat arrays, walked together (exact sklearn predictions).

    Tree ``t`` owns nodes ``t·nodes .. (t+1)·nodes − 1``; a leaf points to itself, so walking
    ``depth`` levels from every root lands every tree on its leaf; the leaves' values summed per
    target (``bounds``: the first tree of each target) plus the baseline are the predictions.
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.feature, self.threshold = arrays["feature"], arrays["threshold"]
        self.left, self.right, self.value = arrays["left"], arrays["right"], arrays["value"]
        self.bounds, self.baseline = arrays["bounds"], arrays["baseline"]
        self.trees, self.nodes, self.depth = (int(v) for v in arrays["shape"])
        self.roots = np.arange(self.trees, dtype=np.int64) * self.nodes
        self._child = np.stack([self.left, self.right], axis=1).ravel()  # node·2 + (x > threshold)
        self._walk: FlatForest.Walk | None = None   # the prediction tables, built on first use

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

    BLOCK = 1 << 16   # (row, tree) cells per block of predict_many: 512 KiB of int64 node ids

    class Walk:
        """:meth:`FlatForest.tables`: the distinct tests (``feature``, ``threshold``), and indexed by
        doubled node id each node's test (``pair2``), children (``child2``) and value (``value2``);
        the roots (``roots2``) and their tests (``root_pair``)."""

        def __init__(self, **arrays: np.ndarray):
            self.__dict__.update(arrays)

    def tables(self) -> FlatForest.Walk:
        """The walk's tables (built once). Every test ``x[feature] > threshold`` in the forest is one of
        few distinct (feature, threshold) pairs (HGB splits on bin edges: tens to a few thousand pairs
        for thousands of nodes), so a row's decisions are computed once per pair and the walk needs only
        integer gathers per level. Node ids are kept doubled (``2·node``) so that ``child2[node2 + d]``
        is the next doubled id. The same comparisons reach the same leaves, so the predictions are the
        plain walk's (``x[feature[node]] > threshold[node]`` per level), bit for bit."""
        if self._walk is None:
            pairs, pair_of = np.unique(np.stack([self.feature.astype(np.float64), self.threshold]), axis=1,
                                       return_inverse=True)
            pair_of = pair_of.reshape(-1).astype(np.intp)
            self._walk = FlatForest.Walk(
                feature=pairs[0].astype(np.intp), threshold=pairs[1], pair2=np.repeat(pair_of, 2),
                child2=2 * self._child.astype(np.intp), value2=np.repeat(self.value, 2),
                roots2=2 * self.roots.astype(np.intp), root_pair=pair_of[self.roots])
        return self._walk

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One row of features -> one prediction per target."""
        w = self.tables()
        d = (x[w.feature] > w.threshold).view(np.uint8)   # the row's decision of every distinct test
        node = w.roots2
        for level in range(self.depth):
            node = w.child2[(w.roots2 + d[w.root_pair]) if level == 0 else (node + d[w.pair2[node]])]
        return self.baseline + np.add.reduceat(w.value2[node], self.bounds)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Rows of features -> (rows, targets), each row bit for bit :meth:`predict`'s.

        Rows go in blocks of about ``BLOCK`` (row, tree) cells, so the walk's working arrays stay in
        the core's cache; every level is five passes over a block (pair gather, row offset, decision
        gather, add, child gather) into preallocated buffers. The leaves' values are summed per target
        by ``np.add.reduceat`` along each row, the same reduction, in the same order, as ``predict``'s.
        Large batches are split over :attr:`threads` threads (numpy's gathers and adds release the
        GIL; rows are independent, so the answer does not depend on the split)."""
        n = len(X)
        out = np.empty((n, len(self.bounds)))
        block = max(1, min(n, self.BLOCK // max(self.trees, 1)))
        parts = min(self.threads, n // (2 * block))   # a thread only for at least two blocks of rows
        if parts <= 1:
            self._walk_rows(X, out, block)
            return out
        edges = np.linspace(0, n, parts + 1).astype(int)
        list(self._pool(parts).map(lambda i: self._walk_rows(X[edges[i]:edges[i + 1]], out[edges[i]:edges[i + 1]],
                                                             block), range(parts)))
        return out

    #: threads of :meth:`predict_many` (the machine's cores, at most 4: the walk is memory-bound)
    threads = max(1, min(4, os.cpu_count() or 1))

    def _pool(self, workers: int):
        if getattr(self, "_executor", None) is None or self._executor._max_workers != workers:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="automc-surrogate")
        return self._executor

    def _walk_rows(self, X: np.ndarray, out: np.ndarray, block: int) -> None:
        """:meth:`predict_many`'s walk of ``X`` into ``out``, block by block, with buffers of its own."""
        w, n, trees = self.tables(), len(X), self.trees
        node, spare = np.empty((block, trees), np.intp), np.empty((block, trees), np.intp)
        decided = np.empty((block, trees), np.uint8)
        for start in range(0, n, block):
            rows = X[start:start + block]
            m = len(rows)
            d = (rows[:, w.feature] > w.threshold).view(np.uint8)      # (m, pairs)
            offset = (np.arange(m, dtype=np.intp) * d.shape[1])[:, None]
            flat = d.ravel()
            nd, sp, dd = node[:m], spare[:m], decided[:m]
            nd[:] = w.roots2
            for level in range(self.depth):
                if level == 0:
                    np.take(d, w.root_pair, axis=1, out=dd, mode="clip")
                    np.add(w.roots2, dd, out=sp)
                else:
                    np.take(w.pair2, nd, out=sp, mode="clip")
                    sp += offset
                    np.take(flat, sp, out=dd, mode="clip")
                    np.add(nd, dd, out=sp)
                np.take(w.child2, sp, out=nd, mode="clip")
            out[start:start + m] = self.baseline + np.add.reduceat(np.take(w.value2, nd), self.bounds, axis=1)


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
            state = featurizer.state_vector(scheme[:-1], parent, base)
            X.append(featurizer.vector(state, scheme[-1]))
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


def decode(y: np.ndarray, parent: dict[str, np.ndarray], acc_mode: str, noise: np.ndarray | None = None,
           bounds: dict | None = None) -> dict:
    """Predictions ``y`` (rows, targets) for parents (arrays of acc, test_acc, params, flops) -> the
    children's metrics as arrays. One function for the single environment and the vector environment,
    so both give the same numbers bit for bit. ``noise``: (rows, 2) points of val and test accuracy.

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
    bounds = bounds or {}
    if acc_mode == "log_error":
        acc, test = 100.0 * (1.0 + ERROR_FLOOR - np.exp(y[:, 0])), 100.0 * (1.0 + ERROR_FLOOR - np.exp(y[:, 1]))
    elif acc_mode == "absolute":
        acc, test = 100.0 * y[:, 0], 100.0 * y[:, 1]
    else:
        acc, test = parent["acc"] + 100.0 * y[:, 0], parent["test_acc"] + 100.0 * y[:, 1]
    if noise is not None:
        acc, test = acc + noise[:, 0], test + noise[:, 1]
    (lo, hi), (tlo, thi) = bounds.get("acc", (0.0, 100.0)), bounds.get("test_acc", (0.0, 100.0))
    params = np.maximum(1.0, np.rint(parent["params"] * np.exp(y[:, 2])))
    acc, test = np.minimum(np.maximum(acc, lo), hi), np.minimum(np.maximum(test, tlo), thi)   # np.clip, faster
    front = bounds.get("front")
    if front is not None:
        # the first front threshold at or above the child's PR (the last one beyond it)
        at = np.minimum(np.searchsorted(front["pr"], 1.0 - params / front["base_params"], side="left"),
                        len(front["pr"]) - 1)
        acc, test = np.minimum(acc, front["acc"][at]), np.minimum(test, front["test_acc"][at])
    return {"acc": acc, "test_acc": test, "params": params,
            "flops": np.maximum(1.0, np.rint(parent["flops"] * np.exp(y[:, 3]))),
            "cost": np.maximum(0.0, y[:, 4])}


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

    @classmethod
    def fit(cls, records: Sequence[dict], env, params: dict | None = None, acc_mode: str = ACC_MODE) -> SurrogateModel:
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
                "data_digest": digest, "noise_sd": noise_sd(records)}
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


def noise_sd(records: Sequence[dict]) -> dict[str, float] | None:
    """Standard deviation of val and test accuracy (%) between step seeds of the same schemes (repeats)."""
    by_scheme: dict[tuple, dict[int, dict]] = {}
    for r in records:
        by_scheme.setdefault(tuple(r["scheme"]), {})[r["replicate"]] = r
    groups = [g for g in by_scheme.values() if len(g) > 1]
    if not groups:
        return None
    out = {}
    for key in ("acc", "test_acc"):
        devs = [v[key] - np.mean([w[key] for w in g.values()]) for g in groups for v in g.values()]
        dof = sum(len(g) - 1 for g in groups)
        out[key] = float(math.sqrt(sum(d * d for d in devs) / dof))
    out["schemes"] = len(groups)
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
        self._cache: OrderedDict[tuple[int, ...], dict] = OrderedDict()

    def answer(self, scheme: tuple[int, ...], parent: dict) -> dict:
        hit = self._cache.get(scheme)
        if hit is not None:
            return dict(hit)
        if len(scheme) == 1:
            parent = self.base
        x = self.featurizer.vector(self.featurizer.state_vector(scheme[:-1], parent, self.base), scheme[-1])
        y = self.model.forest.predict(x)[None, :]
        noise = None
        if self.noise:
            sd = self.model.meta["noise_sd"]
            noise = (self.noise_draw(scheme) * (sd["acc"], sd["test_acc"]))[None, :]
        rows = {k: np.array([float(parent[k])]) for k in ("acc", "test_acc", "params", "flops")}
        d = decode(y, rows, self.model.acc_mode, noise, self.model.bounds)
        out = {"acc": float(d["acc"][0]), "test_acc": float(d["test_acc"][0]), "params": int(d["params"][0]),
               "flops": int(d["flops"][0]), "cost": float(d["cost"][0]), "compute_seconds": 0.0}
        self._cache[scheme] = out
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return dict(out)

    def noise_draw(self, scheme: tuple[int, ...]) -> np.ndarray:
        """Two standard normal draws (val, test) seeded by (seed, scheme): the same scheme, the same noise."""
        seed = int.from_bytes(hashlib.sha256(f"{self.env.seed_value}:{scheme}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(2)
