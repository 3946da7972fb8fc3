"""Tests for automc_env.space: sizes, id order, round trips, semantics and error messages."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from automc_env.space import (
    FEATURE_SIZE,
    GRIDS,
    HYPERPARAMETERS,
    METHOD_LABELS,
    METHODS,
    StrategySpace,
    get_space,
)

PAPER_COUNTS = {"LMA": 1200, "LeGR": 800, "NS": 50, "SFP": 75, "HOS": 2025, "LFB": 375}
CODE_COUNTS = {"LMA": 1728, "LeGR": 1152, "NS": 72, "SFP": 90, "HOS": 5832, "LFB": 60}


@pytest.fixture(scope="module")
def paper() -> StrategySpace:
    return get_space("paper")


@pytest.fixture(scope="module")
def code() -> StrategySpace:
    return get_space("code")


# ---------------------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("grid, total, counts", [("paper", 4525, PAPER_COUNTS), ("code", 8934, CODE_COUNTS)])
def test_sizes_and_contiguous_method_ranges(grid: str, total: int, counts: dict) -> None:
    space = get_space(grid)
    assert len(space) == total
    assert space.methods == METHODS
    start = 0
    for method in METHODS:
        r = space.method_range(method)
        assert (r.start, len(r)) == (start, counts[method])
        assert all(s.method == method for s in space.strategies(method))
        start = r.stop
    assert start == total


def test_grid_names_aliases_and_caching() -> None:
    assert set(GRIDS) >= {"paper", "paper_4525", "code", "code_8934"}
    assert get_space() is get_space("paper") is get_space("paper_4525")
    assert get_space("code") is get_space("code_8934")
    assert get_space("paper").hp2_mode == "absolute"
    assert get_space("code").hp2_mode == "relative"


def test_construction_is_fast() -> None:
    t0 = time.perf_counter()
    space = StrategySpace("code")
    assert time.perf_counter() - t0 < 0.2
    assert len(space) == 8934


def test_grid_tables(paper: StrategySpace, code: StrategySpace) -> None:
    assert paper.grid("SFP") == {"dec": (0.04, 0.12, 0.20, 0.36, 0.40), "soft": (0.1, 0.2, 0.3, 0.4, 0.5),
                                 "every": (1, 3, 5)}
    assert paper.grid("LFB")["loss"] == ("NLL", "CE", "MSE")
    assert code.grid("LFB") == {"ft": (0.2, 0.4, 0.6, 0.8, 1.0, 1.5), "dec": (1.0,),
                                "factor": (0.5, 1.0, 1.5, 3.0, 5.0), "loss": ("NLL", "CE")}
    assert code.grid("SFP")["dec"] == (0.1, 0.3, 0.5, 0.9, 1.0)
    assert "candidate_ft" not in code.grid("LeGR")
    assert code.constants("LeGR")["candidate_ft"] == 0.01
    assert dict(code.constants("NS")) == {}
    for space in (paper, code):
        for method in METHODS:
            for hp in space.grid(method):
                assert hp in HYPERPARAMETERS


def test_hyperparameter_metadata() -> None:
    assert list(HYPERPARAMETERS) == ["ft", "dec", "seg", "T", "alpha", "max_prune", "evo", "crit", "soft", "every",
                                     "layer", "filter", "aux", "mse_weight", "factor", "loss"]
    assert [hp.label for hp in HYPERPARAMETERS.values()] == [f"HP{i}" for i in range(1, 17)]
    assert {n for n, hp in HYPERPARAMETERS.items() if hp.kind == "epochs"} == {"ft", "evo", "soft", "aux"}
    assert HYPERPARAMETERS["dec"].kind == "removal"
    assert all(hp.name == n and hp.meaning for n, hp in HYPERPARAMETERS.items())
    assert [METHOD_LABELS[m] for m in METHODS] == ["C1", "C2", "C3", "C4", "C5", "C6"]


# ---------------------------------------------------------------------------------------- anchors

def test_anchors_paper(paper: StrategySpace) -> None:
    assert paper[0].name == "LMA(ft=0.1,dec=0.04,seg=6,T=1,alpha=0.05)"
    assert paper[1].name == "LMA(ft=0.1,dec=0.04,seg=6,T=1,alpha=0.3)"  # last hyperparameter fastest
    assert paper.method_range("NS").start == 2000
    assert paper[2000].name == "NS(ft=0.1,dec=0.04,max=0.7)"
    assert paper[4524].name == "LFB(ft=0.5,dec=0.4,factor=5,loss=MSE)"
    assert paper.method_range("LFB") == range(4150, 4525)
    assert dict(paper[2000].settings) == {"ft": 0.1, "dec": 0.04, "max_prune": 0.7}


def test_anchors_code(code: StrategySpace) -> None:
    assert code[0].name == "LMA(ft=0.2,dec=0.1,seg=6,T=1,alpha=0.05)"
    assert code[8933].name == "LFB(ft=1.5,dec=1,factor=5,loss=CE)"
    assert code.method_range("HOS") == range(3042, 8874)


# ---------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("grid", ["paper", "code"])
def test_id_round_trip_every_strategy(grid: str) -> None:
    space = get_space(grid)
    for strategy in space:
        assert space.id_of(strategy.method, strategy.settings) == strategy.id
        assert strategy.grid == grid


def test_name_parse_round_trip_paper(paper: StrategySpace) -> None:
    names = set()
    for strategy in paper:
        assert paper.parse(strategy.name).id == strategy.id
        names.add(strategy.name)
    assert len(names) == len(paper)


def test_parse_variants(paper: StrategySpace) -> None:
    assert paper.parse("2000").id == 2000
    assert paper.parse(" NS( ft = 0.1 , dec=0.040, max=0.70 ) ").id == 2000
    assert paper.parse("C3(ft=0.1,dec=0.04,max=0.7)").id == 2000  # paper label accepted too
    assert get_space("code").parse("LFB(ft=1.5,dec=1.0,factor=5.0,loss=CE)").id == 8933


def test_id_of_accepts_numbers_and_strings(paper: StrategySpace) -> None:
    expected = paper.id_of("LMA", {"ft": 0.3, "dec": 0.2, "seg": 8, "T": 6, "alpha": 0.99})
    as_text = {"ft": "0.3", "dec": "0.20", "seg": "8", "T": "6", "alpha": "0.99"}
    assert paper.id_of("LMA", as_text) == expected
    assert paper.id_of("LMA", {"ft": 0.1 + 0.2, "dec": 0.2, "seg": 8.0, "T": np.int64(6), "alpha": 0.99}) \
        == expected


def test_json_and_pickle(paper: StrategySpace) -> None:
    s = paper[2345]
    d = s.to_json()
    assert d == {"id": 2345, "method": s.method, "settings": dict(s.settings), "grid": "paper"}
    assert paper.id_of(d["method"], d["settings"]) == 2345
    assert pickle.loads(pickle.dumps(s)) == s
    assert pickle.loads(pickle.dumps(paper)) is paper
    assert hash(s) == hash(pickle.loads(pickle.dumps(s)))
    with pytest.raises(TypeError):
        s.settings["ft"] = 0.2  # type: ignore[index]


# ---------------------------------------------------------------------------------------- semantics

def test_removal(paper: StrategySpace, code: StrategySpace) -> None:
    s = paper.parse("NS(ft=0.1,dec=0.36,max=0.7)")
    assert s.removal(0.4) == 0.36
    assert s.removal(0.7) == 0.36  # absolute: gamma not used
    c = code.parse("NS(ft=0.2,dec=0.9,max=0.7)")
    assert c.removal(0.4) == pytest.approx(0.36)
    assert c.removal(0.5) == pytest.approx(0.45)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        c.removal(1.5)


def test_epochs(paper: StrategySpace) -> None:
    s = paper.parse("LeGR(ft=0.3,dec=0.12,max=0.9,evo=0.7,crit=l2_bn)")
    assert s.epochs("ft", 50) == int(0.3 * 50) == 15
    assert s.epochs("evo", 50) == 35
    assert s.epochs("ft", 200) == 60
    with pytest.raises(ValueError, match="not an epochs hyperparameter"):
        s.epochs("max_prune", 50)
    with pytest.raises(ValueError, match="not an epochs hyperparameter"):
        s.epochs("dec", 50)
    with pytest.raises(ValueError, match="has no hyperparameter 'soft'"):
        s.epochs("soft", 50)
    sfp = paper.parse("SFP(dec=0.2,soft=0.4,every=3)")
    assert sfp.epochs("soft", 50) == 20


def test_finetune_multiplier(paper: StrategySpace) -> None:
    assert paper.parse("SFP(dec=0.2,soft=0.4,every=3)").finetune_multiplier() == 0.4
    assert paper.parse("NS(ft=0.3,dec=0.12,max=0.7)").finetune_multiplier() == 0.3


# ---------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", [-1, 4525, True, 1.5, "abc", None])
def test_bad_ids_name_the_allowed_range(paper: StrategySpace, bad: object) -> None:
    with pytest.raises((IndexError, ValueError), match="0..4524"):
        paper[bad]  # type: ignore[index]
    with pytest.raises((IndexError, ValueError), match="0..4524"):
        paper.features(bad)  # type: ignore[arg-type]


def test_numpy_integer_ids_accepted(paper: StrategySpace) -> None:
    assert paper[np.int64(2000)].id == 2000


def test_parse_errors(paper: StrategySpace) -> None:
    with pytest.raises(ValueError, match="0..4524"):
        paper.parse("abc")
    with pytest.raises(IndexError, match="0..4524"):
        paper.parse("4525")
    with pytest.raises(ValueError, match="given twice"):
        paper.parse("NS(ft=0.1,ft=0.1,dec=0.04,max=0.7)")


def test_unknown_method(paper: StrategySpace) -> None:
    with pytest.raises(ValueError, match="allowed: LMA, LeGR, NS, SFP, HOS, LFB"):
        paper.id_of("Foo", {})
    with pytest.raises(ValueError, match="allowed: LMA"):
        paper.method_range("Foo")


def test_unknown_or_missing_hyperparameter(paper: StrategySpace) -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameter.*'seg'.*allowed hyperparameters: ft, dec, max"):
        paper.id_of("NS", {"ft": 0.1, "dec": 0.04, "max_prune": 0.7, "seg": 6})
    with pytest.raises(ValueError, match="missing max"):
        paper.id_of("NS", {"ft": 0.1, "dec": 0.04})


@pytest.mark.parametrize("value", [0.6, "0.6", "x", True, None])
def test_disallowed_value(paper: StrategySpace, value: object) -> None:
    with pytest.raises(ValueError, match=r"allowed: 0\.1, 0\.2, 0\.3, 0\.4, 0\.5"):
        paper.id_of("NS", {"ft": value, "dec": 0.04, "max_prune": 0.7})


def test_disallowed_choice(paper: StrategySpace, code: StrategySpace) -> None:
    with pytest.raises(ValueError, match="allowed: NLL, CE, MSE"):
        paper.parse("LFB(ft=0.1,dec=0.04,factor=1,loss=L1)")
    with pytest.raises(ValueError, match="allowed: NLL, CE$"):
        code.parse("LFB(ft=0.2,dec=1,factor=1,loss=MSE)")


def test_unknown_grid() -> None:
    with pytest.raises(ValueError, match="paper, paper_4525, code, code_8934"):
        get_space("bogus")


# ---------------------------------------------------------------------------------------- features

@pytest.mark.parametrize("grid", ["paper", "code"])
def test_feature_matrix(grid: str) -> None:
    space = get_space(grid)
    matrix = space.feature_matrix()
    assert matrix.shape == (len(space), FEATURE_SIZE) == (len(space), 23)
    assert matrix.dtype == np.float32
    assert space.feature_matrix() is matrix  # cached
    assert np.all(matrix[:, 0] == 1.0)
    slots = {hp: 1 + len(METHODS) + i for i, hp in enumerate(HYPERPARAMETERS)}
    for method in METHODS:
        r = space.method_range(method)
        block = matrix[r.start:r.stop]
        onehot = np.zeros(len(METHODS), dtype=np.float32)
        onehot[METHODS.index(method)] = 1.0
        assert np.all(block[:, 1:1 + len(METHODS)] == onehot)
        own = space.grid(method)
        for hp, slot in slots.items():
            if hp in own:
                assert np.all((block[:, slot] > 0) & (block[:, slot] <= 1))
            else:
                assert np.all(block[:, slot] == 0)
        # distinct strategies of a method have distinct features
        assert len(np.unique(block, axis=0)) == len(r)


def test_features_single_strategy(paper: StrategySpace) -> None:
    f = paper.features(2000)  # NS(ft=0.1,dec=0.04,max=0.7)
    assert f.shape == (FEATURE_SIZE,) and f.dtype == np.float32
    slots = {hp: 1 + len(METHODS) + i for i, hp in enumerate(HYPERPARAMETERS)}
    assert f[1 + METHODS.index("NS")] == 1.0
    assert f[slots["ft"]] == pytest.approx(1 / 5)
    assert f[slots["dec"]] == pytest.approx(1 / 5)
    assert f[slots["max_prune"]] == pytest.approx(1 / 2)
    last = paper.features(4524)
    assert last[slots["factor"]] == 1.0 and last[slots["loss"]] == 1.0
    assert np.array_equal(f, paper.feature_matrix()[2000])
    with pytest.raises(ValueError):
        f[0] = 0.0  # read-only
