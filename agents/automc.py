"""The AutoMC agent: progressive search over compression schemes guided by F_mo (Algorithm 2).

Each round samples up to ``candidates`` (scheme, next strategy) pairs from the evaluated schemes
(mostly from the Pareto archive over ``pareto_score``, some from the length-averaged archive, the
rest uniformly), scores them with the multi-objective predictor F_mo (a 2-layer LSTM over the
frozen Algorithm-1 strategy embeddings of ``[START, s1..st]`` plus the next strategy's embedding and
the normalised task vector → ``(PR̂_step, AR̂_step)``), evaluates exactly ``optimal_num`` of them
(the predicted Pareto set, with a random exploration pick half of the time), fits F_mo to the true
step rates and updates the archives. The result is every evaluated scheme (``SearchResult.pareto``
is the final archive: non-dominated schemes with PR ≥ γ). See ``docs/paper/search.md`` §2-§3.

Deviations from the paper / official code (all deliberate):

* **Fixed bugs** (search.md §8): F_mo's LSTM features are packed with ``enforce_sorted=False``, so
  every row pairs a candidate's own prefix with its own next strategy (the code misaligned them);
  START's accuracy is in percent like every other node; failed steps are not trained on.
* **Budget**: the search stops when the :class:`~agents.base.Budget` is exhausted (executions /
  compute / wall seconds), not after 120 h; a round may stop half-way.
* **Chaining rules**: our HOS and LFB are not terminal and LFB is not first-only (compressors docs),
  so the code's "HOS/LFB make a leaf" and "no LFB after the first step" rules are dropped. Kept:
  ``PR_child + removal(s') ≤ pr_budget``, ``ft_child + ft(s') ≤ ft_budget`` and "HOS only if it
  reaches γ" (``PR_child + removal(s') ≥ γ``), intersected with the environment's action mask
  (length ≤ L, pr_cap, availability). The code's leaf test ``ft + 0.2 > 4`` is subsumed: a node is
  a leaf exactly when no next strategy passes these rules. START's options are the env mask
  (the code: all strategies unfiltered).
* **Units**: the selection score uses the remaining-parameter fraction ``P/P_base`` instead of
  parameters in millions (Pareto dominance is unchanged by the positive scale).
* **Failures**: a step whose compression raises is dropped (its pair is removed from the parent's
  options, nothing is trained); the evaluator charges it like every agent's failed step (one
  execution and the work done until it failed) and records it as a failed evaluation.
* **Ablations** (§7): ``no_kg``/``no_exp`` only change the embeddings' KnowledgeConfig;
  ``legr_only`` restricts every option set to LeGR strategies but keeps the full-grid embeddings
  (the code trained a separate LeGR-only KG); ``non_progressive`` is the paper's
  "AutoMC-Progressive Search" ablation -- see :class:`_RLController`: an LSTMCell(dim → 100)
  REINFORCE controller whose token inputs are the frozen embeddings (START's vector first),
  decoder Linear(100 → N + 1) (N strategies + END), logits/5 → 2.5·tanh, whole schemes evaluated
  through the evaluator (prefix reuse), reward ``0.1·acc% + PR`` if PR ≥ γ else ``0.08·acc% + PR``,
  EMA baseline 0.95, advantage scaled by ``0.5 / max |last 10 advantages|``, Adam 3.5e-4. Fixes /
  changes versus the code: invalid steps are masked out of the softmax instead of scoring 0
  (the same rules as above on the *planned* removal, length ≤ L), END is masked until the planned
  removal reaches γ (while any strategy is still valid), and the loss sums only the decisions
  actually taken (the code also counted decisions after END).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from agents.base import Budget, BudgetExhausted, Evaluator, SchemeFailed, SearchResult

__all__ = ["AutoMCAgent", "Archive", "FMo", "VARIANTS", "allowed_next"]

VARIANTS = ("full", "no_kg", "no_exp", "legr_only", "non_progressive")
TOP_FRACTION = 0.2      # share of an archive sampled with probability 1/2 (search.md §2.3 step 1)
ATTEMPTS = 1000         # draws per candidate source
RL_MAX_STALE = 1000     # non_progressive stops after this many samples in a row that cost no execution
NUM_TASK_FEATURES = 7


# --------------------------------------------------------------------------------------------------
# F_mo
# --------------------------------------------------------------------------------------------------

class FMo(nn.Module):
    """F_mo (search.md §3): predicts (PR_step, AR_step) of applying a next strategy after a prefix.

    ``embeddings`` (N + 1, dim) are frozen (row 0 = START, row i + 1 = strategy i).
    """

    def __init__(self, embeddings: torch.Tensor, task: torch.Tensor, hidden: int = 32, head: int = 32):
        super().__init__()
        dim = embeddings.shape[1]
        self.register_buffer("embeddings", embeddings.detach().float().clone())
        self.register_buffer("task", task.detach().float().reshape(-1).clone())
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(dim + self.task.numel() + 2 * hidden, head), nn.ReLU(),
                                  nn.Linear(head, 2))

    def forward(self, prefixes: Sequence[Sequence[int]], nexts: Sequence[int]) -> torch.Tensor:
        """(B, 2) predictions; ``prefixes[i]`` are strategy ids (START is prepended), ``nexts[i]`` an id."""
        if len(prefixes) != len(nexts) or not len(prefixes):
            raise ValueError(f"need as many prefixes as next strategies (and at least one), "
                             f"got {len(prefixes)} and {len(nexts)}")
        lengths = [len(p) + 1 for p in prefixes]
        ids = torch.zeros(len(prefixes), max(lengths), dtype=torch.long)  # padding rows are ignored by packing
        for i, p in enumerate(prefixes):
            if len(p):
                ids[i, 1:len(p) + 1] = torch.as_tensor([int(a) + 1 for a in p])
        packed = pack_padded_sequence(self.embeddings[ids], torch.tensor(lengths), batch_first=True,
                                      enforce_sorted=False)  # the alignment fix: h comes back unsorted
        _, (h, _) = self.lstm(packed)                       # (2 layers, B, hidden), original order
        seq = h.permute(1, 0, 2).reshape(len(prefixes), -1)  # both layers' final hidden states
        nxt = self.embeddings[torch.as_tensor([int(s) + 1 for s in nexts], dtype=torch.long)]
        task = self.task.expand(len(prefixes), -1)
        return self.head(torch.cat([nxt, task, seq], dim=1))


# --------------------------------------------------------------------------------------------------
# Archives and history nodes
# --------------------------------------------------------------------------------------------------

class Archive:
    """Non-dominated set under "maximise every component" with weak dominance: a newcomer that an
    entry weakly dominates (≥ everywhere, ties included) is rejected, so on ties the old entry stays."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.scores: list[tuple[float, ...]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def insert(self, key: int, score: Sequence[float]) -> bool:
        score = tuple(float(x) for x in score)
        if any(all(o >= s for o, s in zip(old, score)) for old in self.scores):
            return False
        keep = [i for i, old in enumerate(self.scores) if not all(s >= o for s, o in zip(score, old))]
        self.keys = [self.keys[i] for i in keep] + [key]
        self.scores = [self.scores[i] for i in keep] + [score]
        return True

    def sorted_keys(self) -> list[int]:
        """Keys by first score, descending (stable: insertion order on ties)."""
        order = sorted(range(len(self.keys)), key=lambda i: -self.scores[i][0])
        return [self.keys[i] for i in order]


@dataclass
class _Node:
    """One evaluated scheme (a history node, search.md §2.2); index 0 is START."""

    scheme: tuple[int, ...]
    acc: float            # top-1 %, START included (bug fix: the code stored START as a fraction)
    params: int
    pr: float             # total PR vs the original model
    ft: float             # Σ fine-tune multipliers
    options: np.ndarray = field(repr=False)  # valid unexpanded next strategy ids (sorted)

    @property
    def valid(self) -> bool:
        return len(self.options) > 0

    def pareto_score(self, gamma: float) -> tuple[float, float]:
        ell = max(gamma - self.pr, 0.0) + 1.0
        return self.acc / ell, self.pr / ell

    def expand(self, s: int) -> None:
        self.options = self.options[self.options != s]


def allowed_next(mask: np.ndarray, pr: float, ft: float, removal: np.ndarray, ft_mult: np.ndarray,
                 is_hos: np.ndarray, gamma: float, pr_budget: float, ft_budget: float) -> np.ndarray:
    """Ids of the next strategies a node with PR ``pr`` and fine-tune budget ``ft`` may try.

    The env mask intersected with the paper's per-scheme rules (search.md §2.3 step 5): planned PR
    within ``pr_budget``, fine-tune budget within ``ft_budget``, HOS only if it reaches γ.
    """
    eps = 1e-9
    ok = (mask & (pr + removal <= pr_budget + eps) & (ft + ft_mult <= ft_budget + eps)
          & (~is_hos | (pr + removal >= gamma - eps)))
    return np.flatnonzero(ok)


# --------------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------------

_DEFAULTS: dict[str, Any] = dict(candidates=256, optimal_num=10, avg_ratio=0.3, lr=1e-3, replay_batches=5,
                                 replay_size=256, pr_budget=0.85, ft_budget=4.0, variant="full",
                                 rl_lr=3.5e-4, rl_hidden=100, rl_baseline_decay=0.95)


class AutoMCAgent:
    """AutoMC's progressive search (Algorithm 2 with F_mo); see the module docstring.

    Options (defaults = the official config): ``candidates`` (256) pairs scored per round;
    ``optimal_num`` (10) pairs evaluated per round; ``avg_ratio`` (0.3) share of candidates from the
    length-averaged archive; ``lr`` (1e-3) F_mo's Adam rate; ``replay_batches`` (5) extra replay steps
    per round on minibatches of ≤ ``replay_size`` (256) earlier records; ``pr_budget`` (0.85) and
    ``ft_budget`` (4.0) per-scheme limits; ``variant`` one of :data:`VARIANTS`; ``embeddings``: an
    injected StrategyEmbeddings-like object (``.vectors``, ``.feature_means``) or an (N + 1, dim) array
    (then the experience feature means normalise the task vector); ``knowledge``: a dict of
    ``KnowledgeConfig`` overrides used when embeddings are built/loaded (``grid`` follows the env);
    ``rl_lr`` (3.5e-4), ``rl_hidden`` (100), ``rl_baseline_decay`` (0.95): the non_progressive controller.
    Injected embeddings are used as given: ``no_kg``/``no_exp`` then change nothing (inject the
    ablation's own embeddings instead).
    """

    name = "automc"

    def __init__(self, embeddings: Any = None, knowledge: dict | None = None, **options: Any):
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown AutoMCAgent options {sorted(unknown)}; allowed: "
                             f"{sorted(_DEFAULTS) + ['embeddings', 'knowledge']}")
        o = {**_DEFAULTS, **options}
        for key in ("candidates", "optimal_num", "replay_size", "rl_hidden"):
            if isinstance(o[key], bool) or not isinstance(o[key], (int, np.integer)) or o[key] < 1:
                raise ValueError(f"{key} must be a positive integer, got {o[key]!r}")
        if isinstance(o["replay_batches"], bool) or not isinstance(o["replay_batches"], (int, np.integer)) \
                or o["replay_batches"] < 0:
            raise ValueError(f"replay_batches must be a non-negative integer, got {o['replay_batches']!r}")
        if o["optimal_num"] > o["candidates"]:
            raise ValueError(f"optimal_num ({o['optimal_num']}) cannot exceed candidates ({o['candidates']})")
        if not (isinstance(o["avg_ratio"], (int, float)) and 0.0 <= o["avg_ratio"] <= 1.0):
            raise ValueError(f"avg_ratio must be in [0, 1], got {o['avg_ratio']!r}")
        for key in ("lr", "rl_lr", "ft_budget"):
            if not (isinstance(o[key], (int, float)) and o[key] > 0):
                raise ValueError(f"{key} must be a positive number, got {o[key]!r}")
        if not (isinstance(o["pr_budget"], (int, float)) and 0.0 < o["pr_budget"] <= 1.0):
            raise ValueError(f"pr_budget must be in (0, 1], got {o['pr_budget']!r}")
        if not (isinstance(o["rl_baseline_decay"], (int, float)) and 0.0 <= o["rl_baseline_decay"] < 1.0):
            raise ValueError(f"rl_baseline_decay must be in [0, 1), got {o['rl_baseline_decay']!r}")
        if o["variant"] not in VARIANTS:
            raise ValueError(f"unknown variant {o['variant']!r}; choose one of {', '.join(VARIANTS)}")
        self.knowledge = dict(knowledge or {})
        if self.knowledge:
            from knowledge.embed import KnowledgeConfig  # light import: pykeen loads only when building
            allowed = {f.name for f in fields(KnowledgeConfig)}
            bad = set(self.knowledge) - allowed
            if bad:
                raise ValueError(f"unknown knowledge options {sorted(bad)}; KnowledgeConfig fields: {sorted(allowed)}")
        if embeddings is not None and not hasattr(embeddings, "vectors"):
            arr = np.asarray(embeddings)
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise ValueError(f"embeddings must be a StrategyEmbeddings or an (N + 1, dim) float array, "
                                 f"got shape {arr.shape} dtype {arr.dtype}")
        self.embeddings = embeddings
        self.options = o

    # ---- setup ---------------------------------------------------------------------------------

    def _embeddings(self, env) -> tuple[np.ndarray, np.ndarray, str]:
        """(vectors (N + 1, dim), feature means (7,), description) for this env's grid and variant."""
        n = len(env.space)
        if self.embeddings is not None:
            if hasattr(self.embeddings, "vectors"):
                vectors, means = np.asarray(self.embeddings.vectors), np.asarray(self.embeddings.feature_means)
            else:
                from knowledge.experience import feature_means
                vectors, means = np.asarray(self.embeddings), feature_means()
            source = "injected"
        else:
            from knowledge.embed import KnowledgeConfig, load_or_build
            cfg = {**self.knowledge, "grid": env.space.name}
            if self.options["variant"] == "no_kg":
                cfg["kg"] = False
            elif self.options["variant"] == "no_exp":
                cfg["exp"] = False
            config = KnowledgeConfig(**cfg)
            emb = load_or_build(config)
            vectors, means = emb.vectors, emb.feature_means
            source = f"knowledge {config.validated()}"
        if vectors.ndim != 2 or vectors.shape[0] != n + 1:
            raise ValueError(f"embeddings have shape {vectors.shape}; the {env.space.name} grid needs "
                             f"({n + 1}, dim): row 0 = START, row i + 1 = strategy i")
        if means.shape != (NUM_TASK_FEATURES,):
            raise ValueError(f"feature_means must have shape ({NUM_TASK_FEATURES},), got {means.shape}")
        return vectors.astype(np.float32), means.astype(np.float64), source

    # ---- search --------------------------------------------------------------------------------

    def search(self, env, budget: Budget, seed: int, result: SearchResult | None = None) -> SearchResult:
        evaluator = Evaluator(env, budget, agent=self.name, seed=seed, result=result)
        env = evaluator.env
        from knowledge.experience import task_features
        vectors, means, source = self._embeddings(env)
        task = (task_features(env.task, env.base) / means).astype(np.float32)
        run = _Run(self.options, evaluator, vectors, task, seed)
        try:
            if self.options["variant"] == "non_progressive":
                run.rl_search()
            else:
                run.progressive_search()
        except BudgetExhausted:
            pass
        res = evaluator.result
        res.meta["agent_options"] = {**self.options, "embeddings": source, "knowledge": self.knowledge}
        res.meta["agent_stats"] = run.stats
        return res


class _Run:
    """State of one seeded search (kept off the agent so an agent object can run many searches)."""

    def __init__(self, options: dict, evaluator: Evaluator, vectors: np.ndarray, task: np.ndarray, seed: int):
        self.o = options
        self.ev = evaluator
        self.env = evaluator.env
        self.gamma = float(self.env.task.gamma)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.vectors = vectors
        self.task = task
        space = self.env.space
        n = len(space)
        self.removal = np.array([space[i].removal(self.gamma) for i in range(n)])
        self.ft_mult = np.array([space[i].finetune_multiplier() for i in range(n)])
        self.is_hos = np.zeros(n, dtype=bool)
        self.is_hos[space.method_range("HOS").start:space.method_range("HOS").stop] = True
        self.allowed = np.ones(n, dtype=bool)
        if options["variant"] == "legr_only":
            self.allowed[:] = False
            r = space.method_range("LeGR")
            self.allowed[r.start:r.stop] = True
        self.stats: dict[str, Any] = {"rounds": 0, "failed_steps": 0, "trained_records": 0, "exhausted_space": False}

    # ---- Algorithm 2 ---------------------------------------------------------------------------

    def _options(self, scheme: tuple[int, ...], pr: float, ft: float) -> np.ndarray:
        mask = self.ev.valid_actions(list(scheme)) & self.allowed
        return allowed_next(mask, pr, ft, self.removal, self.ft_mult, self.is_hos, self.gamma,
                            self.o["pr_budget"], self.o["ft_budget"])

    def progressive_search(self) -> None:
        base = self.env.base
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            fmo = FMo(torch.from_numpy(self.vectors), torch.from_numpy(self.task))
        opt = torch.optim.Adam(fmo.parameters(), lr=self.o["lr"])
        start_options = self.ev.valid_actions([]) & self.allowed
        nodes = [_Node((), float(base["acc"]), int(base["params"]), 0.0, 0.0, np.flatnonzero(start_options))]
        hist, avg = Archive(), Archive()
        self._insert(hist, avg, nodes, 0)
        replay: list[tuple[tuple[int, ...], int, float, float]] = []
        k = self.o["optimal_num"]
        while True:
            cands = self._candidates(nodes, hist, avg)
            if not cands:
                self.stats["exhausted_space"] = True
                return
            with torch.no_grad():
                pred = fmo([nodes[i].scheme for i, _ in cands], [s for _, s in cands]).numpy().astype(np.float64)
            chosen = self._select(nodes, cands, pred, k)
            self.stats["rounds"] += 1
            new: list[tuple[tuple[int, ...], int, float, float]] = []
            self.ev.prefetch([list(nodes[cands[c][0]].scheme) + [cands[c][1]] for c in chosen])
            for c in chosen:
                i, s = cands[c]
                parent = nodes[i]
                parent.expand(s)
                try:
                    e = self.ev.evaluate(list(parent.scheme) + [s])  # BudgetExhausted ends the search
                except SchemeFailed:   # the compression itself failed: drop the pair, train nothing
                    self.stats["failed_steps"] += 1
                    continue
                ft = parent.ft + float(self.ft_mult[s])
                child = _Node(tuple(e.scheme), float(e.acc), int(e.params), float(e.PR), ft,
                              self._options(tuple(e.scheme), float(e.PR), ft))
                nodes.append(child)
                self._insert(hist, avg, nodes, len(nodes) - 1)
                pr_step = 1.0 - child.params / parent.params
                if parent.acc > 0 and math.isfinite(e.acc):   # AR_step undefined otherwise: not trained
                    new.append((parent.scheme, s, pr_step, (child.acc - parent.acc) / parent.acc))
            self._train(fmo, opt, new, replay)
            replay.extend(new)
            self.stats["trained_records"] = len(replay)

    def _insert(self, hist: Archive, avg: Archive, nodes: list[_Node], i: int) -> None:
        score = nodes[i].pareto_score(self.gamma)
        hist.insert(i, score)
        length = len(nodes[i].scheme) + 1  # incl. START
        avg.insert(i, (score[0] / length, score[1] / length))

    def _draw_node(self, archive: Archive, nodes: list[_Node]) -> int | None:
        keys = [i for i in archive.sorted_keys() if nodes[i].valid]
        if not keys:
            return None
        if len(keys) == 1:
            return keys[0]
        top = max(1, int(len(keys) * TOP_FRACTION))
        if self.rng.random() < 0.5 or top == len(keys):
            return keys[int(self.rng.integers(top))]
        return keys[top + int(self.rng.integers(len(keys) - top))]

    def _candidates(self, nodes: list[_Node], hist: Archive, avg: Archive) -> list[tuple[int, int]]:
        """Up to ``candidates`` distinct (node, next strategy) pairs from the three sources (§2.3 step 1)."""
        total = self.o["candidates"]
        target_a = total - int(math.floor(total * self.o["avg_ratio"]))
        seen: set[tuple[int, int]] = set()
        out: list[tuple[int, int]] = []
        valid_nodes = [i for i, nd in enumerate(nodes) if nd.valid]
        if not valid_nodes:
            return out
        capacity = sum(len(nodes[i].options) for i in valid_nodes)
        for target, archive in ((target_a, hist), (total, avg), (total, None)):
            for _ in range(ATTEMPTS):
                if len(out) >= min(target, capacity):
                    break
                i = (valid_nodes[int(self.rng.integers(len(valid_nodes)))] if archive is None
                     else self._draw_node(archive, nodes))
                if i is None:
                    break
                opts = nodes[i].options
                pair = (i, int(opts[int(self.rng.integers(len(opts)))]))
                if pair not in seen:
                    seen.add(pair)
                    out.append(pair)
        return out

    def _select(self, nodes: list[_Node], cands: list[tuple[int, int]], pred: np.ndarray, k: int) -> list[int]:
        """Exactly min(k, #candidates) indices (§2.3 steps 2-3)."""
        base_params = float(self.env.base["params"])
        par = np.array([nodes[i].params / base_params for i, _ in cands])
        acc = np.array([nodes[i].acc for i, _ in cands])
        ell = np.array([max(self.gamma - nodes[i].pr, 0.0) + 1.0 for i, _ in cands])
        f1 = -(par * (1.0 - pred[:, 0])) / ell    # −P' / ℓ  (maximised)
        f2 = (acc * (1.0 + pred[:, 1])) / ell     # A' / ℓ   (maximised)
        m = len(cands)
        chosen: list[int] = []
        if self.rng.random() < 0.5:
            chosen.append(int(self.rng.integers(m)))
        beaten = ((f1[None, :] > f1[:, None]) & (f2[None, :] > f2[:, None])).any(axis=1)
        chosen += [j for j in np.flatnonzero(~beaten).tolist() if j not in chosen]
        if len(chosen) > k:
            chosen = sorted(chosen, key=lambda j: -f2[j])[:k]
        elif len(chosen) < k:
            rest = np.array([j for j in range(m) if j not in set(chosen)], dtype=int)
            extra = self.rng.permutation(rest)[:k - len(chosen)]
            chosen += extra.tolist()
        return chosen

    def _train(self, fmo: FMo, opt: torch.optim.Optimizer, new: list, replay: list) -> None:
        """One step on this round's records, then replay minibatches of earlier ones (§2.3 step 6)."""

        def step(batch: list) -> None:
            opt.zero_grad()
            out = fmo([b[0] for b in batch], [b[1] for b in batch])
            target = torch.tensor([[b[2], b[3]] for b in batch], dtype=torch.float32)
            nn.functional.mse_loss(out, target).backward()
            opt.step()

        if not new:
            return
        step(new)
        if replay:
            for _ in range(self.o["replay_batches"]):
                idx = self.rng.choice(len(replay), size=min(self.o["replay_size"], len(replay)), replace=False)
                step([replay[j] for j in idx])

    # ---- non_progressive: RL controller over frozen embeddings ----------------------------------

    def rl_search(self) -> None:
        from compressors import get_compressor
        space, n = self.env.space, len(self.env.space)
        start_mask = self.ev.valid_actions([]) & self.allowed
        first_only = np.array([get_compressor(m).first_only for m in space.methods])
        terminal = {m: get_compressor(m).terminal for m in space.methods}
        later_mask = start_mask.copy()
        for mi, m in enumerate(space.methods):
            if first_only[mi]:
                r = space.method_range(m)
                later_mask[r.start:r.stop] = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            ctrl = _RLController(torch.from_numpy(self.vectors), self.o["rl_hidden"])
        opt = torch.optim.Adam(ctrl.parameters(), lr=self.o["rl_lr"])
        gen = torch.Generator().manual_seed(self.seed)
        baseline: float | None = None
        advantages: list[float] = []
        stale = 0
        while True:
            h = c = torch.zeros(1, ctrl.hidden)
            x = ctrl.embeddings[0:1]  # START's vector as the first input
            scheme: list[int] = []
            logps = []
            planned = ft = 0.0
            for t in range(self.env.max_len):
                base = start_mask if t == 0 else later_mask
                ok = base & (planned + self.removal <= self.o["pr_budget"] + 1e-9) \
                    & (ft + self.ft_mult <= self.o["ft_budget"] + 1e-9) \
                    & (~self.is_hos | (planned + self.removal >= self.gamma - 1e-9))
                if scheme and terminal[space[scheme[-1]].method]:
                    ok[:] = False
                end_ok = t > 0 and (planned >= self.gamma - 1e-9 or not ok.any())
                if not ok.any():
                    break
                token_mask = torch.from_numpy(np.append(ok, end_ok))
                h, c = ctrl.cell(x, (h, c))
                logits = 2.5 * torch.tanh(ctrl.decoder(h)[0] / 5.0)
                logits = logits.masked_fill(~token_mask, float("-inf"))
                logp = torch.log_softmax(logits, dim=0)
                a = int(torch.multinomial(logp.exp(), 1, generator=gen))
                logps.append(logp[a])
                if a == n:
                    break
                scheme.append(a)
                planned += float(self.removal[a])
                ft += float(self.ft_mult[a])
                x = ctrl.embeddings[a + 1:a + 2]
            if not scheme:   # nothing valid at the first step: the space is exhausted
                self.stats["exhausted_space"] = True
                return
            before = self.ev.executions
            try:
                e = self.ev.evaluate(scheme)
                reward = (0.1 if e.PR >= self.gamma else 0.08) * e.acc + e.PR
            except (SchemeFailed, ValueError):  # failed step / env rejected (actual PR above the plan)
                self.stats["failed_steps"] += 1
                reward = 0.0
            self.stats["rounds"] += 1
            stale = 0 if self.ev.executions > before else stale + 1
            if stale >= RL_MAX_STALE:  # the controller keeps re-sampling known schemes: nothing left to spend
                self.stats["stalled"] = True
                return
            baseline = reward if baseline is None else (self.o["rl_baseline_decay"] * baseline
                                                        + (1 - self.o["rl_baseline_decay"]) * reward)
            adv = reward - baseline
            advantages = (advantages + [adv])[-10:]
            scale = max(abs(a) for a in advantages)
            if scale > 0:
                adv *= 0.5 / scale
            opt.zero_grad()
            (-adv * torch.stack(logps).sum()).backward()
            opt.step()


class _RLController(nn.Module):
    """The "AutoMC-Progressive Search" ablation's controller: LSTMCell over frozen embeddings."""

    def __init__(self, embeddings: torch.Tensor, hidden: int = 100):
        super().__init__()
        self.register_buffer("embeddings", embeddings.detach().float().clone())
        self.hidden = hidden
        self.cell = nn.LSTMCell(embeddings.shape[1], hidden)
        self.decoder = nn.Linear(hidden, embeddings.shape[0])  # N strategies + END (index N)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
