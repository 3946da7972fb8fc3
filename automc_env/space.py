"""The AutoMC strategy space: every compression strategy, with a stable integer id.

A *compression strategy* is one compression method together with one fixed value for each of its
hyperparameters (one leaf of the grid). A compression *scheme* is a sequence of strategies; the
environment's actions are strategy ids from this module.

Grids
-----
Two grids are defined as data in ``_GRID_TABLES`` (see ``docs/paper/search_space.md`` §2 and §4):

* ``"paper"`` (alias ``"paper_4525"``, the default): the paper's Table 1, 4,525 strategies
  (LMA 1200, LeGR 800, NS 50, SFP 75, HOS 2025, LFB 375).
* ``"code"`` (alias ``"code_8934"``): the official code's grid, 8,934 strategies
  (LMA 1728, LeGR 1152, NS 72, SFP 90, HOS 5832, LFB 60). The published experiments ran on this one.
  LeGR's candidate fine-tune length (the code's HP8 = 0.01·E_pre) has a single value, so it is not a grid
  hyperparameter; it is available from :meth:`StrategySpace.constants`.

Both grids use the same hyperparameter names (``ft``, ``dec``, ``seg``, ...; metadata and the paper
labels HP1..HP16 in :data:`HYPERPARAMETERS`). Two names would mislead in code and are longer there,
``max_prune`` (HP6, not the built-in ``max``) and ``mse_weight`` (HP14, a weight, not a loss); strategy
names print their short forms ``max`` and ``mse`` (``NS(ft=0.3,dec=0.12,max=0.7)``) and every lookup
accepts either form. LFB's HP15 (``factor`` ∈ {0.5, 1, 1.5, 3, 5}) and HP16
(``loss`` ∈ {NLL, CE, MSE}) in the paper grid are *inferred*: the paper's values are illegible, and the
5 × 3 split and the third loss type "MSE" are a reconstruction (search_space.md §2.1).

Id order
--------
Ids are assigned method by method in the order of :data:`METHODS` (LMA, LeGR, NS, SFP, HOS, LFB), and
within a method in ``itertools.product`` order of the hyperparameter value lists as written in the table
(the last hyperparameter varies fastest). So each method owns a contiguous id range, and an id is a
mixed-radix number within it; lookups in both directions are O(1) arithmetic.

HP2 (``dec``) semantics
-----------------------
``dec`` is the fraction of the *original* model's parameters a strategy removes:

* paper grid, ``hp2_mode == "absolute"``: ``dec`` is that fraction itself (Table 1's {0.04, ..., 0.40}).
* code grid, ``hp2_mode == "relative"``: ``dec`` is a multiplier of the task's target rate γ, and the
  fraction removed is ``γ·dec``. The two agree at γ = 0.4.

:meth:`Strategy.removal` returns the fraction for either grid. Turning it into a per-step keep ratio for
the current model, ``keep = max(1 − removal / r_prev, 0.1)`` with ``r_prev = P(current) / P(original)``,
is done by the environment, not here.
"""

from __future__ import annotations

import bisect
import json
import numbers
import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, Union

import numpy as np

__all__ = [
    "FEATURE_SIZE",
    "hyperparameter_name",
    "FINETUNE_HYPERPARAMETER",
    "GRIDS",
    "HYPERPARAMETERS",
    "METHODS",
    "METHOD_LABELS",
    "Hyperparameter",
    "Strategy",
    "StrategySpace",
    "get_space",
]

Value = Union[float, int, str]
HyperparameterKind = Literal["epochs", "removal", "int", "float", "choice"]


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------

METHODS: tuple[str, ...] = ("LMA", "LeGR", "NS", "SFP", "HOS", "LFB")
"""Compression methods, in id order."""

METHOD_LABELS: Mapping[str, str] = MappingProxyType(
    {"LMA": "C1", "LeGR": "C2", "NS": "C3", "SFP": "C4", "HOS": "C5", "LFB": "C6"}
)
"""Method -> the paper's label (C1..C6)."""

FINETUNE_HYPERPARAMETER: Mapping[str, str] = MappingProxyType(
    {"LMA": "ft", "LeGR": "ft", "NS": "ft", "SFP": "soft", "HOS": "ft", "LFB": "ft"}
)
"""Method -> the hyperparameter counted against a scheme's fine-tune budget (search_space.md §4.1)."""


@dataclass(frozen=True)
class Hyperparameter:
    """Metadata of one hyperparameter, shared by every method and grid that uses it.

    ``kind`` tells consumers how to use a value: ``"epochs"`` values are multipliers of the
    pre-training epochs E_pre, ``"removal"`` is HP2 (see the module docstring), the rest are plain
    ``"int"``/``"float"`` numbers or ``"choice"`` strings.
    """

    name: str
    label: str
    meaning: str
    kind: HyperparameterKind
    short: str = ""   # the form printed in strategy names (defaults to ``name``)

    def __post_init__(self) -> None:
        if not self.short:
            object.__setattr__(self, "short", self.name)


def _hp(name: str, label: str, kind: HyperparameterKind, meaning: str, short: str = "") -> tuple[str, Hyperparameter]:
    return name, Hyperparameter(name=name, label=label, meaning=meaning, kind=kind, short=short)


HYPERPARAMETERS: Mapping[str, Hyperparameter] = MappingProxyType(dict([
    _hp("ft", "HP1", "epochs", "epochs of the method's final (re)training or fine-tuning stage, int(ft·E_pre)"),
    _hp("dec", "HP2", "removal", "fraction of the original model's parameters this strategy removes"),
    _hp("seg", "HP3", "int", "number of linear pieces (bins) in each LMA activation"),
    _hp("T", "HP4", "int", "distillation temperature of the teacher and student softmax"),
    _hp("alpha", "HP5", "float", "distillation weight: loss = alpha·T²·KL + (1 − alpha)·CE"),
    _hp("max_prune", "HP6", "float", "largest fraction of one layer's channels or filters that may be pruned",
        short="max"),
    _hp("evo", "HP7", "epochs", "LeGR evolution length, int(evo·E_pre) candidate evaluations"),
    _hp("crit", "HP8", "choice", "LeGR filter-importance base metric"),
    _hp("soft", "HP9", "epochs", "SFP training epochs with soft masks, int(soft·E_pre)"),
    _hp("every", "HP10", "int", "SFP mask update interval in epochs"),
    _hp("layer", "HP11", "choice", "HOS layer-level statistic that sets each layer's pruning ratio"),
    _hp("filter", "HP12", "choice", "HOS filter-level importance (larger is kept)"),
    _hp("aux", "HP13", "epochs", "epochs of the HOS stage with auxiliary MSE loss after HOOI, int(aux·E_pre)"),
    _hp("mse_weight", "HP14", "int", "weight of the auxiliary MSE term in that HOS stage: loss = CE + mse·MSE",
        short="mse"),
    _hp("factor", "HP15", "float", "LFB loss factor, multiplies the LFB training loss"),
    _hp("loss", "HP16", "choice", "LFB loss type"),
]))
"""Short name -> metadata, in the paper's HP1..HP16 order (also the feature-slot order)."""

FEATURE_SIZE = 1 + len(METHODS) + len(HYPERPARAMETERS)
"""Length of :meth:`StrategySpace.features`: present flag + method one-hot + one slot per hyperparameter."""
assert FEATURE_SIZE == 23

_HP_SLOT = {name: 1 + len(METHODS) + i for i, name in enumerate(HYPERPARAMETERS)}
_HP_ALIASES = {**{hp.short: name for name, hp in HYPERPARAMETERS.items()}, **{name: name for name in HYPERPARAMETERS}}


def hyperparameter_name(name: str) -> str:
    """The canonical name of a hyperparameter given by its name or printed short form (``max`` -> ``max_prune``)."""
    if isinstance(name, str) and name.strip() in _HP_ALIASES:
        return _HP_ALIASES[name.strip()]
    raise ValueError(f"unknown hyperparameter {name!r}; allowed: {', '.join(sorted(_HP_ALIASES))}")


# --------------------------------------------------------------------------------------------------
# The grids, as data
# --------------------------------------------------------------------------------------------------

# Paper, Table 1.
_P_FT = (0.1, 0.2, 0.3, 0.4, 0.5)
_P_DEC = (0.04, 0.12, 0.20, 0.36, 0.40)
# Official code, AutoML/search_space.py.
_C_FT = (0.2, 0.4, 0.6, 0.8, 1.0, 1.5)
_C_DEC = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
# Shared by both.
_SEG = (6, 8, 10)
_T = (1, 3, 6, 10)
_ALPHA = (0.05, 0.3, 0.5, 0.99)
_MAX = (0.7, 0.9)
_EVO = (0.4, 0.5, 0.6, 0.7)
_CRIT = ("l1_weight", "l2_weight", "l2_bn", "l2_bn_param")
_EVERY = (1, 3, 5)
_LAYER = ("P1", "P2", "P3")
_FILTER = ("l1norm", "k34", "skew_kur")
_MSE = (1, 3, 5)
_FACTOR = (0.5, 1.0, 1.5, 3.0, 5.0)

# LeGR's candidate fine-tune length (code HP8 = 0.01·E_pre): one value, so not a grid hyperparameter.
# The paper does not mention it; the code's value is used for both grids.
_LEGR_CONSTANTS = {"candidate_ft": 0.01}

_GRID_TABLES: dict[str, dict] = {
    "paper": {
        "hp2_mode": "absolute",
        "methods": {
            "LMA": {"ft": _P_FT, "dec": _P_DEC, "seg": _SEG, "T": _T, "alpha": _ALPHA},
            "LeGR": {"ft": _P_FT, "dec": _P_DEC, "max_prune": _MAX, "evo": _EVO, "crit": _CRIT},
            "NS": {"ft": _P_FT, "dec": _P_DEC, "max_prune": _MAX},
            "SFP": {"dec": _P_DEC, "soft": (0.1, 0.2, 0.3, 0.4, 0.5), "every": _EVERY},
            "HOS": {"ft": _P_FT, "dec": _P_DEC, "layer": _LAYER, "filter": _FILTER,
                    "aux": (0.3, 0.4, 0.5), "mse_weight": _MSE},
            # HP15/HP16 values inferred (search_space.md §2.1).
            "LFB": {"ft": _P_FT, "dec": _P_DEC, "factor": _FACTOR, "loss": ("NLL", "CE", "MSE")},
        },
        "constants": {"LeGR": _LEGR_CONSTANTS},
    },
    "code": {
        "hp2_mode": "relative",
        "methods": {
            "LMA": {"ft": _C_FT, "dec": _C_DEC, "seg": _SEG, "T": _T, "alpha": _ALPHA},
            "LeGR": {"ft": _C_FT, "dec": _C_DEC, "max_prune": _MAX, "evo": _EVO, "crit": _CRIT},
            "NS": {"ft": _C_FT, "dec": _C_DEC, "max_prune": _MAX},
            "SFP": {"dec": (0.1, 0.3, 0.5, 0.9, 1.0), "soft": _C_FT, "every": _EVERY},
            "HOS": {"ft": _C_FT, "dec": _C_DEC, "layer": _LAYER, "filter": _FILTER,
                    "aux": (0.2, 0.4, 0.6, 0.8, 1.0, 1.5), "mse_weight": _MSE},
            "LFB": {"ft": _C_FT, "dec": (1.0,), "factor": _FACTOR, "loss": ("NLL", "CE")},
        },
        "constants": {"LeGR": _LEGR_CONSTANTS},
    },
}

_GRID_ALIASES = {"paper": "paper", "paper_4525": "paper", "code": "code", "code_8934": "code"}
GRIDS: tuple[str, ...] = tuple(_GRID_ALIASES)
"""Allowed grid names, including aliases."""


def _canonical_grid(grid: str) -> str:
    if isinstance(grid, str) and grid.strip().lower() in _GRID_ALIASES:
        return _GRID_ALIASES[grid.strip().lower()]
    raise ValueError(f"unknown strategy grid {grid!r}; allowed: {', '.join(GRIDS)}")


# --------------------------------------------------------------------------------------------------
# Value formatting and matching
# --------------------------------------------------------------------------------------------------

def _format_value(value: Value) -> str:
    """Shortest text that parses back to the value: 0.3 not 0.30000000000000004, 5.0 as 5, strings bare."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _value_key(kind: HyperparameterKind, value: object) -> float | str:
    """Key under which a value is matched, so 1, 1.0, "1" and "1.0" all find the same grid value.

    Numbers are rounded to 9 decimals to absorb float noise such as 0.1 + 0.2.
    Raises ValueError/TypeError if the value cannot be one of this kind.
    """
    if kind == "choice":
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value.strip()
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        number = float(value)  # ValueError for non-numeric text
    elif isinstance(value, numbers.Real):
        number = float(value)
    else:
        raise TypeError(f"expected a number, got {value!r}")
    return round(number, 9)


# --------------------------------------------------------------------------------------------------
# Strategy
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Strategy:
    """One compression strategy: a method plus one fixed value per hyperparameter.

    Obtain strategies from a :class:`StrategySpace` (``space[id]``, ``space.parse(...)``) rather than
    constructing them, so that ``id`` is consistent with ``settings``. Strategies are immutable,
    hashable and picklable; ``settings`` is a read-only mapping in the grid's hyperparameter order.
    """

    id: int
    method: str
    settings: Mapping[str, Value] = field(hash=False)
    grid: str

    def __post_init__(self) -> None:
        if not isinstance(self.settings, MappingProxyType):
            object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def __reduce__(self):
        # MappingProxyType cannot be pickled; rebuild from a plain dict (needed for subprocess vector envs).
        return (Strategy, (self.id, self.method, dict(self.settings), self.grid))

    @property
    def name(self) -> str:
        """Human-readable, parseable name, e.g. ``NS(ft=0.3,dec=0.12,max=0.7)``."""
        body = ",".join(f"{HYPERPARAMETERS[hp].short}={_format_value(v)}" for hp, v in self.settings.items())
        return f"{self.method}({body})"

    def __str__(self) -> str:
        return self.name

    def removal(self, gamma: float) -> float:
        """Fraction of the ORIGINAL model's parameters this strategy removes.

        Paper grid: ``dec`` as is (gamma is not used). Code grid: ``gamma·dec`` (``dec`` is a multiplier
        of the target rate gamma). The per-step keep ratio is derived from this elsewhere.
        """
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
        dec = float(self.settings["dec"])
        return dec if _GRID_TABLES[self.grid]["hp2_mode"] == "absolute" else float(gamma) * dec

    def epochs(self, hp: str, pretrain_epochs: int) -> int:
        """Epoch count ``int(value·E_pre)`` of an epochs-kind hyperparameter (ft, evo, soft, aux).

        Uses ``int()`` truncation, as the official code does.
        """
        meta = HYPERPARAMETERS.get(hp)
        if meta is None or meta.kind != "epochs":
            epoch_hps = [n for n, m in HYPERPARAMETERS.items() if m.kind == "epochs"]
            raise ValueError(f"{hp!r} is not an epochs hyperparameter; allowed: {', '.join(epoch_hps)}")
        if hp not in self.settings:
            raise ValueError(f"{self.method} has no hyperparameter {hp!r}; it has: {', '.join(self.settings)}")
        if isinstance(pretrain_epochs, bool) or not isinstance(pretrain_epochs, numbers.Integral) \
                or pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be a non-negative integer, got {pretrain_epochs!r}")
        return int(float(self.settings[hp]) * int(pretrain_epochs))

    def finetune_multiplier(self) -> float:
        """The multiplier counted against a scheme's fine-tune budget: ``ft``, or ``soft`` for SFP."""
        return float(self.settings[FINETUNE_HYPERPARAMETER[self.method]])

    def to_json(self) -> dict:
        """Plain-JSON form; ``StrategySpace.id_of(d["method"], d["settings"])`` inverts it."""
        return {"id": self.id, "method": self.method, "settings": dict(self.settings), "grid": self.grid}


# --------------------------------------------------------------------------------------------------
# StrategySpace
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _MethodGrid:
    """One method's block of ids: value lists, mixed-radix strides and value lookup tables."""

    method: str
    names: tuple[str, ...]
    values: tuple[tuple[Value, ...], ...]
    start: int
    size: int
    strides: tuple[int, ...]
    lookups: tuple[dict[float | str, int], ...]

    @classmethod
    def build(cls, method: str, table: Mapping[str, tuple], start: int) -> _MethodGrid:
        names = tuple(table)
        values = tuple(tuple(table[n]) for n in names)
        for name, vals in zip(names, values):
            if name not in HYPERPARAMETERS:
                raise ValueError(f"grid table for {method} uses unknown hyperparameter {name!r}")
            if not vals:
                raise ValueError(f"grid table for {method}.{name} is empty")
        lookups = tuple({_value_key(HYPERPARAMETERS[n].kind, v): i for i, v in enumerate(vals)}
                        for n, vals in zip(names, values))
        for name, vals, lookup in zip(names, values, lookups):
            if len(lookup) != len(vals):
                raise ValueError(f"grid table for {method}.{name} has duplicate values: {vals}")
        strides = []
        stride = 1
        for vals in reversed(values):  # last hyperparameter varies fastest
            strides.append(stride)
            stride *= len(vals)
        return cls(method, names, values, start, stride, tuple(reversed(strides)), lookups)


class StrategySpace:
    """All strategies of one grid, indexed by stable integer ids ``0..len-1``.

    Use :func:`get_space` to obtain the shared instance for a grid. Construction only computes the
    per-method mixed-radix layout; :class:`Strategy` objects and the feature matrix are built lazily.
    """

    def __init__(self, grid: str = "paper") -> None:
        self.name: str = _canonical_grid(grid)
        table = _GRID_TABLES[self.name]
        self.hp2_mode: str = table["hp2_mode"]
        self.methods: tuple[str, ...] = tuple(table["methods"])
        if self.methods != METHODS:
            raise ValueError(f"grid {self.name!r} must list the methods in the order {METHODS}")
        self._constants = {m: MappingProxyType(dict(c)) for m, c in table["constants"].items()}
        self._grids: dict[str, _MethodGrid] = {}
        start = 0
        for method in self.methods:
            g = _MethodGrid.build(method, table["methods"][method], start)
            self._grids[method] = g
            start += g.size
        self._size = start
        self._starts = [g.start for g in self._grids.values()]
        self._cache: list[Strategy | None] = [None] * self._size
        self._features: np.ndarray | None = None
        self._classes: dict[tuple, list] = {}

    def __reduce__(self):
        # Unpickle to the shared per-grid instance.
        return (get_space, (self.name,))

    def __repr__(self) -> str:
        return f"StrategySpace({self.name!r}, {self._size} strategies)"

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Strategy]:
        return (self[i] for i in range(self._size))

    def __getitem__(self, id: int) -> Strategy:
        """The strategy with this id. IndexError if out of range, ValueError if not an integer."""
        i = self._check_id(id)
        strategy = self._cache[i]
        if strategy is None:
            strategy = self._cache[i] = self._decode(i)
        return strategy

    # ------------------------------------------------------------------ lookups

    def grid(self, method: str) -> dict[str, tuple]:
        """Hyperparameter short name -> allowed values for ``method``, in id order."""
        g = self._method_grid(method)
        return dict(zip(g.names, g.values))

    def constants(self, method: str) -> Mapping[str, float]:
        """Fixed, single-valued settings of ``method`` that are not grid hyperparameters.

        E.g. LeGR's ``candidate_ft`` (candidate fine-tune epochs as a multiple of E_pre, code HP8).
        """
        return self._constants.get(self._method_grid(method).method, MappingProxyType({}))

    def method_range(self, method: str) -> range:
        """The contiguous id range of ``method``."""
        g = self._method_grid(method)
        return range(g.start, g.start + g.size)

    def strategies(self, method: str | None = None) -> list[Strategy]:
        """All strategies, or those of one method, in id order."""
        ids = range(self._size) if method is None else self.method_range(method)
        return [self[i] for i in ids]

    def id_of(self, method: str, settings: Mapping[str, object]) -> int:
        """The id of ``method`` with these settings (values as numbers or their string forms).

        Every hyperparameter of the method must be given exactly once; O(1) mixed-radix arithmetic.
        """
        g = self._method_grid(method)
        if not isinstance(settings, Mapping):
            raise TypeError(f"settings must be a mapping of hyperparameter -> value, got {settings!r}")
        given = [_HP_ALIASES.get(hp, hp) if isinstance(hp, str) else hp for hp in settings]
        if len(set(given)) != len(given):
            raise ValueError(f"{g.method}: a hyperparameter is given twice (name and short form) in {dict(settings)}")
        settings = dict(zip(given, settings.values()))
        unknown = [hp for hp in settings if hp not in g.names]
        missing = [hp for hp in g.names if hp not in settings]
        if unknown or missing:
            problems = []
            if unknown:
                problems.append(f"unknown hyperparameter(s) {', '.join(map(repr, unknown))}")
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            raise ValueError(f"{g.method} in the {self.name} grid: {'; '.join(problems)}; "
                             f"allowed hyperparameters: {', '.join(g.names)}")
        offset = 0
        for name, values, stride, lookup in zip(g.names, g.values, g.strides, g.lookups):
            value = settings[name]
            try:
                index = lookup.get(_value_key(HYPERPARAMETERS[name].kind, value))
            except (TypeError, ValueError):
                index = None
            if index is None:
                allowed = ", ".join(_format_value(v) for v in values)
                raise ValueError(f"{value!r} is not an allowed value of {name} for {g.method} "
                                 f"in the {self.name} grid; allowed: {allowed}")
            offset += index * stride
        return g.start + offset

    _NAME_RE = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.DOTALL)

    def parse(self, text: str) -> Strategy:
        """Inverse of :attr:`Strategy.name` (e.g. ``"NS(ft=0.3,dec=0.12,max=0.7)"``) or an integer id string."""
        if not isinstance(text, str):
            raise TypeError(f"expected a strategy name or id string, got {text!r}")
        stripped = text.strip()
        if re.fullmatch(r"[+-]?\d+", stripped):
            return self[int(stripped)]
        match = self._NAME_RE.match(stripped)
        if match is None:
            raise ValueError(f"cannot parse strategy {text!r}; expected 'METHOD(hp=value,...)' with METHOD "
                             f"one of {', '.join(self.methods)}, or an integer id 0..{self._size - 1}")
        method, body = match.groups()
        settings: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in body.split(","))):
            hp, sep, value = part.partition("=")
            hp = hp.strip()
            if not sep or not hp:
                raise ValueError(f"cannot parse {part!r} in {text!r}; expected hp=value")
            hp = _HP_ALIASES.get(hp, hp)
            if hp in settings:
                raise ValueError(f"hyperparameter {hp!r} given twice in {text!r}")
            settings[hp] = value.strip()
        return self[self.id_of(method, settings)]

    # ------------------------------------------------------------------ equivalence

    def equivalent(self, id: int, pretrain_epochs: int | None = None,
                   options: Mapping[str, Mapping] | None = None) -> tuple[int, ...]:
        """Every id that computes exactly the same step as ``id`` (itself included), in id order.

        Two strategies are equivalent when their method reads the same effective settings
        (``compressors``' ``effective_settings``): LFB's NLL is CE (NLLLoss on log-softmax, unless
        the parity option ``lfb_raw_nll``), on every task. With ``pretrain_epochs`` (a task's E_pre)
        also the task's rules: epoch multipliers that truncate to the same int(v·E_pre), SFP mask
        intervals that mask after the same epochs, settings a zero-epoch stage never reads.
        ``options``: the environment's ``method_options``. Agents can skip duplicates, the knowledge
        graph and a surrogate can merge them. State-dependent coincidences (a per-layer cap that
        does not bind on a given model) are not equivalences and are not listed.
        """
        return self._equivalence(pretrain_epochs, options)[self._check_id(id)]

    def canonical(self, id: int, pretrain_epochs: int | None = None,
                  options: Mapping[str, Mapping] | None = None) -> int:
        """The smallest id equivalent to ``id`` (see :meth:`equivalent`)."""
        return self.equivalent(id, pretrain_epochs, options)[0]

    def _equivalence(self, pretrain_epochs: int | None, options: Mapping[str, Mapping] | None) -> list:
        key = (pretrain_epochs, json.dumps(options or {}, sort_keys=True, default=str))
        if key not in self._classes:
            from compressors import get_compressor  # the methods own their semantics; lazy: no import cycle
            classes: dict[tuple, list[int]] = {}
            for i in range(self._size):
                s = self[i]
                eff = get_compressor(s.method).effective_settings(s.settings, pretrain_epochs,
                                                                  (options or {}).get(s.method, {}))
                classes.setdefault((s.method, tuple(sorted(eff.items(), key=lambda kv: kv[0]))), []).append(i)
            by_id: list = [()] * self._size
            for ids in classes.values():
                for i in ids:
                    by_id[i] = tuple(ids)
            self._classes[key] = by_id
        return self._classes[key]

    # ------------------------------------------------------------------ features

    def features(self, id: int) -> np.ndarray:
        """Per-step feature vector (float32, length FEATURE_SIZE) of strategy ``id`` (a read-only row).

        Layout: ``[1.0]`` present flag, method one-hot over METHODS, then one slot per hyperparameter in
        HYPERPARAMETERS order holding ``(index_of_value + 1) / len(values)`` for the method's own
        hyperparameters and 0 elsewhere, so every present hyperparameter lies in (0, 1].
        """
        return self.feature_matrix()[self._check_id(id)]

    def feature_matrix(self) -> np.ndarray:
        """All feature vectors, shape (len, FEATURE_SIZE), read-only; built once on first use."""
        if self._features is None:
            matrix = np.zeros((self._size, FEATURE_SIZE), dtype=np.float32)
            matrix[:, 0] = 1.0
            for g in self._grids.values():
                rows = slice(g.start, g.start + g.size)
                matrix[rows, 1 + METHODS.index(g.method)] = 1.0
                local = np.arange(g.size)
                for name, values, stride in zip(g.names, g.values, g.strides):
                    index = (local // stride) % len(values)
                    matrix[rows, _HP_SLOT[name]] = (index + 1) / len(values)
            matrix.flags.writeable = False
            self._features = matrix
        return self._features

    # ------------------------------------------------------------------ internals

    def _check_id(self, id: object) -> int:
        allowed = f"allowed range 0..{self._size - 1}"
        if isinstance(id, (bool, np.bool_)) or not isinstance(id, numbers.Integral):
            raise ValueError(f"strategy id must be an integer ({allowed}), got {id!r}")
        i = operator.index(id)
        if not 0 <= i < self._size:
            raise IndexError(f"strategy id {i} out of range for the {self.name} grid; {allowed}")
        return i

    def _method_grid(self, method: str) -> _MethodGrid:
        """Look up a method by name (e.g. "NS") or paper label (e.g. "C3")."""
        g = self._grids.get(method) if isinstance(method, str) else None
        if g is None and isinstance(method, str):
            by_label = {label: m for m, label in METHOD_LABELS.items()}
            g = self._grids.get(by_label.get(method, ""))
        if g is None:
            raise ValueError(f"unknown method {method!r}; allowed: {', '.join(self.methods)} "
                             f"(or labels {', '.join(METHOD_LABELS[m] for m in self.methods)})")
        return g

    def _decode(self, i: int) -> Strategy:
        g = self._grids[self.methods[bisect.bisect_right(self._starts, i) - 1]]
        offset = i - g.start
        settings = {name: values[(offset // stride) % len(values)]
                    for name, values, stride in zip(g.names, g.values, g.strides)}
        return Strategy(id=i, method=g.method, settings=settings, grid=self.name)


@lru_cache(maxsize=None)
def _space(canonical: str) -> StrategySpace:
    return StrategySpace(canonical)


def get_space(grid: str = "paper") -> StrategySpace:
    """The shared StrategySpace of a grid ("paper"/"paper_4525" or "code"/"code_8934"), built once."""
    return _space(_canonical_grid(grid))
