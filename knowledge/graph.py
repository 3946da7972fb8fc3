"""The compression knowledge graph G (paper §3.3.1; search_space.md §5), derived from the strategy space.

Nothing is hand-listed except the paper's method → technique mapping, which is read from
``knowledge/data/techniques.tsv`` (the rows with a paper technique id: LMA TE1; LeGR TE2, TE3;
NS TE4, TE3; SFP TE5; HOS TE6, TE7, TE3; LFB TE9).

Entities (labels are strings with a type prefix, ids are positions in :attr:`KnowledgeGraph.entities`):

* E1 strategies ``S:<strategy name>``: one per grid strategy, **entity id = strategy id** (0..N−1);
  then the experience-only strategies (see below);
* E2 methods ``M:C1(LMA)`` … ``M:C6(LFB)``;
* E3 hyperparameters ``H:HP1(ft)`` … ``H:HP16(loss)``: one node per paper label, shared by methods;
* E4 settings ``V:ft=0.1``: one node per (hyperparameter, value); ``ft=0.1`` and ``soft=0.1`` differ;
* E5 techniques ``T:TE1`` … ``T:TE7``, ``T:TE9`` (TE8 is not created; search_space.md §5.1).

Relations: R1 strategy→method, R2 strategy→setting, R3 method→hyperparameter (built per method, i.e.
the official code's stale-loop-variable bug is fixed), R4 method→technique, R5 hyperparameter→setting.
The code's sixth relation (setting → next larger setting) and its generic technique nodes
(TE9..TE13 "pruning", "filter", ...) are not part of the paper and are not built.

Paper grid: 4,525 + 6 + 16 + 59 + 8 = 4,614 entities; R1 4,525, R2 24,025, R3 26, R4 10, R5 59
(28,645 triples). Code grid: 8,934 + 6 + 16 + 64 + 8 entities; R1 8,934, R2 50,118, R3 26, R4 10, R5 64.

Experience strategies (``experience=True``, the default, as the official code does): every experience
record's strategy becomes an E1 node with its R1/R2 edges. If its settings are all on the grid it *is*
the grid node; otherwise it is a new node (off-grid values, e.g. ``dec=0.81``, become new E4 nodes with
their R5 edge). Values are matched by number (0.30 = 0.3), as the code does. On the code grid this
matches ``dec`` values by number although the grid's ``dec`` is a multiplier of γ and the record's is a
reduction fraction (the code's behaviour; on the paper grid the two agree). LeGR's code-only candidate
fine-tune length (code HP8) is not a hyperparameter of the space, so records differing only in it share
one node. These nodes let NN_exp refine embeddings of strategies with measured outcomes, and TransR
carries that through the shared method/setting nodes to the grid strategies.
"""

from __future__ import annotations

import csv
import numbers
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from automc_env.space import HYPERPARAMETERS, METHOD_LABELS, METHODS, get_space
from knowledge.experience import DATA_DIR, load_experience

__all__ = ["ENTITY_TYPES", "RELATIONS", "KnowledgeGraph", "build_graph", "format_value", "paper_techniques"]

ENTITY_TYPES: Mapping[str, str] = {"E1": "strategy", "E2": "method", "E3": "hyperparameter",
                                   "E4": "setting", "E5": "technique"}
RELATIONS: tuple[str, ...] = ("R1:strategy-method", "R2:strategy-setting", "R3:method-hyperparameter",
                              "R4:method-technique", "R5:hyperparameter-setting")
R1, R2, R3, R4, R5 = RELATIONS

_PAPER_COUNTS = {"settings": 59, R1: 4525, R2: 24025, R3: 26, R4: 10, R5: 59}


def format_value(value: object) -> str:
    """Canonical text of a setting value, so 0.30, 0.3 and "0.3" (or 1, 1.0) name the same node."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value.strip()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        x = round(float(value), 9)
        return str(int(x)) if x.is_integer() else repr(x)
    raise TypeError(f"cannot format setting value {value!r}")


def _method_node(method: str) -> str:
    return f"M:{METHOD_LABELS[method]}({method})"


def _hp_node(hp: str) -> str:
    return f"H:{HYPERPARAMETERS[hp].label}({hp})"


def _setting_node(hp: str, value: object) -> str:
    return f"V:{hp}={format_value(value)}"


def _strategy_node(method: str, settings: Mapping[str, object]) -> str:
    return "S:" + method + "(" + ",".join(f"{HYPERPARAMETERS[hp].short}={format_value(v)}"
                                          for hp, v in settings.items()) + ")"


@lru_cache(maxsize=1)
def paper_techniques() -> dict[str, tuple[tuple[str, str], ...]]:
    """Method → ((paper technique id, description), ...) from techniques.tsv (paper Table 1 rows only)."""
    out: dict[str, list[tuple[str, str]]] = {m: [] for m in METHODS}
    with open(DATA_DIR / "techniques.tsv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["paper_technique_id"] != "NA":
                out[row["method"]].append((row["paper_technique_id"], row["technique_description"]))
    return {m: tuple(v) for m, v in out.items()}


@dataclass(frozen=True, eq=False)
class KnowledgeGraph:
    """Entities, relations and labelled triples of G for one grid.

    ``entities[i]`` is the label of entity id i; ``entity_types[i]`` its type (E1..E5).
    ``triples`` is an (n, 3) array of string labels (head, relation, tail), unique.
    ``record_entities[j]`` is the entity id of experience record j's strategy (file order).
    """

    grid: str
    entities: tuple[str, ...]
    entity_types: tuple[str, ...]
    triples: np.ndarray
    num_strategies: int
    record_entities: np.ndarray
    grid_counts: Mapping[str, int]

    @property
    def relations(self) -> tuple[str, ...]:
        return RELATIONS

    @property
    def entity_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.entities)}

    @property
    def relation_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(RELATIONS)}

    @property
    def num_experience_only(self) -> int:
        """Strategy nodes that exist only because of the experience records."""
        return sum(t == "E1" for t in self.entity_types) - self.num_strategies

    def counts(self) -> dict[str, int]:
        """Entities per type and triples per relation of the whole graph (grid + experience)."""
        out = {f"{t} {ENTITY_TYPES[t]}": n for t, n in sorted(Counter(self.entity_types).items())}
        out.update(Counter(self.triples[:, 1].tolist()))
        out["entities"] = len(self.entities)
        out["triples"] = len(self.triples)
        return out

    def mapped_triples(self) -> np.ndarray:
        """Triples as (n, 3) int64 ids in this graph's entity/relation numbering."""
        e, r = self.entity_to_id, self.relation_to_id
        return np.array([(e[h], r[rel], e[t]) for h, rel, t in self.triples], dtype=np.int64).reshape(-1, 3)

    def triples_factory(self):
        """A pykeen TriplesFactory over the string-labelled triples with this graph's fixed ids."""
        from pykeen.triples import TriplesFactory

        return TriplesFactory.from_labeled_triples(self.triples, entity_to_id=self.entity_to_id,
                                                   relation_to_id=self.relation_to_id, compact_id=False)


class _Builder:
    def __init__(self) -> None:
        self.entities: dict[str, str] = {}  # label -> type, insertion-ordered
        self.triples: dict[tuple[str, str, str], None] = {}

    def entity(self, label: str, etype: str) -> str:
        known = self.entities.setdefault(label, etype)
        if known != etype:
            raise ValueError(f"entity {label!r} has two types: {known}, {etype}")
        return label

    def triple(self, head: str, relation: str, tail: str) -> None:
        self.triples[(head, relation, tail)] = None


def _add_strategy(b: _Builder, method: str, settings: Mapping[str, object]) -> str:
    node = b.entity(_strategy_node(method, settings), "E1")
    b.triple(node, R1, _method_node(method))
    for hp, value in settings.items():
        setting = _setting_node(hp, value)
        if setting not in b.entities:  # off-grid value (experience records only)
            b.entity(setting, "E4")
            b.triple(_hp_node(hp), R5, setting)
        b.triple(node, R2, setting)
    return node


@lru_cache(maxsize=4)
def _build(grid: str, experience: bool) -> KnowledgeGraph:
    space = get_space(grid)
    b = _Builder()
    # E1 grid strategies first, so that entity id == strategy id.
    for s in space:
        b.entity(_strategy_node(s.method, s.settings), "E1")
    strategy_nodes = list(b.entities)
    if len(strategy_nodes) != len(space):
        raise AssertionError("strategy labels are not unique")
    # E2, E3, E4, E5 and R3, R4, R5.
    techniques = paper_techniques()
    for method in space.methods:
        b.entity(_method_node(method), "E2")
    for hp in HYPERPARAMETERS:
        b.entity(_hp_node(hp), "E3")
    for method in space.methods:
        for hp, values in space.grid(method).items():
            b.triple(_method_node(method), R3, _hp_node(hp))
            for v in values:
                b.entity(_setting_node(hp, v), "E4")
                b.triple(_hp_node(hp), R5, _setting_node(hp, v))
    for method in space.methods:
        for te, _ in techniques[method]:
            b.entity(f"T:{te}", "E5")
            b.triple(_method_node(method), R4, f"T:{te}")
    # R1, R2 of the grid strategies.
    for s, node in zip(space, strategy_nodes):
        b.triple(node, R1, _method_node(s.method))
        for hp, v in s.settings.items():
            b.triple(node, R2, _setting_node(hp, v))
    counts = Counter(r for _, r, _ in b.triples)
    grid_counts = {"strategies": len(space), "methods": len(space.methods), "hyperparameters": len(HYPERPARAMETERS),
                   "settings": sum(t == "E4" for t in b.entities.values()),
                   "techniques": sum(t == "E5" for t in b.entities.values()), **{r: counts[r] for r in RELATIONS}}
    if space.name == "paper":
        for key, expected in _PAPER_COUNTS.items():
            if grid_counts[key] != expected:
                raise AssertionError(f"paper grid: {key} = {grid_counts[key]}, expected {expected}")
    # Experience strategies (after the grid, so grid ids are unchanged).
    record_nodes = []
    if experience:
        for rec in load_experience():
            grid_hps = tuple(space.grid(rec.method))
            if tuple(rec.settings) != grid_hps:
                raise ValueError(f"experience record {rec.exp_id}: settings {tuple(rec.settings)} do not match "
                                 f"the {rec.method} hyperparameters {grid_hps}")
            record_nodes.append(_add_strategy(b, rec.method, rec.settings))
    labels = tuple(b.entities)
    ids = {label: i for i, label in enumerate(labels)}
    # Order: E1 (grid, then experience-only), E2, E3, E4, E5 -- stable within a type.
    order = sorted(range(len(labels)), key=lambda i: (b.entities[labels[i]], i))
    labels = tuple(labels[i] for i in order)
    ids = {label: i for i, label in enumerate(labels)}
    if labels[:len(space)] != tuple(strategy_nodes):
        raise AssertionError("grid strategies must come first")
    triples = np.array(list(b.triples), dtype=str).reshape(-1, 3)
    return KnowledgeGraph(grid=space.name, entities=labels, entity_types=tuple(b.entities[x] for x in labels),
                          triples=triples, num_strategies=len(space),
                          record_entities=np.array([ids[n] for n in record_nodes], dtype=np.int64),
                          grid_counts=grid_counts)


def build_graph(grid: str = "paper", experience: bool = True) -> KnowledgeGraph:
    """The knowledge graph of a strategy grid ("paper" or "code"); cached per (grid, experience)."""
    return _build(get_space(grid).name, bool(experience))
