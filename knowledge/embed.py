"""Strategy embeddings: Algorithm 1 of the AutoMC paper (TransR on G, refined by NN_exp on E).

Each epoch, as Algorithm 1 alternates: one pass of TransR over the shuffled KG triples (batches of
``batch_size``, one step each), then one pass of NN_exp over the shuffled experience records, whose
gradients flow into the strategy embeddings (the refinement). One Adam optimiser (lr 1e-3) holds the
KG model, the relation parameters and NN_exp, as in the official code.

* **KG model** (pykeen 1.11.1): ``TransR`` with embedding_dim = relation_dim = ``dim`` (32), squared L2
  score ``−‖c(M_r h) + r − c(M_r t)‖²``, pykeen's norm constraints (‖e‖ ≤ 1, ‖r‖ ≤ 1, ‖M_r e‖ ≤ 1), and
  **W_r initialised to the identity** (pykeen accepts a custom ``relation_projection_initializer``).
  ``kg_model="transe"`` reproduces the official code: TransE, squared L2, N(0, 1) init, no norm
  constraint. Our own loop uses pykeen's model, ``MarginRankingLoss(margin=1)`` and two
  ``BasicNegativeSampler`` s (one head and one tail corruption per positive, uniform over all entities,
  re-drawn every step, filtered against the training triples with the exact ``pythonset`` filterer).
  pykeen's ``TrainingLoop`` is not used because its ``num_epochs`` is a total and it owns the optimiser;
  alternating with NN_exp needs our own epoch loop. pykeen's constraints are applied after every step.
  The ``transe`` switch changes the model only: negatives stay resampled and filtered (the code drew
  them once, unfiltered).
* **NN_exp**: ``dropout(e_s, 0.5) ⊕ task/means`` (dim + 7) → Linear(·, 8) → ReLU → Linear(8, 2) →
  ``(FR̂, AR̂)``; masked MSE: records with FR train both outputs, AR-only records train AR only (fixes
  the code, which never used the 22 AR-only records). The first output is the FLOPs reduction, as in
  the data (the paper says PR). Task features are divided by their mean over all 102 records.
* **Output**: row 0 = START token (a fixed random vector from the seed, scaled to the strategies' mean
  norm: it is untrained, as in the code), row i + 1 = the entity embedding e_s of grid strategy i
  (raw, not projected by any W_r). Experience-only strategy nodes are not in the output.
* **Ablations**: ``kg=False`` (AutoMC-KG) skips the TransR passes, so only experience strategies move and
  the rest keep their random init -- as in the code. Since only 2 paper-grid strategies (0 code-grid
  ones) appear in the experience records, this ablation's output rows are essentially the random init.
  ``exp=False`` (AutoMC-NN_exp) skips NN_exp (TransR only).
* **Determinism**: everything random (pykeen's init, shuffling, negatives, dropout) draws from torch's
  global RNG seeded with ``seed`` inside a forked RNG state; Python's and NumPy's global states are
  restored afterwards. Training runs on one intra-op thread (faster here, and independent of the
  caller's thread setting). Same seed and library versions → identical vectors.

Cost (measured on the shared 2-core CPU, one thread): the paper grid's 28,992 triples are 453 KG steps
per epoch, 1.7–15 s per epoch depending on the machine's load; the default 200-epoch build took
1,511 s once (25 min; 14.7 min of CPU time) and 655-703 s (6.3 min of CPU time) with one core free,
epochs=2 took 24.5 s including set-up. The code grid has about twice the triples, so about twice the
time. ``load_or_build`` pays this once per configuration, and never for the default one:

**Shipped embeddings.** The default build (``SHIPPED_CONFIG``: paper grid, 200 epochs, seed 0) ships in
``knowledge/shipped/`` as ``embeddings.npz`` (the arrays, loaded without pickle) and ``embeddings.json``
(config, fingerprint and what it digests, sha256 of the arrays), 0.6 MB; the AutoMC agent's two
embedding ablations (no KG, no NN_exp: agents of the data-backed boards) ship the same way in
``shipped/no_kg`` and ``shipped/no_exp`` (``SHIPPED_VARIANTS``), so validating those boards from a fresh
clone builds nothing. ``load_or_build`` returns
them when their fingerprint is this installation's; otherwise (other code, data or torch/pykeen
release) it says what differs on stderr and uses the cache or builds. The fingerprint digests only
the code that computes embeddings (this module without its storage and shipping definitions,
``_NOT_COMPUTATION``, plus the graph, experience and space modules), so that changing how embeddings
are stored or shipped does not orphan them; ``automc knowledge build --write-shipped`` re-ships.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from automc_env.fingerprint import _code_only, digest, source_digest
from automc_env.home import automc_home
from automc_env.space import get_space
from knowledge.experience import data_digest, experience_features, feature_means, load_experience, task_features
from knowledge.graph import KnowledgeGraph, build_graph

__all__ = ["KG_MODELS", "KnowledgeConfig", "NNExp", "StrategyEmbeddings", "TrainedKnowledge", "build_embeddings",
           "cache_dir", "fingerprint", "load_or_build", "task_features", "train_knowledge"]

KG_MODELS = ("transr", "transe")
MARGIN = 1.0
DROPOUT = 0.5
HIDDEN = 8
NUM_FEATURES = 7
FORMAT_VERSION = 1
SOURCES = ("knowledge/graph.py", "knowledge/experience.py", "automc_env/space.py")  # + this module's computation
# Top-level names of this module that only store, load, key or ship embeddings: left out of the code digest,
# so that changing how embeddings are cached or shipped does not orphan them (imports are left out too).
_NOT_COMPUTATION = frozenset({
    "__all__", "_NOT_COMPUTATION", "StrategyEmbeddings", "fingerprint", "_code_digest", "_library_versions",
    "_identity", "_describe", "cache_dir", "load_or_build", "SHIPPED_DIR", "SHIPPED_CONFIG", "read_shipped",
    "load_shipped", "write_shipped", "_file_sha256", "_say", "SHIPPED_VARIANTS", "shipped_dir", "shipped_descriptions"})


@dataclass
class KnowledgeConfig:
    """Settings of one embedding build (the cache key is derived from them)."""

    grid: str = "paper"
    dim: int = 32
    epochs: int = 200
    seed: int = 0
    kg: bool = True
    exp: bool = True
    kg_model: str = "transr"
    batch_size: int = 64
    lr: float = 1e-3

    def validated(self) -> KnowledgeConfig:
        """A copy with the canonical grid name; ValueError on bad input."""
        grid = get_space(self.grid).name  # ValueError for an unknown grid
        for name in ("dim", "epochs", "batch_size", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.dim < 1 or self.batch_size < 1:
            raise ValueError(f"dim and batch_size must be positive, got {self.dim}, {self.batch_size}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        kg_model = str(self.kg_model).lower()
        if kg_model not in KG_MODELS:
            raise ValueError(f"unknown kg_model {self.kg_model!r}; allowed: {', '.join(KG_MODELS)}")
        return replace(self, grid=grid, kg_model=kg_model, dim=int(self.dim), epochs=int(self.epochs),
                       batch_size=int(self.batch_size), seed=int(self.seed), kg=bool(self.kg),
                       exp=bool(self.exp), lr=float(self.lr))


def fingerprint(config: KnowledgeConfig) -> str:
    """Cache key: settings, knowledge data, the code that computes embeddings, library versions."""
    return digest(_identity(config))


def _identity(config: KnowledgeConfig) -> dict:
    """What the fingerprint digests (recorded with the shipped embeddings to say what differs)."""
    return {"config": asdict(config.validated()), "data": data_digest(), "code": _code_digest(),
            **_library_versions(), "format": FORMAT_VERSION}


def _library_versions() -> dict:
    """torch's release without its local build tag (``+cpu``, ``+cu128``: the accelerator build; the
    embeddings train on the CPU) and pykeen's, read from package metadata so that keying a cache
    entry never imports pykeen (seconds)."""
    from importlib.metadata import version

    return {"torch": torch.__version__.split("+")[0], "pykeen": version("pykeen")}


def _code_digest(source: str | None = None) -> str:
    """The code that computes embeddings: the graph, experience and strategy-space modules whole, and
    this module (or ``source`` in its place) without its imports and its storage/shipping definitions
    (``_NOT_COMPUTATION``), as code: docstrings and comments do not count either."""
    import ast

    tree = ast.parse(Path(__file__).read_text() if source is None else source)
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = {node.name}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
        else:
            names = set()
        if names and names <= _NOT_COMPUTATION:
            continue
        keep.append(node)
    tree.body = keep
    return digest({"sources": source_digest(SOURCES), "embed": _code_only(ast.unparse(tree))})


@dataclass
class StrategyEmbeddings:
    """The output of Algorithm 1: one vector per strategy plus the START token.

    ``vectors[0]`` is START, ``vectors[i + 1]`` strategy id i. ``feature_means`` normalises the 7 task
    features (divide by it). ``history`` holds per-epoch losses (only for the phases that ran).
    """

    config: KnowledgeConfig
    vectors: np.ndarray
    feature_means: np.ndarray
    history: dict
    fingerprint: str = ""
    source: str = ""  # where load_or_build found them: "shipped", "cached" or "built" (not saved)

    @property
    def start(self) -> np.ndarray:
        """The START token's vector (row 0)."""
        return self.vectors[0]

    @property
    def num_strategies(self) -> int:
        return len(self.vectors) - 1

    def for_strategy(self, ids) -> np.ndarray:
        """Vectors of strategy ids (an int → (dim,), an array of ids → (..., dim))."""
        a = np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise ValueError(f"strategy ids must be integers, got {ids!r}")
        if a.size and (a.min() < 0 or a.max() >= self.num_strategies):
            raise IndexError(f"strategy id out of range 0..{self.num_strategies - 1}: {ids!r}")
        return self.vectors[a + 1]

    def normalise(self, features: np.ndarray) -> np.ndarray:
        """Task features divided by the experience means (the NN_exp / F_mo input)."""
        return (np.asarray(features, dtype=np.float64) / self.feature_means).astype(np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/embeddings.npz`` (arrays) and ``path/embeddings.json`` (config, history); no pickle."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "embeddings.npz", vectors=self.vectors, feature_means=self.feature_means)
        meta = {"format": FORMAT_VERSION, "config": asdict(self.config), "fingerprint": self.fingerprint,
                "shape": list(self.vectors.shape), "history": self.history}
        (path / "embeddings.json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> StrategyEmbeddings:
        path = Path(path)
        meta = json.loads((path / "embeddings.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported embeddings format {meta.get('format')!r}")
        with np.load(path / "embeddings.npz", allow_pickle=False) as z:
            vectors, means = z["vectors"], z["feature_means"]
        if list(vectors.shape) != meta["shape"]:
            raise ValueError(f"{path}: vectors shape {vectors.shape} does not match {meta['shape']}")
        known = {f.name for f in fields(KnowledgeConfig)}
        config = KnowledgeConfig(**{k: v for k, v in meta["config"].items() if k in known})
        return cls(config=config, vectors=vectors, feature_means=means, history=meta["history"],
                   fingerprint=meta.get("fingerprint", ""))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

class NNExp(nn.Module):
    """NN_exp: (strategy embedding, normalised task features) → (FR̂, AR̂)."""

    def __init__(self, dim: int, hidden: int = HIDDEN, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.net = nn.Sequential(nn.Linear(dim + NUM_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, e_s: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.dropout(e_s), task], dim=-1))


@contextmanager
def _seeded(seed: int):
    """Seed torch (forked, so the caller's RNG is untouched), run on one thread, restore global state.

    One intra-op thread: the steps are tiny (64 triples), and on a shared 2-core machine a second
    thread made each step ~10x slower through contention (measured 0.56 s vs 0.04 s per step).
    """
    py_state, np_state, threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)


def _identity_projection(x: torch.Tensor) -> torch.Tensor:
    """Initialise every TransR projection W_r (shape (d, k)) to the identity."""
    return torch.eye(x.shape[-2], x.shape[-1], dtype=x.dtype).expand_as(x).clone()


def _make_model(config: KnowledgeConfig, graph: KnowledgeGraph):
    import logging

    from pykeen.losses import MarginRankingLoss
    from pykeen.models import TransE, TransR

    logging.getLogger("pykeen").setLevel(logging.ERROR)  # pykeen logs a warning per model about devices
    tf = graph.triples_factory()
    loss = MarginRankingLoss(margin=MARGIN)
    if config.kg_model == "transr":
        model = TransR(triples_factory=tf, embedding_dim=config.dim, relation_dim=config.dim, scoring_fct_norm=2,
                       power_norm=True, relation_projection_initializer=_identity_projection, loss=loss,
                       random_seed=config.seed)
    else:
        model = TransE(triples_factory=tf, embedding_dim=config.dim, scoring_fct_norm=2, power_norm=True,
                       entity_initializer="normal", entity_constrainer=None, relation_initializer="normal",
                       loss=loss, random_seed=config.seed)
    # pykeen clamps the init once, which can leave norms at 1 + 1 ulp; iterate to the fixed point so that
    # later constraint passes leave rows without gradient bit-identical (the no-KG ablation relies on it).
    params = list(model.parameters())
    for _ in range(10):
        before = [p.detach().clone() for p in params]
        model.post_parameter_update()
        if all(torch.equal(a, p) for a, p in zip(before, params)):
            break
    return model


@dataclass(eq=False)
class TrainedKnowledge:
    """Everything Algorithm 1 trained: the KG model, NN_exp and the graph (used by the report)."""

    config: KnowledgeConfig
    graph: KnowledgeGraph
    model: object
    nn_exp: NNExp
    history: dict
    feature_means: np.ndarray
    train_triples: np.ndarray
    train_records: np.ndarray
    seconds: float = 0.0
    fingerprint: str = ""
    start_vector: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def entity_vectors(self) -> np.ndarray:
        with torch.no_grad():
            return self.model.entity_representations[0](indices=None).detach().cpu().numpy().astype(np.float32)

    def predict(self, record_index: Sequence[int]) -> np.ndarray:
        """NN_exp's (FR̂, AR̂) for experience records (indices into the 102), no dropout."""
        idx = np.asarray(record_index, dtype=np.int64)
        x = torch.as_tensor(experience_features()[idx] / self.feature_means, dtype=torch.float32)
        ent = torch.as_tensor(self.graph.record_entities[idx])
        self.nn_exp.eval()
        with torch.no_grad():
            e = self.model.entity_representations[0](indices=ent)
            return self.nn_exp(e, x).numpy()

    def strategy_embeddings(self) -> StrategyEmbeddings:
        vectors = np.concatenate([self.start_vector[None, :],
                                  self.entity_vectors()[:self.graph.num_strategies]]).astype(np.float32)
        return StrategyEmbeddings(config=self.config, vectors=vectors,
                                  feature_means=self.feature_means.astype(np.float64),
                                  history=self.history, fingerprint=self.fingerprint)


def _batches(n: int, batch_size: int) -> list[torch.Tensor]:
    return list(torch.randperm(n).split(batch_size)) if n else []


def train_knowledge(config: KnowledgeConfig, *, graph: KnowledgeGraph | None = None,
                    train_triples: np.ndarray | None = None, train_records: Sequence[int] | None = None,
                    progress: bool = False) -> TrainedKnowledge:
    """Run Algorithm 1. ``train_triples`` (mapped ids) and ``train_records`` (indices into the 102
    records) restrict the training data, for held-out evaluation; default: all of them."""
    from pykeen.sampling import BasicNegativeSampler
    from tqdm.auto import tqdm

    config = config.validated()
    graph = graph or build_graph(config.grid)
    triples = graph.mapped_triples() if train_triples is None else np.asarray(train_triples, dtype=np.int64)
    records_all = load_experience()
    rec = np.arange(len(records_all)) if train_records is None else np.asarray(train_records, dtype=np.int64)
    means = feature_means()
    start_time = time.perf_counter()
    with _seeded(config.seed):
        model = _make_model(config, graph)
        nn_exp = NNExp(config.dim)
        optimizer = torch.optim.Adam(list(model.parameters()) + list(nn_exp.parameters()), lr=config.lr)
        mapped = torch.as_tensor(triples)
        samplers = [BasicNegativeSampler(mapped_triples=mapped, num_entities=len(graph.entities),
                                         num_relations=len(graph.relations), num_negs_per_pos=1,
                                         corruption_scheme=(side,), filtered=True, filterer="pythonset")
                    for side in ("head", "tail")]
        ent = torch.as_tensor(graph.record_entities[rec])
        x_task = torch.as_tensor(experience_features()[rec] / means, dtype=torch.float32)
        fr = [records_all[i].fr for i in rec]
        y = torch.tensor([[0.0 if f is None else f, records_all[i].ar] for f, i in zip(fr, rec)],
                         dtype=torch.float32).reshape(-1, 2)
        y_mask = torch.tensor([[f is not None, True] for f in fr], dtype=torch.float32).reshape(-1, 2)
        embedding = model.entity_representations[0]
        history: dict[str, list[float]] = {"seconds": []}
        if config.kg:
            history["kg_loss"] = []
        if config.exp:
            history.update(exp_loss=[], exp_fr_mse=[], exp_ar_mse=[])

        def step(loss: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.post_parameter_update()  # pykeen's norm constraints

        bar = tqdm(range(config.epochs), desc=f"knowledge {config.grid}/{config.kg_model}", unit="epoch",
                   disable=None if progress else True, file=sys.stderr, dynamic_ncols=True)
        for _ in bar:
            t0 = time.perf_counter()
            post = {}
            if config.kg:  # one TransR/TransE pass over G
                model.train()
                total, count = 0.0, 0
                for idx in _batches(len(mapped), config.batch_size):
                    pos = mapped[idx]
                    negs, masks = zip(*(s.sample(pos) for s in samplers))
                    neg = torch.cat(negs, dim=1)  # (B, 2, 3): one head, one tail corruption
                    mask = None if masks[0] is None else torch.cat(masks, dim=1)
                    pos_scores = model.score_hrt(pos)
                    neg_scores = model.score_hrt((neg if mask is None else neg[mask]).view(-1, 3)).view(-1)
                    loss = model.loss.process_slcwa_scores(positive_scores=pos_scores, negative_scores=neg_scores,
                                                           batch_filter=mask)
                    step(loss)
                    total += loss.item() * len(idx)
                    count += len(idx)
                history["kg_loss"].append(total / max(count, 1))
                post["kg"] = f"{history['kg_loss'][-1]:.4f}"
            if config.exp and len(rec):  # NN_exp pass over E, refining the strategy embeddings
                nn_exp.train()
                sq = torch.zeros(2)
                cnt = torch.zeros(2)
                for idx in _batches(len(rec), config.batch_size):
                    pred = nn_exp(embedding(indices=ent[idx]), x_task[idx])
                    err = (pred - y[idx]) ** 2 * y_mask[idx]
                    loss = err.sum() / y_mask[idx].sum()
                    step(loss)
                    sq += err.detach().sum(0)
                    cnt += y_mask[idx].sum(0)
                mse = (sq / cnt.clamp_min(1)).tolist()
                history["exp_loss"].append(float(sq.sum() / cnt.sum()))
                history["exp_fr_mse"].append(mse[0])
                history["exp_ar_mse"].append(mse[1])
                post["exp"] = f"{history['exp_loss'][-1]:.5f}"
            history["seconds"].append(time.perf_counter() - t0)
            if post:
                bar.set_postfix(post)
        bar.close()
        model.eval()
        nn_exp.eval()
        with torch.no_grad():
            vec = embedding(indices=None)[:graph.num_strategies]
            scale = float(vec.norm(dim=-1).mean()) if len(vec) else 1.0
        start = np.random.default_rng([config.seed, 1]).standard_normal(config.dim)
        start = (start / np.linalg.norm(start) * scale).astype(np.float32)
    return TrainedKnowledge(config=config, graph=graph, model=model, nn_exp=nn_exp, history=history,
                            feature_means=means, train_triples=triples, train_records=rec,
                            seconds=time.perf_counter() - start_time, start_vector=start)


def build_embeddings(config: KnowledgeConfig, progress: bool = True) -> StrategyEmbeddings:
    """Run Algorithm 1 on the whole graph and all experience records; no caching."""
    config = config.validated()
    fp = fingerprint(config)
    trained = train_knowledge(config, progress=progress)
    trained.fingerprint = fp
    return trained.strategy_embeddings()


def cache_dir(config: KnowledgeConfig) -> Path:
    """Where ``load_or_build`` keeps the embeddings of ``config``."""
    return automc_home() / "knowledge" / fingerprint(config)[:16]


def load_or_build(config: KnowledgeConfig, progress: bool = True, shipped: bool = True) -> StrategyEmbeddings:
    """The embeddings of ``config``: the package's shipped ones when they were made for exactly this
    configuration, code and library versions (same fingerprint), else the ones cached under
    ``AUTOMC_HOME/knowledge/<fingerprint>``, else built now and cached. ``shipped=False`` skips the
    package's file (``--write-shipped`` must not copy the file it replaces)."""
    config = config.validated()
    fp = fingerprint(config)
    if shipped:
        emb = load_shipped(config, fp)
        if emb is not None:
            return emb
    path = automc_home() / "knowledge" / fp[:16]
    if (path / "embeddings.json").exists():
        try:
            emb = StrategyEmbeddings.load(path)
        except (OSError, ValueError, KeyError) as e:  # damaged cache entry: rebuild it
            _say(f"ignoring unreadable cached embeddings at {path}: {e}")
        else:
            if emb.fingerprint == fp:
                emb.source = "cached"
                return emb
    if progress:
        why = "" if shipped_dir(config) else f"; the package ships {shipped_descriptions()} only"
        _say(f"building strategy embeddings ({_describe(config)}) -> {path}{why}")
    emb = build_embeddings(config, progress=progress)
    emb.fingerprint = fp  # the key the cache directory was chosen by
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    emb.save(tmp)
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    emb.source = "built"
    return emb


# --------------------------------------------------------------------------------------------------
# The shipped embeddings: Algorithm 1's default build, in the package so a first search starts at once
# --------------------------------------------------------------------------------------------------

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_CONFIG = KnowledgeConfig()  # paper grid, TransR + NN_exp, 200 epochs (the paper's), seed 0
# What ships, and where under SHIPPED_DIR: the default, and the AutoMC agent's two embedding ablations
# (``automc-no_kg``, ``automc-no_exp``: agents of the data-backed boards, whose validation re-runs them)
SHIPPED_VARIANTS = {"": SHIPPED_CONFIG, "no_kg": replace(SHIPPED_CONFIG, kg=False),
                    "no_exp": replace(SHIPPED_CONFIG, exp=False)}


def shipped_dir(config: KnowledgeConfig) -> Path | None:
    """The package folder that ships ``config``'s embeddings, None when the package ships none for it."""
    config = config.validated()
    for sub, shipped in SHIPPED_VARIANTS.items():
        if asdict(shipped.validated()) == asdict(config):
            return SHIPPED_DIR / sub if sub else SHIPPED_DIR
    return None


def _describe(config: KnowledgeConfig) -> str:
    c = config
    variant = c.kg_model + ("" if c.kg else ", no KG") + ("" if c.exp else ", no NN_exp")
    return f"{c.grid} grid, {variant}, {c.epochs} epochs, seed {c.seed}"


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_shipped(config: KnowledgeConfig = SHIPPED_CONFIG) -> dict | None:
    """The shipped manifest of ``config`` (``embeddings.json``: config, fingerprint and what it digests,
    sha256 of the arrays, build time), None if the package ships none for it."""
    folder = shipped_dir(config)
    try:
        return json.loads((folder / "embeddings.json").read_text()) if folder else None
    except (OSError, ValueError):
        return None


def load_shipped(config: KnowledgeConfig, fp: str | None = None) -> StrategyEmbeddings | None:
    """The shipped embeddings if they were made for ``config`` with this code, data and library
    versions (fingerprint ``fp``); otherwise None, saying on stderr why when the settings are the
    shipped ones but the fingerprint is not (the caller then uses the cache or builds)."""
    config = config.validated()
    manifest, folder = read_shipped(config), shipped_dir(config)
    if manifest is None or manifest.get("config") != asdict(config):
        return None
    fp = fp or fingerprint(config)
    if manifest.get("fingerprint") != fp:
        mine, theirs = _identity(config), manifest.get("identity", {})
        differ = [k for k in mine if mine[k] != theirs.get(k)]
        what = ", ".join(f"made with {k} {theirs.get(k)} (here {mine[k]})" if k in ("torch", "pykeen", "format")
                         else f"other {k}" for k in differ) or "unknown differences"
        _say(f"the shipped strategy embeddings ({_describe(config)}) do not fit this installation: {what} "
             f"(fingerprint {str(manifest.get('fingerprint'))[:16]}, here {fp[:16]}); using the cache under "
             f"AUTOMC_HOME/knowledge or building them (10-25 min on a 2-core CPU)")
        return None
    try:
        if _file_sha256(folder / "embeddings.npz") != manifest.get("sha256"):
            raise ValueError("embeddings.npz does not match the sha256 in embeddings.json")
        emb = StrategyEmbeddings.load(folder)
    except (OSError, ValueError, KeyError) as e:  # a damaged installation: fall back, loudly
        _say(f"ignoring the shipped strategy embeddings at {folder}: {e}")
        return None
    emb.source = "shipped"
    return emb


def write_shipped(emb: StrategyEmbeddings, seconds: float | None = None) -> Path:
    """Maintainers only: make ``emb`` (one of ``SHIPPED_VARIANTS``, built by this code) the package's
    shipped embeddings of its configuration; ``seconds`` (the build time) is recorded for the record."""
    config = emb.config.validated()
    folder = shipped_dir(config)
    if folder is None:
        raise ValueError(f"only these embeddings ship: {shipped_descriptions()}; got {_describe(config)}")
    fp = fingerprint(config)
    if emb.fingerprint != fp:
        raise ValueError(f"these embeddings have fingerprint {emb.fingerprint[:16]}, this code {fp[:16]}: "
                         "they were built by other code or library versions")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".embeddings.{os.getpid()}.npz"
    np.savez(tmp, vectors=emb.vectors.astype(np.float32), feature_means=emb.feature_means)
    manifest = {"format": FORMAT_VERSION, "config": asdict(config), "fingerprint": fp, "identity": _identity(config),
                "shape": list(emb.vectors.shape), "sha256": _file_sha256(tmp),
                "build_seconds": None if seconds is None else round(float(seconds), 1),
                "history": emb.history}
    os.replace(tmp, folder / "embeddings.npz")
    (folder / "embeddings.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


def shipped_descriptions() -> str:
    return "; ".join(_describe(c.validated()) for c in SHIPPED_VARIANTS.values())
